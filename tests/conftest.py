"""Shared fixtures: a task, a coordinator core on a temporary data dir, a real gRPC coordinator on 127.0.0.1:0, and a
real PostgreSQL server (Debian's postgresql) started for the session."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from aal_rpc.coordinator.app import create_coordinator_server, open_coordinator
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.experiment.processes import ProcessGroup
from aal_rpc.types import Candidate, Payload, Provenance, Task
from tests.pg_local import LocalPostgres, postgres_bindir

TASK = Task(dataset="digits", num_classes=10, class_names=tuple(str(i) for i in range(10)), input_shape=(1, 8, 8),
            architecture="mlp")


def make_candidate(item_id: str, *, version: int = 0, score: float = 0.5, strategy: str = "entropy",
                   worker: str = "w0") -> Candidate:
    x = np.full((1, 8, 8), float(int(item_id) % 7) / 7, dtype=np.float32)
    return Candidate(item_id, Payload.from_array(x), Provenance(worker, strategy, version, score))


def fill_labels(c, n: int) -> None:
    """Label items (ids from 10000 on) until L holds at least `n` records: models and rounds may not claim more
    labels than L holds."""
    while c.stats().last_seq < n:
        item_id = str(10_000 + c.stats().last_seq)
        c.submit_candidates(worker_id="fill", strategy="random", model_version=0,
                            candidates=[make_candidate(item_id)])
        q = c.lease("filler")
        c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=0, annotator_id="filler")


def code_of(call):
    """The gRPC status code `call()` fails with (it must fail)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """A test CA, a server certificate for 127.0.0.1/localhost and a client certificate signed by it (openssl),
    and a second, unrelated CA."""
    d = tmp_path_factory.mktemp("certs")

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    for ca in ("ca", "other-ca"):
        ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN=aal test {ca}", "-keyout",
            f"{ca}.key", "-out", f"{ca}.pem")
    for name, san in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "subjectAltName=DNS:client")):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out",
            f"{name}.csr")
        (d / f"{name}.ext").write_text(san + "\n")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-out", f"{name}.pem", "-extfile", f"{name}.ext")
    return d


@pytest.fixture
def task() -> Task:
    return TASK


def _coordinators(store: str | None, data_dir):
    """Yield a factory that opens (or reopens) coordinators on one store, as the app does; all closed after."""
    opened = []

    def make(config: CoordinatorConfig = CoordinatorConfig(), task: Task = TASK):
        c = open_coordinator(store, data_dir, task, config)
        opened.append(c)
        return c

    yield make
    for c in opened:
        if not c.closing:
            c.close()


@pytest.fixture
def make_embedded_coordinator(tmp_path):
    """Coordinators on the embedded SQLite store of one data dir (what only one coordinator can do: sync mode,
    online backup of the data dir)."""
    yield from _coordinators(None, tmp_path / "data")


@pytest.fixture(params=["sqlite", "postgresql"])
def make_coordinator(request, tmp_path):
    """Coordinators on one store, for each backend: the embedded Coordinator on SQLite, and the
    shared-database SharedCoordinator on a fresh PostgreSQL database. The same tests hold for both."""
    url = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    yield from _coordinators(url, tmp_path / "data")


@pytest.fixture
def grpc_coordinator(tmp_path):
    """A real gRPC coordinator bound to 127.0.0.1:0; yields (address, CoordinatorServer)."""
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "grpc-data", TASK,
                                    CoordinatorConfig(pool_capacity=64, lease_seconds=30))
    yield f"127.0.0.1:{srv.port}", srv
    srv.stop(grace=0)


@pytest.fixture
def procs(tmp_path):
    """Processes a test starts; all stopped at teardown."""
    group = ProcessGroup(tmp_path / "logs")
    yield group
    group.stop_all()


def serve_annotation(servicer) -> tuple:
    """An AnnotationService alone on 127.0.0.1:0 on the coordinator's server stack; (server, port). Stop it with
    `server_loop().run(server.stop(0))`."""
    from aal_rpc.grpc_utils import create_server, server_loop
    from aal_rpc.proto.v1 import annotation_pb2_grpc

    async def start():
        server = create_server()
        annotation_pb2_grpc.add_AnnotationServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    return server_loop().run(start())


@contextlib.contextmanager
def annotation_stub(coordinator):
    """An AnnotationService stub to an AnnotationServicer over `coordinator`, served alone (serve_annotation); the
    server is stopped at exit."""
    from aal_rpc.coordinator.servicers import AnnotationServicer
    from aal_rpc.grpc_utils import server_loop
    from aal_rpc.proto.v1 import annotation_pb2_grpc

    executor = ThreadPoolExecutor(2)
    server, port = serve_annotation(AnnotationServicer(coordinator, executor))
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield annotation_pb2_grpc.AnnotationServiceStub(channel)
    finally:
        channel.close()
        server_loop().run(server.stop(0))
        executor.shutdown(wait=True)


def wait_until(predicate, timeout=90.0, interval=0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def _start_postgres() -> LocalPostgres:
    """Missing binaries skip the test on a developer's machine and fail it in CI (.ci/run installs Debian's
    postgresql), so the PostgreSQL tests never silently stop running there."""
    bindir = postgres_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return LocalPostgres(bindir)


@pytest.fixture(scope="session")
def postgres():
    """The session's PostgreSQL server; each test takes a fresh database from it."""
    server = _start_postgres()
    yield server
    server.stop()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of the test's own, which it may stop and start."""
    server = _start_postgres()
    yield server
    server.stop()


def check_acknowledged_labels(annotate, acks, address: str, expected: int) -> None:
    """`aal-annotate --json --acks-file acks` has ended having acknowledged `expected` labels, each item once, and
    L at `address` holds exactly those labels, none twice."""
    import json

    from aal_rpc.client import CoordinatorClient

    annotate.wait(timeout=180)
    summary = json.loads(annotate.stdout.read().decode().strip().splitlines()[-1])
    assert summary["acknowledged"] == expected
    acknowledged = {}
    for line in acks.read_text().splitlines():
        r = json.loads(line)
        assert r["item_id"] not in acknowledged, "an item was acknowledged twice"
        acknowledged[r["item_id"]] = r["label"]
    with CoordinatorClient(address) as client:
        records = list(client.export(include_payload=False))
    assert len(records) == len({r.item_id for r in records}), "an item was labeled twice"
    assert {r.item_id: r.label for r in records} == acknowledged

"""Shared fixtures: a task, a coordinator core on a temporary data dir, a real gRPC coordinator on 127.0.0.1:0, and a
real PostgreSQL server (Debian's postgresql) started for the session."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.core import Coordinator, CoordinatorConfig
from aal_rpc.coordinator.store import SqliteStore
from aal_rpc.experiment.processes import ProcessGroup
from aal_rpc.types import Candidate, Payload, Provenance, Task

TASK = Task(dataset="digits", num_classes=10, class_names=tuple(str(i) for i in range(10)), input_shape=(1, 8, 8),
            architecture="mlp")


def make_candidate(item_id: str, *, version: int = 0, score: float = 0.5, strategy: str = "entropy",
                   worker: str = "w0") -> Candidate:
    x = np.full((1, 8, 8), float(int(item_id) % 7) / 7, dtype=np.float32)
    return Candidate(item_id, Payload.from_array(x), Provenance(worker, strategy, version, score))


def code_of(call):
    """The gRPC status code `call()` fails with (it must fail)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


@pytest.fixture
def task() -> Task:
    return TASK


def _coordinators(open_coordinator):
    """A factory that opens (or reopens) coordinators on one store, closing them all at teardown."""
    opened = []

    def make(config: CoordinatorConfig = CoordinatorConfig(), task: Task = TASK):
        c = open_coordinator(task, config)
        opened.append(c)
        return c

    return make, opened


@pytest.fixture
def make_embedded_coordinator(tmp_path):
    """Coordinators on the embedded SQLite store of one data dir (what only one coordinator can do: sync mode,
    online backup of the data dir)."""
    make, opened = _coordinators(lambda task, config: Coordinator(SqliteStore(tmp_path / "data"), task, config))
    yield make
    for c in opened:
        if not c.closing:
            c.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_coordinator(request, tmp_path):
    """Coordinators on one store, for each backend: the embedded Coordinator on SQLite, and the
    shared-database SharedCoordinator on a fresh PostgreSQL database. The same tests hold for both."""
    if request.param == "sqlite":
        make, opened = _coordinators(lambda task, config: Coordinator(SqliteStore(tmp_path / "data"), task, config))
    else:
        from aal_rpc.coordinator.pg_store import PostgresStore
        from aal_rpc.coordinator.shared import SharedCoordinator

        url = request.getfixturevalue("postgres").new_database()

        def open_shared(task, config):
            store = PostgresStore(url, pool_size=8)
            try:
                return SharedCoordinator(store, task, config)
            except Exception:
                store.close()
                raise

        make, opened = _coordinators(open_shared)
    yield make
    for c in opened:
        if not c.closing:
            c.close()


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


def wait_until(predicate, timeout=90.0, interval=0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb into a temporary dir, listening only on a Unix socket there (no TCP
    port at all), trust authentication for the user `aal`. Run as the `postgres` user when we are root."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="aalpg-"))  # short: a socket path has ~100 characters at most
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", self.data, "-U", "aal", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start_server()
        self._names = itertools.count()

    def start_server(self) -> None:
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.root / "server.log",
                  "-o", f"-k {self.root} -c listen_addresses= -c max_connections=200")

    def stop_server(self) -> None:
        self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", self.data)

    def _run(self, tool: str, *args) -> None:
        subprocess.run([str(self.bindir / tool), *map(str, args)], check=True, capture_output=True, user=self.user,
                       cwd=self.root)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://aal@/{database}?host={self.root}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        try:
            self.stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _postgres_bindir() -> Path | None:
    found = [shutil.which("pg_ctl")] + sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    for pg_ctl in filter(None, found):
        bindir = Path(pg_ctl).resolve().parent
        if (bindir / "initdb").exists():
            return bindir
    return None


def _start_postgres() -> PostgresServer:
    """Missing binaries skip the test on a developer's machine and fail it in CI (.ci/run installs Debian's
    postgresql), so the PostgreSQL tests never silently stop running there."""
    bindir = _postgres_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries not found (apt-get install postgresql)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return PostgresServer(bindir)


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

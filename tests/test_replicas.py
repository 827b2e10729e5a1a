"""Several coordinator replicas on one PostgreSQL database: every label lands exactly once, whichever replica
leased the query and whichever one the label (or its retry) was sent to."""

from __future__ import annotations

import json
import threading

import grpc
import pytest

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.postgres_store import PostgresStore
from aal_rpc.coordinator.postgres import SharedCoordinator
from aal_rpc.experiment.processes import command
from aal_rpc.proto.v1 import annotation_pb2
from tests.conftest import TASK, annotation_stub, code_of, fill_labels, make_candidate, wait_until


@pytest.fixture
def replicas(postgres):
    url = postgres.new_database()
    config = CoordinatorConfig(pool_capacity=1000, lease_seconds=30, poll_seconds=None)  # wake by NOTIFY alone
    opened = [SharedCoordinator(PostgresStore(url, pool_size=8), TASK, config) for _ in range(2)]
    yield opened
    for c in opened:
        c.close()


def test_two_replicas_under_concurrent_annotators_record_every_label_once(replicas):
    a, b = replicas
    a.submit_candidates(worker_id="w0", strategy="margin", model_version=0,
                        candidates=[make_candidate(str(i)) for i in range(150)])
    b.submit_candidates(worker_id="w1", strategy="entropy", model_version=0,
                        candidates=[make_candidate(str(i)) for i in range(100, 300)])  # 100-149 are duplicates
    acks: list[tuple[str, int]] = []
    errors: list[Exception] = []
    lock = threading.Lock()

    def annotate(n: int) -> None:
        name = f"ann-{n}"
        lease_from, submit_to = (a, b) if n % 2 else (b, a)  # lease on one replica, label through the other
        try:
            while (q := lease_from.lease(name)) is not None:
                seq, duplicate = submit_to.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1,
                                                        annotator_id=name)
                retry = lease_from.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id=name)
                assert not duplicate and retry == (seq, True)  # a retry on any replica is recognised
                with lock:
                    acks.append((q.item_id, seq))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=annotate, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    records = a.read_labels(0, 10 ** 6)
    assert len(records) == 300 and len({r.item_id for r in records}) == 300
    assert sorted((r.item_id, r.seq) for r in records) == sorted(acks)
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    assert a.stats().labeled == b.stats().labeled == 300
    assert a.stats().queued == b.stats().queued == 0


def test_round_claims_are_shared_by_the_replicas(replicas):
    """Servers talking to different replicas are staggered as if they shared one coordinator."""
    a, b = replicas
    fill_labels(a, 12)
    assert a.begin_round(server_id="s0", num_labels=10, round_seconds=0.0) == (0.0, "")
    wait, why = b.begin_round(server_id="s1", num_labels=10, round_seconds=0.0)
    assert wait > 0 and "10 labels" in why
    assert b.begin_round(server_id="s1", num_labels=11, round_seconds=0.0) == (0.0, "")
    wait, why = a.begin_round(server_id="s0", num_labels=12, round_seconds=600.0)  # s1 began just now, via b
    assert 0 < wait <= 300.0 and "apart across 2 servers" in why


def test_a_long_poll_on_one_replica_wakes_for_a_candidate_sent_to_another(replicas):
    a, b = replicas
    with annotation_stub(a) as stub:
        poll = stub.LeaseQuery.future(annotation_pb2.LeaseQueryRequest(annotator_id="ann", wait_seconds=20),
                                      timeout=30)
        assert wait_until(lambda: bool(a.signals.queries._futures), timeout=20)  # it looked, and waits
        b.submit_candidates(worker_id="w", strategy="margin", model_version=0, candidates=[make_candidate("42")])
        got = poll.result(timeout=30)
        assert got.found and got.query.item_id == "42"


@pytest.mark.e2e
def test_two_coordinator_processes_on_one_database_serve_the_whole_system(tmp_path, procs, postgres):
    url = postgres.new_database()
    args = ["--store", url, "--model", "mlp", "--pool-capacity", "60", "--lease-seconds", "30"]
    _, address_a = procs.start_coordinator("coordinator-a", args)
    _, address_b = procs.start_coordinator("coordinator-b", args)
    procs.start("server", command("server", "--coordinator", address_a, "--epochs", "2", "--threads", "1"))
    for shard, address in enumerate((address_a, address_b)):
        procs.start(f"worker-{shard}", command(
            "worker", "--coordinator", address, "--shard-index", shard, "--num-shards", "2", "--strategy", "margin",
            "--batch-size", "10", "--poll-seconds", "0.1", "--threads", "1"))
    annotators = {}
    for name, address in (("a", address_a), ("b", address_b)):
        annotators[name] = procs.start(f"annotate-{name}", command(
            "annotate", "--coordinator", address, "--oracle", "--annotators", "4", "--budget", "60",
            "--delay", "0.02", "--json", "--acks-file", tmp_path / f"acks-{name}.jsonl"), capture_stdout=True)
    acknowledged = {}
    for name, proc in annotators.items():
        proc.wait(timeout=240)
        summary = json.loads(proc.stdout.read().decode().strip().splitlines()[-1])
        assert summary["acknowledged"] == 60 and summary["errors"] == {}
        for line in (tmp_path / f"acks-{name}.jsonl").read_text().splitlines():
            ack = json.loads(line)
            assert ack["item_id"] not in acknowledged
            acknowledged[ack["item_id"]] = (ack["label"], ack["seq"])
    with CoordinatorClient(address_a) as a, CoordinatorClient(address_b) as b:
        for client in (a, b):
            labeled = {r.item_id: (r.label, r.seq) for r in client.export(include_payload=False)}
            assert labeled == acknowledged and len(labeled) == 120
        # the server publishes through replica a; replica b serves the same registry
        assert wait_until(lambda: b.stats().latest_model_version >= 1)
        assert b.models() == a.models()


def test_the_coordinator_rides_out_a_database_restart(own_postgres):
    """While the database is down calls fail with UNAVAILABLE (never a crash); clients retry, and once it is back
    the label goes through and nothing acknowledged is lost."""
    srv = create_coordinator_server("127.0.0.1:0", None, TASK, CoordinatorConfig(lease_seconds=60),
                                    store=own_postgres.new_database())
    address = f"127.0.0.1:{srv.port}"
    try:
        srv.coordinator.submit_candidates(worker_id="w", strategy="margin", model_version=0,
                                          candidates=[make_candidate("1"), make_candidate("2")])
        with CoordinatorClient(address, retry_for=0) as quick, AnnotationClient(address, "ann", retry_for=60) as ann:
            first = ann.lease(wait_seconds=5)
            assert ann.submit(first, label=4).seq == 1
            second = ann.lease(wait_seconds=5)
            own_postgres.stop_server()
            assert code_of(lambda: quick.stats()) == grpc.StatusCode.UNAVAILABLE
            threading.Timer(1.0, own_postgres.start_server).start()
            result = ann.submit(second, label=7)  # retried until the database is back
            assert (result.seq, result.duplicate) == (2, False)
            assert {r.item_id: r.label for r in quick.export(include_payload=False)} == {first.item_id: 4,
                                                                                          second.item_id: 7}
    finally:
        srv.stop(grace=0)

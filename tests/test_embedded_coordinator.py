"""What only the embedded coordinator does, or what the behavioural suite (test_coordinator_contract.py) does not
cover: synchronous mode, online backup, refusing another task on a data dir, candidates of the wrong shape, labels
held back from running ahead of the models."""

import threading

import grpc
import pytest

from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.errors import InvalidArgument
from aal_rpc.proto.v1 import annotation_pb2, annotation_pb2_grpc
from tests.conftest import TASK, annotation_stub, make_candidate, wait_until
from tests.test_registry import publish, weights


def submit(c, ids, version=0, strategy="entropy"):
    return c.submit_candidates(worker_id="w0", strategy=strategy, model_version=version,
                               candidates=[make_candidate(i, version=version, strategy=strategy) for i in ids])


def label_one(c, annotator="a"):
    q = c.lease(annotator)
    seq, dup = c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=3, annotator_id=annotator)
    return q, seq, dup


def test_candidates_of_the_wrong_shape_are_refused(make_coordinator):
    import numpy as np
    from aal_rpc.types import Candidate, Payload, Provenance
    c = make_coordinator()
    bad = Candidate("1", Payload.from_array(np.zeros((3, 8, 8), np.float32)), Provenance("w", "entropy", 0, 0.1))
    with pytest.raises(InvalidArgument):
        c.submit_candidates(worker_id="w", strategy="entropy", model_version=0, candidates=[bad])
    assert c.stats().queued == 0


def test_a_different_task_on_the_same_data_dir_is_refused(make_coordinator):
    from dataclasses import replace
    make_coordinator().close()
    with pytest.raises(ValueError):
        make_coordinator(task=replace(TASK, architecture="cnn"))


def test_sync_mode_releases_a_batch_then_waits_for_a_model_trained_on_all_labels(make_embedded_coordinator):
    from dataclasses import replace
    c = make_embedded_coordinator(task=replace(TASK, mode="sync", batch_size=3))
    submit(c, ["1", "2"])
    assert c.lease("a") is None  # fewer than a batch of candidates: the first round is not open yet
    submit(c, ["3", "4", "5"])
    for _ in range(3):
        label_one(c)
    assert c.lease("a") is None  # round complete: closed until a model is trained on all 3 labels
    assert c.stats().queued == 0  # what was left had been scored for the previous round
    assert c.shard_state(shard_index=0, num_shards=1, labeled_after_seq=0, model_version=0).demand == 0
    publish(c, weights(), labels=2)  # a model on part of L does not open the round
    assert c.lease("a") is None
    publish(c, weights(), labels=3)
    assert c.shard_state(shard_index=0, num_shards=1, labeled_after_seq=0, model_version=2).demand == 256
    assert submit(c, ["6", "7", "8"], version=1).accepted == 3
    assert c.lease("a") is None  # candidates of an older model do not count
    submit(c, ["9", "10", "11", "12"], version=2)
    got = [c.lease(f"x{i}") for i in range(4)]
    assert [q is not None for q in got] == [True, True, True, False]
    assert {q.provenance.model_version for q in got[:3]} == {2}
    assert submit(c, ["13"], version=1).rejected == 1


def test_sync_mode_resumes_mid_round_after_restart(make_embedded_coordinator):
    from dataclasses import replace
    task = replace(TASK, mode="sync", batch_size=4)
    c = make_embedded_coordinator(task=task)
    submit(c, [str(i) for i in range(6)])
    label_one(c)
    label_one(c)
    c.close()
    c2 = make_embedded_coordinator(task=task)
    assert [c2.lease(f"a{i}") is not None for i in range(3)] == [True, True, False]


def test_online_backup_restores_everything(make_embedded_coordinator, tmp_path):
    from aal_rpc.coordinator.backup import backup
    from aal_rpc.coordinator.embedded import EmbeddedCoordinator
    from aal_rpc.coordinator.sqlite_store import SqliteStore
    c = make_embedded_coordinator()
    submit(c, [str(i) for i in range(5)])
    label_one(c)
    label_one(c)
    publish(c, weights(), labels=2)
    result = backup(tmp_path / "data", tmp_path / "backup")  # while it runs
    assert result == {"labels": 2, "models_copied": 1}
    restored = EmbeddedCoordinator(SqliteStore(tmp_path / "backup"), TASK)
    try:
        s = restored.stats()
        assert (s.labeled, s.queued, s.latest_model_version) == (2, 3, 1)
        assert restored.registry.read_blob(1)[1] == c.registry.read_blob(1)[1]
    finally:
        restored.close()


def test_labels_stop_running_ahead_of_the_latest_model(make_embedded_coordinator):
    """--max-labels-per-model: leasing pauses while L is that many labels ahead of the latest model, and a
    model trained on them lets it go on (a waiting poll is woken by the publish)."""
    c = make_embedded_coordinator(CoordinatorConfig(max_labels_per_model=3, poll_seconds=None))
    c.submit_candidates(worker_id="w", strategy="random", model_version=0,
                        candidates=[make_candidate(str(i)) for i in range(10)])
    for _ in range(3):
        q = c.lease("a")
        c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id="a")
    assert c.lease("a") is None and c.stats().queued == 7  # three labels ahead of no model: wait for one
    with annotation_stub(c) as stub:
        waiting = stub.LeaseQuery.future(annotation_pb2.LeaseQueryRequest(annotator_id="a", wait_seconds=20),
                                         timeout=30)
        assert wait_until(lambda: bool(c.signals.queries._futures), timeout=20)  # it looked, and waits
        c.publish_model(data=weights(), server_id="s", trained_seq=3, num_labels=3, architecture=TASK.architecture,
                        metrics={})
        assert waiting.result(timeout=30).found  # the model covers them: leasing goes on at once


def test_a_label_whose_caller_leaves_before_its_write_commits_is_kept_and_the_writer_goes_on(grpc_coordinator):
    """SubmitLabel awaits its write on the event loop (contract.Pending). A caller whose deadline passes while the
    write waits behind others leaves; the write still commits, the store's writer keeps going, and the caller's
    retry is acknowledged as the same label."""
    address, srv = grpc_coordinator
    c = srv.coordinator
    c.submit_candidates(worker_id="w", strategy="entropy", model_version=0,
                        candidates=[make_candidate(str(i)) for i in range(2)])
    stub = annotation_pb2_grpc.AnnotationServiceStub(grpc.insecure_channel(address))
    q = stub.LeaseQuery(annotation_pb2.LeaseQueryRequest(annotator_id="ann")).query
    request = annotation_pb2.SubmitLabelRequest(lease_id=q.lease_id, item_id=q.item_id, label=3, annotator_id="ann")
    gate = threading.Event()
    blocked = c.store.submit(lambda conn: gate.wait(30))  # the writer is busy: the label's write waits behind it
    with pytest.raises(grpc.RpcError) as left:
        stub.SubmitLabel(request, timeout=0.5)
    assert left.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    gate.set()
    blocked.result(timeout=30)
    again = stub.SubmitLabel(request, timeout=30)
    assert again.duplicate
    c.store.flush()  # the writer still commits what comes after
    assert [(r.item_id, r.label) for r in c.read_labels(0, 10)] == [(q.item_id, 3)]
    other = stub.LeaseQuery(annotation_pb2.LeaseQueryRequest(annotator_id="ann")).query
    assert not stub.SubmitLabel(annotation_pb2.SubmitLabelRequest(
        lease_id=other.lease_id, item_id=other.item_id, label=1, annotator_id="ann"), timeout=30).duplicate


def test_a_batch_offered_chunk_by_chunk_does_to_s_what_it_does_whole(tmp_path, monkeypatch):
    """submit_candidates lets go of the pools' lock every OFFER_CHUNK candidates; a batch that fills S, overflows it
    and refreshes items leaves S as one offered whole would, with the same outcome."""
    from aal_rpc.coordinator import embedded
    from aal_rpc.coordinator.embedded import EmbeddedCoordinator
    from aal_rpc.coordinator.sqlite_store import SqliteStore

    def run(chunk: int, where):
        monkeypatch.setattr(embedded, "OFFER_CHUNK", chunk)
        c = EmbeddedCoordinator(SqliteStore(where), TASK, CoordinatorConfig(pool_capacity=20))
        try:
            publish(c, weights(), labels=1)  # version 1 (a filler item labeled first)
            outcomes = [submit(c, [str(i) for i in range(15)], version=0),
                        submit(c, [str(i) for i in range(10, 40)], version=1)]  # refreshes 10-14, evicts v0 items
            c.lease("a")
            queued = c.shard_state(shard_index=0, num_shards=1, labeled_after_seq=0, model_version=1).queued
            return outcomes, sorted((i, c.get_item(i).provenance.model_version) for i in queued)
        finally:
            c.close()

    whole = run(10_000, tmp_path / "whole")
    assert run(4, tmp_path / "chunks") == whole
    assert whole[0][1].evicted > 0 and whole[0][1].refreshed == 5

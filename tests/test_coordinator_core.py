"""The coordinator core without a network: labels on disk before the ack, restart recovery, idempotency,
clear errors that change nothing."""

import threading

import pytest

from aal_rpc.coordinator.core import CoordinatorConfig
from aal_rpc.errors import FailedPrecondition, InvalidArgument, NotFound
from aal_rpc.serde import weights_to_bytes
from aal_rpc.chunking import sha256_hex
from aal_rpc.models import build_model
from tests.conftest import TASK, make_candidate
from tests.test_registry import publish, weights


def submit(c, ids, version=0, strategy="entropy"):
    return c.submit_candidates(worker_id="w0", strategy=strategy, model_version=version,
                               candidates=[make_candidate(i, version=version, strategy=strategy) for i in ids])


def label_one(c, annotator="a"):
    q = c.lease(annotator)
    seq, dup = c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=3, annotator_id=annotator)
    return q, seq, dup


def test_label_flow_records_provenance(make_coordinator):
    c = make_coordinator()
    out = submit(c, ["1", "2"], strategy="margin")
    assert (out.accepted, out.rejected) == (2, 0)
    q, seq, dup = label_one(c)
    assert (seq, dup) == (1, False)
    [record] = list(c.follow_labels(0, follow=False))
    assert record.item_id == q.item_id and record.label == 3 and record.annotator_id == "a"
    assert record.provenance.strategy == "margin" and record.provenance.worker_id == "w0"
    assert record.labeled_at >= record.leased_at >= record.queued_at > 0
    s = c.stats()
    assert (s.labeled, s.queued, s.leased, s.labels_by_strategy) == (1, 1, 0, {"margin": 1})


def test_labeled_items_are_not_queued_again(make_coordinator):
    c = make_coordinator()
    submit(c, ["1"])
    label_one(c)
    publish(c, weights(), labels=1)
    assert submit(c, ["1"], version=1).rejected == 1


def test_resubmission_is_counted_once(make_coordinator):
    c = make_coordinator()
    submit(c, ["1"])
    q, seq, _ = label_one(c)
    again = c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=3, annotator_id="a")
    assert again == (seq, True)
    assert c.stats().labeled == 1


def test_restart_resumes_labels_queries_leases_and_models(make_coordinator):
    c = make_coordinator()
    submit(c, ["1", "2", "3"], version=0)
    label_one(c)
    held = c.lease("b")
    model = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes)
    data = weights_to_bytes(model.state_dict())
    c.publish_model(data=data, server_id="s", trained_seq=1, num_labels=1, architecture="mlp", metrics={"accuracy": .5},
                    sha256=sha256_hex(data))
    c.close()

    c2 = make_coordinator()
    s = c2.stats()
    assert (s.labeled, s.queued, s.leased, s.latest_model_version, s.last_seq) == (1, 1, 1, 1, 1)
    seq, dup = c2.submit_label(lease_id=held.lease_id, item_id=held.item_id, label=1, annotator_id="b")
    assert (seq, dup) == (2, False)
    assert c2.registry.read_blob(1)[1] == data


def test_bad_labels_are_refused_and_change_nothing(make_coordinator):
    c = make_coordinator()
    submit(c, ["1"])
    q = c.lease("a")
    with pytest.raises(InvalidArgument):
        c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=10, annotator_id="a")
    with pytest.raises(InvalidArgument):
        c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=-1, annotator_id="a")
    with pytest.raises(NotFound):
        c.submit_label(lease_id="nope", item_id="999", label=1, annotator_id="a")
    with pytest.raises(FailedPrecondition):
        c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id="mallory")
    with pytest.raises(FailedPrecondition):
        c.submit_label(lease_id="forged", item_id=q.item_id, label=1, annotator_id="a")
    with pytest.raises(InvalidArgument, match="NUL"):  # no database text column can hold it
        c.lease("a\x00b")
    s = c.stats()
    assert (s.labeled, s.leased) == (0, 1)


def test_expired_lease_is_refused_and_item_returns(make_coordinator):
    c = make_coordinator(CoordinatorConfig(lease_seconds=0.05))
    submit(c, ["1"])
    q = c.lease("a")
    import time
    time.sleep(0.1)
    with pytest.raises(FailedPrecondition):
        c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id="a")
    assert c.stats().queued == 1
    assert c.lease("b").item_id == "1"


def test_skip_drops_the_item_for_good(make_coordinator):
    c = make_coordinator()
    submit(c, ["1"])
    q = c.lease("a")
    c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id="a", skip=True)
    assert c.stats().skipped == 1 and c.stats().queued == 0
    publish(c, weights(), labels=0)
    assert submit(c, ["1"], version=1).rejected == 1
    state = c.shard_state(shard_index=0, num_shards=1, labeled_after_seq=0, model_version=0)
    assert "1" in state.labeled


def test_long_poll_lease_wakes_when_a_candidate_arrives(make_coordinator):
    c = make_coordinator()
    got = []
    t = threading.Thread(target=lambda: got.append(c.lease("a", wait_seconds=10)))
    t.start()
    submit(c, ["7"])
    t.join(10)
    assert got and got[0].item_id == "7"


def test_shard_state_lists_taken_items_of_the_shard_incrementally(make_coordinator):
    from aal_rpc.types import shard_of
    c = make_coordinator()
    ids = [str(i) for i in range(20)]
    submit(c, ids)
    for _ in range(5):
        label_one(c)
    labeled = {r.item_id for r in c.follow_labels(0, follow=False)}
    s0 = c.shard_state(shard_index=0, num_shards=2, labeled_after_seq=0, model_version=0)
    assert set(s0.labeled) == {i for i in labeled if shard_of(i, 2) == 0}
    assert set(s0.queued) == {i for i in set(ids) - labeled if shard_of(i, 2) == 0}
    assert s0.labeled_through_seq == 5 and not s0.more
    later = c.shard_state(shard_index=0, num_shards=2, labeled_after_seq=5, model_version=0)
    assert later.labeled == []
    with pytest.raises(InvalidArgument):
        c.shard_state(shard_index=2, num_shards=2, labeled_after_seq=0, model_version=0)


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


def test_concurrent_submissions_all_land_exactly_once(make_coordinator):
    c = make_coordinator(CoordinatorConfig(pool_capacity=500))
    submit(c, [str(i) for i in range(200)])
    errors = []

    def annotate(name):
        try:
            while (q := c.lease(name)) is not None:
                c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id=name)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = list(c.follow_labels(0, follow=False))
    assert not errors
    assert [r.seq for r in records] == list(range(1, 201))
    assert len({r.item_id for r in records}) == 200


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
    from aal_rpc.coordinator.core import EmbeddedCoordinator
    from aal_rpc.coordinator.store import SqliteStore
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

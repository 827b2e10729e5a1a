"""The store contract: one suite, run against both backends (embedded SQLite and a real PostgreSQL server).

Every write returns a future that resolves once committed (or fails with the write's error); reads see only
committed data; everything survives reopening the store.
"""

from __future__ import annotations

import pytest

from aal_rpc.coordinator.store import SqliteStore
from aal_rpc.types import LabeledRecord, Lease, ModelInfo, Provenance
from tests.conftest import TASK, make_candidate


@pytest.fixture(params=["sqlite", "postgresql"])
def open_store(request, tmp_path):
    """A function that opens (or reopens) one store of the parametrized backend; all closed at teardown."""
    opened = []
    if request.param == "sqlite":
        make = lambda: SqliteStore(tmp_path / "data")  # noqa: E731
    else:
        from aal_rpc.coordinator.pg_store import PostgresStore

        url = request.getfixturevalue("postgres").new_database()
        make = lambda: PostgresStore(url, pool_size=4)  # noqa: E731

    def open_one():
        store = make()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def record(seq: int, item_id: str, *, lease_id: str | None = None, strategy: str = "entropy") -> LabeledRecord:
    cand = make_candidate(item_id, strategy=strategy, version=2, score=0.25)
    return LabeledRecord(seq=seq, item_id=item_id, label=seq % 10, annotator_id="ann", payload=cand.payload,
                         provenance=cand.provenance, queued_at=1.0, leased_at=2.0, labeled_at=3.0,
                         lease_id=lease_id or f"lease-{item_id}")


def model(version: int, *, num_labels: int = 10) -> ModelInfo:
    return ModelInfo(version=version, server_id="s0", trained_seq=num_labels, num_labels=num_labels,
                     architecture="mlp", metrics={"accuracy": 0.5}, created_at=100.0 + version, size_bytes=3,
                     sha256="ab" * 32)


def test_task_round_trips(open_store):
    store = open_store()
    assert store.load().task is None
    store.save_task(TASK).result()
    assert open_store().load().task == TASK


def test_labels_keep_order_payload_and_provenance(open_store):
    store = open_store()
    for seq, item in enumerate(["7", "3", "9"], start=1):
        assert store.append_label(record(seq, item, strategy="margin" if item == "3" else "entropy")).result() == seq
    page = store.labels_after(0, 2)
    assert [r.seq for r in page] == [1, 2] and [r.item_id for r in page] == ["7", "3"]
    assert page[0] == record(1, "7")
    assert page[1].provenance == Provenance("w0", "margin", 2, 0.25)
    assert [r.seq for r in store.labels_after(2, 10)] == [3]
    assert all(r.payload is None for r in store.labels_after(0, 10, include_payload=False))
    assert store.label_by_lease("lease-3") == (2, "3") and store.label_by_lease("nope") is None
    assert store.label_ids_after(1, 10) == [(2, "3"), (3, "9")]
    state = open_store().load()
    assert sorted(state.labeled_item_ids) == ["3", "7", "9"] and state.last_seq == 3
    assert state.labels_by_strategy == {"entropy": 2, "margin": 1}


def test_an_item_is_labeled_once_and_a_lease_used_once(open_store):
    store = open_store()
    store.append_label(record(1, "5")).result()
    with pytest.raises(Exception):
        store.append_label(record(2, "5", lease_id="another")).result()
    with pytest.raises(Exception):
        store.append_label(record(3, "6", lease_id="lease-5")).result()
    assert [r.item_id for r in store.labels_after(0, 10)] == ["5"]
    store.append_label(record(4, "8")).result()  # the store still takes writes after refusing some
    assert [r.seq for r in store.labels_after(0, 10)] == [1, 4]


def test_queries_with_leases_skips_and_eviction(open_store):
    store = open_store()
    a, b, c = make_candidate("1", version=1, score=0.9), make_candidate("2"), make_candidate("3")
    store.put_candidates([(a, 10.0), (b, 11.0), (c, 12.0)], []).result()
    lease = Lease("L1", "ann", 20.0, 80.0)
    store.set_lease("1", lease).result()
    store.skip_item("2", "ann", 30.0).result()
    store.skip_item("2", "ann", 31.0).result()  # idempotent
    store.put_candidates([(make_candidate("4"), 13.0)], evicted=["3"]).result()
    state = open_store().load()
    queries = {cand.item_id: (cand, queued_at, held) for cand, queued_at, held in state.queries}
    assert sorted(queries) == ["1", "4"]
    assert queries["1"] == (a, 10.0, lease) and queries["4"][2] is None
    assert state.skips == ["2"]
    store.set_lease("1", None).result()
    store.append_label(record(1, "4")).result()  # labeling an item takes it out of S
    assert [(cand.item_id, held) for cand, _, held in open_store().load().queries] == [("1", None)]
    refreshed = make_candidate("1", version=5)
    store.put_candidates([(refreshed, 40.0)], []).result()
    assert open_store().load().queries == [(refreshed, 40.0, None)]


def test_models_and_blobs(open_store):
    store = open_store()
    for v in (1, 2, 3):
        store.insert_model(model(v, num_labels=10 * v)).result()
        store.write_blob(v, bytes([v]) * 3)
    store.mark_blob_pruned(1).result()
    store.delete_blob(1)
    reopened = open_store()
    models = reopened.load().models
    assert [m.version for m in models] == [1, 2, 3]
    assert models[2] == model(3, num_labels=30) and not models[0].blob_available and models[1].blob_available
    assert reopened.read_blob(1) is None and reopened.read_blob(3) == b"\x03\x03\x03"
    with pytest.raises(Exception):
        store.insert_model(model(2)).result()  # versions are unique

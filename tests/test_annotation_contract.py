"""The annotation contract a real tool needs (issue 11), over real gRPC on both backends: "don't know" (defer),
lease renewal, corrections that supersede without rewriting L, items by id, text payloads, and the annotator's
identity taken from its token."""

import sqlite3

import grpc
import numpy as np
import pytest

from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.query_pool import QueryPool
from aal_rpc.proto.v1 import (admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc, selection_pb2,
                              selection_pb2_grpc, training_pb2, training_pb2_grpc)
from aal_rpc.security import load_tokens
from aal_rpc.serde import payload_to_proto
from aal_rpc.types import Payload
from tests.conftest import TASK, code_of, make_candidate, wait_until

A = annotation_pb2


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path):
    store = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK,
                                    CoordinatorConfig(lease_seconds=30), store=store)
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
    yield Env(channel)
    channel.close()
    srv.stop(0)


class Env:
    def __init__(self, channel):
        self.annotation = annotation_pb2_grpc.AnnotationServiceStub(channel)
        self.selection = selection_pb2_grpc.SelectionServiceStub(channel)
        self.admin = admin_pb2_grpc.AdminServiceStub(channel)
        self.training = training_pb2_grpc.TrainingServiceStub(channel)

    def queue(self, *ids, text=""):
        x = np.zeros(TASK.input_shape, np.float32)
        self.selection.SubmitCandidates(selection_pb2.SubmitCandidatesRequest(
            worker_id="w", strategy="margin", candidates=[
                selection_pb2.Candidate(item_id=i, score=0.5, payload=payload_to_proto(Payload.from_array(x, text=text)))
                for i in ids]), timeout=10)

    def lease(self, who, **kw):
        r = self.annotation.LeaseQuery(A.LeaseQueryRequest(annotator_id=who, **kw), timeout=10)
        return r.query if r.found else None

    def submit(self, q, label, who):
        return self.annotation.SubmitLabel(A.SubmitLabelRequest(lease_id=q.lease_id, item_id=q.item_id, label=label,
                                                                annotator_id=who), timeout=10)

    def release(self, q, who, reason):
        return self.annotation.ReleaseQuery(A.ReleaseQueryRequest(lease_id=q.lease_id, item_id=q.item_id,
                                                                  annotator_id=who, reason=reason), timeout=10)

    def correct(self, item_id, label, who):
        return self.annotation.CorrectLabel(A.CorrectLabelRequest(item_id=item_id, label=label, annotator_id=who),
                                            timeout=10)

    def item(self, item_id, who=""):
        return self.annotation.GetItem(A.GetItemRequest(item_id=item_id, annotator_id=who), timeout=10)

    def export(self, latest_only=False):
        return list(self.admin.ExportLabels(admin_pb2.ExportLabelsRequest(latest_only=latest_only), timeout=10))


def test_defer_gives_the_item_to_others_but_not_back_to_its_annotator(env):
    env.queue("1")
    q = env.lease("ann")
    env.release(q, "ann", A.RELEASE_REASON_DEFER)
    assert env.lease("ann") is None  # "don't know" is not handed straight back
    other = env.lease("bob")
    assert other.item_id == "1"
    env.release(other, "bob", A.RELEASE_REASON_RETURN)
    env.queue("2")
    assert env.lease("ann").item_id == "2"
    assert env.admin.GetStats(admin_pb2.GetStatsRequest(), timeout=10).skipped == 0


def test_return_and_skip_keep_their_meaning(env):
    env.queue("1")
    env.release(env.lease("ann"), "ann", A.RELEASE_REASON_RETURN)
    q = env.lease("ann")
    assert q.item_id == "1"  # RETURN: back for anyone, the same annotator included
    env.release(q, "ann", A.RELEASE_REASON_SKIP)
    assert env.lease("bob") is None and env.item("1").state == A.ITEM_STATE_SKIPPED


def test_a_held_lease_is_renewed_and_only_by_its_holder(env):
    env.queue("1")
    q = env.lease("ann", lease_seconds=20)
    renewed = env.annotation.RenewLease(A.RenewLeaseRequest(lease_id=q.lease_id, item_id="1", annotator_id="ann",
                                                            lease_seconds=600), timeout=10)
    assert renewed.deadline_unix > q.deadline_unix + 500
    assert code_of(lambda: env.annotation.RenewLease(A.RenewLeaseRequest(
        lease_id=q.lease_id, item_id="1", annotator_id="bob"), timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION
    assert env.submit(q, 4, "ann").seq == 1
    assert code_of(lambda: env.annotation.RenewLease(A.RenewLeaseRequest(
        lease_id=q.lease_id, item_id="1", annotator_id="ann"), timeout=10)) == grpc.StatusCode.FAILED_PRECONDITION


def test_a_renewed_lease_outlives_its_first_deadline():
    """With an injected clock: the first deadline passing does not expire a lease renewed beyond it."""
    pool = QueryPool(capacity=4)
    pool.offer([make_candidate("1")], now=0.0)
    entry = pool.lease("ann", now=0.0, lease_seconds=10.0)
    pool.renew(entry.lease.lease_id, deadline=100.0)
    assert pool.expire(now=50.0) == [] and pool.leased_count == 1
    assert pool.expire(now=101.0) == ["1"] and pool.available_count == 1


def test_a_correction_supersedes_without_rewriting_l(env):
    env.queue("1", "2")
    first = env.submit(env.lease("ann"), 3, "ann")
    env.submit(env.lease("ann"), 7, "ann")
    assert code_of(lambda: env.correct("1", 5, "bob")) == grpc.StatusCode.PERMISSION_DENIED
    fix = env.correct("1", 5, "ann")
    assert (fix.seq, fix.supersedes_seq, fix.duplicate) == (3, first.seq, False)
    again = env.correct("1", 5, "ann")  # a retried correction is recorded once
    assert (again.seq, again.duplicate) == (3, True)
    history = env.export()
    assert [(r.item_id, r.label, r.supersedes_seq) for r in history] == [("1", 3, 0), ("2", 7, 0), ("1", 5, 1)]
    assert sorted((r.item_id, r.label) for r in env.export(latest_only=True)) == [("1", 5), ("2", 7)]
    stats = env.admin.GetStats(admin_pb2.GetStatsRequest(), timeout=10)
    assert (stats.labeled, stats.last_seq) == (2, 3)
    streamed = list(env.training.StreamLabels(training_pb2.StreamLabelsRequest(after_seq=2), timeout=10))
    assert [(r.item_id, r.label, r.supersedes_seq) for r in streamed] == [("1", 5, 1)]  # trainers see it
    assert streamed[0].payload.tensor.data  # self-contained: a trainer needs no other record
    current = env.item("1", "ann")  # her own label (another annotator sees its state only)
    assert current.state == A.ITEM_STATE_LABELED and current.current.label == 5 and current.current.seq == 3
    assert code_of(lambda: env.correct("9", 1, "ann")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: env.correct("1", 10, "ann")) == grpc.StatusCode.INVALID_ARGUMENT


def test_items_by_id(env):
    env.queue("1", "2", text="a short review")
    item = env.item("1")
    assert item.state == A.ITEM_STATE_QUEUED and item.payload.text == "a short review"
    q = env.lease("ann")
    assert env.item(q.item_id).state == A.ITEM_STATE_LEASED
    assert q.payload.text == "a short review"
    assert code_of(lambda: env.item("never-seen")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: env.queue("3", text="nul\x00")) == grpc.StatusCode.INVALID_ARGUMENT


def test_the_annotator_is_the_one_its_token_names(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("annotator alice tok-alice\nannotator:tok-anon\nadmin:tok-admin\nworker:tok-worker\n")
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, CoordinatorConfig(lease_seconds=30),
                                    tokens=load_tokens(tokens))
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        as_ = lambda t: (("authorization", f"Bearer {t}"),)  # noqa: E731
        ann = annotation_pb2_grpc.AnnotationServiceStub(channel)
        selection_pb2_grpc.SelectionServiceStub(channel).SubmitCandidates(selection_pb2.SubmitCandidatesRequest(
            worker_id="w", strategy="margin", candidates=[selection_pb2.Candidate(
                item_id=i, score=0.5, payload=payload_to_proto(make_candidate(i).payload)) for i in ("1", "2")]),
            metadata=as_("tok-worker"), timeout=10)
        assert code_of(lambda: ann.LeaseQuery(A.LeaseQueryRequest(annotator_id="bob"), metadata=as_("tok-alice"),
                                              timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        q = ann.LeaseQuery(A.LeaseQueryRequest(), metadata=as_("tok-alice"), timeout=10).query
        ann.SubmitLabel(A.SubmitLabelRequest(lease_id=q.lease_id, item_id=q.item_id, label=2),
                        metadata=as_("tok-alice"), timeout=10)
        [record] = srv.coordinator.read_labels(0, 10 ** 6)
        assert record.annotator_id == "alice"
        # a token without an identity keeps the claimed id; only alice or an admin may correct alice's label
        assert code_of(lambda: ann.CorrectLabel(A.CorrectLabelRequest(item_id=q.item_id, label=4, annotator_id="bob"),
                                                metadata=as_("tok-anon"), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
        fixed = ann.CorrectLabel(A.CorrectLabelRequest(item_id=q.item_id, label=4, annotator_id="ops"),
                                 metadata=as_("tok-admin"), timeout=10)
        assert not fixed.duplicate and srv.coordinator.get_item(q.item_id).record.label == 4
        channel.close()
    finally:
        srv.stop(0)


def test_an_old_embedded_database_is_brought_up_to_date(tmp_path):
    """A data dir written before corrections and text items (labels.item_id UNIQUE, no text columns) opens with
    its labels and queries, and takes corrections."""
    from aal_rpc.coordinator.embedded import EmbeddedCoordinator
    from aal_rpc.coordinator.sqlite_store import SqliteStore

    data = tmp_path / "data"
    data.mkdir()
    db = sqlite3.connect(data / "aal.sqlite3")
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE labels (seq INTEGER PRIMARY KEY, item_id TEXT NOT NULL UNIQUE, lease_id TEXT NOT NULL UNIQUE,
            label INTEGER NOT NULL, annotator_id TEXT NOT NULL, queued_at REAL NOT NULL, leased_at REAL NOT NULL,
            labeled_at REAL NOT NULL, worker_id TEXT NOT NULL, strategy TEXT NOT NULL,
            model_version INTEGER NOT NULL, score REAL NOT NULL, tensor BLOB NOT NULL, dtype TEXT NOT NULL,
            shape TEXT NOT NULL, image_png BLOB NOT NULL);
        CREATE TABLE queries (item_id TEXT PRIMARY KEY, worker_id TEXT NOT NULL, strategy TEXT NOT NULL,
            model_version INTEGER NOT NULL, score REAL NOT NULL, queued_at REAL NOT NULL, tensor BLOB NOT NULL,
            dtype TEXT NOT NULL, shape TEXT NOT NULL, image_png BLOB NOT NULL, lease_id TEXT, lease_owner TEXT,
            leased_at REAL, lease_deadline REAL);
    """)
    x = make_candidate("1").payload
    db.execute("INSERT INTO meta VALUES ('task', ?)", (TASK.to_json(),))
    db.execute("INSERT INTO labels VALUES (1, '1', 'l1', 3, 'ann', 1, 2, 3, 'w', 'margin', 0, 0.5, ?, 'float32', "
               "'[1, 8, 8]', x'')", (x.tensor,))
    db.execute("INSERT INTO queries VALUES ('2', 'w', 'margin', 0, 0.5, 1, ?, 'float32', '[1, 8, 8]', x'', NULL, "
               "NULL, NULL, NULL)", (x.tensor,))
    db.commit()
    db.close()
    c = EmbeddedCoordinator(SqliteStore(data), TASK)
    try:
        s = c.stats()
        assert (s.labeled, s.queued, s.last_seq) == (1, 1, 1)
        assert c.correct_label(item_id="1", label=6, annotator_id="ann") == (2, 1, False)
        assert [(r.label, r.supersedes) for r in c.read_labels(0, 10 ** 6)] == [(3, 0), (6, 1)]
    finally:
        c.close()


def test_the_annotation_client_speaks_the_whole_contract(grpc_coordinator):
    from aal_rpc.client import AnnotationClient

    address, srv = grpc_coordinator
    env = Env(grpc.insecure_channel(address))
    env.queue("1", text="hello")
    with AnnotationClient(address, "ann") as a, AnnotationClient(address, "bob") as b:
        q = a.lease()
        assert q.text == "hello" and a.renew(q).deadline_unix >= q.deadline_unix
        a.defer(q)
        assert a.lease() is None and b.lease().item_id == "1"
        env.queue("2", text="hello")
        # the credit a's empty look left outstanding is served by a push as "2" arrives; lease(0) answers from
        # what the stream has received, so it may come back empty while that push is on its way: wait for it
        first = a.lease(wait_seconds=10)
        done = a.submit(first, 1)
        fix = a.correct(first.item_id, 2)
        assert (fix.supersedes, fix.duplicate) == (done.seq, False)
        item = a.get_item(first.item_id)
        assert (item.state, item.label, item.labeled_by, item.seq) == ("labeled", 2, "ann", fix.seq)
        assert item.payload.text == "hello"


def test_a_long_poll_whose_caller_left_takes_nothing(env):
    """A cancelled LeaseQuery neither holds its thread nor takes the next item: a live annotator gets it."""
    waiting = env.annotation.LeaseQuery.future(A.LeaseQueryRequest(annotator_id="gone", wait_seconds=30), timeout=40)
    for _ in range(3):  # calls made after it: by their answers, the long poll is waiting in the coordinator
        env.admin.GetStats(admin_pb2.GetStatsRequest(), timeout=10)
    waiting.cancel()
    env.queue("1")
    q = env.lease("live", wait_seconds=10)
    assert q is not None and q.item_id == "1"


def test_a_candidates_cluster_travels_to_its_annotator_and_into_l(env):
    x = payload_to_proto(make_candidate("1").payload)
    env.selection.SubmitCandidates(selection_pb2.SubmitCandidatesRequest(
        worker_id="w", strategy="cluster_margin",
        candidates=[selection_pb2.Candidate(item_id="1", score=0.5, payload=x, cluster=7),
                    selection_pb2.Candidate(item_id="2", score=0.4, payload=x)]), timeout=10)
    q = env.lease("ann")
    assert q.provenance.HasField("cluster") and q.provenance.cluster == 7
    env.submit(q, 1, "ann")
    assert not env.lease("ann").provenance.HasField("cluster")
    [record] = env.export()
    assert record.provenance.cluster == 7


def test_a_trainer_that_streamed_a_label_trains_on_its_correction(grpc_coordinator):
    from aal_rpc.client import AnnotationClient, CoordinatorClient
    from aal_rpc.trainer import Trainer, TrainerConfig

    address, _ = grpc_coordinator
    env = Env(grpc.insecure_channel(address))
    env.queue("1", "2")
    rounds = []
    with AnnotationClient(address, "ann") as a, CoordinatorClient(address) as client:
        first = a.lease()
        a.submit(first, 3)
        trainer = Trainer(client, TrainerConfig(server_id="s", epochs=1, min_labels=1))
        real_round = trainer.train_round

        def train_round(x, y, seq):
            rounds.append(y.tolist())  # labels in the order their items joined L
            real_round(x, y, seq)
            if len(rounds) == 1:  # the first round streamed the label: now correct it, and label one more
                a.correct(first.item_id, 8)
                a.submit(a.lease(), 5)
                assert wait_until(lambda: trainer._labels == 3)  # both streamed in before the next round looks

        trainer.train_round = train_round
        trainer.run(max_rounds=2)
    assert rounds == [[3], [8, 5]]  # the first item's row now holds its correction

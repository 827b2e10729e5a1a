"""The boundaries of the annotation RPCs (issue 19), over real gRPC on both backends: an identity a token names is
that token's alone, one annotator cannot hold every lease, GetItem shows another annotator's label to admins only,
a retried label that differs is refused, and what renewals and deferrals leave behind in memory stays bounded."""

from __future__ import annotations

import grpc
import pytest
from click.testing import CliRunner

from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.query_pool import QueryPool
from aal_rpc.proto.v1 import annotation_pb2, annotation_pb2_grpc, selection_pb2, selection_pb2_grpc
from aal_rpc.security import load_tokens
from aal_rpc.serde import payload_to_proto
from tests.conftest import TASK, code_of, make_candidate

A = annotation_pb2
TOKENS = "annotator alice tok-alice\nannotator:tok-anon\nadmin:tok-admin\nworker:tok-worker\n"


def _as(token):
    return (("authorization", f"Bearer {token}"),)


class Tokened:
    """A coordinator with tokens: alice's own, an annotator token without identity, an admin's and a worker's."""

    def __init__(self, srv):
        self.srv = srv
        self.channel = grpc.insecure_channel(f"127.0.0.1:{srv.port}")
        self.stub = annotation_pb2_grpc.AnnotationServiceStub(self.channel)

    def queue(self, *ids):
        selection_pb2_grpc.SelectionServiceStub(self.channel).SubmitCandidates(selection_pb2.SubmitCandidatesRequest(
            worker_id="w", strategy="margin", candidates=[selection_pb2.Candidate(
                item_id=i, score=0.5, payload=payload_to_proto(make_candidate(i).payload)) for i in ids]),
            metadata=_as("tok-worker"), timeout=10)

    def call(self, method, request, token):
        return getattr(self.stub, method)(request, metadata=_as(token), timeout=10)

    def lease(self, token, who=""):
        return self.call("LeaseQuery", A.LeaseQueryRequest(annotator_id=who), token).query

    def submit(self, q, label, token, who=""):
        return self.call("SubmitLabel", A.SubmitLabelRequest(lease_id=q.lease_id, item_id=q.item_id, label=label,
                                                             annotator_id=who), token)

    def item(self, item_id, token, who=""):
        return self.call("GetItem", A.GetItemRequest(item_id=item_id, annotator_id=who), token)


@pytest.fixture(params=["sqlite", "postgresql"])
def tokened(request, tmp_path):
    store = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKENS)
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, CoordinatorConfig(lease_seconds=30),
                                    tokens=load_tokens(tokens), store=store)
    env = Tokened(srv)
    yield env
    env.channel.close()
    srv.stop(0)


# -- 4: an identity a token names belongs to that token ---------------------------------------------------------


def test_a_token_without_identity_cannot_act_as_an_annotator_a_token_names(tokened):
    env = tokened
    env.queue("1", "2", "3")
    labeled = env.lease("tok-alice")
    env.submit(labeled, 3, "tok-alice")
    held = env.lease("tok-alice")
    denied = grpc.StatusCode.PERMISSION_DENIED
    as_alice = {"annotator_id": "alice"}
    calls = {
        "LeaseQuery": A.LeaseQueryRequest(**as_alice),
        "SubmitLabel": A.SubmitLabelRequest(lease_id=held.lease_id, item_id=held.item_id, label=1, **as_alice),
        "RenewLease": A.RenewLeaseRequest(lease_id=held.lease_id, item_id=held.item_id, **as_alice),
        "defer": A.ReleaseQueryRequest(lease_id=held.lease_id, item_id=held.item_id, **as_alice,
                                       reason=A.RELEASE_REASON_DEFER),
        "skip": A.ReleaseQueryRequest(lease_id=held.lease_id, item_id=held.item_id, **as_alice,
                                      reason=A.RELEASE_REASON_SKIP),
        "CorrectLabel": A.CorrectLabelRequest(item_id=labeled.item_id, label=5, **as_alice),
        "GetItem": A.GetItemRequest(item_id=labeled.item_id, **as_alice),
    }
    for name, request in calls.items():
        method = "ReleaseQuery" if name in ("defer", "skip") else name
        assert code_of(lambda: env.call(method, request, "tok-anon")) == denied, name
    # nothing changed: alice's lease still holds, her label is still hers
    c = env.srv.coordinator
    assert c.get_item(held.item_id).state == "leased" and c.get_item(labeled.item_id).record.label == 3
    assert env.submit(held, 2, "tok-alice").seq == 2
    # a name no token owns stays free to claim; an admin keeps what admins may do
    q = env.lease("tok-anon", who="bob")
    assert env.submit(q, 1, "tok-anon", who="bob").seq == 3
    fixed = env.call("CorrectLabel", A.CorrectLabelRequest(item_id=labeled.item_id, label=6, annotator_id="ops"),
                     "tok-admin")
    assert not fixed.duplicate and c.get_item(labeled.item_id).record.label == 6


# -- 12: GetItem shows another annotator's label to admins only -------------------------------------------------


def test_get_item_shows_a_label_and_who_gave_it_to_that_annotator_and_admins_only(tokened):
    env = tokened
    env.queue("1", "2")
    q = env.lease("tok-alice")
    env.submit(q, 4, "tok-alice")
    mine = env.item(q.item_id, "tok-alice")
    assert mine.state == A.ITEM_STATE_LABELED and (mine.current.label, mine.current.annotator_id) == (4, "alice")
    for token, who in (("tok-anon", "bob"), ("tok-anon", "")):
        other = env.item(q.item_id, token, who)
        assert other.state == A.ITEM_STATE_LABELED  # the state, not the label nor who gave it
        assert not other.HasField("current") and "alice" not in str(other)
    admin = env.item(q.item_id, "tok-admin")
    assert (admin.current.label, admin.current.annotator_id) == (4, "alice")
    # a queued item's state and payload are anyone's to see
    queued = env.item("2" if q.item_id == "1" else "1", "tok-anon", "bob")
    assert queued.state == A.ITEM_STATE_QUEUED and queued.payload.tensor.data


def test_the_annotation_client_reads_only_its_own_labels(grpc_coordinator):
    from aal_rpc.client import AnnotationClient, CoordinatorClient

    address, _ = grpc_coordinator
    with CoordinatorClient(address) as admin:
        admin.submit_candidates(worker_id="w", strategy="margin", model_version=0,
                                candidates=[("1", make_candidate("1").payload, 0.5)])
    with AnnotationClient(address, "ann") as ann, AnnotationClient(address, "bob") as bob:
        done = ann.submit(ann.lease(), 2)
        assert (ann.get_item("1").label, ann.get_item("1").labeled_by, ann.get_item("1").seq) == (2, "ann", done.seq)
        seen = bob.get_item("1")
        assert (seen.state, seen.label, seen.labeled_by, seen.seq) == ("labeled", None, "", 0)


# -- 6: a cap on one annotator's live leases ---------------------------------------------------------------------


def test_the_default_cap_holds_the_label_studio_bridges_default_window_and_is_in_help():
    from aal_rpc.cli import coordinator, labelstudio

    window = next(p for p in labelstudio.main.params if p.name == "window")
    assert CoordinatorConfig().max_leases_per_annotator >= window.default
    out = CliRunner().invoke(coordinator.main, ["--help"], terminal_width=200).output
    assert "--max-leases-per-annotator" in out and "0: no cap" in out


# -- 11: memory grows with state, not with calls ----------------------------------------------------------------


def test_renewals_leave_a_bounded_deadline_heap():
    pool = QueryPool(capacity=8)
    pool.offer([make_candidate(str(i)) for i in range(4)], 0.0)
    leases = [pool.lease("a", 0.0, 60.0).lease.lease_id for _ in range(4)]
    for n in range(10_000):
        pool.renew(leases[n % 4], 100.0 + n)
    assert len(pool._deadlines) <= 2 * 4 + 64
    assert pool.expire(100.0 + 9_995) == [] and pool.leased_count == 4  # the live deadlines were kept
    assert sorted(pool.expire(100.0 + 10_000)) == ["0", "1", "2", "3"]


def test_ended_deferrals_are_forgotten_while_their_item_stays_in_s():
    pool = QueryPool(capacity=8)
    pool.offer([make_candidate("1"), make_candidate("2")], 0.0)
    now = 0.0
    for n in range(5_000):  # one annotator after another says "don't know" for ten seconds
        now += 1.0
        deferred = pool.lease(f"a{n}", now, 60.0).candidate.item_id
        pool.defer(deferred, f"a{n}", now + 10.0, now=now)
    kept = sum(len(d) for d in pool._deferred.values())
    assert kept <= 2 * 20 + 64  # about the deferrals still running (ten at a time), not the 5000 made
    assert pool.lease("a4999", now, 60.0).candidate.item_id != deferred  # a running deferral still holds
    assert pool.lease("a4999", now, 60.0) is None


def test_an_item_holds_a_bounded_number_of_deferrals():
    from aal_rpc.coordinator.rules import MAX_DEFERRALS_PER_ITEM

    pool = QueryPool(capacity=8)
    pool.offer([make_candidate("1")], 0.0)
    for n in range(MAX_DEFERRALS_PER_ITEM + 50):  # each one running for a day
        entry = pool.lease(f"a{n}", 0.0, 60.0)
        pool.defer(entry.candidate.item_id, f"a{n}", 86_400.0 + n, now=0.0)
    assert len(pool._deferred["1"]) == MAX_DEFERRALS_PER_ITEM
    assert pool.lease(f"a{MAX_DEFERRALS_PER_ITEM + 49}", 0.0, 60.0) is None  # the latest deferrals are kept


def test_get_task_tells_a_caller_which_identity_its_token_names(tokened):
    from aal_rpc.proto.v1 import admin_pb2, admin_pb2_grpc

    admin = admin_pb2_grpc.AdminServiceStub(tokened.channel)
    who = {t: admin.GetTask(admin_pb2.GetTaskRequest(), metadata=_as(t), timeout=10).caller_identity
           for t in ("tok-alice", "tok-anon", "tok-admin")}
    assert who == {"tok-alice": "alice", "tok-anon": "", "tok-admin": ""}

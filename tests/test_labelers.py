"""A tool that speaks for people of its own (the Label Studio bridge) names the labeler behind each label, and the
model's guess travels with an item: both over real gRPC, with tokens, on the embedded store and on PostgreSQL.

- A token allowed to delegate (`annotator+delegate bridge TOKEN`) records a label as `bridge/<labeler>`; any other
  annotator token naming a labeler is refused (PERMISSION_DENIED) and changes nothing; bad names are
  INVALID_ARGUMENT; a retry must name the same labeler; corrections stay inside the namespace.
- A worker's candidate carries the model's guess (class and probability); annotators get it, except for gold and
  audit items; a cold-start candidate with a guess is refused.
"""

from __future__ import annotations

import grpc
import pytest

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import serve_coordinator
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.embedded import EmbeddedCoordinator
from aal_rpc.coordinator.metrics import CoordinatorMetrics
from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.security import ClientSecurity, Principal, parse_tokens
from aal_rpc.types import AUDIT_STRATEGY
from tests.conftest import TASK, make_candidate
from tests.test_registry import publish, weights

TOKENS = {"bridge-token": Principal("annotator", "bridge", delegates=True),
          "carol-token": Principal("annotator", "carol"),
          "shared-token": Principal("annotator"),
          "mallory-token": Principal("annotator", "bridge/mallory"),
          "admin-token": Principal("admin")}


def test_a_delegating_token_is_declared_in_the_tokens_file():
    assert parse_tokens("annotator+delegate bridge tok-b\nannotator alice tok-a") == {
        "tok-b": Principal("annotator", "bridge", delegates=True), "tok-a": Principal("annotator", "alice")}
    for line in ("annotator+delegate:tok", "worker+delegate w tok", "admin+delegate root tok"):
        with pytest.raises(ValueError, match="only an annotator token that names an identity may delegate"):
            parse_tokens(line)


@pytest.fixture(params=["embedded", "postgresql"])
def served(request, tmp_path):
    """The coordinator of either store, served with TOKENS as aal-coordinator serves it; its address."""
    if request.param == "postgresql":
        from aal_rpc.coordinator.postgres import SharedCoordinator
        from aal_rpc.coordinator.postgres_store import PostgresStore

        c = SharedCoordinator(PostgresStore(request.getfixturevalue("postgres").new_database(), pool_size=8), TASK,
                              CoordinatorConfig(poll_seconds=None))
    else:
        c = EmbeddedCoordinator(SqliteStore(tmp_path / "data"), TASK, CoordinatorConfig(poll_seconds=None))
    srv = serve_coordinator("127.0.0.1:0", c, CoordinatorMetrics(), tokens=TOKENS)
    yield f"127.0.0.1:{srv.port}", c
    srv.stop(grace=0)


def _client(address, token, annotator_id=""):
    return AnnotationClient(address, annotator_id, retry_for=0, security=ClientSecurity(token=token))


def _admin(address):
    return CoordinatorClient(address, retry_for=0, security=ClientSecurity(token="admin-token"))


def _offer(address, ids, *, version=0, guess=None, probability=0.0, strategy="entropy"):
    with _admin(address) as admin:
        admin.submit_candidates(worker_id="w0", strategy=strategy, model_version=version,
                                candidates=[(i, make_candidate(i).payload, 0.5, None, guess, probability)
                                            for i in ids])


def _records(address):
    with _admin(address) as admin:
        return list(admin.export(include_payload=False))


def test_a_delegating_token_records_each_labeler_in_its_namespace(served):
    address, _ = served
    _offer(address, ["1", "2"])
    with _client(address, "bridge-token") as bridge:
        assert bridge.may_name_labeler()
        a, b = bridge.lease(), bridge.lease()
        first = bridge.submit(a, 3, labeler="alice@example.org")
        assert bridge.submit(a, 3, labeler="alice@example.org") == type(first)(first.seq, True)  # a retry, once
        with pytest.raises(grpc.RpcError) as refused:  # a retry naming someone else is not a retry
            bridge.submit(a, 3, labeler="bob")
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        bridge.submit(b, 4)  # no labeler: the holder's own
    assert [(r.item_id, r.annotator_id) for r in _records(address)] == [
        (a.item_id, "bridge/alice@example.org"), (b.item_id, "bridge")]


def test_a_token_that_may_not_delegate_naming_a_labeler_is_refused_and_changes_nothing(served):
    address, _ = served
    _offer(address, ["1"])
    for token in ("carol-token", "shared-token"):
        with _client(address, token, "" if token == "carol-token" else "dave") as ann:
            assert not ann.may_name_labeler()
            q = ann.lease()
            with pytest.raises(grpc.RpcError) as refused:
                ann.submit(q, 3, labeler="alice")
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "delegate" in refused.value.details()
            ann.release(q)
    assert _records(address) == []
    with _client(address, "carol-token") as carol:  # the lease was given back untouched: it labels as carol
        carol.submit(carol.lease(), 2)
    assert [r.annotator_id for r in _records(address)] == ["carol"]


@pytest.mark.parametrize("labeler", ["x" * 257, "a\x00b", "y" * 250])  # the last: bridge/y... is over 256
def test_a_bad_labeler_is_invalid_argument(served, labeler):
    address, _ = served
    _offer(address, ["1"])
    with _client(address, "bridge-token") as bridge:
        q = bridge.lease()
        with pytest.raises(grpc.RpcError) as refused:
            bridge.submit(q, 3, labeler=labeler)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as refused:
            bridge.correct("1", 3, labeler=labeler)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _records(address) == []


def test_a_labeler_may_not_be_an_identity_another_token_names(served):
    address, _ = served
    _offer(address, ["1"])
    with _client(address, "bridge-token") as bridge:
        q = bridge.lease()
        with pytest.raises(grpc.RpcError) as refused:
            bridge.submit(q, 3, labeler="mallory")  # bridge/mallory has a token of its own
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert _records(address) == []


def test_corrections_stay_inside_the_namespace(served):
    address, _ = served
    _offer(address, ["1"])
    with _client(address, "bridge-token") as bridge:
        bridge.submit(bridge.lease(), 3, labeler="alice")
        # another of the bridge's people changes alice's label: recorded as theirs
        fixed = bridge.correct("1", 5, labeler="bob")
        assert not fixed.duplicate
        assert bridge.correct("1", 5, labeler="bob").duplicate
    for labeler in ("", "x"):  # outside the namespace, and a token that may not delegate
        with _client(address, "carol-token") as carol, pytest.raises(grpc.RpcError) as refused:
            carol.correct("1", 6, labeler=labeler)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert [(r.label, r.annotator_id, r.supersedes) for r in _records(address)] == [
        (3, "bridge/alice", 0), (5, "bridge/bob", 1)]


def test_an_admin_token_may_name_a_labeler(served):
    address, _ = served
    _offer(address, ["1"])
    with _client(address, "admin-token", "ops") as ops:
        assert ops.may_name_labeler()
        ops.submit(ops.lease(), 1, labeler="erin")
    assert [r.annotator_id for r in _records(address)] == ["ops/erin"]


# -- the model's guess ----------------------------------------------------------------------------------------------


def test_the_models_guess_reaches_annotators_and_l_but_not_for_audit_items(served):
    address, c = served
    publish(c, weights(), labels=1)  # a filler label first; model v1
    _offer(address, ["1"], version=1, guess=7, probability=0.75)
    _offer(address, ["2"], version=1, guess=2, probability=0.5, strategy=AUDIT_STRATEGY)
    with _client(address, "carol-token") as carol:
        got = {q.item_id: q for q in (carol.lease(), carol.lease())}
        assert (got["1"].provenance.guess, got["1"].provenance.guess_probability) == (7, 0.75)
        assert (got["2"].provenance.guess, got["2"].provenance.guess_probability) == (None, 0.0)
        assert carol.get_item("1").provenance.guess == 7
        carol.submit(got["1"], 7)
    recorded = {r.item_id: r.provenance for r in _records(address)}
    assert (recorded["1"].guess, recorded["1"].guess_probability, recorded["1"].model_version) == (7, 0.75, 1)


@pytest.mark.parametrize("version, guess, probability", [(0, 1, 0.5), (1, 10, 0.5), (1, -1, 0.5), (1, 1, 1.5)])
def test_a_bad_guess_is_invalid_argument(served, version, guess, probability):
    address, c = served
    publish(c, weights(), labels=1)
    with pytest.raises(grpc.RpcError) as refused:
        _offer(address, ["1"], version=version, guess=guess, probability=probability)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with _client(address, "carol-token") as carol:
        assert carol.lease() is None  # nothing of the batch was taken

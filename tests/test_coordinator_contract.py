"""The behavioural suite of the coordinator contract (coordinator/contract.py): every pool rule of rules.py, run on
the embedded coordinator (SQLite), on the shared-database coordinator (a real PostgreSQL server), and through the
servicers over real gRPC with the client library. A rule that waits for time to pass moves an injected clock; a
wake-up test runs with the poll safety net off (poll_seconds=None), so only a signal can end its wait. Waiting is
the servicers' (the contract's calls never wait), so the wake-up tests run over gRPC, on both stores."""

from __future__ import annotations

import itertools
import threading
from dataclasses import replace

import grpc
import pytest

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.client.annotation import LeasedQuery
from aal_rpc.coordinator.app import serve_coordinator
from aal_rpc.coordinator.contract import CoordinatorConfig, ImportedLabel, ImportOutcome, ShardState
from aal_rpc.coordinator.embedded import EmbeddedCoordinator
from aal_rpc.coordinator.following import FOLLOW_RECHECK_SECONDS, STREAM_PAGE
from aal_rpc.coordinator.importing import IMPORT_BATCH
from aal_rpc.coordinator.lease_queue import RECHECK_SECONDS
from aal_rpc.coordinator.metrics import CoordinatorMetrics
from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.coordinator.validation import MAX_WAIT_SECONDS
from aal_rpc.errors import (FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted,
                            Unavailable)
from aal_rpc.proto.v1 import admin_pb2, admin_pb2_grpc
from aal_rpc.serde import record_from_proto
from aal_rpc.types import Payload, Query, shard_of
from tests.conftest import TASK, fill_labels, make_candidate, wait_until
from tests.test_registry import publish, weights

NO_POLL = CoordinatorConfig(poll_seconds=None)
T0 = 1_000_000.0
# a wake-up test's waits end before the servicers' own rechecks would look again: only a signal can end them
WAKE_WAIT = min(RECHECK_SECONDS, FOLLOW_RECHECK_SECONDS) - 10


class Clock:
    """Unix seconds that move only when a test says so."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- the coordinator over gRPC, with the contract's method names ------------------------------------------------

ERRORS = {grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument, grpc.StatusCode.NOT_FOUND: NotFound,
          grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition, grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
          grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted, grpc.StatusCode.UNAVAILABLE: Unavailable}


def _domain_errors(fn):
    """A status the servicers give for a domain error becomes that error again; any other status (INTERNAL,
    UNKNOWN) stays an RpcError, which no test expects."""
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as exc:
            if exc.code() in ERRORS:
                raise ERRORS[exc.code()](exc.details()) from None
            raise
    return call


class OverGrpc:
    """What the tests call on a coordinator, made through the client library and the servicers."""

    def __init__(self, srv):
        self.srv = srv
        self.address = f"127.0.0.1:{srv.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.admin = CoordinatorClient(self.address, retry_for=0, channel=self.channel)
        self.export = admin_pb2_grpc.AdminServiceStub(self.channel).ExportLabels

    def close(self):
        self.channel.close()
        self.srv.stop(grace=0)

    @property
    def closing(self):
        return self.srv.coordinator.closing

    def _ann(self, annotator_id, lease_seconds=0.0):
        return AnnotationClient(self.address, annotator_id, retry_for=0, channel=self.channel,
                                lease_seconds=lease_seconds)

    @staticmethod
    def _q(lease_id, item_id):
        return LeasedQuery(item_id, lease_id, 0.0, None, None)

    def submit_candidates(self, *, worker_id, strategy, model_version, candidates):
        return _domain_errors(self.admin.submit_candidates)(
            worker_id=worker_id, strategy=strategy, model_version=model_version,
            candidates=[(c.item_id, c.payload, c.provenance.score) for c in candidates])

    def lease(self, annotator_id, *, wait_seconds=0.0, lease_seconds=0.0):
        q = _domain_errors(self._ann(annotator_id, lease_seconds).lease)(wait_seconds)
        return None if q is None else Query(q.item_id, q.lease_id, annotator_id, q.deadline_unix, q.payload,
                                            q.provenance)

    def submit_label(self, *, lease_id, item_id, label, annotator_id):
        r = _domain_errors(self._ann(annotator_id).submit)(self._q(lease_id, item_id), label)
        return r.seq, r.duplicate

    def release(self, *, lease_id, item_id, annotator_id, skip=False, defer=False, defer_seconds=0.0):
        ann = self._ann(annotator_id)
        q = self._q(lease_id, item_id)
        if defer:
            return _domain_errors(ann.defer)(q, defer_seconds=defer_seconds)
        return _domain_errors(ann.skip if skip else ann.release)(q)

    def renew_lease(self, *, lease_id, item_id, annotator_id, lease_seconds=0.0):
        return _domain_errors(self._ann(annotator_id, lease_seconds).renew)(self._q(lease_id, item_id)).deadline_unix

    def correct_label(self, *, item_id, label, annotator_id, is_admin=False):
        r = _domain_errors(self._ann(annotator_id).correct)(item_id, label)
        return r.seq, r.supersedes, r.duplicate

    def get_item(self, item_id):
        return _domain_errors(self._ann("reader").get_item)(item_id)

    def read_labels(self, after_seq, limit, *, include_payload=True, latest_only=False):
        """StreamLabels from `after_seq` (ExportLabels for what only it offers): the server starts after the seq and
        pages through L; the call ends after `limit` records."""
        if include_payload and not latest_only:
            call = self.admin.stream_labels(after_seq, follow=False, timeout=60)
        else:
            call = self.export(admin_pb2.ExportLabelsRequest(after_seq=after_seq, include_payload=include_payload,
                                                             latest_only=latest_only), timeout=60)
        try:
            return _domain_errors(lambda: [record_from_proto(m) for m in itertools.islice(call, limit)])()
        finally:
            call.cancel()

    def stats(self):
        return _domain_errors(self.admin.stats)()

    def shard_state(self, *, shard_index, num_shards, labeled_after_seq, model_version):
        r = _domain_errors(self.admin.shard_state)(shard_index=shard_index, num_shards=num_shards,
                                                   labeled_after_seq=labeled_after_seq, model_version=model_version)
        return ShardState(list(r.queued_item_ids), list(r.labeled_item_ids), r.labeled_through_seq, r.more, r.demand,
                          r.max_labels_per_item)

    def begin_round(self, *, server_id, num_labels, round_seconds):
        return _domain_errors(self.admin.begin_round)(server_id=server_id, num_labels=num_labels,
                                                      round_seconds=round_seconds)

    def publish_model(self, *, data, sha256=None, **header):
        return _domain_errors(self.admin.upload_model)(data, **header)

    def import_labels(self, items):
        r = _domain_errors(self.admin.import_labels)([(i.item_id, i.label, i.payload, i.annotator_id) for i in items])
        return ImportOutcome(r.imported, r.skipped, r.first_seq, r.last_seq)

    def latest_model(self):
        return _domain_errors(self.admin.latest_model)()


# -- fixtures ---------------------------------------------------------------------------------------------------


def _opener(kind, request, tmp_path):
    url = request.getfixturevalue("postgres").new_database() if kind.endswith("postgresql") else None
    opened = []

    def make(config: CoordinatorConfig = NO_POLL, *, clock=None, task=TASK):
        """`kind`: "embedded" or "postgresql", called directly, or "grpc" / "grpc-postgresql": that coordinator
        served as aal-coordinator serves it, called through the client library."""
        observer = CoordinatorMetrics() if kind.startswith("grpc") else None
        kw = {"clock": clock} if clock else {}
        if kind.endswith("postgresql"):
            from aal_rpc.coordinator.postgres_store import PostgresStore
            from aal_rpc.coordinator.postgres import SharedCoordinator

            c = SharedCoordinator(PostgresStore(url, pool_size=8), task, config, observer, **kw)
        else:
            c = EmbeddedCoordinator(SqliteStore(tmp_path / "data"), task, config, observer, **kw)
        if observer is not None:
            c = OverGrpc(serve_coordinator("127.0.0.1:0", c, observer))
        opened.append(c)
        return c

    return make, opened


def _made(kind, request, tmp_path):
    """Coordinators of one kind on one store (a second one reopens it); all closed at teardown."""
    opener, opened = _opener(kind, request, tmp_path)
    yield opener
    for c in opened:
        if not c.closing:
            c.close()


@pytest.fixture(params=["embedded", "postgresql", "grpc"])
def make(request, tmp_path):
    yield from _made(request.param, request, tmp_path)


@pytest.fixture(params=["embedded", "postgresql"])
def make_direct(request, tmp_path):
    """As `make`, without the network: for an injected clock, a restart or threads that race."""
    yield from _made(request.param, request, tmp_path)


@pytest.fixture(params=["grpc", "grpc-postgresql"])
def make_served(request, tmp_path):
    """Either store behind the servicers: where a call waits for a change."""
    yield from _made(request.param, request, tmp_path)


@pytest.fixture
def make_embedded(tmp_path, request):
    yield from _made("embedded", request, tmp_path)


@pytest.fixture
def make_served_embedded(tmp_path, request):
    yield from _made("grpc", request, tmp_path)


def submit(c, ids, version=0, score=0.5, strategy="entropy", worker="w0"):
    return c.submit_candidates(worker_id=worker, strategy=strategy, model_version=version,
                               candidates=[make_candidate(i, version=version, score=score, strategy=strategy,
                                                          worker=worker) for i in ids])


def label(c, q, who="a", value=3):
    return c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=value, annotator_id=who)


def lease_all(c, who="a"):
    got = []
    while (q := c.lease(who)) is not None:
        got.append(q)
    return got


def model_v(c, version_labels):
    """Publish models until `version` exists: candidates of a version need it published."""
    for n in version_labels:
        publish(c, weights(), labels=n)


# -- labels -----------------------------------------------------------------------------------------------------


def test_a_label_lands_in_l_with_its_provenance_once(make):
    c = make()
    out = submit(c, ["1", "2"], strategy="margin")
    assert (out.accepted, out.rejected) == (2, 0)
    q = c.lease("a")
    assert label(c, q) == (1, False)
    assert label(c, q) == (1, True)  # a retry is acknowledged again, not recorded twice
    [record] = c.read_labels(0, 10)
    assert (record.seq, record.item_id, record.label, record.annotator_id) == (1, q.item_id, 3, "a")
    assert record.provenance.strategy == "margin" and record.provenance.worker_id == "w0"
    assert record.labeled_at >= record.leased_at >= record.queued_at > 0
    assert c.read_labels(1, 10) == [] and c.read_labels(0, 10, include_payload=False)[0].payload is None
    s = c.stats()
    assert (s.labeled, s.queued, s.leased, dict(s.labels_by_strategy)) == (1, 1, 0, {"margin": 1})


def test_leases_are_checked_by_one_rule(make):
    c = make()
    submit(c, ["1", "2"])
    q = c.lease("a")
    other = c.lease("b")
    for call in (lambda **k: label(c, **k), lambda **k: c.release(lease_id=k["q"].lease_id, item_id=k["q"].item_id,
                                                                   annotator_id=k["who"]),
                 lambda **k: c.renew_lease(lease_id=k["q"].lease_id, item_id=k["q"].item_id, annotator_id=k["who"])):
        with pytest.raises(FailedPrecondition, match="another annotator"):
            call(q=q, who="mallory")
        with pytest.raises(FailedPrecondition, match=f"is for item {q.item_id}"):
            call(q=replace(q, item_id=other.item_id), who="a")
        with pytest.raises(FailedPrecondition, match="expired or is not held"):
            call(q=replace(q, lease_id="forged"), who="a")
        with pytest.raises(NotFound):
            call(q=replace(q, lease_id="forged", item_id="999"), who="a")
    seq, _ = label(c, q)
    with pytest.raises(FailedPrecondition, match="was for item"):
        label(c, replace(q, item_id=other.item_id))
    assert (c.stats().labeled, c.stats().leased, c.stats().last_seq) == (1, 1, seq)


def test_a_retry_that_carries_another_label_is_refused_and_points_to_a_correction(make):
    c = make()
    submit(c, ["1"])
    q = c.lease("a")
    assert label(c, q, value=3) == (1, False)
    with pytest.raises(FailedPrecondition, match=r"label 3.*CorrectLabel"):
        label(c, q, value=4)
    with pytest.raises(FailedPrecondition, match="another annotator"):
        label(c, q, who="b", value=3)
    assert label(c, q, value=3) == (1, True)  # the same label again is still a retry
    assert [(r.seq, r.label) for r in c.read_labels(0, 10)] == [(1, 3)]


def test_bad_requests_are_invalid_and_change_nothing(make):
    c = make()
    submit(c, ["1"])
    q = c.lease("a")
    for bad in (10, -1):
        with pytest.raises(InvalidArgument):
            label(c, q, value=bad)
    with pytest.raises(InvalidArgument, match="NUL"):  # no database text column can hold it
        c.lease("a\x00b")
    with pytest.raises(InvalidArgument):
        c.shard_state(shard_index=2, num_shards=2, labeled_after_seq=0, model_version=0)
    with pytest.raises(InvalidArgument):
        submit(c, ["2"], version=7)  # never published
    assert (c.stats().labeled, c.stats().leased, c.stats().queued) == (0, 1, 0)


def run_together(c, threads, errors):
    """Start the threads, wait for them, and return L's records once none of them failed."""
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    return c.read_labels(0, 10 ** 6)


def test_concurrent_annotators_label_every_item_exactly_once_in_seq_order(make_direct):
    c = make_direct(replace(NO_POLL, pool_capacity=500))
    submit(c, [str(i) for i in range(120)])
    errors = []

    def annotate(name):
        try:
            while (q := c.lease(name)) is not None:
                label(c, q, who=name, value=1)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    records = run_together(c, [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(6)], errors)
    assert [r.seq for r in records] == list(range(1, 121)) and len({r.item_id for r in records}) == 120


def test_a_restart_resumes_labels_queries_leases_and_models(make_direct):
    c = make_direct()
    submit(c, ["1", "2", "3"])
    label(c, c.lease("a"))
    held = c.lease("b")
    data = weights()
    publish(c, data, labels=1)
    c.close()
    c2 = make_direct()
    s = c2.stats()
    assert (s.labeled, s.queued, s.leased, s.latest_model_version, s.last_seq) == (1, 1, 1, 1, 1)
    assert label(c2, held, who="b") == (2, False)
    assert c2.read_model(1)[1] == data


# -- pick orders ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pick, expected", [("fresh", ["3", "2", "1"]), ("score", ["1", "3", "2"])])
def test_pick_order(make, pick, expected):
    c = make(replace(NO_POLL, pick=pick))
    fill_labels(c, 2)
    model_v(c, [1, 2])
    submit(c, ["1"], version=1, score=0.9)
    submit(c, ["2"], version=2, score=0.1)
    submit(c, ["3"], version=2, score=0.5)
    assert [q.item_id for q in lease_all(c)] == expected


def test_random_pick_serves_every_item_once(make):
    c = make(replace(NO_POLL, pick="random"))
    submit(c, [str(i) for i in range(20)])
    assert sorted((q.item_id for q in lease_all(c)), key=int) == [str(i) for i in range(20)]


# -- offers: dedup, refresh, capacity and eviction, demand ------------------------------------------------------


def test_an_item_is_deduplicated_and_refreshed_only_by_a_newer_unleased_version(make):
    c = make()
    fill_labels(c, 3)
    model_v(c, [1, 2, 3])
    assert submit(c, ["1"], version=1).accepted == 1
    assert submit(c, ["1"], version=1).rejected == 1
    assert submit(c, ["1"], version=0).rejected == 1
    assert submit(c, ["1"], version=2, score=0.1).refreshed == 1
    assert c.get_item("1").provenance.model_version == 2
    submit(c, ["7"], version=1)
    q = c.lease("a", lease_seconds=60)  # "1" (version 2) first
    assert q.item_id == "1" and submit(c, ["1"], version=3).rejected == 1  # leased: not refreshed


def test_items_in_l_or_skipped_are_never_queued_again(make):
    c = make()
    submit(c, ["1", "2"])
    q1, q2 = c.lease("a"), c.lease("a")
    label(c, q1)
    c.release(lease_id=q2.lease_id, item_id=q2.item_id, annotator_id="a", skip=True)
    model_v(c, [1])
    assert submit(c, [q1.item_id, q2.item_id], version=1).rejected == 2
    assert c.get_item(q2.item_id).state == "skipped" and c.get_item(q1.item_id).state == "labeled"
    state = c.shard_state(shard_index=0, num_shards=1, labeled_after_seq=0, model_version=0)
    assert set(state.labeled) >= {q1.item_id, q2.item_id}


def test_a_full_pool_evicts_the_stalest_available_candidate_for_a_fresher_one_only(make):
    c = make(replace(NO_POLL, pool_capacity=3))
    fill_labels(c, 3)
    model_v(c, [1, 2, 3])
    submit(c, ["1"], version=1, score=0.9)
    submit(c, ["2"], version=1, score=0.2)
    submit(c, ["3"], version=2, score=0.1)
    assert submit(c, ["4"], version=1, score=1.0).rejected == 1  # not fresher than the stalest
    out = submit(c, ["5"], version=3)
    assert (out.accepted, out.evicted) == (1, 1)  # "2": oldest version, lowest score
    with pytest.raises(NotFound):
        c.get_item("2")
    assert c.stats().candidates_evicted == 1


def test_leased_candidates_are_never_evicted_and_a_batch_never_evicts_its_own(make):
    c = make(replace(NO_POLL, pool_capacity=2))
    fill_labels(c, 2)
    model_v(c, [1, 2])
    submit(c, ["1"], version=0)
    c.lease("a")
    out = submit(c, ["2", "3", "4"], version=1)  # room for one; "1" is leased
    assert (out.accepted, out.rejected, out.evicted) == (1, 2, 0)
    out = submit(c, ["5", "6"], version=2)  # "2" makes room for "5"; "6" may not evict "5"
    assert (out.accepted, out.rejected, out.evicted) == (1, 1, 1)


def test_demand_counts_older_versions_as_replaceable_and_is_shared_by_shards(make):
    c = make(replace(NO_POLL, pool_capacity=5))
    fill_labels(c, 3)
    model_v(c, [1, 2, 3])
    for i, v in enumerate([1, 1, 2, 3]):
        submit(c, [str(i)], version=v)

    def demand(version, shards=1):
        return c.shard_state(shard_index=0, num_shards=shards, labeled_after_seq=0, model_version=version).demand

    assert (demand(0), demand(2), demand(3), demand(2, shards=2)) == (1, 3, 4, 2)


def test_shards_partition_items_by_the_shard_key(make):
    c = make(replace(NO_POLL, pool_capacity=50))
    ids = [str(i) for i in range(20)]
    submit(c, ids)
    labeled = {q.item_id for q in [c.lease("a") for _ in range(5)] if label(c, q)}
    for shard in (0, 1):
        s = c.shard_state(shard_index=shard, num_shards=2, labeled_after_seq=0, model_version=0)
        assert set(s.labeled) == {i for i in labeled if shard_of(i, 2) == shard}
        assert set(s.queued) == {i for i in set(ids) - labeled if shard_of(i, 2) == shard}
        assert s.labeled_through_seq == 5 and not s.more
    assert c.shard_state(shard_index=0, num_shards=2, labeled_after_seq=5, model_version=0).labeled == []


# -- leases in time -----------------------------------------------------------------------------------------------


def test_an_expired_lease_is_refused_and_its_item_returns(make_direct):
    clock = Clock()
    c = make_direct(replace(NO_POLL, lease_seconds=30), clock=clock)
    submit(c, ["1"])
    q = c.lease("a")
    clock.advance(29)
    assert c.stats().leased == 1 and c.lease("b") is None
    clock.advance(1)
    with pytest.raises(FailedPrecondition):
        label(c, q)
    assert c.stats().queued == 1 and c.get_item("1").state == "queued"
    assert c.lease("b").item_id == "1"


def test_a_renewed_lease_outlives_its_first_deadline(make_direct):
    clock = Clock()
    c = make_direct(replace(NO_POLL, lease_seconds=30), clock=clock)
    submit(c, ["1"])
    q = c.lease("a")
    clock.advance(20)
    assert c.renew_lease(lease_id=q.lease_id, item_id="1", annotator_id="a") == T0 + 50
    clock.advance(20)
    assert c.lease("b") is None
    assert label(c, q) == (1, False)


def test_a_deferred_item_goes_to_others_and_back_to_its_annotator_after_the_deferral(make_direct):
    clock = Clock()
    c = make_direct(replace(NO_POLL, defer_seconds=100), clock=clock)
    submit(c, ["1"])
    q = c.lease("a")
    c.release(lease_id=q.lease_id, item_id="1", annotator_id="a", defer=True)
    assert c.lease("a") is None
    other = c.lease("b")
    c.release(lease_id=other.lease_id, item_id="1", annotator_id="b")
    clock.advance(100)
    assert c.lease("a").item_id == "1"


def test_an_item_keeps_the_deferrals_ending_last(make_direct):
    from aal_rpc.coordinator.rules import MAX_DEFERRALS_PER_ITEM

    c = make_direct(replace(NO_POLL, defer_seconds=100), clock=Clock())
    submit(c, ["1"])
    for i in range(MAX_DEFERRALS_PER_ITEM + 1):  # each "don't know" runs a second longer than the one before
        q = c.lease(f"u{i}")
        c.release(lease_id=q.lease_id, item_id="1", annotator_id=f"u{i}", defer=True, defer_seconds=1000 + i)
    assert c.lease("u1") is None  # still deferred
    assert c.lease("u0").item_id == "1"  # the deferral ending first made room


def test_defer_and_return_over_grpc(make):
    c = make()
    submit(c, ["1"])
    q = c.lease("a")
    c.release(lease_id=q.lease_id, item_id="1", annotator_id="a", defer=True)
    assert c.lease("a") is None
    other = c.lease("b")
    c.release(lease_id=other.lease_id, item_id="1", annotator_id="b")
    assert c.get_item("1").state == "queued" and c.lease("c").item_id == "1"


def test_one_annotator_holds_at_most_the_cap_of_live_leases(make_direct):
    clock = Clock()
    c = make_direct(replace(NO_POLL, lease_seconds=30, max_leases_per_annotator=2), clock=clock)
    submit(c, [str(i) for i in range(6)])
    first, second = c.lease("a"), c.lease("a", lease_seconds=60)
    with pytest.raises(ResourceExhausted, match="2 live leases"):
        c.lease("a")
    assert c.lease("b") is not None  # the cap is per annotator
    label(c, first)
    third = c.lease("a")  # a label frees its place
    with pytest.raises(ResourceExhausted):
        c.lease("a")
    clock.advance(30)  # `third` expires, `second` still runs
    assert c.lease("a") is not None
    with pytest.raises(ResourceExhausted):
        c.lease("a")
    c.release(lease_id=second.lease_id, item_id=second.item_id, annotator_id="a", defer=True)
    assert c.lease("a") is not None


def test_the_cap_holds_exactly_for_leases_taken_at_once(make_direct):
    c = make_direct(replace(NO_POLL, max_leases_per_annotator=3, pool_capacity=100))
    submit(c, [str(i) for i in range(40)])
    got, errors, start = [], [], threading.Barrier(8)

    def grab():
        start.wait()
        for _ in range(4):
            try:
                got.append(c.lease("a"))
            except ResourceExhausted:
                pass
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    run_together(c, threads, errors)
    assert len(got) == 3 and c.stats().leased == 3


def test_a_cap_of_zero_is_no_cap_and_leases_held_before_a_restart_count(make):
    c = make(replace(NO_POLL, max_leases_per_annotator=0))
    submit(c, [str(i) for i in range(5)])
    assert len(lease_all(c)) == 5
    c.close()
    capped = make(replace(NO_POLL, max_leases_per_annotator=2))
    with pytest.raises(ResourceExhausted, match="max-leases-per-annotator"):
        capped.lease("a")


# -- corrections, rounds --------------------------------------------------------------------------------------------


def test_a_correction_supersedes_without_rewriting_l(make):
    c = make()
    submit(c, ["1"])
    q = c.lease("a")
    label(c, q, value=3)
    assert c.correct_label(item_id="1", label=5, annotator_id="a") == (2, 1, False)
    assert c.correct_label(item_id="1", label=5, annotator_id="a") == (2, 1, True)
    with pytest.raises(PermissionDenied):
        c.correct_label(item_id="1", label=6, annotator_id="mallory")
    with pytest.raises(NotFound):
        c.correct_label(item_id="2", label=6, annotator_id="a")
    assert [(r.seq, r.label, r.supersedes) for r in c.read_labels(0, 10)] == [(1, 3, 0), (2, 5, 1)]
    assert [r.seq for r in c.read_labels(0, 10, latest_only=True)] == [2]


# -- several labels per item (a crowd) -----------------------------------------------------------------------------


def test_an_item_gets_its_labels_from_as_many_different_annotators(make):
    c = make(replace(NO_POLL, labels_per_item=3))
    submit(c, ["1"])
    for who, value in (("a", 3), ("b", 3), ("c", 4)):
        q = c.lease(who)
        assert q.item_id == "1"
        assert label(c, q, who=who, value=value)[1] is False
        assert label(c, q, who=who, value=value)[1] is True  # a retry, after the item went back to S
        assert c.lease(who) is None  # nobody labels an item twice
    assert c.lease("d") is None and c.get_item("1").state == "labeled"
    records = c.read_labels(0, 10)
    assert [(r.annotator_id, r.label, r.supersedes) for r in records] == [("a", 3, 0), ("b", 3, 0), ("c", 4, 0)]
    s = c.stats()
    assert (s.labeled, s.queued, s.last_seq, s.labels_by_strategy["entropy"]) == (1, 0, 3, 3)


def test_a_partly_labeled_item_is_served_first_and_never_evicted(make):
    c = make(replace(NO_POLL, labels_per_item=2, pool_capacity=2))
    model_v(c, [1])  # one label of filler item 10000, which stays in S for its second
    submit(c, ["1"], version=0, score=0.9)
    outcome = submit(c, ["2"], version=1, score=0.9)  # S is full: a fresher candidate evicts "1", not 10000
    assert (outcome.accepted, outcome.evicted) == (1, 1)
    assert c.get_item("10000").state == "queued"
    q = c.lease("b")
    assert q.item_id == "10000"  # finishing an item comes before the newest model's choice
    label(c, q, who="b")
    assert c.get_item("10000").state == "labeled" and c.lease("b").item_id == "2"


def test_a_restart_keeps_who_labeled_an_item_waiting_for_more(make_direct):
    config = replace(NO_POLL, labels_per_item=2)
    c = make_direct(config)
    submit(c, ["1"])
    label(c, c.lease("a"))
    c.close()
    c2 = make_direct(config)
    assert c2.lease("a") is None
    q = c2.lease("b")
    assert q.item_id == "1" and label(c2, q, who="b") == (2, False)
    assert c2.get_item("1").state == "labeled" and c2.stats().labeled == 1


def test_with_several_labels_each_annotator_corrects_their_own(make):
    c = make(replace(NO_POLL, labels_per_item=2))
    submit(c, ["1"])
    label(c, c.lease("a"), who="a", value=3)
    label(c, c.lease("b"), who="b", value=4)
    assert c.correct_label(item_id="1", label=5, annotator_id="a") == (3, 1, False)
    assert c.correct_label(item_id="1", label=6, annotator_id="b") == (4, 2, False)
    with pytest.raises(PermissionDenied):
        c.correct_label(item_id="1", label=6, annotator_id="mallory")
    assert [(r.annotator_id, r.label) for r in c.read_labels(0, 10, latest_only=True)] == [("a", 5), ("b", 6)]


def test_a_relabel_candidate_asks_one_more_label_of_an_item_in_l_under_the_cap(make):
    from aal_rpc.types import RELABEL_STRATEGY

    c = make(replace(NO_POLL, max_labels_per_item=2))
    submit(c, ["1", "2", "3", "4"])
    for who in ("a", "b", "c"):
        label(c, c.lease(who), who=who)
    q = c.lease("d")
    c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id="d", skip=True)  # nothing left in S
    labeled = {r.item_id: r.annotator_id for r in c.read_labels(0, 10)}
    first, second = sorted(labeled)[:2]
    out = submit(c, [first, second, q.item_id, "9"], strategy=RELABEL_STRATEGY)
    assert (out.accepted, out.rejected) == (2, 2)  # a skipped item and an item not in L are no re-labels
    assert submit(c, [first], strategy=RELABEL_STRATEGY).rejected == 1  # already waiting for its label
    got = c.lease(labeled[first])
    assert got is None or got.item_id != first  # never to who labeled it
    if got is not None:
        c.release(lease_id=got.lease_id, item_id=got.item_id, annotator_id=labeled[first])
    q = c.lease("e")
    assert q.provenance.strategy == RELABEL_STRATEGY and label(c, q, who="e")[1] is False
    assert c.get_item(q.item_id).state == "labeled"
    assert submit(c, [q.item_id], strategy=RELABEL_STRATEGY).rejected == 1  # at the cap: 2 labels
    assert c.shard_state(shard_index=0, num_shards=1, labeled_after_seq=0, model_version=0).max_labels == 2


def test_gold_items_are_served_at_the_gold_share_once_to_each_annotator_and_stay(make):
    from aal_rpc.types import GOLD_ANNOTATOR, GOLD_STRATEGY

    c = make(replace(NO_POLL, gold_share=1.0, pool_capacity=3))
    c.import_labels([imported("100", 4, who=GOLD_ANNOTATOR)])
    assert submit(c, ["100"], strategy=GOLD_STRATEGY).accepted == 1
    assert submit(c, ["101"], strategy=GOLD_STRATEGY).rejected == 1  # no known answer in L: no gold item
    submit(c, ["1", "2"])
    for who, value in (("a", 4), ("b", 5)):
        q = c.lease(who)
        assert q.item_id == "100"
        assert q.provenance.strategy == ("" if isinstance(c, OverGrpc) else GOLD_STRATEGY)  # no client can tell
        label(c, q, who=who, value=value)
        other = c.lease(who)  # no gold left for them: the pick order's best
        assert other.item_id in ("1", "2")
        c.release(lease_id=other.lease_id, item_id=other.item_id, annotator_id=who)
    assert c.get_item("100").state == "queued"  # waiting for the next annotator
    gold = [(r.annotator_id, r.label, r.provenance.strategy) for r in c.read_labels(0, 10)]
    assert gold == [(GOLD_ANNOTATOR, 4, GOLD_STRATEGY), ("a", 4, GOLD_STRATEGY), ("b", 5, GOLD_STRATEGY)]
    assert c.stats().labels_by_strategy[GOLD_STRATEGY] == 3


def test_without_a_gold_share_gold_items_are_never_served(make):
    from aal_rpc.types import GOLD_ANNOTATOR, GOLD_STRATEGY

    c = make(replace(NO_POLL, gold_share=0.0))
    c.import_labels([imported("100", 4, who=GOLD_ANNOTATOR)])
    submit(c, ["100"], strategy=GOLD_STRATEGY)
    submit(c, ["1"])
    assert c.lease("a").item_id == "1" and c.lease("a") is None


def test_labels_per_item_out_of_range_or_in_sync_mode_is_refused(tmp_path):
    from aal_rpc.coordinator.rules import MAX_LABELS_PER_ITEM, check_labels_per_item

    for k in (0, MAX_LABELS_PER_ITEM + 1):
        with pytest.raises(ValueError, match="labels per item"):
            check_labels_per_item(k, "async")
    with pytest.raises(ValueError, match="async"):
        check_labels_per_item(2, "sync")
    store = SqliteStore(tmp_path / "data")
    try:
        with pytest.raises(ValueError, match="labels per item"):
            EmbeddedCoordinator(store, TASK, replace(NO_POLL, labels_per_item=0))
    finally:
        store.close()


def test_round_claims_stagger_servers_and_publishing_ends_a_claim(make):
    c = make()
    fill_labels(c, 12)
    assert c.begin_round(server_id="a", num_labels=10, round_seconds=0.0) == (0.0, "")
    wait, why = c.begin_round(server_id="b", num_labels=10, round_seconds=0.0)
    assert wait > 0 and "10 labels" in why
    assert c.begin_round(server_id="b", num_labels=11, round_seconds=0.0) == (0.0, "")
    publish(c, weights(), labels=10, server="a")
    wait, why = c.begin_round(server_id="a", num_labels=12, round_seconds=600.0)  # b began just now
    assert 0 < wait <= 300.0 and "apart across 2 servers" in why
    publish(c, weights(), labels=11, server="b")
    assert c.begin_round(server_id="a", num_labels=12, round_seconds=600.0) == (0.0, "")


# -- imported labels (a partly labeled pool) ----------------------------------------------------------------------


def imported(item_id, value=2, who="import", x=None):
    return ImportedLabel(item_id, value, make_candidate(item_id).payload if x is None else Payload.from_array(x), who)


def current_labels(c):
    return {r.item_id: r.label for r in c.read_labels(0, 100, latest_only=True)}


def test_imported_labels_land_in_l_with_their_provenance_once(make):
    c = make()
    submit(c, ["1", "2"], strategy="margin")
    out = c.import_labels([imported("1", 4), imported("5", 2, who="team"), imported("1", 7)])
    assert out == ImportOutcome(imported=2, skipped=1, first_seq=1, last_seq=2)  # "1" again: its first one counts
    records = c.read_labels(0, 10)
    assert [(r.seq, r.item_id, r.label, r.annotator_id, r.supersedes) for r in records] == [
        (1, "1", 4, "import", 0), (2, "5", 2, "team", 0)]
    for r in records:
        p = r.provenance
        assert (p.worker_id, p.strategy, p.model_version, p.score) == ("", "imported", 0, 0.0)
        assert r.queued_at == r.leased_at == r.labeled_at > 0
        assert r.payload == make_candidate(r.item_id).payload
    s = c.stats()
    assert (s.labeled, s.queued, s.leased, s.last_seq, dict(s.labels_by_strategy)) == (2, 1, 0, 2, {"imported": 2})
    assert c.get_item("1").state == "labeled" and current_labels(c) == {"1": 4, "5": 2}
    assert c.import_labels([imported("5"), imported("1")]) == ImportOutcome(0, 2, 0, 0)  # again: nothing new
    assert submit(c, ["1", "5"]).rejected == 2  # never queued again
    label(c, c.lease("a"))  # labels go on after an import
    assert dict(c.stats().labels_by_strategy) == {"imported": 2, "margin": 1}


def test_an_import_skips_items_already_labeled_or_skipped(make):
    c = make()
    submit(c, ["1", "2"])
    q1, q2 = c.lease("a"), c.lease("a")
    label(c, q1, value=3)
    c.release(lease_id=q2.lease_id, item_id=q2.item_id, annotator_id="a", skip=True)
    assert c.import_labels([imported(q1.item_id, 5), imported(q2.item_id), imported("3")]) == ImportOutcome(1, 2, 2, 2)
    assert current_labels(c)[q1.item_id] == 3 and c.get_item(q2.item_id).state == "skipped"


def test_an_invalid_item_refuses_the_whole_import(make):
    c = make()
    submit(c, ["1"])
    good = imported("1")
    nan = make_candidate("2").payload.to_array().copy()
    nan[0, 0, 0] = float("nan")
    for bad, error, match in [
        (imported("2", value=10), InvalidArgument, "item 2: label 10"),
        (imported("2", value=-1), InvalidArgument, "item 2: label -1"),
        (imported("2", x=nan), InvalidArgument, "item 2: payload tensor holds NaN"),
        (imported("2", x=nan[0]), InvalidArgument, "item 2: payload shape"),
        (ImportedLabel("", 1, good.payload), InvalidArgument, "#2: item_id is required"),
        (ImportedLabel("2\x00", 1, good.payload), InvalidArgument, "#2: item_id contains a NUL"),
        (ImportedLabel("2", 1, Payload(**{**good.payload.__dict__, "image": b"\x89PNG\r\n\x1a\n" + bytes(3 << 20)})),
         ResourceExhausted, "item 2: image"),
        (ImportedLabel("2", 1, Payload(**{**good.payload.__dict__, "image": b"GIF89a not really"})),
         InvalidArgument, "item 2: image is not a valid"),
    ]:
        with pytest.raises(error, match=match):
            c.import_labels([good, bad])
    s = c.stats()
    assert (s.labeled, s.queued, s.last_seq) == (0, 1, 0) and c.read_labels(0, 10) == []


def test_an_import_ends_a_live_lease_and_its_label_is_refused(make):
    c = make()
    submit(c, ["1", "2"])
    q = c.lease("a")
    assert c.import_labels([imported(q.item_id, 6)]).imported == 1
    for refused in (lambda: label(c, q), lambda: c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id="a"),
                    lambda: c.renew_lease(lease_id=q.lease_id, item_id=q.item_id, annotator_id="a")):
        with pytest.raises(FailedPrecondition):
            refused()
    s = c.stats()
    assert (s.labeled, s.leased, s.queued) == (1, 0, 1) and current_labels(c) == {q.item_id: 6}


def test_an_import_larger_than_a_batch_is_read_once_and_checked_whole(make_direct):
    c = make_direct()
    n = IMPORT_BATCH * 2 + 7
    reads = []

    def items(last_label):
        for i in range(n):
            reads.append(i)
            yield imported(str(i), value=last_label if i == n - 1 else i % 10)

    with pytest.raises(InvalidArgument, match=f"item {n - 1}: label 10"):
        c.import_labels(items(10))  # the last item is invalid: nothing of the batches before it is written
    assert c.stats().last_seq == 0 and len(reads) == n
    reads.clear()
    assert c.import_labels(items(3)) == ImportOutcome(n, 0, 1, n)
    assert len(reads) == n  # a one-shot iterator is read once
    assert [r.item_id for r in c.read_labels(0, 10 ** 6)] == [str(i) for i in range(n)]
    c.close()
    c2 = make_direct()  # a restart keeps them, and their count by strategy
    s = c2.stats()
    assert (s.labeled, s.last_seq, dict(s.labels_by_strategy)) == (n, n, {"imported": n})
    assert c2.import_labels(imported(str(i)) for i in range(n)) == ImportOutcome(0, n, 0, 0)


def test_imports_racing_annotators_and_each_other_label_every_item_once(make_direct):
    c = make_direct(replace(NO_POLL, pool_capacity=500))
    ids = [str(i) for i in range(200)]
    submit(c, ids)
    errors, outcomes = [], []

    def annotate(name):
        try:
            while (q := c.lease(name)) is not None:
                try:
                    label(c, q, who=name, value=1)
                except FailedPrecondition:  # imported meanwhile: its lease ended
                    pass
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    def import_all(order):
        try:
            outcomes.append(c.import_labels([imported(i) for i in order]))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=annotate, args=(f"a{i}",)) for i in range(4)]
    threads += [threading.Thread(target=import_all, args=(order,)) for order in (ids[::-1], ids[::2] + ids[1::2])]
    records = run_together(c, threads, errors)
    assert sorted(r.item_id for r in records) == sorted(ids)  # each item once, whoever got there first
    by_annotators = sum(r.provenance.strategy == "entropy" for r in records)
    assert sum(o.imported for o in outcomes) == len(ids) - by_annotators
    assert sum(o.skipped for o in outcomes) == len(ids) + by_annotators
    s = c.stats()
    assert (s.labeled, s.queued, s.leased, s.last_seq) == (len(ids), 0, 0, records[-1].seq)


# -- reading L through its pages ---------------------------------------------------------------------------------


def test_l_is_read_after_any_seq_across_pages(make):
    """Over gRPC this is StreamLabels' own paging: the server starts after the seq and reads L a page at a time."""
    c = make()
    n = STREAM_PAGE * 2 + 3
    assert c.import_labels([imported(str(i)) for i in range(n)]) == ImportOutcome(n, 0, 1, n)
    assert [r.seq for r in c.read_labels(0, 10 ** 6)] == list(range(1, n + 1))
    assert [r.seq for r in c.read_labels(STREAM_PAGE - 1, 3)] == [STREAM_PAGE, STREAM_PAGE + 1, STREAM_PAGE + 2]
    assert [r.seq for r in c.read_labels(STREAM_PAGE, 10 ** 6)] == list(range(STREAM_PAGE + 1, n + 1))
    assert c.read_labels(n, 10) == [] and c.read_labels(0, 0) == []
    with pytest.raises(InvalidArgument):
        c.read_labels(-1, 10)


# -- wake-ups, over gRPC (the servicers wait), with the poll safety net off ---------------------------------------


def _in_thread(fn):
    """Start fn in a thread; returns (results list, thread)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    return out, t


def _parked(c: OverGrpc, kind: str) -> None:
    """Something waits on the coordinator's `kind` signal: a call that began has looked, found nothing, and waits."""
    assert wait_until(lambda: bool(c.srv.coordinator.signals[kind]._futures), timeout=30)


@pytest.mark.parametrize("how", ["candidate", "release"])
def test_a_long_poll_wakes_when_s_gains_an_item(make_served, how):
    c = make_served()
    if how == "release":
        submit(c, ["7"])
        held = c.lease("x")
    got, t = _in_thread(lambda: c.lease("a", wait_seconds=WAKE_WAIT))
    _parked(c, "queries")
    if how == "release":
        c.release(lease_id=held.lease_id, item_id="7", annotator_id="x")
    else:
        submit(c, ["7"])
    t.join(60)
    assert got and got[0] is not None and got[0].item_id == "7"


def test_a_long_poll_wakes_when_a_lease_expires_on_the_embedded_store(make_served_embedded):
    clock = Clock()
    c = make_served_embedded(replace(NO_POLL, lease_seconds=30), clock=clock)
    submit(c, ["7"])
    c.lease("x")
    got, t = _in_thread(lambda: c.lease("a", wait_seconds=WAKE_WAIT))
    _parked(c, "queries")
    clock.advance(30)
    c.stats()  # any call that looks at S ends the lease, and its signal wakes the waiter
    t.join(60)
    assert got and got[0] is not None and got[0].item_id == "7"


def test_a_follower_wakes_for_each_new_label(make_served):
    c = make_served()
    submit(c, ["1", "2"])
    stream = c.admin.stream_labels(0, follow=True, timeout=120)
    seen = []
    arrived = threading.Event()

    def follow():
        try:
            for msg in stream:
                seen.append(msg.seq)
                arrived.set()
        except grpc.RpcError:  # cancelled at the end
            pass

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    for expected in ([1], [1, 2]):
        label(c, c.lease("a"))
        assert arrived.wait(WAKE_WAIT)
        arrived.clear()
        assert seen == expected
    c.import_labels([imported("8")])  # imported labels too
    assert arrived.wait(WAKE_WAIT)
    assert seen == [1, 2, 3]
    stream.cancel()
    t.join(60)
    assert not t.is_alive()


def test_a_model_poll_wakes_on_publish(make_served):
    c = make_served()
    fill_labels(c, 1)
    assert c.latest_model() is None and c.admin.latest_model(wait_seconds=0) is None  # never waits with no wait
    # at the end of its wait the poll answers the latest anyway: it waits longer than the test waits for it
    got, t = _in_thread(lambda: c.admin.latest_model(after_version=0, wait_seconds=MAX_WAIT_SECONDS))
    _parked(c, "models")
    publish(c, weights(), labels=1)
    t.join(WAKE_WAIT)
    assert got and got[0].version == 1
    assert c.latest_model().version == 1
    assert c.admin.latest_model(after_version=1, wait_seconds=0).version == 1  # no newer one: the latest, at once


# -- PostgreSQL: followers and a seq taken by a transaction still open --------------------------------------------


def test_a_follower_waits_at_a_seq_an_open_transaction_holds_and_passes_it_once_it_ends(postgres):
    import psycopg

    from aal_rpc.coordinator.postgres_store import PostgresStore
    from aal_rpc.coordinator.postgres import SharedCoordinator

    url = postgres.new_database()
    c = SharedCoordinator(PostgresStore(url, pool_size=4), TASK, NO_POLL)
    try:
        submit(c, [str(i) for i in range(6)])
        label(c, c.lease("a"))  # seq 1
        for outcome in ("commit", "abort"):
            q = c.lease("slow")
            with psycopg.connect(url) as slow:  # a label transaction that took its seq and has not ended
                slow.execute("SELECT pg_current_xact_id()")
                held_seq = slow.execute("SELECT nextval('label_seq')").fetchone()[0]
                after = c.read_labels(0, 100)[-1].seq
                assert after == held_seq - 1
                label(c, c.lease("a"))  # commits held_seq + 1
                assert [r.seq for r in c.read_labels(0, 100)][-1] == held_seq - 1  # not past the open one
                shard = c.shard_state(shard_index=0, num_shards=1, labeled_after_seq=0, model_version=0)
                assert shard.labeled_through_seq == held_seq - 1
                if outcome == "commit":
                    slow.execute(
                        "INSERT INTO labels (seq, item_id, lease_id, label, annotator_id, queued_at, leased_at, "
                        "labeled_at, worker_id, strategy, model_version, score, tensor, dtype, shape, image_png) "
                        "SELECT %s, item_id, lease_id, 1, 'slow', queued_at, leased_at, 0, worker_id, strategy, "
                        "model_version, score, tensor, dtype, shape, image_png FROM queries WHERE item_id = %s",
                        (held_seq, q.item_id))
                    slow.execute("DELETE FROM queries WHERE item_id = %s", (q.item_id,))
                    slow.commit()
                else:
                    slow.rollback()
            seqs = [r.seq for r in c.read_labels(0, 100)]
            if outcome == "commit":
                assert seqs[-2:] == [held_seq, held_seq + 1]
            else:
                assert held_seq not in seqs and seqs[-1] == held_seq + 1
        assert [r.seq for r in c.read_labels(0, 2)] == [1, 2]  # pages stop at the limit, gaps or not
    finally:
        c.close()

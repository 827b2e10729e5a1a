"""Property-based fuzzing of every RPC with malformed and hostile requests (hypothesis): the coordinator answers
each with a status (never INTERNAL or UNKNOWN), never crashes, and keeps its pools and registry intact.

Random messages are mostly malformed and refused early, so besides them the fuzzer sends plausible requests
(the task's shapes, real weights) with one hostile value: non-finite floats, int64 extremes, large maps and
bytes, versions never published. After each property, memory and store must agree and every invariant of S, L
and the registry hold."""

import io
import math

import grpc
import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aal_rpc.chunking import iter_chunks, sha256_hex
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.embedded import EmbeddedCoordinator
from aal_rpc.models import build_model
from aal_rpc.proto.v1 import admin_pb2, annotation_pb2, common_pb2, selection_pb2, training_pb2
from aal_rpc.serde import payload_to_proto, weights_to_bytes
from aal_rpc.types import Payload
from tests.conftest import TASK
from tests.test_services import queue_items

BAD = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
INT64_EXTREMES = [2**63 - 1, -2**63, 2**62, -2**62, 2**31 - 1, -2**31, 10**9]
INTS = st.one_of(st.integers(-3, 3), st.sampled_from(INT64_EXTREMES))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -1.0, 1e308, 60.0]))
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf, -math.nan])
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", "1", "0", "-1", "x" * 300, "../../etc", "\x00"]))
LARGE_BYTES = [b"\0" * 3_500_000, b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8_000]
BYTES = st.one_of(st.binary(max_size=64), st.just(b"\x80\x04\x95pickle"), st.sampled_from(LARGE_BYTES))
LARGE_MAPS = [{f"metric{i}": 0.5 for i in range(20_000)}, {"x" * 3_000_000: 1.0}]
MAPS = st.one_of(st.dictionaries(TEXT, FLOATS, max_size=3), st.sampled_from(LARGE_MAPS))
DTYPES = st.sampled_from(["float32", "uint8", "object", "float64", "", "<f4", "int64"])


def message(descriptor, depth=0):
    """A strategy for arbitrary (mostly nonsensical) instances of a message type."""
    fields = {}
    for f in descriptor.fields:
        if f.type == F.TYPE_MESSAGE:
            if f.message_type.GetOptions().map_entry:
                value = MAPS
            elif depth >= 3:
                continue
            else:
                value = message(f.message_type, depth + 1)
        elif f.name == "dtype":
            value = DTYPES
        else:
            value = {F.TYPE_STRING: TEXT, F.TYPE_BYTES: BYTES, F.TYPE_DOUBLE: FLOATS, F.TYPE_FLOAT: FLOATS,
                     F.TYPE_BOOL: st.booleans(), F.TYPE_ENUM: st.integers(0, 3)}.get(f.type, INTS)
        if f.is_repeated and not (f.type == F.TYPE_MESSAGE and f.message_type.GetOptions().map_entry):
            value = st.lists(value, max_size=3)
        fields[f.name] = st.one_of(st.nothing(), value) if depth else value
    return st.fixed_dictionaries({}, optional=fields).map(lambda kw: _build(descriptor, kw))


def _build(descriptor, kw):
    from google.protobuf import message_factory
    cls = message_factory.GetMessageClass(descriptor)
    msg = cls()
    for name, value in kw.items():
        field = descriptor.fields_by_name[name]
        try:
            if field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry:
                getattr(msg, name).update(value)
            elif field.is_repeated:
                getattr(msg, name).extend(value)
            elif field.type == F.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        except (ValueError, TypeError):  # out of range for the field's wire type: leave it unset
            pass
    return msg


class Target(tuple):
    """(server, channel), as other modules' tests unpack it, with what the fuzzer aims at: `victim`, the queries
    "victim" holds for a day (other annotators' leases), and `seeded`, the records "seed" labeled."""

    def __new__(cls, srv, channel, victim: list, seeded: list):
        target = super().__new__(cls, (srv, channel))
        target.victim, target.seeded = victim, seeded
        return target


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def target(request, tmp_path_factory):
    """A coordinator on each backend: the embedded store, and the shared store on a real PostgreSQL server."""
    from aal_rpc.coordinator.app import create_coordinator_server
    from aal_rpc.coordinator.contract import CoordinatorConfig
    store = request.getfixturevalue("postgres").new_database() if request.param == "postgresql" else None
    srv = create_coordinator_server("127.0.0.1:0", tmp_path_factory.mktemp("fuzz"), TASK,
                                    CoordinatorConfig(pool_capacity=64, lease_seconds=30), store=store)
    address = f"127.0.0.1:{srv.port}"
    queue_items(CoordinatorClient(address), [str(i) for i in range(20)])
    with AnnotationClient(address, "seed") as a:
        for _ in range(3):
            a.submit(a.lease(), 1)
    with AnnotationClient(address, "victim", lease_seconds=86_400) as v:
        victim = [v.lease(), v.lease()]
    channel = grpc.insecure_channel(address)
    yield Target(srv, channel, victim, srv.coordinator.read_labels(0, 10 ** 6))
    channel.close()
    srv.stop(0)


def call(channel, service, method, request_cls, response_cls, kind, request):
    path = f"/aal.v1.{service}/{method}"
    ser, de = request_cls.SerializeToString, response_cls.FromString
    try:
        if kind == "unary":
            channel.unary_unary(path, ser, de)(request, timeout=2)
        elif kind == "server_stream":
            for _ in channel.unary_stream(path, ser, de)(request, timeout=1):
                pass
        else:
            channel.stream_unary(path, ser, de)(iter(request), timeout=2)
    except grpc.RpcError as exc:
        assert exc.code() not in BAD, f"{method}: {exc.code()} {exc.details()}"


UNARY = [
    ("AnnotationService", "LeaseQuery", annotation_pb2.LeaseQueryRequest, annotation_pb2.LeaseQueryResponse),
    ("AnnotationService", "SubmitLabel", annotation_pb2.SubmitLabelRequest, annotation_pb2.SubmitLabelResponse),
    ("AnnotationService", "ReleaseQuery", annotation_pb2.ReleaseQueryRequest, annotation_pb2.ReleaseQueryResponse),
    ("AnnotationService", "RenewLease", annotation_pb2.RenewLeaseRequest, annotation_pb2.RenewLeaseResponse),
    ("AnnotationService", "CorrectLabel", annotation_pb2.CorrectLabelRequest, annotation_pb2.CorrectLabelResponse),
    ("AnnotationService", "GetItem", annotation_pb2.GetItemRequest, annotation_pb2.GetItemResponse),
    ("TrainingService", "BeginRound", training_pb2.BeginRoundRequest, training_pb2.BeginRoundResponse),
    ("SelectionService", "GetLatestModel", selection_pb2.GetLatestModelRequest, selection_pb2.GetLatestModelResponse),
    ("SelectionService", "SubmitCandidates", selection_pb2.SubmitCandidatesRequest,
     selection_pb2.SubmitCandidatesResponse),
    ("SelectionService", "GetShardState", selection_pb2.GetShardStateRequest, selection_pb2.GetShardStateResponse),
    ("AdminService", "GetTask", admin_pb2.GetTaskRequest, admin_pb2.GetTaskResponse),
    ("AdminService", "GetStats", admin_pb2.GetStatsRequest, admin_pb2.GetStatsResponse),
    ("AdminService", "ListModels", admin_pb2.ListModelsRequest, admin_pb2.ListModelsResponse),
]
SERVER_STREAMS = [
    ("TrainingService", "StreamLabels", training_pb2.StreamLabelsRequest, common_pb2.LabeledRecord),
    ("SelectionService", "DownloadModel", selection_pb2.DownloadModelRequest, selection_pb2.DownloadModelResponse),
    ("AdminService", "ExportLabels", admin_pb2.ExportLabelsRequest, common_pb2.LabeledRecord),
]
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


def check_intact(srv):
    """Memory and store agree, and every invariant of L, S and the registry holds."""
    c = srv.coordinator
    records = c.read_labels(0, 10 ** 6)
    labeled = {r.item_id for r in records}
    stats = c.stats()
    assert stats.labeled == len(labeled) == sum(r.supersedes == 0 for r in records) >= 3
    assert [r.seq for r in records] == sorted({r.seq for r in records}) and stats.last_seq == records[-1].seq
    queued = c.shard_state(shard_index=0, num_shards=1, labeled_after_seq=0, model_version=0).queued
    assert len(queued) == stats.queued + stats.leased
    assert queued and not labeled & set(queued)
    if isinstance(c, EmbeddedCoordinator):  # memory and the store agree: what a restart would rebuild
        stored = c.store.load()
        assert sorted(stored.labeled_item_ids) == sorted(labeled)
        assert sorted(queued) == sorted(cand.item_id for cand, _, _ in stored.queries)
    published = {m.version for m in c.registry.list()}
    for item_id in queued:
        item = c.get_item(item_id)
        assert item.state in ("queued", "leased")
        assert math.isfinite(item.provenance.score)
        assert item.provenance.model_version == 0 or item.provenance.model_version in published
        assert np.isfinite(item.payload.to_array()).all()
    for m in c.registry.list():
        assert m.architecture == TASK.architecture and 0 <= m.num_labels <= m.trained_seq <= stats.last_seq
        assert len(m.metrics) <= 32 and all(math.isfinite(v) for v in m.metrics.values())


RPCS = [(*rpc, "unary") for rpc in UNARY] + [(*rpc, "server_stream") for rpc in SERVER_STREAMS]


@pytest.mark.parametrize("service, method, req, resp, kind", RPCS, ids=[r[1] for r in RPCS])
def test_rpcs_survive_hostile_requests(target, service, method, req, resp, kind):
    srv, channel = target

    @FUZZ
    @given(message(req.DESCRIPTOR))
    def fuzz(request):
        call(channel, service, method, req, resp, kind, request)

    fuzz()
    check_intact(srv)


def test_uploads_survive_hostile_streams(target):
    srv, channel = target
    versions = [m.version for m in srv.coordinator.registry.list()]

    @FUZZ
    @given(st.lists(message(training_pb2.UploadModelRequest.DESCRIPTOR), max_size=4))
    def fuzz(requests):
        call(channel, "TrainingService", "UploadModel", training_pb2.UploadModelRequest,
             training_pb2.UploadModelResponse, "client_stream", requests)

    fuzz()
    assert [m.version for m in srv.coordinator.registry.list()] == versions
    check_intact(srv)


def test_garbage_bytes_never_crash_the_server(target):
    srv, channel = target

    @FUZZ
    @given(st.sampled_from(UNARY), st.binary(max_size=200))
    def fuzz(rpc, raw):
        service, method, *_ = rpc
        try:
            channel.unary_unary(f"/aal.v1.{service}/{method}")(raw, timeout=2)
        except grpc.RpcError as exc:
            assert exc.code() not in BAD, f"{method}: {exc.code()} {exc.details()}"

    fuzz()
    check_intact(srv)


# -- plausible requests with one hostile value ----------------------------------------------------------------

def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (8, 8), 7).save(buf, format="PNG")
    return buf.getvalue()


VERSIONS = st.one_of(st.integers(0, 4), st.sampled_from(INT64_EXTREMES))
PNGS = st.one_of(st.just(b""), st.builds(_png), st.binary(max_size=64), st.sampled_from(LARGE_BYTES))
VALUES = st.one_of(st.just(0.5), NON_FINITE)


@st.composite
def plausible_candidates(draw):
    x = np.full(TASK.input_shape, 0.5, np.float32)
    x.flat[draw(st.integers(0, x.size - 1))] = draw(VALUES)
    cands = [selection_pb2.Candidate(item_id=draw(st.sampled_from(["f1", "f2", "f3", "x" * 300])),
                                     score=draw(st.one_of(st.floats(-1, 1), NON_FINITE)),
                                     payload=payload_to_proto(Payload.from_array(x, image=draw(PNGS))))
             for _ in range(draw(st.integers(1, 3)))]
    return selection_pb2.SubmitCandidatesRequest(worker_id="w", strategy="margin", model_version=draw(VERSIONS),
                                                 candidates=cands)


def _weights(kind: str) -> bytes:
    import torch

    sd = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict()
    if kind == "int8":
        sd = {k: v.to(torch.int8) for k, v in sd.items()}
    elif kind == "nan":
        sd["head.bias"] = torch.full_like(sd["head.bias"], math.nan)
    elif kind == "inf":
        sd["head.weight"] = torch.full_like(sd["head.weight"], math.inf)
    return weights_to_bytes(sd)


@st.composite
def plausible_uploads(draw):
    data = _weights(draw(st.sampled_from(["ok", "int8", "nan", "inf"])))
    header = training_pb2.UploadHeader(
        server_id="s", architecture=TASK.architecture, trained_seq=draw(st.one_of(st.integers(0, 3), INTS)),
        num_labels=draw(st.one_of(st.integers(0, 3), INTS)),
        metrics=draw(st.one_of(st.just({"accuracy": 0.5}), MAPS, st.builds(lambda v: {"accuracy": v}, NON_FINITE))),
        size_bytes=len(data), sha256=sha256_hex(data))
    return [training_pb2.UploadModelRequest(header=header)] + [
        training_pb2.UploadModelRequest(chunk=c) for c in iter_chunks(data)]


@st.composite
def plausible_round_claims(draw):
    return training_pb2.BeginRoundRequest(server_id="s", num_labels=draw(INTS),
                                          round_seconds=draw(st.one_of(st.floats(0, 10), NON_FINITE)))


PLAUSIBLE = [
    ("SelectionService", "SubmitCandidates", selection_pb2.SubmitCandidatesRequest,
     selection_pb2.SubmitCandidatesResponse, "unary", plausible_candidates()),
    ("TrainingService", "UploadModel", training_pb2.UploadModelRequest, training_pb2.UploadModelResponse,
     "client_stream", plausible_uploads()),
    ("TrainingService", "BeginRound", training_pb2.BeginRoundRequest, training_pb2.BeginRoundResponse, "unary",
     plausible_round_claims()),
]


@pytest.mark.parametrize("service, method, req, resp, kind, requests", PLAUSIBLE, ids=[p[1] for p in PLAUSIBLE])
def test_plausible_requests_with_a_hostile_value(target, service, method, req, resp, kind, requests):
    srv, channel = target

    @FUZZ
    @given(requests)
    def fuzz(request):
        call(channel, service, method, req, resp, kind, request)

    fuzz()
    check_intact(srv)
    stats = srv.coordinator.stats()  # an honest round claim is still granted: no hostile one captured the schedule
    assert srv.coordinator.begin_round(server_id="honest", num_labels=stats.last_seq, round_seconds=0.0)[0] >= 0


# -- the annotation RPCs that act on a lease or a label: ids, huge numbers, other annotators' leases -----------------

SOMEONE = st.sampled_from(["mallory", "", "seed", "x" * 300, "nul\x00", "victim "])  # never "victim" itself
SECONDS = st.one_of(FLOATS, st.sampled_from([86_400.0, 86_400.001, 1e-300, -0.0]))


@st.composite
def aimed(draw, target, kind):
    """A request of `kind` aimed at another annotator's lease, a labeled item, or an id nobody knows."""
    held = draw(st.sampled_from(target.victim))
    record = draw(st.sampled_from(target.seeded))
    lease_id = draw(st.one_of(st.just(held.lease_id), st.just(record.lease_id), TEXT))
    item_id = draw(st.one_of(st.just(held.item_id), st.just(record.item_id), TEXT))
    who, label = draw(SOMEONE), draw(st.one_of(st.integers(0, 9), st.sampled_from([2**31 - 1, -2**31, -1, 10])))
    if kind == "ReleaseQuery":
        return annotation_pb2.ReleaseQueryRequest(lease_id=lease_id, item_id=item_id, annotator_id=who,
                                                  reason=draw(st.integers(0, 3)), defer_seconds=draw(SECONDS))
    if kind == "RenewLease":
        return annotation_pb2.RenewLeaseRequest(lease_id=lease_id, item_id=item_id, annotator_id=who,
                                                lease_seconds=draw(SECONDS))
    if kind == "SubmitLabel":  # a retry of seed's label, or a label for the victim's lease
        return annotation_pb2.SubmitLabelRequest(lease_id=lease_id, item_id=item_id, label=label, annotator_id=who)
    if kind == "CorrectLabel":
        return annotation_pb2.CorrectLabelRequest(item_id=item_id, label=label, annotator_id=who)
    return annotation_pb2.GetItemRequest(item_id=item_id, annotator_id=who)


AIMED = [(m, getattr(annotation_pb2, f"{m}Request"), getattr(annotation_pb2, f"{m}Response"))
         for m in ("ReleaseQuery", "RenewLease", "SubmitLabel", "CorrectLabel", "GetItem")]


@pytest.mark.parametrize("method, req, resp", AIMED, ids=[a[0] for a in AIMED])
def test_annotation_rpcs_aimed_at_other_annotators_work(target, method, req, resp):
    srv, channel = target

    @FUZZ
    @given(aimed(target, method))
    def fuzz(request):
        call(channel, "AnnotationService", method, req, resp, "unary", request)

    fuzz()
    check_intact(srv)
    c = srv.coordinator
    for q in target.victim:  # the victim's leases are still the victim's alone
        assert c.get_item(q.item_id).state == "leased"
        c.renew_lease(lease_id=q.lease_id, item_id=q.item_id, annotator_id="victim", lease_seconds=86_400)
    for record in target.seeded:  # seed's labels: nobody else recorded, corrected or retried them into another
        current = c.get_item(record.item_id).record
        assert current.annotator_id == "seed"

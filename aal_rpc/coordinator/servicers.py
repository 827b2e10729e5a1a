"""Thin gRPC servicers: translate aal.v1 messages, call the Coordinator, map domain errors to statuses."""

from __future__ import annotations

import dataclasses
import functools
import logging

import grpc

from aal_rpc import serde
from aal_rpc.chunking import CHUNK_BYTES, iter_chunks
from aal_rpc.coordinator.contract import Coordinator
from aal_rpc.coordinator.validation import MAX_WAIT_SECONDS
from aal_rpc.errors import (AalError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
                            ResourceExhausted, Unavailable)
from aal_rpc.proto.v1 import (admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc, selection_pb2,
                              selection_pb2_grpc, training_pb2, training_pb2_grpc)
from aal_rpc.security import current_caller
from aal_rpc.types import Candidate, Provenance

log = logging.getLogger(__name__)

ITEM_STATES = {"queued": annotation_pb2.ITEM_STATE_QUEUED, "leased": annotation_pb2.ITEM_STATE_LEASED,
               "labeled": annotation_pb2.ITEM_STATE_LABELED, "skipped": annotation_pb2.ITEM_STATE_SKIPPED}
DEFAULT_MODELS_PAGE = 100  # registry entries per ListModels answer (each at most ~4 KB: metrics are bounded)
MAX_MODELS_PAGE = 500

_STATUS = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,  # clients retry it with backoff
}


def _abort_for(servicer, context: grpc.ServicerContext, exc: Exception):
    if not context.is_active():  # the caller cancelled or went away (an abandoned upload): nobody to answer
        log.debug("call ended by its caller: %s", type(exc).__name__)
        context.abort(grpc.StatusCode.CANCELLED, "the call was cancelled by its caller")
    if isinstance(exc, AalError):
        context.abort(_STATUS.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT), str(exc))
    if servicer.c.closing:  # calls still running when the store closes: the client retries elsewhere or later
        context.abort(grpc.StatusCode.UNAVAILABLE, "coordinator is shutting down")
    log.exception("internal error")
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


def _bounded_wait(requested: float, context: grpc.ServicerContext) -> float:
    """A long poll ends a little before the caller's deadline, so it answers "nothing yet" rather than time out."""
    if not 0 <= requested <= MAX_WAIT_SECONDS:
        raise InvalidArgument(f"wait_seconds must lie in [0, {MAX_WAIT_SECONDS}]")
    remaining = context.time_remaining()
    if remaining is None:
        return requested
    return max(0.0, min(requested, remaining - 0.1))


def unary(fn):
    """Run a unary handler, turning domain errors into their gRPC status."""
    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            return fn(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, never a crash
            _abort_for(self, context, exc)
    return wrapper


def streaming(fn):
    """Like `unary`, for handlers that yield responses."""
    @functools.wraps(fn)
    def wrapper(self, request, context):
        try:
            yield from fn(self, request, context)
        except Exception as exc:  # noqa: BLE001
            _abort_for(self, context, exc)
    return wrapper


def _annotator(claimed: str) -> str:
    """Who is annotating: the identity the caller's token names, when it names one (a client cannot claim
    another), else the annotator_id it sends."""
    caller = current_caller()
    if caller is None or not caller.identity:
        return claimed
    if claimed and claimed != caller.identity:
        raise PermissionDenied(f"this token belongs to annotator {caller.identity!r}, not {claimed!r}")
    return caller.identity


def _is_admin() -> bool:
    caller = current_caller()
    return caller is not None and caller.role == "admin"


class AnnotationServicer(annotation_pb2_grpc.AnnotationServiceServicer):
    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    @unary
    def LeaseQuery(self, request, context):
        annotator = _annotator(request.annotator_id)
        context.add_callback(self.c.wake_waiters)  # a caller that leaves ends its long poll at once
        q = self.c.lease(annotator, wait_seconds=_bounded_wait(request.wait_seconds, context),
                         lease_seconds=request.lease_seconds, is_active=context.is_active)
        if q is not None and not context.is_active():  # taken for a caller that has gone: give it straight back
            self.c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id=annotator)
            q = None
        if q is None:
            return annotation_pb2.LeaseQueryResponse(found=False)
        return annotation_pb2.LeaseQueryResponse(found=True, query=annotation_pb2.Query(
            item_id=q.item_id, lease_id=q.lease_id, deadline_unix=q.deadline,
            payload=serde.payload_to_proto(q.payload), provenance=serde.provenance_to_proto(q.provenance)))

    @unary
    def SubmitLabel(self, request, context):
        seq, duplicate = self.c.submit_label(lease_id=request.lease_id, item_id=request.item_id,
                                             label=request.label, annotator_id=_annotator(request.annotator_id))
        return annotation_pb2.SubmitLabelResponse(seq=seq, duplicate=duplicate)

    @unary
    def ReleaseQuery(self, request, context):
        self.c.release(lease_id=request.lease_id, item_id=request.item_id,
                       annotator_id=_annotator(request.annotator_id),
                       skip=request.reason == annotation_pb2.RELEASE_REASON_SKIP,
                       defer=request.reason == annotation_pb2.RELEASE_REASON_DEFER,
                       defer_seconds=request.defer_seconds)
        return annotation_pb2.ReleaseQueryResponse()

    @unary
    def RenewLease(self, request, context):
        deadline = self.c.renew_lease(lease_id=request.lease_id, item_id=request.item_id,
                                      annotator_id=_annotator(request.annotator_id),
                                      lease_seconds=request.lease_seconds)
        return annotation_pb2.RenewLeaseResponse(deadline_unix=deadline)

    @unary
    def CorrectLabel(self, request, context):
        seq, supersedes, duplicate = self.c.correct_label(item_id=request.item_id, label=request.label,
                                                          annotator_id=_annotator(request.annotator_id),
                                                          is_admin=_is_admin())
        return annotation_pb2.CorrectLabelResponse(seq=seq, supersedes_seq=supersedes, duplicate=duplicate)

    @unary
    def GetItem(self, request, context):
        item = self.c.get_item(request.item_id)
        resp = annotation_pb2.GetItemResponse(item_id=item.item_id, state=ITEM_STATES[item.state])
        if item.payload is not None:
            resp.payload.CopyFrom(serde.payload_to_proto(item.payload))
            resp.provenance.CopyFrom(serde.provenance_to_proto(item.provenance))
        if item.record is not None:
            resp.current.CopyFrom(serde.record_to_proto(dataclasses.replace(item.record, payload=None)))
        return resp


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    @streaming
    def StreamLabels(self, request, context):
        for record in self.c.follow_labels(request.after_seq, follow=request.follow, is_active=context.is_active):
            yield serde.record_to_proto(record)

    @unary
    def UploadModel(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("an upload must start with its header")
        h = first.header

        def chunks():
            for msg in request_iterator:
                if msg.WhichOneof("part") != "chunk":
                    raise InvalidArgument("only chunks may follow the header")
                yield msg.chunk
            if not context.is_active():  # the uploader gave up (or died) before the end: publish nothing
                raise InvalidArgument("upload cancelled")

        info = self.c.receive_model(chunks(), size_bytes=h.size_bytes, sha256=h.sha256, server_id=h.server_id,
                                    trained_seq=h.trained_seq, num_labels=h.num_labels,
                                    architecture=h.architecture, metrics=dict(h.metrics))
        return training_pb2.UploadModelResponse(model=serde.model_info_to_proto(info))

    @unary
    def BeginRound(self, request, context):
        wait, why = self.c.begin_round(server_id=request.server_id, num_labels=request.num_labels,
                                       round_seconds=request.round_seconds)
        return training_pb2.BeginRoundResponse(wait_seconds=wait, reason=why)


class SelectionServicer(selection_pb2_grpc.SelectionServiceServicer):
    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    @unary
    def GetLatestModel(self, request, context):
        m = self.c.wait_for_model(request.after_version, _bounded_wait(request.wait_seconds, context))
        if m is None:
            return selection_pb2.GetLatestModelResponse(found=False)
        return selection_pb2.GetLatestModelResponse(found=True, model=serde.model_info_to_proto(m))

    @streaming
    def DownloadModel(self, request, context):
        if request.version < 0:
            raise InvalidArgument("version must be non-negative")
        info, data = self.c.read_model(request.version)
        yield selection_pb2.DownloadModelResponse(info=serde.model_info_to_proto(info))
        for chunk in iter_chunks(data, CHUNK_BYTES):
            yield selection_pb2.DownloadModelResponse(chunk=chunk)

    @unary
    def SubmitCandidates(self, request, context):
        candidates = [
            Candidate(c.item_id, serde.payload_from_proto(c.payload),
                      Provenance(request.worker_id, request.strategy, request.model_version, c.score,
                                 c.cluster if c.HasField("cluster") else None))
            for c in request.candidates]
        out = self.c.submit_candidates(worker_id=request.worker_id, strategy=request.strategy,
                                       model_version=request.model_version, candidates=candidates)
        return selection_pb2.SubmitCandidatesResponse(accepted=out.accepted, refreshed=out.refreshed,
                                                      rejected=out.rejected, evicted=out.evicted)

    @unary
    def GetShardState(self, request, context):
        s = self.c.shard_state(shard_index=request.shard_index, num_shards=request.num_shards,
                               labeled_after_seq=request.labeled_after_seq, model_version=request.model_version)
        return selection_pb2.GetShardStateResponse(
            queued_item_ids=s.queued, labeled_item_ids=s.labeled, labeled_through_seq=s.labeled_through_seq,
            more=s.more, demand=s.demand)


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, coordinator: Coordinator):
        self.c = coordinator

    @unary
    def GetTask(self, request, context):
        return admin_pb2.GetTaskResponse(task=serde.task_to_proto(self.c.task))

    @unary
    def GetStats(self, request, context):
        s = self.c.stats()
        return admin_pb2.GetStatsResponse(
            labeled=s.labeled, queued=s.queued, leased=s.leased, skipped=s.skipped,
            latest_model_version=s.latest_model_version, models=s.models, last_seq=s.last_seq,
            candidates_submitted=s.candidates_submitted, candidates_evicted=s.candidates_evicted,
            labels_by_strategy=s.labels_by_strategy, pool_capacity=s.pool_capacity, mode=s.mode)

    @unary
    def ListModels(self, request, context):
        if not 0 <= request.page_size <= MAX_MODELS_PAGE:
            raise InvalidArgument(f"page_size must lie in [0, {MAX_MODELS_PAGE}]")
        if request.after_version < 0:
            raise InvalidArgument("after_version must be non-negative")
        page, more = self.c.list_models(after_version=request.after_version,
                                        limit=request.page_size or DEFAULT_MODELS_PAGE)
        return admin_pb2.ListModelsResponse(models=[serde.model_info_to_proto(m) for m in page], more=more)

    @streaming
    def ExportLabels(self, request, context):
        for record in self.c.follow_labels(request.after_seq, follow=False, include_payload=request.include_payload,
                                           latest_only=request.latest_only):
            yield serde.record_to_proto(record)

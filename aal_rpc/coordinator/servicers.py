"""Thin asyncio gRPC servicers: translate aal.v1 messages, call the Coordinator, map domain errors to statuses.

The coordinator is synchronous (its stores block on SQLite and PostgreSQL), so each call runs its store work in
a bounded thread pool and the event loop keeps no thread for a call that waits: a long poll, a follow stream or
a download to a slow reader awaits the coordinator's change signals (coordinator/signals.py; lease_queue.py,
following.py) or its reader, and holds only a coroutine; the coordinator itself never waits. Any number of such
calls leave health checks, statistics and leases their latency.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import grpc

from aal_rpc import serde
from aal_rpc.chunking import CHUNK_BYTES, crc32_of, crc32c_of, iter_chunks
from aal_rpc.coordinator.contract import Coordinator
from aal_rpc.coordinator.contract import IMPORT_ANNOTATOR, ImportedLabel, ImportOutcome, SubmitOutcome
from aal_rpc.coordinator.following import follow_records
from aal_rpc.coordinator.importing import ImportSpool
from aal_rpc.coordinator.lease_queue import LeaseQueue, caller_left
from aal_rpc.coordinator.sessions import Session, query_to_proto
from aal_rpc.coordinator.signals import long_poll_async
from aal_rpc.coordinator.validation import check_wait
from aal_rpc.errors import (AalError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
                            ResourceExhausted, Unavailable, message_of)
from aal_rpc.proto.v1 import (admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc, selection_pb2,
                              selection_pb2_grpc, training_pb2, training_pb2_grpc)
from aal_rpc.handlers import Serialized
from aal_rpc.security import acting_as, current_caller, may_name_labeler, naming_labeler
from aal_rpc.types import Candidate, ModelInfo, Provenance, Query, provenance_sent

log = logging.getLogger(__name__)
T = TypeVar("T")

ITEM_STATES = {"queued": annotation_pb2.ITEM_STATE_QUEUED, "leased": annotation_pb2.ITEM_STATE_LEASED,
               "labeled": annotation_pb2.ITEM_STATE_LABELED, "skipped": annotation_pb2.ITEM_STATE_SKIPPED}
DEFAULT_MODELS_PAGE = 100  # registry entries per ListModels answer (each at most ~4 KB: metrics are bounded)
MAX_MODELS_PAGE = 500
UPLOAD_THREADS = 4  # threads that write uploads' chunks to their spools and hand finished uploads over

_STATUS = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,  # clients retry it with backoff
}


def status_of(exc: Exception, closing: bool = False) -> grpc.StatusCode:
    """The status a call that failed with `exc` answers (INTERNAL: a bug)."""
    if isinstance(exc, AalError):
        return _STATUS.get(type(exc), grpc.StatusCode.INVALID_ARGUMENT)
    return grpc.StatusCode.UNAVAILABLE if closing else grpc.StatusCode.INTERNAL


async def _abort_for(servicer: _Servicer, context: grpc.aio.ServicerContext, exc: Exception):
    if isinstance(exc, AalError):
        await context.abort(status_of(exc), message_of(exc))
    if servicer.c.closing:  # calls still running when the store closes: the client retries elsewhere or later
        await context.abort(grpc.StatusCode.UNAVAILABLE, "coordinator is shutting down")
    log.exception("internal error")
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}")


def _bounded_wait(requested: float, context: grpc.aio.ServicerContext) -> float:
    """A long poll ends a little before the caller's deadline, so it answers "nothing yet" rather than time out."""
    check_wait(requested)
    remaining = context.time_remaining()
    if remaining is None:
        return requested
    return max(0.0, min(requested, remaining - 0.1))


def unary(fn):
    """Run an async unary handler, turning domain errors into their gRPC status (a cancelled call just ends)."""
    @functools.wraps(fn)
    async def wrapper(self, request, context):
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a status, never a crash
            await _abort_for(self, context, exc)
    return wrapper


def streaming(fn):
    """Like `unary`, for async generators of responses."""
    @functools.wraps(fn)
    async def wrapper(self, request, context):
        try:
            async for response in fn(self, request, context):
                yield response
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001
            await _abort_for(self, context, exc)
    return wrapper


class _Servicer:
    """What every servicer shares: the coordinator, and the thread pool its blocking work runs in."""

    def __init__(self, coordinator: Coordinator, executor: ThreadPoolExecutor):
        self.c = coordinator
        self._executor = executor

    async def _run(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)` on the pool, awaited; here and now if the coordinator names it `inline`."""
        if fn.__name__ in self.c.inline:
            return fn(*args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    async def _take(self, take: functools.partial, give_back: Callable[[T], object]) -> T | None:
        """`take()` on the pool (or inline); if the call is cancelled before it returns, what it took is given
        back."""
        if take.func.__name__ in self.c.inline:
            return take()
        fut = asyncio.get_running_loop().run_in_executor(self._executor, take)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            def undo(done: asyncio.Future):
                if not done.cancelled() and done.exception() is None and done.result() is not None:
                    self._executor.submit(give_back, done.result())
            fut.add_done_callback(undo)
            raise

    def _records(self, after_seq: int, *, follow: bool, include_payload: bool = True, latest_only: bool = False):
        """Records of L after `after_seq` (following.follow_records); with `follow`, until the caller leaves or the
        coordinator closes."""
        def read(after: int, limit: int):
            return self._run(self.c.read_labels, after, limit, include_payload=include_payload,
                             latest_only=latest_only)

        return follow_records(read, self.c.signals.labels, after_seq, follow=follow,
                              keep_going=lambda: not self.c.closing)


def _annotator(claimed: str) -> str:
    """Who is annotating: the identity the caller's token names, else the annotator_id it sends, unless another
    token names that one (security.acting_as)."""
    return acting_as(claimed)


def _is_admin() -> bool:
    caller = current_caller()
    return caller is not None and caller.role == "admin"


class AnnotationServicer(_Servicer, annotation_pb2_grpc.AnnotationServiceServicer):
    def __init__(self, coordinator: Coordinator, executor: ThreadPoolExecutor,
                 observe_command: Callable[[str, str, float], None] | None = None):
        """`observe_command(kind, code, seconds)`: told each AnnotationSession command's latency (metrics)."""
        super().__init__(coordinator, executor)
        self._observe_command = observe_command or (lambda kind, code, seconds: None)
        self._queue = LeaseQueue(coordinator.signals.queries, try_lease=self._try_lease, give_back=self._give_back,
                                 closing=lambda: coordinator.closing)

    async def _try_lease(self, annotator: str, lease_seconds: float) -> Query | None:
        take = functools.partial(self.c.lease, annotator, lease_seconds=lease_seconds)
        return await self._take(take, functools.partial(self._give_back_now, annotator))

    def _give_back_now(self, annotator: str, q: Query) -> None:
        self.c.release(lease_id=q.lease_id, item_id=q.item_id, annotator_id=annotator)

    def _give_back(self, annotator: str, q: Query) -> Future:
        """Hand `q` back to S on a thread, now, whatever happens to the caller."""
        return self._executor.submit(self._give_back_now, annotator, q)

    @unary
    async def LeaseQuery(self, request, context):
        annotator = _annotator(request.annotator_id)
        wait = _bounded_wait(request.wait_seconds, context)
        # A poll that would wait behind others does not try ahead of them: the dispatcher serves the queue in
        # arrival order (a call that will not wait always tries, once).
        queued_behind = wait > 0 and self._queue.busy()
        q = None if queued_behind else await self._try_lease(annotator, request.lease_seconds)
        if q is None and wait > 0 and not self.c.closing:
            q = await self._queue.wait(annotator, request.lease_seconds, wait, look_now=queued_behind)
        if q is None:
            return annotation_pb2.LeaseQueryResponse(found=False)
        if caller_left():  # a caller that has left must not hold the item: it goes straight back to S
            self._give_back(annotator, q)
            raise asyncio.CancelledError
        # (grpc.aio's context.cancelled() stays False for a call its client cancelled, so a done callback cannot
        # tell a lost answer from a delivered one; an answer lost on the wire after this point is held until
        # its lease expires)
        return annotation_pb2.LeaseQueryResponse(found=True, query=query_to_proto(q))

    @unary
    async def SubmitLabel(self, request, context):
        annotator = _annotator(request.annotator_id)
        naming_labeler(annotator, request.labeler)
        pending = await self._run(self.c.record_label, lease_id=request.lease_id, item_id=request.item_id,
                                  label=request.label, annotator_id=annotator, labeler=request.labeler)
        seq, duplicate = await pending.wait()
        return annotation_pb2.SubmitLabelResponse(seq=seq, duplicate=duplicate)

    @unary
    async def ReleaseQuery(self, request, context):
        await self._run(self.c.release, lease_id=request.lease_id, item_id=request.item_id,
                        annotator_id=_annotator(request.annotator_id),
                        skip=request.reason == annotation_pb2.RELEASE_REASON_SKIP,
                        defer=request.reason == annotation_pb2.RELEASE_REASON_DEFER,
                        defer_seconds=request.defer_seconds)
        return annotation_pb2.ReleaseQueryResponse()

    @unary
    async def RenewLease(self, request, context):
        deadline = await self._run(self.c.renew_lease, lease_id=request.lease_id, item_id=request.item_id,
                                   annotator_id=_annotator(request.annotator_id), lease_seconds=request.lease_seconds)
        return annotation_pb2.RenewLeaseResponse(deadline_unix=deadline)

    @unary
    async def CorrectLabel(self, request, context):
        annotator = _annotator(request.annotator_id)
        naming_labeler(annotator, request.labeler)
        seq, supersedes, duplicate = await self._run(
            self.c.correct_label, item_id=request.item_id, label=request.label, annotator_id=annotator,
            is_admin=_is_admin(), labeler=request.labeler)
        return annotation_pb2.CorrectLabelResponse(seq=seq, supersedes_seq=supersedes, duplicate=duplicate)

    @streaming
    async def AnnotationSession(self, request_iterator, context):
        session = Session(self.c, call=self._run, try_lease=self._try_lease, queue=self._queue,
                          give_back=self._give_back, status_of=status_of, annotator_of=_annotator,
                          observe=self._observe_command)
        async for response in session.run(request_iterator):
            yield response

    @unary
    async def GetItem(self, request, context):
        """An item's state and payload for anyone; its current label and who gave it only for that annotator and
        admins (ExportLabels, which shows every label, is admin-only too)."""
        asking = _annotator(request.annotator_id)
        item = await self._run(self.c.get_item, request.item_id)
        resp = annotation_pb2.GetItemResponse(item_id=item.item_id, state=ITEM_STATES[item.state])
        if item.payload is not None:
            resp.payload.CopyFrom(serde.payload_to_proto(item.payload))
            resp.provenance.CopyFrom(serde.provenance_to_proto(provenance_sent(item.provenance)))
        if item.record is not None and (_is_admin() or (asking and item.record.annotator_id == asking)):
            resp.current.CopyFrom(serde.record_to_proto(dataclasses.replace(item.record, payload=None)))
        return resp


class TrainingServicer(_Servicer, training_pb2_grpc.TrainingServiceServicer):
    def __init__(self, coordinator: Coordinator, executor: ThreadPoolExecutor, uploads: ThreadPoolExecutor):
        super().__init__(coordinator, executor)
        self._uploads = uploads

    @streaming
    async def StreamLabels(self, request, context):
        caller = current_caller()
        if caller is not None and caller.role == "worker" and not request.omit_payload:
            raise PermissionDenied("a worker token may call TrainingService.StreamLabels only without payloads "
                                   "(omit_payload): the rest of TrainingService needs a server token")
        async for record in self._records(request.after_seq, follow=request.follow,
                                          include_payload=not request.omit_payload):
            yield serde.record_to_proto(record)

    @unary
    async def UploadModel(self, request_iterator, context):
        """The header is checked before a byte of weights is read. The weights are then spooled to a temporary
        file as they arrive (no thread waits on the uploader, however slowly it sends), and only once all have
        come are they handed to the coordinator, which checks and publishes them from that file."""
        first = await _next(request_iterator)
        if first is None or first.WhichOneof("part") != "header":
            raise InvalidArgument("an upload must start with its header")
        h = first.header
        header = dict(size_bytes=h.size_bytes, server_id=h.server_id, trained_seq=h.trained_seq,
                      num_labels=h.num_labels, architecture=h.architecture, metrics=dict(h.metrics))
        await self._run(self.c.check_upload, **header)
        loop = asyncio.get_running_loop()
        with self.c.spool() as spool:
            received = 0
            while (msg := await _next(request_iterator)) is not None:
                if msg.WhichOneof("part") != "chunk":
                    raise InvalidArgument("only chunks may follow the header")
                received += len(msg.chunk)
                if received > h.size_bytes:  # bounds the spool; receive_model makes every other check
                    raise InvalidArgument(f"stream carries more than the announced {h.size_bytes} bytes")
                await loop.run_in_executor(self._uploads, spool.write, msg.chunk)
            spool.seek(0)
            chunks = iter(functools.partial(spool.read, CHUNK_BYTES), b"")
            info = await loop.run_in_executor(self._uploads, functools.partial(
                self.c.receive_model, chunks, sha256=h.sha256, **header))
        return training_pb2.UploadModelResponse(model=serde.model_info_to_proto(info))

    @unary
    async def BeginRound(self, request, context):
        wait, why = await self._run(self.c.begin_round, server_id=request.server_id, num_labels=request.num_labels,
                                    round_seconds=request.round_seconds)
        return training_pb2.BeginRoundResponse(wait_seconds=wait, reason=why)


async def _next(iterator):
    """The next message of an async request stream, None at its end."""
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None


class _DownloadStreams:
    """Each recent version's download stream, serialized once: every worker downloads every version, so the
    coordinator serializes and checksums its weights once rather than once per worker."""

    def __init__(self, servicer: _Servicer, keep: int = 2):
        self._s = servicer
        self._keep = keep
        self._streams: collections.OrderedDict[int, asyncio.Future] = collections.OrderedDict()

    def get(self, info: ModelInfo, data: bytes) -> asyncio.Future:
        """The version's messages (its info with the CRC-32, then its chunks); prepared on the pool, once. The
        `keep` versions downloaded last are kept (an older version asked for again is not serialized anew)."""
        stream = self._streams.get(info.version)
        if stream is None or (stream.done() and stream.exception() is not None):
            stream = asyncio.ensure_future(self._s._run(_serialized_download, info, data))
            self._streams[info.version] = stream
        self._streams.move_to_end(info.version)
        while len(self._streams) > self._keep:
            self._streams.popitem(last=False)
        return stream


def _serialized_download(info: ModelInfo, data: bytes) -> list[Serialized]:
    head = selection_pb2.DownloadModelResponse(info=serde.model_info_to_proto(info), crc32=crc32_of(data),
                                               crc32c=crc32c_of(data))
    return [Serialized(head.SerializeToString()),
            *(Serialized(selection_pb2.DownloadModelResponse(chunk=chunk).SerializeToString())
              for chunk in iter_chunks(data, CHUNK_BYTES))]


class SelectionServicer(_Servicer, selection_pb2_grpc.SelectionServiceServicer):
    def __init__(self, coordinator: Coordinator, executor: ThreadPoolExecutor):
        super().__init__(coordinator, executor)
        self._downloads = _DownloadStreams(self)

    @unary
    async def GetLatestModel(self, request, context):
        after = request.after_version
        wait = _bounded_wait(request.wait_seconds, context)

        async def newer():
            m = await self._run(self.c.latest_model)
            return m if m is not None and m.version != after else None

        m = await long_poll_async(self.c.signals.models, newer, wait, keep_going=lambda: not self.c.closing)
        if m is None:  # nothing newer came: the latest there is, if any
            m = await self._run(self.c.latest_model)
        if m is None:
            return selection_pb2.GetLatestModelResponse(found=False)
        return selection_pb2.GetLatestModelResponse(found=True, model=serde.model_info_to_proto(m))

    @streaming
    async def DownloadModel(self, request, context):
        if request.version < 0:
            raise InvalidArgument("version must be non-negative")
        info, data = await self._run(self.c.read_model, request.version)
        stream = self._downloads.get(info, data)
        del data  # a slow reader holds the shared serialized messages, not a blob of its own too
        for message in await stream:
            yield message


    @unary
    async def SubmitCandidates(self, request, context):
        out = await self._run(_submit_candidates, self.c, request)  # decoding a batch, too, off the event loop
        return selection_pb2.SubmitCandidatesResponse(accepted=out.accepted, refreshed=out.refreshed,
                                                      rejected=out.rejected, evicted=out.evicted)

    @unary
    async def GetShardState(self, request, context):
        s = await self._run(self.c.shard_state, shard_index=request.shard_index, num_shards=request.num_shards,
                            labeled_after_seq=request.labeled_after_seq, model_version=request.model_version)
        return selection_pb2.GetShardStateResponse(
            queued_item_ids=s.queued, labeled_item_ids=s.labeled, labeled_through_seq=s.labeled_through_seq,
            more=s.more, demand=s.demand, max_labels_per_item=s.max_labels)


def _submit_candidates(c: Coordinator, request: selection_pb2.SubmitCandidatesRequest) -> SubmitOutcome:
    candidates = [
        Candidate(x.item_id, serde.payload_from_proto(x.payload),
                  Provenance(request.worker_id, request.strategy, request.model_version, x.score,
                             x.cluster if x.HasField("cluster") else None,
                             x.guess if x.HasField("guess") else None, x.guess_probability))
        for x in request.candidates]
    return c.submit_candidates(worker_id=request.worker_id, strategy=request.strategy,
                               model_version=request.model_version, candidates=candidates)


class AdminServicer(_Servicer, admin_pb2_grpc.AdminServiceServicer):
    @unary
    async def GetTask(self, request, context):
        caller = current_caller()
        return admin_pb2.GetTaskResponse(task=serde.task_to_proto(self.c.task),
                                         caller_identity=caller.identity if caller is not None else "",
                                         weights_fingerprint=self.c.weights_fingerprint,
                                         caller_may_name_labeler=may_name_labeler())

    @unary
    async def GetStats(self, request, context):
        return serde.stats_to_proto(await self._run(self.c.stats))

    @unary
    async def ListModels(self, request, context):
        if not 0 <= request.page_size <= MAX_MODELS_PAGE:
            raise InvalidArgument(f"page_size must lie in [0, {MAX_MODELS_PAGE}]")
        if request.after_version < 0:
            raise InvalidArgument("after_version must be non-negative")
        page, more = await self._run(self.c.list_models, after_version=request.after_version,
                                     limit=request.page_size or DEFAULT_MODELS_PAGE)
        return admin_pb2.ListModelsResponse(models=[serde.model_info_to_proto(m) for m in page], more=more)

    @streaming
    async def ExportLabels(self, request, context):
        async for record in self._records(request.after_seq, follow=False, include_payload=request.include_payload,
                                          latest_only=request.latest_only):
            yield serde.record_to_proto(record)

    @unary
    async def ImportLabels(self, request_iterator, context):
        """The items are spooled to a file as they arrive (as UploadModel spools weights: no thread waits on the
        sender), and only once all have come does the coordinator check them and write them, from that file. A
        caller that leaves before the end imports nothing; once the coordinator has begun, the import runs to its
        end (each batch is a transaction, and importing again skips what is there)."""
        loop = asyncio.get_running_loop()
        spool = ImportSpool(self.c.spool())
        try:
            position = 0
            while (msg := await _next(request_iterator)) is not None:
                position += 1
                await loop.run_in_executor(self._executor, spool.add, _imported(msg, position))
        except BaseException:
            spool.close()
            raise
        running = loop.run_in_executor(self._executor, _import_then_close, self.c, spool)
        running.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved, should the caller leave
        out = await asyncio.shield(running)
        return admin_pb2.ImportLabelsResponse(imported=out.imported, skipped=out.skipped, first_seq=out.first_seq,
                                              last_seq=out.last_seq)


def _imported(msg: admin_pb2.ImportLabelsRequest, position: int) -> ImportedLabel:
    try:
        payload = serde.payload_from_proto(msg.payload)
    except InvalidArgument as exc:
        name = f"item {msg.item_id}" if msg.item_id else f"imported label #{position}"
        raise InvalidArgument(f"{name}: {exc}") from None
    return ImportedLabel(msg.item_id, msg.label, payload, msg.annotator_id or IMPORT_ANNOTATOR)


def _import_then_close(c: Coordinator, spool: ImportSpool) -> ImportOutcome:
    try:
        return c.import_labels(spool)
    finally:
        spool.close()

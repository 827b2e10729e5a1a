"""The tool's side of an AnnotationSession stream (annotation.proto, "Sessions"): what AnnotationClient leases and
labels through.

One stream per client, read by one background thread. Commands (label, release, renew) are numbered and answered
in order; queries the coordinator pushes wait in a local buffer until the tool takes them. Through an outage
(UNAVAILABLE) the thread opens a new stream, asks again for the credit not yet served and sends again every
command not yet answered, for `retry_for` seconds (None: for as long as it takes): a label whose first
acknowledgement was lost is answered duplicate=true, never recorded twice.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import grpc

from aal_rpc import serde
from aal_rpc.client.retry import TRANSIENT, Contact, Retrier
from aal_rpc.proto.v1 import annotation_pb2, annotation_pb2_grpc
from aal_rpc.types import Payload, Provenance

log = logging.getLogger("aal.client")

ANSWER_SECONDS = 10.0  # how long a command or a first look at S may take once the stream is up


@dataclasses.dataclass(frozen=True)
class LeasedQuery:
    item_id: str
    lease_id: str
    deadline_unix: float
    payload: Payload
    provenance: Provenance

    @property
    def image(self) -> bytes:
        """The picture people look at (PNG, JPEG, GIF or WebP; `payload.image_type` names it), b"" for text."""
        return self.payload.image

    image_png = image  # the name before pictures could be JPEG, GIF or WebP

    @property
    def text(self) -> str:
        """A text item's text ("" for images)."""
        return self.payload.text

    def array(self):
        return self.payload.to_array()


def leased_query(q: annotation_pb2.Query) -> LeasedQuery:
    return LeasedQuery(q.item_id, q.lease_id, q.deadline_unix, serde.payload_from_proto(q.payload),
                       serde.provenance_from_proto(q.provenance))


class SessionError(grpc.RpcError):
    """A command or push the coordinator refused, with the status a unary call would have failed with."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _error_of(e: annotation_pb2.SessionError) -> SessionError:
    return SessionError(_CODES.get(e.code, grpc.StatusCode.UNKNOWN), e.message)


class SessionStream:
    """One annotator's AnnotationSession.

    Parameters
    ----------
    stub:
        An AnnotationService stub on the client's channel (its token and TLS included).
    annotator_id, lease_seconds:
        As in the unary calls.
    prefetch:
        Queries to hold ready beyond those the tool has taken: each label or release asks for one more while fewer
        than `prefetch` are ready or on their way (0: a query is asked for only when the tool asks for one).
    keep_leases:
        What the coordinator does with held leases when the stream ends: keep them to their deadline (True) or
        return them to S at once.
    retry_for:
        Seconds to keep reconnecting through an outage; None: no limit.
    contact:
        Told of lost and regained contact (client/retry.py).
    stop:
        When set, an outage is no longer waited out (the client's stop_retrying); closing sets it too.
    """

    def __init__(self, stub: annotation_pb2_grpc.AnnotationServiceStub, annotator_id: str, *,
                 lease_seconds: float = 0.0, prefetch: int = 0, keep_leases: bool = True,
                 retry_for: float | None = 60.0, contact: Contact | None = None,
                 stop: threading.Event | None = None):
        self._stub = stub
        self._prefetch = prefetch
        self._open = annotation_pb2.SessionOpen(annotator_id=annotator_id, lease_seconds=lease_seconds,
                                                keep_leases=keep_leases)
        self._retry_for = retry_for
        self._contact = contact
        self._cond = threading.Condition()
        self._buffer: collections.deque[LeasedQuery] = collections.deque()
        self._pending: dict[int, tuple[annotation_pb2.SessionRequest, Future]] = {}
        self._refs = itertools.count(1)
        self._credit = 0  # queries asked for and not yet received
        self._received = 0  # queries received on the current stream (close says how many)
        self._dry = False  # the coordinator said S had nothing since credit was last asked for
        self._push_error: SessionError | None = None
        self._failed: grpc.RpcError | None = None  # the stream is gone for good
        self._closed = False
        self._outbox: queue.Queue[annotation_pb2.SessionRequest | None] = queue.Queue()
        self._call: grpc.Call | None = None
        self._stop = stop or threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"session-{annotator_id}", daemon=True)
        self._thread.start()

    # -- what the tool calls ---------------------------------------------------------------------------------

    @property
    def annotator_id(self) -> str:
        """The annotator this stream claims (as opened)."""
        return self._open.annotator_id

    @property
    def ended(self) -> bool:
        """Whether the stream is gone for good (refused, or an outage outlasted `retry_for`)."""
        return self._failed is not None

    def next_query(self, wait_seconds: float) -> LeasedQuery | None:
        """A query from the window, waiting up to `wait_seconds` for one; None when none came. Asks for one when
        nothing is asked for yet. A push the coordinator refused (the lease cap: RESOURCE_EXHAUSTED) is raised.
        With credit already outstanding and S last said empty, `wait_seconds=0` answers None at once: a query that
        came to S since is pushed, and may still be on its way (a unary LeaseQuery would see it)."""
        retrier = Retrier(retry_for=self._retry_for, contact=self._contact, stop=self._stop)
        deadline = time.monotonic() + wait_seconds
        with self._cond:
            while True:
                self._raise_if_failed()
                if self._buffer:
                    return self._buffer.popleft()
                if self._push_error is not None:
                    exc, self._push_error = self._push_error, None
                    if exc.code() not in TRANSIENT:
                        raise exc
                    self._cond.release()
                    try:
                        retrier.failed(exc, time.monotonic())  # raises when it is time to give up
                    finally:
                        self._cond.acquire()
                if self._credit == 0:
                    self._send(want=max(1, self._prefetch))
                now = time.monotonic()
                if now >= deadline and (self._dry or now >= deadline + ANSWER_SECONDS):
                    return None
                self._cond.wait((deadline - now) if now < deadline else (deadline + ANSWER_SECONDS - now))

    def command(self, *, refill: bool = False, **command) -> annotation_pb2.SessionResponse:
        """Send one command (label=, release= or renew=) and return its answer; a refused command raises its
        SessionError. UNAVAILABLE (the database restarting: nothing was changed) is tried again like a call.
        `refill`: the command frees a lease, so ask for what keeps `prefetch` queries ready."""
        retrier = Retrier(retry_for=self._retry_for, contact=self._contact, stop=self._stop)
        while True:
            started = time.monotonic()
            with self._cond:
                self._raise_if_failed()
                want = max(0, self._prefetch - self._credit - len(self._buffer)) if refill else 0
                fut = self._send(want=want, **command)
            answer = fut.result()
            if answer.WhichOneof("answer") != "error":
                retrier.answered(started)
                return answer
            exc = _error_of(answer.error)
            retrier.failed(exc, started)  # raises unless transient and there is time left

    def wake(self) -> None:
        """Let a waiting `next_query` see that retrying was stopped."""
        with self._cond:
            self._cond.notify_all()

    def close(self, *, give_back: bool = True) -> None:
        """End the stream. With `give_back`, queries pushed but never taken go back to S first (they were never
        shown to anyone), those still on their way included (SessionClose)."""
        if give_back:
            with self._cond:
                untaken, self._buffer = list(self._buffer), collections.deque()
                futures = [] if self._failed is not None else [
                    *(self._send(release=annotation_pb2.SessionRelease(lease_id=q.lease_id, item_id=q.item_id))
                      for q in untaken),
                    # and those pushed but still on their way (the coordinator counts what it sent)
                    self._send(close=annotation_pb2.SessionClose(received=self._received))]
            for fut in futures:  # once, without waiting out an outage: an untaken lease also runs out by itself
                try:
                    fut.result(timeout=ANSWER_SECONDS)
                except Exception:  # noqa: BLE001 - refused, unreachable or timed out: nothing more to do
                    pass
        with self._cond:
            self._closed = True
            self._stop.set()
            self._outbox.put(None)
            call = self._call
            self._cond.notify_all()
        if call is not None:
            call.cancel()
        self._thread.join(timeout=5)

    # -- the stream ------------------------------------------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise SessionError(grpc.StatusCode.CANCELLED, "the session is closed")

    def _send(self, want: int = 0, **command) -> Future:
        """Queue a message (under the lock); a command's answer comes in the returned future."""
        fut: Future = Future()
        msg = annotation_pb2.SessionRequest(want=want, **command)
        if command:
            msg.ref = next(self._refs)
            self._pending[msg.ref] = (msg, fut)
        if want:
            self._credit += want
            self._dry = False
        self._outbox.put(msg)
        return fut

    def _requests(self, outbox: queue.Queue) -> Iterator[annotation_pb2.SessionRequest]:
        while (msg := outbox.get()) is not None:
            yield msg

    def _run(self) -> None:
        retrier = Retrier(retry_for=self._retry_for, contact=self._contact, stop=self._stop)
        while True:
            started = time.monotonic()
            with self._cond:
                if self._closed:
                    return
                # a new stream: open again, ask again for the credit not served, send again what was not answered
                outbox: queue.Queue = queue.Queue()
                outbox.put(annotation_pb2.SessionRequest(ref=0, want=self._credit, open=self._open))
                self._received = 0
                for msg, _ in self._pending.values():
                    outbox.put(annotation_pb2.SessionRequest(ref=msg.ref, **{  # its credit is in the open's
                        msg.WhichOneof("command"): getattr(msg, msg.WhichOneof("command"))}))
                self._outbox = outbox
                self._call = call = self._stub.AnnotationSession(self._requests(outbox))
            try:
                for response in call:
                    if response.WhichOneof("answer") == "opened":
                        retrier.answered(started)
                    self._receive(response)
                if self._closed:
                    return
                raise SessionError(grpc.StatusCode.UNAVAILABLE, "the coordinator ended the session")
            except grpc.RpcError as exc:
                if self._closed:
                    return
                try:
                    retrier.failed(exc, started)
                except grpc.RpcError as final:
                    self._fail(final)
                    return
            finally:
                outbox.put(None)

    def _receive(self, r: annotation_pb2.SessionResponse) -> None:
        with self._cond:
            for q in r.queries:
                self._buffer.append(leased_query(q))
                self._credit = max(0, self._credit - 1)
            self._received += len(r.queries)
            if r.dry:
                self._dry = True
            kind = r.WhichOneof("answer")
            if kind == "error" and r.ref == 0:  # a push that failed: the coordinator reset the credit
                self._push_error = _error_of(r.error)
                self._credit = 0
            elif kind is not None and kind != "opened":
                msg_fut = self._pending.pop(r.ref, None)
                if msg_fut is not None:
                    msg_fut[1].set_result(r)
            self._cond.notify_all()

    def _fail(self, exc: grpc.RpcError) -> None:
        with self._cond:
            self._failed = exc
            pending, self._pending = self._pending, {}
            self._cond.notify_all()
        for _, fut in pending.values():
            fut.set_exception(exc)


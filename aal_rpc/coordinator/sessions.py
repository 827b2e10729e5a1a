"""AnnotationSession: one bidirectional stream per annotation tool (annotation.proto, "Sessions").

A session is three coroutines over one stream:
- the reader takes the tool's messages in order and runs each command on the coordinator (the same calls as the
  unary SubmitLabel, ReleaseQuery and RenewLease), then adds the message's credit (`want`); when no credit was
  outstanding it first looks at S itself, so a label's acknowledgement carries the next query in one message;
- the filler leases queries while there is credit: once at once, then in the long polls' queue (lease_queue.py)
  with every other waiting annotator, so a session is served in arrival order like a LeaseQuery;
- the writer sends what the other two put in the outbox, merging an answer and pushes that are ready together
  into one message (a label's acknowledgement and the next query, when the lease was at hand).

The reader handles one message at a time and the outbox is bounded, so a tool that sends without reading stops
being read (gRPC's flow control holds it): a session's memory does not grow with what a client sends. The leases
the session holds when the stream ends go back to S at once unless the tool opened it with keep_leases (then
they run to their deadline, as a unary lease does). A tool that leaves says so first (`close`, with how many
queries it received): the queries sent after those never reached it, and go back to S whatever keep_leases says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import grpc

from aal_rpc import serde
from aal_rpc.coordinator.contract import Coordinator
from aal_rpc.coordinator.lease_queue import LeaseQueue
from aal_rpc.coordinator.validation import check_lease_request
from aal_rpc.errors import AalError, InvalidArgument, message_of
from aal_rpc.proto.v1 import annotation_pb2
from aal_rpc.security import naming_labeler
from aal_rpc.types import Query, provenance_sent

log = logging.getLogger(__name__)
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}

MAX_SESSION_WINDOW = 64  # queries a tool may ask for and not yet have received (annotation.proto)
OUTBOX = 16  # messages waiting to be written before the reader stops reading the tool's
WAIT_SLICE_SECONDS = 30.0  # a filler waiting in the long polls' queue looks at its session again this often


def query_to_proto(q: Query) -> annotation_pb2.Query:
    """A leased query as annotators receive it (a gold item's provenance blanked: types.provenance_sent)."""
    return annotation_pb2.Query(item_id=q.item_id, lease_id=q.lease_id, deadline_unix=q.deadline,
                                payload=serde.payload_to_proto(q.payload),
                                provenance=serde.provenance_to_proto(provenance_sent(q.provenance)))


class Session:
    """One tool's stream. `run` (an async generator of responses) is the whole life of it.

    `call(fn, **kwargs)` runs a coordinator operation as the servicer runs it (thread pool or inline);
    `observe(kind, code, seconds)` is told each command's latency and status code name;
    `try_lease(annotator, lease_seconds)` looks at S once; `queue` is the long polls' queue; `give_back(annotator,
    query)` returns a query to S on a thread; `status_of(exc)` is the status a unary call would answer `exc` with.
    """

    def __init__(self, c: Coordinator, *, call: Callable[..., Awaitable[Any]],
                 try_lease: Callable[[str, float], Awaitable[Query | None]], queue: LeaseQueue,
                 give_back: Callable[[str, Query], Future], status_of: Callable[[Exception, bool], grpc.StatusCode],
                 annotator_of: Callable[[str], str],
                 observe: Callable[[str, str, float], None] = lambda kind, code, seconds: None):
        self.c = c
        self._call = call
        self._try_lease = try_lease
        self._queue = queue
        self._give_back = give_back
        self._status_of = status_of
        self._annotator_of = annotator_of
        self._observe = observe
        self._annotator = ""
        self._lease_seconds = 0.0
        self._keep_leases = False
        self._credit = 0
        self._room = asyncio.Event()  # set while there is credit
        self._granted_since_dry = False
        self._held: dict[str, Query] = {}  # lease id -> query pushed and not yet labeled or released
        self._sent: dict[str, int] = {}  # lease id of a held query -> its position among the queries sent
        self._sent_count = 0
        self._received: int | None = None  # set by close: the queries the tool received; the rest go back
        self._outbox: asyncio.Queue[annotation_pb2.SessionResponse | None] = asyncio.Queue(OUTBOX)

    async def run(self, requests: AsyncIterator[annotation_pb2.SessionRequest]
                  ) -> AsyncIterator[annotation_pb2.SessionResponse]:
        first = await _next(requests)
        if first is None:
            return
        if first.WhichOneof("command") != "open":
            raise InvalidArgument("a session's first message is open")
        self._annotator = self._annotator_of(first.open.annotator_id)
        self._lease_seconds = first.open.lease_seconds
        self._keep_leases = first.open.keep_leases
        if not self._annotator:
            raise InvalidArgument("annotator_id is required (or a token that names the annotator)")
        check_lease_request(self._annotator, self._lease_seconds)
        yield annotation_pb2.SessionResponse(ref=first.ref, opened=annotation_pb2.SessionOpened(
            annotator_id=self._annotator))
        self._grant(first.want)
        reader = asyncio.ensure_future(self._read(requests))
        tasks = [reader, asyncio.ensure_future(self._fill())]
        try:
            while (response := await self._outbox.get()) is not None:
                response = self._merge(response)
                for q in response.queries:
                    self._sent[q.lease_id] = self._sent_count
                    self._sent_count += 1
                yield response
            await asyncio.wait([reader])  # the tool is done sending, or sent what ends the stream
            if reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            for t in tasks:
                t.cancel()
            for q in self._held.values():
                if not self._keep_leases or self._on_its_way(q.lease_id):
                    self._give_back(self._annotator, q)
            self._held.clear()

    def _merge(self, response: annotation_pb2.SessionResponse) -> annotation_pb2.SessionResponse:
        """`response` with the pushes already waiting behind it folded in (at most one answer a message)."""
        while not self._outbox.empty():
            nxt = self._outbox._queue[0]  # type: ignore[attr-defined]  # peek: asyncio.Queue keeps a deque
            if nxt is None or (response.WhichOneof("answer") and nxt.WhichOneof("answer")):
                break
            self._outbox.get_nowait()
            if nxt.WhichOneof("answer"):
                nxt.queries.extend(response.queries)  # the pushes came first: keep their order
                nxt.dry = nxt.dry or response.dry
                response = nxt
            else:
                response.queries.extend(nxt.queries)
                response.dry = response.dry or nxt.dry
        return response

    def _on_its_way(self, lease_id: str) -> bool:
        """Whether a held query had not reached the tool when it said it was leaving (close)."""
        return self._received is not None and self._sent.get(lease_id, self._received) >= self._received

    def _settled(self, lease_id: str) -> None:
        """A held lease was labeled, released or given back: the session no longer answers for it."""
        self._held.pop(lease_id, None)
        self._sent.pop(lease_id, None)

    def _pushing(self) -> bool:
        """Whether queries still go to the tool: until it says it is leaving (close), for good then."""
        return self._received is None

    def _grant(self, want: int) -> None:
        if want and self._pushing():
            self._credit = min(MAX_SESSION_WINDOW, self._credit + want)
            self._granted_since_dry = True
            self._room.set()

    async def _read(self, requests: AsyncIterator[annotation_pb2.SessionRequest]) -> None:
        ended = True  # False once cancelled: the stream is over and nobody empties the outbox any more
        try:
            while (msg := await _next(requests)) is not None:
                kind = msg.WhichOneof("command")
                if kind == "open":
                    raise InvalidArgument("open is a session's first message only")
                if kind is not None:
                    answer = await self._command(kind, msg)
                    answer.ref = msg.ref
                    # after the command (a label frees room under the lease cap first); the next query rides
                    # with the answer when it is at hand
                    self._grant(msg.want - await self._lease_into(answer, msg.want))
                    await self._outbox.put(answer)
                else:
                    self._grant(msg.want)
        except asyncio.CancelledError:
            ended = False
            raise
        finally:
            if ended:
                await self._outbox.put(None)

    async def _lease_into(self, answer: annotation_pb2.SessionResponse, want: int) -> int:
        """With no credit outstanding and nobody queued ahead, look at S once for the credit a command brings and
        put what comes into its answer (one message: the acknowledgement and the next query); how many came."""
        if not want or self._credit or self._queue.busy() or not self._pushing():
            return 0
        try:
            q = await self._try_lease(self._annotator, self._lease_seconds)
        except Exception:  # noqa: BLE001 - left to the filler, which says what failed
            return 0
        if q is None:
            return 0
        self._held[q.lease_id] = q
        answer.queries.append(query_to_proto(q))
        return 1

    async def _command(self, kind: str, msg: annotation_pb2.SessionRequest) -> annotation_pb2.SessionResponse:
        t0 = time.perf_counter()
        answer = await self._answer(kind, msg)
        code = _CODE_NAMES.get(answer.error.code, "UNKNOWN") if answer.HasField("error") else "OK"
        self._observe(kind, code, time.perf_counter() - t0)
        return answer

    async def _answer(self, kind: str, msg: annotation_pb2.SessionRequest) -> annotation_pb2.SessionResponse:
        try:
            if kind == "label":
                m = msg.label
                naming_labeler(self._annotator, m.labeler)
                pending = await self._call(self.c.record_label, lease_id=m.lease_id, item_id=m.item_id,
                                           label=m.label, annotator_id=self._annotator, labeler=m.labeler)
                seq, duplicate = await pending.wait()
                self._settled(m.lease_id)
                return annotation_pb2.SessionResponse(labeled=annotation_pb2.SubmitLabelResponse(
                    seq=seq, duplicate=duplicate))
            if kind == "release":
                r = msg.release
                await self._call(self.c.release, lease_id=r.lease_id, item_id=r.item_id,
                                 annotator_id=self._annotator,
                                 skip=r.reason == annotation_pb2.RELEASE_REASON_SKIP,
                                 defer=r.reason == annotation_pb2.RELEASE_REASON_DEFER,
                                 defer_seconds=r.defer_seconds)
                self._settled(r.lease_id)
                return annotation_pb2.SessionResponse(released=annotation_pb2.ReleaseQueryResponse())
            if kind == "close":
                return annotation_pb2.SessionResponse(closed=annotation_pb2.SessionClosed(
                    given_back=await self._close(msg.close.received)))
            n = msg.renew
            deadline = await self._call(self.c.renew_lease, lease_id=n.lease_id, item_id=n.item_id,
                                        annotator_id=self._annotator,
                                        lease_seconds=n.lease_seconds or self._lease_seconds)
            return annotation_pb2.SessionResponse(renewed=annotation_pb2.RenewLeaseResponse(deadline_unix=deadline))
        except Exception as exc:  # noqa: BLE001 - a command's failure is its answer; the stream goes on
            return annotation_pb2.SessionResponse(error=self._error(exc))

    async def _close(self, received: int) -> int:
        """The tool is leaving, having received `received` queries: no more pushes, and the held queries sent
        after those (or not sent yet) go back to S before the answer; a push already under way when this ran goes
        back when the stream ends. How many went back."""
        self._received = received
        self._credit = 0
        self._room.clear()
        back = [q for lease_id, q in self._held.items() if self._on_its_way(lease_id)]
        for q in back:
            self._settled(q.lease_id)
        await asyncio.gather(*(asyncio.wrap_future(self._give_back(self._annotator, q)) for q in back))
        return len(back)

    def _error(self, exc: Exception) -> annotation_pb2.SessionError:
        if not isinstance(exc, AalError) and not self.c.closing:
            log.exception("internal error in a session", exc_info=exc)
        return annotation_pb2.SessionError(code=self._status_of(exc, self.c.closing).value[0],
                                          message=message_of(exc))

    async def _fill(self) -> None:
        """Lease while there is credit: look once, then wait in the long polls' queue in arrival order."""
        while not self.c.closing:
            await self._room.wait()
            try:
                # credit just asked for looks at S once, as a LeaseQuery that will not wait does; credit that
                # found S empty waits its turn behind the polls that came before it
                fresh, self._granted_since_dry = self._granted_since_dry, False
                q = await self._try_lease(self._annotator, self._lease_seconds) \
                    if fresh or not self._queue.busy() else None
                if q is None:
                    if fresh:
                        await self._outbox.put(annotation_pb2.SessionResponse(dry=True))
                    q = await self._queue.wait(self._annotator, self._lease_seconds, WAIT_SLICE_SECONDS,
                                               look_now=True)
            except Exception as exc:  # noqa: BLE001 - the lease cap, or the store restarting: said, credit reset
                self._credit = 0
                self._room.clear()
                await self._outbox.put(annotation_pb2.SessionResponse(error=self._error(exc)))
                continue
            if q is None:
                continue
            self._held[q.lease_id] = q
            self._credit -= 1
            if self._credit <= 0:
                self._credit = 0
                self._room.clear()
            await self._outbox.put(annotation_pb2.SessionResponse(queries=[query_to_proto(q)]))


async def _next(iterator: AsyncIterator[Any]) -> Any:
    """The next message of an async request stream, None at its end."""
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None

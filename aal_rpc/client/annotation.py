"""The annotation client: what an annotation tool imports to lease queries and submit labels.

    from aal_rpc.client import AnnotationClient

    with AnnotationClient("coordinator:50051", annotator_id="alice") as client:
        task = client.task()                      # class names, input shape
        query = client.lease(wait_seconds=30)     # None if nothing arrived in time
        if query is not None:
            show(query.image)                 # a PNG for people; query.array() for programs
            client.submit(query, label=3)         # on disk when this returns

Every call has a deadline. Calls that fail with UNAVAILABLE or DEADLINE_EXCEEDED (the coordinator
restarting, the network cut) are retried with backoff for `retry_for` seconds (None: until the coordinator
answers again; client/retry.py). Submissions are idempotent per lease: a retried submission whose
first attempt was recorded is acknowledged once, with `duplicate=True`, and never counted twice; a
retry carrying another label is refused (FAILED_PRECONDITION): `correct` changes a recorded label.
An annotator holds at most the coordinator's --max-leases-per-annotator leases (64 unless configured):
`lease` beyond it fails with RESOURCE_EXHAUSTED until a label, a release or an expiry frees one.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import grpc

from aal_rpc import serde
from aal_rpc.client.retry import ChannelClient
from aal_rpc.client.session import LeasedQuery, SessionStream, leased_query
from aal_rpc.grpc_utils import LONG_POLL_MARGIN_SECONDS
from aal_rpc.security import ClientSecurity
from aal_rpc.proto.v1 import admin_pb2, annotation_pb2, annotation_pb2_grpc
from aal_rpc.types import Payload, Provenance, Task

CALL_TIMEOUT = 10.0  # seconds for one call, long polls excepted
# The statuses of a lease that is gone for good (expired, ended, given to nobody, or its item labeled or imported
# meanwhile): a tool drops that query and goes on; retrying the call cannot help.
LEASE_GONE = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND)


def lease_gone(exc: grpc.RpcError) -> bool:
    """Whether a failed call says its lease is gone for good (LEASE_GONE)."""
    return exc.code() in LEASE_GONE
DEFAULT_RETRY_FOR = 60.0  # how long to keep retrying through an outage


@dataclass(frozen=True)
class SubmitResult:
    seq: int
    duplicate: bool
    supersedes: int = 0  # a correction: the record it superseded


ITEM_STATES = {annotation_pb2.ITEM_STATE_QUEUED: "queued", annotation_pb2.ITEM_STATE_LEASED: "leased",
               annotation_pb2.ITEM_STATE_LABELED: "labeled", annotation_pb2.ITEM_STATE_SKIPPED: "skipped"}


@dataclass(frozen=True)
class Item:
    """An item looked up by id: "queued", "leased", "labeled" (with its current `label`) or "skipped"."""

    item_id: str
    state: str
    payload: Payload | None
    provenance: Provenance | None
    label: int | None = None
    labeled_by: str = ""
    seq: int = 0


class AnnotationClient(ChannelClient):
    """A client for one annotator.

    Parameters
    ----------
    target:
        The coordinator's HOST:PORT.
    annotator_id:
        Who is labeling; leases are bound to it.
    lease_seconds:
        How long a leased query stays reserved (0: the coordinator's default).
    retry_for:
        Seconds to keep retrying a call through an outage (UNAVAILABLE, DEADLINE_EXCEEDED); None: no limit.
    security:
        Bearer token and TLS settings (aal_rpc.security.ClientSecurity); None for a plain local channel.
    stream:
        Lease, label, release and renew over one AnnotationSession stream (a message in and a message out per
        label) rather than a unary call each.
    prefetch:
        With `stream`: queries held ready beyond those taken, so the next one is at hand when a label is
        acknowledged (client/session.py); 0 asks for a query only when `lease` is called.
    """

    def __init__(self, target: str, annotator_id: str, *, lease_seconds: float = 0.0,
                 retry_for: float | None = DEFAULT_RETRY_FOR, channel: grpc.Channel | None = None,
                 security: ClientSecurity | None = None, stream: bool = True, prefetch: int = 0):
        super().__init__(target, retry_for=retry_for, channel=channel, security=security)
        self.annotator_id = annotator_id
        self.lease_seconds = lease_seconds
        self.stream = stream
        self.prefetch = prefetch
        self._stub = annotation_pb2_grpc.AnnotationServiceStub(self._channel)
        self._session: SessionStream | None = None
        self._session_lock = threading.Lock()

    def session(self) -> SessionStream:
        """This client's stream, opened on first use, and again when the annotator it claims changed or the last
        one ended for good (a refused open, an outage longer than `retry_for`)."""
        with self._session_lock:
            old = self._session
            if old is not None and (old.ended or old.annotator_id != self.annotator_id):
                old.close()
                self._session = None
            if self._session is None:
                self._session = SessionStream(self._stub, self.annotator_id, lease_seconds=self.lease_seconds,
                                              prefetch=self.prefetch, retry_for=self.retry_for,
                                              contact=self.contact, stop=self._stop)
            return self._session

    def close(self) -> None:
        """Give back the queries pushed but never taken, end the stream, and close the channel if it is ours."""
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()
        super().close()

    def stop_retrying(self) -> None:
        super().stop_retrying()
        with self._session_lock:
            session = self._session
        if session is not None:
            session.wake()

    def task(self) -> Task:
        return serde.task_from_proto(self._call(self._admin.GetTask, admin_pb2.GetTaskRequest(), CALL_TIMEOUT).task)

    def identity(self) -> str:
        """The annotator this client's token names ("" when it names none, or without tokens)."""
        return self._call(self._admin.GetTask, admin_pb2.GetTaskRequest(), CALL_TIMEOUT).caller_identity

    def lease(self, wait_seconds: float = 0.0) -> LeasedQuery | None:
        """Lease the next query, waiting up to `wait_seconds` for one; None when none came. RESOURCE_EXHAUSTED when
        this annotator already holds the coordinator's cap of live leases."""
        if self.stream:
            return self.session().next_query(wait_seconds)
        resp = self._call(self._stub.LeaseQuery, annotation_pb2.LeaseQueryRequest(
            annotator_id=self.annotator_id, wait_seconds=wait_seconds, lease_seconds=self.lease_seconds),
            wait_seconds + LONG_POLL_MARGIN_SECONDS)
        if not resp.found:
            return None
        return leased_query(resp.query)

    def may_name_labeler(self) -> bool:
        """Whether this client's token may name the labeler behind a label (`submit`'s `labeler`): a token allowed
        to delegate (`annotator+delegate IDENTITY TOKEN`), an admin token, or no tokens at all."""
        return self._call(self._admin.GetTask, admin_pb2.GetTaskRequest(), CALL_TIMEOUT).caller_may_name_labeler

    def submit(self, query: LeasedQuery, label: int, *, labeler: str = "") -> SubmitResult:
        """Submit a label; returns once the coordinator has it on disk. `labeler`: the person behind it, for a tool
        that speaks for several (the label is recorded as `<annotator>/<labeler>`; PERMISSION_DENIED unless
        `may_name_labeler`)."""
        if self.stream:
            labeled = self.session().command(refill=True, label=annotation_pb2.SessionLabel(
                lease_id=query.lease_id, item_id=query.item_id, label=int(label), labeler=labeler)).labeled
            return SubmitResult(labeled.seq, labeled.duplicate)
        resp = self._call(self._stub.SubmitLabel, annotation_pb2.SubmitLabelRequest(
            lease_id=query.lease_id, item_id=query.item_id, label=int(label), annotator_id=self.annotator_id,
            labeler=labeler), CALL_TIMEOUT)
        return SubmitResult(resp.seq, resp.duplicate)

    def release(self, query: LeasedQuery) -> None:
        """Give the query back to the pool for someone else."""
        self._release(query, annotation_pb2.RELEASE_REASON_RETURN)

    def skip(self, query: LeasedQuery) -> None:
        """Drop the query as unlabelable; it is never offered again."""
        self._release(query, annotation_pb2.RELEASE_REASON_SKIP)

    def defer(self, query: LeasedQuery, *, defer_seconds: float = 0.0) -> None:
        """"Don't know": back to the pool for others, not offered to this annotator again for `defer_seconds`
        (0: the coordinator's default)."""
        self._release(query, annotation_pb2.RELEASE_REASON_DEFER, defer_seconds)

    def _release(self, query: LeasedQuery, reason: annotation_pb2.ReleaseReason, defer_seconds: float = 0.0
                 ) -> None:
        if self.stream:
            self.session().command(refill=True, release=annotation_pb2.SessionRelease(
                lease_id=query.lease_id, item_id=query.item_id, reason=reason, defer_seconds=defer_seconds))
            return
        self._call(self._stub.ReleaseQuery, annotation_pb2.ReleaseQueryRequest(
            lease_id=query.lease_id, item_id=query.item_id, annotator_id=self.annotator_id, reason=reason,
            defer_seconds=defer_seconds), CALL_TIMEOUT)

    def renew(self, query: LeasedQuery) -> LeasedQuery:
        """Keep a query open: its lease runs `lease_seconds` (or the coordinator's default) from now."""
        if self.stream:
            renewed = self.session().command(renew=annotation_pb2.SessionRenew(
                lease_id=query.lease_id, item_id=query.item_id, lease_seconds=self.lease_seconds)).renewed
            return dataclasses.replace(query, deadline_unix=renewed.deadline_unix)
        resp = self._call(self._stub.RenewLease, annotation_pb2.RenewLeaseRequest(
            lease_id=query.lease_id, item_id=query.item_id, annotator_id=self.annotator_id,
            lease_seconds=self.lease_seconds), CALL_TIMEOUT)
        return dataclasses.replace(query, deadline_unix=resp.deadline_unix)

    def correct(self, item_id: str, label: int, *, labeler: str = "") -> SubmitResult:
        """Change the label this annotator gave `item_id` (an undo): a new record in L supersedes the old one. With a
        `labeler` (as in `submit`), any label recorded in this annotator's namespace may be changed."""
        resp = self._call(self._stub.CorrectLabel, annotation_pb2.CorrectLabelRequest(
            item_id=item_id, label=int(label), annotator_id=self.annotator_id, labeler=labeler), CALL_TIMEOUT)
        return SubmitResult(resp.seq, resp.duplicate, resp.supersedes_seq)

    def get_item(self, item_id: str) -> Item:
        """An item by id, with its state and, once labeled, its current label and who gave it: when that is this
        annotator, or the token is an admin's (another annotator's label is not shown: `label` None)."""
        resp = self._call(self._stub.GetItem, annotation_pb2.GetItemRequest(
            item_id=item_id, annotator_id=self.annotator_id), CALL_TIMEOUT)
        labeled = resp.state == annotation_pb2.ITEM_STATE_LABELED and resp.HasField("current")
        return Item(resp.item_id, ITEM_STATES.get(resp.state, "unknown"),
                    serde.payload_from_proto(resp.payload) if resp.HasField("payload") else None,
                    serde.provenance_from_proto(resp.provenance) if resp.HasField("provenance") else None,
                    resp.current.label if labeled else None, resp.current.annotator_id, resp.current.seq)

"""The annotation client: what an annotation tool imports to lease queries and submit labels.

    from aal_rpc.client import AnnotationClient

    with AnnotationClient("coordinator:50051", annotator_id="alice") as client:
        task = client.task()                      # class names, input shape
        query = client.lease(wait_seconds=30)     # None if nothing arrived in time
        if query is not None:
            show(query.image_png)                 # a PNG for people; query.array() for programs
            client.submit(query, label=3)         # on disk when this returns

Every call has a deadline. Calls that fail with UNAVAILABLE (the coordinator restarting) are retried
with backoff for `retry_for` seconds. Submissions are idempotent per lease: a retried submission whose
first attempt was recorded is acknowledged once, with `duplicate=True`, and never counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import numpy as np

from aal_rpc import serde
from aal_rpc.client.retry import ChannelClient
from aal_rpc.security import ClientSecurity
from aal_rpc.proto.v1 import admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc
from aal_rpc.types import Payload, Provenance, Task

CALL_TIMEOUT = 10.0  # seconds for one call, long polls excepted
DEFAULT_RETRY_FOR = 60.0  # how long to keep retrying through an outage


@dataclass(frozen=True)
class LeasedQuery:
    item_id: str
    lease_id: str
    deadline_unix: float
    payload: Payload
    provenance: Provenance

    @property
    def image_png(self) -> bytes:
        return self.payload.image_png

    def array(self) -> np.ndarray:
        return self.payload.to_array()


@dataclass(frozen=True)
class SubmitResult:
    seq: int
    duplicate: bool


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
        Seconds to keep retrying a call through UNAVAILABLE.
    security:
        Bearer token and TLS settings (aal_rpc.security.ClientSecurity); None for a plain local channel.
    """

    def __init__(self, target: str, annotator_id: str, *, lease_seconds: float = 0.0,
                 retry_for: float = DEFAULT_RETRY_FOR, channel: grpc.Channel | None = None,
                 security: ClientSecurity | None = None):
        super().__init__(target, retry_for=retry_for, channel=channel, security=security)
        self.annotator_id = annotator_id
        self.lease_seconds = lease_seconds
        self._stub = annotation_pb2_grpc.AnnotationServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    def task(self) -> Task:
        return serde.task_from_proto(self._call(self._admin.GetTask, admin_pb2.GetTaskRequest(), CALL_TIMEOUT).task)

    def lease(self, wait_seconds: float = 0.0) -> LeasedQuery | None:
        """Lease the next query, waiting up to `wait_seconds` for one; None when none came."""
        resp = self._call(self._stub.LeaseQuery, annotation_pb2.LeaseQueryRequest(
            annotator_id=self.annotator_id, wait_seconds=wait_seconds, lease_seconds=self.lease_seconds),
            CALL_TIMEOUT + wait_seconds)
        if not resp.found:
            return None
        q = resp.query
        return LeasedQuery(q.item_id, q.lease_id, q.deadline_unix, serde.payload_from_proto(q.payload),
                           serde.provenance_from_proto(q.provenance))

    def submit(self, query: LeasedQuery, label: int) -> SubmitResult:
        """Submit a label; returns once the coordinator has it on disk."""
        resp = self._call(self._stub.SubmitLabel, annotation_pb2.SubmitLabelRequest(
            lease_id=query.lease_id, item_id=query.item_id, label=int(label), annotator_id=self.annotator_id),
            CALL_TIMEOUT)
        return SubmitResult(resp.seq, resp.duplicate)

    def release(self, query: LeasedQuery) -> None:
        """Give the query back to the pool for someone else."""
        self._release(query, annotation_pb2.RELEASE_REASON_RETURN)

    def skip(self, query: LeasedQuery) -> None:
        """Drop the query as unlabelable; it is never offered again."""
        self._release(query, annotation_pb2.RELEASE_REASON_SKIP)

    def _release(self, query: LeasedQuery, reason: int) -> None:
        self._call(self._stub.ReleaseQuery, annotation_pb2.ReleaseQueryRequest(
            lease_id=query.lease_id, item_id=query.item_id, annotator_id=self.annotator_id, reason=reason),
            CALL_TIMEOUT)

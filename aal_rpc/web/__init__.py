"""aal-web: a labeling page for people in a browser (`aal-web`, aal_rpc/cli/web.py).

sessions.py keeps the logins, open pages and their leases; app.py is the HTTP application; static/ holds the
page itself (HTML, script, style: everything it needs ships in the package, nothing comes from a CDN).
"""

from __future__ import annotations

import grpc

from aal_rpc import serde
from aal_rpc.client import AnnotationClient, LeasedQuery
from aal_rpc.grpc_utils import CHANNEL_OPTIONS, LONG_POLL_MARGIN_SECONDS, create_channel
from aal_rpc.proto.v1 import annotation_pb2, annotation_pb2_grpc
from aal_rpc.security import ClientSecurity, with_token
from aal_rpc.web.sessions import Connect


def coordinator_clients(target: str, security: ClientSecurity, *, lease_seconds: float,
                        retry_for: float) -> tuple[Connect, grpc.Channel]:
    """How aal-web reaches the coordinator for each login, and the channel all of them share.

    One channel (one connection, with `security`'s TLS settings) carries every annotator's calls; each login's
    client sends that annotator's own bearer token with its calls (the token typed in, else `security.token`),
    exactly as a client built with ClientSecurity(token=...) does, so the coordinator checks every person's
    token and role. Close the channel when done.
    """
    channel = create_channel(target, ClientSecurity(ca=security.ca, cert=security.cert, key=security.key))

    def connect(token: str | None, annotator_id: str) -> AnnotationClient:
        return AnnotationClient(target, annotator_id, lease_seconds=lease_seconds, retry_for=retry_for,
                                channel=with_token(channel, token or security.token))

    return connect, channel


class LongPolls:
    """The pages' long polls for a lease, on a grpc.aio channel of their own (one connection, `security`'s TLS):
    a poll that waits for a query holds no thread of aal-web, as the coordinator's own long polls hold none, so
    however many pages wait, every other request is served. Each call carries its annotator's token (else
    `security.token`). Made before the event loop runs; the channel opens on the loop at the first poll."""

    def __init__(self, target: str, security: ClientSecurity, *, lease_seconds: float):
        self._target = target
        self._security = security
        self._lease_seconds = lease_seconds
        self._channel: grpc.aio.Channel | None = None
        self._stub: annotation_pb2_grpc.AnnotationServiceStub | None = None

    async def __call__(self, token: str | None, annotator_id: str, wait_seconds: float) -> LeasedQuery | None:
        if self._stub is None:  # made with the channel
            credentials = self._security.channel_credentials()
            self._channel = (grpc.aio.secure_channel(self._target, credentials, options=CHANNEL_OPTIONS)
                             if credentials else grpc.aio.insecure_channel(self._target, options=CHANNEL_OPTIONS))
            self._stub = annotation_pb2_grpc.AnnotationServiceStub(self._channel)
        token = token or self._security.token
        request = annotation_pb2.LeaseQueryRequest(annotator_id=annotator_id, wait_seconds=wait_seconds,
                                                   lease_seconds=self._lease_seconds)
        try:
            # wait_for_ready: while the coordinator restarts, the poll waits for it instead of failing at once
            resp = await self._stub.LeaseQuery(
                request, timeout=wait_seconds + LONG_POLL_MARGIN_SECONDS, wait_for_ready=True,
                metadata=(("authorization", f"Bearer {token}"),) if token else None)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return None  # nothing came (the coordinator was away): the page polls again
            raise
        if not resp.found:
            return None
        q = resp.query
        return LeasedQuery(q.item_id, q.lease_id, q.deadline_unix, serde.payload_from_proto(q.payload),
                           serde.provenance_from_proto(q.provenance))

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

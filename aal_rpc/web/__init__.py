"""aal-web: a labeling page for people in a browser (`aal-web`, aal_rpc/cli/web.py).

sessions.py keeps the logins, open pages and their leases; app.py is the HTTP application; static/ holds the
page itself (HTML, script, style: everything it needs ships in the package, nothing comes from a CDN).
"""

from __future__ import annotations

import grpc

from aal_rpc.client import AnnotationClient
from aal_rpc.grpc_utils import create_channel
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

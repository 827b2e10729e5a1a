"""Role-scoped bearer tokens and TLS.

Four roles, each allowed only its own service: annotators the AnnotationService, workers the
SelectionService, servers the TrainingService, admins everything. GetTask is open to every role (all
processes must agree on the task); health checks and reflection need no token. A missing or unknown
token gets UNAUTHENTICATED, a known token outside its role PERMISSION_DENIED.

Tokens come from a file (or the AAL_TOKENS variable) of `role:token` entries, one per line or comma
separated. Clients send theirs as `authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

ROLES = ("annotator", "worker", "server", "admin")
TOKENS_ENV = "AAL_TOKENS"
SERVICE_ROLES = {
    "aal.v1.AnnotationService": frozenset({"annotator", "admin"}),
    "aal.v1.SelectionService": frozenset({"worker", "admin"}),
    "aal.v1.TrainingService": frozenset({"server", "admin"}),
    "aal.v1.AdminService": frozenset({"admin"}),
}
ANY_ROLE_METHODS = frozenset({"/aal.v1.AdminService/GetTask"})
PUBLIC_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def parse_tokens(text: str) -> dict[str, str]:
    """token -> role from `role:token` entries separated by newlines or commas; '#' starts a comment."""
    tokens: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        role, sep, token = entry.partition(":")
        role, token = role.strip(), token.strip()
        if not sep or role not in ROLES or not token:
            raise ValueError(f"bad token entry {entry.split(':')[0]!r}...: expected role:token with role in {ROLES}")
        tokens[token] = role
    return tokens


def load_tokens(path: Path | None) -> dict[str, str]:
    """Tokens from `path`, else from $AAL_TOKENS; empty means authentication is off."""
    if path is not None:
        return parse_tokens(Path(path).read_text())
    return parse_tokens(os.environ.get(TOKENS_ENV, ""))


def allowed_roles(method: str) -> frozenset[str] | None:
    """Roles that may call `method` (a full /package.Service/Method name); None if it needs no token."""
    if method.startswith(PUBLIC_PREFIXES):
        return None
    if method in ANY_ROLE_METHODS:
        return frozenset(ROLES)
    service = method.strip("/").split("/", 1)[0]
    return SERVICE_ROLES.get(service, frozenset({"admin"}))


def _denied(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts."""
    def abort(request_or_iterator, context):
        context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    def __init__(self, tokens: dict[str, str]):
        self._tokens = dict(tokens)

    def _role_of(self, presented: str) -> str | None:
        for token, role in self._tokens.items():  # constant-time comparison against every known token
            if hmac.compare_digest(token.encode(), presented.encode()):
                return role
        return None

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        roles = allowed_roles(handler_call_details.method)
        if roles is None:
            return handler
        auth = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        scheme, _, presented = auth.partition(" ")
        role = self._role_of(presented.strip()) if scheme.lower() == "bearer" and presented else None
        if role is None:
            return _denied(handler, grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        if role not in roles:
            return _denied(handler, grpc.StatusCode.PERMISSION_DENIED,
                           f"the {role} role may not call {handler_call_details.method}")
        return handler


@dataclass(frozen=True)
class ServerTLS:
    cert: Path
    key: Path
    client_ca: Path | None = None  # given: clients must present a certificate it signed (mutual TLS)

    def credentials(self) -> grpc.ServerCredentials:
        ca = Path(self.client_ca).read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([(Path(self.key).read_bytes(), Path(self.cert).read_bytes())],
                                           root_certificates=ca, require_client_auth=ca is not None)


@dataclass(frozen=True)
class ClientSecurity:
    """How a client reaches the coordinator: a bearer token, and TLS when a CA is given."""

    token: str | None = None
    ca: Path | None = None
    cert: Path | None = None  # with key: a client certificate, for mutual TLS
    key: Path | None = None

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        if self.ca is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca).read_bytes(),
            private_key=Path(self.key).read_bytes() if self.key else None,
            certificate_chain=Path(self.cert).read_bytes() if self.cert else None)


class _Metadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Adds fixed metadata (the bearer token) to every call."""

    def __init__(self, metadata: tuple[tuple[str, str], ...]):
        self._metadata = metadata

    def _details(self, d):
        return d._replace(metadata=tuple(d.metadata or ()) + self._metadata)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation, details, request_iterator):
        return continuation(self._details(details), request_iterator)


def with_token(channel: grpc.Channel, token: str | None) -> grpc.Channel:
    if not token:
        return channel
    return grpc.intercept_channel(channel, _Metadata((("authorization", f"Bearer {token}"),)))

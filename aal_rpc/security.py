"""Role-scoped bearer tokens, the caller's identity, and TLS.

Four roles, each allowed only its own service: annotators the AnnotationService, workers the
SelectionService, servers the TrainingService, admins everything; workers may also read L without payloads, and
servers list the registry and download its models (METHOD_ROLES). GetTask is open to every role (all processes must agree on the task), and so are reflection and health watches (calls that stay open: a caller
without a token holds nothing); health checks need no token. A missing or unknown
token gets UNAUTHENTICATED, a known token outside its role PERMISSION_DENIED. Clients send theirs as
`authorization: Bearer <token>`; inside a call, `current_caller()` names who made it.

The tokens file (or the AAL_TOKENS variable) holds one entry per line, in one of two forms:

    role:token               the token may hold any printable ASCII but whitespace (':', '#' and ','
                             included); everything after the first ':' is the token
    role identity token      three fields separated by whitespace, no ':' in the first two: calls
                             with this token act as `identity` (e.g. the annotator it was issued to)

An identity a token names belongs to the tokens that name it: a call with a token of another identity, or of none,
may not act as it (`acting_as`), so a shared `annotator:TOKEN` cannot label, renew, defer or correct as alice
when alice has a token of her own. Admin tokens without an identity may act as anyone.

A token may also be allowed to delegate: `annotator+delegate bridge TOKEN` (the three-field form: it must name an
identity). Such a token may name, in SubmitLabel and CorrectLabel, the person behind a label (`labeler`), and the
label is recorded as `bridge/<labeler>` (types.delegate_id): a tool that speaks for its own users, such as the Label
Studio bridge, keeps who labeled what, and can never act as an identity outside its own namespace. Admin tokens may
name a labeler too (they may act as anyone); any other token naming one gets PERMISSION_DENIED (`naming_labeler`).

A line whose first non-blank character is '#' is a comment; blank lines are skipped. A file that is
given must hold at least one token, and no token may appear twice.
"""

from __future__ import annotations

import contextlib
import contextvars
import hmac
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from aal_rpc.errors import PermissionDenied
from aal_rpc.handlers import Memo, around, replace_behavior
from aal_rpc.types import delegate_id

log = logging.getLogger(__name__)

ROLES = ("annotator", "worker", "server", "admin")
DELEGATE = "+delegate"  # a role's suffix in the tokens file: the token may name the labeler (annotator tokens only)
TOKENS_ENV = "AAL_TOKENS"
SERVICE_ROLES = {
    "aal.v1.AnnotationService": frozenset({"annotator", "admin"}),
    "aal.v1.SelectionService": frozenset({"worker", "admin"}),
    "aal.v1.TrainingService": frozenset({"server", "admin"}),
    "aal.v1.AdminService": frozenset({"admin"}),
}
ANY_ROLE_METHODS = frozenset({"/aal.v1.AdminService/GetTask"})
# Methods open to more roles than their service: workers read L's labels, without payloads (TrainingService's
# StreamLabels checks that), for adaptive re-labeling; servers list the registry and download its models, as
# workers download them (a round's stop-set agreement with the latest model, the published pretrained encoder).
METHOD_ROLES = {
    "/aal.v1.TrainingService/StreamLabels": frozenset({"server", "worker", "admin"}),
    "/aal.v1.AdminService/ListModels": frozenset({"server", "admin"}),
    "/aal.v1.SelectionService/DownloadModel": frozenset({"server", "worker", "admin"}),
}
# Calls that stay open (reflection streams, health watches) take a token of any role: a caller without one holds
# nothing once refused. Health Check answers at once and stays open to probes.
ANY_ROLE_PREFIXES = ("/grpc.reflection.", "/grpc.health.v1.Health/Watch")
PUBLIC_PREFIXES = ("/grpc.health.v1.Health/Check",)
TOKEN_CHARS = re.compile(r"[\x21-\x7e]+")  # printable ASCII but space: what a gRPC metadata value carries as sent
# Entries were once comma separated too; a token that looks like the rest of such a list is refused, not misread.
_COMMA_LIST = re.compile(rf",\s*(?:{'|'.join(ROLES)}):")


@dataclass(frozen=True)
class Principal:
    """Who a token speaks for: its role and, when its tokens-file entry names one, an identity."""

    role: str
    identity: str | None = None
    delegates: bool = False  # may name the labeler behind a label, recorded inside `identity`'s namespace


def parse_tokens(text: str, source: str = "tokens") -> dict[str, Principal]:
    """token -> Principal from the lines of a tokens file (format in the module docstring).

    A malformed line or a repeated token raises ValueError naming `source`, the line number and at most the
    line's role: never any part of a token.
    """
    tokens: dict[str, Principal] = {}
    first_seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        head = fields[0].partition(":")[0]
        where = f"{source} line {number}" + (f" ({head})" if head.removesuffix(DELEGATE) in ROLES else "")
        if len(fields) == 1 and ":" in fields[0]:
            role, _, token = fields[0].partition(":")
            identity = None
        elif len(fields) == 3 and ":" not in fields[0] + fields[1]:
            role, identity, token = fields
        else:
            raise ValueError(f"{where}: expected 'role:token' or 'role identity token' (no spaces in a token, "
                             f"no ':' in an identity)")
        delegates = role.endswith(DELEGATE)
        if delegates:
            role = role.removesuffix(DELEGATE)
            if role != "annotator" or identity is None:
                raise ValueError(f"{where}: only an annotator token that names an identity may delegate "
                                 f"('annotator{DELEGATE} IDENTITY TOKEN')")
        if role not in ROLES:
            raise ValueError(f"{where}: the role must be one of {', '.join(ROLES)}")
        if not token:
            raise ValueError(f"{where}: the token is empty")
        if not TOKEN_CHARS.fullmatch(token):
            raise ValueError(f"{where}: a token holds printable ASCII characters only")
        if _COMMA_LIST.search(token):
            raise ValueError(f"{where}: commas no longer separate entries; put one entry per line")
        if token in tokens:
            raise ValueError(f"{where}: the same token is already on line {first_seen[token]}")
        tokens[token] = Principal(role, identity, delegates)
        first_seen[token] = number
    return tokens


def load_tokens(path: Path | None) -> dict[str, Principal]:
    """Tokens from `path`, else from $AAL_TOKENS when it is set; {} (authentication off) when neither is given.

    A file or variable that is given but holds no token is refused (ValueError): an operator who meant to
    turn authentication on must not find it silently off.
    """
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_bytes().decode()
        except UnicodeDecodeError:  # its message would quote a byte of the file
            raise ValueError(f"{source} is not UTF-8 text") from None
    elif TOKENS_ENV in os.environ:
        text, source = os.environ[TOKENS_ENV], f"${TOKENS_ENV}"
    else:
        return {}
    tokens = parse_tokens(text, source)
    if not tokens:
        raise ValueError(f"{source} holds no token (only blank or comment lines): authentication would be off. "
                         f"Add 'role:token' lines, or give no tokens to run without authentication.")
    return tokens


_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("aal_caller", default=None)
# the identities the serving tokens name (of every role), for the call being served
_OWNED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("aal_owned", default=frozenset())


def current_caller() -> Principal | None:
    """The authenticated caller of the RPC being served: its role and, when its token names one, its identity.

    Call it from inside a servicer method (also inside its generator, or while iterating its request
    stream). None when the coordinator runs without tokens (anyone may claim any id then), and outside calls.
    """
    return _CALLER.get()


def acting_as(claimed: str) -> str:
    """Who the RPC being served acts as, `claimed` being the id its request names (may be empty).

    Without tokens, `claimed` (nothing to protect). A token that names an identity acts as it: `claimed` must be
    empty or that identity. A token without one acts as `claimed`, unless another token names that identity: it
    belongs to that token alone (admin tokens excepted). PermissionDenied otherwise.
    """
    caller = _CALLER.get()
    if caller is None:
        return claimed
    if caller.identity:
        if claimed and claimed != caller.identity:
            raise PermissionDenied(f"this token belongs to {caller.identity!r}, not {claimed!r}")
        return caller.identity
    if claimed in _OWNED.get() and caller.role != "admin":
        raise PermissionDenied(f"{claimed!r} has a token of its own: only that token may act as {claimed!r}")
    return claimed


def may_name_labeler() -> bool:
    """May the RPC being served name the labeler behind a label at all (naming_labeler)?"""
    caller = _CALLER.get()
    return caller is None or caller.role == "admin" or caller.delegates


def naming_labeler(acting: str, labeler: str) -> None:
    """May the RPC being served, acting as `acting` (acting_as), record its label as `labeler`'s, that is as
    delegate_id(acting, labeler)? Always when it names none, and without tokens; else only with a delegating token or
    an admin's, and not as an identity another token names. PermissionDenied otherwise."""
    caller = _CALLER.get()
    if not labeler or caller is None:
        return
    if not may_name_labeler():
        raise PermissionDenied(f"this token may not name a labeler ({labeler!r}): that needs a token allowed to "
                               f"delegate (a tokens-file line 'annotator{DELEGATE} IDENTITY TOKEN')")
    recorded = delegate_id(acting, labeler)
    if recorded in _OWNED.get() and caller.role != "admin":
        raise PermissionDenied(f"{recorded!r} has a token of its own: only that token may act as {recorded!r}")


def allowed_roles(method: str) -> frozenset[str] | None:
    """Roles that may call `method` (a full /package.Service/Method name); None if it needs no token."""
    if method.startswith(PUBLIC_PREFIXES):
        return None
    if method in ANY_ROLE_METHODS or method.startswith(ANY_ROLE_PREFIXES):
        return frozenset(ROLES)
    if method in METHOD_ROLES:
        return METHOD_ROLES[method]
    service = method.strip("/").split("/", 1)[0]
    return SERVICE_ROLES.get(service, frozenset({"admin"}))


def _denied(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only aborts: the refused call reads nothing and holds
    nothing once answered."""
    async def abort(request_or_iterator, context):
        await context.abort(code, message)

    return replace_behavior(handler._replace(request_deserializer=None), lambda _: abort)


def _as_caller(handler: grpc.RpcMethodHandler, caller: Principal, owned: frozenset[str]) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour run where current_caller() is `caller` and `owned` the identities the tokens
    name (each call is its own asyncio task, so the setting never leaks into another call)."""
    @contextlib.asynccontextmanager
    async def as_caller(request, context):
        token, owned_token = _CALLER.set(caller), _OWNED.set(owned)
        try:
            yield
        finally:
            # a stream's generator that grpcio left suspended (the client went away while a response waited to be
            # sent) is closed later by asyncio's finalizer, in a task of its own: nothing of this call to undo there
            with contextlib.suppress(ValueError):
                _OWNED.reset(owned_token)
                _CALLER.reset(token)

    return replace_behavior(handler, lambda behavior: around(behavior, as_caller))


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Admits a call only with a bearer token of a role allowed to make it; servicers find the caller with
    current_caller()."""

    def __init__(self, tokens: Mapping[str, Principal | str]):
        """`tokens`: token -> Principal (what load_tokens returns), or token -> role name (no identity)."""
        self._tokens = {t: p if isinstance(p, Principal) else Principal(p) for t, p in tokens.items()}
        self._owned = frozenset(p.identity for p in self._tokens.values() if p.identity)
        self._as_caller = Memo(_as_caller)
        self._denied = Memo(_denied)

    def _caller_of(self, presented: str) -> Principal | None:
        found = None
        for token, caller in self._tokens.items():  # constant-time comparison against every known token
            if hmac.compare_digest(token.encode(), presented.encode()):
                found = caller
        return found

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        roles = allowed_roles(handler_call_details.method)
        if roles is None:
            return handler
        auth = dict(handler_call_details.invocation_metadata or ()).get("authorization", "")
        scheme, _, presented = auth.partition(" ")
        caller = self._caller_of(presented.strip()) if scheme.lower() == "bearer" and presented else None
        if caller is None:
            return self._denied(handler, grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")
        if caller.role not in roles:
            return self._denied(handler, grpc.StatusCode.PERMISSION_DENIED,
                                f"the {caller.role} role may not call {handler_call_details.method}")
        return self._as_caller(handler, caller, self._owned)


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

    def __post_init__(self):
        if self.token and self.ca is None:
            log.warning("the bearer token will travel in the clear (no TLS): anyone on the network path can "
                        "read and replay it; give the coordinator's CA certificate (--tls-ca) to use TLS")

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
    """`channel` sending `token` as a bearer token with every call (unchanged without one)."""
    if not token:
        return channel
    return grpc.intercept_channel(channel, _Metadata((("authorization", f"Bearer {token}"),)))

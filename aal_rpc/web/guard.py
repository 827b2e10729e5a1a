"""Which hosts aal-web answers for, and whose pages may change anything: a defence against DNS rebinding (a foreign
page whose name was made to point at this server reads and drives it as its own) and against foreign pages posting
here. Every request must name an allowed host (Host); a request that may change something (any method but GET,
HEAD and OPTIONS) that says where it comes from (Origin, as browsers do) must come from a page of an allowed host.
(The body's limit, MAX_BODY_BYTES, is kept by the endpoints, which read up to it and no further.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from urllib.parse import urlsplit

log = logging.getLogger("aal.web")

MAX_BODY_BYTES = 16 * 1024  # a request body: every request is a few short fields; a token is the longest
HEAD_SECONDS = 15.0  # from a connection's opening (or its last answer) to a whole request head (connections.py)
BODY_SECONDS = 30.0  # from a request's head to the end of its body
MAX_PER_CLIENT = 512  # connections at once from one address: a team behind one NAT opens one or two a page
ANY = "*"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("0.0.0.0", "::", "")  # listen addresses of every interface
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SHOWN = 80  # characters of a refused host shown in the log


def hostname(value: str) -> str:
    """The host of a Host header or an address ('[::1]:8080' -> '::1', 'Example.org.' -> 'example.org')."""
    value = value.strip().lower()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


class AllowedHosts:
    """The host names (and addresses) people use to reach this aal-web; "*" for any."""

    def __init__(self, names: Iterable[str]):
        self.names = frozenset(hostname(n) if n != ANY else ANY for n in names if n.strip())
        if not self.names:
            raise ValueError("no host is allowed")

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        """From a comma separated list, as --allowed-hosts gives it."""
        return cls(text.split(","))

    @classmethod
    def for_listen(cls, host: str) -> AllowedHosts:
        """The default for a listen address: its own host and the loopback names. ValueError for a listen address of
        every interface, where only the operator knows the names people will use."""
        if hostname(host) in WILDCARDS:
            raise ValueError(f"listening on {host or 'every interface'}: name the hosts people use to reach this "
                             "page with --allowed-hosts (e.g. labels.example.org,10.0.0.5), or '*' for any host")
        return cls([host, *LOOPBACK_NAMES])

    @property
    def any(self) -> bool:
        return ANY in self.names

    def allows(self, host: str) -> bool:
        return self.any or hostname(host) in self.names

    def __str__(self) -> str:
        return ", ".join(sorted(self.names))


def _origin_host(origin: str) -> str:
    """The host of an Origin header; "" for "null" (a sandboxed or local page) or one that is no URL."""
    try:
        return urlsplit(origin).hostname or ""
    except ValueError:
        return ""


def _refuse(status: int, message: str):
    body = json.dumps({"error": message}).encode()
    return [{"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]},
            {"type": "http.response.body", "body": body}]


class HostGuard:
    """ASGI middleware: a request for a host not allowed gets 400; a state-changing request from a page of another
    host gets 403. One log line each."""

    def __init__(self, app, hosts: AllowedHosts):
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for key, value in scope["headers"]:
            headers.setdefault(key, value.decode("latin-1"))
        host = headers.get(b"host", "")
        refusal = None
        if not self.hosts.allows(host):
            refusal = 400, f"this server does not answer for host {hostname(host)[:MAX_SHOWN]!r}"
        elif scope["method"] not in SAFE_METHODS and b"origin" in headers:
            origin = headers[b"origin"]
            origin_host = _origin_host(origin)
            same = hostname(origin_host) == hostname(host) if self.hosts.any else self.hosts.allows(origin_host)
            if not origin_host or not same:
                refusal = 403, f"requests from pages of {origin[:MAX_SHOWN]!r} are refused"
        if refusal is None:
            return await self.app(scope, receive, send)
        client = scope.get("client") or ("?", 0)
        log.info("refused %s %s from %s: %s", scope["method"], scope["path"][:MAX_SHOWN], client[0], refusal[1])
        for message in _refuse(*refusal):
            await send(message)

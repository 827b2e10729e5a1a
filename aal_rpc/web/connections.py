"""Connections that hold a place without asking for anything (slowloris): uvicorn's HTTP/1.1 protocol (h11) waits
for a request's head as long as its bytes trickle in, and the places are few (cli/web.py MAX_CONNECTIONS: past them
every request is answered 503). So a connection whose request head has not arrived within HEAD_SECONDS of its
opening, or of its last answer, is closed; and one client address holds at most `per_client` connections at once
(not behind a proxy, whose address every connection would carry). A request's body has BODY_SECONDS to arrive once
its head has (app.read_body).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from uvicorn.protocols.http.h11_impl import H11Protocol

from aal_rpc.web.guard import HEAD_SECONDS

log = logging.getLogger("aal.web")


def guarded_protocol(per_client: int | None) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the head's deadline and, unless `per_client` is None, the cap per address. The
    count is the server's own (one class per call)."""
    open_by_client: Counter[str] = Counter()

    class Guarded(H11Protocol):
        _client_host: str | None = None
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            host = self.client[0] if self.client else None
            if per_client is not None and host is not None:
                if open_by_client[host] >= per_client:
                    transport.close()  # before anything is read: the place is given back at once
                    return
                open_by_client[host] += 1
                self._client_host = host
                if open_by_client[host] == per_client:
                    log.info("client %s holds %d connections, the most one address may: more are closed at once",
                             host, per_client)
            self._await_head()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            if self._client_host is not None:
                open_by_client[self._client_host] -= 1
                if open_by_client[self._client_host] <= 0:
                    del open_by_client[self._client_host]
                self._client_host = None
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            self._await_head()  # before uvicorn begins a pipelined request: that one is not waited for
            super().on_response_complete()

        def _await_head(self) -> None:
            """Close the connection unless a new request's head has come within HEAD_SECONDS (each head starts a new
            request cycle)."""
            if self._head_timer is not None:
                self._head_timer.cancel()
            waiting_since = self.cycle
            self._head_timer = self.loop.call_later(HEAD_SECONDS, self._head_late, waiting_since)

        def _head_late(self, waiting_since) -> None:
            if self.cycle is waiting_since and not self.transport.is_closing():
                self.transport.close()

    return Guarded

"""The team's progress as aal-web's pages show it: items in L, and items waiting in S (queued or leased), from the
coordinator's GetStats, read at most once per `refresh_seconds` for every page at once (pages ask with each label and
heartbeat).

GetStats is an admin call. Without tokens anyone may make it; with tokens aal-web needs an admin token for it
(`aal-web --stats-token`), used for nothing else. A refusal is logged once and the pages show no team progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import grpc

from aal_rpc.types import Stats

log = logging.getLogger("aal.web")

# one GetStats (under a millisecond) per this long serves every page; at 10 s a person's own count ran ahead of the
# team's by a dozen labels on screen
TEAM_REFRESH_SECONDS = 2.0
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def team_figures(stats: Stats) -> dict:
    """What a page shows of the coordinator's figures: labeled (L) and waiting (S: queued or leased)."""
    return {"labeled": stats.labeled, "waiting": stats.queued + stats.leased}


class TeamProgress:
    """`stats` reads the coordinator's Stats (a CoordinatorClient's `stats`). Calling the object gives the figures
    (team_figures), at most `refresh_seconds` old, or None while none could be read; one caller at a time reads,
    the others get the last figures meanwhile. `clock`: monotonic seconds; tests pass their own."""

    def __init__(self, stats: Callable[[], Stats], *, refresh_seconds: float = TEAM_REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._stats = stats
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._reading = False
        self._next = float("-inf")
        self._last: dict | None = None
        self.refused = False  # the coordinator refused aal-web's token for GetStats: not asked again

    def __call__(self) -> dict | None:
        with self._lock:
            if self.refused or self._reading or self._clock() < self._next:
                return self._last
            self._reading = True
        figures, refused = self._last, False
        try:
            figures = team_figures(self._stats())
        except grpc.RpcError as exc:
            refused = exc.code() in REFUSED
            if refused:
                log.warning("the coordinator refused aal-web's GetStats (%s): pages show no team progress; give "
                            "aal-web an admin token for it with --stats-token", exc.code().name)
            else:
                log.info("could not read the team's progress: %s", exc.code().name)
        finally:
            with self._lock:
                self._reading = False
                self._next = self._clock() + self._refresh
                self._last = figures
                self.refused = refused
        return figures

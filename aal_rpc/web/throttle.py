"""Failed logins, throttled per client: a token bucket per remote address, so that guessing tokens through aal-web
goes no faster than a few tries a minute, while a person who mistypes once or twice never notices."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class Throttled(Exception):
    """Too many failed logins from this client; `retry_after`: seconds until it may try again."""

    def __init__(self, retry_after: float):
        super().__init__(f"too many failed logins from here; try again in {max(1, round(retry_after))} s")
        self.retry_after = retry_after


class LoginThrottle:
    """Each client (remote address) has `burst` tries at a login that fails; each failure takes one, and one
    comes back every `refill_seconds`. A client with none left is refused before the coordinator is asked.

    At most `max_clients` clients are remembered (memory stays bounded whatever addresses send): past that,
    the one whose last failure is oldest is forgotten, and starts again with a full bucket.
    """

    burst = 5  # failed logins in a row before the throttle starts
    refill_seconds = 6.0  # then one more try every this many seconds: ten a minute

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000):
        self._clock = clock
        self._max_clients = max_clients
        self._lock = threading.Lock()
        self._tries: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tries left, when)

    def __len__(self) -> int:
        return len(self._tries)

    def _left(self, client: str, now: float) -> float:
        tries, when = self._tries.get(client, (self.burst, now))
        return min(self.burst, tries + (now - when) / self.refill_seconds)

    def check(self, client: str) -> None:
        """Raise Throttled when `client` has no try left."""
        with self._lock:
            now = self._clock()
            left = self._left(client, now)
        if left < 1:
            raise Throttled((1 - left) * self.refill_seconds)

    def failed(self, client: str) -> None:
        """A login from `client` was refused (a wrong token, or one that may not label)."""
        with self._lock:
            now = self._clock()
            self._tries[client] = (self._left(client, now) - 1, now)
            self._tries.move_to_end(client)
            while len(self._tries) > self._max_clients:
                self._tries.popitem(last=False)

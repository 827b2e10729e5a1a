"""Change signals: how a long poll learns that S, L or the registry changed.

Each coordinator owns one `Signals` and fires the kind that changed after the change is visible (committed, for
a database). A waiter reads `generation()` *before* it looks, then waits for the generation to move on, so a
change made between its look and its wait still wakes it. Only coroutines wait (the gRPC servicers,
coordinator/servicers.py, lease_queue.py, following.py): each awaits a future that `fire` resolves from whichever
thread fired, so a waiting call holds no thread.

`poll_seconds` bounds how long a waiter sleeps without a signal: a safety net for changes that send none (a
lease that expires silently in the shared database, a notification lost on a reconnect). None turns the net
off, so tests can show that the signals alone wake every waiter.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
KINDS = ("queries", "labels", "models")  # S gained an available item / L's durable seq advanced / a new version


class Signal:
    def __init__(self, poll_seconds: float | None = None):
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._generation = 0
        self._futures: set[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = set()

    def fire(self) -> None:
        with self._lock:
            self._generation += 1
            waiting, self._futures = self._futures, set()
        for loop, fut in waiting:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop has closed: its waiter is gone
                pass

    def generation(self) -> int:
        with self._lock:
            return self._generation

    def _timeout(self, timeout: float) -> float:
        timeout = max(0.0, timeout)
        return timeout if self.poll_seconds is None else min(timeout, self.poll_seconds)

    async def wait_async(self, since: int, timeout: float) -> bool:
        """Wait until the generation differs from `since` (True) or the timeout passes (False), holding no thread."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        entry = (loop, fut)
        with self._lock:
            if self._generation != since:
                return True
            self._futures.add(entry)
        try:
            await asyncio.wait_for(fut, self._timeout(timeout))
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._futures.discard(entry)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Signals:
    """One `Signal` per kind of change (KINDS)."""

    def __init__(self, poll_seconds: float | None = None):
        self.queries = Signal(poll_seconds)
        self.labels = Signal(poll_seconds)
        self.models = Signal(poll_seconds)

    def __getitem__(self, kind: str) -> Signal:
        if kind not in KINDS:
            raise KeyError(kind)
        return getattr(self, kind)

    def fire(self, kind: str) -> None:
        self[kind].fire()

    def fire_all(self) -> None:
        for kind in KINDS:
            self[kind].fire()


async def long_poll_async(signal: Signal, attempt: Callable[[], Awaitable[T | None]], wait_seconds: float,
                          keep_going: Callable[[], bool] = lambda: True) -> T | None:
    """What `await attempt()` returns once it is not None (it runs the store's work off the event loop), looking
    again at each signal, for up to `wait_seconds`; None when the time is up or `keep_going()` turns false."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, wait_seconds)
    while True:
        since = signal.generation()
        got = await attempt()
        remaining = deadline - loop.time()
        if got is not None or remaining <= 0 or not keep_going():
            return got
        await signal.wait_async(since, remaining)

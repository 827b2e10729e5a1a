"""Change signals: how a long poll learns that S, L or the registry changed, in a thread or in asyncio.

Each coordinator owns one `Signals` and fires the kind that changed after the change is visible (committed, for
a database). A waiter reads `generation()` *before* it looks, then waits for the generation to move on, so a
change made between its look and its wait still wakes it. Threads wait on a condition; coroutines (the gRPC
servicers, coordinator/servicers.py) await a future that `fire` resolves from whichever thread fired, so a
waiting call holds no thread.

`poll_seconds` bounds how long a waiter sleeps without a signal: a safety net for changes that send none (a
lease that expires silently in the shared database, a notification lost on a reconnect). None turns the net
off, so tests can show that the signals alone wake every waiter.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
KINDS = ("queries", "labels", "models")  # S gained an available item / L's durable seq advanced / a new version


class Signal:
    def __init__(self, poll_seconds: float | None = None):
        self.poll_seconds = poll_seconds
        self._cv = threading.Condition()
        self._generation = 0
        self._futures: set[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = set()

    def fire(self) -> None:
        with self._cv:
            self._generation += 1
            self._cv.notify_all()
            waiting, self._futures = self._futures, set()
        for loop, fut in waiting:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop has closed: its waiter is gone
                pass

    def generation(self) -> int:
        with self._cv:
            return self._generation

    def _timeout(self, timeout: float) -> float:
        timeout = max(0.0, timeout)
        return timeout if self.poll_seconds is None else min(timeout, self.poll_seconds)

    def wait(self, since: int, timeout: float) -> bool:
        """Block until the generation differs from `since` (True) or the timeout passes (False)."""
        with self._cv:
            return self._cv.wait_for(lambda: self._generation != since, timeout=self._timeout(timeout))

    async def wait_async(self, since: int, timeout: float) -> bool:
        """`wait` for a coroutine: holds no thread while it waits."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        entry = (loop, fut)
        with self._cv:
            if self._generation != since:
                return True
            self._futures.add(entry)
        try:
            await asyncio.wait_for(fut, self._timeout(timeout))
            return True
        except TimeoutError:
            return False
        finally:
            with self._cv:
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


def long_poll(signal: Signal, attempt: Callable[[], T | None], wait_seconds: float,
              keep_going: Callable[[], bool] = lambda: True) -> T | None:
    """What `attempt()` returns once it is not None, looking again at each signal, for up to `wait_seconds`;
    None when the time is up or `keep_going()` turns false."""
    deadline = time.monotonic() + max(0.0, wait_seconds)
    while True:
        since = signal.generation()
        got = attempt()
        remaining = deadline - time.monotonic()
        if got is not None or remaining <= 0 or not keep_going():
            return got
        signal.wait(since, remaining)


async def long_poll_async(signal: Signal, attempt: Callable[[], Awaitable[T | None]], wait_seconds: float,
                          keep_going: Callable[[], bool] = lambda: True) -> T | None:
    """`long_poll` for a coroutine: `attempt` is awaited (it runs the store's work off the event loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, wait_seconds)
    while True:
        since = signal.generation()
        got = await attempt()
        remaining = deadline - loop.time()
        if got is not None or remaining <= 0 or not keep_going():
            return got
        await signal.wait_async(since, remaining)

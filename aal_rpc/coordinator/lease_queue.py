"""LeaseQuery's long polls, answered in arrival order: the one place where an annotator waits for a query.

The coordinator never waits (its `lease` looks once); this queue waits on its "queries" signal for it, in
asyncio, so a waiting poll holds a coroutine and no thread.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import Awaitable, Callable
from concurrent.futures import Future

from aal_rpc.coordinator.signals import Signal
from aal_rpc.types import Query

DISPATCH_MISSES = 4  # lease tries that find nothing before a pass over the waiting long polls ends
RECHECK_SECONDS = 30.0  # a dispatcher with polls waiting and no signal looks again this often


@dataclasses.dataclass(eq=False)
class _Waiter:
    annotator: str
    lease_seconds: float
    answer: asyncio.Future


class LeaseQueue:
    """Long polls for a query, answered in arrival order.

    When S changes (or the signals' safety net wakes it), one dispatcher makes a pass over the waiters, oldest
    first, without reordering them: each try that finds an item answers that waiter. A try that finds nothing
    moves on to the next waiter (an item the older waiter deferred still goes to a younger one), and a pass ends
    after DISPATCH_MISSES such tries, so an empty S costs a few lease attempts per change, not one per waiting
    call. The dispatcher runs while anyone waits.

    `try_lease(annotator, lease_seconds)` looks once (the coordinator's `lease`); `give_back(annotator, query)`
    returns a query taken for a poll that is gone to S, on a thread (its future is awaited only by the
    dispatcher); `closing()` says the coordinator is closing, when every poll answers "nothing".
    """

    def __init__(self, signal: Signal, *, try_lease: Callable[[str, float], Awaitable[Query | None]],
                 give_back: Callable[[str, Query], Future], closing: Callable[[], bool]):
        self._signal = signal
        self._try_lease = try_lease
        self._give_back = give_back
        self._closing = closing
        self._waiting: collections.deque[_Waiter] = collections.deque()
        self._dispatcher: asyncio.Task | None = None

    def busy(self) -> bool:
        """Whether polls are waiting (a newcomer then queues behind them without trying first)."""
        return bool(self._waiting)

    async def wait(self, annotator: str, lease_seconds: float, wait_seconds: float, *,
                   look_now: bool = False) -> Query | None:
        """Queue a poll and wait for its answer; `look_now`: it has not tried S yet, so the dispatcher makes a pass
        at once (oldest first: an item S holds goes to whoever came first and can take it)."""
        waiter = _Waiter(annotator, lease_seconds, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch())
        elif look_now:
            self._signal.fire()
        delivered = False
        try:
            try:
                q = await asyncio.wait_for(waiter.answer, wait_seconds)
            except TimeoutError:
                return None
            if q is not None and caller_left():
                # the answer came as the caller left; asyncio.wait_for returns it rather than raise (< 3.12)
                raise asyncio.CancelledError
            delivered = True
            return q
        finally:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            answer = waiter.answer
            if not delivered and answer.done() and not answer.cancelled() and answer.exception() is None \
                    and answer.result() is not None:
                # taken for a poll that timed out or left at that moment: straight back to S
                self._give_back(annotator, answer.result())

    async def _dispatch(self) -> None:
        signal = self._signal
        while self._waiting and not self._closing():
            since = signal.generation()
            misses = 0
            for waiter in list(self._waiting):  # oldest first; a waiter that left meanwhile is skipped
                if misses >= DISPATCH_MISSES:
                    break
                if waiter.answer.done():
                    continue
                try:
                    q = await self._try_lease(waiter.annotator, waiter.lease_seconds)
                except Exception as exc:  # noqa: BLE001 - the store failed (UNAVAILABLE, say): that poll answers it
                    if waiter in self._waiting:
                        self._waiting.remove(waiter)
                    if not waiter.answer.done():
                        waiter.answer.set_exception(exc)
                    continue
                if waiter.answer.done():  # it timed out or left while its try ran: whatever it took goes back
                    if q is not None:
                        await asyncio.wrap_future(self._give_back(waiter.annotator, q))
                    continue
                if q is None:
                    misses += 1
                    continue
                self._waiting.remove(waiter)
                waiter.answer.set_result(q)
            await signal.wait_async(since, RECHECK_SECONDS)
        for waiter in self._waiting:  # closing: every poll answers "nothing"
            if not waiter.answer.done():
                waiter.answer.set_result(None)


def caller_left() -> bool:
    """Whether the current call's task has been asked to stop (its caller left) though no CancelledError came."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python >= 3.11
    return bool(cancelling and cancelling())

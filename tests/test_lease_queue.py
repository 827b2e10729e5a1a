"""The long-poll queue of LeaseQuery (coordinator/lease_queue.py) alone, without a network or a store: a fake S hands
out items, a signal with no safety net says when S changed, and each scenario runs to its end in asyncio."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

import pytest

from aal_rpc.coordinator.lease_queue import DISPATCH_MISSES, LeaseQueue
from aal_rpc.coordinator.signals import Signal
from aal_rpc.errors import Unavailable
from aal_rpc.types import Query


class FakeS:
    """Items anyone may lease, except that an annotator never gets an item it deferred; every try is recorded."""

    def __init__(self):
        self.items: list[str] = []
        self.deferred: dict[str, set[str]] = {}
        self.tries: list[str] = []
        self.given_back: list[tuple[str, str]] = []
        self.tried = asyncio.Event()
        self.failing: set[str] = set()
        self.gate: asyncio.Event | None = None  # while set to an unset event, tries wait for it
        self.closing = False

    async def try_lease(self, annotator: str, lease_seconds: float) -> Query | None:
        self.tries.append(annotator)
        self.tried.set()
        if self.gate is not None:
            await self.gate.wait()
        if annotator in self.failing:
            raise Unavailable("the store is down")
        for item in self.items:
            if item not in self.deferred.get(annotator, set()):
                self.items.remove(item)
                return Query(item, f"lease-{item}", annotator, 0.0, None, None)
        return None

    def give_back(self, annotator: str, q: Query) -> Future:
        self.given_back.append((annotator, q.item_id))
        self.items.append(q.item_id)
        done: Future = Future()
        done.set_result(None)
        return done

    def queue(self, signal: Signal) -> LeaseQueue:
        return LeaseQueue(signal, try_lease=self.try_lease, give_back=self.give_back, closing=lambda: self.closing)


async def _until(predicate) -> None:
    while not predicate():
        await asyncio.sleep(0)


def _run(scenario):
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def _polls(queue: LeaseQueue, *annotators: str, wait: float = 60):
    return [asyncio.ensure_future(queue.wait(a, 0.0, wait)) for a in annotators]


def test_waiting_polls_are_answered_in_arrival_order():
    async def scenario():
        s, signal = FakeS(), Signal()
        queue = s.queue(signal)
        polls = _polls(queue, "a", "b", "c")
        await _until(lambda: len(s.tries) == 3)  # the first pass: nothing for anyone
        for item in ("1", "2", "3"):
            s.items.append(item)
            signal.fire()
        return [(await p).annotator_id for p in polls], [(await p).item_id for p in polls]

    assert _run(scenario) == (["a", "b", "c"], ["1", "2", "3"])


def test_an_item_the_oldest_poll_deferred_goes_to_a_younger_one():
    async def scenario():
        s, signal = FakeS(), Signal()
        s.deferred["a"] = {"1"}
        queue = s.queue(signal)
        a, b = _polls(queue, "a", "b")
        await _until(lambda: len(s.tries) == 2)
        s.items.append("1")
        signal.fire()
        got = await b
        return got.item_id, a.done(), queue.busy()

    assert _run(scenario) == ("1", False, True)  # "a" still waits, for an item it may take


def test_a_pass_ends_after_a_few_tries_that_find_nothing():
    """An empty S costs DISPATCH_MISSES tries per change, not one per waiting poll: the youngest are not tried."""
    async def scenario():
        s, signal = FakeS(), Signal()
        queue = s.queue(signal)
        names = [f"p{i}" for i in range(DISPATCH_MISSES + 3)]
        _polls(queue, *names)
        await _until(lambda: len(s.tries) == DISPATCH_MISSES)
        signal.fire()
        await _until(lambda: len(s.tries) == 2 * DISPATCH_MISSES)
        s.closing = True
        signal.fire()
        await _until(lambda: not queue.busy())
        return s.tries, names

    tries, names = _run(scenario)
    assert tries == names[:DISPATCH_MISSES] * 2


def test_a_newcomer_that_queues_behind_others_makes_the_dispatcher_look_at_once():
    async def scenario():
        s, signal = FakeS(), Signal()
        queue = s.queue(signal)
        (old,) = _polls(queue, "old")
        await _until(lambda: len(s.tries) == 1)
        s.items.append("1")  # S changed without a signal (as it does for a newcomer that has not looked yet)
        new = asyncio.ensure_future(queue.wait("new", 0.0, 60, look_now=True))
        return (await old).item_id, new

    assert _run(scenario)[0] == "1"  # the oldest poll gets it, the newcomer's look woke the dispatcher


def test_a_failing_try_answers_its_own_poll_and_the_others_go_on():
    async def scenario():
        s, signal = FakeS(), Signal()
        s.failing.add("a")
        s.items.append("1")
        queue = s.queue(signal)
        a, b = _polls(queue, "a", "b")
        with pytest.raises(Unavailable):
            await a
        return (await b).item_id

    assert _run(scenario) == "1"


def test_what_was_taken_for_a_poll_that_left_goes_straight_back():
    async def scenario():
        s, signal = FakeS(), Signal()
        s.gate = asyncio.Event()
        queue = s.queue(signal)
        (gone,) = _polls(queue, "gone")
        await s.tried.wait()  # its try is under way...
        gone.cancel()  # ...when its caller leaves
        s.items.append("1")
        s.gate.set()
        with pytest.raises(asyncio.CancelledError):
            await gone
        await _until(lambda: s.given_back)
        return s.given_back, s.items, queue.busy()

    assert _run(scenario) == ([("gone", "1")], ["1"], False)


def test_a_poll_that_times_out_answers_nothing_and_leaves_the_queue():
    async def scenario():
        s, signal = FakeS(), Signal()
        queue = s.queue(signal)
        got = await queue.wait("a", 0.0, 0.0)
        return got, queue.busy(), s.given_back

    assert _run(scenario) == (None, False, [])


def test_closing_answers_every_waiting_poll_with_nothing():
    async def scenario():
        s, signal = FakeS(), Signal()
        queue = s.queue(signal)
        polls = _polls(queue, "a", "b")
        await _until(lambda: len(s.tries) == 2)
        s.closing = True
        signal.fire()
        return [await p for p in polls]

    assert _run(scenario) == [None, None]

"""Following L (StreamLabels, ExportLabels), written once for both coordinators: pages of durable records as
decoded records (the servicers turn them into messages), then, to follow, a wait on the "labels" signal in
asyncio, which holds no thread."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from aal_rpc.coordinator.signals import Signal
from aal_rpc.types import LabeledRecord

STREAM_PAGE = 256  # records of L read from the store per step of a StreamLabels / ExportLabels call
FOLLOW_RECHECK_SECONDS = 30.0  # a follow stream with nothing new looks again this often (signals wake it sooner)


async def follow_records(read: Callable[[int, int], Awaitable[list[LabeledRecord]]], signal: Signal, after_seq: int,
                         *, follow: bool, keep_going: Callable[[], bool]) -> AsyncIterator[LabeledRecord]:
    """Records of L after `after_seq` in seq order, a page per `read(after_seq, limit)` (a coordinator's
    `read_labels`, off the event loop); with `follow`, then waits on `signal` (its "labels") for more while
    `keep_going()`."""
    cursor = after_seq
    while True:
        since = signal.generation()  # before the read: a label made durable meanwhile still wakes the wait
        page = await read(cursor, STREAM_PAGE)
        for record in page:
            yield record
        if page:
            cursor = page[-1].seq
        if len(page) == STREAM_PAGE:
            continue
        if not follow or not keep_going():
            return
        await signal.wait_async(since, FOLLOW_RECHECK_SECONDS)

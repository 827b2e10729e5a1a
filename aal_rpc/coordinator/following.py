"""Following L (StreamLabels, ExportLabels, a trainer's follower), written once for both coordinators: pages of
durable records, then a wait on the "labels" signal."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from aal_rpc.coordinator.signals import Signal
from aal_rpc.errors import InvalidArgument
from aal_rpc.types import LabeledRecord

STREAM_PAGE = 256  # labels read from the store per page of a StreamLabels / ExportLabels call
FOLLOW_RECHECK_SECONDS = 1.0  # how often a follower with nothing new asks whether its caller is still there


def follow_records(c, after_seq: int, *, follow: bool, include_payload: bool, latest_only: bool,
                   keep_going: Callable[[], bool]) -> Iterator[LabeledRecord]:
    """Records of L after `after_seq` from coordinator `c`'s `read_labels`, page by page; with `follow`, then
    waits for its "labels" signal and goes on while `keep_going()`. Both coordinators follow L this way."""
    if after_seq < 0:
        raise InvalidArgument("after_seq must be non-negative")
    signal: Signal = c.signals.labels
    cursor = after_seq
    while True:
        since = signal.generation()  # before the read: a label made durable meanwhile still wakes the wait
        page = c.read_labels(cursor, STREAM_PAGE, include_payload=include_payload, latest_only=latest_only)
        yield from page
        if page:
            cursor = page[-1].seq
        if len(page) == STREAM_PAGE:
            continue
        if not follow:
            return
        while True:  # the store is read again only on a signal (or the safety net), the caller checked more often
            if not keep_going():
                return
            if signal.wait(since, FOLLOW_RECHECK_SECONDS) or signal.poll_seconds is not None:
                break

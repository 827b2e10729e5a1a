"""What each annotator did (types.AnnotatorCounts), for `stats`: the embedded coordinator keeps an AnnotatorTally in
memory, rebuilt from its store at start (labels and skips are durable; deferrals live in memory, so their count
starts anew); the shared store counts in SQL (postgres_store.PostgresStore.counts) and merges with `merge`."""

from __future__ import annotations

from collections import Counter

from aal_rpc.types import AnnotatorCounts

DEFERS_COUNTER = "defers:"  # the shared store's counters: "defers:" + annotator id, one row per annotator


def merge(labels: dict[str, int], skips: dict[str, int], defers: dict[str, int]) -> dict[str, AnnotatorCounts]:
    """Per-annotator counts from three maps of annotator id -> count, sorted by id."""
    names = sorted(set(labels) | set(skips) | set(defers))
    return {a: AnnotatorCounts(labels.get(a, 0), skips.get(a, 0), defers.get(a, 0)) for a in names}


class AnnotatorTally:
    """Labels, skips and deferrals by annotator; the caller serializes its calls (the coordinator's lock)."""

    def __init__(self, labels: dict[str, int] | None = None, skips: dict[str, int] | None = None):
        self._labels: Counter[str] = Counter(labels or {})
        self._skips: Counter[str] = Counter(skips or {})
        self._defers: Counter[str] = Counter()

    def labeled(self, annotator_id: str, n: int = 1) -> None:
        self._labels[annotator_id] += n

    def skipped(self, annotator_id: str) -> None:
        self._skips[annotator_id] += 1

    def deferred(self, annotator_id: str) -> None:
        self._defers[annotator_id] += 1

    def snapshot(self) -> dict[str, AnnotatorCounts]:
        return merge(self._labels, self._skips, self._defers)

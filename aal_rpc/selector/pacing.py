"""How many candidates a worker submits per model: what annotators will label from its shard before its next
model, not all the room S has.

Each candidate of a newer model evicts an older one from a full S, and annotators are served the newest model's
candidates first. A worker that fills S's room at each version therefore submits capacity/k candidates a
version while annotators label the few they reach before the next one; the rest are evicted unused. So a worker
sizes a model's batch by the labels it expects before its next model: the label rate (L's sequence numbers over
time) x the time between versions (the registry's publication times), its 1/k share of that, and a margin.

A worker tops its candidates up once half of that batch is gone, and a top-up takes time to reach S: the wait
until the worker looks again, scoring, the submission. So the batch also covers twice the labels annotators take
meanwhile (the refill's lead time): the half left when it starts lasts until it lands. Without it, fast annotators
empty S between top-ups while models come every second or two.
"""

from __future__ import annotations

import math

from aal_rpc.measures import MIN_RATE_SPAN, RATE_WINDOW, LabelRate  # noqa: F401 - the window is part of this rule
from aal_rpc.types import ModelInfo

MARGIN = 1.5  # a batch covers 1.5 version intervals: the next model's round, download and scoring may run late
INTERVAL_WEIGHT = 0.5  # weight of the newest version interval in its moving average (rounds lengthen as L grows)
REFILL_WEIGHT = 0.5  # weight of the newest top-up's lead time in its moving average


def moving_average(average: float | None, value: float, weight: float) -> float:
    """An exponential moving average given its newest value at `weight`: the value itself while there is none."""
    return value if average is None else weight * value + (1 - weight) * average


class Pacing:
    """The label rate and the time between model versions, as a worker observes them, and the batch they imply.

    Parameters
    ----------
    num_shards:
        k: annotators' labels are shared among the k workers' shards.
    margin:
        The batch covers this many version intervals of labels.
    """

    def __init__(self, *, num_shards: int, margin: float = MARGIN):
        self.num_shards = num_shards
        self.margin = margin
        self._labels = LabelRate()  # from L's last sequence number over time
        self._last_version: tuple[int, float] | None = None  # (version, created_at) of the newest version seen
        self.interval: float | None = None  # seconds between versions (moving average)
        self.refill: float | None = None  # seconds a top-up takes to reach S (moving average; None until one is seen)

    def observe_labels(self, seq: int, now: float) -> None:
        """L's last sequence number is `seq` at `now` (monotonic seconds)."""
        self._labels.observe(seq, now)

    @property
    def rate(self) -> float | None:
        """Labels per second over the last RATE_WINDOW seconds; None until MIN_RATE_SPAN seconds are observed."""
        return self._labels.rate

    def observe_version(self, info: ModelInfo) -> None:
        """A version the registry published. The first one's round time stands in for the interval until a
        second one is seen; versions a worker skipped count in the interval (it is per version published)."""
        if self._last_version is None:
            self.interval = info.metrics.get("train_seconds")
        else:
            version, created_at = self._last_version
            if info.version <= version or info.created_at <= created_at:
                return
            gap = (info.created_at - created_at) / (info.version - version)
            self.interval = moving_average(self.interval, gap, INTERVAL_WEIGHT)
        self._last_version = (info.version, info.created_at)

    def observe_refill(self, seconds: float) -> None:
        """A top-up reached S `seconds` after the worker decided on it (and after its wait to look again)."""
        self.refill = moving_average(self.refill, seconds, REFILL_WEIGHT)

    def batch(self) -> int | None:
        """Candidates this worker should hold in S from its current model: its share of the labels expected before
        the next model, times the margin, and of those annotators label while two top-ups are made; at least 1.
        None while the rate or the interval is unknown."""
        rate = self.rate
        if rate is None or self.interval is None:
            return None
        refill = self.refill or 0.0
        return max(1, math.ceil((self.margin * self.interval + 2 * refill) * rate / self.num_shards))

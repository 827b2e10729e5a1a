"""What the experiments, the coordinator's metrics, the trainers and `aal-admin` measure, as pure functions of the
system's own records: below all of them, so the core depends on no runner.

Accuracy-vs-labels curves (one point per published model), labels per model, the cold-start share (random or
typical picks), the 95% t-interval that every figure of docs/RESULTS.md carries, and the audit's accuracy estimate
(a Wilson interval).
Only numpy: `aal-admin` imports this module.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Collection

import numpy as np

from aal_rpc.types import AUDIT_STRATEGY  # noqa: F401 - re-exported for the runners
from aal_rpc.types import TYPICAL_STRATEGY

CONFIDENCE = 0.95  # the intervals in docs/RESULTS.md: mean ± half-width of the two-sided 95% t-interval


def accuracy_at(curve: list[dict], labels: int) -> float:
    """Accuracy of the best-informed model published with at most `labels` labels (0 before any)."""
    known = [p for p in curve if p["labels"] <= labels and p["accuracy"] is not None]
    if not known:
        return 0.0
    best = max(known, key=lambda p: (p["labels"], p["seconds"]))
    return float(best["accuracy"])


def curve_average(curve: list[dict], budget: int, points: int = 10) -> float:
    """Mean accuracy over the curve at `points` evenly spaced label counts (Table 1's "average performance")."""
    return float(np.mean([accuracy_at(curve, round(budget * i / points)) for i in range(1, points + 1)]))


def labels_to_reach(curve: list[dict], target: float) -> int | None:
    """The fewest labels a published model was trained on and reached `target` accuracy with; None: never."""
    hits = [p["labels"] for p in curve if p["accuracy"] is not None and p["accuracy"] >= target]
    return min(hits) if hits else None


def labels_per_model(labeled: int, models: int) -> float | None:
    """Labels acknowledged per model version published: in sync mode the batch; in async mode how many labels
    each model chose before the next replaced it (its staleness, in labels). None while no model exists."""
    return labeled / models if models > 0 else None


def cold_start_share(model_versions: list[int], encoder_versions: Collection[int] = ()) -> float | None:
    """The share of labels whose query was chosen before any model trained on labels existed: at random (provenance
    model_version 0), or under a pretrained encoder (one of `encoder_versions`, types.is_encoder), whose typical
    items stand in for random ones (`typical_share`); None for no labels."""
    if not len(model_versions):
        return None
    cold = np.isin(np.asarray(model_versions), [0, *encoder_versions])
    return float(np.mean(cold))


def typical_pick(strategy: str, model_version: int, encoder_versions: Collection[int]) -> bool:
    """A query picked as a typical item of an encoder's embedding (TypiClust, the selectors' cold start): of the
    task's network at initial weights before any model (version 0), or of a pretrained encoder; a cold-start pick,
    not a random one, and not one a model trained on labels chose."""
    return strategy == TYPICAL_STRATEGY and (model_version == 0 or model_version in encoder_versions)


def typical_share(provenances: list[tuple[str, int]], encoder_versions: Collection[int]) -> float | None:
    """The share of labels whose query was a typical pick (`typical_pick`), of (strategy, model_version) pairs:
    part of `cold_start_share`; None for no labels."""
    if not provenances:
        return None
    return sum(typical_pick(s, v, encoder_versions) for s, v in provenances) / len(provenances)


@functools.lru_cache(maxsize=None)
def t_quantile(p: float, df: int) -> float:
    """The `p` quantile (p > 0.5) of Student's t with `df` degrees of freedom: bisection on its CDF, integrated
    numerically from the density (no scipy needed where this runs)."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(t: float) -> float:
        x = np.linspace(0.0, t, 20_001)
        density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x * x / df))
        return 0.5 + float(np.sum((density[1:] + density[:-1]) / 2 * np.diff(x)))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def mean_ci(values) -> tuple[float, float, int]:
    """Mean, half-width of its two-sided CONFIDENCE t-interval (nan for fewer than two values) and the count,
    over the values that are not None."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) == 1:
        return float(v[0]), float("nan"), 1
    half = t_quantile(0.5 + CONFIDENCE / 2, len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()), half, len(v)


AUDIT_CORRECT = "audit_correct"  # a model's metrics: audit labels it classifies correctly ...
AUDIT_LABELS = "audit_labels"  # ... out of this many (the trainers evaluate every model on the audit labels)
WILSON_Z = 1.959963984540054  # the normal quantile of a two-sided 95% interval


def wilson_interval(correct: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion: sound at small n and at 0 or n successes, unlike the
    normal approximation."""
    if n <= 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def estimated_accuracy(metrics: dict[str, float]) -> dict | None:
    """A model's accuracy estimated on the audit labels (items drawn uniformly at random from the pool, never
    trained on): {value, low, high, labels} with a 95% Wilson interval; None when the model saw no audit label."""
    n = int(metrics.get(AUDIT_LABELS, 0))
    if n <= 0:
        return None
    correct = int(round(metrics.get(AUDIT_CORRECT, 0)))
    low, high = wilson_interval(correct, n)
    return {"value": correct / n, "low": low, "high": high, "labels": n}


RATE_WINDOW = 10.0  # seconds a label rate is measured over: the current pace, not the run's
MIN_RATE_SPAN = 2.0  # seconds of observations before a rate is trusted


class LabelRate:
    """Labels per second, from L's size (or last sequence number) observed over time: the pace of the last
    `window` seconds, not the run's. The trainers time their rounds by it, the selectors their batches."""

    def __init__(self, *, window: float = RATE_WINDOW, min_span: float = MIN_RATE_SPAN):
        self.window = window
        self.min_span = min_span
        self._seen: deque[tuple[float, int]] = deque()  # (monotonic seconds, labels then)

    def observe(self, labels: int, now: float) -> None:
        """L held `labels` labels (or reached that sequence number) at `now` (monotonic seconds)."""
        self._seen.append((now, labels))
        while len(self._seen) > 2 and self._seen[1][0] <= now - self.window:
            self._seen.popleft()  # keep one observation at or before the window's start

    @property
    def rate(self) -> float | None:
        """Labels per second over the last `window` seconds; None until `min_span` seconds are observed."""
        if len(self._seen) < 2:
            return None
        (t0, n0), (t1, n1) = self._seen[0], self._seen[-1]
        return (n1 - n0) / (t1 - t0) if t1 - t0 >= self.min_span else None

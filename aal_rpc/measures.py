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
from collections import Counter, deque
from collections.abc import Collection, Mapping

import numpy as np

from aal_rpc.types import AUDIT_STRATEGY, GOLD_STRATEGY, IMPORTED_STRATEGY, TYPICAL_STRATEGY

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


RANDOM_STRATEGY = "random"  # strategies.RandomStrategy.name (not imported: it would bring torch)
ORIGINS = ("model", "cold_start", "typical", "random_strategy", "audit", "imported", "gold")  # origins_of's counts


def origins_of(provenances: Mapping[tuple[str, int], int], encoders: Collection[int] = ()) -> dict:
    """Where labels came from, from how many labels each (strategy, model_version) of their provenance has:
    counts of ORIGINS, and `model_strategies`, the model-chosen labels by strategy name. `encoders`: the versions
    that are pretrained encoders (types.is_encoder).

    Audit, imported and gold labels (types.GOLD_STRATEGY: gold answers, and annotators' labels of gold items) are
    counted as such whenever they came (before any model too): their reason
    is the more telling. Of the rest, typical items of an encoder's embedding (typical_pick) are the cold start,
    counted as `typical`: no model trained on labels chose them; other picks under model version 0 are the cold
    start's random ones (no model existed); the random strategy with a model is random by choice; anything else a
    model chose.
    """
    counts = dict.fromkeys(ORIGINS, 0)
    by_strategy: Counter[str] = Counter()
    for (strategy, version), n in provenances.items():
        if strategy == IMPORTED_STRATEGY:
            counts["imported"] += n
        elif strategy == AUDIT_STRATEGY:
            counts["audit"] += n
        elif strategy == GOLD_STRATEGY:
            counts["gold"] += n
        elif typical_pick(strategy, version, encoders):
            counts["typical"] += n
        elif version == 0:
            counts["cold_start"] += n
        elif strategy == RANDOM_STRATEGY:
            counts["random_strategy"] += n
        else:
            counts["model"] += n
            by_strategy[strategy or "unnamed"] += n
    return {**counts, "model_strategies": dict(sorted(by_strategy.items()))}


def chosen_by_model_share(origins: dict) -> float | None:
    """The share of labels a model chose (origins_of); None for no labels."""
    total = sum(origins[k] for k in ORIGINS)
    return origins["model"] / total if total else None


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


# -- the lead's figures: pace, what remains, and when to stop ---------------------------------------------------

POOL_ITEMS = "pool_items"  # a model's metrics: the items of the pool its trainer loaded (labeled or not)
PACE_WINDOW_SECONDS = 300.0  # a label rate or an annotator's pace: labels over the last five minutes ...
PACE_MIN_SECONDS = 30.0  # ... over at least this long, so two quick first labels do not read as 200 a minute


def pace_per_minute(times, now: float, *, window: float = PACE_WINDOW_SECONDS,
                    min_span: float = PACE_MIN_SECONDS) -> float:
    """Labels a minute over the last `window` seconds before `now`, from the labels' times (unix seconds); over
    less while the first label is more recent than that, but never less than `min_span`."""
    t = np.asarray(list(times), dtype=float)
    if not len(t):
        return 0.0
    span = max(min_span, min(window, now - float(t.min())))
    return float(np.sum(t > now - window)) * 60.0 / span


def pool_items(models) -> int | None:
    """The pool's size, as the newest model whose trainer reported one (POOL_ITEMS) saw it; None before any."""
    sized = [m for m in models if m.metrics.get(POOL_ITEMS, 0) > 0]
    return int(max(sized, key=lambda m: m.version).metrics[POOL_ITEMS]) if sized else None


def remaining_items(pool: int | None, labeled: int, skipped: int) -> int | None:
    """Items of the pool neither labeled nor skipped (None while the pool's size is unknown)."""
    return None if pool is None else max(0, pool - labeled - skipped)


def cohens_kappa(a, b) -> float:
    """Cohen's kappa of two labelings of the same items: agreement beyond what their class frequencies give by
    chance. 1 for identical labelings (a single class included), 0 for chance agreement."""
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.shape != b.shape or not len(a):
        raise ValueError("kappa needs two labelings of the same, non-empty, set of items")
    observed = float(np.mean(a == b))
    classes = np.union1d(a, b)
    expected = float(sum(np.mean(a == k) * np.mean(b == k) for k in classes))
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


STOP_SET_AGREEMENT = "stop_set_agreement"  # a model's metrics: kappa of its stop-set predictions with ...
STOP_SET_PREVIOUS = "stop_set_previous"  # ... those of this version, the latest (most labels) when it was trained
STOP_SET_SIZE = 500  # unlabeled pool items every trainer predicts on (the same seeded sample for all)
STOP_KAPPA = 0.99  # Bloodgood & Vijay-Shanker (2009): predictions are stable once consecutive models agree this
STOP_WINDOW = 3  # well, averaged over the last this many versions
FLAT_SPAN = 0.2  # accuracy is flat when it rose at most FLAT_GAIN over the last FLAT_SPAN of the labels
FLAT_GAIN = 0.01


def accuracy_curve(models) -> list[dict]:
    """One point per model trained on labels, from the fewest labels to the most (ModelInfo.freshness: with several
    trainers a model trained on fewer labels may be published later): {version, labels, estimated
    (estimated_accuracy or None), accuracy (held out, or None), agreement (STOP_SET_AGREEMENT, or None)}.
    Pretrained encoders (no labels) have no point."""
    points = []
    for m in sorted(models, key=lambda m: m.freshness()):
        if m.num_labels <= 0:
            continue
        points.append({"version": m.version, "labels": m.num_labels, "estimated": estimated_accuracy(m.metrics),
                       "accuracy": m.metrics.get("accuracy"), "agreement": m.metrics.get(STOP_SET_AGREEMENT)})
    return points


def _gain(curve: list[dict], value) -> tuple[float, float, float] | None:
    """(accuracy then, now, labels then) over the last FLAT_SPAN of the labels, by `value` of a point; None while
    no point lies that far back."""
    known = [p for p in curve if value(p) is not None]
    if not known:
        return None
    last = known[-1]
    earlier = [p for p in known if p["labels"] <= (1 - FLAT_SPAN) * last["labels"]]
    if not earlier:
        return None
    then = earlier[-1]
    return value(then), value(last), then["labels"]


def stopping_signal(models, *, kappa: float = STOP_KAPPA, window: int = STOP_WINDOW) -> dict:
    """Whether to stop labeling: stabilizing predictions (Bloodgood & Vijay-Shanker 2009: the kappa of consecutive
    models' predictions on a fixed unlabeled stop set, each model's with the latest before it, averaged over the
    `window` models trained on the most labels, at least `kappa`)
    together with a flat accuracy curve (at most FLAT_GAIN gained over the last FLAT_SPAN of the labels): the
    audit's estimate where the models have one, else held-out accuracy; with neither, the predictions decide.

    Returns {suggested, reason (in words), agreement (the mean kappa, or None), gain (accuracy gained over the
    last FLAT_SPAN of the labels, or None), curve ("estimated", "held_out" or None)}."""
    curve = accuracy_curve(models)
    out: dict[str, object] = {"suggested": False, "agreement": None, "gain": None, "curve": None}
    if not curve:
        return {**out, "reason": "keep going: no model trained on labels yet"}
    recent = [p["agreement"] for p in curve[-window:]]
    known = [a for a in recent if a is not None]
    if len(curve) < window or len(known) < window:
        return {**out, "reason": f"keep going: the stop set's agreement is known for {len(known)} of the last "
                                 f"{window} versions"}
    mean = float(np.mean(known))
    out["agreement"] = mean
    if mean < kappa:
        return {**out, "reason": f"keep going: consecutive models agree at kappa {mean:.3f} on the stop set "
                                 f"(the mean of the last {window}), below {kappa}"}
    stable = f"consecutive models agree at kappa {mean:.3f} on the stop set (the last {window} versions)"
    for name, value, words in (("estimated", lambda p: p["estimated"] and p["estimated"]["value"],
                                "estimated accuracy"),
                               ("held_out", lambda p: p["accuracy"], "held-out accuracy")):
        if any(value(p) is not None for p in curve):
            gain = _gain(curve, value)
            if gain is None:
                return {**out, "curve": name, "reason": f"keep going: {stable}, but {words} is not yet known "
                        f"over the last {FLAT_SPAN:.0%} of the labels"}
            then, now, labels_then = gain
            out.update(curve=name, gain=now - then)
            change = f"{words} went {then:.3f} -> {now:.3f} since {labels_then} labels"
            if now - then > FLAT_GAIN:
                return {**out, "reason": f"keep going: {stable}, but {change}: still rising"}
            return {**out, "suggested": True, "reason": f"stopping suggested: {stable}, and {change}: flat"}
    return {**out, "suggested": True, "reason": f"stopping suggested: {stable} (no audit labels or test set: the "
                                                "predictions alone decide)"}

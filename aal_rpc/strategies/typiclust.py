"""TypiClust (Hacohen, Dekel and Weinshall, "Active Learning on a Budget", ICML 2022): for the first labels,
typical and diverse items of an embedding rather than uncertain ones.

The free items' embeddings (L2-normalized, as the paper's self-supervised features are) are clustered by k-means
into k clusters, k the batch, and each cluster gives its most typical item: the one whose K = 20 nearest
neighbours within the cluster lie closest (typicality = 1 / their mean distance), largest clusters first. Clusters
of at most MIN_CLUSTER_SIZE items (outliers) come after the others; when there are fewer clusters than picks (k
beyond the distinct points), the next round takes each cluster's next most typical item.

The cost is bounded on a large shard: k-means runs on at most `max_points` items sampled by seed, every item is
then assigned to its nearest centre (so cluster sizes are exact), and typicality is measured within a seeded
sample of each cluster of at most max(max_points // k, 5 K) members. Pure numpy, deterministic by seed.
"""

from __future__ import annotations

import numpy as np

from aal_rpc.strategies.base import Selection, Strategy, rank_scores
from aal_rpc.types import TYPICAL_STRATEGY

NEIGHBOURS = 20  # K of the paper's typicality
MAX_POINTS = 4000  # items k-means is fitted on; above, a seeded sample
MIN_CLUSTER_SIZE = 5  # the paper's: smaller clusters are outliers, picked from last
KMEANS_ITERATIONS = 50
KMEANS_RESTARTS = 3
ROWS_PER_CHUNK = 2048  # rows of a distance matrix computed at once: 2048 x 4000 float64 is 64 MB


def squared_distances(a: np.ndarray, b: np.ndarray, b_squared: np.ndarray | None = None) -> np.ndarray:
    """(len(a), len(b)) squared Euclidean distances, never negative; `b_squared`: b's squared norms, if known."""
    b_squared = (b * b).sum(axis=1) if b_squared is None else b_squared
    d = (a * a).sum(axis=1)[:, None] + b_squared[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d, 0.0, out=d)


def nearest(x: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each row's nearest centre (the first on a tie), in chunks of rows."""
    c2 = (centres * centres).sum(axis=1)
    out = np.empty(len(x), dtype=np.int64)
    for start in range(0, len(x), ROWS_PER_CHUNK):
        xb = x[start:start + ROWS_PER_CHUNK]
        out[start:start + len(xb)] = np.argmin(c2[None, :] - 2.0 * (xb @ centres.T), axis=1)
    return out


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, *, restarts: int = KMEANS_RESTARTS) -> np.ndarray:
    """Centres of up to k clusters: of `restarts` runs of `lloyd`, those with the smallest sum of squared distances
    from each point to its centre (one run lands in a poor local optimum now and then, two blobs sharing a centre)."""
    best, best_cost = None, np.inf
    for _ in range(restarts):
        centres = lloyd(x, k, rng)
        cost = squared_distances(x, centres).min(axis=1).sum()
        if best is None or cost < best_cost:  # the first run's at least, whatever its cost (nan included)
            best, best_cost = centres, cost
    assert best is not None, "restarts must be at least 1"
    return best


def lloyd(x: np.ndarray, k: int, rng: np.random.Generator, *, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """Centres of up to k clusters: greedy k-means++ seeding (of 2 + log k candidates drawn at each step, the one
    that lowers the potential most, as scikit-learn does: plain k-means++ often leaves a small, distant cluster
    without a centre), then Lloyd's iterations. Fewer than k when x holds fewer than k distinct points (seeding
    stops once every point coincides with a centre)."""
    n = len(x)
    trials = 2 + int(np.log(max(k, 1)))
    x_squared = (x * x).sum(axis=1)
    chosen = [int(rng.integers(n))]
    d2 = squared_distances(x[chosen], x, x_squared)[0]
    while len(chosen) < min(k, n):
        total = d2.sum()
        if total <= 0:
            break
        candidates = rng.choice(n, size=trials, p=d2 / total)
        reduced = np.minimum(d2[None, :], squared_distances(x[candidates], x, x_squared))
        best = int(np.argmin(reduced.sum(axis=1)))
        chosen.append(int(candidates[best]))
        d2 = reduced[best]
    centres = x[chosen].copy()
    for _ in range(iterations):
        labels = nearest(x, centres)
        counts = np.bincount(labels, minlength=len(centres))
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, x)
        filled = counts > 0  # an emptied cluster keeps its centre
        moved = centres.copy()
        moved[filled] = sums[filled] / counts[filled, None]
        if np.array_equal(moved, centres):
            break
        centres = moved
    return centres


def mean_neighbour_distance(x: np.ndarray, neighbours: int) -> np.ndarray:
    """Each row's mean distance to its `neighbours` nearest other rows (all of them, if fewer); 0 for a lone row."""
    n = len(x)
    k = min(neighbours, n - 1)
    if k <= 0:
        return np.zeros(n)
    out = np.empty(n)
    for start in range(0, n, ROWS_PER_CHUNK):
        d = squared_distances(x[start:start + ROWS_PER_CHUNK], x)
        rows = np.arange(len(d))
        d[rows, start + rows] = np.inf  # not its own neighbour (a duplicate is, at distance 0)
        out[start:start + len(d)] = np.sqrt(np.partition(d, k - 1, axis=1)[:, :k]).mean(axis=1)
    return out


class TypiClust(Strategy):
    """
    Parameters
    ----------
    neighbours:
        K: typicality is 1 / the mean distance to the K nearest neighbours within the cluster (the paper's 20;
        half the cluster when it is smaller than 2K, as in the paper's code).
    max_points:
        At most this many items are clustered (a seeded sample); the rest are assigned to the nearest centre.
    normalize:
        Cluster the embeddings scaled to unit length (the paper's features are); False: as given.
    """

    name = TYPICAL_STRATEGY
    needs_embeddings = True

    def __init__(self, *, seed: int = 0, neighbours: int = NEIGHBOURS, max_points: int = MAX_POINTS,
                 normalize: bool = True):
        super().__init__(seed=seed)
        if neighbours < 1 or max_points < 1:
            raise ValueError("neighbours and max_points must be at least 1")
        self.neighbours = neighbours
        self.max_points = max_points
        self.normalize = normalize

    def select(self, probs, batch_size, *, embeddings=None, item_ids=None) -> Selection:
        # without embeddings, the class probabilities stand in (as BADGE's h = 1 does): the only view given
        x = np.asarray(probs if embeddings is None else embeddings, dtype=np.float64)
        n = len(x)
        k = max(0, min(int(batch_size), n))
        if k == 0:
            return Selection(np.zeros(0, dtype=np.int64), np.zeros(0))
        x = x.reshape(n, -1)
        if self.normalize:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        rng = np.random.default_rng(self.seed)
        tiebreak = rng.random(n)
        if k == n:  # nothing to choose: every item, the most typical (over the whole shard) first
            idx = self._by_typicality(x, np.arange(n), tiebreak)
            return Selection(idx, rank_scores(n, n))
        fitted = np.sort(rng.choice(n, size=self.max_points, replace=False)) if n > self.max_points else np.arange(n)
        centres = kmeans(x[fitted], k, rng)
        labels = nearest(x, centres)
        sizes = np.bincount(labels, minlength=len(centres))
        cap = max(self.max_points // len(centres), 5 * self.neighbours)
        ranked = []  # (outlier, -size, tiebreak, cluster's members by typicality)
        by_cluster = np.split(np.argsort(labels, kind="stable"), np.cumsum(sizes)[:-1])
        for c in np.flatnonzero(sizes):
            members = by_cluster[c]
            if len(members) > cap:
                members = np.sort(rng.choice(members, size=cap, replace=False))
            ranked.append((sizes[c] <= MIN_CLUSTER_SIZE, -sizes[c], rng.random(),
                           self._by_typicality(x, members, tiebreak)))
        ranked.sort(key=lambda r: r[:3])
        picks: list[int] = []
        depth = 0
        while len(picks) < k:  # round robin over the clusters in that order: one item each, then the next
            more = [r[3][depth] for r in ranked if depth < len(r[3])]
            if not more:  # sampled clusters hold fewer members than picks wanted: the rest at random
                rest = np.setdiff1d(np.arange(n), picks)
                picks.extend(rng.permutation(rest)[:k - len(picks)].tolist())
                break
            picks.extend(more[:k - len(picks)])
            depth += 1
        idx = np.asarray(picks, dtype=np.int64)
        return Selection(idx, rank_scores(len(idx), n))

    def _by_typicality(self, x: np.ndarray, members: np.ndarray, tiebreak: np.ndarray) -> np.ndarray:
        """`members`, the most typical first (smallest mean distance to their nearest neighbours among members)."""
        neighbours = min(self.neighbours, max(1, len(members) // 2))
        distance = mean_neighbour_distance(x[members], neighbours)
        return members[np.lexsort((tiebreak[members], distance))]

"""Cluster-Margin (Citovsky et al., "Batch Active Learning at Scale", NeurIPS 2021): margin uncertainty
made diverse through clusters, for very large batches.

Once (and again only when asked, or when the embedding model is `recluster_after` versions older than
the current model), the shard is clustered by average-linkage HAC at distance `epsilon` on the model's
penultimate-layer embeddings. Each round:

1. take the k_m = margin_pool_factor x batch items of smallest margin (top-1 minus top-2 probability);
2. group them by cluster, and sort the groups by size, smallest first;
3. go round-robin over the groups, taking one seeded-random unchosen item from each, until the batch
   is full.

The score of a chosen item is its priority in that round-robin order (1.0 for the first, falling
linearly), so a query pool that serves the highest scores first serves the batch in the algorithm's order.
"""

from __future__ import annotations

import logging

import numpy as np

from aal_rpc.strategies.base import Selection, Strategy, rank_scores, top_k
from aal_rpc.strategies.clustering import DEFAULT_MAX_EXACT, DEFAULT_N_FINE, cluster, default_epsilon
from aal_rpc.strategies.margin import margins

log = logging.getLogger(__name__)


def round_robin(groups: list[np.ndarray], k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to k members: one random unchosen member of each group in turn, smallest groups first."""
    order = sorted(range(len(groups)), key=lambda g: (len(groups[g]), g))
    queues = [list(rng.permutation(groups[g])) for g in order]
    chosen: list[int] = []
    while len(chosen) < k and any(queues):
        for q in queues:
            if q and len(chosen) < k:
                chosen.append(int(q.pop()))
    return np.asarray(chosen, dtype=np.int64)


class ClusterMarginStrategy(Strategy):
    """
    Parameters
    ----------
    epsilon:
        HAC distance threshold; None picks half the median pairwise embedding distance.
    margin_pool_factor:
        k_m / k_t, how many smallest-margin items per batch slot are considered.
    recluster_after:
        Recluster when the embeddings are this many model versions old (0: never on its own).
    max_exact, n_fine:
        Exact HAC up to max_exact items; above, k-means to n_fine centroids, then HAC over them.
    """

    name = "cluster_margin"
    needs_embeddings = True

    def __init__(self, *, seed: int = 0, epsilon: float | None = None, margin_pool_factor: float = 10.0,
                 recluster_after: int = 0, max_exact: int = DEFAULT_MAX_EXACT, n_fine: int = DEFAULT_N_FINE):
        super().__init__(seed=seed)
        if margin_pool_factor < 1:
            raise ValueError("margin_pool_factor must be at least 1")
        self.epsilon = epsilon
        self.margin_pool_factor = margin_pool_factor
        self.recluster_after = recluster_after
        self.max_exact = max_exact
        self.n_fine = n_fine
        self.clusters: dict[str, int] = {}
        self.clustered_version: int | None = None
        self._recluster_requested = False
        self._rounds = 0

    def request_recluster(self) -> None:
        """Recluster at the next model version the worker prepares."""
        self._recluster_requested = True

    def needs_clustering(self, model_version: int) -> bool:
        if self.clustered_version is None or self._recluster_requested:
            return True
        return self.recluster_after > 0 and model_version - self.clustered_version >= self.recluster_after

    def prepare(self, *, embeddings: np.ndarray, item_ids: np.ndarray, model_version: int) -> None:
        if not self.needs_clustering(model_version):
            return
        eps = self.epsilon if self.epsilon is not None else default_epsilon(embeddings, seed=self.seed)
        labels = cluster(embeddings, eps, max_exact=self.max_exact, n_fine=self.n_fine, seed=self.seed)
        self.clusters = dict(zip(map(str, item_ids), labels.tolist()))
        self.clustered_version = model_version
        self._recluster_requested = False
        log.info("cluster_margin: %d items in %d clusters (epsilon %.4g, model v%d)", len(labels),
                 len(np.unique(labels)), eps, model_version)

    def select(self, probs, batch_size, *, embeddings=None, item_ids=None) -> Selection:
        probs = np.asarray(probs, dtype=np.float64)
        n = len(probs)
        k = max(0, min(int(batch_size), n))
        if item_ids is None:  # positions stand in for ids; they match clusters prepared on positions too
            item_ids = np.arange(n).astype(str)
        k_m = min(n, int(np.ceil(self.margin_pool_factor * k)))
        pool = top_k(-margins(probs), k_m, seed=self.seed)  # the k_m smallest margins
        if self.clusters:
            ids = [self.clusters.get(str(item_ids[i]), -1 - j) for j, i in enumerate(pool)]
        else:  # not clustered yet: every item its own cluster, i.e. plain margin order
            ids = list(range(len(pool)))
        groups: dict[int, list[int]] = {}
        for i, c in zip(pool, ids):
            groups.setdefault(c, []).append(int(i))
        rng = np.random.default_rng((self.seed, self._rounds))
        self._rounds += 1
        chosen = round_robin([np.asarray(g) for _, g in sorted(groups.items())], k, rng)
        clusters = np.array([self.clusters.get(str(item_ids[i]), -1) for i in chosen], dtype=np.int64)
        return Selection(chosen, rank_scores(len(chosen), n), clusters)

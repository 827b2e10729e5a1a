"""Average-linkage hierarchical agglomerative clustering at a distance threshold, for Cluster-Margin.

Up to `max_exact` points this is exact average linkage (scipy). Above it, exact linkage needs the
n(n-1)/2 pairwise distances (40 GB for 100,000 points), so it is approximated as the paper's authors
suggest for scale: a fine mini-batch k-means first (`n_fine` centroids), then exact average-linkage HAC
over the centroids, each point taking its centroid's cluster.
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_EXACT = 4000  # 8 million distances, about 64 MB and a few seconds on 2 cores
DEFAULT_N_FINE = 2000
EPSILON_SAMPLE = 2000  # points sampled to pick a default epsilon


def hac_average(x: np.ndarray, epsilon: float) -> np.ndarray:
    """Exact average-linkage clusters (0-based ids) merging while the average distance is at most epsilon."""
    if len(x) == 1:
        return np.zeros(1, dtype=np.int64)
    from scipy.cluster.hierarchy import fcluster, linkage  # here, not at import: 0.3 s every worker would pay

    z = linkage(np.asarray(x, dtype=np.float64), method="average", metric="euclidean")
    return fcluster(z, t=epsilon, criterion="distance").astype(np.int64) - 1


def cluster(x: np.ndarray, epsilon: float, *, max_exact: int = DEFAULT_MAX_EXACT, n_fine: int = DEFAULT_N_FINE,
            seed: int = 0) -> np.ndarray:
    """Cluster ids (0-based) for each row of x; exact up to `max_exact` rows, k-means + HAC above."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int64)
    if len(x) <= max_exact:
        return hac_average(x, epsilon)
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=min(n_fine, len(x)), batch_size=4096, n_init=1, max_iter=20,
                         random_state=seed).fit(np.asarray(x, dtype=np.float32))
    centroid_cluster = hac_average(km.cluster_centers_, epsilon)
    return centroid_cluster[km.labels_]


def default_epsilon(x: np.ndarray, *, seed: int = 0) -> float:
    """Half the median pairwise distance of a sample: a scale-free starting point when none is given."""
    rng = np.random.default_rng(seed)
    sample = x[rng.choice(len(x), size=min(len(x), EPSILON_SAMPLE), replace=False)].astype(np.float64)
    if len(sample) < 2:
        return 1.0
    from scipy.spatial.distance import pdist

    return float(0.5 * np.median(pdist(sample)))

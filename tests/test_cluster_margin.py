"""Cluster-Margin pinned down: margin pool, cluster order, round-robin, seeded randomness, reclustering,
and agreement with scipy's exact average-linkage HAC."""

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from aal_rpc.strategies import get_strategy
from aal_rpc.strategies.cluster_margin import ClusterMarginStrategy, round_robin
from aal_rpc.strategies.clustering import cluster, hac_average


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renaming the clusters."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def probs_with_margins(m: np.ndarray) -> np.ndarray:
    """Two-class probabilities whose top-1 minus top-2 gap is m."""
    p1 = (1 + m) / 2
    return np.stack([p1, 1 - p1], axis=1)


def blobs(n_per=40, centers=6, dim=5, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(scale=20, size=(centers, dim))
    return np.concatenate([c[i] + rng.normal(scale=0.5, size=(n_per, dim)) for i in range(centers)])


@pytest.mark.parametrize("eps", [0.5, 2.0, 8.0, 40.0])
def test_exact_path_matches_scipy_average_linkage(eps):
    x = np.random.default_rng(1).normal(size=(200, 4)) * 3
    expected = fcluster(linkage(x, method="average"), t=eps, criterion="distance")
    assert same_partition(cluster(x, eps), expected)


def test_approximate_path_matches_exact_on_separated_clusters():
    x = blobs()
    exact = hac_average(x, 10.0)
    approx = cluster(x, 10.0, max_exact=50, n_fine=60, seed=0)  # forced through k-means + HAC
    assert len(set(exact.tolist())) == 6
    assert same_partition(approx, exact)


def test_round_robin_takes_one_per_group_smallest_groups_first():
    groups = [np.array([0, 1, 2, 3]), np.array([10]), np.array([20, 21])]
    chosen = round_robin(groups, 5, np.random.default_rng(0))
    assert chosen[0] == 10 and chosen[1] in (20, 21) and chosen[2] in (0, 1, 2, 3)
    assert chosen[3] in (20, 21) and chosen[4] in (0, 1, 2, 3)
    assert len(set(chosen.tolist())) == 5
    assert sorted(round_robin(groups, 100, np.random.default_rng(0)).tolist()) == [0, 1, 2, 3, 10, 20, 21]


def _prepared(clusters: list[int], seed=0, factor=2.0) -> ClusterMarginStrategy:
    s = ClusterMarginStrategy(seed=seed, margin_pool_factor=factor)
    s.clusters = {str(i): c for i, c in enumerate(clusters)}
    s.clustered_version = 1
    return s


def test_only_the_smallest_margins_are_considered():
    margins = np.linspace(0, 1, 20)  # item i has margin i/19
    s = _prepared(list(range(20)), factor=2.0)
    sel = s.select(probs_with_margins(margins), 3, item_ids=np.arange(20).astype(str))
    assert set(sel.indices.tolist()) <= set(range(6))  # k_m = 2 x 3 smallest margins


def test_batch_spreads_over_clusters_smallest_first():
    # items 0-5 have the smallest margins; 0-3 share cluster A, 4 is alone in B, 5 alone in C
    margins = np.array([0.01, 0.02, 0.03, 0.04, 0.05, 0.06] + [0.9] * 10)
    clusters = [0, 0, 0, 0, 1, 2] + list(range(3, 13))
    s = _prepared(clusters, factor=2.0)
    sel = s.select(probs_with_margins(margins), 3, item_ids=np.arange(16).astype(str))
    assert set(sel.indices[:2].tolist()) == {4, 5}  # the singleton clusters come first
    assert sel.indices[2] in (0, 1, 2, 3)
    assert list(sel.scores) == sorted(sel.scores, reverse=True)
    plain_margin = get_strategy("margin").select(probs_with_margins(margins), 3)
    assert set(plain_margin.indices.tolist()) == {0, 1, 2}  # what diversity replaces


def test_choices_within_a_cluster_are_seeded():
    margins = np.full(30, 0.1)
    clusters = [0] * 30
    ids = np.arange(30).astype(str)

    def pick(seed):
        return _prepared(clusters, seed=seed, factor=1.0).select(probs_with_margins(margins), 5, item_ids=ids)

    assert pick(3).indices.tolist() == pick(3).indices.tolist()
    assert pick(3).indices.tolist() != pick(4).indices.tolist()


def test_clusters_once_then_on_request_or_when_stale():
    x = blobs(n_per=10)
    ids = np.arange(len(x)).astype(str)
    s = ClusterMarginStrategy(epsilon=10.0, recluster_after=3)
    assert s.needs_clustering(1)
    s.prepare(embeddings=x, item_ids=ids, model_version=1)
    assert len(set(s.clusters.values())) == 6 and s.clustered_version == 1
    s.prepare(embeddings=x * 0, item_ids=ids, model_version=3)
    assert s.clustered_version == 1  # not stale enough: kept
    s.request_recluster()
    s.prepare(embeddings=x, item_ids=ids, model_version=3)
    assert s.clustered_version == 3
    assert s.needs_clustering(6) and not s.needs_clustering(5)
    never = ClusterMarginStrategy(epsilon=10.0)
    never.prepare(embeddings=x, item_ids=ids, model_version=1)
    assert not never.needs_clustering(1000)

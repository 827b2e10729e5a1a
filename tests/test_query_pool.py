"""The query pool S on its own: dedup, pick orders, capacity and eviction, demand, leases and expiry."""

import pytest

from aal_rpc.coordinator.query_pool import QueryPool
from tests.conftest import make_candidate


def test_offer_deduplicates_and_refreshes_with_newer_versions():
    pool = QueryPool(capacity=10)
    assert pool.offer(make_candidate("1", version=1), 0.0) == ("accepted", [])
    assert pool.offer(make_candidate("1", version=1), 0.0) == ("rejected", [])
    assert pool.offer(make_candidate("1", version=2, score=0.1), 0.0) == ("refreshed", [])
    assert len(pool) == 1 and pool.get("1").version == 2


def test_fresh_order_serves_newest_version_then_highest_score():
    pool = QueryPool(capacity=10, pick="fresh")
    pool.offer(make_candidate("1", version=1, score=0.9), 0.0)
    pool.offer(make_candidate("2", version=2, score=0.1), 0.0)
    pool.offer(make_candidate("3", version=2, score=0.5), 0.0)
    got = [pool.lease("a", 0.0, 10).candidate.item_id for _ in range(3)]
    assert got == ["3", "2", "1"]
    assert pool.lease("a", 0.0, 10) is None


def test_score_order_ignores_versions():
    pool = QueryPool(capacity=10, pick="score")
    pool.offer(make_candidate("1", version=1, score=0.9), 0.0)
    pool.offer(make_candidate("2", version=5, score=0.1), 0.0)
    assert pool.lease("a", 0.0, 10).candidate.item_id == "1"


def test_random_order_is_seeded_and_serves_everything_once():
    def order(seed):
        pool = QueryPool(capacity=50, pick="random", seed=seed)
        for i in range(20):
            pool.offer(make_candidate(str(i)), 0.0)
        return [pool.lease("a", 0.0, 10).candidate.item_id for _ in range(20)]

    assert order(1) == order(1)
    assert sorted(order(1), key=int) == [str(i) for i in range(20)]
    assert order(1) != order(2)


def test_full_pool_evicts_the_stalest_for_a_fresher_candidate_only():
    pool = QueryPool(capacity=2)
    pool.offer(make_candidate("1", version=1, score=0.9), 0.0)
    pool.offer(make_candidate("2", version=2, score=0.1), 0.0)
    assert pool.offer(make_candidate("3", version=1, score=1.0), 0.0) == ("rejected", [])
    assert pool.offer(make_candidate("4", version=3), 0.0) == ("accepted", ["1"])
    assert set(pool.item_ids()) == {"2", "4"}


def test_leased_candidates_are_never_evicted():
    pool = QueryPool(capacity=1)
    pool.offer(make_candidate("1", version=1), 0.0)
    pool.lease("a", 0.0, 10)
    assert pool.offer(make_candidate("2", version=9), 0.0) == ("rejected", [])


def test_demand_counts_older_versions_as_replaceable():
    pool = QueryPool(capacity=5)
    for i, v in enumerate([1, 1, 2, 3]):
        pool.offer(make_candidate(str(i), version=v), 0.0)
    assert pool.demand(0) == 1
    assert pool.demand(2) == 3
    assert pool.demand(4) == 5


def test_expired_leases_return_items_and_release_works():
    pool = QueryPool(capacity=5)
    pool.offer(make_candidate("1"), 0.0)
    entry = pool.lease("a", now=100.0, lease_seconds=10)
    first = entry.lease.lease_id
    assert pool.available_count == 0 and pool.by_lease(first) is entry
    assert pool.expire(105.0) == []
    assert pool.expire(110.0) == ["1"]
    assert pool.available_count == 1 and pool.by_lease(first) is None
    second = pool.lease("b", now=111.0, lease_seconds=10).lease.lease_id
    pool.release("1")
    assert pool.available_count == 1 and pool.by_lease(second) is None


def test_heaps_stay_bounded_under_churn():
    pool = QueryPool(capacity=4)
    for i in range(2000):
        pool.offer(make_candidate(str(i), version=i), 0.0)
    assert len(pool) == 4
    assert len(pool._pick_heap) < 200 and len(pool._stale_heap) < 200


def test_rejects_bad_configuration():
    with pytest.raises(ValueError):
        QueryPool(capacity=0)
    with pytest.raises(ValueError):
        QueryPool(capacity=1, pick="oldest")

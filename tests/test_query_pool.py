"""The in-memory query pool's own data structure: what the behavioural suite (test_coordinator_contract.py) cannot
see from outside: a seeded random order, heaps that stay bounded under churn, and refused configurations."""

import pytest

from aal_rpc.coordinator.query_pool import QueryPool
from tests.conftest import make_candidate


def test_random_order_is_seeded():
    def order(seed):
        pool = QueryPool(capacity=50, pick="random", seed=seed)
        pool.offer([make_candidate(str(i)) for i in range(20)], 0.0)
        return [pool.lease("a", 0.0, 10).candidate.item_id for _ in range(20)]

    assert order(1) == order(1) and order(1) != order(2)


def test_heaps_stay_bounded_under_churn():
    pool = QueryPool(capacity=4)
    for i in range(2000):
        pool.offer([make_candidate(str(i), version=i)], 0.0)
        if i % 3 == 0:
            entry = pool.lease("a", float(i), 1.0)
            pool.release(entry.candidate.item_id)
    assert len(pool) == 4
    assert len(pool._pick_heap) < 200 and len(pool._deadlines) < 2100


def test_rejects_bad_configuration():
    with pytest.raises(ValueError):
        QueryPool(capacity=0)
    with pytest.raises(ValueError):
        QueryPool(capacity=1, pick="oldest")

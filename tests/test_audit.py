"""The audit: a share of labels spent on items drawn uniformly at random, served first, kept out of training, and
an unbiased accuracy estimate of every model; and the cold start that asks for one batch, not S's room."""

from __future__ import annotations

import numpy as np
import pytest

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator import rules
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.data import UNLABELED, Dataset
from aal_rpc.measures import AUDIT_CORRECT, AUDIT_LABELS, estimated_accuracy, wilson_interval
from aal_rpc.trainer import Trainer, TrainerConfig
from aal_rpc.types import AUDIT_STRATEGY, Task
from aal_rpc.selector import Selector, WorkerConfig
from tests.conftest import make_candidate

POOL = 150


def unlabeled_pool(n: int = POOL) -> Dataset:
    """Two classes of 8x8 pictures (dark or bright), none labeled: what a team brings."""
    rng = np.random.default_rng(0)
    bright = rng.random(n) < 0.5
    x = np.clip(rng.normal(np.where(bright, 0.8, 0.2)[:, None, None, None], 0.1, (n, 1, 8, 8)), 0, 1)
    return Dataset("pool", x.astype(np.float32), np.full(n, UNLABELED, dtype=np.int64),
                   np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, np.int64), ("dark", "bright"))


def truth(x: np.ndarray) -> int:
    return int(x.mean() > 0.5)


TASK = Task(dataset="npz:unused", num_classes=2, class_names=("dark", "bright"), input_shape=(1, 8, 8),
            architecture="mlp", audit_share=0.1)


@pytest.fixture
def coordinator(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK,
                                    CoordinatorConfig(pool_capacity=256, lease_seconds=30))
    yield f"127.0.0.1:{srv.port}"
    srv.stop(grace=0)


def test_audit_items_come_first_in_every_ordered_pick():
    for name in ("fresh", "score"):
        order = rules.pick_order(name)
        audit = order.key(0, 0.0, AUDIT_STRATEGY)
        best = order.key(9, 1e9, "entropy")
        assert audit < best, name  # smaller sorts first
        assert order.sql().startswith(f"(strategy = '{AUDIT_STRATEGY}') DESC")


@pytest.mark.parametrize("pick", ["fresh", "score"])
def test_both_stores_lease_an_audit_item_before_better_scored_candidates(make_coordinator, pick):
    c = make_coordinator(CoordinatorConfig(pick=pick))
    c.submit_candidates(worker_id="w", strategy="entropy", model_version=0,
                        candidates=[make_candidate(str(i), score=0.9) for i in range(3)])
    c.submit_candidates(worker_id="w", strategy=AUDIT_STRATEGY, model_version=0,
                        candidates=[make_candidate("7", score=0.0, strategy=AUDIT_STRATEGY)])
    first = c.lease("ann")
    assert (first.item_id, first.provenance.strategy) == ("7", AUDIT_STRATEGY)
    assert c.lease("ann").provenance.strategy == "entropy"


def label_all(address: str, n: int, pool: Dataset) -> dict[str, int]:
    """A careful person labels up to n queries; returns the strategies of what was labeled."""
    seen: dict[str, int] = {}
    with AnnotationClient(address, "ann", retry_for=5) as a:
        for _ in range(n):
            q = a.lease(wait_seconds=0)
            if q is None:
                break
            a.submit(q, truth(pool.x_pool[pool.index_of(q.item_id)]))
            seen[q.provenance.strategy] = seen.get(q.provenance.strategy, 0) + 1
    return seen


def test_cold_start_asks_for_one_batch_and_a_small_pool_still_gets_the_models_choices(coordinator):
    pool = unlabeled_pool()
    with CoordinatorClient(coordinator, retry_for=5) as client:
        worker = Selector(client, WorkerConfig(worker_id="w", strategy="margin", batch_size=10, poll_seconds=0.01),
                          dataset=pool)
        worker.step()
        stats = client.stats()
        assert stats.queued == 10 + 1  # one batch, plus the first audit item: not S's room (256 > the pool)
        seen = label_all(coordinator, 8, pool)
        assert seen[AUDIT_STRATEGY] == 1  # served first
        Trainer(client, TrainerConfig(server_id="s", epochs=2, min_steps=20), dataset=pool).run(max_rounds=1)
        for _ in range(3):
            worker.step()
        assert worker.version == 1
        labeled = {r.item_id for r in client.export(include_payload=False)}
        queued = client.stats().queued
        assert queued > 3  # the model's choices arrived although S had room for the whole pool
        seen = label_all(coordinator, 5, pool)
        assert seen.get("margin", 0) == 5, seen  # the newest model's picks are served first
        assert labeled.isdisjoint({r.item_id for r in client.export(include_payload=False)
                                   if r.provenance.strategy == "margin"})


def test_audit_labels_keep_their_share_stay_out_of_training_and_estimate_accuracy(coordinator):
    pool = unlabeled_pool()
    with CoordinatorClient(coordinator, retry_for=5) as client:
        worker = Selector(client, WorkerConfig(worker_id="w", strategy="random", batch_size=10, poll_seconds=0.01),
                          dataset=pool)
        strategies: dict[str, int] = {}
        for _ in range(8):
            worker.step()
            for k, v in label_all(coordinator, 10, pool).items():
                strategies[k] = strategies.get(k, 0) + v
        labeled = sum(strategies.values())
        audits = strategies[AUDIT_STRATEGY]
        # floor(share * labels) + 1 audit items, each labeled at once: the share holds, give or take one
        assert int(0.1 * (labeled - audits)) <= audits <= int(0.1 * labeled) + 2, strategies

        # its round waits for every label: an audit item is served (and labeled) before the rest of its lease
        trainer = Trainer(client, TrainerConfig(server_id="s", epochs=3, min_steps=30, min_labels=labeled - audits),
                          dataset=pool)
        trainer.run(max_rounds=1)
        assert len(trainer._ys) == labeled - audits  # audit labels were never trained on
        info = client.models()[-1]
        assert info.metrics[AUDIT_LABELS] == audits
        estimate = estimated_accuracy(info.metrics)
        assert estimate["low"] <= estimate["value"] <= estimate["high"] and estimate["labels"] == audits
        assert "accuracy" not in info.metrics  # no labeled test set: no held-out accuracy is claimed


def test_wilson_interval_holds_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    p, n, trials = 0.9, 30, 2000
    hits = 0
    for _ in range(trials):
        correct = int((rng.random(n) < p).sum())
        low, high = wilson_interval(correct, n)
        hits += low <= p <= high
    assert 0.92 <= hits / trials <= 0.99
    assert estimated_accuracy({AUDIT_CORRECT: 0, AUDIT_LABELS: 0}) is None


def test_people_are_not_told_which_items_are_audit_items():
    from aal_rpc.client import LeasedQuery
    from aal_rpc.labelstudio.config import label_config, parse_label_config
    from aal_rpc.labelstudio.window import task_json
    from aal_rpc.types import Payload, Provenance
    from aal_rpc.web.app import item_json

    x = np.zeros((1, 8, 8), np.float32)
    audit = Provenance("w", AUDIT_STRATEGY, 0, 0.0)
    page = item_json(LeasedQuery("i", "l", 0.0, Payload.from_array(x), audit))
    iface = parse_label_config(label_config(("a", "b"), "image"), ("a", "b"))
    task = task_json("ref", Payload.from_array(x), audit, iface)
    assert page["strategy"] == "" and task["data"]["strategy"] == ""
    margin = Provenance("w", "margin", 1, 0.5)
    assert item_json(LeasedQuery("i", "l", 0.0, Payload.from_array(x), margin))["strategy"] == "margin"

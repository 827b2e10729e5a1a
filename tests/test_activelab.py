"""Adaptive re-labeling (strategies.activelab): labeled items whose evidence is uncertain compete with new items on
one scale, and a worker asks for one more label of the best of them, over real gRPC."""

from __future__ import annotations

import numpy as np
import torch

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.consensus import Votes, consensus
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.data import UNLABELED, Dataset, load_dataset
from aal_rpc.models import build_model
from aal_rpc.selector import Selector, WorkerConfig
from aal_rpc.serde import weights_to_bytes
from aal_rpc.strategies.activelab import ActiveLabStrategy, model_weight, relabel_scores, weight
from aal_rpc.training import predict_proba, train
from aal_rpc.types import RELABEL_STRATEGY, Payload
from tests.conftest import TASK, wait_until

DIGITS = load_dataset("digits")


def test_labels_that_agree_with_a_confident_model_score_low_and_a_lone_careless_label_high():
    confident = np.array([[0.9, 0.05, 0.05]])
    careful, careless, model = weight(0.95, 3), weight(0.4, 3), weight(0.9, 3)
    agreeing = relabel_scores(confident, [{"a": 0}], {"a": careful}, model, [0])[0]
    careless_disagreeing = relabel_scores(confident, [{"b": 2}], {"b": careless}, model, [2])[0]
    careful_disagreeing = relabel_scores(confident, [{"a": 2}], {"a": careful}, model, [2])[0]
    settled = relabel_scores(confident, [{"a": 2, "c": 2, "d": 2}], {"a": careful, "c": careful, "d": careful},
                             model, [2])[0]
    # the chance that the label trained on is wrong: a careless label the model doubts most, a careful one less
    assert agreeing < 0.1 < careful_disagreeing < careless_disagreeing
    assert settled < careful_disagreeing  # three careful labels outweigh the model
    new = ActiveLabStrategy().score(np.array([[0.5, 0.3, 0.2]]))[0]
    assert agreeing < new  # on one scale: an uncertain new item beats a settled labeled one
    assert weight(1 / 3, 3) == weight(0.1, 3) > 0  # at chance or worse: the floor
    votes = Votes()
    votes.extend([_record(1, "x", 0, "a"), _record(2, "y", 1, "a")])
    agreed = consensus(votes, 3)
    assert model_weight(agreed, {"x": np.array([0.8, 0.1, 0.1]), "y": np.array([0.8, 0.1, 0.1])}, 3) == weight(
        0.5, 3)  # (1 hit + 1) / (2 + 2)


def _record(seq, item_id, label, annotator):
    from types import SimpleNamespace

    return SimpleNamespace(seq=seq, item_id=item_id, label=label, annotator_id=annotator, supersedes=0)


def test_a_worker_asks_again_for_the_labels_its_model_doubts_and_leaves_the_others(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK,
                                    CoordinatorConfig(pool_capacity=64, max_labels_per_item=3))
    address = f"127.0.0.1:{srv.port}"
    pool = Dataset("twenty", DIGITS.x_pool[:20], np.full(20, UNLABELED, dtype=np.int64), DIGITS.x_test[:0],
                   DIGITS.y_test[:0], DIGITS.class_names)  # every item labeled below: no new item competes
    truth = {i: int(DIGITS.y_pool[DIGITS.index_of(i)]) for i in pool.item_ids}
    try:
        with CoordinatorClient(address, retry_for=5) as client:
            client.submit_candidates(worker_id="w", strategy="random", model_version=0, candidates=[
                (i, Payload.from_array(pool.x_pool[pool.index_of(i)]), 0.5) for i in pool.item_ids])
            given = {}
            with AnnotationClient(address, "a", retry_for=5) as a:  # right on ten items, wrong on the other ten
                for n in range(20):
                    q = a.lease(wait_seconds=0)
                    given[q.item_id] = (truth[q.item_id] + 1) % 10 if n % 2 else truth[q.item_id]
                    a.submit(q, given[q.item_id])
            # a model that knows the digits: it sides with the right labels and doubts the wrong ones
            torch.manual_seed(0)
            model = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes)
            train(model, DIGITS.x_pool, DIGITS.y_pool.astype(np.int64), epochs=3, batch_size=64, lr=3e-3, seed=0)
            client.upload_model(weights_to_bytes(model.state_dict()), server_id="s", trained_seq=20, num_labels=20,
                                architecture=TASK.architecture, metrics={})
            worker = Selector(client, WorkerConfig(worker_id="w", strategy="activelab", batch_size=10,
                                                   poll_seconds=0.01), dataset=pool)
            try:
                assert wait_until(lambda: len(worker._votes.consensus().items) == 20, timeout=30)
                assert worker.step() > 0
            finally:
                worker.stop()
            predicted = predict_proba(model, pool.x_pool)[0].argmax(axis=1)
            doubted = {i for i in pool.item_ids if predicted[pool.index_of(i)] != given[i]}
            asked = _relabel_candidates(address)
            # the ten given wrong, give or take the model's own errors; each step asks for at most its batch
            assert 6 <= len(doubted) <= 14 and set(asked) <= doubted, (sorted(asked), sorted(doubted))
            assert len(asked) >= min(len(doubted), 5)
            assert client.stats().last_seq == 20  # asking is not labeling: L is as it was
    finally:
        srv.stop(grace=0)


def _relabel_candidates(address: str) -> list[str]:
    """The labeled items S now offers for one more label: leased by a third annotator, who labeled none of them."""
    asked = []
    with AnnotationClient(address, "third", retry_for=5) as a:
        while (q := a.lease(wait_seconds=0)) is not None:
            if q.provenance.strategy == RELABEL_STRATEGY:
                asked.append(q.item_id)
            a.defer(q, defer_seconds=600)  # not to this annotator again while the test runs
    return asked

"""The trainer and selector loops against a real gRPC coordinator in this process."""

import logging
import threading
import time

import numpy as np
import torch

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.data import load_dataset
from aal_rpc.models import build_model
from aal_rpc.serde import weights_to_bytes
from aal_rpc.server import Trainer, TrainerConfig
from aal_rpc.strategies.base import Selection, Strategy
from aal_rpc.types import shard_of
from aal_rpc.worker import Selector, WorkerConfig
from tests.conftest import TASK, wait_until

DIGITS = load_dataset("digits")


def label_all(address, dataset, n):
    with AnnotationClient(address, "oracle") as annot:
        for _ in range(n):
            q = annot.lease(wait_seconds=5)
            annot.submit(q, int(dataset.y_pool[int(q.item_id)]))


def queue_random(client, n):
    Selector(client, WorkerConfig(worker_id="r", strategy="random", batch_size=n, poll_seconds=0.05),
             dataset=DIGITS).step()


def test_cold_start_then_model_driven_selection_and_training(grpc_coordinator):
    address, srv = grpc_coordinator
    with CoordinatorClient(address) as client:
        w0 = Selector(client, WorkerConfig(worker_id="w0", shard_index=0, num_shards=2, strategy="margin",
                                           batch_size=10, poll_seconds=0.05), dataset=DIGITS)
        assert w0.step() == 10  # no model yet: seeded random cold start
        s = client.stats()
        assert s.queued == 10
        records_before = [r for r in srv.coordinator.pool.item_ids()]
        assert all(shard_of(i, 2) == 0 for i in records_before)

        label_all(address, DIGITS, 10)
        trainer = Trainer(client, TrainerConfig(server_id="s0", epochs=5, min_new_labels=10), dataset=DIGITS)
        trainer.run(max_rounds=1)
        [model] = client.models()
        assert model.num_labels == 10 and model.server_id == "s0" and 0 <= model.metrics["accuracy"] <= 1

        assert w0.step() == 10
        assert w0.version == model.version
        entries = [srv.coordinator.pool.get(i) for i in srv.coordinator.pool.item_ids()]
        assert {e.candidate.provenance.strategy for e in entries} == {"margin"}
        assert {e.candidate.provenance.model_version for e in entries} == {model.version}
        # the worker never proposes what is labeled or queued
        labeled = {r.item_id for r in client.export(include_payload=False)}
        assert not labeled & set(srv.coordinator.pool.item_ids())


def test_first_round_waits_for_the_initial_labeled_set(grpc_coordinator):
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        queue_random(client, 12)
        label_all(address, DIGITS, 10)
        trainer = Trainer(client, TrainerConfig(server_id="s", epochs=2, min_labels=12), dataset=DIGITS)
        thread = threading.Thread(target=trainer.run, kwargs={"max_rounds": 1})
        thread.start()
        try:
            assert wait_until(lambda: len(trainer._ys) == 10, timeout=10, interval=0.02)  # the follower saw all ten
            time.sleep(0.3)
            assert trainer.rounds == 0 and client.models() == []
            label_all(address, DIGITS, 2)
            thread.join(30)
        finally:
            trainer.stop()
            thread.join(10)
        [model] = client.models()
        assert model.num_labels == 12


def test_two_trainers_do_not_train_on_the_same_labels(grpc_coordinator):
    """Started together on one labeled set, one trainer takes the round and the other waits for new labels
    instead of repeating it; later rounds never repeat one either (the coordinator staggers rounds)."""
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        queue_random(client, 20)
        label_all(address, DIGITS, 10)
        trainers = [Trainer(client, TrainerConfig(server_id=f"s{i}", epochs=2, min_labels=10), dataset=DIGITS)
                    for i in range(2)]
        threads = [threading.Thread(target=t.run) for t in trainers]
        for t in threads:
            t.start()
        try:
            assert wait_until(client.models, timeout=30, interval=0.05)
            time.sleep(1.0)  # time enough for a second round on the same labels, were one allowed
            assert [m.num_labels for m in client.models()] == [10]
            label_all(address, DIGITS, 5)  # new labels: rounds go on, never two on the same labels
            assert wait_until(lambda: max(m.num_labels for m in client.models()) == 15, timeout=30, interval=0.05)
            time.sleep(1.0)
            counts = [m.num_labels for m in client.models()]
            assert max(counts) == 15 and len(counts) == len(set(counts)), counts
        finally:
            for t in trainers:
                t.stop()
            for t in threads:
                t.join(10)


def test_selection_respects_demand(grpc_coordinator):
    address, srv = grpc_coordinator  # capacity 64
    with CoordinatorClient(address) as client:
        w = Selector(client, WorkerConfig(worker_id="w", strategy="random", batch_size=50, poll_seconds=0.05),
                     dataset=DIGITS)
        assert w.step() == 50
        assert w.step() == 14
        assert w.step() == 0
        assert client.stats().queued == 64


def test_margin_worker_picks_the_smallest_margins(grpc_coordinator):
    address, srv = grpc_coordinator
    with CoordinatorClient(address) as client:
        queue_random(client, 30)
        label_all(address, DIGITS, 30)
        Trainer(client, TrainerConfig(server_id="s", epochs=10, min_new_labels=30), dataset=DIGITS).run(max_rounds=1)
        w = Selector(client, WorkerConfig(worker_id="m", strategy="margin", batch_size=5, poll_seconds=0.05),
                     dataset=DIGITS)
        w.step()
        probs, _ = w._scores()
        top2 = np.sort(probs, axis=1)[:, -2:]
        margins = top2[:, 1] - top2[:, 0]
        chosen = {e.candidate.item_id for e in (srv.coordinator.pool.get(i) for i in srv.coordinator.pool.item_ids())
                  if e.candidate.provenance.worker_id == "m"}
        rows = [int(np.flatnonzero(w.item_ids == i)[0]) for i in chosen]
        free = ~w._taken
        assert max(margins[rows]) <= np.sort(margins[free])[4] + 1e-9


class Recording:
    """A client that records every call a selector makes through it (name, keyword arguments)."""

    def __init__(self, client: CoordinatorClient):
        self._client = client
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, name):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            self.calls.append((name, kwargs))
            return method(*args, **kwargs)
        return call

    def of(self, name: str) -> list[dict]:
        return [kwargs for n, kwargs in self.calls if n == name]


def model_with(value: float) -> torch.nn.Module:
    model = build_model(TASK.architecture, TASK.input_shape, TASK.num_classes)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def publish_v1(client: CoordinatorClient) -> None:
    """A published version 1 for the selector to hold (the coordinator refuses candidates of unknown versions)."""
    client.upload_model(weights_to_bytes(model_with(0.01).state_dict()), server_id="s", trained_seq=0, num_labels=0,
                        architecture=TASK.architecture, metrics={})


def test_a_worker_whose_model_gives_nan_submits_nothing_backs_off_and_says_why_once(grpc_coordinator, caplog):
    address, srv = grpc_coordinator
    with CoordinatorClient(address) as client:
        publish_v1(client)
        recording = Recording(client)
        w = Selector(recording, WorkerConfig(worker_id="w", strategy="entropy", batch_size=10, poll_seconds=0.01),
                     dataset=DIGITS)
        w.set_model(model_with(float("nan")), 1)  # what a diverged round would have published
        with caplog.at_level(logging.INFO, logger="aal_rpc.worker.selector"):
            assert [w.step() for _ in range(4)] == [0, 0, 0, 0]
        assert recording.of("submit_candidates") == []  # no empty batches either
        waits = [kwargs["wait_seconds"] for kwargs in recording.of("latest_model")]
        assert len(waits) == 4 and all(b > a > 0 for a, b in zip(waits, waits[1:]))  # it waits longer each time
        said = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
        assert len(said) == 1 and "nothing to propose" in said[0], said
        assert client.stats().candidates_submitted == 0


class HalfNonFinite(Strategy):
    """Picks the first items, scoring every other one NaN or infinite."""

    name = "half_non_finite"

    def select(self, probs, batch_size, *, embeddings=None, item_ids=None) -> Selection:
        idx = np.arange(min(batch_size, len(probs)))
        scores = np.where(idx % 2 == 0, np.where(idx % 4 == 0, np.nan, np.inf), 0.5)
        return Selection(idx, scores)


def test_non_finite_scores_are_never_submitted(grpc_coordinator, caplog):
    address, srv = grpc_coordinator
    with CoordinatorClient(address) as client:
        publish_v1(client)
        w = Selector(client, WorkerConfig(worker_id="w", batch_size=10, poll_seconds=0.01), dataset=DIGITS)
        w.set_model(model_with(0.01), 1)
        w.strategy = HalfNonFinite()
        with caplog.at_level(logging.INFO, logger="aal_rpc.worker.selector"):
            assert w.step() == 5
            assert w.step() == 5
        scores = [srv.coordinator.pool.get(i).candidate.provenance.score for i in srv.coordinator.pool.item_ids()]
        assert len(scores) == 10 and all(np.isfinite(scores))
        said = [r.getMessage() for r in caplog.records if "non-finite" in r.getMessage()]
        assert len(said) == 1 and "5 of its 10 picks" in said[0], said


def test_a_diverged_round_is_not_published_and_the_trainer_carries_on(grpc_coordinator, caplog):
    """Weights that are not all finite would be refused by the coordinator (INVALID_ARGUMENT, which ends a
    server): the trainer publishes nothing for that round, says so, and trains the next one afresh."""
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        queue_random(client, 10)
        label_all(address, DIGITS, 10)
        trainer = Trainer(client, TrainerConfig(server_id="s", epochs=2, lr=1e30, min_new_labels=10), dataset=DIGITS)
        with caplog.at_level(logging.WARNING, logger="aal_rpc.server.trainer"):
            trainer.train_round(DIGITS.x_pool[:10], DIGITS.y_pool[:10].astype(np.int64), 10)
        assert client.models() == [] and trainer.rounds == 0
        assert any("diverged" in r.getMessage() for r in caplog.records)
        trainer.config = TrainerConfig(server_id="s", epochs=2, min_new_labels=10)
        trainer.train_round(DIGITS.x_pool[:10], DIGITS.y_pool[:10].astype(np.int64), 10)
        [model] = client.models()
        assert model.num_labels == 10

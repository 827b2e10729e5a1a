"""The trainer and selector loops against a real gRPC coordinator in this process."""

import logging
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.trainer import loop as trainer_module
from aal_rpc.data import load_dataset
from aal_rpc.models import build_model
from aal_rpc.serde import record_to_proto, weights_to_bytes
from aal_rpc.trainer import Trainer, TrainerConfig
from aal_rpc.trainer.pacing import MIN_STEPS, STEPS_PER_LABEL, RoundBudget
from aal_rpc.strategies.base import Selection, Strategy
from aal_rpc.types import AUDIT_STRATEGY, LabeledRecord, Payload, Provenance, shard_of
from aal_rpc.selector import Selector, WorkerConfig
from aal_rpc.selector import loop as selector_module
from tests.conftest import TASK, wait_until

DIGITS = load_dataset("digits")


def label_all(address, dataset, n):
    with AnnotationClient(address, "oracle") as annot:
        for _ in range(n):
            q = annot.lease(wait_seconds=5)
            annot.submit(q, int(dataset.y_pool[int(q.item_id)]))


class Recording:
    """A client that records every call made through it, in order: (name, keyword arguments, result). Recordings
    that share `log` record into one sequence, so the order of calls by several components can be checked."""

    def __init__(self, client: CoordinatorClient, log: list | None = None, *, before=None, after=None):
        self._client = client
        self.calls: list[tuple[str, dict, object]] = [] if log is None else log
        self._before = before or {}  # name -> hook(kwargs) run before the call
        self._after = after or {}  # name -> hook(result) run after the call, before the caller sees the result

    def __getattr__(self, name):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            if name in self._before:
                self._before[name](kwargs)
            result = method(*args, **kwargs)
            self.calls.append((name, {"recording": self, **kwargs}, result))
            if name in self._after:
                self._after[name](result)
            return result
        return call

    def of(self, name: str) -> list[dict]:
        return [kwargs for n, kwargs, _ in self.calls if n == name and kwargs["recording"] is self]

    def results(self, name: str) -> list:
        return [result for n, kwargs, result in self.calls if n == name and kwargs["recording"] is self]


def queue_random(client, n):
    Selector(client, WorkerConfig(worker_id="r", strategy="random", batch_size=n, poll_seconds=0.05),
             dataset=DIGITS).step()


def test_cold_start_then_model_driven_selection_and_training(grpc_coordinator):
    address, srv = grpc_coordinator
    with CoordinatorClient(address) as client:
        w0 = Selector(client, WorkerConfig(worker_id="w0", shard_index=0, num_shards=2, strategy="margin",
                                           batch_size=20, poll_seconds=0.05), dataset=DIGITS)
        assert w0.step() == 10  # no model yet: seeded random cold start, its shard's share of one batch
        assert w0.step() == 0  # ... not S's room
        s = client.stats()
        assert s.queued == 10
        records_before = [r for r in srv.coordinator.pool.item_ids()]
        assert all(shard_of(i, 2) == 0 for i in records_before)

        label_all(address, DIGITS, 10)
        trainer = Trainer(client, TrainerConfig(server_id="s0", epochs=5, min_new_labels=10), dataset=DIGITS)
        trainer.run(max_rounds=1)
        [model] = client.models()
        assert model.num_labels == 10 and model.server_id == "s0" and 0 <= model.metrics["accuracy"] <= 1

        assert w0.step() == 20  # a model: S's room, up to a batch
        assert w0.version == model.version
        entries = [srv.coordinator.pool.get(i) for i in srv.coordinator.pool.item_ids()]
        assert {e.candidate.provenance.strategy for e in entries} == {"margin"}
        assert {e.candidate.provenance.model_version for e in entries} == {model.version}
        # the worker never proposes what is labeled or queued
        labeled = {r.item_id for r in client.export(include_payload=False)}
        assert not labeled & set(srv.coordinator.pool.item_ids())


def said(caplog, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


def test_first_round_waits_for_the_initial_labeled_set(grpc_coordinator, caplog):
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        queue_random(client, 12)
        label_all(address, DIGITS, 10)
        recording = Recording(client)
        trainer = Trainer(recording, TrainerConfig(server_id="s", epochs=2, min_labels=12), dataset=DIGITS)
        thread = threading.Thread(target=trainer.run, kwargs={"max_rounds": 1})
        with caplog.at_level(logging.DEBUG, logger="aal_rpc.trainer.loop"):
            thread.start()
            try:
                # the loop looked at all ten labels and declined: a round on them would have begun here
                assert wait_until(lambda: said(caplog, "s: 10 labels; the next round waits for 12"), timeout=30,
                                  interval=0.02)
                assert recording.of("begin_round") == [] and client.models() == []
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
        log: list = []
        recordings = [Recording(client, log) for _ in range(2)]
        trainers = [Trainer(r, TrainerConfig(server_id=f"s{i}", epochs=2, min_labels=10, min_growth=0),
                            dataset=DIGITS) for i, r in enumerate(recordings)]
        threads = [threading.Thread(target=t.run) for t in trainers]

        def refused_after_published(n: int) -> bool:
            """The model on n labels is published, and the trainer that did not train it has since asked for a
            round on n labels and been told to wait: the point where it would have repeated the round."""
            published = [i for i, (name, kwargs, result) in enumerate(log)
                         if name == "upload_model" and kwargs["num_labels"] == n]
            return bool(published) and any(
                name == "begin_round" and kwargs["num_labels"] == n and result[0] > 0
                and kwargs["recording"] is not log[published[0]][1]["recording"] for name, kwargs, result in
                log[published[0] + 1:])

        for t in threads:
            t.start()
        try:
            assert wait_until(lambda: refused_after_published(10), timeout=60, interval=0.05)
            assert [m.num_labels for m in client.models()] == [10]
            label_all(address, DIGITS, 5)  # new labels: rounds go on, never two on the same labels
            assert wait_until(lambda: refused_after_published(15), timeout=60, interval=0.05)
            counts = [m.num_labels for m in client.models()]
            granted = [kwargs["num_labels"] for name, kwargs, result in list(log)
                       if name == "begin_round" and result[0] == 0]
            assert max(counts) == 15 and len(counts) == len(set(counts)), counts
            assert len(granted) == len(set(granted)), granted
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


def test_items_travel_whole_and_one_whose_picture_cannot_be_read_is_not_proposed(grpc_coordinator, monkeypatch):
    """Each candidate carries its own row's tensor and picture (the batch's tensors are converted together); an item
    whose picture can no longer be read (a file gone since the pool was loaded) is left out for good, the rest go."""
    from aal_rpc.data import Dataset
    from aal_rpc.data.pictures import render_png

    real = Dataset.picture

    def picture(self, row):
        if row % 2 == 0:
            raise OSError("the file is gone")
        return real(self, row)

    monkeypatch.setattr(Dataset, "picture", picture)
    address, srv = grpc_coordinator
    with CoordinatorClient(address) as client:
        w = Selector(client, WorkerConfig(worker_id="w", strategy="random", batch_size=20, poll_seconds=0.05),
                     dataset=DIGITS)
        assert 0 < w.step() <= 20
        row_of = {item_id: row for row, item_id in enumerate(DIGITS.item_ids)}
        queued = [srv.coordinator.pool.get(i).candidate for i in srv.coordinator.pool.item_ids()]
        assert queued and all(row_of[c.item_id] % 2 == 1 for c in queued)
        for c in queued:
            x = DIGITS.x_pool[row_of[c.item_id]]
            assert np.array_equal(c.payload.to_array(), x) and c.payload.image == render_png(x)
        assert w._taken.any() and all(w.indices[r] % 2 == 0 for r in np.flatnonzero(w._taken))  # left out for good


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
        # each carries the model's guess: its most probable class, with that probability; the cold start's none
        for e in (srv.coordinator.pool.get(i) for i in srv.coordinator.pool.item_ids()):
            p = e.candidate.provenance
            if p.worker_id == "m":
                row = probs[int(np.flatnonzero(w.item_ids == e.candidate.item_id)[0])]
                assert (p.guess, p.guess_probability) == (int(row.argmax()), pytest.approx(float(row.max())))
            else:
                assert p.guess is None


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
        with caplog.at_level(logging.INFO, logger="aal_rpc.selector.loop"):
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
        with caplog.at_level(logging.INFO, logger="aal_rpc.selector.loop"):
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
        with caplog.at_level(logging.WARNING, logger="aal_rpc.trainer.loop"):
            trainer.train_round(DIGITS.x_pool[:10], DIGITS.y_pool[:10].astype(np.int64), 10)
        assert client.models() == [] and trainer.rounds == 0
        assert any("diverged" in r.getMessage() for r in caplog.records)
        trainer.config = TrainerConfig(server_id="s", epochs=2, min_new_labels=10)
        trainer.train_round(DIGITS.x_pool[:10], DIGITS.y_pool[:10].astype(np.int64), 10)
        [model] = client.models()
        assert model.num_labels == 10


def publish(client: CoordinatorClient, value: float = 0.01, **metrics) -> None:
    """Publish a model with every weight `value` (the next version; newest wins a tie on labels)."""
    client.upload_model(weights_to_bytes(model_with(value).state_dict()), server_id="s", trained_seq=0, num_labels=0,
                        architecture=TASK.architecture, metrics=metrics)


def test_a_worker_does_not_download_a_version_superseded_while_it_waited(grpc_coordinator):
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        publish(client)

        def superseded(info):  # v2 lands between the worker's wake-up on v1 and its download
            if info is not None and info.version == 1:
                publish(client, 0.02)

        recording = Recording(client, after={"latest_model": superseded})
        w = Selector(recording, WorkerConfig(worker_id="w", strategy="entropy", batch_size=5, poll_seconds=0.01),
                     dataset=DIGITS)
        assert w.step() == 5
        assert [info.version for info, _ in recording.results("download_model")] == [2]
        assert w.version == 2
        assert [kwargs["model_version"] for kwargs in recording.of("submit_candidates")] == [2]


def test_a_worker_does_not_score_with_a_version_superseded_while_it_downloaded(grpc_coordinator, monkeypatch):
    address, _ = grpc_coordinator
    scored: list[int] = []
    predict = selector_module.predict_proba

    def recording_predict(model, x, **kwargs):
        scored.append(w.version)
        return predict(model, x, **kwargs)

    monkeypatch.setattr(selector_module, "predict_proba", recording_predict)
    with CoordinatorClient(address) as client:
        publish(client)

        def superseded(result):  # v2 is published while v1 downloads
            if result[0].version == 1:
                publish(client, 0.02)

        recording = Recording(client, after={"download_model": superseded})
        w = Selector(recording, WorkerConfig(worker_id="w", strategy="entropy", batch_size=5, poll_seconds=0.01),
                     dataset=DIGITS)
        assert w.step() == 5
        assert [info.version for info, _ in recording.results("download_model")] == [1, 2]
        assert scored == [2]
        assert [kwargs["model_version"] for kwargs in recording.of("submit_candidates")] == [2]


def test_with_a_model_a_worker_submits_what_annotators_label_before_its_next_model(grpc_coordinator):
    """S has room for 64, but at 2 labels/s and a model every 6 s annotators label 12 before the next model: the
    worker submits 1.5x that and what they label while two top-ups reach S, and tops up once half of it is
    labeled, instead of candidates that only get evicted."""
    address, _ = grpc_coordinator  # capacity 64
    now = [0.0]
    with CoordinatorClient(address) as client:
        w = Selector(client, WorkerConfig(worker_id="w", strategy="entropy", batch_size=64, poll_seconds=0.5),
                     dataset=DIGITS, clock=lambda: now[0])
        assert w.step() == 64  # the cold start fills S
        label_all(address, DIGITS, 6)
        now[0] = 3.0  # 2 labels/s
        assert w.step() == 6
        publish(client, train_seconds=6.0)  # the first version: its round time stands in for the interval
        assert w.step() == 18  # 1.5 x 2 labels/s x 6 s
        assert w.version == 1
        assert w.pacing.refill == 0.5  # that top-up's lead time: the poll's wait (this clock stands still)
        assert w.step() == 0  # S holds them: nothing until half are labeled
        label_all(address, DIGITS, 10)  # S serves the newest model's candidates first
        now[0] = 8.0  # still 2 labels/s
        assert w.step() == 20 - 8  # (1.5 x 6 s + 2 x 0.5 s) x 2 labels/s, less the 8 left
        assert client.stats().candidates_submitted == 64 + 6 + 18 + 12


def test_a_round_waits_until_L_grew_by_min_growth(grpc_coordinator, caplog):
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        queue_random(client, 30)
        label_all(address, DIGITS, 10)
        recording = Recording(client)
        trainer = Trainer(recording, TrainerConfig(server_id="g", epochs=1, min_steps=0, min_labels=10,
                                                   min_growth=0.5, settle_seconds=3600), dataset=DIGITS)
        thread = threading.Thread(target=trainer.run, kwargs={"max_rounds": 2})
        with caplog.at_level(logging.DEBUG, logger="aal_rpc.trainer.loop"):
            thread.start()
            try:
                assert wait_until(lambda: [m.num_labels for m in client.models()] == [10], timeout=60, interval=0.02)
                label_all(address, DIGITS, 4)
                # the loop looked at 14 labels and declined: a round on them would have begun here
                assert wait_until(lambda: said(caplog, "g: 14 labels; the next round waits for 15"), timeout=30,
                                  interval=0.02)
                assert [kwargs["num_labels"] for kwargs in recording.of("begin_round")] == [10]
                label_all(address, DIGITS, 1)
                thread.join(60)
            finally:
                trainer.stop()
                thread.join(10)
        assert [m.num_labels for m in client.models()] == [10, 15]


def test_once_labels_stop_coming_the_last_ones_are_trained_on_however_little_l_grew(grpc_coordinator):
    address, _ = grpc_coordinator
    with CoordinatorClient(address) as client:
        queue_random(client, 30)
        label_all(address, DIGITS, 10)
        trainer = Trainer(client, TrainerConfig(server_id="g", epochs=1, min_steps=0, min_labels=10, min_growth=0.5,
                                                settle_seconds=2.0), dataset=DIGITS)
        thread = threading.Thread(target=trainer.run, kwargs={"max_rounds": 2})
        thread.start()
        try:
            assert wait_until(lambda: [m.num_labels for m in client.models()] == [10], timeout=60, interval=0.02)
            label_all(address, DIGITS, 2)  # 12 < 15: growth alone would never train on them
            thread.join(60)
        finally:
            trainer.stop()
            thread.join(10)
        assert [m.num_labels for m in client.models()] == [10, 12]


def test_later_rounds_continue_the_last_model_with_a_quarter_of_the_steps(grpc_coordinator, monkeypatch):
    address, _ = grpc_coordinator
    rounds = []
    train = trainer_module.train

    def recording_train(model, x, y, **kwargs):
        rounds.append((model, kwargs["epochs"], kwargs["min_steps"]))
        return train(model, x, y, **kwargs)

    monkeypatch.setattr(trainer_module, "train", recording_train)
    with CoordinatorClient(address) as client:
        queue_random(client, 10)
        label_all(address, DIGITS, 10)
        trainer = Trainer(client, TrainerConfig(server_id="s", epochs=8, min_steps=40, paced=False), dataset=DIGITS)
        assert trainer.config.warm_start  # the default (docs/RECIPE.md section 4)
        x, y = DIGITS.x_pool[:10], DIGITS.y_pool[:10].astype(np.int64)
        trainer.train_round(x[:5], y[:5], 5)
        trainer.train_round(x, y, 10)
    (first, epochs, steps), (second, warm_epochs, warm_steps) = rounds
    assert second is first
    assert (epochs, steps, warm_epochs, warm_steps) == (8, 40, 2, 10)


def test_a_first_round_on_few_labels_is_short_and_its_steps_are_published(grpc_coordinator, monkeypatch):
    address, _ = grpc_coordinator
    rounds = []
    train = trainer_module.train

    def recording_train(model, x, y, **kwargs):
        rounds.append((kwargs["epochs"], kwargs["min_steps"]))
        return train(model, x, y, **kwargs)

    monkeypatch.setattr(trainer_module, "train", recording_train)
    with CoordinatorClient(address) as client:
        queue_random(client, 12)
        label_all(address, DIGITS, 12)
        trainer = Trainer(client, TrainerConfig(server_id="s"), dataset=DIGITS)  # paced, the default
        x, y = DIGITS.x_pool[:12], DIGITS.y_pool[:12].astype(np.int64)
        trainer.train_round(x, y, 12)
        assert rounds == [(1, STEPS_PER_LABEL * 12)]  # not the recipe's 600 steps
        assert client.models()[-1].metrics["train_steps"] == STEPS_PER_LABEL * 12


def test_a_round_cut_short_by_the_pace_is_followed_by_a_full_one_once_labels_stop(grpc_coordinator, monkeypatch):
    address, _ = grpc_coordinator
    rounds = []
    train, paced = trainer_module.train, trainer_module.round_steps

    def recording_train(model, x, y, **kwargs):
        rounds.append((len(y), kwargs["epochs"], kwargs["min_steps"]))
        return train(model, x, y, **kwargs)

    def first_cut_short(n, **kwargs):  # as if labels had come fast while the first round ran
        return RoundBudget(MIN_STEPS, "pace") if not rounds else paced(n, **kwargs)

    monkeypatch.setattr(trainer_module, "train", recording_train)
    monkeypatch.setattr(trainer_module, "round_steps", first_cut_short)
    with CoordinatorClient(address) as client:
        queue_random(client, 12)
        label_all(address, DIGITS, 12)
        config = TrainerConfig(server_id="s", epochs=2, min_steps=40, min_labels=12, settle_seconds=0.2,
                               warm_start=False)
        Trainer(client, config, dataset=DIGITS).run(max_rounds=2)
        # the same 12 labels again, in a round as long as 12 labels call for (the pace no longer cuts it short)
        assert rounds == [(12, 1, MIN_STEPS), (12, 1, STEPS_PER_LABEL * 12)]
        assert [m.num_labels for m in client.models()] == [12, 12]


class FakeStream:
    """L as a finite stream of records; the trainer's follower folds them in and returns."""

    def __init__(self, records):
        self._msgs = [record_to_proto(r) for r in records]

    def __iter__(self):
        return iter(self._msgs)

    def cancel(self):
        pass


class OfflineClient:
    """What a Trainer asks of a coordinator before and during a round, without one."""

    def __init__(self, records):
        self._records = records
        self.uploads = []

    def task(self):
        return TASK

    def follow_labels(self, after_seq):
        return FakeStream(self._records)

    def upload_model(self, weights, **kwargs):
        self.uploads.append(kwargs)
        return SimpleNamespace(version=len(self.uploads))

    def models(self):  # no pretrained encoder to start from
        return []


def labeled(rows, *, strategy="random", first_seq=1):
    return [LabeledRecord(seq=first_seq + i, item_id=str(row), label=int(DIGITS.y_pool[row]), annotator_id="a",
                          payload=Payload.from_array(DIGITS.x_pool[row]), provenance=Provenance("w", strategy, 0, 0.0),
                          queued_at=0.0, leased_at=0.0, labeled_at=0.0) for i, row in enumerate(rows)]


def test_a_semi_supervised_round_learns_from_the_pool_items_in_neither_L_nor_the_audit(monkeypatch):
    in_l, audit = [3, 10, 11, 500], [7, 1200]
    client = OfflineClient(labeled(in_l) + labeled(audit, strategy=AUDIT_STRATEGY, first_seq=5))
    trainer = Trainer(client, TrainerConfig(server_id="s", epochs=1, min_steps=2, semi_supervised=True),
                      dataset=DIGITS)
    trainer._follow()  # folds in the finite stream
    rest = np.setdiff1d(np.arange(len(DIGITS.x_pool)), in_l + audit)
    assert np.array_equal(trainer.unlabeled_pool(), DIGITS.x_pool[rest])

    monkeypatch.setattr(trainer_module, "MAX_UNLABELED", 50)  # a large pool: a random sample of it each round
    sample = trainer.unlabeled_pool()
    matches = [np.flatnonzero((DIGITS.x_pool == x).all(axis=(1, 2, 3))) for x in sample]
    rows = {int(r) for m in matches for r in m}
    assert len(sample) == 50 and rows.isdisjoint(in_l + audit)

    rounds = []
    train = trainer_module.train

    def recording_train(model, x, y, **kwargs):
        rounds.append((len(y), kwargs["semi_supervised"], len(kwargs["unlabeled"])))
        return train(model, x, y, **kwargs)

    monkeypatch.setattr(trainer_module, "train", recording_train)
    x, y = DIGITS.x_pool[in_l], DIGITS.y_pool[in_l].astype(np.int64)
    trainer.train_round(x, y, 4)
    assert rounds == [(4, True, 50)] and len(client.uploads) == 1


def test_a_supervised_only_round_is_given_no_unlabeled_items(monkeypatch):
    rounds = []
    monkeypatch.setattr(trainer_module, "train", lambda model, x, y, **kwargs: rounds.append(kwargs["unlabeled"]))
    trainer = Trainer(OfflineClient(labeled([1, 2])), TrainerConfig(server_id="s", epochs=1, min_steps=1),
                      dataset=DIGITS)
    assert not trainer.config.semi_supervised  # the recipe's default (docs/RECIPE.md section 7)
    trainer.train_round(DIGITS.x_pool[[1, 2]], DIGITS.y_pool[[1, 2]].astype(np.int64), 2)
    assert rounds == [None]

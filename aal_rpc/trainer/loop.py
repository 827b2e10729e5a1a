"""The trainer loop (paper §3.1, eq. 1): g_i = A(L), repeated whenever L has grown since the last round.

A follower thread streams L into memory; the client resumes the stream after its last record whenever it
breaks, however long the coordinator is out of reach (client/retry.py). The training loop snapshots what has
arrived, trains (the first round from scratch, later ones warm-started by default; each as long as the pace of
labeling allows, trainer/pacing.py), evaluates on the dataset's
held-out split and uploads the weights. A round waits until L has grown by `min_growth` since this server's last
round, so versions (each downloaded by every worker) come in proportion to what they add, not one per label; once
no label has come for `settle_seconds`, whatever arrived is trained on.
Several trainers race on the same L (§3.2); before each round a trainer asks the coordinator, which staggers
their rounds (coordinator/rounds.py). Weights that are not all finite (a diverged round) are never published.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np
import torch

from aal_rpc.client import CoordinatorClient
from aal_rpc.consensus import Votes, consensus
from aal_rpc.data import Dataset, load_task_dataset
from aal_rpc.frozen import FROZEN_BACKBONE, EmbeddingCache, backbone_fingerprint, embed_rows, head_probabilities
from aal_rpc.models import Classifier, build_model
from aal_rpc.measures import AUDIT_CORRECT, AUDIT_LABELS, LabelRate
from aal_rpc.pretraining import pretrain
from aal_rpc.serde import load_weights_file, record_from_proto, weight_spec, weights_from_bytes, weights_to_bytes
from aal_rpc.trainer.pacing import RoundBudget, full_steps, round_steps
from aal_rpc.trainer.stopset import StopSet
from aal_rpc.training import RECIPE, WARM_RECIPE, predict_proba, probability_metrics, train
from aal_rpc.types import AUDIT_STRATEGY, PRETRAIN_STEPS, is_encoder

log = logging.getLogger(__name__)

MAX_ROUND_WAIT = 5.0  # longest pause before asking again to begin a round (new labels may change the answer)
# a semi-supervised round learns from at most this many of the pool's unlabeled items, drawn afresh each round: a
# FixMatch step draws 64 of them (batch 32), so a round of 600 steps sees about 38,000 draws
MAX_UNLABELED = 20_000


@dataclass(frozen=True)
class TrainerConfig:
    """A server's training round: the measured recipe by default (aal_rpc.training.RECIPE, docs/RECIPE.md).

    With `warm_start`, the first round (and the one after a diverged round) trains a new model with `epochs` and
    `min_steps`; each later round continues the last model for a quarter of them (training.WARM_RECIPE)."""

    server_id: str
    epochs: int = RECIPE.epochs
    batch_size: int = RECIPE.batch_size
    lr: float = RECIPE.lr
    weight_decay: float = RECIPE.weight_decay
    augment: bool = RECIPE.augment  # random shifts, rotations, crops and flips of picture batches (augment_batch)
    mixed_precision: bool = RECIPE.mixed_precision  # bfloat16/float16 steps on CUDA; False: float32 there too
    # warm by default: measured on digits (docs/RECIPE.md section 4), 0.980 against 0.964 from scratch at 400 labels,
    # in a quarter of the training time, so workers score with models 4x fresher
    warm_start: bool = True
    seed: int = 0
    device: str = "cpu"
    min_new_labels: int = 1  # train again once this many labels arrived since the last round
    # ... and L grew by this fraction since then: O(log L) versions for every worker to download rather than one
    # per label, while early rounds, where each label moves accuracy most, stay a few labels apart. Two servers
    # alternate, so versions come about 10% of L apart (work_per_label in benchmarks/)
    min_growth: float = 0.2
    # ... unless no label has come for this long: then whatever arrived is trained on, so the last labels of a
    # budget (or of a quiet spell) always reach a model however little L grew
    settle_seconds: float = 5.0
    min_labels: int = 1  # the first round waits for this many labels (an initial labeled set)
    # a safetensors file of the task's architecture's weights that a new model (the first round's, one after a
    # diverged round, every round's from scratch) starts from instead of random ones; checked when the trainer starts
    init_weights: str | None = None
    min_steps: int = RECIPE.min_steps  # optimizer steps per round at least (epochs repeat until then)
    # rounds follow how fast labels arrive (trainer/pacing.py): short while L is small or labels come fast, the
    # full round above when there is time. False: every round is a full round
    paced: bool = True
    # contrastive pretraining on the pool before the first labeled round (aal_rpc/pretraining.py), this many steps,
    # when no model is published yet: the encoder is published (types.is_encoder) for the selectors' cold start,
    # and every trainer's first model starts from it. 0: none (the default: on digits28 on a CPU, 150 steps gave
    # an encoder no better than random weights, docs/RECIPE.md)
    pretrain_steps: int = 0
    # rounds also learn from the dataset's pool items that are not in L (FixMatch, training.train's `unlabeled`):
    # off by default, as in the recipe (docs/RECIPE.md section 7)
    semi_supervised: bool = RECIPE.semi_supervised
    # train the head only (a linear layer) on the embeddings of the backbone a new model starts with (init_weights',
    # a pretrained encoder's, or else the first model's random one), each item embedded once (aal_rpc.frozen)
    freeze_backbone: bool = False

    def __post_init__(self):
        if self.freeze_backbone and self.semi_supervised:
            raise ValueError("a frozen backbone's head trains on labeled embeddings only, without unlabeled items")


def warm_round(epochs: int, min_steps: int) -> tuple[int, int]:
    """Epochs and least steps of a warm-started round, given a full round's: WARM_RECIPE's share of RECIPE's (a
    quarter), the one-cycle schedule restarted (docs/RECIPE.md section 4)."""
    return (max(1, epochs * WARM_RECIPE.epochs // RECIPE.epochs),
            min_steps * WARM_RECIPE.min_steps // RECIPE.min_steps)


class Trainer:
    def __init__(self, client: CoordinatorClient, config: TrainerConfig, dataset: Dataset | None = None):
        self.client = client
        self.config = config
        self.task = client.task()
        self.dataset = dataset or load_task_dataset(self.task)
        self._xs: list[np.ndarray] = []
        self._ys: list[int] = []
        self._index: dict[str, int] = {}  # item id -> its row in _xs/_ys (a correction replaces that row's label)
        # audit labels (items drawn uniformly at random, types.AUDIT_STRATEGY): never trained on, every model is
        # evaluated on them, which gives an unbiased estimate of its accuracy on the pool
        self._audit_x: list[np.ndarray] = []
        self._audit_y: list[int] = []
        self._audit_index: dict[str, int] = {}
        self._through_seq = 0  # the last record of L folded into _xs/_ys
        # every annotator's current label of every item: with several labels per item (a crowd), an item is trained
        # on (and audited by) its consensus label (consensus.py), worked out anew before each round
        self._votes = Votes()
        self._crowd = False  # some item has labels of several annotators
        self._agreed_at = -1  # the seq through which labels were last set to their consensus
        # records folded into _xs/_ys: an item's first label, another annotator's, a correction; rounds wait for
        # these to grow (with a crowd, a second opinion can change what an item is trained on)
        self._labels = 0
        self._last_record_at = time.monotonic()  # when the follower last folded in a record
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._stream = client.follow_labels(0)  # opened by the follower thread
        self._failure: grpc.RpcError | None = None  # what ended the follower, if not a stop
        self._model: Classifier | None = None
        self._round_seconds = 0.0  # the last round's time, train to publish (the coordinator spaces rounds by it)
        self._label_rate = LabelRate()  # how fast L grows, as the follower sees it (rounds are paced by it)
        self._step_seconds: float | None = None  # the last round's seconds per optimizer step
        self._cut_short = False  # the last round was bound by the pace (trainer/pacing.py): polish once labels stop
        self.rounds = 0
        self._stop_set = StopSet(client, self.task, self.dataset, device=config.device)  # the stopping signal
        self._cache = EmbeddingCache()  # with a frozen backbone: embeddings of L, the audit and the test set
        self._backbone: str | None = None  # ... under the fingerprint of the backbone of the model trained
        # InvalidArgument, before any label is followed, for weights that are not the task's architecture's
        self._init_state = None if config.init_weights is None else load_weights_file(
            config.init_weights, weight_spec(self.task.architecture, self.task.input_shape, self.task.num_classes))

    # -- following L ----------------------------------------------------------------------------------

    def _follow(self) -> None:
        try:
            for msg in self._stream:
                r = record_from_proto(msg)
                with self._cv:
                    if r.item_id in self._audit_index or (
                            r.provenance.strategy == AUDIT_STRATEGY and r.item_id not in self._index):
                        xs, ys, index = self._audit_x, self._audit_y, self._audit_index
                    else:
                        xs, ys, index = self._xs, self._ys, self._index
                    row = index.get(r.item_id)
                    if row is None:
                        assert r.payload is not None, "StreamLabels sends each record with its payload"
                        index[r.item_id] = len(ys)
                        xs.append(r.payload.to_array())
                        ys.append(r.label)
                    else:  # a correction (the item's latest record holds its label), or another annotator's label
                        ys[row] = r.label
                        self._crowd = self._crowd or not r.supersedes
                    self._votes.add(r)
                    if xs is self._xs:
                        self._labels += 1
                    self._through_seq = r.seq
                    self._last_record_at = time.monotonic()
                    self._label_rate.observe(r.seq, self._last_record_at)
                    self._cv.notify_all()
        except grpc.RpcError as exc:  # not an outage (those are ridden out): a token without the server role, say
            if not self._stop.is_set():
                self._failure = exc
                self.stop()

    def _agree_locked(self) -> None:
        """With a crowd, set every item's label (trained on or audited) to its consensus (consensus.py); the caller
        holds `_cv`."""
        if not self._crowd or self._agreed_at == self._through_seq:  # none, or no record since the last time
            return
        self._agreed_at = self._through_seq
        agreed = consensus(self._votes, self.task.num_classes).items
        for index, ys in ((self._index, self._ys), (self._audit_index, self._audit_y)):
            for item_id, row in index.items():
                if item_id in agreed:
                    ys[row] = agreed[item_id].label

    def stop(self) -> None:
        self._stop.set()
        self._stream.cancel()
        with self._cv:
            self._cv.notify_all()

    # -- training rounds ------------------------------------------------------------------------------

    def run(self, *, max_rounds: int | None = None) -> None:
        """Train rounds until stopped (or `max_rounds`). Outages are ridden out by the client's retries; any other
        failed call, the label stream's included, ends the loop with its error."""
        follower = threading.Thread(target=self._follow, name="label-follower", daemon=True)
        follower.start()
        if self.config.pretrain_steps and not self.client.models():
            self.pretrain_encoder()
        trained_through = 0
        # in sync mode a round's labels arrive together; training on part of a round helps nobody
        sync = self.task.mode == "sync"
        min_new = max(self.config.min_new_labels, self.task.batch_size if sync else 1)

        said = -1  # the label count last logged as not enough

        def ready() -> bool:
            nonlocal said
            settled = time.monotonic() - self._last_record_at >= self.config.settle_seconds
            if settled and self._cut_short and self._labels == trained_through:
                return True  # labeling paused or ended after a short round: a full round on the same labels
            growth = 0 if sync or settled else math.ceil(self.config.min_growth * trained_through)
            n, needed = self._labels, max(self.config.min_labels, trained_through + max(min_new, growth))
            if n < needed and n != said:
                said = n
                log.debug("%s: %d labels; the next round waits for %d", self.config.server_id, n, needed)
            return n >= needed

        try:
            while not self._stop.is_set() and (max_rounds is None or self.rounds < max_rounds):
                with self._cv:
                    self._cv.wait_for(lambda: self._stop.is_set() or ready(), timeout=1.0)
                    if self._stop.is_set() or not ready():
                        continue
                    n, items, seq = self._labels, len(self._ys), self._through_seq
                # staggered with the other servers: a round that repeats one, or starts on another's heels, waits.
                # A polish (a full round on the labels this server's short round had) repeats only its own work
                polish = n == trained_through
                wait, why = (0.0, "") if polish else self.client.begin_round(
                    server_id=self.config.server_id, num_labels=n, round_seconds=self._round_seconds)
                if wait > 0:
                    log.debug("%s waits %.2fs before a round on %d labels: %s", self.config.server_id, wait, n, why)
                    with self._cv:
                        self._cv.wait_for(self._stop.is_set, timeout=min(wait, MAX_ROUND_WAIT))
                    continue
                with self._cv:  # the n labels claimed; items only join, and records arrive in seq order
                    self._agree_locked()
                    x, y = np.stack(self._xs[:items]), np.asarray(self._ys[:items], dtype=np.int64)
                self.train_round(x, y, seq)
                trained_through = n
        except grpc.RpcError:
            if not self._stop.is_set():
                raise  # stopped while a call was unanswered (ChannelClient.stop_retrying): nothing is lost
        finally:
            self.stop()
        if self._failure is not None:
            raise self._failure

    def new_model(self) -> Classifier:
        """A model to train anew: random weights, or `init_weights`' (read and checked when the trainer started),
        or else a pretrained encoder's, this trainer's or one the registry holds."""
        model = build_model(self.task.architecture, self.task.input_shape, self.task.num_classes)
        if self._init_state is None:
            self._init_state = self._published_encoder()
        if self._init_state is not None:
            model.load_state_dict(self._init_state)
        if self.config.freeze_backbone:  # every later new model keeps this backbone (and its cached embeddings)
            if self._init_state is None:
                self._init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self._backbone = backbone_fingerprint(model)
        return model

    def _published_encoder(self) -> dict[str, torch.Tensor] | None:
        """The weights of the newest pretrained encoder in the registry (types.is_encoder), if there is one."""
        encoders = [info for info in self.client.models() if is_encoder(info)]
        if not encoders:
            return None
        _, data = self.client.download_model(encoders[-1].version)
        log.info("%s starts its models from the pretrained encoder v%d", self.config.server_id, encoders[-1].version)
        return weights_from_bytes(data)

    def pretrain_encoder(self) -> None:
        """Pretrain a model on the pool's unlabeled items (pretraining.pretrain) and publish it as an encoder: no
        labels, PRETRAIN_STEPS in its metrics. Its weights start this trainer's models."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        model = self.new_model()
        t0 = time.monotonic()
        steps, loss = pretrain(model, self.unlabeled_pool(), steps=cfg.pretrain_steps, seed=cfg.seed,
                               device=cfg.device, should_stop=self._stop.is_set)
        if self._stop.is_set() or not steps:
            return
        state = model.state_dict()
        info = self.client.upload_model(weights_to_bytes(state), server_id=cfg.server_id, trained_seq=0, num_labels=0,
                                        architecture=self.task.architecture,
                                        metrics={PRETRAIN_STEPS: float(steps), "pretrain_loss": loss,
                                                 "train_seconds": time.monotonic() - t0})
        self._init_state = {k: v.detach().clone() for k, v in state.items()}
        log.info("%s published the encoder v%d: %d contrastive steps on %d unlabeled items, loss %.3f, %.1fs",
                 cfg.server_id, info.version, steps, len(self.dataset.x_pool), loss, time.monotonic() - t0)

    def train_round(self, x: np.ndarray, y: np.ndarray, seq: int) -> None:
        cfg = self.config
        t0 = time.monotonic()
        warm = cfg.warm_start and self._model is not None
        if not warm:
            torch.manual_seed(cfg.seed + self.rounds)
            self._model = self.new_model()
        assert self._model is not None  # warm: the last round's model; else the one just built
        epochs, min_steps = warm_round(cfg.epochs, cfg.min_steps) if warm else (cfg.epochs, cfg.min_steps)
        budget = self.round_budget(len(y), epochs, min_steps)
        if budget.bound != "full":  # a paced round: `budget.steps` steps in all
            epochs, min_steps = 1, budget.steps
        t_train = time.monotonic()
        net, inputs = (self._model.head, self._embeddings(self._model, "labeled", x)) if cfg.freeze_backbone else (
            self._model, x)
        train(net, inputs, y, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
              seed=cfg.seed + self.rounds, device=cfg.device, min_steps=min_steps, should_stop=self._stop.is_set,
              weight_decay=cfg.weight_decay, augment=cfg.augment, mixed_precision=cfg.mixed_precision,
              semi_supervised=cfg.semi_supervised, unlabeled=self.unlabeled_pool() if cfg.semi_supervised else None)
        self._step_seconds = (time.monotonic() - t_train) / budget.steps
        self._cut_short = budget.bound == "pace"
        if self._stop.is_set():  # stopped mid-round: these weights are half-trained, publish nothing
            return
        state = self._model.state_dict()
        if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
            log.warning("%s: the round on %d labels diverged (weights not all finite); not published, and the next "
                        "round starts afresh", cfg.server_id, len(y))
            self._model = None
            return
        metrics = self.evaluate(self._model)
        metrics.update(self._stop_set.measure(self._model))
        metrics["train_seconds"] = time.monotonic() - t0
        metrics["train_steps"] = float(budget.steps)
        if cfg.freeze_backbone:
            metrics[FROZEN_BACKBONE] = 1.0
        info = self.client.upload_model(weights_to_bytes(state), server_id=cfg.server_id,
                                        trained_seq=seq, num_labels=len(y), architecture=self.task.architecture,
                                        metrics=metrics)
        self._stop_set.published(info.version)
        self._round_seconds = time.monotonic() - t0
        self.rounds += 1
        held_out = f"accuracy {metrics['accuracy']:.4f}, " if "accuracy" in metrics else ""  # no test set: none
        log.info("%s published v%d: %d labels, %saudit %d/%d, %d steps (%s), %.2fs", cfg.server_id, info.version,
                 len(y), held_out, int(metrics.get(AUDIT_CORRECT, 0)), int(metrics.get(AUDIT_LABELS, 0)),
                 budget.steps, budget.bound, metrics["train_seconds"])

    def unlabeled_pool(self) -> np.ndarray:
        """The dataset's pool items whose ids are neither in L nor among the audit labels (which a model is judged
        on, so never learned from, with labels or without): at most MAX_UNLABELED of them, drawn at random each
        round, in pool order."""
        taken = np.zeros(len(self.dataset.x_pool), dtype=bool)
        with self._cv:
            known = [*self._index, *self._audit_index]
        for item_id in known:
            try:
                taken[self.dataset.index_of(item_id)] = True
            except KeyError:  # an id this trainer's copy of the pool does not hold: nothing to leave out
                pass
        rows = np.flatnonzero(~taken)
        if len(rows) > MAX_UNLABELED:
            rng = np.random.default_rng(self.config.seed + self.rounds)
            rows = np.sort(rng.choice(rows, MAX_UNLABELED, replace=False))
        return self.dataset.x_pool[rows]

    def round_budget(self, n: int, epochs: int, min_steps: int) -> RoundBudget:
        """The steps of a round on n labels (trainer/pacing.py): the full round of `epochs` and `min_steps`, or
        fewer while L is small or labels come fast. A quiet spell (no label for `settle_seconds`) gets the full
        round: the last labels of a budget are trained on properly."""
        cfg = self.config
        full = full_steps(n, epochs=epochs, min_steps=min_steps, batch_size=cfg.batch_size)
        if not cfg.paced:
            return RoundBudget(full, "full")
        quiet = time.monotonic() - self._last_record_at >= cfg.settle_seconds
        return round_steps(n, full=full, label_rate=None if quiet else self._label_rate.rate,
                           step_seconds=self._step_seconds, growth=cfg.min_growth)

    def evaluate(self, model: Classifier) -> dict[str, float]:
        """Held-out metrics (accuracy, loss) when the task has a labeled test set, and the audit's counts
        (measures.AUDIT_CORRECT of measures.AUDIT_LABELS) when audit labels have arrived."""
        metrics: dict[str, float] = {}
        if len(self.dataset.y_test):
            metrics.update(probability_metrics(self._probabilities(model, "test", self.dataset.x_test),
                                               self.dataset.y_test))
        with self._cv:
            n = len(self._audit_y)
            x = np.stack(self._audit_x[:n]) if n else None
            y = np.asarray(self._audit_y[:n], dtype=np.int64)
        if x is not None:  # n > 0
            probs = self._probabilities(model, "audit", x)
            metrics[AUDIT_CORRECT] = float((probs.argmax(axis=1) == y).sum())
            metrics[AUDIT_LABELS] = float(n)
        return metrics

    def _probabilities(self, model: Classifier, name: str, x: np.ndarray) -> np.ndarray:
        """The model's class probabilities of x: a full pass, or with a frozen backbone its head on the cached
        embeddings (`name`: an array that only grows, as the test set and the audit's items do)."""
        if not self.config.freeze_backbone:
            return predict_proba(model, x, device=self.config.device)[0]
        return head_probabilities(model.head, self._embeddings(model, name, x))

    def _embeddings(self, model: Classifier, name: str, x: np.ndarray) -> np.ndarray:
        """The frozen backbone's embeddings of x, each row embedded once per backbone (frozen.EmbeddingCache)."""
        backbone, device = self._backbone, self.config.device
        assert backbone is not None  # new_model fingerprints the backbone it freezes
        return self._cache.rows(backbone, name, x, lambda rows: embed_rows(model, rows, device=device))

"""The selector loop (paper §3.1, eq. 2): S_j = strategy_j(g*, D_j) over this worker's shard D_j.

Each step waits (long poll) for a model newer than the one held and downloads the latest, learns which of its
items are already queued or labeled, and submits the best batch among the rest when S needs more from this shard.
Scores are computed once per model version and reused until the next one. Before any model exists, the worker
proposes a seeded random batch (the cold start). While the model held is a pretrained encoder (types.is_encoder: no
label trained on, its class probabilities meaningless), the cold start takes typical and diverse items of its
embedding instead (strategies.TypiClust), sized the same; the worker's own strategy waits for a model trained on labels.

Work goes with the labels. A worker downloads the version that is latest when it downloads, and does not score
with one that was superseded meanwhile. With a model, it submits what annotators will label from its shard
before its next model (selector/pacing.py), topping up when half of that is gone, never more than S's room.

Items the model gives non-finite outputs, and candidates a strategy scores non-finite, are never proposed. A
worker that has nothing to propose while the pool wants candidates (a diverged model, an exhausted shard)
submits nothing, says why once, and waits longer and longer for a new model before looking again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import grpc
import numpy as np
import torch

from aal_rpc.client import CoordinatorClient
from aal_rpc.data import Dataset, load_task_dataset
from aal_rpc.frozen import EmbeddingCache, backbone_fingerprint, embed_rows, has_frozen_backbone, head_probabilities
from aal_rpc.models import Classifier, build_model
from aal_rpc.serde import weights_from_bytes
from aal_rpc.strategies import Strategy, get_strategy
from aal_rpc.strategies.activelab import ActiveLabStrategy, annotator_weights, model_weight, relabel_scores
from aal_rpc.strategies.typiclust import TypiClust
from aal_rpc.strategies.uniform import RandomStrategy
from aal_rpc.training import predict_proba
from aal_rpc.types import AUDIT_STRATEGY, RELABEL_STRATEGY, ModelInfo, Payload, is_encoder
from aal_rpc.selector.pacing import Pacing
from aal_rpc.selector.votes import LabelVotes

log = logging.getLogger(__name__)

MAX_IDLE_WAIT = 30.0  # longest wait for a new model while nothing can be proposed (the pool is looked at after it)
CATCH_UP_DOWNLOADS = 3  # downloads in a row while versions keep superseding the one just downloaded; then score
COLD_STARTS = ("typical", "random")  # WorkerConfig.cold_start


def model_guesses(probs: np.ndarray) -> list[tuple[int | None, float]]:
    """The model's guess for each row of class probabilities: (the most probable class, its probability), or (None,
    0.0) for every row when there are no probabilities (a cold start's picks carry no guess). Annotation tools may
    offer it as a pre-annotation (types.Provenance.guess)."""
    if probs.ndim != 2 or probs.shape[1] == 0:
        return [(None, 0.0)] * len(probs)
    best = probs.argmax(axis=1)
    return [(int(k), float(min(1.0, max(0.0, p)))) for k, p in zip(best, probs[np.arange(len(probs)), best])]


@dataclass(frozen=True)
class WorkerConfig:
    worker_id: str
    shard_index: int = 0
    num_shards: int = 1
    strategy: str = "entropy"
    batch_size: int = 20
    seed: int = 0
    poll_seconds: float = 0.5  # longest wait for a new model before checking the pool's demand again
    device: str = "cpu"
    strategy_options: dict = field(default_factory=dict)  # keyword arguments of the strategy's constructor
    # before any model: "random" picks; or "typical" items (TypiClust) of the embedding the task's network gives at
    # its seeded initial weights, until a pretrained encoder or a model trained on labels arrives. Random by default:
    # end to end, the untrained network's typical items never did better (docs/RESULTS.md, "The ablation": final
    # accuracy lower in 6 of 6 seeds on digits, the same on digits28, and the first model 2-3 s later). Either way
    # a published pretrained encoder's typical items follow
    cold_start: str = "random"


def shard_rows(x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """x[indices]: a view when the rows are one contiguous run (a single shard), else a copy."""
    if len(indices) and indices[-1] - indices[0] + 1 == len(indices) and (np.diff(indices) == 1).all():
        return x[indices[0]:indices[-1] + 1]
    return x[indices]


def finite_rows(a: np.ndarray) -> np.ndarray:
    """Which rows of a 2-d array hold only finite values. Almost always all of them, which one pass over the whole
    array tells (0.5 ms for 200,000 x 10, where isfinite(a).all(axis=1), a reduction along rows of ten, takes 7);
    row by row only when some value is not."""
    finite = np.isfinite(a)
    return np.ones(len(a), dtype=bool) if finite.all() else finite.all(axis=1)


class Selector:
    """One worker's loop. `clock` (monotonic seconds) times L's growth for the pacing; tests inject one."""

    def __init__(self, client: CoordinatorClient, config: WorkerConfig, dataset: Dataset | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 <= config.shard_index < config.num_shards:
            raise ValueError(f"shard {config.shard_index} of {config.num_shards} does not exist")
        self.client = client
        self.config = config
        self.task = client.task()
        self.dataset = dataset or load_task_dataset(self.task)
        self.indices = self.dataset.shard_indices(config.shard_index, config.num_shards)
        self._x = shard_rows(self.dataset.x_pool, self.indices)  # the shard's inputs, gathered once, not per model
        self.item_ids = np.array(self.dataset.item_ids)[self.indices]
        self._row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}
        self.strategy = get_strategy(config.strategy, seed=config.seed, **config.strategy_options)
        self._cold_start = RandomStrategy(seed=config.seed)
        self._typical = self.strategy if isinstance(self.strategy, TypiClust) else TypiClust(seed=config.seed)
        self._audit_rng = np.random.default_rng([config.seed, config.shard_index, 0xA0D17])
        self._audit_ids: set[str] = set()  # audit items this worker submitted (never proposed again by a strategy)
        self.model: Classifier | None = None
        self.version = 0
        self._encoder = False  # the model held is a pretrained encoder (types.is_encoder)
        self._probs: np.ndarray | None = None
        self._embeddings: np.ndarray | None = None
        # models whose trainer froze their backbone (frozen.has_frozen_backbone): the shard's embeddings are kept by
        # the backbone's fingerprint, and a later version that shares it is scored with its head alone
        self._cache = EmbeddingCache()
        self._backbone: str | None = None
        self._taken = np.zeros(len(self.indices), dtype=bool)  # labeled or skipped
        self._labeled_seq = 0
        self._usable: np.ndarray | None = None  # items the held model gives finite outputs
        self._stop = threading.Event()
        self._clock = clock
        self.pacing = Pacing(num_shards=config.num_shards)
        self._fresh: set[str] = set()  # items submitted with the held model and still in S
        self._more_now = False  # the last batch was cut at batch_size and S wants more: no wait before the next
        if config.cold_start not in COLD_STARTS:
            raise ValueError(f"unknown cold start {config.cold_start!r}; expected one of {COLD_STARTS}")
        # adaptive re-labeling (strategies.activelab): L's labels, and the most an item may get (GetShardState)
        self._votes = (LabelVotes(client, self.task.num_classes) if isinstance(self.strategy, ActiveLabStrategy)
                       else None)
        self._max_labels = 1
        # each labeled item's class probabilities under the model held when its first label arrived: a model not
        # trained on that label, so its view is out of sample (a model's view of its own training items agrees with
        # their labels, careless or not)
        self._held_out: dict[str, np.ndarray] = {}
        if config.cold_start == "typical" and self.strategy.needs_model:
            self.set_model(self.untrained_encoder(), 0, encoder=True)
        self._wait = config.poll_seconds  # the next long poll's wait while the pool wants nothing more now
        self._said: set[tuple[str, int]] = set()  # (what, model version) already logged

    def stop(self) -> None:
        if self._votes is not None:
            self._votes.stop()
        self._stop.set()

    def run(self, *, max_steps: int | None = None) -> None:
        """Step until stopped. Outages are ridden out by the client's retries (a daemon's client retries without
        limit); any other failed call ends the loop with its error."""
        steps = 0
        while not self._stop.is_set() and (max_steps is None or steps < max_steps):
            try:
                self.step()
            except grpc.RpcError:
                if self._stop.is_set():  # stopped while a call was unanswered (see ChannelClient.stop_retrying)
                    return
                raise
            steps += 1

    # -- one step -------------------------------------------------------------------------------------

    def step(self) -> int:
        """Follow the model, then submit what the pool needs from this shard. Returns how many candidates were
        submitted."""
        wait = 0.0 if self._more_now else self._wait
        self._more_now = False
        info = self.client.latest_model(after_version=self.version, wait_seconds=wait)
        started = self._clock()  # a top-up's lead time: from here (and the poll's wait before) to its submission
        if info is not None and info.version != self.version and info.blob_available:
            self._observe_version(info)
            self._follow_latest()
        queued, demand = self._refresh_shard_state()
        demand -= self._submit_audit(queued, demand)
        wanted = self._wanted(queued, demand)
        if wanted <= 0:
            return 0
        relabeled = self._submit_relabels(queued, wanted)
        wanted -= relabeled
        if wanted <= 0:
            return relabeled
        # what is queued with the held model, or as an audit item, is not proposed again; an older model's queued
        # candidates (the cold start's, say) are scored anew and refreshed, so a pool that S holds whole still
        # gets the model's choices
        free = ~self._taken
        held = self._fresh.union(self._audit_ids) if self.model is not None else set(queued)
        free[[self._row_of[i] for i in queued if i in held and i in self._row_of]] = False
        free[[self._row_of[i] for i in self._audit_ids if i in self._row_of]] = False  # just submitted ones too
        strategy = self._strategy_now()
        probs: np.ndarray | None
        emb: np.ndarray | None
        if strategy is self._cold_start:
            rows = np.flatnonzero(free)
            probs, emb = np.zeros((len(rows), 0), np.float32), None
        else:
            probs, emb = self._scores(strategy)
            if probs is not None:  # never propose what the model gives non-finite outputs
                assert self._usable is not None  # found with the probabilities (_scores)
                broken = int((free & ~self._usable).sum())
                free &= self._usable
                if broken and free.any():
                    self._say_once("non-finite outputs", logging.WARNING, "model v%d gives non-finite outputs for "
                                   "%d free items of this shard; they are not proposed", self.version, broken)
                elif broken:
                    return self._idle("non-finite outputs", logging.WARNING, "model v%d gives non-finite outputs "
                                      "for every free item of this shard", self.version)
            rows = np.flatnonzero(free)
            if len(rows) < len(free):  # a copy of the free rows only when some are not free
                probs = probs[rows] if probs is not None else None
                emb = emb[rows] if emb is not None else None
            if probs is None:
                probs = np.zeros((len(rows), 0), np.float32)
        if len(rows) == 0:
            return self._idle("exhausted", logging.INFO, "every item of shard %d of %d is labeled, skipped or queued",
                              self.config.shard_index, self.config.num_shards)
        ids = self.item_ids[rows] if len(rows) < len(self.item_ids) else self.item_ids  # no copy when all are free
        sel = strategy.select(probs, wanted, embeddings=emb, item_ids=ids)
        chosen, scores = rows[sel.indices], np.asarray(sel.scores, dtype=np.float64)
        finite = np.isfinite(scores)
        if not finite.all():  # the coordinator refuses a batch holding one; drop them instead
            self._say_once("non-finite scores", logging.WARNING, "strategy %s scored %d of its %d picks non-finite "
                           "under model v%d; they are not proposed", strategy.name, int((~finite).sum()),
                           len(scores), self.version)
            chosen, scores = chosen[finite], scores[finite]
        if len(chosen) == 0:
            return self._idle("picked nothing", logging.WARNING, "strategy %s picked nothing from %d free items "
                              "under model v%d", strategy.name, len(rows), self.version)
        self._wait = self.config.poll_seconds
        clusters = sel.clusters[finite] if sel.clusters is not None else np.full(len(chosen), -1)
        # a model trained on labels guesses; the cold start's network (version 0) or a pretrained encoder does not
        guessing = self.version > 0 and not self._encoder
        guesses = model_guesses(probs[np.asarray(sel.indices)[finite]] if guessing else probs[:len(chosen), :0])
        candidates = [(self.item_ids[r], payload, float(v), int(c) if c >= 0 else None, *g)
                      for r, v, c, g, payload in zip(chosen, scores, clusters, guesses, self._payloads(chosen))
                      if payload is not None]
        if not candidates:
            return 0
        out = self.client.submit_candidates(worker_id=self.config.worker_id, strategy=strategy.name,
                                            model_version=self.version, candidates=candidates)
        self._fresh.update(c[0] for c in candidates)
        if strategy is self.strategy:  # a top-up of a model trained on labels (what the pacing sizes)
            self.pacing.observe_refill(wait + self._clock() - started)
        # all taken, and the batch was cut at batch_size: S may want more right away
        self._more_now = out.accepted + out.refreshed == len(candidates) == self.config.batch_size
        log.debug("%s submitted %d (accepted %d, rejected %d) from v%d", self.config.worker_id, len(candidates),
                  out.accepted, out.rejected, self.version)
        return len(candidates)

    def _submit_audit(self, queued: list[str], demand: int) -> int:
        """Keep this shard's audit items at the task's audit share of its labels (and one more, so the first
        estimate comes early): items drawn uniformly at random from the free ones, submitted with strategy
        AUDIT_STRATEGY. S serves them first (rules.PICK_ORDERS), the trainers keep them out of training and
        evaluate every model on them: an unbiased estimate of accuracy on the pool. Returns how many were sent."""
        share = self.task.audit_share
        if share <= 0 or self.task.mode == "sync" or demand <= 0:
            return 0
        in_s = set(queued)
        labeled = int(self._taken.sum())
        held = sum(1 for i in self._audit_ids if i in in_s or self._taken[self._row_of[i]])
        due = min(demand, int(share * labeled) + 1 - held)
        if due <= 0:
            return 0
        free = ~self._taken
        free[[self._row_of[i] for i in queued if i in self._row_of]] = False
        rows = np.flatnonzero(free)
        if len(rows) == 0:
            return 0
        chosen = self._audit_rng.choice(rows, size=min(due, len(rows)), replace=False)
        candidates = [(self.item_ids[r], payload, 0.0, None) for r, payload in zip(chosen, self._payloads(chosen))
                      if payload is not None]
        if not candidates:
            return 0
        self.client.submit_candidates(worker_id=self.config.worker_id, strategy=AUDIT_STRATEGY,
                                      model_version=self.version, candidates=candidates)
        self._audit_ids.update(c[0] for c in candidates)
        log.debug("%s submitted %d audit items (%d labels in the shard)", self.config.worker_id, len(chosen), labeled)
        return len(chosen)

    def _submit_relabels(self, queued: list[str], wanted: int) -> int:
        """Adaptive re-labeling (strategies.activelab), when the coordinator allows more labels per item: the
        `wanted` best items of this shard on one scale, new ones (the model's least confidence) and labeled ones
        below the cap (their labels and a model not trained on them weighed together: `_held_out`), and submit the
        labeled ones among them for one more label, with strategy RELABEL_STRATEGY. Returns how many were sent; the new ones are left to the step."""
        strategy = self._strategy_now()
        if self._votes is None or self._max_labels <= 1 or not isinstance(strategy, ActiveLabStrategy):
            return 0
        probs, _ = self._scores(strategy)
        if probs is None or self._usable is None:
            return 0
        agreed = self._votes.consensus()
        in_s = set(queued)
        mine = {i: self._held_out.setdefault(i, probs[self._row_of[i]]) for i in agreed.items
                if i in self._row_of and self._usable[self._row_of[i]]}
        ids = [i for i in mine if i not in in_s and len(agreed.items[i].votes) < self._max_labels]
        if not ids:
            return 0
        num_classes = self.task.num_classes
        scores = relabel_scores(np.stack([mine[i] for i in ids]), [agreed.items[i].votes for i in ids],
                                annotator_weights(agreed, mine, num_classes), model_weight(agreed, mine, num_classes),
                                [agreed.items[i].label for i in ids])
        new = strategy.score(probs[~self._taken & self._usable])
        best = np.argsort(-np.concatenate([scores, new]), kind="stable")[:wanted]
        picked = best[best < len(ids)]  # the labeled items among the best of both
        if len(picked) == 0:
            return 0
        rows = np.array([self._row_of[ids[k]] for k in picked], dtype=np.int64)
        candidates = [(ids[k], payload, float(scores[k]), None) for k, payload in zip(picked, self._payloads(rows))
                      if payload is not None]
        if not candidates:
            return 0
        out = self.client.submit_candidates(worker_id=self.config.worker_id, strategy=RELABEL_STRATEGY,
                                            model_version=self.version, candidates=candidates)
        log.debug("%s asked one more label of %d items (accepted %d) under v%d", self.config.worker_id,
                  len(candidates), out.accepted, self.version)
        return len(candidates)

    def _idle(self, what: str, level: int, message: str, *args) -> int:
        """Nothing to propose although the pool wants candidates: say why (once per model version), and wait
        longer for a new model before looking again, up to MAX_IDLE_WAIT."""
        self._say_once(what, level, message + "; nothing to propose: waiting for a new model or a change in the "
                       "pool", *args)
        self._wait = min(MAX_IDLE_WAIT, max(2 * self._wait, self.config.poll_seconds))
        return 0

    def _say_once(self, what: str, level: int, message: str, *args) -> None:
        if (what, self.version) not in self._said:
            self._said.add((what, self.version))
            log.log(level, "%s: " + message, self.config.worker_id, *args)

    def _strategy_now(self) -> Strategy:
        """The worker's strategy, but at the cold start: random picks before any model, typical items of the
        embedding (TypiClust) while the model held is an encoder, whose class probabilities mean nothing. A
        strategy that needs no model is never replaced."""
        if not self.strategy.needs_model:
            return self.strategy
        if self.model is None:
            return self._cold_start
        return self._typical if self._encoder else self.strategy

    def _wanted(self, queued: list[str], demand: int) -> int:
        """How many candidates to submit now, at most batch_size and S's room (`demand`, this shard's share).

        With a model, what the pacing expects annotators to label from this shard before the next model, less
        what this model's candidates still hold in S, once that has fallen to half; S's room while the pacing
        cannot tell yet. The cold start, a synchronous round (the coordinator sizes those) and a shard with
        nothing in S take the room. Before any model, the cold start asks for one batch shared among the shards
        (what annotators label while the first model trains), not for S's room: random picks that pile up in S
        would still be served after the first model arrives. The same while the model held is an encoder: its
        typical items are the cold start's, made better."""
        room = min(self.config.batch_size, demand)
        if room <= 0:
            return 0
        self._fresh.intersection_update(queued)
        if self.strategy.needs_model and (self.model is None or self._encoder) and self.task.mode != "sync":
            cold = -(-self.config.batch_size // self.config.num_shards)
            return max(0, min(room, cold - len(queued)))
        batch = self.pacing.batch()
        if self.model is None or self.task.mode == "sync" or not queued or batch is None:
            return room
        stock = len(self._fresh)
        return min(room, batch - stock) if stock <= batch // 2 else 0

    def _follow_latest(self) -> None:
        """Hold the latest model. The download asks for the version latest when it starts (never one superseded
        while this worker waited or worked), and a version superseded during its download is not scored: the
        next is downloaded instead, up to CATCH_UP_DOWNLOADS in a row."""
        for _ in range(CATCH_UP_DOWNLOADS):
            try:
                info, data = self.client.download_model(0)  # version 0: the latest
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                log.info("%s: the latest model could not be downloaded (pruned or none yet); waiting for the next",
                         self.config.worker_id)
                return
            if info.version == self.version:
                return
            model = build_model(self.task.architecture, self.task.input_shape, self.task.num_classes)
            model.load_state_dict(weights_from_bytes(data))
            self.set_model(model, info.version, encoder=is_encoder(info), frozen=has_frozen_backbone(info))
            self._observe_version(info)
            log.info("%s loaded model v%d%s", self.config.worker_id, info.version,
                     ", an encoder: the cold start picks typical items of its embedding" if self._encoder else "")
            newer = self.client.latest_model(after_version=self.version, wait_seconds=0.0)
            if newer is None or newer.version == self.version:
                return
            log.debug("%s: v%d was superseded by v%d while it downloaded; not scored", self.config.worker_id,
                      self.version, newer.version)

    def _observe_version(self, info: ModelInfo) -> None:
        """The pacing times the versions trained on labels; an encoder, published before any, would stretch the
        first interval by all the time before the first labels."""
        if not is_encoder(info):
            self.pacing.observe_version(info)

    def untrained_encoder(self) -> Classifier:
        """The task's network at initial weights seeded by the worker's seed, as the cold start's encoder (version
        0), with `--cold-start typical`. A random convolutional network already maps similar pictures near each
        other, and a random hashed-text network similar texts: a cnn trained on 20 of its typical items beats one
        trained on 20 random ones (benchmarks/cold_start.py), but the run as a whole does no better
        (WorkerConfig.cold_start)."""
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            return build_model(self.task.architecture, self.task.input_shape, self.task.num_classes)

    def set_model(self, model: Classifier, version: int, *, encoder: bool = False, frozen: bool = False) -> None:
        """Hold `model` as registry version `version` (`encoder`: a pretrained encoder, types.is_encoder; `frozen`:
        its backbone was frozen, so its embeddings of the shard are kept for later versions): the shard is scored
        anew under it at the next step."""
        self._keep_held_out()
        self.model, self.version = model.to(self.config.device).eval(), version
        self._backbone = backbone_fingerprint(model) if frozen else None
        self._encoder = encoder
        self._probs = self._embeddings = self._usable = None
        self._fresh = set()
        self._wait = self.config.poll_seconds

    def _keep_held_out(self) -> None:
        """Before the held model goes: keep its probabilities of the items labeled while it was held (it was not
        trained on them) for adaptive re-labeling (`_held_out`)."""
        if self._votes is None or self._probs is None or self._usable is None or self._encoder:
            return
        for item_id in self._votes.consensus().items:
            row = self._row_of.get(item_id)
            if row is not None and item_id not in self._held_out and self._usable[row]:
                self._held_out[item_id] = self._probs[row]

    def _scores(self, strategy: Strategy | None = None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Probabilities (and embeddings, if `strategy` wants them) of the whole shard under the held model. One
        strategy runs per model version (`_strategy_now`, the default), so they are kept until the next."""
        strategy = strategy or self._strategy_now()
        if not strategy.needs_model:
            return None, None
        if self._probs is None:
            probs, emb = self._predict(strategy.needs_embeddings)
            usable = finite_rows(probs)
            if emb is not None:
                usable &= finite_rows(emb)
                if usable.any():  # clusters of the items that can be proposed
                    strategy.prepare(embeddings=emb[usable], item_ids=self.item_ids[usable],
                                     model_version=self.version)
            self._probs, self._embeddings, self._usable = probs, emb, usable
        return self._probs, self._embeddings

    def _predict(self, with_embeddings: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """The shard's probabilities (and embeddings) under the held model: a full pass, or where its backbone was
        frozen, its head on that backbone's embeddings of the shard, computed once per backbone."""
        model, device = self.model, self.config.device
        assert model is not None  # a strategy that needs a model runs only while one is held (_strategy_now)
        if self._backbone is None:
            return predict_proba(model, self._x, device=device, with_embeddings=with_embeddings)
        emb = self._cache.rows(self._backbone, "shard", self._x, lambda x: embed_rows(model, x, device=device))
        return head_probabilities(model.head, emb), (emb if with_embeddings else None)

    def _refresh_shard_state(self) -> tuple[list[str], int]:
        while True:
            s = self.client.shard_state(shard_index=self.config.shard_index, num_shards=self.config.num_shards,
                                        labeled_after_seq=self._labeled_seq, model_version=self.version)
            for item_id in s.labeled_item_ids:
                row = self._row_of.get(item_id)
                if row is not None:
                    self._taken[row] = True
            self._labeled_seq = s.labeled_through_seq
            self._max_labels = s.max_labels_per_item
            if not s.more:
                self.pacing.observe_labels(s.labeled_through_seq, self._clock())
                return list(s.queued_item_ids), s.demand

    def _payloads(self, rows: np.ndarray) -> list[Payload | None]:
        """Each row's item as it travels: its tensor as the dataset holds it (float32 images at the task's input
        size, int64 text buckets), and what a person sees: its picture (the original file, data.Dataset.picture),
        or its text. None, and the item is never proposed again, where its picture can no longer be read (a file
        removed or damaged since the pool was loaded): one bad file does not stop the worker. The tensors are
        gathered and converted once for all the rows (Payload.from_rows)."""
        pool_rows = self.indices[rows]
        texts = self.dataset.texts
        pictures: list[bytes | None] = []
        for row, i in zip(rows, pool_rows):
            try:
                pictures.append(self.dataset.picture(i))
            except (OSError, ValueError) as exc:
                log.warning("%s: item %s is not proposed: %s", self.config.worker_id, self.item_ids[row], exc)
                self._taken[row] = True
                pictures.append(None)
        payloads = Payload.from_rows(self.dataset.x_pool[pool_rows], [p or b"" for p in pictures],
                                     [texts[i] for i in pool_rows] if texts is not None else [""] * len(rows))
        return [payload if picture is not None else None for payload, picture in zip(payloads, pictures)]

"""The coordinator for a shared PostgreSQL store: any number of replicas serve the same pools.

It offers exactly what the embedded Coordinator (embedded.py) offers to the servicers, but keeps no pool state
in memory: every operation is a transaction in the database (postgres_store.py says how the invariants hold
across replicas), and long polls wake on the database's notifications, whichever replica made the change.
Synchronous mode (rounds gated on a model) needs one coordinator and stays with the embedded store.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import IO

from aal_rpc.coordinator import rules
from aal_rpc.coordinator.contract import (SHARD_PAGE, CoordinatorConfig, ImportedLabel, ImportOutcome, ItemView,
                                          Observer, Pending, ShardState, Stats, SubmitOutcome)
from aal_rpc.coordinator.importing import import_in_batches, imported_record
from aal_rpc.coordinator.publishing import Publishing
from aal_rpc.coordinator.postgres_store import PostgresStore, redacted
from aal_rpc.coordinator.registry import BlobCache, RegistryBase
from aal_rpc.coordinator.signals import KINDS, Signals
from aal_rpc.coordinator.validation import (check_begin_round, check_candidates, check_correction, check_id,
                                            check_label, check_lease_request, check_release,
                                            check_renew, check_shard_request)
from aal_rpc.errors import InvalidArgument, NotFound
from aal_rpc.serde import WeightSpec
from aal_rpc.types import Candidate, LabeledRecord, ModelInfo, Query, Task, delegate_id, shard_of

log = logging.getLogger(__name__)

class SharedRegistry(RegistryBase):
    """The model registry over the shared database: versions from a sequence, blobs in the database."""

    _store: PostgresStore

    def __init__(self, store: PostgresStore, *, spec: WeightSpec, keep: int):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._store = store
        self._spec = spec
        self._keep = keep
        self._cache = BlobCache(store)

    def latest(self) -> ModelInfo | None:
        return self._store.latest_model()

    def list(self) -> list[ModelInfo]:
        return self._store.list_models()

    def _lookup(self, version: int) -> ModelInfo | None:
        return self._store.latest_model() if version == 0 else self._store.get_model(version)

    def _publish_file(self, f: IO[bytes], info: ModelInfo) -> ModelInfo:
        f.seek(0)
        data = f.read()
        stored = self._store.publish_model(info, data, keep=self._keep)
        self._cache.remember(stored.version, data)
        return stored


class SharedCoordinator(Publishing):
    inline: frozenset[str] = frozenset()  # every operation is a database transaction
    def __init__(self, store: PostgresStore, task: Task, config: CoordinatorConfig = CoordinatorConfig(),
                 observer: Observer | None = None, *, clock: Callable[[], float] = time.time):
        if config.max_labels_per_model:
            raise ValueError("--max-labels-per-model needs the embedded store (one coordinator)")
        if task.mode != "async":
            raise ValueError("sync mode runs on one coordinator with the embedded store, not on a shared database")
        rules.check_labels_per_item(config.labels_per_item, task.mode, config.max_labels_per_item)
        from aal_rpc.serde import weight_spec

        self.observer = observer or Observer()
        self.store = store
        self._upload_folder = None  # no data dir: the system's temporary folder
        self.config = config
        self.task = task
        stored = store.load_task()
        if stored is None:
            store.save_task(task).result()
        elif stored != task:
            raise ValueError(f"the database holds a different task: {stored} (asked for {task})")
        self._closed = False
        self._clock = clock  # unix seconds: lease deadlines, deferrals and record times (tests move it by hand)
        self._draw = random.Random(config.seed)  # which leases are of the gold share (rules.gold_first)
        self.signals = Signals(config.poll_seconds)
        store.on_event(self._on_event)
        self.registry = SharedRegistry(
            store, spec=weight_spec(task.architecture, task.input_shape, task.num_classes), keep=config.keep_models)
        log.info("shared coordinator ready on %s", redacted(store.url))

    def _on_event(self, kind: str) -> None:
        """A NOTIFY from any replica (this one too); "*": the listening connection was re-established."""
        if kind == "*":
            self.signals.fire_all()
        elif kind in KINDS:
            self.signals.fire(kind)

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self.signals.fire_all()
        self.store.close()

    # -- annotators -----------------------------------------------------------------------------------

    def lease(self, annotator_id: str, *, lease_seconds: float = 0.0) -> Query | None:
        check_lease_request(annotator_id, lease_seconds)
        lease_seconds = lease_seconds or self.config.lease_seconds
        got = self.store.lease_next(annotator_id, self._clock(), lease_seconds, self.config.pick,
                                    self.config.max_leases_per_annotator,
                                    gold=rules.gold_first(self.config.gold_share, self._draw.random()))
        if got is None:
            return None
        cand, _, lease = got
        self.observer.leased(annotator_id)
        return Query(cand.item_id, lease.lease_id, annotator_id, lease.deadline, cand.payload, cand.provenance)

    def submit_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str, labeler: str = ""
                     ) -> tuple[int, bool]:
        check_label(self.task, lease_id, item_id, label, annotator_id, labeler)
        recorded = delegate_id(annotator_id, labeler)
        seq, duplicate, strategy = self.store.record_label(lease_id=lease_id, item_id=item_id, label=int(label),
                                                           annotator_id=annotator_id, now=self._clock(),
                                                           labels_per_item=self.config.labels_per_item,
                                                           recorded_as=recorded)
        if not duplicate:
            self.observer.labeled(recorded, strategy)
            self.signals.labels.fire()  # at once here; other replicas hear of it by NOTIFY
            if self.config.labels_per_item > 1:
                self.signals.queries.fire()  # it may be back in S for another annotator
        return seq, duplicate

    def record_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str, labeler: str = ""
                     ) -> Pending[tuple[int, bool]]:
        """`submit_label`: its transaction has committed when this returns."""
        return Pending(self.submit_label(lease_id=lease_id, item_id=item_id, label=label, annotator_id=annotator_id,
                                         labeler=labeler))

    def release(self, *, lease_id: str, item_id: str, annotator_id: str, skip: bool = False,
                defer: bool = False, defer_seconds: float = 0.0) -> None:
        check_release(lease_id, item_id, annotator_id, defer_seconds)
        now = self._clock()
        until = now + (defer_seconds or self.config.defer_seconds) if defer else 0.0
        self.store.release_lease(lease_id=lease_id, item_id=item_id, annotator_id=annotator_id, skip=skip,
                                 now=now, defer_until=until)
        if not skip:
            self.signals.queries.fire()

    def renew_lease(self, *, lease_id: str, item_id: str, annotator_id: str, lease_seconds: float = 0.0) -> float:
        check_renew(lease_id, item_id, annotator_id, lease_seconds)
        return self.store.renew_lease(lease_id=lease_id, item_id=item_id, annotator_id=annotator_id,
                                      lease_seconds=lease_seconds or self.config.lease_seconds, now=self._clock())

    def correct_label(self, *, item_id: str, label: int, annotator_id: str, is_admin: bool = False,
                      labeler: str = "") -> tuple[int, int, bool]:
        check_correction(self.task, item_id, label, annotator_id, labeler)
        seq, supersedes, duplicate = self.store.record_correction(
            item_id=item_id, label=label, annotator_id=delegate_id(annotator_id, labeler), is_admin=is_admin,
            now=self._clock(), delegator=annotator_id if labeler else "")
        if not duplicate:
            self.signals.labels.fire()
        return seq, supersedes, duplicate

    def import_labels(self, items: Iterable[ImportedLabel]) -> ImportOutcome:
        return import_in_batches(self, items, self._import_batch)

    def _import_batch(self, batch: list[ImportedLabel]) -> tuple[list[int], int]:
        now = self._clock()
        appended = self.store.import_records([imported_record(item, seq=0, now=now) for item in batch])
        for r in appended:
            self.observer.labeled(r.annotator_id, r.provenance.strategy)
        if appended:
            self.signals.labels.fire()  # at once here; other replicas hear of it by NOTIFY
        return [r.seq for r in appended], len(batch) - len(appended)

    def get_item(self, item_id: str) -> ItemView:
        check_id("item_id", item_id)
        found = self.store.find_item(item_id, self._clock())
        if found is None:
            raise NotFound(f"item {item_id} is not in S or L")
        if found == "skipped":
            return ItemView(item_id, "skipped")
        if isinstance(found, LabeledRecord):
            return ItemView(item_id, "labeled", found.payload, found.provenance, found)
        cand, lease = found
        return ItemView(item_id, "leased" if lease else "queued", cand.payload, cand.provenance)

    # -- servers (trainers) ---------------------------------------------------------------------------

    def read_labels(self, after_seq: int, limit: int, *, include_payload: bool = True,
                    latest_only: bool = False) -> list[LabeledRecord]:
        """A page of committed records of L after `after_seq`; it stops at a seq that an open transaction may
        still commit (postgres_store.py, `_settled_through`)."""
        if after_seq < 0:
            raise InvalidArgument("after_seq must be non-negative")
        return self.store.read_labels(after_seq, max(0, limit), include_payload=include_payload,
                                      latest_only=latest_only)

    def begin_round(self, *, server_id: str, num_labels: int, round_seconds: float) -> tuple[float, str]:
        check_begin_round(server_id, num_labels, round_seconds, last_seq=self.store.last_seq())
        return self.store.begin_round(server_id=server_id, num_labels=num_labels, round_seconds=round_seconds)

    def _last_seq_now(self) -> int:
        return self.store.last_seq()

    def _published(self, server_id: str) -> None:
        self.observer.model_published(server_id)
        self.signals.models.fire()  # at once here; other replicas hear of it by NOTIFY

    # -- workers (selectors) --------------------------------------------------------------------------

    def submit_candidates(self, *, worker_id: str, strategy: str, model_version: int,
                          candidates: list[Candidate]) -> SubmitOutcome:
        check_candidates(self.task, worker_id, strategy, model_version, candidates,
                         is_published=self.registry.is_published)
        plan = self.store.offer(candidates, now=self._clock(), capacity=self.config.pool_capacity,
                                max_labels=rules.label_cap(self.config.labels_per_item,
                                                           self.config.max_labels_per_item))
        self.observer.candidates_submitted(worker_id, strategy, len(candidates))
        if plan.put:
            self.signals.queries.fire()
        return SubmitOutcome(plan.accepted, plan.refreshed, plan.rejected, len(plan.evicted))

    def shard_state(self, *, shard_index: int, num_shards: int, labeled_after_seq: int,
                    model_version: int) -> ShardState:
        check_shard_request(shard_index, num_shards, labeled_after_seq)
        rows = self.store.label_ids_after(labeled_after_seq, SHARD_PAGE)
        through = rows[-1][0] if rows else labeled_after_seq
        labeled = [item_id for _, item_id in rows if shard_of(item_id, num_shards) == shard_index]
        queued, skipped = self.store.shard_items(shard_index, num_shards)
        demand = rules.demand(self.config.pool_capacity, self.store.count_at_least(model_version))
        return ShardState(queued, labeled + skipped, through, len(rows) == SHARD_PAGE,
                          rules.shard_share(demand, num_shards),
                          rules.label_cap(self.config.labels_per_item, self.config.max_labels_per_item))

    # -- admin ----------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        c = self.store.counts(self._clock())  # one transaction: a consistent snapshot
        return Stats(labeled=c.labeled, queued=c.queued, leased=c.leased, skipped=c.skipped,
                     latest_model_version=c.latest_model_version, models=c.models,
                     last_seq=c.last_seq, candidates_submitted=c.candidates_submitted,
                     candidates_evicted=c.candidates_evicted, labels_by_strategy=c.labels_by_strategy,
                     pool_capacity=self.config.pool_capacity, mode=self.task.mode, annotators=c.annotators)

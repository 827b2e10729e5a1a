"""The pool coordinator's domain logic: the query pool S, the labeled pool L and the model registry.

One lock guards the in-memory pools; every change is also written through the store. A label's
acknowledgement waits until its write is committed to disk, outside the lock, so concurrent
submissions share one group commit. The store is the truth: when a write fails to commit, the pools
are rebuilt from the store, so a change that fails changes nothing. Nothing here knows about gRPC; the
servicers translate.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future

from aal_rpc.coordinator import corrections, rules
from aal_rpc.coordinator.contract import (SHARD_PAGE, CoordinatorConfig, ImportedLabel, ImportOutcome, ItemView,
                                          Observer, Pending, ShardState, Stats, SubmitOutcome)
from aal_rpc.coordinator.importing import import_in_batches, imported_record
from aal_rpc.coordinator.publishing import Publishing
from aal_rpc.coordinator.query_pool import QueryPool
from aal_rpc.coordinator.registry import ModelRegistry
from aal_rpc.coordinator.rounds import RoundClaim, decide
from aal_rpc.coordinator.signals import Signals
from aal_rpc.coordinator.sqlite_store import SqliteStore, StoredState
from aal_rpc.coordinator.sync_rounds import SyncRounds
from aal_rpc.coordinator.tally import AnnotatorTally
from aal_rpc.coordinator.validation import (check_begin_round, check_candidates, check_correction, check_id,
                                            check_label, check_lease_request, check_release, check_renew,
                                            check_shard_request)
from aal_rpc.errors import InvalidArgument, NotFound, Unavailable
from aal_rpc.serde import weight_spec
from aal_rpc.types import Candidate, LabeledRecord, ModelInfo, Query, Task, delegate_id, shard_of

log = logging.getLogger(__name__)

EVERY_VERSION = 2 ** 62  # "older than this" matches every candidate
OFFER_CHUNK = 128  # candidates offered under one hold of the pools' lock (submit_candidates)
REAP_IDLE_SECONDS = 1.0  # the reaper's longest sleep: it also reloads the pools after a write nobody waited on failed


class EmbeddedCoordinator(Publishing):
    """The coordinator on the embedded store (contract.Coordinator): pools in memory, written through to SQLite."""

    registry: ModelRegistry

    # in memory, their writes queued without waiting for them (a failed one makes the reaper resync)
    # (record_label: its write is queued and the servicer awaits the Pending, no thread held while it commits)
    inline = frozenset({"lease", "stats", "record_label"})

    def __init__(self, store: SqliteStore, task: Task, config: CoordinatorConfig = CoordinatorConfig(),
                 observer: Observer | None = None, *, clock: Callable[[], float] = time.time):
        self.observer = observer or Observer()
        self.store = store
        self._upload_folder = store.layout.models
        self.config = config
        self.task = task
        self.signals = Signals(config.poll_seconds)
        self._clock = clock  # unix seconds: lease deadlines, deferrals and record times (tests move it by hand)
        self._lock = threading.Lock()
        self._reap_wake = threading.Event()  # a lease was taken or renewed, or closing: the reaper looks again
        self._closed = False
        self._draw = random.Random(config.seed)  # which leases are of the gold share (rules.gold_first)
        self._rounds: dict[str, RoundClaim] = {}  # training rounds in progress (a restart forgets them: harmless)
        if task.mode == "sync" and task.batch_size < 1:
            raise ValueError("sync mode needs a batch size of at least 1")
        if task.mode not in ("async", "sync"):
            raise ValueError(f"mode must be async or sync, got {task.mode!r}")
        rules.check_labels_per_item(config.labels_per_item, task.mode, config.max_labels_per_item)
        state = store.load()
        if state.task is None:
            store.save_task(task).result()
        elif state.task != task:
            raise ValueError(f"data dir holds a different task: {state.task} (asked for {task})")
        # labels whose write is not committed yet: lease_id -> (what was recorded, future). Committed ones are
        # looked up in the store (indexed by lease id), so memory does not grow with every lease ever served.
        # Its own lock: the store's writer thread resolves these while a resync may hold the pool lock.
        self._pending: dict[str, tuple[rules.Recorded, Future]] = {}
        self._pending_lock = threading.Lock()
        self._corrections_lock = threading.Lock()  # one correction at a time: each supersedes the latest record
        self._write_failed = threading.Event()  # a write nobody waits on (a lease) failed: resync soon
        self._candidates_submitted = 0
        self._candidates_evicted = 0
        self.registry = ModelRegistry(
            store, spec=weight_spec(task.architecture, task.input_shape, task.num_classes),
            keep=config.keep_models, models=state.models, changed=self.signals.models, clock=clock)
        self._load(state)
        self._reaper = threading.Thread(target=self._reap_loop, name="lease-reaper", daemon=True)
        self._reaper.start()
        log.info("coordinator ready: %d labeled, %d queued, %d models", len(self._labeled), len(self.pool),
                 len(state.models))

    def _load(self, state: StoredState) -> None:
        """(Re)build the in-memory pools from what the store holds; the caller holds the lock or is __init__."""
        self.pool = QueryPool(capacity=self.config.pool_capacity, pick=self.config.pick, seed=self.config.seed)
        for cand, queued_at, lease in state.queries:
            self.pool.restore(cand, queued_at, lease, tuple(state.labelers.get(cand.item_id, ())))
        self._labeled: set[str] = set(state.labeled_item_ids)
        self._skipped: set[str] = set(state.skips)
        self._by_strategy: Counter[str] = Counter(state.labels_by_strategy)
        self._annotators = AnnotatorTally(state.labels_by_annotator, state.skips_by_annotator)
        self._last_seq = state.last_seq
        self._sync: SyncRounds | None = None
        if self.task.mode == "sync":
            latest = self.registry.latest()
            self._sync = SyncRounds.resume(self.task.batch_size, len(self._labeled), latest.version if latest else 0)

    def _resync(self) -> None:
        """Make memory equal the store again after a write failed to commit."""
        with self._lock:
            self._write_failed.clear()
            self.store.flush()  # every write issued so far (all under this lock) has committed or failed
            self._load(self.store.load())
        self.signals.fire_all()
        log.warning("pools reloaded from the store after a failed write: %d labeled, %d queued",
                    len(self._labeled), len(self.pool))

    def _settle(self, fut: Future) -> None:
        """Wait for a write the caller waits for. If it failed, nothing changed: memory is reloaded from the store
        and the caller is told to retry (as a label's Pending does)."""
        Pending(None, fut, self._write_failed_for_caller).result()

    def _write_failed_for_caller(self, exc: BaseException) -> Exception:
        """A write a caller waits for failed, so the change did not happen: memory is reloaded from the store, and
        the caller is told to retry."""
        log.error("a write failed to commit (%s: %s)", type(exc).__name__, exc)
        self._resync()
        return Unavailable("the change could not be stored and was not made; retry")

    def _watch(self, fut: Future) -> None:
        """A write nobody waits for (a lease, an expiry): if it fails, the reaper reloads memory from the store."""
        def failed(f: Future) -> None:
            if f.exception() is not None:
                self._write_failed.set()
        fut.add_done_callback(failed)

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.signals.fire_all()
        self._reap_wake.set()
        self._reaper.join(timeout=2)
        self.store.close()

    def _reap_loop(self) -> None:
        """Ends expired leases when they expire, so waiting annotators get their items without asking again."""
        while True:
            if self._write_failed.is_set() and not self._closed:
                self._resync()
            with self._lock:
                if self._closed:
                    return
                if self._expire_locked(self._clock()):
                    self.signals.queries.fire()
                next_deadline = self.pool.next_deadline()
            wait = REAP_IDLE_SECONDS if next_deadline is None else next_deadline - self._clock()
            self._reap_wake.wait(timeout=min(max(wait, 0.0), REAP_IDLE_SECONDS))
            self._reap_wake.clear()

    def _expire_locked(self, now: float) -> bool:
        """End every lease past its deadline; whether any was. The caller fires "queries" after the lock."""
        expired = self.pool.expire(now)
        for item_id in expired:
            self._watch(self.store.set_lease(item_id, None))
        return bool(expired)

    # -- annotators -----------------------------------------------------------------------------------

    def lease(self, annotator_id: str, *, lease_seconds: float = 0.0) -> Query | None:
        """Lease the next query now; None if S has none for this annotator (the servicers wait for one)."""
        check_lease_request(annotator_id, lease_seconds)
        lease_seconds = lease_seconds or self.config.lease_seconds
        expired = False
        try:
            with self._lock:
                now = self._clock()
                expired = self._expire_locked(now)  # the leases the cap counts are the live ones
                rules.check_lease_cap(annotator_id, self.pool.held_by(annotator_id),
                                      self.config.max_leases_per_annotator)
                gate_open = (self._sync_may_lease_locked() if self._sync is not None else
                             rules.may_lease_ahead(len(self._labeled), self._covered_labels(),
                                                   self.config.max_labels_per_model))
                gold = rules.gold_first(self.config.gold_share, self._draw.random())
                entry = self.pool.lease(annotator_id, now, lease_seconds, gold=gold) if gate_open else None
                if entry is not None:
                    lease = entry.lease
                    self.observer.leased(annotator_id)
                    self._watch(self.store.set_lease(entry.candidate.item_id, lease))
        finally:
            if expired:
                self.signals.queries.fire()
        if entry is None:
            return None
        assert lease is not None  # the entry was just leased
        self._reap_wake.set()
        return Query(entry.candidate.item_id, lease.lease_id, annotator_id, lease.deadline,
                     entry.candidate.payload, entry.candidate.provenance)

    # -- synchronous mode -------------------------------------------------------------------------------

    def _sync_model_for_all_labels(self) -> ModelInfo | None:
        latest = self.registry.latest()
        return latest if latest is not None and latest.num_labels >= len(self._labeled) else None

    def _sync_may_lease_locked(self) -> bool:
        """Open the next round when its model and rescored candidates are there; then allow its leases."""
        s, labeled = self._sync, len(self._labeled)
        assert s is not None  # sync mode only
        if not s.is_open(labeled):
            model = self._sync_model_for_all_labels()
            version = model.version if model is not None and labeled else 0
            if not s.ready_to_open(labeled, model.num_labels if model else None, self.pool.count_at_least(version)):
                return False
            s.open(labeled, version)
            self._drop_stale_locked(version)
            log.info("sync round %d opened: model v%d, %d labels so far", s.rounds_opened, version, labeled)
        return s.may_lease(labeled, self.pool.leased_count)

    def _sync_demand_locked(self, model_version: int) -> int:
        """Workers score only for the round to come: with the model trained on all of L, or the round's model."""
        s, labeled = self._sync, len(self._labeled)
        assert s is not None  # sync mode only
        if s.is_open(labeled):
            wanted = model_version >= s.version
        else:
            model = self._sync_model_for_all_labels()
            wanted = labeled == 0 or (model is not None and model_version >= model.version)
        return self.pool.demand(model_version) if wanted else 0

    def _drop_stale_locked(self, version: int) -> None:
        stale = self.pool.drop_older_than(version)
        if stale:
            self._candidates_evicted += len(stale)
            self._watch(self.store.put_candidates([], stale))

    def submit_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str, labeler: str = ""
                     ) -> tuple[int, bool]:
        """Record a label; returns (seq, duplicate) once it is on disk. Idempotent per lease."""
        return self._record_label(lease_id=lease_id, item_id=item_id, label=label, annotator_id=annotator_id,
                                  labeler=labeler, may_read_store=True).result()

    def record_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str, labeler: str = ""
                     ) -> Pending[tuple[int, bool]]:
        """The label recorded in memory and its write queued (a retry: the first submission's write). A lease
        neither in S nor pending is looked up in the store by the Pending, on a thread (a retry of a label already
        on disk, or a lease that never was)."""
        return self._record_label(lease_id=lease_id, item_id=item_id, label=label, annotator_id=annotator_id,
                                  labeler=labeler, may_read_store=False)

    def _record_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str, labeler: str,
                      may_read_store: bool) -> Pending[tuple[int, bool]]:
        check_label(self.task, lease_id, item_id, label, annotator_id, labeler)
        recorded = delegate_id(annotator_id, labeler)
        requeue = False
        with self._lock:
            entry = self.pool.by_lease(lease_id)
            done = self._labeled_by_lease(lease_id, may_read_store) if entry is None else None
            if entry is None and done is None and not may_read_store:
                return Pending.later(functools.partial(self.submit_label, lease_id=lease_id, item_id=item_id,
                                                       label=label, annotator_id=annotator_id, labeler=labeler))
            if done is not None:  # a retry of a submission already recorded: acknowledge it once more
                done_before, fut = done
                rules.check_retry(done_before, lease_id=lease_id, item_id=item_id, label=int(label),
                                  annotator_id=recorded)
                seq, duplicate = done_before.seq, True
            else:
                now = self._clock()
                self._check_held_locked(entry, lease_id=lease_id, item_id=item_id, annotator_id=annotator_id,
                                        now=now)
                assert entry is not None and entry.lease is not None  # else _check_held_locked raised
                self._last_seq += 1
                seq = self._last_seq
                cand = entry.candidate
                record = LabeledRecord(
                    seq=seq, item_id=item_id, label=int(label), annotator_id=recorded, payload=cand.payload,
                    provenance=cand.provenance, queued_at=entry.queued_at, leased_at=entry.lease.leased_at,
                    labeled_at=now, lease_id=lease_id)
                requeue = rules.wants_another_label(entry.labels + 1, self.config.labels_per_item, entry.strategy)
                if requeue:
                    self.pool.labeled_once_more(item_id, annotator_id, now=now)
                else:
                    self.pool.remove(item_id)
                self._labeled.add(item_id)
                self._by_strategy[cand.provenance.strategy or "unknown"] += 1
                self._annotators.labeled(recorded)
                self.observer.labeled(recorded, cand.provenance.strategy)
                fut = self.store.append_label(record, requeue=requeue)
                self._watch(fut)  # should its submitter leave before it commits, a failure still resyncs
                with self._pending_lock:
                    self._pending[lease_id] = (rules.Recorded(seq, item_id, int(label), recorded), fut)
                fut.add_done_callback(functools.partial(self._on_label_durable, lease_id=lease_id, seq=seq))
                duplicate = False
                if self._sync is not None and not self._sync.is_open(len(self._labeled)):
                    # the round is complete: every candidate left was scored by the previous model
                    self._drop_stale_locked(EVERY_VERSION)
        if requeue:
            self.signals.queries.fire()
        # the acknowledgement waits for the disk
        return Pending((seq, duplicate), fut, self._write_failed_for_caller)

    def _check_held_locked(self, entry, *, lease_id: str, item_id: str, annotator_id: str, now: float) -> None:
        held = None if entry is None else rules.Held(entry.candidate.item_id, entry.lease.annotator_id,
                                                     entry.lease.deadline)
        rules.check_held(held, lease_id=lease_id, item_id=item_id, annotator_id=annotator_id, now=now,
                         item_known=lambda: (item_id in self.pool or item_id in self._labeled
                                             or item_id in self._skipped))

    def _labeled_by_lease(self, lease_id: str, may_read_store: bool) -> tuple[rules.Recorded, Future | None] | None:
        """The label recorded under `lease_id`, with its write if that is still pending; None if there is none, or
        none pending and the store may not be read."""
        with self._pending_lock:
            pending = self._pending.get(lease_id)
        if pending is not None or not may_read_store:
            return pending
        row = self.store.label_by_lease(lease_id)
        return (rules.Recorded(*row), None) if row else None

    def _on_label_durable(self, fut: Future, lease_id: str, seq: int) -> None:
        with self._pending_lock:
            self._pending.pop(lease_id, None)
        if fut.exception() is not None:
            return  # its submitter reloads the pools and answers UNAVAILABLE
        self.signals.labels.fire()  # the writer commits in seq order: every seq up to this one is durable

    def release(self, *, lease_id: str, item_id: str, annotator_id: str, skip: bool = False,
                defer: bool = False, defer_seconds: float = 0.0) -> None:
        """Give a leased query back to S; with `defer` ("don't know") not to this annotator again for
        `defer_seconds` (0: the configured time); or (skip) drop it as unlabelable. Deferrals live in memory: a
        restart forgets them."""
        check_release(lease_id, item_id, annotator_id, defer_seconds)
        with self._lock:
            now = self._clock()
            self._check_held_locked(self.pool.by_lease(lease_id), lease_id=lease_id, item_id=item_id,
                                    annotator_id=annotator_id, now=now)
            if skip:
                self.pool.remove(item_id)
                self._skipped.add(item_id)
                self._annotators.skipped(annotator_id)
                fut = self.store.skip_item(item_id, annotator_id, now)
            else:
                if defer:
                    self._annotators.deferred(annotator_id)
                    self.pool.defer(item_id, annotator_id, now + (defer_seconds or self.config.defer_seconds),
                                    now=now)
                else:
                    self.pool.release(item_id)
                fut = self.store.set_lease(item_id, None)
        if not skip:
            self.signals.queries.fire()
        self._settle(fut)

    def renew_lease(self, *, lease_id: str, item_id: str, annotator_id: str, lease_seconds: float = 0.0) -> float:
        """Extend a held lease to now + `lease_seconds` (0: the default); returns the new deadline."""
        check_renew(lease_id, item_id, annotator_id, lease_seconds)
        with self._lock:
            now = self._clock()
            self._check_held_locked(self.pool.by_lease(lease_id), lease_id=lease_id, item_id=item_id,
                                    annotator_id=annotator_id, now=now)
            entry = self.pool.renew(lease_id, now + (lease_seconds or self.config.lease_seconds))
            lease = entry.lease  # read under the lock: a release right after it clears the entry's lease
            assert lease is not None  # renewed: held
            fut = self.store.set_lease(item_id, lease)
        self._settle(fut)
        return lease.deadline

    def correct_label(self, *, item_id: str, label: int, annotator_id: str, is_admin: bool = False,
                      labeler: str = "") -> tuple[int, int, bool]:
        """Append a correction of an item's label (coordinator/corrections.py); returns (seq, the seq it
        supersedes, duplicate) once on disk."""
        check_correction(self.task, item_id, label, annotator_id, labeler)
        delegator = annotator_id if labeler else ""
        annotator_id = delegate_id(annotator_id, labeler)
        with self._corrections_lock:
            latest = corrections.target(lambda by: self.store.latest_label(item_id, by=by), annotator_id=annotator_id,
                                        is_admin=is_admin)
            duplicate = not corrections.decide(latest, item_id=item_id, label=label, annotator_id=annotator_id,
                                               is_admin=is_admin, delegator=delegator)
            assert latest is not None  # decide raised NotFound
            if duplicate:
                return latest.seq, latest.supersedes, True
            with self._lock:
                self._last_seq += 1
                record = corrections.record(latest, seq=self._last_seq, label=label, annotator_id=annotator_id,
                                            now=self._clock())
                fut = self.store.append_label(record)
                fut.add_done_callback(functools.partial(self._on_label_durable, lease_id=record.lease_id,
                                                        seq=record.seq))
            self._settle(fut)
        return record.seq, record.supersedes, False

    def import_labels(self, items: Iterable[ImportedLabel]) -> ImportOutcome:
        """Append labels the pool already had to L, checked whole first, a batch per transaction."""
        return import_in_batches(self, items, self._import_batch)

    def _import_batch(self, batch: list[ImportedLabel]) -> tuple[list[int], int]:
        with self._lock:
            now = self._clock()
            expired = self._expire_locked(now)
            round_open = self._sync is not None and self._sync.is_open(len(self._labeled))
            records = []
            for item in batch:
                if item.item_id in self._labeled or item.item_id in self._skipped:
                    continue
                self._last_seq += 1
                records.append(imported_record(item, seq=self._last_seq, now=now))
                if item.item_id in self.pool:  # a lease on it ends: its label is refused as any ended lease's
                    self.pool.remove(item.item_id)
                self._labeled.add(item.item_id)
                self._annotators.labeled(records[-1].annotator_id)
                self.observer.labeled(item.annotator_id, records[-1].provenance.strategy)
                self._by_strategy[records[-1].provenance.strategy] += 1
            fut = None
            if records:
                fut = self.store.append_labels(records)
                def committed(f: Future) -> None:
                    if f.exception() is None:
                        self.signals.labels.fire()
                fut.add_done_callback(committed)
                if round_open and self._sync is not None and not self._sync.is_open(len(self._labeled)):
                    self._drop_stale_locked(EVERY_VERSION)  # the import completed the round, as a label may
        if expired:
            self.signals.queries.fire()
        if fut is not None:
            self._settle(fut)
        return [r.seq for r in records], len(batch) - len(records)

    def get_item(self, item_id: str) -> ItemView:
        check_id("item_id", item_id)
        with self._lock:
            expired = self._expire_locked(self._clock())  # a lease past its deadline holds nothing
            entry = self.pool.get(item_id)
            if entry is not None:
                state = "leased" if entry.lease is not None else "queued"
                return ItemView(item_id, state, entry.candidate.payload, entry.candidate.provenance)
            skipped = item_id in self._skipped
        if expired:
            self.signals.queries.fire()
        if skipped:
            return ItemView(item_id, "skipped")
        latest = self.store.latest_label(item_id)
        if latest is None:
            raise NotFound(f"item {item_id} is not in S or L")
        return ItemView(item_id, "labeled", latest.payload, latest.provenance, latest)

    # -- servers (trainers) ---------------------------------------------------------------------------

    def read_labels(self, after_seq: int, limit: int, *, include_payload: bool = True,
                    latest_only: bool = False) -> list[LabeledRecord]:
        """A page of durable records of L after `after_seq`, in seq order. The writer commits in seq order, so
        what the store shows has no gap a later commit could fill."""
        if after_seq < 0:
            raise InvalidArgument("after_seq must be non-negative")
        return self.store.labels_after(after_seq, max(0, limit), include_payload=include_payload,
                                       latest_only=latest_only)

    def begin_round(self, *, server_id: str, num_labels: int, round_seconds: float) -> tuple[float, str]:
        """May `server_id` begin a training round on `num_labels` labels now? (0, "") and the claim is recorded,
        or (seconds to wait, why): rounds are staggered across servers (coordinator/rounds.py)."""
        check_begin_round(server_id, num_labels, round_seconds, last_seq=self._last_seq)
        latest = self.registry.latest()
        with self._lock:
            now = time.monotonic()
            wait, why = decide(list(self._rounds.values()), server_id=server_id, num_labels=num_labels,
                               round_seconds=round_seconds, published_labels=latest.num_labels if latest else 0,
                               now=now, sync=self.task.mode == "sync")
            if wait == 0:
                self._rounds = {k: c for k, c in self._rounds.items() if c.live(now)}
                self._rounds[server_id] = RoundClaim(server_id, num_labels, now, round_seconds)
        return wait, why

    def _last_seq_now(self) -> int:
        return self._last_seq

    def _covered_labels(self) -> int:
        latest = self.registry.latest()
        return latest.num_labels if latest is not None else 0

    def _published(self, server_id: str) -> None:
        with self._lock:
            self._rounds.pop(server_id, None)  # its round is over
            self.observer.model_published(server_id)
        if self._sync is not None or self.config.max_labels_per_model:
            self.signals.queries.fire()  # a new model may open the next round, or let leasing go on

    # -- workers (selectors) --------------------------------------------------------------------------

    def submit_candidates(self, *, worker_id: str, strategy: str, model_version: int,
                          candidates: list[Candidate]) -> SubmitOutcome:
        """Offered OFFER_CHUNK candidates at a time, the pools' lock let go between them: the event loop's leases
        and labels take that lock, and a batch of 1,024 held it for tens of ms. Offering a batch in order, chunk
        by chunk, is what offering it whole is (rules.plan_offer takes candidates one by one, and evicts only for
        a strictly newer version, so never an earlier chunk's items)."""
        check_candidates(self.task, worker_id, strategy, model_version, candidates,
                         is_published=self.registry.is_published)
        outcome = SubmitOutcome(0, 0, 0, 0)
        writes = []
        offered = False
        for start in range(0, len(candidates), OFFER_CHUNK):
            chunk = candidates[start:start + OFFER_CHUNK]
            with self._lock:
                now = self._clock()
                expired = self._expire_locked(now)  # an expired lease no longer protects its item from a refresh
                plan = self.pool.offer(chunk, now, taken=lambda i: i in self._labeled or i in self._skipped,
                                       min_version=self._sync.version if self._sync is not None else 0,
                                       labelers=self._labelers, max_labels=self._label_cap)
                self._candidates_submitted += len(chunk)
                self.observer.candidates_submitted(worker_id, strategy, len(chunk))
                self._candidates_evicted += len(plan.evicted)
                if plan.put or plan.evicted:
                    writes.append(self.store.put_candidates([(c, now) for c in plan.put], plan.evicted))
            offered = offered or bool(plan.put) or expired
            outcome = SubmitOutcome(outcome.accepted + plan.accepted, outcome.refreshed + plan.refreshed,
                                    outcome.rejected + plan.rejected, outcome.evicted + len(plan.evicted))
        if offered:
            self.signals.queries.fire()
        for fut in writes:
            self._settle(fut)
        return outcome

    @property
    def _label_cap(self) -> int:
        return rules.label_cap(self.config.labels_per_item, self.config.max_labels_per_item)

    def _labelers(self, item_id: str) -> tuple[str, ...] | None:
        """Who labeled an item of L that is not skipped (rules.plan_offer's `labelers`); None for any other."""
        if item_id not in self._labeled or item_id in self._skipped:
            return None
        return tuple(self.store.labelers(item_id))

    def shard_state(self, *, shard_index: int, num_shards: int, labeled_after_seq: int,
                    model_version: int) -> ShardState:
        check_shard_request(shard_index, num_shards, labeled_after_seq)
        mine = lambda item_id: shard_of(item_id, num_shards) == shard_index  # noqa: E731
        rows = self.store.label_ids_after(labeled_after_seq, SHARD_PAGE)
        through = rows[-1][0] if rows else labeled_after_seq
        labeled = [item_id for _, item_id in rows if mine(item_id)]
        with self._lock:
            queued = self.pool.item_ids_in_shard(shard_index, num_shards)
            labeled.extend(i for i in self._skipped if mine(i))  # skipped items are never proposed again
            demand = self.pool.demand(model_version) if self._sync is None else self._sync_demand_locked(model_version)
        return ShardState(queued, labeled, through, len(rows) == SHARD_PAGE, rules.shard_share(demand, num_shards),
                          self._label_cap)

    # -- admin ----------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        latest = self.registry.latest()
        with self._lock:
            expired = self._expire_locked(self._clock())  # a lease past its deadline holds nothing
            stats = Stats(
                labeled=len(self._labeled), queued=self.pool.available_count, leased=self.pool.leased_count,
                skipped=len(self._skipped), latest_model_version=latest.version if latest else 0,
                models=len(self.registry), last_seq=self._last_seq,
                candidates_submitted=self._candidates_submitted, candidates_evicted=self._candidates_evicted,
                labels_by_strategy=dict(self._by_strategy), pool_capacity=self.pool.capacity, mode=self.task.mode,
                annotators=self._annotators.snapshot())
        if expired:
            self.signals.queries.fire()
        return stats

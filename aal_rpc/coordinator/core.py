"""The pool coordinator's domain logic: the query pool S, the labeled pool L and the model registry.

One lock guards the in-memory pools; every change is also written through the store. A label's
acknowledgement waits until its write is committed to disk, outside the lock, so concurrent
submissions share one group commit. The store is the truth: when a write fails to commit, the pools
are rebuilt from the store, so a change that fails changes nothing. Nothing here knows about gRPC; the
servicers translate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from aal_rpc.coordinator import corrections
from aal_rpc.coordinator.query_pool import QueryPool
from aal_rpc.coordinator.registry import ModelRegistry
from aal_rpc.coordinator.rounds import RoundClaim, decide
from aal_rpc.chunking import iter_chunks, sha256_hex
from aal_rpc.coordinator.store import SqliteStore, StoredState
from aal_rpc.coordinator.sync_rounds import SyncRounds
from aal_rpc.coordinator.validation import (DEFAULT_DEFER_SECONDS, check_begin_round, check_candidates,
                                            check_correction, check_id, check_label, check_lease_request,
                                            check_publish, check_release, check_renew, check_shard_request,
                                            check_wait)
from aal_rpc.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from aal_rpc.serde import weight_spec
from aal_rpc.types import Candidate, LabeledRecord, ModelInfo, Payload, Provenance, Query, Task, shard_of

log = logging.getLogger(__name__)

STREAM_PAGE = 256  # labels read from the store per page of a StreamLabels / ExportLabels call
SHARD_PAGE = 50_000  # labeled ids per GetShardState answer
EVERY_VERSION = 2 ** 62  # "older than this" matches every candidate


@dataclass(frozen=True)
class CoordinatorConfig:
    pool_capacity: int = 256
    pick: str = "fresh"
    lease_seconds: float = 300.0
    defer_seconds: float = DEFAULT_DEFER_SECONDS  # a deferred item is not offered to the same annotator this long
    keep_models: int = 8
    max_weight_bytes: int = 2 * 1024 ** 3  # tv:vgg16 is about 540 MB (vgg16 60 MB); far bigger is a mistake
    seed: int = 0


@dataclass(frozen=True)
class Stats:
    labeled: int
    queued: int
    leased: int
    skipped: int
    latest_model_version: int
    models: int
    last_seq: int
    candidates_submitted: int
    candidates_evicted: int
    labels_by_strategy: dict[str, int]
    pool_capacity: int
    mode: str


@dataclass(frozen=True)
class SubmitOutcome:
    accepted: int
    refreshed: int
    rejected: int
    evicted: int


@dataclass(frozen=True)
class ItemView:
    """Where an item stands, for GetItem: "queued" or "leased" in S (with its candidate's payload and
    provenance), "labeled" (with the record holding its current label), or "skipped" (nothing else kept)."""

    item_id: str
    state: str
    payload: Payload | None = None
    provenance: Provenance | None = None
    record: LabeledRecord | None = None


@dataclass(frozen=True)
class ShardState:
    queued: list[str]
    labeled: list[str]
    labeled_through_seq: int
    more: bool
    demand: int


def follow_records(store, after_seq: int, *, follow: bool, include_payload: bool, keep_going: Callable[[], bool],
                   wait_for_more: Callable[[int], None], latest_only: bool = False) -> Iterator[LabeledRecord]:
    """Records of L after `after_seq` from `store`, page by page, in order; with `follow`, then waits
    (`wait_for_more(last seq seen)`) and goes on while `keep_going()`. `latest_only` leaves out records that a
    correction superseded."""
    if after_seq < 0:
        raise InvalidArgument("after_seq must be non-negative")
    cursor = after_seq
    while True:
        page = store.labels_after(cursor, STREAM_PAGE, include_payload=include_payload, latest_only=latest_only)
        yield from page
        if page:
            cursor = page[-1].seq
        if len(page) == STREAM_PAGE:
            continue
        if not follow or not keep_going():
            return
        wait_for_more(cursor)


class Observer:
    """What the core reports as it works (metrics implement it); every method a no-op here."""

    def leased(self, annotator_id: str) -> None: ...
    def labeled(self, annotator_id: str, strategy: str) -> None: ...
    def candidates_submitted(self, worker_id: str, strategy: str, n: int) -> None: ...
    def model_published(self, server_id: str) -> None: ...


class EmbeddedCoordinator:
    """The coordinator on the embedded store (contract.Coordinator): pools in memory, written through to SQLite."""

    def __init__(self, store: SqliteStore, task: Task, config: CoordinatorConfig = CoordinatorConfig(),
                 observer: Observer | None = None):
        self.observer = observer or Observer()
        self.store = store
        self.config = config
        self.task = task
        self._lock = threading.Lock()
        self._available = threading.Condition(self._lock)  # S gained an available item
        self._labels_cv = threading.Condition()  # L's durable sequence number advanced
        self._closed = False
        self._rounds: dict[str, RoundClaim] = {}  # training rounds in progress (a restart forgets them: harmless)
        if task.mode == "sync" and task.batch_size < 1:
            raise ValueError("sync mode needs a batch size of at least 1")
        if task.mode not in ("async", "sync"):
            raise ValueError(f"mode must be async or sync, got {task.mode!r}")
        state = store.load()
        if state.task is None:
            store.save_task(task).result()
        elif state.task != task:
            raise ValueError(f"data dir holds a different task: {state.task} (asked for {task})")
        # labels whose write is not committed yet: lease_id -> (seq, item_id, future). Committed ones are
        # looked up in the store (indexed by lease id), so memory does not grow with every lease ever served.
        # Its own lock: the store's writer thread resolves these while a resync may hold the pool lock.
        self._pending: dict[str, tuple[int, str, Future]] = {}
        self._pending_lock = threading.Lock()
        self._corrections_lock = threading.Lock()  # one correction at a time: each supersedes the latest record
        self._write_failed = threading.Event()  # a write nobody waits on (a lease) failed: resync soon
        self._candidates_submitted = 0
        self._candidates_evicted = 0
        self.registry = ModelRegistry(
            store, spec=weight_spec(task.architecture, task.input_shape, task.num_classes),
            keep=config.keep_models, models=state.models)
        self._load(state)
        self._durable_seq = self._last_seq
        self._reaper = threading.Thread(target=self._reap_loop, name="lease-reaper", daemon=True)
        self._reaper.start()
        log.info("coordinator ready: %d labeled, %d queued, %d models", len(self._labeled), len(self.pool),
                 len(state.models))

    def _load(self, state: StoredState) -> None:
        """(Re)build the in-memory pools from what the store holds; the caller holds the lock or is __init__."""
        self.pool = QueryPool(capacity=self.config.pool_capacity, pick=self.config.pick, seed=self.config.seed)
        for cand, queued_at, lease in state.queries:
            self.pool.restore(cand, queued_at, lease)
        self._labeled: set[str] = set(state.labeled_item_ids)
        self._skipped: set[str] = set(state.skips)
        self._by_strategy: Counter[str] = Counter(state.labels_by_strategy)
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
            self._available.notify_all()
        log.warning("pools reloaded from the store after a failed write: %d labeled, %d queued",
                    len(self._labeled), len(self.pool))

    def _settle(self, fut: Future):
        """The result of a write the caller waits for. If it failed, nothing changed: memory is reloaded from the
        store and the caller is told to retry."""
        try:
            return fut.result()
        except Exception as exc:  # noqa: BLE001 - whatever the store raised, the change did not happen
            log.error("a write failed to commit (%s: %s)", type(exc).__name__, exc)
            self._resync()
            raise Unavailable("the change could not be stored and was not made; retry") from None

    def _watch(self, fut: Future) -> None:
        """A write nobody waits for (a lease, an expiry): if it fails, the reaper reloads memory from the store."""
        fut.add_done_callback(lambda f: f.exception() is not None and self._write_failed.set())

    # -- lifecycle ------------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._available.notify_all()
        with self._labels_cv:
            self._labels_cv.notify_all()
        self.registry.wake_all()
        self._reaper.join(timeout=2)
        self.store.close()

    def _reap_loop(self) -> None:
        while True:
            if self._write_failed.is_set() and not self._closed:
                self._resync()
            with self._lock:
                if self._closed:
                    return
                self._expire_locked(time.time())
                self._available.wait(timeout=0.5)

    def _expire_locked(self, now: float) -> None:
        expired = self.pool.expire(now)
        for item_id in expired:
            self._watch(self.store.set_lease(item_id, None))
        if expired:
            self._available.notify_all()

    # -- annotators -----------------------------------------------------------------------------------

    def lease(self, annotator_id: str, *, wait_seconds: float = 0.0, lease_seconds: float = 0.0,
              is_active: Callable[[], bool] = lambda: True) -> Query | None:
        """Lease the next query, waiting up to `wait_seconds` for one; None if none came or the caller left
        (`is_active()` false: checked at every wake-up, see `wake_waiters`)."""
        check_lease_request(annotator_id, wait_seconds, lease_seconds)
        lease_seconds = lease_seconds or self.config.lease_seconds
        deadline = time.monotonic() + wait_seconds
        with self._lock:
            while True:
                now = time.time()
                self._expire_locked(now)
                gate_open = self._sync is None or self._sync_may_lease_locked()
                entry = self.pool.lease(annotator_id, now, lease_seconds) if gate_open else None
                if entry is not None:
                    lease = entry.lease
                    self.observer.leased(annotator_id)
                    self._watch(self.store.set_lease(entry.candidate.item_id, lease))
                    return Query(entry.candidate.item_id, lease.lease_id, annotator_id, lease.deadline,
                                 entry.candidate.payload, entry.candidate.provenance)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed or not is_active():
                    return None
                self._available.wait(timeout=min(remaining, 1.0))

    def wake_waiters(self) -> None:
        """Wake every long poll to look again (a caller went away)."""
        with self._lock:
            self._available.notify_all()

    # -- synchronous mode -------------------------------------------------------------------------------

    def _sync_model_for_all_labels(self) -> ModelInfo | None:
        latest = self.registry.latest()
        return latest if latest is not None and latest.num_labels >= len(self._labeled) else None

    def _sync_may_lease_locked(self) -> bool:
        """Open the next round when its model and rescored candidates are there; then allow its leases."""
        s, labeled = self._sync, len(self._labeled)
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

    def submit_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str) -> tuple[int, bool]:
        """Record a label; returns (seq, duplicate) once it is on disk. Idempotent per lease."""
        check_label(self.task, lease_id, item_id, label, annotator_id)
        with self._lock:
            entry = self.pool.by_lease(lease_id)
            done = self._labeled_by_lease(lease_id) if entry is None else None
            if done is not None:  # a retry of a submission already recorded: acknowledge it once more
                seq, labeled_item, fut = done
                if labeled_item != item_id:
                    raise FailedPrecondition(f"lease {lease_id} was for item {labeled_item}, not {item_id}")
                duplicate = True
            else:
                now = time.time()
                if entry is None:
                    raise self._no_lease_error(lease_id, item_id)
                if entry.candidate.item_id != item_id:
                    raise FailedPrecondition(f"lease {lease_id} is for item {entry.candidate.item_id}, not {item_id}")
                if entry.lease.annotator_id != annotator_id:
                    raise FailedPrecondition(f"lease {lease_id} belongs to another annotator")
                if entry.lease.deadline <= now:
                    self._expire_locked(now)
                    raise FailedPrecondition(f"lease {lease_id} on item {item_id} has expired")
                self._last_seq += 1
                seq = self._last_seq
                cand = entry.candidate
                record = LabeledRecord(
                    seq=seq, item_id=item_id, label=int(label), annotator_id=annotator_id, payload=cand.payload,
                    provenance=cand.provenance, queued_at=entry.queued_at, leased_at=entry.lease.leased_at,
                    labeled_at=now, lease_id=lease_id)
                self.pool.remove(item_id)
                self._labeled.add(item_id)
                self._by_strategy[cand.provenance.strategy or "unknown"] += 1
                self.observer.labeled(annotator_id, cand.provenance.strategy)
                fut = self.store.append_label(record)
                with self._pending_lock:
                    self._pending[lease_id] = (seq, item_id, fut)
                fut.add_done_callback(lambda f, lid=lease_id, s=seq: self._on_label_durable(f, lid, s))
                duplicate = False
                if self._sync is not None and not self._sync.is_open(len(self._labeled)):
                    # the round is complete: every candidate left was scored by the previous model
                    self._drop_stale_locked(EVERY_VERSION)
        if fut is not None:
            self._settle(fut)  # the acknowledgement waits for the disk
        return seq, duplicate

    def _no_lease_error(self, lease_id: str, item_id: str) -> Exception:
        """A lease that is not held: FAILED_PRECONDITION for a known item (expired, foreign), else NOT_FOUND."""
        if item_id in self.pool or item_id in self._labeled or item_id in self._skipped:
            return FailedPrecondition(f"lease {lease_id} on item {item_id} has expired or is not held")
        return NotFound(f"no query for item {item_id} with lease {lease_id}")

    def _labeled_by_lease(self, lease_id: str) -> tuple[int, str, Future | None] | None:
        with self._pending_lock:
            pending = self._pending.get(lease_id)
        if pending is not None:
            return pending
        row = self.store.label_by_lease(lease_id)
        return (row[0], row[1], None) if row else None

    def _on_label_durable(self, fut: Future, lease_id: str, seq: int) -> None:
        with self._pending_lock:
            self._pending.pop(lease_id, None)
        if fut.exception() is not None:
            return  # its submitter reloads the pools and answers UNAVAILABLE
        with self._labels_cv:
            self._durable_seq = max(self._durable_seq, seq)
            self._labels_cv.notify_all()

    def release(self, *, lease_id: str, item_id: str, annotator_id: str, skip: bool = False,
                defer: bool = False, defer_seconds: float = 0.0) -> None:
        """Give a leased query back to S; with `defer` ("don't know") not to this annotator again for
        `defer_seconds` (0: the configured time); or (skip) drop it as unlabelable. Deferrals live in memory: a
        restart forgets them."""
        check_release(lease_id, item_id, annotator_id, defer_seconds)
        with self._lock:
            entry = self.pool.by_lease(lease_id)
            if entry is None:
                raise self._no_lease_error(lease_id, item_id)
            if entry.candidate.item_id != item_id or entry.lease.annotator_id != annotator_id:
                raise FailedPrecondition(f"lease {lease_id} is not this annotator's lease on item {item_id}")
            if skip:
                self.pool.remove(item_id)
                self._skipped.add(item_id)
                fut = self.store.skip_item(item_id, annotator_id, time.time())
            else:
                if defer:
                    self.pool.defer(item_id, annotator_id, time.time() + (defer_seconds or self.config.defer_seconds))
                else:
                    self.pool.release(item_id)
                fut = self.store.set_lease(item_id, None)
                self._available.notify_all()
        self._settle(fut)

    def renew_lease(self, *, lease_id: str, item_id: str, annotator_id: str, lease_seconds: float = 0.0) -> float:
        """Extend a held lease to now + `lease_seconds` (0: the default); returns the new deadline."""
        check_renew(lease_id, item_id, annotator_id, lease_seconds)
        with self._lock:
            now = time.time()
            entry = self.pool.by_lease(lease_id)
            if entry is None or entry.lease.deadline <= now:
                raise self._no_lease_error(lease_id, item_id)
            if entry.candidate.item_id != item_id or entry.lease.annotator_id != annotator_id:
                raise FailedPrecondition(f"lease {lease_id} is not this annotator's lease on item {item_id}")
            entry = self.pool.renew(lease_id, now + (lease_seconds or self.config.lease_seconds))
            fut = self.store.set_lease(item_id, entry.lease)
        self._settle(fut)
        return entry.lease.deadline

    def correct_label(self, *, item_id: str, label: int, annotator_id: str, is_admin: bool = False
                      ) -> tuple[int, int, bool]:
        """Append a correction of an item's label (coordinator/corrections.py); returns (seq, the seq it
        supersedes, duplicate) once on disk."""
        check_correction(self.task, item_id, label, annotator_id)
        with self._corrections_lock:
            latest = self.store.latest_label(item_id)
            if not corrections.decide(latest, item_id=item_id, label=label, annotator_id=annotator_id,
                                      is_admin=is_admin):
                return latest.seq, latest.supersedes, True
            with self._lock:
                self._last_seq += 1
                record = corrections.record(latest, seq=self._last_seq, label=label, annotator_id=annotator_id,
                                            now=time.time())
                fut = self.store.append_label(record)
                fut.add_done_callback(lambda f, s=record.seq: self._on_label_durable(f, record.lease_id, s))
            self._settle(fut)
        return record.seq, record.supersedes, False

    def get_item(self, item_id: str) -> ItemView:
        check_id("item_id", item_id)
        with self._lock:
            entry = self.pool.get(item_id)
            if entry is not None:
                state = "leased" if entry.lease is not None else "queued"
                return ItemView(item_id, state, entry.candidate.payload, entry.candidate.provenance)
            skipped = item_id in self._skipped
        if skipped:
            return ItemView(item_id, "skipped")
        latest = self.store.latest_label(item_id)
        if latest is None:
            raise NotFound(f"item {item_id} is not in S or L")
        return ItemView(item_id, "labeled", latest.payload, latest.provenance, latest)

    # -- servers (trainers) ---------------------------------------------------------------------------

    def follow_labels(self, after_seq: int, *, follow: bool, include_payload: bool = True, latest_only: bool = False,
                      is_active: Callable[[], bool] = lambda: True) -> Iterator[LabeledRecord]:
        """Durable records of L after `after_seq`, in order; with `follow`, keeps waiting for new ones."""
        def wait_for_more(cursor: int) -> None:
            with self._labels_cv:
                self._labels_cv.wait_for(lambda: self._durable_seq > cursor or self._closed, timeout=1.0)

        return follow_records(self.store, after_seq, follow=follow, include_payload=include_payload,
                              latest_only=latest_only, keep_going=lambda: not self._closed and is_active(),
                              wait_for_more=wait_for_more)

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

    def receive_model(self, chunks: Iterable[bytes], *, size_bytes: int, sha256: str, server_id: str,
                      trained_seq: int, num_labels: int, architecture: str, metrics: dict[str, float]) -> ModelInfo:
        """Check an upload's header, stream its weights into the registry and publish them as a new version."""
        check_publish(self.task, server_id=server_id, architecture=architecture, trained_seq=trained_seq,
                      num_labels=num_labels, metrics=metrics, last_seq=self._last_seq, size=size_bytes,
                      max_bytes=self.config.max_weight_bytes)
        info = self.registry.receive(
            chunks, size_bytes=size_bytes, sha256=sha256, max_bytes=self.config.max_weight_bytes,
            info=ModelInfo(version=0, server_id=server_id, trained_seq=trained_seq, num_labels=num_labels,
                           architecture=architecture, metrics=dict(metrics)))
        with self._lock:
            self._rounds.pop(server_id, None)  # its round is over
            self.observer.model_published(server_id)
            self._available.notify_all()  # in sync mode a new model may open the next round
        log.info("model v%d from %s: %d labels, metrics %s", info.version, server_id, num_labels, metrics)
        return info

    def publish_model(self, *, data: bytes, sha256: str | None = None, **header) -> ModelInfo:
        """`receive_model` for weights already in memory (in-process callers)."""
        return self.receive_model(iter_chunks(data), size_bytes=len(data), sha256=sha256 or sha256_hex(data),
                                  **header)

    # -- workers (selectors) --------------------------------------------------------------------------

    def submit_candidates(self, *, worker_id: str, strategy: str, model_version: int,
                          candidates: list[Candidate]) -> SubmitOutcome:
        check_candidates(self.task, worker_id, strategy, model_version, candidates,
                         is_published=self.registry.is_published)
        counts = Counter()
        rows, evicted_all = [], []
        with self._lock:
            now = time.time()
            stale = self._sync is not None and model_version < self._sync.version
            for c in candidates:
                if stale or c.item_id in self._labeled or c.item_id in self._skipped:
                    counts["rejected"] += 1
                    continue
                outcome, evicted = self.pool.offer(c, now)
                counts[outcome] += 1
                evicted_all.extend(evicted)
                if outcome != "rejected":
                    rows.append((c, now))
            self._candidates_submitted += len(candidates)
            self.observer.candidates_submitted(worker_id, strategy, len(candidates))
            self._candidates_evicted += len(evicted_all)
            fut = self.store.put_candidates(rows, evicted_all) if rows or evicted_all else None
            if rows:
                self._available.notify_all()
        if fut is not None:
            self._settle(fut)
        return SubmitOutcome(counts["accepted"], counts["refreshed"], counts["rejected"], len(evicted_all))

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
        # every shard's worker sees the same demand: each fills its share, so k workers do not send k times it
        share = -(-demand // num_shards)
        return ShardState(queued, labeled, through, len(rows) == SHARD_PAGE, share)

    def read_model(self, version: int) -> tuple[ModelInfo, bytes]:
        return self.registry.read_blob(version)

    def list_models(self, *, after_version: int, limit: int) -> tuple[list[ModelInfo], bool]:
        return self.registry.page(after_version=after_version, limit=limit)

    def wait_for_model(self, after_version: int, wait_seconds: float) -> ModelInfo | None:
        check_wait(wait_seconds)
        return self.registry.wait_newer(after_version, wait_seconds)

    # -- admin ----------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        latest = self.registry.latest()
        with self._lock:
            return Stats(
                labeled=len(self._labeled), queued=self.pool.available_count, leased=self.pool.leased_count,
                skipped=len(self._skipped), latest_model_version=latest.version if latest else 0,
                models=len(self.registry), last_seq=self._last_seq,
                candidates_submitted=self._candidates_submitted, candidates_evicted=self._candidates_evicted,
                labels_by_strategy=dict(self._by_strategy), pool_capacity=self.pool.capacity, mode=self.task.mode)

"""What every coordinator offers the servicers, and what each method guarantees.

Two implementations hold to it: `embedded.Coordinator` (the embedded store: pools in memory, written through
to SQLite) and `postgres.SharedCoordinator` (the PostgreSQL store: every operation a transaction, any number
of replicas). The servicers are typed against this Protocol and use nothing else, and the behavioural suite
(tests/test_coordinator_contract.py) runs against both, directly and over gRPC. Errors are aal_rpc.errors
exceptions; the servicers map them to gRPC statuses. The pool rules both apply are rules.py's. No method waits
for a change: the servicers do (lease_queue.py, following.py), on `signals`.

Below it, `Store` declares what both stores give the parts the coordinators share (following L, the registry's
uploads and blobs). How each store writes differs by design: the embedded one persists decisions taken in
memory, the PostgreSQL one takes them inside its transactions, by the same rules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import IO, Generic, Protocol, TypeVar

from aal_rpc.coordinator import rules
from aal_rpc.coordinator.signals import Signals
from aal_rpc.coordinator.validation import DEFAULT_DEFER_SECONDS
from aal_rpc.types import Candidate, LabeledRecord, ModelInfo, Payload, Provenance, Query, Stats, Task

T = TypeVar("T")

SHARD_PAGE = 50_000  # labeled ids per GetShardState answer
IMPORT_ANNOTATOR = "import"  # an imported label's annotator_id when none is given


@dataclass(frozen=True)
class CoordinatorConfig:
    pool_capacity: int = 256
    pick: str = "fresh"
    lease_seconds: float = 300.0
    defer_seconds: float = DEFAULT_DEFER_SECONDS  # a deferred item is not offered to the same annotator this long
    keep_models: int = 8
    max_weight_bytes: int = 2 * 1024 ** 3  # tv:vgg16 is about 540 MB (vgg16 60 MB); far bigger is a mistake
    seed: int = 0
    # The safety net of every wait on a change signal (signals.py): the longest a waiter sleeps without one; None
    # turns it off. The embedded coordinator fires every change itself and needs none. On PostgreSQL a replica
    # hears other replicas' changes by NOTIFY, which a reconnect can lose, and a lease granted by a replica that
    # died expires silently in the database: there the net is what finds them.
    poll_seconds: float | None = 1.0
    # At most this many labels ahead of the latest model (0: no limit). When annotators outrun training, labels
    # chosen by a stale model (or, before the first model, at random) are worth less than waiting a moment for
    # a fresher one: docs/RESULTS.md, three regimes. Set it to about one training batch. Embedded store only.
    max_labels_per_model: int = 0
    # The most live leases one annotator may hold (0: no cap): rules.check_lease_cap.
    max_leases_per_annotator: int = rules.DEFAULT_MAX_LEASES_PER_ANNOTATOR
    # Labels each item gets, from as many different annotators (a crowd): rules.wants_another_label. Its consensus is
    # consensus.py's.
    labels_per_item: int = 1
    # Adaptive re-labeling: a worker may offer an item of L for one more label (types.RELABEL_STRATEGY) while it has
    # fewer than this many (0: never). rules.may_relabel, rules.label_cap.
    max_labels_per_item: int = 0
    # Gold items (types.GOLD_STRATEGY, aal-coordinator --gold): the share of leases that serve one, when the annotator
    # has one left to label (rules.gold_first).
    gold_share: float = 0.0


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
    max_labels: int = 1  # rules.label_cap: adaptive re-labeling offers items of L below it


@dataclass(frozen=True)
class ImportedLabel:
    """A label the pool already had, to be imported into L (contract.Coordinator.import_labels)."""

    item_id: str
    label: int
    payload: Payload
    annotator_id: str = IMPORT_ANNOTATOR


@dataclass(frozen=True)
class ImportOutcome:
    imported: int  # records appended to L
    skipped: int  # items already in L or skipped, or repeated in the import
    first_seq: int = 0  # the smallest and largest seq of the imported records (0 when none was imported)
    last_seq: int = 0


class Observer:
    """What the core reports as it works (metrics implement it); every method a no-op here."""

    def leased(self, annotator_id: str) -> None: ...
    def labeled(self, annotator_id: str, strategy: str) -> None: ...
    def candidates_submitted(self, worker_id: str, strategy: str, n: int) -> None: ...
    def model_published(self, server_id: str) -> None: ...





class Pending(Generic[T]):
    """A change made, its write to disk perhaps still under way: its value holds once `written` has committed.
    `result()` waits for that on this thread; `await wait()` on an event loop, with no thread held meanwhile. If the
    write failed, both raise what `failed(error)` returns (it may repair memory first, so it runs on a thread).
    A waiter that is cancelled (its caller left) leaves the write alone. `Pending.later(fn)`: the value is `fn()`'s,
    which may wait on I/O, so `wait()` runs it on a thread."""

    def __init__(self, value: T, written: Future | None = None,
                 failed: Callable[[BaseException], Exception] | None = None):
        self.value = value
        self._written = written
        self._failed = failed or (lambda exc: exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
        self._later: Callable[[], T] | None = None

    @classmethod
    def later(cls, fn: Callable[[], T]) -> Pending[T]:
        pending: Pending[T] = cls(None)  # type: ignore[arg-type]  # the value is fn's
        pending._later = fn
        return pending

    def result(self) -> T:
        if self._later is not None:
            return self._later()
        if self._written is not None:
            try:
                self._written.result()
            except Exception as exc:  # noqa: BLE001 - the write failed: the caller gets what that means
                raise self._failed(exc) from None
        return self.value

    async def wait(self) -> T:
        loop = asyncio.get_running_loop()
        if self._later is not None:
            return await loop.run_in_executor(None, self._later)
        if self._written is not None:
            try:
                await asyncio.shield(asyncio.wrap_future(self._written))
            except Exception as exc:  # noqa: BLE001 - as in result()
                raise await loop.run_in_executor(None, self._failed, exc) from None
        return self.value


class Coordinator(Protocol):
    task: Task
    config: CoordinatorConfig
    signals: Signals
    """Fired after a change is visible to every later call: "queries" when S gains an available item (a new or
    refreshed candidate, a release, a lease that expired, a synchronous round that may open, close), "labels"
    when L's durable records advance (or a write that took a seq failed: a follower waiting at its gap looks
    again), "models" when a version is published. A waiter MUST read `generation()` before it looks, so a
    change between its look and its wait still wakes it. With `config.poll_seconds` None, signals alone MUST
    wake every waiter whose wait a change of this coordinator (or, on PostgreSQL, of a live replica) ends.
    `close` fires every kind."""

    inline: frozenset[str]
    """Names of the methods that never wait on I/O or on another process (they may take this process's locks
    for moments): the servicers call these on their event loop instead of handing them to a thread."""

    @property
    def weights_fingerprint(self) -> str:
        """The task's architecture's weights fingerprint (serde.spec_fingerprint) as this coordinator builds it: the
        weights it accepts. MUST NOT wait (GetTask serves it from the event loop)."""

    @property
    def closing(self) -> bool:
        """True once `close` began; calls still running MAY then fail with any error (they answer UNAVAILABLE)."""

    def close(self) -> None:
        """Wake every waiter (fire every signal) and release the store. MUST be safe to call once per
        coordinator."""

    # -- annotators -----------------------------------------------------------------------------------

    def lease(self, annotator_id: str, *, lease_seconds: float = 0.0) -> Query | None:
        """Lease the next available query in the configured pick order (rules.PICK_ORDERS), or None when there is
        none for this annotator now. MUST NOT block on any wait: a caller that waits for one waits on
        `signals.queries` itself (lease_queue.py).

        MUST NOT hand one query to two live leases, even across replicas. MUST NOT offer an item to an
        annotator who deferred it until the deferral ends. MUST refuse (ResourceExhausted, rules.check_lease_cap)
        an annotator who holds `config.max_leases_per_annotator` live leases (0: no cap), exactly, even across
        replicas. A lease whose deadline passed MUST make its query available again without any call."""

    def submit_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str, labeler: str = ""
                     ) -> tuple[int, bool]:
        """Record a label for a held, unexpired lease and return (seq, duplicate) only once it is durable.

        The record names types.delegate_id(annotator_id, labeler): the holder, or the labeler it names inside its
        namespace (who may name one is the edge's: security.naming_labeler). The holder is the one barred from the
        item (rules.FOREVER) and whose lease is checked.

        The item then leaves S, unless it wants another label (rules.wants_another_label, `config.labels_per_item`):
        then it is available again, to everyone but the annotators who labeled it, served before items with no label,
        and never evicted. Its labels are each their own record of L.

        MUST be idempotent per lease: a retry (the same item, annotator, labeler and label) returns the same seq with
        duplicate=True; one with another label or annotator MUST be refused, changing nothing (FailedPrecondition,
        rules.check_retry: a label is changed by `correct_label` only). MUST refuse a lease
        that expired, belongs to another annotator or names another item (FailedPrecondition), and an
        unknown query (NotFound): rules.check_held. A write that fails MUST change nothing (Unavailable)."""

    def record_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str, labeler: str = ""
                     ) -> Pending[tuple[int, bool]]:
        """`submit_label`, returning before the label is durable: (seq, duplicate) are the Pending's once it is,
        and the acknowledgement MUST wait for that (`submit_label` is `record_label(...).result()`). Its checks
        raise here; the write's failure (Unavailable, nothing changed) may raise here or come from the Pending.
        Where it is `inline` it MUST NOT wait on I/O itself (what would is the Pending's, `Pending.later`): the
        servicers call it on their event loop and await the Pending there."""

    def release(self, *, lease_id: str, item_id: str, annotator_id: str, skip: bool = False, defer: bool = False,
                defer_seconds: float = 0.0) -> None:
        """End a held lease (checked as `submit_label` checks it): back to S; with `defer`, not to this annotator
        for `defer_seconds` (0: the configured time); with `skip`, never offered again to anyone. An item MUST keep
        at most rules.MAX_DEFERRALS_PER_ITEM deferrals, those ending last; ended ones MUST NOT be kept for good."""

    def renew_lease(self, *, lease_id: str, item_id: str, annotator_id: str, lease_seconds: float = 0.0) -> float:
        """Move a held, unexpired lease's deadline to now + lease_seconds; return it."""

    def correct_label(self, *, item_id: str, label: int, annotator_id: str, is_admin: bool = False,
                      labeler: str = "") -> tuple[int, int, bool]:
        """Append a correction superseding the item's current record (coordinator/corrections.py); return
        (seq, superseded seq, duplicate) once durable. L MUST stay append-only. With a `labeler`, the correction is
        recorded as types.delegate_id(annotator_id, labeler), and any label in annotator_id's namespace may be
        corrected."""

    def get_item(self, item_id: str) -> ItemView:
        """Where an item stands (queued, leased, labeled with its current record, skipped); NotFound else."""

    # -- servers (trainers) ---------------------------------------------------------------------------

    def read_labels(self, after_seq: int, limit: int, *, include_payload: bool = True,
                    latest_only: bool = False) -> list[LabeledRecord]:
        """A page of durable records of L after `after_seq`, in seq order, at most `limit`; `latest_only` leaves
        out records a correction superseded. MUST NOT block on a wait. MUST NOT return a record while a record
        with a smaller seq after `after_seq` may still commit: a caller that goes on after the last record it
        got never skips one. Fewer than `limit` MUST mean no more are durable now (wait on `signals.labels`:
        following.follow_records)."""

    def begin_round(self, *, server_id: str, num_labels: int, round_seconds: float) -> tuple[float, str]:
        """(0, "") and a recorded claim, or (seconds to wait, why): coordinator/rounds.py decides."""

    def spool(self) -> IO[bytes]:
        """A temporary file for an upload's weights while they arrive, where this coordinator keeps uploads in
        progress; removed when closed. MUST NOT block."""

    def check_upload(self, *, size_bytes: int, server_id: str, trained_seq: int, num_labels: int, architecture: str,
                     metrics: dict[str, float]) -> None:
        """Refuse an upload header that `receive_model` would refuse, before a byte of its weights is read."""

    def receive_model(self, chunks: Iterable[bytes], *, size_bytes: int, sha256: str, server_id: str,
                      trained_seq: int, num_labels: int, architecture: str, metrics: dict[str, float]) -> ModelInfo:
        """Publish streamed weights as a new version. MUST check the header before reading a byte, MUST hold at
        most a chunk in memory, and MUST leave the registry unchanged when anything is refused."""

    def publish_model(self, *, data: bytes, sha256: str | None = None, **header) -> ModelInfo:
        """`receive_model` for weights in memory."""

    def read_model(self, version: int) -> tuple[ModelInfo, bytes]:
        """A version's entry and weights (0: the latest). NotFound when it does not exist or was pruned."""

    def list_models(self, *, after_version: int, limit: int) -> tuple[list[ModelInfo], bool]:
        """Registry entries with a larger version, in version order, at most `limit`; and whether more follow."""

    def latest_model(self) -> ModelInfo | None:
        """The latest version's entry (rules of "latest": registry.py), None before any. MUST NOT block on a wait
        (a caller that waits for a newer one waits on `signals.models`)."""

    # -- workers (selectors) --------------------------------------------------------------------------

    def submit_candidates(self, *, worker_id: str, strategy: str, model_version: int,
                          candidates: list[Candidate]) -> SubmitOutcome:
        """Offer scored candidates to S by rules.plan_offer (dedup against L and skips, refresh by a newer
        version when not leased, capacity with stalest-first eviction). A batch with any invalid candidate
        MUST be refused whole."""

    def shard_state(self, *, shard_index: int, num_shards: int, labeled_after_seq: int,
                    model_version: int) -> ShardState:
        """A shard's queued and labeled-or-skipped items (types.shard_of), and its share of what S wants
        (rules.demand, rules.shard_share). `labeled_through_seq` MUST NOT pass a seq that may still commit."""

    # -- admin ----------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        """A consistent snapshot of the pools' sizes and counters."""

    def import_labels(self, items: Iterable[ImportedLabel]) -> ImportOutcome:
        """Append labels the pool already had to L (a partly labeled pool; `aal-admin import`), and count them.

        Each new item MUST become one durable record: its label and payload, annotator_id as given, provenance
        (worker_id "", strategy types.IMPORTED_STRATEGY, model_version 0, score 0), queued_at = leased_at =
        labeled_at = now, supersedes 0; counted under "imported" in `stats().labels_by_strategy`; "labels" fires.

        MUST check every item as `submit_candidates` checks a candidate, and its label against the classes, before
        writing any: one invalid item refuses the whole import, naming it (InvalidArgument; ResourceExhausted for
        an oversized picture), and nothing is written. MUST read `items` once if it is an iterator (spooled to
        `spool()` meanwhile; a collection is read twice) and hold at most a batch (importing.IMPORT_BATCH) in
        memory. MUST write a batch per transaction: a failure part-way (Unavailable) leaves the batches before it,
        and importing again completes the import.

        MUST skip (count in `skipped`, never duplicate) an item already in L or skipped, or repeated in `items`
        (its first occurrence counts): importing the same labels twice imports nothing the second time. An
        imported item MUST leave S; a live lease on it ends, so that lease's submit_label, release and
        renew_lease are refused as any ended lease's are (FailedPrecondition, rules.check_held)."""


class Store(Protocol):
    """What both stores (sqlite_store.SqliteStore, postgres_store.PostgresStore) give the coordinators' shared code."""

    def save_task(self, task: Task) -> Future:
        """Record the task; the future MUST resolve only once it is committed."""

    def load_task(self) -> Task | None:
        """The recorded task, or None on a new store."""

    def label_ids_after(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """(seq, item_id) of durable records after `after_seq` in seq order, at most `limit`; the same no-skip
        guarantee as `Coordinator.read_labels`."""

    def latest_label(self, item_id: str, *, by: str | None = None) -> LabeledRecord | None:
        """The record holding an item's current label (its last correction, else its first label); with `by`, that
        annotator's record of the item that no correction superseded, if any (corrections.target)."""

    def upload_file(self) -> AbstractContextManager[IO[bytes]]:
        """A temporary file for an upload to stream into; MUST be removed on exit unless the store took it."""

    def read_blob(self, version: int) -> bytes | None:
        """A published version's weights; None once pruned. A version's weights MUST never change."""

    def close(self) -> None:
        """Release connections and threads; MUST be safe to call more than once."""


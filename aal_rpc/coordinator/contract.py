"""What every coordinator offers the servicers, and what each method guarantees.

Two implementations hold to it: `core.Coordinator` (the embedded store: pools in memory, written through
to SQLite) and `shared.SharedCoordinator` (the PostgreSQL store: every operation a transaction, any number
of replicas). The servicers are typed against this Protocol and use nothing else, and the behavioural tests
run against both. Errors are aal_rpc.errors exceptions; the servicers map them to gRPC statuses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from aal_rpc.coordinator.core import CoordinatorConfig, ItemView, ShardState, Stats, SubmitOutcome
from aal_rpc.types import Candidate, LabeledRecord, ModelInfo, Query, Task


class Coordinator(Protocol):
    task: Task
    config: CoordinatorConfig

    @property
    def closing(self) -> bool:
        """True once `close` began; calls still running MAY then fail with any error (they answer UNAVAILABLE)."""

    def close(self) -> None:
        """Wake every waiter and release the store. MUST be safe to call once per coordinator."""

    # -- annotators -----------------------------------------------------------------------------------

    def lease(self, annotator_id: str, *, wait_seconds: float = 0.0, lease_seconds: float = 0.0,
              is_active: Callable[[], bool] = lambda: True) -> Query | None:
        """Lease the next available query in the configured pick order.

        MUST NOT hand one query to two live leases, even across replicas. MUST NOT offer an item to an
        annotator who deferred it until the deferral ends. MUST wait at most `wait_seconds` for a query and
        MUST return None as soon as `is_active()` is false at a wake-up (see `wake_waiters`). A lease whose
        deadline passed MUST make its query available again without any call."""

    def wake_waiters(self) -> None:
        """Make every waiting `lease` re-check its caller."""

    def submit_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str) -> tuple[int, bool]:
        """Record a label for a held, unexpired lease and return (seq, duplicate) only once it is durable.

        MUST be idempotent per lease: a retry returns the same seq with duplicate=True. MUST refuse a lease
        that expired, belongs to another annotator or names another item (FailedPrecondition), and an
        unknown query (NotFound). Seqs MUST become visible to `follow_labels` in order. A write that fails
        MUST change nothing (Unavailable)."""

    def release(self, *, lease_id: str, item_id: str, annotator_id: str, skip: bool = False, defer: bool = False,
                defer_seconds: float = 0.0) -> None:
        """End a held lease: back to S; with `defer`, not to this annotator for `defer_seconds` (0: the
        configured time); with `skip`, never offered again to anyone."""

    def renew_lease(self, *, lease_id: str, item_id: str, annotator_id: str, lease_seconds: float = 0.0) -> float:
        """Move a held, unexpired lease's deadline to now + lease_seconds; return it."""

    def correct_label(self, *, item_id: str, label: int, annotator_id: str, is_admin: bool = False
                      ) -> tuple[int, int, bool]:
        """Append a correction superseding the item's current record (coordinator/corrections.py); return
        (seq, superseded seq, duplicate) once durable. L MUST stay append-only."""

    def get_item(self, item_id: str) -> ItemView:
        """Where an item stands (queued, leased, labeled with its current record, skipped); NotFound else."""

    # -- servers (trainers) ---------------------------------------------------------------------------

    def follow_labels(self, after_seq: int, *, follow: bool, include_payload: bool = True, latest_only: bool = False,
                      is_active: Callable[[], bool] = lambda: True) -> Iterator[LabeledRecord]:
        """Durable records of L after `after_seq` in seq order. MUST NOT skip a record that commits later
        with a smaller seq. With `follow`, MUST keep waiting for new records while `is_active()`."""

    def begin_round(self, *, server_id: str, num_labels: int, round_seconds: float) -> tuple[float, str]:
        """(0, "") and a recorded claim, or (seconds to wait, why): coordinator/rounds.py decides."""

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

    def wait_for_model(self, after_version: int, wait_seconds: float) -> ModelInfo | None:
        """The latest model once it differs from `after_version`, waiting up to `wait_seconds`."""

    # -- workers (selectors) --------------------------------------------------------------------------

    def submit_candidates(self, *, worker_id: str, strategy: str, model_version: int,
                          candidates: list[Candidate]) -> SubmitOutcome:
        """Offer scored candidates to S with the pool rules (dedup against L and skips, refresh by a newer
        version when not leased, capacity with stalest-first eviction). A batch with any invalid candidate
        MUST be refused whole."""

    def shard_state(self, *, shard_index: int, num_shards: int, labeled_after_seq: int,
                    model_version: int) -> ShardState:
        """A shard's queued and labeled-or-skipped items, and its share of what S wants."""

    # -- admin ----------------------------------------------------------------------------------------

    def stats(self) -> Stats:
        """A consistent snapshot of the pools' sizes and counters."""

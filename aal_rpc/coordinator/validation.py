"""Checks of every request the coordinator takes, shared by both coordinators (embedded and shared-database).

Each raises aal_rpc.errors.InvalidArgument with a message naming the field; the servicers turn that into
INVALID_ARGUMENT.
"""

from __future__ import annotations

from aal_rpc.coordinator.rounds import MAX_ROUND_SECONDS
from aal_rpc.errors import InvalidArgument, ResourceExhausted
from aal_rpc.types import Candidate, Task

MAX_WAIT_SECONDS = 60.0  # longest long poll a client may ask for; it simply asks again
MAX_LEASE_SECONDS = 24 * 3600.0
MAX_ID_CHARS = 256


def check_id(name: str, value: str) -> None:
    if not value:
        raise InvalidArgument(f"{name} is required")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(f"{name} is longer than {MAX_ID_CHARS} characters")
    if "\x00" in value:  # no database text type holds it (PostgreSQL refuses it outright)
        raise InvalidArgument(f"{name} contains a NUL character")


def check_wait(wait_seconds: float) -> None:
    if not 0 <= wait_seconds <= MAX_WAIT_SECONDS:
        raise InvalidArgument(f"wait_seconds must lie in [0, {MAX_WAIT_SECONDS}]")


def check_lease_request(annotator_id: str, wait_seconds: float, lease_seconds: float) -> None:
    check_id("annotator_id", annotator_id)
    check_wait(wait_seconds)
    if not 0 <= lease_seconds <= MAX_LEASE_SECONDS:
        raise InvalidArgument(f"lease_seconds must lie in [0, {MAX_LEASE_SECONDS}]")


def check_lease_ids(lease_id: str, item_id: str, annotator_id: str) -> None:
    check_id("lease_id", lease_id)
    check_id("item_id", item_id)
    check_id("annotator_id", annotator_id)


def check_label(task: Task, lease_id: str, item_id: str, label: int, annotator_id: str) -> None:
    check_lease_ids(lease_id, item_id, annotator_id)
    if not 0 <= label < task.num_classes:
        raise InvalidArgument(f"label {label} is outside the class range [0, {task.num_classes})")


def check_candidates(task: Task, worker_id: str, strategy: str, model_version: int,
                     candidates: list[Candidate]) -> None:
    check_id("worker_id", worker_id)
    check_id("strategy", strategy)
    if model_version < 0:
        raise InvalidArgument("model_version must be non-negative")
    for c in candidates:
        check_id("item_id", c.item_id)
        if tuple(c.payload.shape) != tuple(task.input_shape):
            raise InvalidArgument(f"item {c.item_id}: payload shape {tuple(c.payload.shape)} is not the "
                                  f"task's input shape {tuple(task.input_shape)}")


def check_shard_request(shard_index: int, num_shards: int, labeled_after_seq: int) -> None:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise InvalidArgument(f"shard {shard_index} of {num_shards} does not exist")
    if labeled_after_seq < 0:
        raise InvalidArgument("labeled_after_seq must be non-negative")


def check_begin_round(server_id: str, num_labels: int, round_seconds: float) -> None:
    check_id("server_id", server_id)
    if num_labels < 0:
        raise InvalidArgument("num_labels must be non-negative")
    if not 0 <= round_seconds <= MAX_ROUND_SECONDS:  # NaN fails this too
        raise InvalidArgument(f"round_seconds must lie in [0, {MAX_ROUND_SECONDS:.0f}]")


def check_publish(task: Task, *, server_id: str, architecture: str, trained_seq: int, num_labels: int,
                  last_seq: int, size: int, max_bytes: int) -> None:
    check_id("server_id", server_id)
    if architecture != task.architecture:
        raise InvalidArgument(f"architecture {architecture!r} is not the task's {task.architecture!r}")
    if trained_seq < 0 or num_labels < 0 or trained_seq > last_seq:
        raise InvalidArgument(f"trained_seq {trained_seq} must lie in [0, {last_seq}]")
    if size > max_bytes:
        raise ResourceExhausted(f"weights exceed {max_bytes} bytes")

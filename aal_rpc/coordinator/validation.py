"""Checks of every request the coordinator takes, shared by both coordinators (embedded and shared-database).

Each raises aal_rpc.errors.InvalidArgument with a message naming the field; the servicers turn that into
INVALID_ARGUMENT. The limits below are the documented ones (the .proto comments and the README list them):
whatever passes here can be stored, served and trained on without corrupting L or stopping training.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping

import numpy as np

from aal_rpc.coordinator.rounds import MAX_ROUND_SECONDS
from aal_rpc.errors import InvalidArgument, ResourceExhausted
from aal_rpc.types import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, Candidate, Payload, Task, delegate_id, image_type

MAX_WAIT_SECONDS = 60.0  # longest long poll a client may ask for; it simply asks again
MAX_LEASE_SECONDS = 24 * 3600.0
MAX_ID_CHARS = 256
MAX_METRICS = 32  # held-out metrics per model version (accuracy, loss, ...)
MAX_METRIC_NAME_CHARS = 64
MAX_TEXT_CHARS = 100_000  # a text item's text, for people to read
DEFAULT_DEFER_SECONDS = 600.0  # "don't know": the item is not offered to the same annotator again this long
PILLOW_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}


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


def check_lease_request(annotator_id: str, lease_seconds: float) -> None:
    check_id("annotator_id", annotator_id)
    if not 0 <= lease_seconds <= MAX_LEASE_SECONDS:
        raise InvalidArgument(f"lease_seconds must lie in [0, {MAX_LEASE_SECONDS}]")


def check_lease_ids(lease_id: str, item_id: str, annotator_id: str) -> None:
    check_id("lease_id", lease_id)
    check_id("item_id", item_id)
    check_id("annotator_id", annotator_id)


def check_release(lease_id: str, item_id: str, annotator_id: str, defer_seconds: float) -> None:
    check_lease_ids(lease_id, item_id, annotator_id)
    if not 0 <= defer_seconds <= MAX_LEASE_SECONDS:
        raise InvalidArgument(f"defer_seconds must lie in [0, {MAX_LEASE_SECONDS}]")


def check_renew(lease_id: str, item_id: str, annotator_id: str, lease_seconds: float) -> None:
    check_lease_ids(lease_id, item_id, annotator_id)
    if not 0 <= lease_seconds <= MAX_LEASE_SECONDS:
        raise InvalidArgument(f"lease_seconds must lie in [0, {MAX_LEASE_SECONDS}]")


def check_correction(task: Task, item_id: str, label: int, annotator_id: str, labeler: str = "") -> None:
    check_id("item_id", item_id)
    check_id("annotator_id", annotator_id)
    check_labeler(annotator_id, labeler)
    check_class(task, label)


def check_labeler(annotator_id: str, labeler: str) -> None:
    """A labeler named by the holder `annotator_id` ("" : none) is an id, and so is the annotator it is recorded as
    (types.delegate_id)."""
    if labeler:
        check_id("labeler", labeler)
        check_id(f"the annotator id a label is recorded as ({annotator_id!r}, '/', the labeler)",
                 delegate_id(annotator_id, labeler))


def check_class(task: Task, label: int) -> None:
    if not 0 <= label < task.num_classes:
        raise InvalidArgument(f"label {label} is outside the class range [0, {task.num_classes})")


def check_label(task: Task, lease_id: str, item_id: str, label: int, annotator_id: str, labeler: str = "") -> None:
    check_lease_ids(lease_id, item_id, annotator_id)
    check_labeler(annotator_id, labeler)
    check_class(task, label)


def check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value}")


def check_candidates(task: Task, worker_id: str, strategy: str, model_version: int, candidates: list[Candidate],
                     *, is_published: Callable[[int], bool]) -> None:
    """A worker's batch: ids, a model version that was published (0 before any model), finite scores, and
    payloads of the task's input shape with finite values and a valid picture."""
    check_id("worker_id", worker_id)
    check_id("strategy", strategy)
    if model_version < 0:
        raise InvalidArgument("model_version must be non-negative")
    if model_version and not is_published(model_version):
        raise InvalidArgument(f"model_version {model_version} was never published")
    for c in candidates:
        check_id("item_id", c.item_id)
        check_finite(f"item {c.item_id}: score", c.provenance.score)
        check_guess(task, c)
        if tuple(c.payload.shape) != tuple(task.input_shape):
            raise InvalidArgument(f"item {c.item_id}: payload shape {tuple(c.payload.shape)} is not the "
                                  f"task's input shape {tuple(task.input_shape)}")
        check_payload(f"item {c.item_id}", c.payload)


def check_guess(task: Task, c: Candidate) -> None:
    """The model's guess a candidate carries: a class with its probability, and only from a model (not a cold start)."""
    p = c.provenance
    if p.guess is None:
        return
    if p.model_version == 0:
        raise InvalidArgument(f"item {c.item_id}: a guess needs a model; a cold-start candidate (model_version 0) "
                              "carries none")
    if not 0 <= p.guess < task.num_classes:
        raise InvalidArgument(f"item {c.item_id}: guess {p.guess} is outside the class range [0, {task.num_classes})")
    if not 0.0 <= p.guess_probability <= 1.0:  # NaN too
        raise InvalidArgument(f"item {c.item_id}: guess_probability must lie in [0, 1]")


def check_payload(name: str, payload: Payload) -> None:
    """Values a trainer can learn from (no NaN or infinity) and, when present, a picture a browser can show."""
    x = payload.to_array()
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InvalidArgument(f"{name}: payload tensor holds NaN or infinite values")
    if payload.image:
        check_image(name, payload.image)
    if len(payload.text) > MAX_TEXT_CHARS or "\x00" in payload.text:
        raise InvalidArgument(f"{name}: text must have at most {MAX_TEXT_CHARS} characters and no NUL")


def check_image(name: str, data: bytes) -> None:
    """A PNG, JPEG, GIF or WebP of at most MAX_IMAGE_BYTES and MAX_IMAGE_PIXELS, whose structure Pillow accepts."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ResourceExhausted(f"{name}: image of {len(data)} bytes exceeds {MAX_IMAGE_BYTES}")
    kind = image_type(data)
    if not kind:
        raise InvalidArgument(f"{name}: image is not a PNG, JPEG, GIF or WebP")
    from PIL import Image  # imported here: only coordinators check pictures

    try:
        with Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[kind]]) as img:
            width, height = img.size
            if width * height > MAX_IMAGE_PIXELS:
                raise InvalidArgument(f"{name}: image of {width}x{height} pixels exceeds {MAX_IMAGE_PIXELS}")
            img.verify()  # structure (and PNG checksums), without decoding the pixels
    except InvalidArgument:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for damaged files
        raise InvalidArgument(f"{name}: image is not a valid {kind} ({type(exc).__name__})") from None


def check_metrics(metrics: Mapping[str, float]) -> None:
    if len(metrics) > MAX_METRICS:
        raise InvalidArgument(f"metrics holds {len(metrics)} entries; at most {MAX_METRICS}")
    for name, value in metrics.items():
        if not name or len(name) > MAX_METRIC_NAME_CHARS:
            raise InvalidArgument(f"metric names must have 1 to {MAX_METRIC_NAME_CHARS} characters")
        check_finite(f"metric {name}", value)


def check_shard_request(shard_index: int, num_shards: int, labeled_after_seq: int) -> None:
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise InvalidArgument(f"shard {shard_index} of {num_shards} does not exist")
    if labeled_after_seq < 0:
        raise InvalidArgument("labeled_after_seq must be non-negative")


def check_begin_round(server_id: str, num_labels: int, round_seconds: float, *, last_seq: int) -> None:
    check_id("server_id", server_id)
    if not 0 <= num_labels <= last_seq:  # a claim beyond what L holds would hold every other server back
        raise InvalidArgument(f"num_labels {num_labels} must lie in [0, {last_seq}], the labels L holds")
    if not 0 <= round_seconds <= MAX_ROUND_SECONDS:  # NaN fails this too
        raise InvalidArgument(f"round_seconds must lie in [0, {MAX_ROUND_SECONDS:.0f}]")


def check_publish(task: Task, *, server_id: str, architecture: str, trained_seq: int, num_labels: int,
                  metrics: Mapping[str, float], last_seq: int, size: int, max_bytes: int) -> None:
    """An upload's header, checked before any of its bytes are received. A model claims at most the labels L
    held up to `trained_seq`: "latest" is the model on the most labels, so an inflated claim would stay
    latest for good."""
    check_id("server_id", server_id)
    if architecture != task.architecture:
        raise InvalidArgument(f"architecture {architecture!r} is not the task's {task.architecture!r}")
    if not 0 <= trained_seq <= last_seq:
        raise InvalidArgument(f"trained_seq {trained_seq} must lie in [0, {last_seq}]")
    if not 0 <= num_labels <= trained_seq:
        raise InvalidArgument(f"num_labels {num_labels} must lie in [0, trained_seq {trained_seq}]")
    check_metrics(metrics)
    if size <= 0:
        raise InvalidArgument("size_bytes must be positive")
    if size > max_bytes:
        raise ResourceExhausted(f"weights of {size} bytes exceed the limit of {max_bytes}")

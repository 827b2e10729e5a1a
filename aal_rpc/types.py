"""Domain records shared by the coordinator, the trainers, the selectors and the clients.

Plain dataclasses, free of protobuf and gRPC; `aal_rpc.serde` translates them at the edge.
"""

from __future__ import annotations

import base64
import json
import zlib
import dataclasses
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Payload:
    """What travels with an item: the raw tensor a trainer needs, and what a person looks at: a picture for
    images (the original file's PNG, JPEG, GIF or WebP bytes, or a rendering; `image_type` names it), the text
    for text items."""

    tensor: bytes
    dtype: str
    shape: tuple[int, ...]
    image: bytes = b""
    text: str = ""

    @classmethod
    def from_array(cls, x: np.ndarray, image: bytes = b"", text: str = "") -> "Payload":
        x = np.ascontiguousarray(x)
        return cls(tensor=x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes(),
                   dtype=x.dtype.name, shape=tuple(int(d) for d in x.shape), image=image, text=text)

    @classmethod
    def from_rows(cls, x: np.ndarray, images: Sequence[bytes], texts: Sequence[str]) -> list[Payload]:
        """`from_array(x[k], images[k], texts[k])` for every row k of x, converted once for all: per row, numpy's
        calls (the dtype's name, its byte order) cost more than the row's bytes (0.1 ms each)."""
        x = np.ascontiguousarray(x)
        data = x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes()
        step = x[0].nbytes if len(x) else 0
        dtype, shape = x.dtype.name, tuple(int(d) for d in x.shape[1:])
        return [cls(tensor=data[k * step:(k + 1) * step], dtype=dtype, shape=shape, image=image, text=text)
                for k, (image, text) in enumerate(zip(images, texts, strict=True))]

    @property
    def image_type(self) -> str:
        """The picture's media type, read from its first bytes ("" without a picture)."""
        return image_type(self.image)

    def image_data_url(self) -> str:
        """The picture as a data: URL a page can show ("" without one)."""
        if not self.image:
            return ""
        return f"data:{self.image_type or 'application/octet-stream'};base64,{base64.b64encode(self.image).decode()}"

    def to_array(self) -> np.ndarray:
        return np.frombuffer(self.tensor, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return len(self.tensor) + len(self.image) + len(self.text.encode())


MAX_IMAGE_BYTES = 2 * 1024 * 1024  # an item's picture for people; several fit in one 4 MiB message
MAX_IMAGE_PIXELS = 4096 * 4096  # decoded size bound: a small file may not claim a huge canvas
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                    (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


def image_type(data: bytes) -> str:
    """The media type of a picture a browser shows (PNG, JPEG, GIF, WebP), from its signature; "" otherwise."""
    for signature, mime in IMAGE_SIGNATURES:
        if data.startswith(signature):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return ""


AUDIT_STRATEGY = "audit"  # provenance of items drawn uniformly at random for the accuracy estimate: never trained on
IMPORTED_STRATEGY = "imported"  # provenance of labels that came with the data
TYPICAL_STRATEGY = "typiclust"  # strategies.TypiClust: the cold start's typical items when the model is an encoder
# gold items: labels known in advance (aal-coordinator --gold), imported into L by annotator GOLD_ANNOTATOR with
# provenance GOLD_STRATEGY, and kept in S for every annotator to label once, at the coordinator's --gold-share of
# leases; their known answers sharpen each annotator's estimated quality (consensus.py)
GOLD_STRATEGY = "gold"
GOLD_ANNOTATOR = "gold"
# provenance of a labeled item offered for one more label (adaptive re-labeling: strategies.activelab, rules.plan_offer)
RELABEL_STRATEGY = "relabel"
PRETRAIN_STEPS = "pretrain_steps"  # a model's metrics: self-supervised steps it was pretrained for


def strategy_shown(strategy: str) -> str:
    """The strategy a person may be shown for an item: none for an audit item or a gold item, so that nobody labels
    the items that measure accuracy differently from the rest."""
    return "" if strategy in (AUDIT_STRATEGY, GOLD_STRATEGY) else strategy


def provenance_sent(p: Provenance) -> Provenance:
    """An item's provenance as the AnnotationService sends it to annotators: a gold item's is blank, so that no
    client, a person's tool or a script, can tell a gold item (whose answer is known) from any other. An audit item
    goes without the model's guess: a person shown it would lean towards it, and the audit's estimate of the model's
    accuracy rests on labels given without it."""
    if p.strategy == GOLD_STRATEGY:
        return Provenance()
    if p.strategy == AUDIT_STRATEGY and p.guess is not None:
        return dataclasses.replace(p, guess=None, guess_probability=0.0)
    return p


# What separates a delegating token's identity from the labeler it names (SubmitLabel's `labeler`): the label is
# recorded as `<identity>/<labeler>`, inside the token's own namespace.
DELEGATE_SEPARATOR = "/"


def delegate_id(holder: str, labeler: str) -> str:
    """The annotator a label is recorded as: `holder` (the lease's holder) itself without a `labeler`, else
    `holder/labeler`, so a tool speaking for its users (the Label Studio bridge) names each of them, and never anyone
    outside its own namespace."""
    return f"{holder}{DELEGATE_SEPARATOR}{labeler}" if labeler else holder


def in_namespace(annotator_id: str, holder: str) -> bool:
    """Is `annotator_id` `holder` or one of the labelers `holder` speaks for (delegate_id)?"""
    return annotator_id == holder or annotator_id.startswith(holder + DELEGATE_SEPARATOR)


@dataclass(frozen=True)
class Provenance:
    """Which worker, strategy and model version proposed an item, and with what score."""

    worker_id: str = ""
    strategy: str = ""
    model_version: int = 0
    score: float = 0.0
    cluster: int | None = None  # Cluster-Margin's cluster of the item in its worker's shard
    # The proposing model's guess: the class it predicts and that class's probability (None: no model's guess, as
    # for a cold-start pick, model_version 0). A tool may offer it as a pre-annotation.
    guess: int | None = None
    guess_probability: float = 0.0


@dataclass(frozen=True)
class Task:
    """What every process must agree on. Fixed when the coordinator first starts on a data dir."""

    dataset: str
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    architecture: str
    mode: str = "async"
    batch_size: int = 0
    class_descriptions: tuple[str, ...] = ()  # one line of guidance per class ("" where none); () for none at all
    guidelines: str = ""  # Markdown shown to annotators (aal-web, Label Studio's instructions)
    input_size: tuple[int, ...] = ()  # (height, width) pictures are resized to for the model; () the data's own
    test_dataset: str = ""  # a labeled held-out set the trainers evaluate on, when not the dataset's own split
    audit_share: float = 0.0  # share of labels spent on uniform random audit items (the accuracy estimate)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Task":
        d = json.loads(text)
        for key in ("class_names", "input_shape", "class_descriptions", "input_size"):
            if key in d:  # tasks recorded before a field existed take its default
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass(frozen=True)
class LabeledRecord:
    """One record of the labeled pool L."""

    seq: int
    item_id: str
    label: int
    annotator_id: str
    payload: Payload | None
    provenance: Provenance
    queued_at: float
    leased_at: float
    labeled_at: float
    lease_id: str = ""
    supersedes: int = 0  # a correction: the seq of the record it replaces; 0 for an item's first label


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the model registry."""

    version: int
    server_id: str
    trained_seq: int
    num_labels: int
    architecture: str
    metrics: dict[str, float] = field(default_factory=dict)
    created_at: float = 0.0
    size_bytes: int = 0
    sha256: str = ""
    blob_available: bool = True

    def freshness(self) -> tuple[int, int]:
        """Sort key of "latest": trained on the most labels, newest on a tie."""
        return (self.num_labels, self.version)


def is_encoder(info: ModelInfo) -> bool:
    """A pretrained encoder, published before any label was trained on: its embeddings are meaningful, its class
    probabilities are not. The selectors pick typical items in its embedding instead of random ones (the cold
    start), and those picks count as the cold start's, not as a model's choices."""
    return info.num_labels == 0 and info.metrics.get(PRETRAIN_STEPS, 0) > 0


@dataclass(frozen=True)
class AnnotatorCounts:
    """What one annotator did: items labeled (first labels; a correction adds none), skipped as unlabelable, and
    deferred ("don't know"; since the embedded coordinator started, ever on the shared store)."""

    labels: int = 0
    skips: int = 0
    defers: int = 0


@dataclass(frozen=True)
class Stats:
    """The coordinator's figures (GetStats): pool sizes, the registry, L's last record, candidates offered and
    evicted, labels by strategy. The one record of them: the coordinator fills it, serde carries it over the wire
    field by field, and aal-admin prints it."""

    labeled: int
    queued: int  # in S and free to lease
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
    annotators: dict[str, AnnotatorCounts] = field(default_factory=dict)  # by annotator id


@dataclass(frozen=True)
class Lease:
    """An annotator's reservation of a query until `deadline` (unix seconds)."""

    lease_id: str
    annotator_id: str
    leased_at: float
    deadline: float


@dataclass(frozen=True)
class Candidate:
    """A scored item proposed by a worker for the query pool S."""

    item_id: str
    payload: Payload
    provenance: Provenance


@dataclass(frozen=True)
class Query:
    """A leased candidate, as handed to an annotator."""

    item_id: str
    lease_id: str
    annotator_id: str
    deadline: float
    payload: Payload
    provenance: Provenance


def shard_key(item_id: str) -> int:
    """An item's stable hash (crc32 of its UTF-8 id), identical in every process and language; shard j of k
    holds the items whose key % k == j. The query pool and the PostgreSQL store keep it per item."""
    return zlib.crc32(item_id.encode())


def shard_of(item_id: str, num_shards: int) -> int:
    """The shard that owns an item."""
    return shard_key(item_id) % num_shards

"""Domain records shared by the coordinator, the trainers, the selectors and the clients.

Plain dataclasses, free of protobuf and gRPC; `aal_rpc.serde` translates them at the edge.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Payload:
    """What travels with an item: the raw tensor a trainer needs, and what a person looks at: a PNG for images,
    the text for text items."""

    tensor: bytes
    dtype: str
    shape: tuple[int, ...]
    image_png: bytes = b""
    text: str = ""

    @classmethod
    def from_array(cls, x: np.ndarray, image_png: bytes = b"", text: str = "") -> "Payload":
        x = np.ascontiguousarray(x)
        return cls(tensor=x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes(),
                   dtype=x.dtype.name, shape=tuple(int(d) for d in x.shape), image_png=image_png, text=text)

    def to_array(self) -> np.ndarray:
        return np.frombuffer(self.tensor, dtype=np.dtype(self.dtype).newbyteorder("<")).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return len(self.tensor) + len(self.image_png) + len(self.text.encode())


@dataclass(frozen=True)
class Provenance:
    """Which worker, strategy and model version proposed an item, and with what score."""

    worker_id: str = ""
    strategy: str = ""
    model_version: int = 0
    score: float = 0.0
    cluster: int | None = None  # Cluster-Margin's cluster of the item in its worker's shard


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

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Task":
        d = json.loads(text)
        d["class_names"] = tuple(d["class_names"])
        d["input_shape"] = tuple(d["input_shape"])
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

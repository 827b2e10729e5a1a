"""The `Dataset` every loader returns: a pool split (labeled through the system), a held-out split, and the
pool items' ids, which every process (workers, oracles, the coordinator's records) must agree on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from aal_rpc.types import shard_of

TEST_FRACTION = 0.25  # held-out share when a dataset brings no test split of its own
SPLIT_SEED = 0  # the pool/test split must be the same in every process
MAX_ITEM_ID_CHARS = 256  # the coordinator refuses longer ids (coordinator/validation.py MAX_ID_CHARS)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A pool split and a held-out split.

    `item_ids` name the pool items; left empty they are the row numbers ("0", "1", ...). They are unique,
    non-empty, at most 256 characters and free of NUL (what the coordinator accepts). `texts` holds the raw
    text of each pool item for text datasets (the tensors are hashed n-grams a person cannot read), else None.
    """

    name: str
    x_pool: np.ndarray  # (N, ...) float32 for images and vectors, int64 n-gram buckets for text
    y_pool: np.ndarray  # (N,) int64, the ground truth the simulated oracle answers from
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    item_ids: tuple[str, ...] = ()
    texts: tuple[str, ...] | None = None
    _row_of: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        n = len(self.x_pool)
        if len(self.y_pool) != n or len(self.x_test) != len(self.y_test):
            raise ValueError(f"{self.name}: x and y differ in length ({n} pool items, {len(self.y_pool)} labels; "
                             f"{len(self.x_test)} test items, {len(self.y_test)} labels)")
        ids = tuple(str(i) for i in range(n)) if not self.item_ids else tuple(self.item_ids)
        if len(ids) != n:
            raise ValueError(f"{self.name}: {len(ids)} item ids for {n} pool items")
        for item_id in ids:
            check_item_id(self.name, item_id)
        row_of = {item_id: row for row, item_id in enumerate(ids)}
        if len(row_of) != n:
            raise ValueError(f"{self.name}: item ids must be unique; repeated: {_repeated(ids)[:5]}")
        if self.texts is not None and len(self.texts) != n:
            raise ValueError(f"{self.name}: {len(self.texts)} texts for {n} pool items")
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "_row_of", row_of)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_pool.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def index_of(self, item_id: str) -> int:
        """The pool row of an item; KeyError for an id the pool does not hold."""
        return self._row_of[item_id]

    def shard_indices(self, shard_index: int, num_shards: int) -> np.ndarray:
        """Pool rows owned by shard `shard_index` of `num_shards`: sharded by item id, as the coordinator does."""
        return np.array([row for row, item_id in enumerate(self.item_ids)
                         if shard_of(item_id, num_shards) == shard_index], dtype=np.int64)


def check_item_id(dataset: str, item_id: str) -> None:
    if not isinstance(item_id, str) or not item_id:
        raise ValueError(f"{dataset}: item ids must be non-empty strings; got {item_id!r}")
    if len(item_id) > MAX_ITEM_ID_CHARS:
        raise ValueError(f"{dataset}: item id {item_id[:40]!r}... is longer than {MAX_ITEM_ID_CHARS} characters")
    if "\x00" in item_id:
        raise ValueError(f"{dataset}: item id {item_id!r} contains a NUL character")


def _repeated(ids: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for i in ids:
        if i in seen and i not in out:
            out.append(i)
        seen.add(i)
    return out


def split_rows(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, test rows) of a dataset of n items without a test split of its own: a fixed permutation."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = int(round(n * TEST_FRACTION))
    return order[n_test:], order[:n_test]

"""The `Dataset` every loader returns: a pool split (labeled through the system, by people or a simulated
oracle), a held-out split, and the pool items' ids, which every process (workers, oracles, the coordinator's
records) must agree on. A pool item may come without a label (`UNLABELED`): people label their own data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from aal_rpc.data.pictures import display_picture, render_png
from aal_rpc.types import shard_of

UNLABELED = -1  # y_pool of an item that has no label yet
TEST_FRACTION = 0.25  # held-out share when a fully labeled dataset brings no test split of its own
SPLIT_SEED = 0  # the pool/test split must be the same in every process
MAX_ITEM_ID_CHARS = 256  # the coordinator refuses longer ids (coordinator/validation.py MAX_ID_CHARS)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A pool split and a held-out split.

    `item_ids` name the pool items; left empty they are the row numbers ("0", "1", ...). They are unique,
    non-empty, at most 256 characters and free of NUL (what the coordinator accepts). `y_pool` holds a class
    index, or `UNLABELED` for an item nobody has labeled; the held-out split is always labeled, and empty
    when the pool has unlabeled items and the data brings no test split. `texts` holds the raw text of each
    pool item for text datasets (the tensors are hashed n-grams a person cannot read), else None. `sources`
    says where each pool item came from (a file's path) for datasets read from files, else None; `originals`
    reads the bytes of a pool row's original picture, for `picture`.
    """

    name: str
    x_pool: np.ndarray  # (N, ...) float32 for images and vectors, int64 n-gram buckets for text
    y_pool: np.ndarray  # (N,) int64: a class index, or UNLABELED
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    item_ids: tuple[str, ...] = ()
    texts: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    originals: Callable[[int], bytes] | None = field(default=None, repr=False)
    _row_of: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        n = len(self.x_pool)
        if len(self.y_pool) != n or len(self.x_test) != len(self.y_test):
            raise ValueError(f"{self.name}: x and y differ in length ({n} pool items, {len(self.y_pool)} labels; "
                             f"{len(self.x_test)} test items, {len(self.y_test)} labels)")
        k = len(self.class_names)
        if len(self.y_pool) and not (UNLABELED <= self.y_pool.min() and self.y_pool.max() < k):
            raise ValueError(f"{self.name}: pool labels must lie in [0, {k}) or be UNLABELED ({UNLABELED})")
        if len(self.y_test) and not (0 <= self.y_test.min() and self.y_test.max() < k):
            raise ValueError(f"{self.name}: every test item needs a label in [0, {k})")
        ids = tuple(str(i) for i in range(n)) if not self.item_ids else tuple(self.item_ids)
        if len(ids) != n:
            raise ValueError(f"{self.name}: {len(ids)} item ids for {n} pool items")
        for item_id in ids:
            check_item_id(self.name, item_id)
        row_of = {item_id: row for row, item_id in enumerate(ids)}
        if len(row_of) != n:
            raise ValueError(f"{self.name}: item ids must be unique; repeated: {_repeated(ids)[:5]}")
        for what, values in (("texts", self.texts), ("sources", self.sources)):
            if values is not None and len(values) != n:
                raise ValueError(f"{self.name}: {len(values)} {what} for {n} pool items")
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "_row_of", row_of)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_pool.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labeled_rows(self) -> np.ndarray:
        """The pool rows that have a label."""
        return np.flatnonzero(self.y_pool != UNLABELED)

    @property
    def is_fully_labeled(self) -> bool:
        return bool((self.y_pool != UNLABELED).all())

    @property
    def has_test_split(self) -> bool:
        return len(self.x_test) > 0

    def index_of(self, item_id: str) -> int:
        """The pool row of an item; KeyError for an id the pool does not hold."""
        return self._row_of[item_id]

    def shard_indices(self, shard_index: int, num_shards: int) -> np.ndarray:
        """Pool rows owned by shard `shard_index` of `num_shards`: sharded by item id, as the coordinator does."""
        return np.array([row for row, item_id in enumerate(self.item_ids)
                         if shard_of(item_id, num_shards) == shard_index], dtype=np.int64)

    def picture(self, row: int) -> bytes:
        """What a person looks at for pool row `row`: the original file's bytes where a browser shows them and
        they are small enough, else a rendering of the original (read now, not kept); a PNG of the tensor for
        array datasets; b"" for text."""
        if self.originals is not None:
            where = self.sources[row] if self.sources is not None else f"{self.name} row {row}"
            try:
                data = self.originals(row)
            except OSError as exc:
                raise ValueError(f"{where}: cannot read the picture ({exc})") from None
            return display_picture(data, where)
        if self.texts is not None:
            return b""
        return render_png(self.x_pool[row])


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


def pool_and_test(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pool rows, test rows) of items without a test split of their own: the fixed held-out share when every
    item is labeled (simulated experiments), else every item in the pool and no test split (a team's data)."""
    if (y != UNLABELED).all():
        return split_rows(len(y))
    return np.arange(len(y)), np.zeros(0, dtype=np.int64)

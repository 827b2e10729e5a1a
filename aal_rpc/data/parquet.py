"""`parquet:PATH`: a table of pictures or texts, labeled, partly or not at all; pyarrow is imported here only.

Columns: `image` (a picture file's bytes, its path relative to the Parquet file's folder or absolute, or Hugging
Face's {bytes, path} struct) or `text`; optional `label` (a class name or an integer; null: unlabeled), `id` and
`split`. Pictures are decoded as a folder's are and shown from their original bytes.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aal_rpc.data.dataset import Dataset
from aal_rpc.data.folder import FileOriginals, opaque_id
from aal_rpc.data.labels import table
from aal_rpc.data.pictures import decode_pictures
from aal_rpc.data.text import text_dataset

BATCH_ROWS = 256  # rows of pictures read from the file at a time


def parquet(path: Path, name: str, classes: Sequence[str] | None, input_size: tuple[int, int]) -> Dataset:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{name} needs pyarrow (pip install 'aal-rpc[parquet]')") from None
    try:
        pf = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
    columns = pf.schema_arrow.names
    n = pf.metadata.num_rows
    if "image" not in columns and "text" not in columns:
        raise ValueError(f"{path}: needs an image or a text column; found {columns}")
    if n == 0:
        raise ValueError(f"{path}: no rows")
    meta = pf.read(columns=[c for c in ("label", "id", "split") if c in columns]).to_pydict()
    where = [f"{path} row {i}" for i in range(n)]
    labels = [_label(v) for v in meta.get("label", [None] * n)]
    ids = [None if v in (None, "") else str(v) for v in meta.get("id", [None] * n)]
    splits = [v or None for v in meta.get("split", [None] * n)]
    if "image" not in columns:
        texts = pf.read(columns=["text"]).column(0).to_pylist()
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"{where[i]}: text must be a string; got {text!r}")
        return text_dataset(name, str(path), where, texts, labels, ids, splits, classes)

    base = path.parent
    if _is_string(pf.schema_arrow.field("image").type):  # paths: shown from their files, named in errors
        paths = pf.read(columns=["image"]).column(0).to_pylist()
        for i, p in enumerate(paths):
            if not p:
                raise ValueError(f"{where[i]}: no picture path")
            where[i] = f"{where[i]} ({base / p})"
        if all(i is None for i in ids):
            ids = [opaque_id(p) for p in paths]  # a path may name the class
        t = table(str(path), where, labels, ids, splits, classes)
        x = decode_pictures(((w, base / p) for w, p in zip(where, paths)), n, input_size)
        sources = tuple(paths[i] for i in t.pool)
        return _dataset(name, x, t, sources=sources, originals=FileOriginals(base, sources))
    t = table(str(path), where, labels, ids, splits, classes)
    x = decode_pictures(zip(where, _pictures(pf, base, where)), n, input_size)
    return _dataset(name, x, t, sources=None, originals=ParquetOriginals(path, t.pool))


def _dataset(name: str, x: np.ndarray, t, *, sources, originals) -> Dataset:
    return Dataset(name, x[t.pool], t.y[t.pool], x[t.test], t.y[t.test], t.class_names,
                   item_ids=tuple(t.ids[i] for i in t.pool) if t.ids else (), sources=sources, originals=originals)


def _label(value):
    """A label as read: floats that are whole numbers are indices (pandas writes nullable ints as floats)."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    return None if value == "" else value


def _is_string(type_) -> bool:
    import pyarrow as pa

    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def _pictures(pf, base: Path, where: list[str]) -> Iterator[bytes | Path]:
    row = 0
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=["image"]):
        for value in batch.column(0).to_pylist():
            yield picture_ref(value, base, where[row])
            row += 1


def picture_ref(value, base: Path, where: str) -> bytes | Path:
    """An image cell as a picture file's bytes or path: bytes, a path string, or a {bytes, path} struct."""
    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes) and value:
        return value
    if isinstance(value, str) and value:
        return base / value
    raise ValueError(f"{where}: no picture (the image cell holds {type(value).__name__})")


class ParquetOriginals:
    """Reads a pool row's picture back from the Parquet file when a person is to see it: the row group that
    holds it, the last one kept (a selector asks for neighbouring rows in bursts)."""

    def __init__(self, path: Path, rows: np.ndarray):
        self.path = path
        self.rows = rows  # pool row -> the file's row
        self._group: tuple[int, Any] = (-1, None)  # (row group, its image column: a pyarrow ChunkedArray)

    def __call__(self, row: int) -> bytes:
        import pyarrow.parquet as pq

        r = int(self.rows[row])
        pf = pq.ParquetFile(self.path)
        starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]).tolist()
        g = bisect_right(starts, r) - 1
        group = self._group  # one read of the attribute: another thread may swap it meanwhile
        if group[0] != g:
            group = (g, pf.read_row_group(g, columns=["image"]).column(0))
            self._group = group
        ref = picture_ref(group[1][r - starts[g]].as_py(), self.path.parent, f"{self.path} row {r}")
        return ref if isinstance(ref, bytes) else ref.read_bytes()

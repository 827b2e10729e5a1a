"""Text items: `jsonl:PATH` and `csv:PATH` datasets (labeled, partly or not at all), and the tensor a text
becomes.

A text becomes a fixed-length int64 vector of hashed n-gram buckets (fastText's hashing trick): the
lowercase word tokens' unigrams and bigrams, each hashed with crc32 (stable across processes, unlike
Python's salted hash()) into buckets 1..NUM_BUCKETS-1, padded with 0. The `text` model embeds and
averages them (aal_rpc/models). People see the raw text (`Dataset.texts`).
"""

from __future__ import annotations

import csv
import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aal_rpc.data.dataset import Dataset
from aal_rpc.data.labels import INTEGER, table

MAX_TOKENS = 128  # word tokens of a text that count; the rest is cut
TEXT_LENGTH = 2 * MAX_TOKENS  # n-gram slots per item: MAX_TOKENS unigrams and MAX_TOKENS - 1 bigrams, padded
NUM_BUCKETS = 1 << 16  # hash buckets, bucket 0 the padding; the text model's embedding table has this many rows
PADDING = 0

_TOKEN = re.compile(r"\w+")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())[:MAX_TOKENS]


def bucket(ngram: str) -> int:
    return 1 + zlib.crc32(ngram.encode("utf-8")) % (NUM_BUCKETS - 1)


def encode_text(text: str) -> np.ndarray:
    """(TEXT_LENGTH,) int64 bucket ids of the text's unigrams and bigrams, in reading order, padded with 0."""
    toks = tokens(text)
    ngrams = []
    for i, tok in enumerate(toks):
        ngrams.append(tok)
        if i:
            ngrams.append(f"{toks[i - 1]} {tok}")  # a space never occurs in a token: no clash with unigrams
    out = np.full(TEXT_LENGTH, PADDING, dtype=np.int64)
    out[:len(ngrams)] = [bucket(g) for g in ngrams]
    return out


def encode_texts(texts: list[str] | tuple[str, ...]) -> np.ndarray:
    """(N, TEXT_LENGTH) int64."""
    out = np.zeros((len(texts), TEXT_LENGTH), dtype=np.int64)
    for i, t in enumerate(texts):
        out[i] = encode_text(t)
    return out


def jsonl(path: Path, name: str, classes: Sequence[str] | None = None) -> Dataset:
    """One JSON object a line: "text", optional "label" (a class name or an int; missing, null or "": not
    labeled), "id" and "split"."""
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object")
            rows.append((lineno, obj))
    return _text_dataset(path, name, rows, classes)


def csv_(path: Path, name: str, classes: Sequence[str] | None = None) -> Dataset:
    """A header row naming a "text" column, optional "label" (empty: not labeled), "id" and "split" columns.
    Without declared classes, labels that are all integers are class indices, otherwise class names."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        if "text" not in header:
            raise ValueError(f"{path}: the header must name a text column (and optionally label, id, split); "
                             f"found {header}")
        rows = [(reader.line_num, {k: v for k, v in row.items() if k in header and v is not None})
                for row in reader]
    for _, obj in rows:
        obj["label"] = obj.get("label", "").strip()
    labels = [obj["label"] for _, obj in rows if obj["label"]]
    if not classes and labels and all(INTEGER.fullmatch(lab) for lab in labels):
        for _, obj in rows:
            obj["label"] = int(obj["label"]) if obj["label"] else None
    return _text_dataset(path, name, rows, classes)


def _text_dataset(path: Path, name: str, rows: list[tuple[int, dict]], classes: Sequence[str] | None) -> Dataset:
    for lineno, obj in rows:
        if not isinstance(obj.get("text"), str):
            raise ValueError(f"{path}:{lineno}: text must be a string; got {obj.get('text')!r}")
    return text_dataset(name, str(path), [f"{path}:{lineno}" for lineno, _ in rows],
                        [obj["text"] for _, obj in rows], [obj.get("label") for _, obj in rows],
                        [obj.get("id") for _, obj in rows], [obj.get("split") for _, obj in rows], classes)


def text_dataset(name: str, source: str, where: list[str], texts: list[str], labels: list, ids: list,
                 splits: list, classes: Sequence[str] | None) -> Dataset:
    """A text dataset from a table's columns (`where` names each row in errors; "" or None is no value)."""
    if not texts:
        raise ValueError(f"{source}: no items")
    t = table(source, where, [None if lab in (None, "") else lab for lab in labels],
              [None if i in (None, "") else str(i) for i in ids], [s or None for s in splits], classes)
    x = encode_texts(texts)
    return Dataset(name, x[t.pool], t.y[t.pool], x[t.test], t.y[t.test], t.class_names,
                   item_ids=tuple(t.ids[i] for i in t.pool) if t.ids else (),
                   texts=tuple(texts[i] for i in t.pool))

"""Text items: `jsonl:PATH` and `csv:PATH` datasets, and the tensor a text becomes.

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
from pathlib import Path

import numpy as np

from aal_rpc.data.dataset import Dataset, split_rows

MAX_TOKENS = 128  # word tokens of a text that count; the rest is cut
TEXT_LENGTH = 2 * MAX_TOKENS  # n-gram slots per item: MAX_TOKENS unigrams and MAX_TOKENS - 1 bigrams, padded
NUM_BUCKETS = 1 << 16  # hash buckets, bucket 0 the padding; the text model's embedding table has this many rows
PADDING = 0
SPLITS = ("train", "test")  # values of an optional split field: pool and held-out

_TOKEN = re.compile(r"\w+")
_INT = re.compile(r"[+-]?\d+")


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


def jsonl(path: Path, name: str) -> Dataset:
    """One JSON object a line: "text", "label" (a class name or an int), optional "id" and "split"."""
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
            label = obj.get("label")
            if isinstance(label, bool) or not isinstance(label, (int, str)):
                raise ValueError(f"{path}:{lineno}: label must be a class name or an integer; got {label!r}")
            rows.append((lineno, obj))
    return _text_dataset(path, name, rows)


def csv_(path: Path, name: str) -> Dataset:
    """A header row naming a "text" and a "label" column, optional "id" and "split" columns. Labels that are
    all integers are class indices; otherwise they are class names."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in ("text", "label") if c not in header]
        if missing:
            raise ValueError(f"{path}: the header must name the columns text and label; missing {missing}, "
                             f"found {header}")
        rows = [(reader.line_num, {k: v for k, v in row.items() if k in header and v is not None})
                for row in reader]
    if rows and all(_INT.fullmatch(obj.get("label", "").strip()) for _, obj in rows):
        for _, obj in rows:
            obj["label"] = int(obj["label"])
    return _text_dataset(path, name, rows)


def _text_dataset(path: Path, name: str, rows: list[tuple[int, dict]]) -> Dataset:
    if not rows:
        raise ValueError(f"{path}: no items")
    texts, labels, ids, splits = [], [], [], []
    for lineno, obj in rows:
        text = obj.get("text")
        if not isinstance(text, str):
            raise ValueError(f"{path}:{lineno}: text must be a string; got {text!r}")
        if obj.get("label") in (None, ""):
            raise ValueError(f"{path}:{lineno}: no label")
        texts.append(text)
        labels.append(obj["label"])
        ids.append(None if obj.get("id") in (None, "") else str(obj["id"]))
        splits.append(obj.get("split") or None)
    class_names, y = _classes(path, labels)
    ids = _ids(path, rows, ids)
    if any(s is not None for s in splits):
        for (lineno, _), s in zip(rows, splits):
            if s not in SPLITS:
                raise ValueError(f"{path}:{lineno}: split must be one of {SPLITS} on every row; got {s!r}")
        pool = np.array([i for i, s in enumerate(splits) if s == "train"], dtype=np.int64)
        test = np.array([i for i, s in enumerate(splits) if s == "test"], dtype=np.int64)
    else:
        pool, test = split_rows(len(texts))
    x = encode_texts(texts)
    return Dataset(name, x[pool], y[pool], x[test], y[test], class_names,
                   item_ids=tuple(ids[i] for i in pool) if ids else (),
                   texts=tuple(texts[i] for i in pool))


def _classes(path: Path, labels: list) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and label indices: string labels are names (sorted), integer labels indices 0..max."""
    if all(isinstance(lab, int) for lab in labels):
        y = np.asarray(labels, dtype=np.int64)
        if y.min() < 0:
            raise ValueError(f"{path}: integer labels must be non-negative; found {int(y.min())}")
        return tuple(str(c) for c in range(int(y.max()) + 1)), y
    if all(isinstance(lab, str) for lab in labels):
        names = tuple(sorted(set(labels)))
        index = {n: i for i, n in enumerate(names)}
        return names, np.array([index[lab] for lab in labels], dtype=np.int64)
    raise ValueError(f"{path}: labels must be all class names or all integers, not a mix")


def _ids(path: Path, rows: list[tuple[int, dict]], ids: list[str | None]) -> list[str]:
    """The id field of every row, [] when no row has one; a file that names some ids must name all, uniquely."""
    if all(i is None for i in ids):
        return []
    seen: dict[str, int] = {}
    for (lineno, _), item_id in zip(rows, ids):
        if item_id is None:
            raise ValueError(f"{path}:{lineno}: no id, where other rows have one (give every row an id, or none)")
        if item_id in seen:
            raise ValueError(f"{path}:{lineno}: duplicate id {item_id!r} (first on line {seen[item_id]})")
        seen[item_id] = lineno
    return ids

"""Datasets chosen by name: `digits` (bundled, the default), `digits28`, `npz:PATH`, `cifar10:DIR`, `folder:DIR`,
`jsonl:PATH`, `csv:PATH` (text) and `parquet:PATH` (pictures or text).

Every dataset has a pool split, whose items are labeled through the system, and a held-out split the
trainers evaluate on. A team's own data may come with labels on every item, some, or none (`UNLABELED`), and
with classes the team declares; a pool with unlabeled items keeps them all and has no held-out split unless
the data (or the task's test dataset) brings one. Pictures and vectors are float32 arrays; texts are int64
vectors of hashed n-grams (data/text.py). Item ids come from the data's id field where it has one, hash a
picture file's path otherwise (a path can give the class away), and are the pool row numbers elsewhere. None
of the loaders needs torchvision or unpickles anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aal_rpc.data.cifar10 import cifar10
from aal_rpc.data.dataset import MAX_ITEM_ID_CHARS, SPLIT_SEED, TEST_FRACTION, UNLABELED, Dataset
from aal_rpc.data.folder import folder
from aal_rpc.data.images import digits, digits28, npz
from aal_rpc.data.images import digits_arrays as _digits_arrays  # noqa: F401 - the name tests and tools import
from aal_rpc.data.labels import ClassList, read_classes, with_classes
from aal_rpc.data.parquet import parquet
from aal_rpc.data.pictures import FOLDER_IMAGE_SIZE, load_image, render_png, with_channels
from aal_rpc.data.text import csv_, encode_text, jsonl

if TYPE_CHECKING:
    from aal_rpc.types import Task

DATASETS = "digits, digits28, npz:PATH, cifar10:DIR, folder:DIR, jsonl:PATH, csv:PATH or parquet:PATH"


def load_dataset(spec: str, *, classes: Sequence[str] | None = None,
                 input_size: tuple[int, ...] | None = None) -> Dataset:
    """The dataset `spec` names. `classes`: the team's class names in their order (a label is a position);
    labels in the data map onto them. `input_size`: (height, width) of pictures read from files (folder,
    Parquet), FOLDER_IMAGE_SIZE square when None. ValueError, one line naming the file, for bad data."""
    kind, _, arg = spec.partition(":")
    classes = tuple(classes) if classes else None
    size = _input_size(input_size)
    if kind in ("digits", "digits28") and not arg:
        ds = with_classes(digits() if kind == "digits" else digits28(), classes)
    elif kind == "cifar10" and arg:
        ds = with_classes(cifar10(Path(arg), spec), classes)
    elif kind in ("npz", "jsonl", "csv") and arg:
        ds = {"npz": npz, "jsonl": jsonl, "csv": csv_}[kind](Path(arg), spec, classes)
    elif kind in ("folder", "parquet") and arg:
        ds = {"folder": folder, "parquet": parquet}[kind](Path(arg), spec, classes, size)
    else:
        raise ValueError(f"unknown dataset {spec!r}; expected {DATASETS}")
    if ds.num_classes < 2:
        raise ValueError(f"{spec}: a task needs at least two classes; the data names {list(ds.class_names)} (declare "
                         f"them with --classes or --classes-file)")
    return ds


def load_test_set(spec: str, *, classes: Sequence[str], input_size: tuple[int, ...] | None,
                  channels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every item of `spec` (pool and test split together) as a held-out set for a task with `classes`: each
    must be labeled with one of them. `channels`: the pool's picture channels, where they may differ."""
    try:
        ds = load_dataset(spec, classes=classes, input_size=input_size)
    except ValueError as exc:
        raise ValueError(f"test set: {exc}") from None
    x, y = np.concatenate([ds.x_pool, ds.x_test]), np.concatenate([ds.y_pool, ds.y_test])
    unlabeled = np.flatnonzero(y == UNLABELED)
    if len(unlabeled):
        row = int(unlabeled[0])
        example = ds.sources[row] if ds.sources is not None and row < len(ds.x_pool) else f"row {row}"
        raise ValueError(f"test set {spec}: {len(unlabeled)} of {len(y)} items have no label, or classes not in the "
                         f"task ({', '.join(classes)}); e.g. {example}")
    if channels is not None and x.ndim == 4:
        x = with_channels(x, channels)
    return x, y


def load_task_dataset(task: Task) -> Dataset:
    """The task's dataset with its classes and input size, evaluated on its test dataset when it names one."""
    input_size = tuple(task.input_size) or None
    ds = load_dataset(task.dataset, classes=task.class_names, input_size=input_size)
    if not task.test_dataset:
        return ds
    channels = ds.input_shape[0] if len(ds.input_shape) == 3 else None
    x_test, y_test = load_test_set(task.test_dataset, classes=task.class_names, input_size=input_size,
                                   channels=channels)
    if x_test.shape[1:] != ds.x_pool.shape[1:]:
        raise ValueError(f"test set {task.test_dataset}: items of shape {x_test.shape[1:]}, where the pool's "
                         f"({task.dataset}) are {ds.x_pool.shape[1:]}")
    return replace(ds, x_test=x_test.astype(ds.x_pool.dtype, copy=False), y_test=y_test)


def _input_size(input_size: tuple[int, ...] | None) -> tuple[int, int]:
    if input_size is None:
        return FOLDER_IMAGE_SIZE, FOLDER_IMAGE_SIZE
    size = tuple(input_size)
    if len(size) != 2 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in size):
        raise ValueError(f"input size must be (height, width) in pixels; got {input_size!r}")
    return int(size[0]), int(size[1])


__all__ = ["DATASETS", "FOLDER_IMAGE_SIZE", "MAX_ITEM_ID_CHARS", "SPLIT_SEED", "TEST_FRACTION", "UNLABELED",
           "ClassList", "Dataset", "encode_text", "load_dataset", "load_image", "load_task_dataset", "load_test_set",
           "read_classes", "render_png"]

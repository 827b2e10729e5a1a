"""Datasets chosen by name: `digits` (bundled, the default), `digits28`, `npz:PATH`, `cifar10:DIR`, `folder:DIR`,
`jsonl:PATH` and `csv:PATH` (text).

Every dataset has a pool split, whose items are labeled through the system, and a held-out split the
trainers evaluate on. Images and vectors are float32 arrays; texts are int64 vectors of hashed n-grams
(data/text.py). Item ids mean something where the data names its items (a file's path, an id field), and
are the pool row numbers otherwise. None of the loaders needs torchvision or unpickles anything.
"""

from __future__ import annotations

from pathlib import Path

from aal_rpc.data.cifar10 import cifar10
from aal_rpc.data.dataset import MAX_ITEM_ID_CHARS, SPLIT_SEED, TEST_FRACTION, Dataset
from aal_rpc.data.images import FOLDER_IMAGE_SIZE, digits, digits28, folder, npz, render_png
from aal_rpc.data.images import digits_arrays as _digits_arrays  # noqa: F401 - the name tests and tools import
from aal_rpc.data.text import csv_, jsonl

DATASETS = "digits, digits28, npz:PATH, cifar10:DIR, folder:DIR, jsonl:PATH or csv:PATH"


def load_dataset(name: str) -> Dataset:
    kind, _, arg = name.partition(":")
    if kind == "digits" and not arg:
        return digits()
    if kind == "digits28" and not arg:
        return digits28()
    loaders = {"npz": npz, "cifar10": cifar10, "folder": folder, "jsonl": jsonl, "csv": csv_}
    if kind in loaders and arg:
        return loaders[kind](Path(arg), name)
    raise ValueError(f"unknown dataset {name!r}; expected {DATASETS}")


__all__ = ["DATASETS", "FOLDER_IMAGE_SIZE", "MAX_ITEM_ID_CHARS", "SPLIT_SEED", "TEST_FRACTION", "Dataset",
           "load_dataset", "render_png"]

"""`cifar10:DIR`: CIFAR-10's binary version (cifar-10-binary.tar.gz) read with numpy; no pickle, no torchvision.

Each record is 1 label byte and 3,072 pixel bytes (red, green, blue planes of 32x32, row-major): CHW order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aal_rpc.data.dataset import Dataset

SUBDIR = "cifar-10-batches-bin"  # what the archive unpacks to
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
META_FILE = "batches.meta.txt"
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32


def cifar10(root: Path, name: str) -> Dataset:
    """The five training batches are the pool (ids are their row numbers), the test batch the held-out split."""
    root = _find(root)
    classes = tuple(line.strip() for line in (root / META_FILE).read_text().splitlines() if line.strip())
    xp, yp = _read(*(root / f for f in TRAIN_FILES))
    xt, yt = _read(root / TEST_FILE)
    if max(yp.max(initial=0), yt.max(initial=0)) >= len(classes):
        raise ValueError(f"{name}: a label exceeds the {len(classes)} classes of {root / META_FILE}")
    return Dataset(name, xp, yp, xt, yt, classes)


def _find(root: Path) -> Path:
    for d in (root, root / SUBDIR):
        if all((d / f).is_file() for f in (*TRAIN_FILES, TEST_FILE, META_FILE)):
            return d
    raise FileNotFoundError(
        f"cifar10:{root}: expected {', '.join(TRAIN_FILES)}, {TEST_FILE} and {META_FILE} in {root} or "
        f"{root / SUBDIR} (CIFAR-10's binary version, cifar-10-binary.tar.gz)")


def _read(*paths: Path) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % RECORD_BYTES:
            raise ValueError(f"{path}: {raw.size} bytes is not a whole number of {RECORD_BYTES}-byte records")
        records = raw.reshape(-1, RECORD_BYTES)
        ys.append(records[:, 0].astype(np.int64))
        xs.append(records[:, 1:].reshape(-1, *IMAGE_SHAPE))
    x = np.concatenate(xs).astype(np.float32)
    x /= 255.0  # in place: the pool alone is 600 MB in float32
    return x, np.concatenate(ys)

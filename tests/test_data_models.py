"""Datasets by name, item ids, model factories, PNG payloads, and the torchvision extra failing clearly."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from aal_rpc import _vision
from aal_rpc.coordinator.validation import MAX_ID_CHARS
from aal_rpc.data import MAX_ITEM_ID_CHARS, Dataset, _digits_arrays, load_dataset, render_png
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


def test_digits_ids_are_pool_rows():
    ds = load_dataset("digits")
    assert ds.item_ids[:3] == ("0", "1", "2") and len(ds.item_ids) == len(ds.x_pool)
    assert ds.index_of("17") == 17 and ds.texts is None
    with pytest.raises(KeyError):
        ds.index_of(str(len(ds.x_pool)))


def test_npz_ids_name_the_items_and_shards_follow_them(tmp_path):
    path = tmp_path / "d.npz"
    ids = np.array([f"img-{i:03d}" for i in range(40)])
    np.savez(path, x=np.arange(40, dtype=np.float32).reshape(40, 1) * np.ones((1, 3), np.float32), y=np.arange(40) % 2,
             id=ids)
    ds = load_dataset(f"npz:{path}")
    assert len(ds.item_ids) == 30 and set(ds.item_ids) < set(ids.tolist())
    for row, item_id in enumerate(ds.item_ids):  # each id still names its own row after the split
        assert ds.index_of(item_id) == row and ds.x_pool[row, 0] == int(item_id[4:])
    shards = [ds.shard_indices(j, 4) for j in range(4)]
    assert sorted(np.concatenate(shards).tolist()) == list(range(30))
    for j, rows in enumerate(shards):
        assert all(shard_of(ds.item_ids[r], 4) == j for r in rows)


@pytest.mark.parametrize("ids, match", [(["a", "b", "a"], "unique"), (["a", "", "c"], "non-empty"),
                                        (["a", "b\x00", "c"], "NUL"), (["a", "b" * 257, "c"], "longer than 256")])
def test_bad_ids_are_refused(ids, match):
    x = np.zeros((3, 2), np.float32)
    with pytest.raises(ValueError, match=match):
        Dataset("d", x, np.zeros(3, np.int64), x, np.zeros(3, np.int64), ("0",), item_ids=tuple(ids))


def test_npz_ids_may_be_bytes_or_integers(tmp_path):
    path = tmp_path / "d.npz"
    x, y = np.zeros((3, 2), np.float32), np.array([0, 1, 0])  # two classes: a task needs at least two
    np.savez(path, x=x, y=y, x_test=x, y_test=y, id=np.array([b"a", b"b", b"c"]))
    assert load_dataset(f"npz:{path}").item_ids == ("a", "b", "c")
    np.savez(path, x=x, y=y, x_test=x, y_test=y, id=np.array([10, 20, 30]))
    assert load_dataset(f"npz:{path}").index_of("20") == 1


def test_npz_with_duplicate_ids_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 2), np.float32), y=np.zeros(4), id=np.array(["a", "b", "a", "c"]),
             x_test=np.zeros((1, 2), np.float32), y_test=np.zeros(1))
    with pytest.raises(ValueError, match="unique.*'a'"):
        load_dataset(f"npz:{path}")


def test_the_id_limit_is_the_coordinators():
    assert MAX_ITEM_ID_CHARS == MAX_ID_CHARS


def _write_image(path, color, size=(10, 6)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_folder_reads_images_without_torchvision_and_sources_are_relative_paths(tmp_path):
    for i in range(4):
        _write_image(tmp_path / "cat" / f"c{i}.png", (255, 0, 0))
        _write_image(tmp_path / "dog" / "sub" / f"d{i}.jpg", (0, 0, 255))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.class_names == ("cat", "dog") and ds.input_shape == (3, 32, 32)
    assert len(ds.x_pool) == 6 and len(ds.x_test) == 2
    for row, source in enumerate(ds.sources):
        cls = source.split("/")[0]
        assert ds.y_pool[row] == ds.class_names.index(cls)
        red = ds.x_pool[row, 0].mean()
        assert (red > 0.99) if cls == "cat" else (red < 0.01)
    assert set(ds.sources) <= {f"cat/c{i}.png" for i in range(4)} | {f"dog/sub/d{i}.jpg" for i in range(4)}


def test_folder_with_train_and_test(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for cls, color in (("a", (0, 0, 0)), ("b", (255, 255, 255))):
            for i in range(n):
                _write_image(tmp_path / split / cls / f"{i}.png", color)
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.sources == ("train/a/0.png", "train/a/1.png", "train/a/2.png", "train/b/0.png", "train/b/1.png",
                           "train/b/2.png")
    assert ds.y_pool.tolist() == [0, 0, 0, 1, 1, 1] and ds.y_test.tolist() == [0, 0, 1, 1]


def test_digits28_is_the_digits_redrawn_at_28x28_the_same_in_every_load():
    a, b, small = load_dataset("digits28"), load_dataset("digits28"), load_dataset("digits")
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert np.array_equal(a.x_pool, b.x_pool) and np.array_equal(a.y_pool, small.y_pool)
    assert 0.0 <= a.x_pool.min() and a.x_pool.max() <= 1.0
    # each digit gets its own pose: the centres of mass of the ink scatter
    ink = np.clip(a.x_pool[:200, 0] - 0.3, 0, None)
    rows = (ink.sum(2) * np.arange(28)).sum(1) / ink.sum((1, 2))
    assert rows.std() > 1.0


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

    monkeypatch.setattr("aal_rpc.models.tv.import_torchvision", broken)
    with pytest.raises(RuntimeError, match="needs torchvision"):
        build_model("tv:resnet18", (3, 32, 32), 10)
    with pytest.raises(RuntimeError, match="needs torchvision"):
        build_model("tv:vgg16", (3, 32, 32), 10)
    assert {"mlp", "cnn", "resnet18", "vgg16", "text", "tv:resnet18", "tv:vgg16"} <= set(ARCHITECTURES)


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
    """Count optimizer steps by counting forward passes in training mode with gradients (the pass that recomputes
    batchnorm's statistics at the end takes none)."""
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(m.training and torch.is_grad_enabled()))
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

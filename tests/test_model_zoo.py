"""The model zoo in plain torch: every model builds, takes an optimizer step and scores at small sizes on a CPU."""

import numpy as np
import pytest
import torch
from torch import nn

from aal_rpc.data.text import NUM_BUCKETS, TEXT_LENGTH
from aal_rpc.models import build_model, expected_shapes
from aal_rpc.training import batch_bounds, predict_proba, train

ZOO = [("mlp", (1, 8, 8), 128), ("cnn", (1, 8, 8), 128), ("resnet18", (1, 8, 8), 512), ("vgg16", (1, 8, 8), 512),
       ("cnn", (3, 12, 12), 128), ("text", (TEXT_LENGTH,), 128)]


def batch(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    if len(shape) == 1:  # hashed n-grams: bucket ids, padded with 0
        x = rng.integers(1, NUM_BUCKETS, (n, *shape))
        x[:, 20:] = 0
        return x.astype(np.int64)
    return rng.random((n, *shape)).astype(np.float32)


@pytest.mark.parametrize("arch, shape, dim", ZOO)
def test_each_model_trains_a_step_and_scores(arch, shape, dim):
    torch.manual_seed(0)
    model = build_model(arch, shape, 3)
    expected = expected_shapes(arch, shape, 3)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected
    x, y = batch(shape, 6), np.array([0, 1, 2, 0, 1, 2])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, x, y, epochs=1, batch_size=6)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "head.weight" in changed and any(k.startswith("features.") for k in changed)
    probs, emb = predict_proba(model, x, with_embeddings=True)
    assert probs.shape == (6, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert emb.shape == (6, dim) == (6, model.embedding_dim)
    assert np.allclose(predict_proba(model, x)[0], probs, atol=1e-6)


@pytest.mark.parametrize("arch", ["cnn", "resnet18", "vgg16"])
def test_image_models_take_odd_channel_counts_and_sizes(arch):
    model = build_model(arch, (2, 5, 7), 4).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 2, 5, 7)).shape == (3, 4)


def _state_bytes(arch, shape, classes=10):
    with torch.device("meta"):
        model = build_model(arch, shape, classes)
    return sum(v.numel() * v.element_size() for v in model.state_dict().values()), model


def test_cifar_networks_have_3x3_stems_512d_embeddings_and_their_weight_sizes():
    size, resnet = _state_bytes("resnet18", (3, 32, 32))
    assert 44e6 < size < 46e6  # 11.2M parameters
    stem = resnet.features[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in resnet.modules())
    size, vgg = _state_bytes("vgg16", (3, 32, 32))
    assert 59e6 < size < 61e6  # 15M parameters: no 4096-wide layers
    assert max(m.out_features for m in vgg.modules() if isinstance(m, nn.Linear)) == 512
    assert sum(isinstance(m, nn.Conv2d) for m in vgg.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in vgg.modules()) == 5
    _, small = _state_bytes("vgg16", (1, 8, 8))
    assert sum(isinstance(m, nn.MaxPool2d) for m in small.modules()) == 3  # 8 -> 4 -> 2 -> 1, then no more


def test_cnn_keeps_spatial_detail():
    """The flattened map before the 128-wide layer: 7x7 for 28x28 inputs, 2x2 for 8x8 (not pooled to 4x4)."""
    for shape, cells in (((1, 28, 28), 49), ((1, 8, 8), 4)):
        fc = next(m for m in build_model("cnn", shape, 10).modules() if isinstance(m, nn.Linear))
        assert fc.in_features == 64 * cells


def test_batches_of_one_do_not_break_batchnorm():
    """vgg16 on 8x8 ends at a 1x1 map, where batchnorm refuses a training batch of one item."""
    assert batch_bounds(65, 32) == [(0, 32), (32, 65)] and batch_bounds(64, 32) == [(0, 32), (32, 64)]
    assert batch_bounds(1, 32) == [(0, 1)] and batch_bounds(0, 32) == []
    torch.manual_seed(0)
    model = build_model("vgg16", (1, 8, 8), 3)
    x = batch((1, 8, 8), 3)
    train(model, x, np.array([0, 1, 2]), epochs=1, batch_size=2)  # 2 + 1 -> one batch of 3
    train(model, x[:1], np.array([1]), epochs=1, batch_size=32)  # the first round on one label
    assert predict_proba(model, x)[0].shape == (3, 3)


def test_cnn_vs_textbook_benchmark_runs_and_reports_its_row(tmp_path):
    """`python -m benchmarks --only cnn_vs_textbook` at smoke size: both nets on both datasets, one table row each."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--only", "cnn_vs_textbook", "--out", str(tmp_path)],
                   cwd=root, check=True, timeout=300, capture_output=True)
    rows = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["cnn_vs_textbook"]["rows"]
    assert [(r["dataset"], r["input_shape"]) for r in rows] == [("digits", [1, 8, 8]), ("digits28", [1, 28, 28])]
    for r in rows:
        assert 0 <= r["cnn_mean"] <= 1 and 0 <= r["textbook_mean"] <= 1 and len(r["cnn"]) == len(r["textbook"]) == 1
        assert r["ratio"] == pytest.approx(r["cnn_mean"] / r["textbook_mean"])
    md = (tmp_path / "results.md").read_text()
    assert md.count("| 9 | `cnn` accuracy") == 2 and "digits28 (28×28)" in md

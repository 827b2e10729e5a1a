"""The training recipe (aal_rpc/training.py): augmentation, the learning-rate schedule, the mixed-precision path
selection, and that train() with the recipe still learns."""

import contextlib
import dataclasses
import inspect

import numpy as np
import pytest
import torch
from torch import nn

from aal_rpc import training
from aal_rpc.data import load_dataset
from aal_rpc.models import build_model
from aal_rpc.training import (RECIPE, Recipe, augment_batch, autocast, autocast_dtype, evaluate, lr_factor, pins_memory,
                              predict_proba, train)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def blocks(n, size=28, channels=1):
    """n images, each black but for a 6x6 block at the centre holding its own value (i+1)/(n+1)."""
    x = torch.zeros(n, channels, size, size)
    c = size // 2
    for i in range(n):
        x[i, :, c - 3:c + 3, c - 3:c + 3] = (i + 1) / (n + 1)
    return x


# -- augmentation ---------------------------------------------------------------------------------------------

def test_digit_images_are_shifted_and_rotated_not_resized_or_recoloured():
    x = blocks(16)
    out = augment_batch(x, gen())
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    moved = [not torch.equal(out[i], x[i]) for i in range(len(x))]
    assert sum(moved) >= 12  # a few may draw no shift and a tiny angle, but not most
    # the block stays whole (inside a 28x28 frame, up to 2 px off and 10 degrees round): same ink, same value
    assert torch.allclose(out.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.05)
    assert torch.allclose(out.amax(dim=(1, 2, 3)), x.amax(dim=(1, 2, 3)), atol=1e-5)
    ys = torch.arange(28.0)  # the ink's centre (13.5, 13.5) moves by the shift alone: rotations turn about it
    for axis in (1, 2):
        centre = (out[:, 0].sum(axis) * ys).sum(1) / out[:, 0].sum((1, 2))
        assert (centre - 13.5).abs().max() <= 2.01


def test_digit_shift_scales_with_the_image():
    x8 = blocks(64, size=8)  # 8x8 digits: shifted by 1 px at most
    out = augment_batch(x8, gen())
    assert out.shape == x8.shape and not torch.equal(out, x8)
    # the ink's centre moves by at most the 1 px shift (plus a little for the rotation and the edge)
    ys = torch.arange(8.0)
    centroid = (out[:, 0].sum(2) * ys).sum(1) / out[:, 0].sum((1, 2))
    assert (centroid - 3.5).abs().max() <= 1.5


def test_rgb_images_are_cropped_from_a_padded_copy_and_sometimes_flipped():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.random((12, 3, 32, 32), dtype=np.float32))
    out = augment_batch(x, gen(1))
    assert out.shape == x.shape and out.dtype == x.dtype and not torch.equal(out, x)
    pad = 4  # 1/8 of 32
    padded = nn.functional.pad(x, (pad, pad, pad, pad))
    flips = 0
    for i in range(len(x)):
        matches = [(dy, dx, f) for f in (False, True) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal((padded[i].flip(2) if f else padded[i])[:, dy:dy + 32, dx:dx + 32], out[i])]
        assert matches, f"image {i} is not a crop of its padded (maybe flipped) self"
        flips += matches[0][2]
    assert 0 < flips < len(x)


def test_other_channel_counts_are_treated_as_digit_like():
    x = blocks(4, size=16, channels=2)
    out = augment_batch(x, gen())
    assert out.shape == x.shape and not torch.equal(out, x)
    assert torch.equal(out[:, 0], out[:, 1])  # both channels move together


@pytest.mark.parametrize("x", [torch.randint(0, 65_536, (8, 256)), torch.rand(8, 64), torch.rand(8, 1, 8),
                               torch.randint(0, 9, (8, 1, 8, 8))], ids=["text", "flat", "3d", "int-image"])
def test_augmentation_leaves_text_flat_and_integer_inputs_alone(x):
    assert augment_batch(x, gen()) is x


def test_the_same_seed_gives_the_same_augmentation():
    x = blocks(8)
    assert torch.equal(augment_batch(x, gen(3)), augment_batch(x, gen(3)))
    assert not torch.equal(augment_batch(x, gen(3)), augment_batch(x, gen(4)))


class Spy(nn.Module):
    """A tiny model that records every input batch it is trained on."""

    def __init__(self, d_in, classes):
        super().__init__()
        self.fc = nn.Linear(d_in, classes)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.fc(x.flatten(1))


@pytest.fixture
def loss_targets(monkeypatch):
    """The targets of every cross_entropy train() computes, in order."""
    targets = []
    real = nn.functional.cross_entropy

    def spy_loss(logits, target, *a, **kw):
        targets.append(target.clone())
        return real(logits, target, *a, **kw)

    monkeypatch.setattr(nn.functional, "cross_entropy", spy_loss)
    return targets


def test_train_augments_images_but_keeps_each_with_its_own_label(loss_targets):
    targets = loss_targets
    n = 10
    x = blocks(n, size=12)
    y = torch.arange(n) % 3
    model = Spy(144, 3)
    train(model, x.numpy(), y.numpy(), epochs=3, batch_size=4)
    assert len(model.seen) == len(targets) == 9
    originals = {round(float(v), 4) for v in x.amax(dim=(1, 2, 3))}
    changed = 0
    for batch, target in zip(model.seen, targets):
        for img, label in zip(batch, target):
            value = round(float(img.max()), 4)  # each image's block value survives the shift and rotation
            assert value in originals
            i = round(value * (n + 1)) - 1
            assert int(label) == int(y[i])
            changed += not torch.equal(img, x[i])
    assert changed > 0


def test_train_does_not_augment_flat_or_text_inputs():
    x = np.random.default_rng(0).random((10, 6), dtype=np.float32)
    model = Spy(6, 2)
    train(model, x, np.arange(10) % 2, epochs=2, batch_size=5)
    rows = {tuple(r) for r in x.tolist()}
    assert all(tuple(r) in rows for b in model.seen for r in b.tolist())
    text = np.random.default_rng(0).integers(1, 1000, (6, 12)).astype(np.int64)
    model = build_model("text", (12,), 2)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()) if m.training else None)
    train(model, text, np.arange(6) % 2, epochs=1, batch_size=3)
    assert all(b.dtype == torch.int64 for b in seen)
    assert {tuple(r) for b in seen for r in b.tolist()} == {tuple(r) for r in text.tolist()}


def test_augment_false_trains_on_the_images_as_given():
    x = blocks(6, size=8)
    model = Spy(64, 2)
    train(model, x.numpy(), np.arange(6) % 2, epochs=2, batch_size=3, augment=False)
    originals = {tuple(r.flatten().tolist()) for r in x}
    assert all(tuple(img.flatten().tolist()) in originals for b in model.seen for img in b)


# -- learning-rate schedule ------------------------------------------------------------------------------------

def test_constant_schedule_is_flat():
    assert [lr_factor("constant", s, 50, 0.1) for s in range(50)] == [1.0] * 50


def test_cosine_warms_up_linearly_then_decays_to_near_zero():
    f = [lr_factor("cosine", s, 100, 0.1) for s in range(100)]
    assert f[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert max(f) == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:]))  # never rises after the warmup
    assert 0 < f[-1] < 0.01 and all(v > 0 for v in f)


def test_onecycle_rises_from_a_25th_and_falls_to_almost_nothing():
    f = [lr_factor("onecycle", s, 100, 0.3) for s in range(100)]
    assert f[0] == pytest.approx(1 / 25)
    assert max(f) == pytest.approx(1.0) and int(np.argmax(f)) == 30
    assert all(a <= b for a, b in zip(f[:30], f[1:31])) and all(a >= b for a, b in zip(f[30:], f[31:]))
    assert 0 < f[-1] < 1e-4


def test_one_step_trains_at_the_peak():
    assert lr_factor("cosine", 0, 1, 0.1) == lr_factor("onecycle", 0, 1, 0.3) == 1.0


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="schedule"):
        Recipe(schedule="step")
    with pytest.raises(ValueError, match="schedule"):
        train(Spy(4, 2), np.zeros((4, 4), np.float32), np.zeros(4, np.int64), epochs=1, schedule="step")


def test_train_follows_the_schedule_over_all_its_steps(monkeypatch):
    lrs = []
    real_step = torch.optim.Adam.step

    def step(self, *a, **kw):
        lrs.append(self.param_groups[0]["lr"])
        return real_step(self, *a, **kw)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    x = np.random.default_rng(0).random((20, 6), dtype=np.float32)
    train(Spy(6, 2), x, np.arange(20) % 2, epochs=1, batch_size=5, lr=0.01, min_steps=30, schedule="cosine",
          warmup=0.1)
    assert len(lrs) == 32  # min_steps 30 at 4 steps an epoch: 8 whole epochs
    assert lrs == pytest.approx([0.01 * lr_factor("cosine", s, 32, 0.1) for s in range(32)])
    lrs.clear()
    train(Spy(6, 2), x, np.arange(20) % 2, epochs=2, batch_size=5, lr=0.01, schedule="constant")
    assert lrs == [0.01] * 8


def test_recipe_kwargs_are_train_keywords():
    r = dataclasses.replace(RECIPE, epochs=1, min_steps=2)
    x = np.random.default_rng(0).random((8, 6), dtype=np.float32)
    train(Spy(6, 2), x, np.arange(8) % 2, **r.kwargs(), seed=1)
    assert set(r.kwargs()) <= set(inspect.signature(train).parameters)


# -- learning ---------------------------------------------------------------------------------------------------

def test_train_with_the_recipe_learns_digits_quickly():
    ds = load_dataset("digits")
    rows = np.random.default_rng(0).choice(len(ds.x_pool), 200, replace=False)
    torch.manual_seed(0)
    model = build_model("cnn", ds.input_shape, ds.num_classes)
    train(model, ds.x_pool[rows], ds.y_pool[rows], **dataclasses.replace(RECIPE, epochs=10, min_steps=150).kwargs())
    assert evaluate(model, ds.x_test, ds.y_test)["accuracy"] >= 0.9


def test_training_repeats_with_the_same_seed():
    ds = load_dataset("digits")
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model("cnn", ds.input_shape, ds.num_classes)
        train(model, ds.x_pool[:64], ds.y_pool[:64], epochs=2, seed=5)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_a_round_ends_with_batchnorm_statistics_of_its_final_weights():
    """The running statistics are those of the final network on the labeled items, not a moving average of the
    last steps' batches at weights that kept moving (after a short round at the peak learning rate, those made a
    network that fit every label predict one class in eval mode)."""
    ds = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model("cnn", ds.input_shape, ds.num_classes)
    x, y = ds.x_pool[:40], ds.y_pool[:40]
    train(model, x, y, epochs=1, min_steps=10, lr=3e-2, batch_size=20, augment=False, seed=3)  # 2 equal batches
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    inputs = []
    hook = bn.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
    with torch.no_grad():
        model(torch.as_tensor(x))
    hook.remove()
    torch.testing.assert_close(bn.running_mean, inputs[0].mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5)
    assert not model.training


def test_a_model_without_batchnorm_is_trained_as_before(monkeypatch):
    ds = load_dataset("digits")
    monkeypatch.setattr(torch.optim.swa_utils, "update_bn", lambda *a, **k: pytest.fail("no batchnorm to update"))
    train(build_model("mlp", ds.input_shape, ds.num_classes), ds.x_pool[:20], ds.y_pool[:20], epochs=1)


# -- the GPU path: chosen only for CUDA -------------------------------------------------------------------------

def test_cpu_takes_no_autocast_and_no_pinned_memory():
    assert autocast_dtype("cpu") is None and autocast_dtype(torch.device("cpu")) is None
    assert isinstance(autocast("cpu", None), contextlib.nullcontext)
    assert not pins_memory("cpu")


def test_cuda_takes_bfloat16_where_supported_else_float16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: True)
    assert autocast_dtype("cuda") == autocast_dtype("cuda:1") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **kw: False)
    assert autocast_dtype("cuda:0") == torch.float16
    assert pins_memory("cuda") and pins_memory(torch.device("cuda", 0))


def test_cpu_training_and_inference_run_in_float32_without_autocast():
    states = []

    class Probe(Spy):
        def forward(self, x):
            states.append((torch.is_autocast_enabled("cpu"), torch.is_autocast_enabled("cuda"), x.dtype,
                           x.is_pinned()))
            out = super().forward(x)
            states.append(out.dtype)
            return out

    x = np.random.default_rng(0).random((8, 6), dtype=np.float32)
    model = Probe(6, 2)
    train(model, x, np.arange(8) % 2, epochs=1, batch_size=4)
    probs, _ = predict_proba(model, x)
    assert probs.dtype == np.float32
    assert all(s == (False, False, torch.float32, False) for s in states[0::2])
    assert all(s == torch.float32 for s in states[1::2])
    with torch.no_grad():
        expected = torch.softmax(model(torch.as_tensor(x)), 1).numpy()
    assert np.allclose(probs, expected, atol=1e-6)


def test_the_float16_path_scales_the_loss(monkeypatch):
    """Where a GPU has no bfloat16, train() uses a GradScaler. Without a GPU here, check the choice it makes:
    GradScaler is built only when autocast_dtype says float16."""
    built = []

    class FakeScaler:
        def __init__(self, device):
            built.append(device)

        def scale(self, loss):
            return loss

        def step(self, opt):
            opt.step()

        def update(self):
            pass

    monkeypatch.setattr(torch.amp, "GradScaler", FakeScaler)
    x = np.random.default_rng(0).random((8, 6), dtype=np.float32)
    train(Spy(6, 2), x, np.arange(8) % 2, epochs=1, batch_size=4)
    assert built == []  # CPU: full precision, no scaler
    monkeypatch.setattr(training, "autocast_dtype", lambda device: torch.float16)
    monkeypatch.setattr(training, "autocast", lambda device, dtype: contextlib.nullcontext())
    model = Spy(6, 2)
    before = model.fc.weight.clone()
    train(model, x, np.arange(8) % 2, epochs=1, batch_size=4)
    assert built == ["cuda"] and not torch.equal(model.fc.weight, before)


# -- semi-supervised rounds (FixMatch) ---------------------------------------------------------------------------

def two_class_spy(weight=8.0):
    """A Spy over 2 features that is sure of class 0 for [1, 0] and of class 1 for [0, 1] (probability 1 - 1e-7;
    0.95 with weight 1.5), and unsure (0.5) for [0.5, 0.5]."""
    model = Spy(2, 2)
    with torch.no_grad():
        model.fc.weight.copy_(torch.tensor([[weight, -weight], [-weight, weight]]))
        model.fc.bias.zero_()
    return model


def confident_and_unsure_pool():
    return np.asarray([[1, 0]] * 10 + [[0, 1]] * 10 + [[0.5, 0.5]] * 20, dtype=np.float32)


def test_a_semi_supervised_step_trains_only_on_the_items_the_model_is_sure_of(loss_targets):
    model = two_class_spy()
    x = np.asarray([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    train(model, x, np.asarray([0, 1, 0, 1]), epochs=1, batch_size=4, lr=1e-9, unlabeled=confident_and_unsure_pool(),
          semi_supervised=True, unlabeled_ratio=4, threshold=0.9)
    (batch,), (labeled, pseudo) = model.seen, loss_targets
    assert len(labeled) == 4 and 0 < len(pseudo) <= 16 and len(batch) == 4 + len(pseudo)
    # flat vectors have no strong view: each extra row is a pool row as it is, labeled with the class it is sure of
    for row, label in zip(batch[4:].tolist(), pseudo.tolist()):
        assert row in ([1, 0], [0, 1]) and label == row.index(1)


def test_a_threshold_nothing_reaches_trains_as_if_there_were_no_unlabeled_items():
    ds = load_dataset("digits")
    states = []
    for kwargs in ({}, {"unlabeled": ds.x_pool[40:200], "semi_supervised": True, "threshold": 1.01},
                   {"unlabeled": ds.x_pool[40:200], "semi_supervised": False, "threshold": 0.0},
                   {"unlabeled": ds.x_pool[40:200], "semi_supervised": True, "threshold": 0.0}):
        torch.manual_seed(0)
        model = build_model("cnn", ds.input_shape, ds.num_classes)
        train(model, ds.x_pool[:40], ds.y_pool[:40], epochs=1, min_steps=4, batch_size=16, seed=3, **kwargs)
        states.append(model.state_dict())
    supervised, unreached, switched_off, every_item = states
    assert all(torch.equal(supervised[k], unreached[k]) for k in supervised)
    assert all(torch.equal(supervised[k], switched_off[k]) for k in supervised)
    assert not all(torch.equal(supervised[k], every_item[k]) for k in supervised)  # threshold 0: the term applies


def test_the_strong_view_of_a_text_drops_ngrams_to_the_padding_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    text, pool = (rng.integers(1, 1000, (n, 12)).astype(np.int64) for n in (6, 30))
    model = build_model("text", (12,), 2)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()) if m.training else None)
    train(model, text, np.arange(6) % 2, epochs=1, batch_size=3, unlabeled=pool, semi_supervised=True, threshold=0.0)
    assert seen and all(b.dtype == torch.int64 and len(b) == 3 + 2 * 3 for b in seen)  # every drawn item kept
    labeled, dropped = {tuple(r) for r in text.tolist()}, 0
    for b in seen:
        assert {tuple(r) for r in b[:3].tolist()} <= labeled
        for row in b[3:]:
            kept = row != 0
            assert any(np.array_equal(row[kept].numpy(), p[kept.numpy()]) for p in pool)  # a pool row, some ids gone
            dropped += int((~kept).sum())
    assert 0 < dropped < sum(len(b) - 3 for b in seen) * 12


def test_the_strong_view_of_an_image_is_shifted_rotated_and_cut_out():
    x = blocks(16)
    strong = training.strong_augment_batch(x, gen(0))
    assert strong.shape == x.shape and strong.dtype == x.dtype
    assert torch.equal(strong, training.strong_augment_batch(x, gen(0)))
    side = round(training.CUTOUT * 28)
    # each image has a blank square of at least the cutout's side, where the block may have been
    assert all(any((img[0, r:r + side, c:c + side] == 0).all() for r in range(29 - side) for c in range(29 - side))
               for img in strong)
    assert not torch.equal(strong, x)
    flat = torch.rand(4, 6)
    assert training.strong_augment_batch(flat, gen(0)) is flat


def test_pseudo_labels_keep_one_class_from_taking_over():
    """Distribution alignment: a model that predicts class 0 for most of the pool, while the labels hold as many of
    each class, labels fewer of them class 0 once its running mean of predictions says so."""
    model = two_class_spy(1.5)
    pool = torch.as_tensor(np.asarray([[1, 0]] * 36 + [[0, 1]] * 4, dtype=np.float32))
    labels = torch.tensor([0, 1, 0, 1])
    pseudo = training.PseudoLabeler(pool, labels, count=40, threshold=0.9, augment=False, seed=0, device="cpu")
    counts = []
    for _ in range(20):
        _, y = pseudo.draw(model, None)
        counts.append((int((y == 0).sum()), int((y == 1).sum())))
    # the model is 0.95 sure of every row: 36 of 40 drawn would be class 0 without the alignment
    assert np.mean([zero for zero, _ in counts]) < 18 and all(one > 0 for _, one in counts)


def test_semi_supervised_steps_take_the_mixed_precision_path(monkeypatch):
    """On a GPU both passes of a step run under autocast (the pseudo-labels' and the trained one's) and the
    float16 path's GradScaler scales the combined loss. Without a GPU here, check the calls train() makes."""
    casts, scaled = [], []

    class FakeScaler:
        def __init__(self, device):
            pass

        def scale(self, loss):
            scaled.append(float(loss.detach()))
            return loss

        def step(self, opt):
            opt.step()

        def update(self):
            pass

    def recording_autocast(device, dtype):
        casts.append(dtype)
        return contextlib.nullcontext()

    monkeypatch.setattr(torch.amp, "GradScaler", FakeScaler)
    monkeypatch.setattr(training, "autocast_dtype", lambda device: torch.float16)
    monkeypatch.setattr(training, "autocast", recording_autocast)
    model = two_class_spy()
    x = np.asarray([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)
    train(model, x, np.asarray([0, 1, 0, 1]), epochs=2, batch_size=4, unlabeled=confident_and_unsure_pool(),
          semi_supervised=True, threshold=0.9)
    assert casts == [torch.float16] * 4 and len(scaled) == 2  # two steps, two passes each
    assert all(len(b) > 4 for b in model.seen)  # both steps trained on pseudo-labeled items too


def test_semi_supervised_settings_are_checked():
    with pytest.raises(ValueError, match="unlabeled_ratio"):
        Recipe(unlabeled_ratio=0)
    with pytest.raises(ValueError, match="unlabeled_weight"):
        train(Spy(6, 2), np.zeros((4, 6), np.float32), np.arange(4) % 2, epochs=1, unlabeled_weight=-1.0)

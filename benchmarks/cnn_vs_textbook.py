"""Target 9: our `cnn` against the textbook CNN, each trained on the same random labels with the same recipe.

The textbook net (conv32 3x3, ReLU, max pool 2, conv64 3x3, ReLU, flatten, fc128, ReLU, fc) is what anyone
would try first; `cnn` must be at least as accurate on every input size the textbook net takes: the 8x8
digits and their 28x28 redrawing `digits28` (random pose and noise). Recipe: Adam 1e-3, 20 epochs, batch 64,
on the same labeled items per seed; accuracy on the held-out split.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from aal_rpc.data import load_dataset
from aal_rpc.models import Classifier, build_model
from aal_rpc.training import evaluate, train

DATASETS = ("digits", "digits28")
LABELS = 400
SEEDS = (0, 1, 2)
EPOCHS = 20
BATCH_SIZE = 64
LR = 1e-3


def textbook_cnn(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
    """conv32 3x3 -> ReLU -> maxpool 2 -> conv64 3x3 -> ReLU -> flatten -> fc128 -> ReLU -> fc (no padding)."""
    c, h, w = input_shape
    h, w = (h - 2) // 2 - 2, (w - 2) // 2 - 2
    if min(h, w) < 1:
        raise ValueError(f"the textbook CNN needs inputs of at least 8x8; got {input_shape}")
    features = nn.Sequential(nn.Conv2d(c, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                             nn.Flatten(), nn.Linear(64 * h * w, 128), nn.ReLU())
    return Classifier(features, 128, num_classes)


def accuracy(make, ds, rows: np.ndarray, seed: int, epochs: int) -> float:
    torch.manual_seed(seed)
    model = make(ds.input_shape, ds.num_classes)
    # the textbook recipe for both nets (constant Adam 1e-3, no augmentation): the networks alone are compared
    train(model, ds.x_pool[rows], ds.y_pool[rows], epochs=epochs, batch_size=BATCH_SIZE, lr=LR, seed=seed,
          schedule="constant", augment=False)
    return evaluate(model, ds.x_test, ds.y_test)["accuracy"]


def _std(xs: list[float]) -> float:
    """Sample standard deviation across seeds (0 for one seed)."""
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def run(*, smoke: bool = False) -> dict:
    labels, seeds, epochs = (100, SEEDS[:1], 2) if smoke else (LABELS, SEEDS, EPOCHS)
    rows_out = []
    for name in DATASETS:
        ds = load_dataset(name)
        ours, textbook = [], []
        t0 = time.perf_counter()
        for seed in seeds:
            rows = np.random.default_rng(seed).choice(len(ds.x_pool), labels, replace=False)  # same labels for both
            ours.append(accuracy(lambda s, k: build_model("cnn", s, k), ds, rows, seed, epochs))
            textbook.append(accuracy(textbook_cnn, ds, rows, seed, epochs))
        ratio = float(np.mean(ours) / np.mean(textbook))
        rows_out.append({
            "dataset": name, "input_shape": list(ds.input_shape), "labels": labels, "seeds": len(seeds),
            "test_items": len(ds.y_test), "epochs": epochs, "batch_size": BATCH_SIZE, "lr": LR,
            "cnn": ours, "textbook": textbook,
            "cnn_mean": float(np.mean(ours)), "cnn_std": _std(ours),
            "textbook_mean": float(np.mean(textbook)), "textbook_std": _std(textbook),
            "ratio": ratio, "pass": ratio >= 1.0, "seconds": time.perf_counter() - t0,
        })
    return {"rows": rows_out, "target": "cnn mean accuracy >= textbook CNN's on every dataset",
            "pass": all(r["pass"] for r in rows_out)}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))

"""Training, evaluation and inference in plain torch, shared by the trainers and the selectors.

Inputs are cast to the model's `input_dtype` (float32, or int64 for the `text` model's n-gram buckets), so
a batch of bucket ids that travelled as float32 still indexes the embedding table exactly (ids < 2**24).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aal_rpc.models import input_dtype

INFERENCE_BATCH = 1024


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int = 32,
          lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0, device: str = "cpu",
          min_steps: int = 0, should_stop: Callable[[], bool] = lambda: False) -> float:
    """Train in place with Adam; return the mean loss of the last epoch.

    `min_steps` repeats epochs until at least that many optimizer steps were taken: a fixed compute budget per
    round, so a round costs about the same on 20 labels as on 2,000 (as training on a large pool does).
    `should_stop` is asked before each step; when it says yes, training ends where it is.
    """
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(x, dtype=input_dtype(model))
    yt = torch.as_tensor(y, dtype=torch.int64)
    opts = optimizers(model, lr=lr, weight_decay=weight_decay)
    last = 0.0
    bounds = batch_bounds(len(xt), batch_size)
    steps_per_epoch = max(1, len(bounds))
    for _ in range(max(epochs, -(-min_steps // steps_per_epoch))):
        order = torch.randperm(len(xt), generator=gen)
        total, n = 0.0, 0
        for start, end in bounds:
            if should_stop():
                model.eval()
                return last
            idx = order[start:end]
            if len(idx) == 1:  # one label in all (or batch_size 1): batchnorm cannot normalize one value
                idx = idx.repeat(2)
            xb, yb = xt[idx].to(device), yt[idx].to(device)
            for opt in opts:
                opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            for opt in opts:
                opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        last = total / max(n, 1)
    model.eval()
    return last


def optimizers(model: nn.Module, *, lr: float, weight_decay: float) -> list[torch.optim.Optimizer]:
    """Adam, and SparseAdam for embedding tables with sparse gradients (the text model's n-gram buckets): a
    step then costs the rows a batch touches, not the whole table (no weight decay there; SparseAdam has none)."""
    sparse = {id(p) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse
              for p in m.parameters()}
    dense = [p for p in model.parameters() if id(p) not in sparse]
    opts: list[torch.optim.Optimizer] = [torch.optim.Adam(dense, lr=lr, weight_decay=weight_decay)]
    if sparse:
        opts.append(torch.optim.SparseAdam([p for p in model.parameters() if id(p) in sparse], lr=lr))
    return opts


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, end) of each batch of an epoch over n items. A last batch of one item joins the one before:
    batchnorm in training mode refuses a batch of one where a map is 1x1 (the CIFAR networks on 8x8 inputs)."""
    starts = list(range(0, n, max(1, batch_size)))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, [*starts[1:], n]))


@torch.inference_mode()
def predict_proba(model: nn.Module, x: np.ndarray, *, device: str = "cpu",
                  with_embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities (N, C) and, when asked, penultimate-layer embeddings (N, D)."""
    model.to(device).eval()
    dtype = input_dtype(model)
    probs, embs = [], []
    for start in range(0, len(x), INFERENCE_BATCH):
        xb = torch.as_tensor(x[start:start + INFERENCE_BATCH], dtype=dtype, device=device)
        if with_embeddings:
            e = model.embed(xb)
            logits = model.head(e)
            embs.append(e.float().cpu().numpy())
        else:
            logits = model(xb)
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    if not probs:
        return np.zeros((0, 0), np.float32), None
    return np.concatenate(probs), (np.concatenate(embs) if with_embeddings else None)


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, *, device: str = "cpu") -> dict[str, float]:
    probs, _ = predict_proba(model, x, device=device)
    if len(y) == 0:
        return {}
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    return {"accuracy": float((probs.argmax(1) == y).mean()), "loss": float(-np.log(p).mean())}

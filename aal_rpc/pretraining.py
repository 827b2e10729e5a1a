"""Learning from the unlabeled pool before the first label: contrastive pretraining of a model's `features`.

SimCLR (Chen et al. 2020) in its plain form: two random views of each item in a batch go through the model's
`features` and a small projection head; the NT-Xent loss pulls each item's two views together and pushes them
from the batch's other items. The head is thrown away after; the features it shaped serve as the encoder that
the cold start picks typical and diverse items in (strategies/typiclust.py) and that the first supervised round
starts from (trainer/loop.py). A view is
- for pictures: the training recipe's augmentation (training.augment_batch: shifts and rotations, or crops and
  flips) with pixel noise and a random erased patch on top;
- for hashed text (int64 n-gram ids): a random fifth of the n-grams dropped (set to padding);
- for flat vectors: Gaussian noise and a random fifth of the features zeroed.

Only torch; `should_stop` is asked before each step, as `training.train` does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aal_rpc.data.text import PADDING
from aal_rpc.models import Classifier, input_dtype
from aal_rpc.training import augment_batch, autocast, autocast_dtype, optimizers, to_device, pins_memory

PRETRAIN_STEPS = 300  # default steps: about half a minute for the cnn on 28x28 on one CPU thread
PRETRAIN_BATCH = 128  # items a step (each seen twice); contrastive losses want many negatives
PRETRAIN_LR = 1e-3
TEMPERATURE = 0.5  # NT-Xent's, as SimCLR's small-batch runs use
PROJECTION_DIM = 64
DROP_SHARE = 0.2  # text n-grams dropped from a view; vector features zeroed
NOISE_STD = 0.1  # pixel noise of a picture's view, and a vector's
ERASE_SHARE = 0.25  # side of the patch erased from a picture's view, as a share of the picture's side


def view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view of each item of a batch (see the module's docstring), on x's device."""
    if not x.is_floating_point():  # hashed text: drop n-grams
        keep = (torch.rand(x.shape, generator=generator) >= DROP_SHARE).to(x.device)
        return torch.where(keep, x, torch.full_like(x, PADDING))
    if x.dim() != 4:  # flat vectors
        noise = torch.randn(x.shape, generator=generator).to(x.device) * NOISE_STD
        keep = (torch.rand(x.shape, generator=generator) >= DROP_SHARE).to(x.device)
        return (x + noise) * keep
    out = augment_batch(x, generator)
    out = out + torch.randn(out.shape, generator=generator).to(x.device) * NOISE_STD * out.std()
    n, _, h, w = out.shape
    eh, ew = max(1, round(ERASE_SHARE * h)), max(1, round(ERASE_SHARE * w))
    top = torch.randint(0, h - eh + 1, (n,), generator=generator)
    left = torch.randint(0, w - ew + 1, (n,), generator=generator)
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    inside = (((rows >= top[:, None]) & (rows < (top + eh)[:, None]))[:, :, None]
              & ((cols >= left[:, None]) & (cols < (left + ew)[:, None]))[:, None, :])
    return out.masked_fill(inside[:, None].to(x.device), 0.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's loss for a batch whose i-th rows of z1 and z2 are two views of one item."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    n = len(z1)
    sim.fill_diagonal_(float("-inf"))  # an item's view is not its own negative
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def pretrain(model: Classifier, x: np.ndarray, *, steps: int = PRETRAIN_STEPS, batch_size: int = PRETRAIN_BATCH,
             lr: float = PRETRAIN_LR, seed: int = 0, device: str = "cpu",
             should_stop: Callable[[], bool] = lambda: False) -> tuple[int, float]:
    """Train `model.embed` (its features) contrastively on the unlabeled items `x` for `steps` steps, in place;
    the head is left as it was. Returns the steps taken and the mean loss of their last tenth (nan if none)."""
    if len(x) < 2:
        raise ValueError("pretraining needs at least two items")
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    dim = model.embedding_dim
    projector = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, PROJECTION_DIM)).to(device)
    params = nn.ModuleList([model, projector])
    opts = optimizers(params, lr=lr, weight_decay=0.0)
    precision = autocast_dtype(device)
    scaler = torch.amp.GradScaler("cuda") if precision == torch.float16 else None
    pin = pins_memory(device)
    xt = torch.as_tensor(x, dtype=input_dtype(model))
    batch = min(batch_size, len(xt))
    losses: list[float] = []
    for _ in range(steps):
        if should_stop():
            break
        idx = torch.randperm(len(xt), generator=gen)[:batch]
        xb = to_device(xt[idx], device, pin)
        v1, v2 = view(xb, gen), view(xb, gen)
        with autocast(device, precision):
            loss = nt_xent(projector(model.embed(v1)), projector(model.embed(v2)))
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            for opt in opts:
                scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            for opt in opts:
                opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    tail = losses[-max(1, len(losses) // 10):]
    return len(losses), float(np.mean(tail)) if tail else float("nan")

"""Training, evaluation and inference in plain torch, shared by the trainers and the selectors.

`train` follows the recipe chosen by measurement in docs/RECIPE.md (`RECIPE`): per-batch augmentation of image
tensors, a one-cycle learning rate (a warmup, then a cosine decay), and a minimum number of optimizer steps per
round. On a CUDA
device training and inference run in mixed precision (bfloat16 where the GPU has it, else float16 with a
gradient scaler) and batches travel from pinned host memory without blocking; on a CPU nothing of that applies.

Inputs are cast to the model's `input_dtype` (float32, or int64 for the `text` model's n-gram buckets), so
a batch of bucket ids that travelled as float32 still indexes the embedding table exactly (ids < 2**24).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aal_rpc.data.text import PADDING
from aal_rpc.models import Classifier, input_dtype

INFERENCE_BATCH = 1024
SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_DIV = 25.0  # one-cycle starts at lr / 25 and ends at lr / 25e4, as torch's OneCycleLR does
ONECYCLE_FINAL_DIV = 1e4
RGB_CROP_PAD = 1 / 8  # RGB images: pad by 1/8 of the side (4 px at 32x32), crop back at a random offset
DIGIT_SHIFT = 2 / 28  # other images (digit-like): shift by up to 1/14 of the side (2 px at 28x28, 1 at 8x8)
DIGIT_ROTATION = 10.0  # ... and rotate by up to 10 degrees either way
# the strong view of an unlabeled image (semi-supervised rounds, FixMatch's): digit-like ones shifted by up to 1/7 of
# the side (4 px at 28x28) and rotated by up to 30 degrees (digits28 itself is drawn at +-20), RGB ones cropped and
# flipped as above; then a square of 1/3 of the side blanked (cutout) at a random place
STRONG_SHIFT = 4 / 28
STRONG_ROTATION = 30.0
CUTOUT = 1 / 3
ALIGN_STEPS = 32  # distribution alignment's running mean of the predictions covers about this many steps
TOKEN_DROPOUT = 0.3  # the strong view of a text: each n-gram bucket replaced by the padding id with this chance
# batchnorm's statistics are recomputed at a round's final weights (recalibrate_batchnorm) over at most this many of
# its labeled items
RECALIBRATION_ITEMS = 4096


def check_semi_supervised(unlabeled_ratio: int, unlabeled_weight: float) -> None:
    if unlabeled_ratio < 1:
        raise ValueError(f"unlabeled_ratio must be at least 1; got {unlabeled_ratio}")
    if not unlabeled_weight >= 0:
        raise ValueError(f"unlabeled_weight must be at least 0; got {unlabeled_weight}")


@dataclass(frozen=True)
class Recipe:
    """How a training round trains, as chosen by measurement (docs/RECIPE.md has the numbers behind each value).

    `epochs` passes over the labels, repeated until at least `min_steps` optimizer steps were taken: 40 labels
    are two batches, and 20 epochs of them (40 steps) leave a network far from what those labels can teach it.
    `lr` is the peak of the `schedule`, reached after `warmup` (a fraction of the round's steps). `augment`
    turns on `augment_batch`: shifts and small rotations of digit-like images, crops and flips of RGB ones.
    `mixed_precision` trains in bfloat16 or float16 on a CUDA device (autocast_dtype); off, in float32 there too.
    `semi_supervised` lets a round that is given unlabeled items learn from them too (FixMatch, `train`'s
    `unlabeled`): `unlabeled_ratio` of them a labeled one, a pseudo-label kept where the model is `threshold`
    sure of it, weighed `unlabeled_weight` against the labeled loss; off by default (docs/RECIPE.md section 7).
    The values in RECIPE are the ones a trainer should use (TrainerConfig); train's own keyword defaults are
    older and kept for its callers, except the schedule and augmentation, which are the recipe's.
    """

    epochs: int = 40
    min_steps: int = 600
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup: float = 0.3
    augment: bool = True
    mixed_precision: bool = True
    semi_supervised: bool = False
    unlabeled_ratio: int = 2
    unlabeled_weight: float = 1.0
    threshold: float = 0.95

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {SCHEDULES}")
        check_semi_supervised(self.unlabeled_ratio, self.unlabeled_weight)

    def kwargs(self) -> dict:
        """The keyword arguments of `train` that this recipe sets: `train(model, x, y, **recipe.kwargs())`."""
        return asdict(self)


RECIPE = Recipe()
# a round that continues the last round's model (a warm start): a quarter of the steps, the same schedule restarted
WARM_RECIPE = replace(RECIPE, epochs=RECIPE.epochs // 4, min_steps=RECIPE.min_steps // 4)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int = 32,
          lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0, device: str = "cpu",
          min_steps: int = 0, should_stop: Callable[[], bool] = lambda: False,
          schedule: str = RECIPE.schedule, warmup: float = RECIPE.warmup, augment: bool = RECIPE.augment,
          mixed_precision: bool = RECIPE.mixed_precision, unlabeled: np.ndarray | None = None,
          semi_supervised: bool = RECIPE.semi_supervised, unlabeled_ratio: int = RECIPE.unlabeled_ratio,
          unlabeled_weight: float = RECIPE.unlabeled_weight, threshold: float = RECIPE.threshold) -> float:
    """Train in place with Adam; return the mean loss of the last epoch.

    `min_steps` repeats epochs until at least that many optimizer steps were taken: a fixed compute budget per
    round, so a round costs about the same on 20 labels as on 2,000 (as training on a large pool does).
    `should_stop` is asked before each step; when it says yes, training ends where it is.
    `schedule` shapes the learning rate over the round's steps with `lr` as its peak (`lr_factor`); `augment`
    transforms each image batch at random (`augment_batch`; other inputs pass unchanged). `mixed_precision`
    False keeps a CUDA device's steps in float32.
    `unlabeled` items (rows shaped as x's), when given and `semi_supervised`, join every step as in FixMatch
    (Sohn et al. 2020; `PseudoLabeler`): `unlabeled_ratio` x `batch_size` of them drawn at random, each labeled
    with the model's own prediction on a weak view (the recipe's augmentation) where that prediction's probability
    is at least `threshold`, and those items' strong views (`strong_augment_batch`) trained towards their
    pseudo-labels, the loss weighed `unlabeled_weight` and averaged over all the drawn items. A step where no item
    is that sure is a supervised step; the labeled batches and their augmentation stay what they would be without
    unlabeled items (their draws come from a generator of their own). The loss returned includes that term.
    The whole recipe: `train(model, x, y, **RECIPE.kwargs(), seed=..., device=...)`.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")
    check_semi_supervised(unlabeled_ratio, unlabeled_weight)
    model.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)  # its own stream: augmenting leaves the batch order as it was
    xt = torch.as_tensor(x, dtype=input_dtype(model))
    yt = torch.as_tensor(y, dtype=torch.int64)
    pseudo = None
    if semi_supervised and unlabeled is not None and len(unlabeled):
        pseudo = PseudoLabeler(torch.as_tensor(unlabeled, dtype=input_dtype(model)), yt,
                               count=unlabeled_ratio * batch_size, threshold=threshold, augment=augment,
                               seed=seed + 2, device=device)
    opts = optimizers(model, lr=lr, weight_decay=weight_decay)
    peak = [[group["lr"] for group in opt.param_groups] for opt in opts]
    precision = autocast_dtype(device) if mixed_precision else None
    scaler = torch.amp.GradScaler("cuda") if precision == torch.float16 else None
    pin = pins_memory(device)
    last = 0.0
    bounds = batch_bounds(len(xt), batch_size)
    steps_per_epoch = max(1, len(bounds))
    n_epochs = max(epochs, -(-min_steps // steps_per_epoch))
    total_steps, step = n_epochs * steps_per_epoch, 0
    for _ in range(n_epochs):
        order = torch.randperm(len(xt), generator=gen)
        total, n = torch.zeros((), device=device), 0  # summed on the device: reading a loss would wait for the GPU
        for start, end in bounds:
            if should_stop():
                model.eval()
                return last
            idx = order[start:end]
            if len(idx) == 1:  # one label in all (or batch_size 1): batchnorm cannot normalize one value
                idx = idx.repeat(2)
            xb, yb = to_device(xt[idx], device, pin), to_device(yt[idx], device, pin)
            if augment:
                xb = augment_batch(xb, aug_gen)
            confident = None if pseudo is None else pseudo.draw(model, precision)
            factor = lr_factor(schedule, step, total_steps, warmup)
            for opt, lrs in zip(opts, peak):
                for group, base in zip(opt.param_groups, lrs):
                    group["lr"] = base * factor
                opt.zero_grad(set_to_none=True)
            with autocast(device, precision):
                if confident is None:
                    loss = F.cross_entropy(model(xb), yb)
                else:  # one forward pass over both, so batchnorm normalizes them together (as FixMatch does)
                    xs, ys = confident
                    logits = model(torch.cat([xb, xs]))
                    loss = F.cross_entropy(logits[:len(xb)], yb) + unlabeled_weight * F.cross_entropy(
                        logits[len(xb):], ys, reduction="sum") / (unlabeled_ratio * batch_size)
            if scaler is None:
                loss.backward()
                for opt in opts:
                    opt.step()
            else:  # float16: scale the loss so small gradients do not flush to zero; skip steps that overflowed
                scaler.scale(loss).backward()
                for opt in opts:
                    scaler.step(opt)
                scaler.update()
            step += 1
            total += loss.detach().float() * len(idx)
            n += len(idx)
        last = float(total) / max(n, 1)
    recalibrate_batchnorm(model, xt[torch.randperm(len(xt), generator=gen)[:RECALIBRATION_ITEMS]], device,
                          batch_size)
    model.eval()
    return last


def recalibrate_batchnorm(model: nn.Module, x: torch.Tensor, device: str | torch.device, batch_size: int) -> None:
    """Recompute the running statistics of the model's batchnorm layers at its final weights: one pass over x
    (unaugmented) in batches of `batch_size`, averaged (torch.optim.swa_utils.update_bn). The statistics that
    training leaves are a moving average over its last steps, taken at weights that kept moving; after a short
    round at a high learning rate they no longer fit the weights, and a network that fits every label in train
    mode can predict one class for everything in eval mode (seen on a warm 10-step round: 1.00 in train mode, 0.65
    in eval). A model without batchnorm is left as it is."""
    if len(x) and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        if len(x) == 1:  # batchnorm cannot normalize one value
            x = x.repeat(2, *[1] * (x.dim() - 1))
        batches = [x[start:end] for start, end in batch_bounds(len(x), batch_size)]
        torch.optim.swa_utils.update_bn(batches, model, device=torch.device(device))


class PseudoLabeler:
    """FixMatch's unlabeled half of a step (`draw`), with ReMixMatch's distribution alignment.

    `count` rows of `pool` (host memory) are drawn at random, each predicted on a weak view (`augment_batch` where
    `augment`, else as it is); the strong views (`strong_augment_batch`) of those predicted with a probability of
    at least `threshold` are returned with those predictions as their labels.

    The prediction runs in eval mode without gradients: batchnorm's statistics and dropout stay out of it, so the
    labels come from the model as it would be published, and drawing them changes nothing in the model. Before the
    threshold, each prediction is aligned (Berthelot et al. 2020): multiplied by the labeled classes' shares
    (`labels`, add-one smoothed) over the running mean of the model's predictions on the pool (over about
    ALIGN_STEPS steps), and renormalized. Without it a few labels let one class take the pseudo-labels over: the
    model grows sure of it on the pool, trains on that, and ends predicting it for everything (measured on text,
    docs/RECIPE.md section 7). Choosing the confident items reads their count back from the device (one wait for
    the GPU a step); only they take the strong, trained pass.
    """

    def __init__(self, pool: torch.Tensor, labels: torch.Tensor, *, count: int, threshold: float, augment: bool,
                 seed: int, device: str | torch.device):
        self.pool, self.count, self.threshold, self.augment, self.device = pool, count, threshold, augment, device
        self.generator = torch.Generator().manual_seed(seed)  # draws and views of unlabeled items: a stream apart
        self.pin = pins_memory(device)
        self.labels = labels
        self.prior: torch.Tensor | None = None  # the labeled classes' shares, once the number of classes is known
        self.running: torch.Tensor | None = None  # the mean prediction on the pool, lately

    def draw(self, model: nn.Module, precision: torch.dtype | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The strong views of the confident items of a random draw and their pseudo-labels; None if none is."""
        xu = to_device(self.pool[torch.randint(len(self.pool), (self.count,), generator=self.generator)],
                       self.device, self.pin)
        weak = augment_batch(xu, self.generator) if self.augment else xu
        model.eval()
        with torch.no_grad(), autocast(self.device, precision):
            probs = torch.softmax(model(weak).float(), dim=1)
        model.train()
        if self.prior is None or self.running is None:  # the first draw (they are set together)
            counts = torch.bincount(self.labels, minlength=probs.shape[1])[:probs.shape[1]].float() + 1
            self.prior = (counts / counts.sum()).to(probs.device)
            self.running = probs.mean(dim=0)
        else:
            self.running.mul_(1 - 1 / ALIGN_STEPS).add_(probs.mean(dim=0), alpha=1 / ALIGN_STEPS)
        aligned = probs * (self.prior / self.running.clamp_min(1e-6))
        confidence, pseudo = (aligned / aligned.sum(dim=1, keepdim=True)).max(dim=1)
        keep = (confidence >= self.threshold).nonzero().squeeze(1)
        if len(keep) == 0:
            return None
        return strong_augment_batch(xu[keep], self.generator), pseudo[keep]


def strong_augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The strong view of an unlabeled batch (FixMatch's), on x's device; draws from `generator` on the CPU.

    Digit-like images (other than 3 channels): shifted by up to 1/7 of the side and rotated by up to 30 degrees,
    RGB ones cropped and flipped as `augment_batch` does, and both then blanked over a random square of 1/3 of
    the side (cutout). Hashed text (int64 bucket ids, (N, L)): each bucket replaced by the padding id with
    probability TOKEN_DROPOUT (the weak view of a text is the text itself). Flat vectors have no strong view:
    for them a semi-supervised round is plain self-training on confident predictions.
    """
    if len(x) == 0:
        return x
    if not x.is_floating_point():
        if x.dim() != 2:
            return x
        drop = (torch.rand(x.shape, generator=generator) < TOKEN_DROPOUT).to(x.device)
        return x.masked_fill(drop, PADDING)
    if x.dim() != 4:
        return x
    n, c, h, w = x.shape
    if c == 3:
        x = augment_batch(x, generator)
    else:
        x = random_affine(x, max(1, round(STRONG_SHIFT * min(h, w))), STRONG_ROTATION, generator)
    return cutout(x, max(1, round(CUTOUT * min(h, w))), generator)


def cutout(x: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """Each image with its own `side` x `side` square, wholly inside it at a random place, set to 0."""
    n, _, h, w = x.shape
    side_y, side_x = min(side, h), min(side, w)
    oy = torch.randint(0, h - side_y + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, w - side_x + 1, (n,), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device)[None, :] - oy[:, None]  # (N, H): inside where 0 <= r < side
    cols = torch.arange(w, device=x.device)[None, :] - ox[:, None]
    inside = ((rows >= 0) & (rows < side_y))[:, :, None] & ((cols >= 0) & (cols < side_x))[:, None, :]
    return x.masked_fill(inside[:, None], 0)


def lr_factor(schedule: str, step: int, total_steps: int, warmup: float) -> float:
    """The learning rate at `step` (0-based) of `total_steps`, as a fraction of the peak; never 0, so every step
    learns something.

    `constant`: 1. `cosine`: a linear warmup over the first `warmup` share of the steps, then a cosine decay
    towards 0. `onecycle` (Smith & Topin 2019, as torch's OneCycleLR): a cosine rise from 1/25 of the peak over
    the `warmup` share, then a cosine fall to 1/250,000 of it.
    """
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    rise = int(round(warmup * total_steps))
    if schedule == "cosine":
        if step < rise:
            return (step + 1) / rise
        t = (step - rise) / (total_steps - rise)
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if schedule == "onecycle":
        start, end = 1.0 / ONECYCLE_DIV, 1.0 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
        if step < rise:
            t = step / rise
            return start + (1.0 - start) * 0.5 * (1.0 - math.cos(math.pi * t))
        t = (step - rise) / max(1, total_steps - 1 - rise)
        return end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {SCHEDULES}")


def augment_batch(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A randomly transformed copy of an image batch (N, C, H, W), on x's device; labels are left as they are.

    RGB images (3 channels) are padded by 1/8 of their side with zeros and cropped back at a random offset, and
    half of them flipped left to right (the CIFAR recipe). Other images (1-channel digits and the like, where a
    flip would change what is written) are shifted by up to 1/14 of their side (2 px at 28x28, 1 at 8x8) and
    rotated by up to 10 degrees. Anything else is returned as it is: hashed text (int64 bucket ids, where a
    shift changes the words) and flat (N, D) vectors (no neighbourhood to shift in). The random draws come from
    `generator` on the CPU, so a seed gives the same batches on every device.
    """
    if not x.is_floating_point() or x.dim() != 4 or len(x) == 0:
        return x
    n, c, h, w = x.shape
    if c == 3:
        x = random_shift(x, max(1, round(RGB_CROP_PAD * min(h, w))), generator)
        flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        return torch.where(flip[:, None, None, None], x.flip(3), x)
    return random_affine(x, max(1, round(DIGIT_SHIFT * min(h, w))), DIGIT_ROTATION, generator)


def random_shift(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by its own whole-pixel offset in [-pad, pad] on both axes, filled with zeros: a zero pad
    by `pad` and a crop back to (H, W) at a random corner, done for the whole batch with one gather."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy, ox = (torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device) for _ in range(2))
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows, cols]


def random_affine(x: torch.Tensor, shift: int, degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Each image rotated about its centre by its own angle in [-degrees, degrees] and moved by whole pixels in
    [-shift, shift] on both axes (bilinear, zeros outside): one affine_grid and grid_sample for the batch."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    ty, tx = (torch.randint(-shift, shift + 1, (n,), generator=generator).float() for _ in range(2))
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output to input positions in coordinates scaled to [-1, 1] per axis: a rotation by pixels needs
    # the h/w aspect, and a shift of s pixels is 2s/size; translating by the rotated shift makes the output the
    # rotated image moved by exactly (tx, ty) pixels
    rot = torch.stack([torch.stack([cos, -sin * h / w], 1), torch.stack([sin * w / h, cos], 1)], 1)  # (N, 2, 2)
    move = rot @ torch.stack([2 * tx / w, 2 * ty / h], 1)[:, :, None]
    theta = torch.cat([rot, move], 2)
    grid = F.affine_grid(theta.to(x.device, x.dtype), [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """The mixed-precision dtype on `device`: bfloat16 on a CUDA GPU that has it (Ampere and later), else
    float16; None (full float32, no autocast) on a CPU or any other device."""
    if torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: str | torch.device, dtype: torch.dtype | None):
    """torch.autocast on CUDA in `dtype`; no context at all where `dtype` is None (CPU)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def pins_memory(device: str | torch.device) -> bool:
    """Whether host batches go through pinned (page-locked) memory: only for a CUDA device, where a copy from
    pinned memory can run asynchronously (non_blocking) while the GPU is still busy with the last step."""
    return torch.device(device).type == "cuda"


def to_device(t: torch.Tensor, device: str | torch.device, pin: bool) -> torch.Tensor:
    if pin:
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


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
def predict_proba(model: Classifier, x: np.ndarray, *, device: str = "cpu",
                  with_embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Class probabilities (N, C) and, when asked, penultimate-layer embeddings (N, D), as float32 whatever the
    precision the model ran in."""
    model.to(device).eval()
    dtype = input_dtype(model)
    precision = autocast_dtype(device)
    pin = pins_memory(device)
    probs, embs = [], []
    for start in range(0, len(x), INFERENCE_BATCH):
        xb = to_device(torch.as_tensor(x[start:start + INFERENCE_BATCH], dtype=dtype), device, pin)
        with autocast(device, precision):
            if with_embeddings:
                e = model.embed(xb)
                logits = model.head(e)
            else:
                logits = model(xb)
        if with_embeddings:
            embs.append(e.float().cpu().numpy())
        probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    if not probs:
        return np.zeros((0, 0), np.float32), None
    return np.concatenate(probs), (np.concatenate(embs) if with_embeddings else None)


def evaluate(model: Classifier, x: np.ndarray, y: np.ndarray, *, device: str = "cpu") -> dict[str, float]:
    probs, _ = predict_proba(model, x, device=device)
    return probability_metrics(probs, y)


def probability_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy of predicted probabilities (N, C) against labels y; {} without labels."""
    if len(y) == 0:
        return {}
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    return {"accuracy": float((probs.argmax(1) == y).mean()), "loss": float(-np.log(p).mean())}

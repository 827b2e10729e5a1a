"""Issue 14: our synchronous active-learning loop against the textbook one, on the same pool, initial labels and
budget.

The textbook loop is what anyone would write first (modAL's margin sampling): the textbook CNN (conv32 3x3,
ReLU, max pool 2, conv64 3x3, ReLU, flatten, fc128, fc10), Adam 1e-3 without weight decay, 20 epochs of
batch 64, retrained from scratch each round, the next batch = the smallest margins. Ours is the same
synchronous loop built from what the servers and workers run: `cnn`, `aal_rpc.training.train` with
`RECIPE`, and `get_strategy("margin")` (or `"random"`). Both start from the same random labels per seed
(digits28: 40 labels, batches of 40, up to 400) and are scored on the held-out split after every round.

A third loop warm-starts ours: each round after the first continues the last round's model with a quarter of
the steps (`WARM_RECIPE`), to show what the shorter rounds a warm-starting server trains cost or gain.
"Labels to reach" is the first label count at which a loop's mean curve reaches the accuracy that random
sampling (ours) ends with: how many labels margin sampling saves.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from aal_rpc.data import load_dataset
from aal_rpc.models import build_model
from aal_rpc.strategies import get_strategy
from aal_rpc.training import RECIPE, WARM_RECIPE, Recipe, evaluate, predict_proba, train
from benchmarks.cnn_vs_textbook import textbook_cnn

DATASET = "digits28"
INITIAL = 40  # random labels before the first round
BATCH = 40  # labels per round
BUDGET = 400
SEEDS = (0, 1, 2)
STRATEGIES = ("margin", "random")
TEXTBOOK_EPOCHS = 20
TEXTBOOK_BATCH = 64
TEXTBOOK_LR = 1e-3


def textbook_fit(model: nn.Module, x: np.ndarray, y: np.ndarray, *, seed: int, epochs: int) -> None:
    """The textbook training loop: Adam 1e-3, `epochs` shuffled passes of batch 64, nothing else."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    opt = torch.optim.Adam(model.parameters(), lr=TEXTBOOK_LR)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), TEXTBOOK_BATCH):
            idx = order[start:start + TEXTBOOK_BATCH]
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    model.eval()


def textbook_select(probs: np.ndarray, batch: int, strategy: str, rng: np.random.Generator) -> np.ndarray:
    """modAL's margin_sampling (the `batch` smallest top-1 minus top-2 gaps), or a uniform draw."""
    if strategy == "random":
        return rng.choice(len(probs), batch, replace=False)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return np.argsort(top2[:, 1] - top2[:, 0], kind="stable")[:batch]


def loop(ds, *, kind: str, strategy: str, seed: int, initial: int, batch: int, budget: int,
         recipe: Recipe = RECIPE, warm: Recipe | None = None, textbook_epochs: int = TEXTBOOK_EPOCHS) -> dict:
    """One synchronous loop: train on L, score the unlabeled pool, label the next batch, until `budget`.
    `kind` "textbook" or "ours"; `warm` (ours only): the recipe of every round after the first, which then
    continues the last round's model. Returns the accuracy after each round and the seconds spent training."""
    n_pool = len(ds.x_pool)
    labeled = np.random.default_rng(seed).choice(n_pool, initial, replace=False)  # the same for every loop
    pick_rng = np.random.default_rng(seed + 1)
    chooser = get_strategy(strategy, seed=seed)
    curve, train_s, model = [], 0.0, None
    for rnd in range(1 + -(-(budget - initial) // batch)):
        round_seed = 1000 * seed + rnd
        torch.manual_seed(round_seed)
        t0 = time.perf_counter()
        if kind == "textbook":
            model = textbook_cnn(ds.input_shape, ds.num_classes)
            textbook_fit(model, ds.x_pool[labeled], ds.y_pool[labeled], seed=round_seed, epochs=textbook_epochs)
        else:
            fresh = model is None or warm is None
            if fresh:
                model = build_model("cnn", ds.input_shape, ds.num_classes)
            r = recipe if fresh else warm
            train(model, ds.x_pool[labeled], ds.y_pool[labeled], **r.kwargs(), seed=round_seed)
        train_s += time.perf_counter() - t0
        curve.append([int(len(labeled)), evaluate(model, ds.x_test, ds.y_test)["accuracy"]])
        if len(labeled) >= budget:
            break
        rest = np.setdiff1d(np.arange(n_pool), labeled)
        k = min(batch, budget - len(labeled))
        if kind == "textbook":
            probs = predict_proba(model, ds.x_pool[rest])[0] if strategy != "random" else np.zeros((len(rest), 0))
            picked = textbook_select(probs, k, strategy, pick_rng)
        else:
            probs = (predict_proba(model, ds.x_pool[rest])[0] if chooser.needs_model
                     else np.zeros((len(rest), 0), np.float32))
            picked = chooser.select(probs, k).indices
        labeled = np.concatenate([labeled, rest[picked]])
    return {"curve": curve, "train_seconds": train_s}


def _std(xs: list[float]) -> float:
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def labels_to_reach(curve: list[list[float]], target: float) -> int | None:
    """The first label count at which `curve` ([labels, accuracy] rows) reaches `target`; None if it never does."""
    return next((int(n) for n, acc in curve if acc >= target - 1e-9), None)


def summarize(runs: list[dict]) -> dict:
    finals = [r["curve"][-1][1] for r in runs]
    mean_curve = [[n, float(np.mean([r["curve"][i][1] for r in runs]))] for i, (n, _) in enumerate(runs[0]["curve"])]
    return {"final": finals, "mean": float(np.mean(finals)), "std": _std(finals), "curve": mean_curve,
            "train_seconds": float(np.mean([r["train_seconds"] for r in runs]))}


def run(*, smoke: bool = False) -> dict:
    initial, batch, budget, seeds = INITIAL, BATCH, BUDGET, SEEDS
    recipe, warm, tb_epochs = RECIPE, WARM_RECIPE, TEXTBOOK_EPOCHS
    if smoke:  # a few labels, a few steps: checks the loops run end to end
        initial, batch, budget, seeds = 20, 20, 60, SEEDS[:1]
        recipe, warm, tb_epochs = (dataclasses.replace(RECIPE, epochs=1, min_steps=4),
                                   dataclasses.replace(WARM_RECIPE, epochs=1, min_steps=2), 1)
    ds = load_dataset(DATASET)
    t0 = time.perf_counter()
    common = {"initial": initial, "batch": batch, "budget": budget}
    loops = {}
    for strategy in STRATEGIES:
        loops[f"textbook_{strategy}"] = summarize([loop(ds, kind="textbook", strategy=strategy, seed=s,
                                                        textbook_epochs=tb_epochs, **common) for s in seeds])
        loops[f"ours_{strategy}"] = summarize([loop(ds, kind="ours", strategy=strategy, seed=s, recipe=recipe,
                                                    **common) for s in seeds])
    loops["ours_margin_warm"] = summarize([loop(ds, kind="ours", strategy="margin", seed=s, recipe=recipe, warm=warm,
                                                **common) for s in seeds])
    target = loops["ours_random"]["mean"]  # what random sampling with our recipe reaches on the whole budget
    textbook_final = loops["textbook_margin"]["mean"]
    for summary in loops.values():
        summary["labels_to_target"] = labels_to_reach(summary["curve"], target)
        summary["labels_to_textbook_final"] = labels_to_reach(summary["curve"], textbook_final)
    ratios = {s: loops[f"ours_{s}"]["mean"] / loops[f"textbook_{s}"]["mean"] for s in STRATEGIES}
    return {"dataset": DATASET, **common, "seeds": len(seeds), "test_items": len(ds.y_test),
            "recipe": dataclasses.asdict(recipe), "warm_recipe": dataclasses.asdict(warm),
            "textbook": {"epochs": tb_epochs, "batch_size": TEXTBOOK_BATCH, "lr": TEXTBOOK_LR},
            "loops": loops, "ratio": ratios, "target_accuracy": target, "textbook_margin_final": textbook_final,
            "pass": all(r > 1.0 for r in ratios.values()), "seconds": time.perf_counter() - t0}


def rows(r: dict) -> list[str]:
    """Its rows of the benchmark table (benchmarks/__main__.py)."""
    loops = r["loops"]

    def ok(v):
        return "yes" if v else "**no**"

    def reach(name, key="labels_to_target"):
        n = loops[name][key]
        return f"{n}" if n is not None else f"> {r['budget']}"

    out = []
    for s in ("margin", "random"):
        ours, tb = loops[f"ours_{s}"], loops[f"textbook_{s}"]
        out.append(f"| 11 | sync {s} loop, {r['dataset']}: {r['initial']} random labels + batches of {r['batch']} to "
                   f"{r['budget']}, {r['seeds']} seeds; `cnn` + recipe (train {ours['train_seconds']:.0f} s a loop) | "
                   f"{ours['mean']:.3f} ± {ours['std']:.3f} | textbook loop {tb['mean']:.3f} ± {tb['std']:.3f} "
                   f"(train {tb['train_seconds']:.0f} s) | {r['ratio'][s]:.3f} | > 1 | {ok(r['ratio'][s] > 1.0)} |")
    warm = loops["ours_margin_warm"]
    out.append(f"| 11b | the same margin loop warm-started ({r['warm_recipe']['min_steps']} steps a round after the "
               f"first; train {warm['train_seconds']:.0f} s a loop) | {warm['mean']:.3f} ± {warm['std']:.3f} | from "
               f"scratch {loops['ours_margin']['mean']:.3f} ± {loops['ours_margin']['std']:.3f} | "
               f"{warm['mean'] / loops['ours_margin']['mean']:.3f} | – | – |")
    out.append(f"| 11c | labels to reach {r['target_accuracy']:.3f} (what random sampling reaches with the recipe on "
               f"{r['budget']} labels) | margin {reach('ours_margin')}, warm-started {reach('ours_margin_warm')}, "
               f"random {reach('ours_random')} | textbook margin {reach('textbook_margin')}, random "
               f"{reach('textbook_random')} | – | – | – |")
    out.append(f"| 11d | labels our margin loop needs to reach the textbook margin loop's final "
               f"{r['textbook_margin_final']:.3f} | {reach('ours_margin', 'labels_to_textbook_final')} | textbook "
               f"{reach('textbook_margin', 'labels_to_textbook_final')} | – | – | – |")
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))

"""Issue 21, item 2: what the cold start's first labels are worth, by the embedding TypiClust picks them in.

For each budget (10, 20, 40 labels) and seed, the picks of
- `random`: uniform random items of the pool (the cold start before issue 21);
- `typical, pixels (PCA 32)`: TypiClust on the pool's first 32 principal components;
- `typical, untrained network`: TypiClust on the embedding of the task's network at seeded initial weights (the
  workers' default cold start now);
- `typical, pretrained encoder`: TypiClust on the embedding after `pretraining.pretrain` on the pool
  (`aal-server --pretrain-steps`);
train a network from scratch with the servers' recipe, sized as a paced round (3 steps a label), and are scored on
the held-out split. Also: the same random labels fine-tuned from the pretrained encoder against from scratch (what
`--pretrain-steps` does to the trainers' first models). Means with 95% intervals over the seeds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from aal_rpc.data import load_dataset
from aal_rpc.measures import mean_ci
from aal_rpc.models import build_model
from aal_rpc.pretraining import pretrain
from aal_rpc.strategies.typiclust import TypiClust
from aal_rpc.trainer.pacing import STEPS_PER_LABEL
from aal_rpc.training import RECIPE, evaluate, predict_proba, train
from benchmarks.common import plus_minus


@dataclass(frozen=True)
class Size:
    dataset: str
    model: str
    budgets: tuple[int, ...]
    seeds: tuple[int, ...]
    pretrain_steps: int


FULL = Size("digits28", "cnn", budgets=(10, 20, 40), seeds=(0, 1, 2), pretrain_steps=300)
SMOKE = Size("digits", "mlp", budgets=(10,), seeds=(0,), pretrain_steps=5)


def _embeddings(s: Size, ds) -> tuple[dict[str, np.ndarray | None], dict, float]:
    x = ds.x_pool.reshape(len(ds.x_pool), -1).astype(np.float64)
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    torch.manual_seed(0)
    untrained = build_model(s.model, ds.input_shape, ds.num_classes)
    torch.manual_seed(0)
    encoder = build_model(s.model, ds.input_shape, ds.num_classes)
    t0 = time.perf_counter()
    pretrain(encoder, ds.x_pool, steps=s.pretrain_steps, seed=0)
    seconds = time.perf_counter() - t0
    embed = lambda m: predict_proba(m, ds.x_pool, with_embeddings=True)[1]  # noqa: E731
    return ({"random": None, "typical, pixels (PCA 32)": centred @ vt[:32].T,
             "typical, untrained network": embed(untrained), "typical, pretrained encoder": embed(encoder)},
            encoder.state_dict(), seconds)


def _score(s: Size, ds, rows: np.ndarray, seed: int, init: dict | None = None) -> float:
    torch.manual_seed(seed)
    model = build_model(s.model, ds.input_shape, ds.num_classes)
    if init is not None:
        model.load_state_dict(init)
    recipe = replace(RECIPE, min_steps=STEPS_PER_LABEL * len(rows))
    train(model, ds.x_pool[rows], ds.y_pool[rows], **recipe.kwargs(), seed=seed)
    return evaluate(model, ds.x_test, ds.y_test)["accuracy"]


def run(*, smoke: bool = False) -> dict:
    s = SMOKE if smoke else FULL
    torch.set_num_threads(1)
    ds = load_dataset(s.dataset)
    embeddings, encoder_state, pretrain_seconds = _embeddings(s, ds)
    rows_out = []
    for budget in s.budgets:
        row = {"labels": budget, "picks": {}}
        for name, emb in embeddings.items():
            accs, classes = [], []
            for seed in s.seeds:
                if emb is None:
                    rows = np.random.default_rng(seed).choice(len(ds.y_pool), budget, replace=False)
                else:
                    rows = TypiClust(seed=seed).select(np.zeros((len(emb), 0), np.float32), budget,
                                                       embeddings=emb.astype(np.float32)).indices
                accs.append(_score(s, ds, rows, seed))
                classes.append(len(set(ds.y_pool[rows].tolist())))
            mean, half, _ = mean_ci(accs)
            row["picks"][name] = {"accuracy": mean, "ci95": half, "classes_covered": float(np.mean(classes))}
        fine = [_score(s, ds, np.random.default_rng(seed).choice(len(ds.y_pool), budget, replace=False), seed,
                       init=encoder_state) for seed in s.seeds]
        mean, half, _ = mean_ci(fine)
        row["random, fine-tuned from the pretrained encoder"] = {"accuracy": mean, "ci95": half}
        rows_out.append(row)
    return {"dataset": s.dataset, "model": s.model, "seeds": len(s.seeds), "pretrain_steps": s.pretrain_steps,
            "pretrain_seconds": pretrain_seconds, "rows": rows_out}


def _pm(d: dict) -> str:
    return plus_minus(d["accuracy"], d["ci95"])


def rows(r: dict) -> list[str]:
    """The lines of the benchmark table."""
    out = []
    for row in r["rows"]:
        base = row["picks"]["random"]
        for name, d in row["picks"].items():
            if name != "random":
                out.append(f"| 18 | {r['dataset']} ({r['model']}), cold start of {row['labels']} labels, {r['seeds']} "
                           f"seeds: {name} | {_pm(d)} ({d['classes_covered']:.1f} classes) | random picks "
                           f"{_pm(base)} | – | – | – |")
        tuned = row["random, fine-tuned from the pretrained encoder"]
        out.append(f"| 18 | {r['dataset']} ({r['model']}), {row['labels']} random labels: from the encoder "
                   f"pretrained {r['pretrain_steps']} steps ({r['pretrain_seconds']:.0f} s) | {_pm(tuned)} | "
                   f"from scratch {_pm(base)} | – | – | – |")
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=1))

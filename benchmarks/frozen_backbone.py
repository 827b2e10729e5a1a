"""Issue 22, item 3: a frozen pretrained backbone and a trained head (aal-server --freeze-backbone) against today's
model trained from scratch on the same labels; and what the embedding cache saves (aal_rpc.frozen): a round's time,
and scoring throughput, with cached embeddings against full passes.

"Pretrained" means trained with labels on other data held here, as nothing can be downloaded: each pool is split
in two halves at random. The model is trained with the servers' recipe on half A, either on all its labels ("same
classes, other items") or on its items of the first half of the classes only ("other classes"), and written as
safetensors. Active learning's labels come from half B: for each labeled-set size and seed the same random rows of
half B train (a) the model from scratch with the recipe, and (b) for each backbone, the head alone on the frozen
backbone's embeddings, with the same recipe (its steps, batch size, schedule) and starting from that file, as a
trainer started with --init-weights FILE --freeze-backbone does. All are scored on the held-out split.

Data: `digits28` with `cnn`, and the generated four-topic text set of benchmarks/semi_supervised.py with `text`.

Timing, in one process on the same threads: a round on the largest labeled set (train, then evaluate on the test
split) from scratch; the same round with a frozen backbone and a cold cache (every label and test item embedded);
and a later round (a cached backbone: the new fifth of the labels embedded, the head trained, the test set scored
from its cached embeddings). Scoring: items a second of a full pass over a pool (predict_proba) against the head
on its cached embeddings (frozen.head_probabilities).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from aal_rpc.measures import mean_ci
from benchmarks import semi_supervised
from benchmarks.common import plus_minus


@dataclass(frozen=True)
class Size(semi_supervised.Size):
    pretrain_steps: int = 600  # least steps of the backbone's training on half A
    score_items: int = 20_000  # items of the scoring figure (the pool tiled up to this many)
    max_items: int | None = None  # the smoke run's pool and test split: their first this many items


def loaded(data: str, size: Size):
    """(x_pool, y_pool, x_test, y_test), cut to `size.max_items` each."""
    return tuple(a[:size.max_items] for a in semi_supervised.load(data))


# sized for a 2-core CPU shared with others: each round from scratch is the recipe's 600 steps of the cnn
FULL = Size(image_labels=(20, 100), text_labels=(8, 40), seeds=(0, 1), min_steps=600, epochs=40,
            pretrain_steps=600, score_items=20_000)
SMOKE = Size(image_labels=(20,), text_labels=(8,), seeds=(0,), min_steps=2, epochs=1, pretrain_steps=2,
             score_items=256, max_items=128)
DATA = (("digits28", "cnn"), ("text", "text"))
PROCESSES = 3  # trainings from scratch and of the backbones, one thread each (the heads, and every timing, on one)
BACKBONES = ("same classes", "other classes")


def halves(y: np.ndarray, seed: int = 22) -> tuple[np.ndarray, np.ndarray]:
    """Rows of half A (the backbone's) and half B (active learning's) of a pool, at random."""
    order = np.random.default_rng(seed).permutation(len(y))
    return np.sort(order[:len(y) // 2]), np.sort(order[len(y) // 2:])


def pretrained(job: tuple) -> dict:
    """The state dict of the model trained with the recipe on half A, all of it or its first half of classes:
    (data, model, which, size), on one thread."""
    from aal_rpc.training import RECIPE, train

    data, model_name, which, size = job
    x_pool, y_pool, x_test, y_test = loaded(data, size)
    classes = int(max(y_pool.max(), y_test.max())) + 1
    rows, _ = halves(y_pool)
    if which == "other classes":
        rows = rows[y_pool[rows] < classes // 2]
    with one_thread():
        model = fresh(model_name, x_pool.shape[1:], classes, 1_000)
        train(model, x_pool[rows], y_pool[rows], **replace(RECIPE, min_steps=size.pretrain_steps,
                                                           epochs=size.epochs).kwargs(), seed=1_000)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def from_scratch(job: tuple) -> tuple[float, float]:
    """Held-out accuracy and seconds (train, then evaluate) of today's model trained from scratch with the recipe on
    the labels of half B that `labeled_rows` draws: (data, model, labels, seed, size), on one thread."""
    from aal_rpc.training import RECIPE, evaluate, train

    data, model_name, n, seed, size = job
    x_pool, y_pool, x_test, y_test = loaded(data, size)
    rows = labeled_rows(y_pool, n, seed)
    with one_thread():
        t0 = time.perf_counter()
        model = fresh(model_name, x_pool.shape[1:], int(max(y_pool.max(), y_test.max())) + 1, seed)
        train(model, x_pool[rows], y_pool[rows], **replace(RECIPE, min_steps=size.min_steps,
                                                           epochs=size.epochs).kwargs(), seed=seed)
        return evaluate(model, x_test, y_test)["accuracy"], time.perf_counter() - t0


def labeled_rows(y_pool: np.ndarray, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice(halves(y_pool)[1], n, replace=False)


@contextlib.contextmanager
def one_thread():
    """torch on one thread, as a server started with --threads 1 trains, and as every figure here is timed."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fresh(model_name: str, input_shape, classes: int, seed: int, state: dict | None = None):
    import torch

    from aal_rpc.models import build_model

    torch.manual_seed(seed)
    model = build_model(model_name, input_shape, classes)
    if state is not None:
        model.load_state_dict(state)
    return model


def run(*, smoke: bool = False) -> dict:
    s = SMOKE if smoke else FULL
    pre_jobs = [(data, model, which, s) for data, model in DATA for which in BACKBONES]
    scratch_jobs = [(data, model, n, seed, s) for data, model in DATA
                    for n in (s.image_labels if data == "digits28" else s.text_labels) for seed in s.seeds]
    if smoke:  # tiny trainings: not worth interpreters importing torch
        states, scratch = [pretrained(job) for job in pre_jobs], [from_scratch(job) for job in scratch_jobs]
    else:
        with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as ex:
            pre, scr = ex.map(pretrained, pre_jobs), ex.map(from_scratch, scratch_jobs)
            states, scratch = list(pre), list(scr)
    with one_thread():
        return measure(s, dict(zip([job[:3] for job in pre_jobs], states)),
                       dict(zip([job[:4] for job in scratch_jobs], scratch)))


def measure(s: Size, backbones: dict, scratch: dict) -> dict:
    """The frozen backbones' heads on the same labels as the models from scratch, and the timings."""
    import torch

    from aal_rpc.frozen import EmbeddingCache, backbone_fingerprint, embed_rows, head_probabilities
    from aal_rpc.training import RECIPE, predict_proba, probability_metrics, train

    recipe = replace(RECIPE, min_steps=s.min_steps, epochs=s.epochs)
    out_rows, timing = [], []
    for data, model_name in DATA:
        x_pool, y_pool, x_test, y_test = loaded(data, s)
        classes = int(max(y_pool.max(), y_test.max())) + 1
        states = {which: backbones[data, model_name, which] for which in BACKBONES}
        test_emb = {which: embed_rows(fresh(model_name, x_pool.shape[1:], classes, 0, st), x_test)
                    for which, st in states.items()}
        pool_emb = {which: embed_rows(fresh(model_name, x_pool.shape[1:], classes, 0, st), x_pool)
                    for which, st in states.items()}
        scratch_round = {}  # labels -> seconds of the first seed's round from scratch (train, then evaluate)
        for n in (s.image_labels if data == "digits28" else s.text_labels):
            acc: dict[str, list[float]] = {"scratch": [], **{w: [] for w in BACKBONES}}
            for seed in s.seeds:
                rows = labeled_rows(y_pool, n, seed)
                accuracy, seconds = scratch[data, model_name, n, seed]
                acc["scratch"].append(accuracy)
                scratch_round.setdefault(n, seconds)
                for which, state in states.items():
                    head = fresh(model_name, x_pool.shape[1:], classes, seed, state).head
                    train(head, pool_emb[which][rows], y_pool[rows], **recipe.kwargs(), seed=seed)
                    acc[which].append(probability_metrics(head_probabilities(head, test_emb[which]),
                                                          y_test)["accuracy"])
            row = {"data": data, "model": model_name, "labels": n, "seeds": len(s.seeds)}
            for key, values in acc.items():
                mean, half, _ = mean_ci(values)
                row[key] = {"accuracy": values, "mean": mean, "ci": half}
            out_rows.append(row)

        # a round on the largest labeled set (the first seed's labels): from scratch (timed above), frozen with a
        # cold cache, and a later frozen round
        n = max(scratch_round)
        rows = labeled_rows(y_pool, n, s.seeds[0])
        x, y = x_pool[rows], y_pool[rows]
        state = states["same classes"]
        frozen = fresh(model_name, x_pool.shape[1:], classes, 0, state)
        cache, fingerprint = EmbeddingCache(), backbone_fingerprint(frozen)

        def frozen_round(labeled: int) -> float:
            t = time.perf_counter()
            emb = cache.rows(fingerprint, "L", x[:labeled], lambda r: embed_rows(frozen, r))
            train(frozen.head, emb, y[:labeled], **recipe.kwargs(), seed=0)
            test = cache.rows(fingerprint, "test", x_test, lambda r: embed_rows(frozen, r))
            probability_metrics(head_probabilities(frozen.head, test), y_test)
            return time.perf_counter() - t

        cold = frozen_round(max(1, n * 5 // 6))  # L before the last growth of a fifth
        warm = frozen_round(n)

        # scoring: a full pass over the pool against the head on its cached embeddings
        reps = -(-s.score_items // len(x_pool))
        pool = np.concatenate([x_pool] * reps)[:s.score_items]
        t0 = time.perf_counter()
        predict_proba(frozen, pool)
        full_pass = time.perf_counter() - t0
        emb = embed_rows(frozen, pool)
        t0 = time.perf_counter()
        head_probabilities(frozen.head, emb)
        cached = time.perf_counter() - t0
        timing.append({"data": data, "model": model_name, "labels": n, "test_items": len(x_test),
                       "recipe_steps": max(recipe.min_steps, recipe.epochs * -(-n // recipe.batch_size)),
                       "scratch_round_seconds": scratch_round[n], "frozen_cold_round_seconds": cold,
                       "frozen_cached_round_seconds": warm, "round_speedup": scratch_round[n] / max(warm, 1e-9),
                       "score_items": len(pool), "full_pass_items_per_second": len(pool) / max(full_pass, 1e-9),
                       "cached_items_per_second": len(pool) / max(cached, 1e-9),
                       "scoring_speedup": full_pass / max(cached, 1e-9)})
    return {"rows": out_rows, "timing": timing, "min_steps": s.min_steps, "epochs": s.epochs,
            "pretrain_steps": s.pretrain_steps, "threads": torch.get_num_threads()}


def _pm(d: dict) -> str:
    return plus_minus(d["mean"], d["ci"])


def rows(r: dict) -> list[str]:
    """The lines of the benchmark table."""
    out = []
    for row in r["rows"]:
        seeds = f"{row['seeds']} seed{'s' if row['seeds'] != 1 else ''}"
        for which in BACKBONES:
            out.append(f"| 19 | {row['data']} ({row['model']}), {row['labels']} random labels, {seeds}: frozen "
                       f"backbone pretrained on other data ({which}) + head | {_pm(row[which])} | from scratch, "
                       f"same labels {_pm(row['scratch'])} | gain {row[which]['mean'] - row['scratch']['mean']:+.3f} "
                       f"| – | – |")
    for t in r["timing"]:
        what = f"{t['data']} ({t['model']})"
        out += [f"| 19b | {what} round on {t['labels']} labels (train {t['recipe_steps']} steps, evaluate "
                f"{t['test_items']} items), frozen backbone, cached embeddings | "
                f"{t['frozen_cached_round_seconds']:.2f} s (cold cache {t['frozen_cold_round_seconds']:.2f} s) | "
                f"from scratch {t['scratch_round_seconds']:.2f} s | {t['round_speedup']:.0f}× | – | – |",
                f"| 19c | {what} scoring {t['score_items']} items, head on cached embeddings | "
                f"{t['cached_items_per_second']:,.0f} items/s | full pass "
                f"{t['full_pass_items_per_second']:,.0f} items/s | {t['scoring_speedup']:.0f}× | – | – |"]
    return out


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))

"""Issue 21, item 3: semi-supervised rounds (FixMatch) against supervised-only rounds on the same labels.

For each labeled-set size and seed, the same random labeled rows of the pool train two models from the same
initial weights with the servers' recipe (`training.RECIPE`): one on the labels alone, one that also learns from
the rest of the pool, unlabeled (`semi_supervised=True`, the pool's other rows as `unlabeled`, as a trainer
passes them). Both are scored on the held-out split. Reported: each one's mean accuracy with its 95% interval
over the seeds (`measures.mean_ci`), and the paired gain (semi-supervised minus supervised, seed by seed).

Data: `digits28` with `cnn` (1,348 pool items, 449 held out), and a generated text set with the `text` model
(four topics; about 30% of each sentence's words are its topic's, the rest filler words shared by all topics, so a
few labels leave most topic words unseen: the unlabeled pool is where the rest can be learned).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from aal_rpc.measures import mean_ci
from benchmarks.common import plus_minus

PROCESSES = 2  # one single-threaded training per core, as the servers train (--threads 1)
TEXT_TOPICS = {
    "cooking": "recipe oven flour butter sauce garlic bake onion salt pan dinner taste soup pepper grill".split(),
    "finance": "stock market bank interest loan price investor bond profit shares trade tax fund debt cash".split(),
    "space": ("rocket orbit planet star galaxy astronaut moon launch telescope comet nasa mars probe solar "
              "crater").split(),
    "sports": "goal match team player coach season league score referee stadium ball win cup final striker".split(),
}
TEXT_FILLER = ("the a of and to in is was it for on with as at by this that from very new some about after "
               "people said would could there their what when which".split())
TEXT_TOPIC_SHARE = 0.3  # the chance that a word of a sentence is one of its topic's words
TEXT_POOL, TEXT_TEST = 2000, 500


@dataclass(frozen=True)
class Size:
    image_labels: tuple[int, ...]
    text_labels: tuple[int, ...]
    seeds: tuple[int, ...]
    min_steps: int  # the recipe's least steps a round (600), or fewer for the smoke run
    epochs: int


FULL = Size(image_labels=(20, 50, 100, 200), text_labels=(8, 20, 40), seeds=(0, 1, 2), min_steps=600, epochs=40)
SMOKE = Size(image_labels=(20,), text_labels=(8,), seeds=(0,), min_steps=5, epochs=1)


def text_dataset(seed: int = 21):
    """A generated four-topic text set: (x_pool, y_pool, x_test, y_test) as hashed n-grams (data/text.py)."""
    from aal_rpc.data.text import encode_texts

    rng = np.random.default_rng(seed)
    names = sorted(TEXT_TOPICS)
    texts, labels = [], []
    for _ in range(TEXT_POOL + TEXT_TEST):
        topic = int(rng.integers(len(names)))
        words = [rng.choice(TEXT_TOPICS[names[topic]]) if rng.random() < TEXT_TOPIC_SHARE else rng.choice(TEXT_FILLER)
                 for _ in range(rng.integers(8, 16))]
        texts.append(" ".join(words))
        labels.append(topic)
    x, y = encode_texts(texts), np.asarray(labels, dtype=np.int64)
    return x[:TEXT_POOL], y[:TEXT_POOL], x[TEXT_POOL:], y[TEXT_POOL:]


@functools.lru_cache(maxsize=None)
def load(data: str):
    """(x_pool, y_pool, x_test, y_test) of `digits28` or the generated text set, once a process."""
    if data == "text":
        return text_dataset()
    from aal_rpc.data import load_dataset

    ds = load_dataset(data)
    return ds.x_pool, ds.y_pool, ds.x_test, ds.y_test


def score(job: tuple) -> tuple[float, float]:
    """Held-out accuracy and training seconds of one model: (data, model, labels, seed, semi, size)."""
    import torch

    from aal_rpc.models import build_model
    from aal_rpc.training import RECIPE, evaluate, train

    data, model_name, n, seed, semi, size = job
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x_pool, y_pool, x_test, y_test = load(data)
        rows = np.random.default_rng(seed).choice(len(x_pool), n, replace=False)  # the same labels for both
        rest = np.setdiff1d(np.arange(len(x_pool)), rows)
        torch.manual_seed(seed)  # the same initial weights for both
        model = build_model(model_name, x_pool.shape[1:], int(max(y_pool.max(), y_test.max())) + 1)
        recipe = replace(RECIPE, epochs=size.epochs, min_steps=size.min_steps, semi_supervised=semi)
        t0 = time.perf_counter()
        train(model, x_pool[rows], y_pool[rows], **recipe.kwargs(), seed=seed, unlabeled=x_pool[rest])
        seconds = time.perf_counter() - t0
        return float(evaluate(model, x_test, y_test)["accuracy"]), seconds
    finally:
        torch.set_num_threads(threads)


def run(*, smoke: bool = False) -> dict:
    from aal_rpc.training import RECIPE

    s = SMOKE if smoke else FULL
    jobs = [(data, model, n, seed, semi, s)
            for data, model, sizes in (("digits28", "cnn", s.image_labels), ("text", "text", s.text_labels))
            for n in sizes for seed in s.seeds for semi in (False, True)]
    if smoke:  # two tiny trainings a dataset: not worth two interpreters importing torch
        scores = [score(job) for job in jobs]
    else:
        with ProcessPoolExecutor(PROCESSES, mp_context=multiprocessing.get_context("spawn")) as ex:
            scores = list(ex.map(score, jobs))
    by_job = {job[:5]: result for job, result in zip(jobs, scores)}
    rows_out = []
    for data, model, sizes in (("digits28", "cnn", s.image_labels), ("text", "text", s.text_labels)):
        for n in sizes:
            sup = [by_job[data, model, n, seed, False][0] for seed in s.seeds]
            semi = [by_job[data, model, n, seed, True][0] for seed in s.seeds]
            row = {"data": data, "model": model, "labels": n, "seeds": len(s.seeds), "supervised": sup,
                   "semi_supervised": semi,
                   "supervised_seconds": float(np.mean([by_job[data, model, n, k, False][1] for k in s.seeds])),
                   "semi_supervised_seconds": float(np.mean([by_job[data, model, n, k, True][1] for k in s.seeds]))}
            for key, values in (("supervised", sup), ("semi_supervised", semi),
                                ("gain", [b - a for a, b in zip(sup, semi)])):
                mean, half, _ = mean_ci(values)
                row[f"{key}_mean"], row[f"{key}_ci"] = mean, half
            rows_out.append(row)
    return {"rows": rows_out, "min_steps": s.min_steps, "epochs": s.epochs,
            "unlabeled_ratio": RECIPE.unlabeled_ratio, "threshold": RECIPE.threshold,
            "unlabeled_weight": RECIPE.unlabeled_weight}


def rows(r: dict) -> list[str]:
    """The lines of the benchmark table."""
    return [f"| 16 | {row['data']} ({row['model']}), {row['labels']} random labels, {row['seeds']} "
            f"seed{'s' if row['seeds'] != 1 else ''}: "
            f"semi-supervised (FixMatch, μ={r['unlabeled_ratio']}, τ={r['threshold']:g}) | "
            f"{plus_minus(row['semi_supervised_mean'], row['semi_supervised_ci'])} | supervised only, same labels "
            f"{plus_minus(row['supervised_mean'], row['supervised_ci'])} | "
            f"gain {plus_minus(row['gain_mean'], row['gain_ci'])} | "
            f"– | – |" for row in r["rows"]]


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))

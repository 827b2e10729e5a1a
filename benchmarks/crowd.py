"""Issue 24: crowds. With two careless annotators among six, what accuracy do the same number of labels buy with one
label per item, with three, or with one plus adaptive re-labeling?

`aal-experiment` on `digits` (mlp), 1 server, 2 workers and 6 simulated annotators, four right with probability 0.9
and two with 0.3 (`--annotators 6 --annotator-accuracy 0.9,0.9,0.9,0.9,0.3,0.3`), at 0.5 s a label, to the same
label budgets (the budget counts labels, not items), over the same seeds, in three arms:

- `K=1`: one label per item (`--labels-per-item 1`), every worker `least_confidence`;
- `K=3`: three labels per item from three different annotators (`--labels-per-item 3`), every worker
  `least_confidence`; trainers learn each item's consensus label (Dawid–Skene, consensus.py);
- `adaptive`: one label per item, every worker `activelab` (`--strategies activelab --max-labels-per-item 3`): new
  items by least confidence, and one more label (up to 3) of a labeled item where its labels and the model leave it
  more uncertain than the best new item.

`least_confidence` for K=1 and K=3 because it is what `activelab` scores new items by: the arms differ only in how
labels are spread over items. Reported per arm and budget, with 95% intervals over the seeds (`measures.mean_ci`):
the accuracy of models retrained afresh on each item once with its consensus label (`retrained_accuracy`, what the
labels are worth) and of the run's last model (`final_accuracy`); from the run's labels.jsonl, the items labeled,
the labels re-labeling asked for, the share of items whose consensus label (Dawid–Skene over every label of L) is
the true one, and the annotators' estimated quality (consensus(...).annotators) for the careful and the careless.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aal_rpc.annotators.oracle import ID_PREFIX, accuracy_of
from aal_rpc.consensus import Votes, consensus
from aal_rpc.data import load_dataset
from aal_rpc.experiment import ExperimentConfig, run_experiment
from aal_rpc.measures import mean_ci
from benchmarks.common import plus_minus, seeds_stat, stat_pm

CROWD = (0.9, 0.9, 0.9, 0.9, 0.3, 0.3)  # annotator i answers the truth with probability CROWD[i]
CARELESS = 0.5  # an annotator given an accuracy below this is one of the careless
ARMS = {
    "K=1": dict(strategies=["least_confidence"], labels_per_item=1),
    "K=3": dict(strategies=["least_confidence"], labels_per_item=3),
    "adaptive": dict(strategies=["activelab"], labels_per_item=1, max_labels_per_item=3),
}
FIGURES = ("retrained_accuracy", "final_accuracy", "items", "relabels", "consensus_right", "labels_right",
           "careful_quality", "careless_quality")


@dataclass(frozen=True)
class Size:
    base: ExperimentConfig
    budgets: tuple[int, ...]
    seeds: tuple[int, ...]
    arms: tuple[str, ...]


FULL = Size(ExperimentConfig(dataset="digits", model="mlp", servers=1, workers=2, annotators=len(CROWD),
                             annotator_accuracy=CROWD, annotator_delay=0.5, eval_repeats=3),
            budgets=(150, 300), seeds=(0, 1, 2), arms=tuple(ARMS))
SMOKE = Size(ExperimentConfig(dataset="digits", model="mlp", servers=1, workers=2, annotators=len(CROWD),
                              annotator_accuracy=CROWD, batch_size=4, annotator_delay=0.05, epochs=2, min_steps=20,
                              eval_repeats=0),
             budgets=(12,), seeds=(0,), arms=("adaptive",))


@dataclass(frozen=True)
class _Vote:
    """A line of labels.jsonl as consensus.Votes reads it (the run exports L without superseded records)."""

    seq: int
    item_id: str
    label: int
    annotator_id: str
    supersedes: int = 0


@functools.lru_cache(maxsize=None)
def _dataset(name: str):
    return load_dataset(name)


def label_quality(labels_jsonl: Path, cfg: ExperimentConfig) -> dict:
    """From a run's labels.jsonl: items labeled, labels asked for by re-labeling, the share of labels and of items'
    consensus labels that are true, and the mean estimated quality of the careful and of the careless annotators
    (nan where the consensus has nothing to judge them by: no item with two labels)."""
    lines = [json.loads(line) for line in labels_jsonl.read_text().splitlines() if line.strip()]
    ds = _dataset(cfg.dataset)
    truth = {r["item_id"]: int(ds.y_pool[ds.index_of(r["item_id"])]) for r in lines}
    votes = Votes()
    votes.extend(_Vote(r["seq"], r["item_id"], r["label"], r["annotator_id"]) for r in lines)
    agreed = consensus(votes, ds.num_classes)
    given = {f"{ID_PREFIX}-{i}": accuracy_of(cfg.annotator_accuracy, i) for i in range(cfg.annotators)}
    quality = {careless: [q.quality for a, q in agreed.annotators.items() if (given[a] < CARELESS) == careless]
               for careless in (False, True)}
    mean = lambda xs: float(np.mean(xs)) if xs and not np.isnan(xs).any() else float("nan")  # noqa: E731
    return {
        "items": len(agreed.items),
        "relabels": sum(r["strategy"] == "relabel" for r in lines),
        "consensus_right": float(np.mean([c.label == truth[i] for i, c in agreed.items.items()])),
        "labels_right": float(np.mean([r["label"] == truth[r["item_id"]] for r in lines])),
        "careful_quality": mean(quality[False]),
        "careless_quality": mean(quality[True]),
        "consensus_method": agreed.method,
    }


def one_run(cfg: ExperimentConfig) -> dict:
    summary = run_experiment(cfg, progress=False)
    return {"retrained_accuracy": summary["retrained_accuracy"], "final_accuracy": summary["final_accuracy"],
            "labels": summary["labels"], "cold_start_share": summary["cold_start_share"],
            "seconds": summary["seconds"], **label_quality(Path(cfg.out) / "labels.jsonl", cfg)}


def run(*, smoke: bool = False) -> dict:
    s = SMOKE if smoke else FULL
    rows = []
    with tempfile.TemporaryDirectory(prefix="aal-crowd-") as tmp:
        for budget in s.budgets:
            for arm in s.arms:
                runs = []
                for seed in s.seeds:
                    cfg = replace(s.base, budget=budget, seed=seed, out=f"{tmp}/{arm}-{budget}-{seed}", **ARMS[arm])
                    runs.append(one_run(cfg))
                    print(f"crowd: {arm}, {budget} labels, seed {seed}: retrained {runs[-1]['retrained_accuracy']}, "
                          f"{runs[-1]['items']} items, {runs[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
                row = {"arm": arm, "budget": budget, "seeds": list(s.seeds), "runs": runs}
                for key in FIGURES:
                    values = [r[key] for r in runs if r[key] is not None and r[key] == r[key]]
                    row[key] = seeds_stat(values)
                rows.append(row)
    return {"dataset": s.base.dataset, "model": s.base.model, "annotator_accuracy": list(CROWD),
            "annotator_delay": s.base.annotator_delay, "servers": s.base.servers, "workers": s.base.workers,
            "eval_repeats": s.base.eval_repeats, "rows": rows}


def rows(r: dict) -> list[str]:
    """The lines of the benchmark table: each arm against K=1 at the same budget."""
    k1 = {row["budget"]: row for row in r["rows"] if row["arm"] == "K=1"}
    out = []
    for row in r["rows"]:
        base = k1.get(row["budget"])
        compare = base is not None and row is not base and base["retrained_accuracy"]["n"] and \
            row["retrained_accuracy"]["n"]
        ratio = f"{row['retrained_accuracy']['mean'] / base['retrained_accuracy']['mean']:.3f}" if compare else "–"
        out.append(f"| 20 | {r['dataset']} ({r['model']}), crowd of {len(r['annotator_accuracy'])} (two at 0.3), "
                   f"{row['budget']} labels, {len(row['seeds'])} seed{'s' if len(row['seeds']) != 1 else ''}: "
                   f"{row['arm']} | retrained {stat_pm(row['retrained_accuracy'])}, "
                   f"{stat_pm(row['items'], digits=0)} items, "
                   f"consensus right {stat_pm(row['consensus_right'], 100, 0)}% | "
                   f"{'K=1, retrained ' + stat_pm(base['retrained_accuracy']) if compare else '–'} | {ratio} | – | "
                   "– |")
    return out


def section(r: dict) -> str:
    """The table of docs/RESULTS.md's crowd section."""
    lines = ["| budget (labels) | arm | retrained accuracy | final model | items | re-labels | consensus right | "
             "est. quality, careful (0.9) | est. quality, careless (0.3) |", "|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['budget']} | {row['arm']} | {stat_pm(row['retrained_accuracy'])} | "
                     f"{stat_pm(row['final_accuracy'])} | {stat_pm(row['items'], digits=0)} | "
                     f"{stat_pm(row['relabels'], digits=0)} | "
                     f"{stat_pm(row['consensus_right'], 100, 1)}% | {stat_pm(row['careful_quality'], digits=2)} | "
                     f"{stat_pm(row['careless_quality'], digits=2)} |")
    lines += ["", "Each arm against K=1, seed by seed (a seed gives every arm the same annotators' luck: about the "
              "same share of right labels):", "",
              "| budget (labels) | arm | retrained: arm − K=1 | final model: arm − K=1 |", "|---|---|---|---|"]
    k1 = {row["budget"]: row for row in r["rows"] if row["arm"] == "K=1"}
    for row in r["rows"]:
        base = k1.get(row["budget"])
        if base is None or row is base or row["seeds"] != base["seeds"]:
            continue
        diffs = {key: mean_ci([None if a[key] is None or b[key] is None else a[key] - b[key]
                               for a, b in zip(row["runs"], base["runs"])])
                 for key in ("retrained_accuracy", "final_accuracy")}
        lines.append(f"| {row['budget']} | {row['arm']} | "
                     + " | ".join(plus_minus(m, h) if n else "–" for m, h, n in diffs.values()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1:  # python -m benchmarks.crowd OUT/results.json: the RESULTS.md table of an earlier run
        print(section(json.loads(Path(sys.argv[1]).read_text())["benchmarks"]["crowd"]))
    else:
        print(json.dumps(run(), indent=1))

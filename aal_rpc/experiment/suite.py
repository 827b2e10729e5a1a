"""The experiment suite: the seed paper's studies (§4, Figures 2-4, Table 1) plus Cluster-Margin at growing
batch sizes, run on the real system (each run is a full `aal-experiment`), with repeated seeds.

Studies:
  (a) sync vs async, for entropy / least confidence / margin at three batch sizes  -> Figure 3 scatter
  (b) mean annotator wait, sync vs async, by batch size                             -> Figure 4 bars
  (c) 1, 2 and 4 servers for entropy, least confidence, margin and the AAL mix      -> Table 1
  (d) cluster_margin vs margin vs random at growing batch sizes (sync batch mode)   -> labels to a target
  (e) accuracy curves of every method with one server                               -> Figure 2
  (f) sync vs async again, where each training round takes seconds (--min-steps)    -> wait ratio and accuracy

Runs are resumable: a run whose summary.json exists with the same configuration is not run again. Runs of
different studies with the same configuration (study a's async runs at the first batch size and study c's
single-server runs) are run once and reported in both.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from aal_rpc.experiment.runner import ExperimentConfig, run_experiment

AAL_MIX = "entropy,least_confidence,margin"
UNCERTAINTY = ("entropy", "least_confidence", "margin")


@dataclass(frozen=True)
class Scale:
    dataset: str
    model: str
    budget: int
    batch_sizes: tuple[int, ...]  # study (a)/(b)
    cm_batch_sizes: tuple[int, ...]  # study (d)
    cm_budget: int
    workers: int
    annotators: int
    annotator_delay: float
    epochs: int
    device: str
    target_accuracy: float  # study (d): labels needed to reach this
    slow_min_steps: int  # study (f): optimizer steps per training round, so that a round takes seconds
    slow_batch_sizes: tuple[int, ...]  # study (f)
    slow_annotator_delay: float  # study (f): seconds per label, as slow as people, so a model serves ~a batch
    slow_budget: int  # study (f)
    slow_seeds: int = 0  # study (f), the headline claim, runs at least this many seeds (it is the noisiest)


SCALES = {
    # The embedded digits data on 2 CPU cores: 96 runs (90 distinct) with 2 seeds (4 in study f), about 28 minutes.
    "small": Scale(dataset="digits", model="cnn", budget=150, batch_sizes=(10, 25, 50), cm_batch_sizes=(25, 50, 100),
                   cm_budget=200, workers=3, annotators=8, annotator_delay=0.2, epochs=15, device="cpu",
                   target_accuracy=0.90, slow_min_steps=200, slow_batch_sizes=(10, 20), slow_annotator_delay=1.0,
                   slow_budget=100, slow_seeds=4),
    # The paper's setting (CIFAR-10 / VGG-16, 10 workers, batch sizes 1000-5000); needs a GPU and CIFAR-10's
    # binary version (cifar-10-binary.tar.gz) unpacked under data/cifar10.
    "paper": Scale(dataset="cifar10:data/cifar10", model="vgg16", budget=20000, batch_sizes=(1000, 2500, 5000),
                   cm_batch_sizes=(1000, 2500, 5000), cm_budget=20000, workers=10, annotators=64,
                   annotator_delay=1.0, epochs=20, device="cuda", target_accuracy=0.75, slow_min_steps=0,
                   slow_batch_sizes=(), slow_annotator_delay=1.0, slow_budget=0),
}


@dataclass(frozen=True)
class Run:
    study: str
    key: dict  # what distinguishes this run within its study
    config: ExperimentConfig

    @property
    def run_id(self) -> str:
        return self.study + "-" + "-".join(f"{k}={v}" for k, v in self.key.items()).replace(",", "+")


def plan(scale: Scale, *, seeds: int, out: Path, dataset: str | None = None) -> list[Run]:
    base = ExperimentConfig(dataset=dataset or scale.dataset, model=scale.model, workers=scale.workers,
                            annotators=scale.annotators, budget=scale.budget, annotator_delay=scale.annotator_delay,
                            epochs=scale.epochs, device=scale.device, threads=1)
    runs: list[Run] = []
    for seed in range(max(seeds, scale.slow_seeds)):
        every_study = seed < seeds  # the seeds beyond --seeds are study (f)'s alone
        for strategy in UNCERTAINTY if every_study else ():
            for b in scale.batch_sizes:
                for mode in ("sync", "async"):
                    runs.append(Run("a", {"strategy": strategy, "batch": b, "mode": mode, "seed": seed}, replace(
                        base, mode=mode, servers=1, strategies=[strategy], batch_size=b, seed=seed)))
        for method in (*UNCERTAINTY, "aal") if every_study else ():
            strategies = AAL_MIX.split(",") if method == "aal" else [method]
            for servers in (1, 2, 4):
                runs.append(Run("c", {"method": method, "servers": servers, "seed": seed}, replace(
                    base, servers=servers, strategies=strategies, assign="random" if method == "aal" else "round-robin",
                    batch_size=scale.batch_sizes[0], seed=seed)))
        for b in scale.slow_batch_sizes:
            for mode in ("sync", "async"):
                runs.append(Run("f", {"strategy": "entropy", "batch": b, "mode": mode, "seed": seed}, replace(
                    base, mode=mode, servers=1, strategies=["entropy"], batch_size=b, min_steps=scale.slow_min_steps,
                    annotator_delay=scale.slow_annotator_delay, budget=scale.slow_budget, seed=seed)))
        if not every_study:
            continue
        runs.append(Run("e", {"method": "random", "servers": 1, "seed": seed}, replace(
            base, servers=1, strategies=["random"], batch_size=scale.batch_sizes[0], seed=seed)))
        for method in ("cluster_margin", "margin", "random"):
            for b in scale.cm_batch_sizes:
                runs.append(Run("d", {"method": method, "batch": b, "seed": seed}, replace(
                    base, mode="sync", servers=1, strategies=[method], batch_size=b, budget=scale.cm_budget,
                    seed=seed)))
    return [replace(r, config=replace(r.config, out=str(out / "runs" / r.run_id))) for r in runs]


def run_suite(scale_name: str, *, seeds: int, out: Path, dataset: str | None = None, report: Path | None = None,
              notes: Path | None = None, progress=print) -> dict:
    scale = SCALES[scale_name]
    runs = plan(scale, seeds=seeds, out=out, dataset=dataset)
    results = []
    t0 = time.time()
    by_config: dict[str, dict] = {}  # the same experiment in two studies runs once
    for i, run in enumerate(runs, 1):
        summary_path = Path(run.config.out) / "summary.json"
        same = json.dumps({**asdict(run.config), "out": None}, sort_keys=True)
        summary = by_config.get(same)
        shared = summary is not None
        if summary is None and summary_path.exists():
            old = json.loads(summary_path.read_text())
            if old.get("config") == asdict(run.config):
                summary = old
        if summary is None:
            summary = run_experiment(run.config, progress=False)
        by_config[same] = summary
        results.append({"study": run.study, **run.key, "final_accuracy": summary["final_accuracy"],
                        "retrained_accuracy": summary.get("retrained_accuracy"),
                        "wait_mean": summary["wait_seconds"]["mean"], "wait_p99": summary["wait_seconds"]["p99"],
                        "curve": summary["curve"], "labels": summary["labels"],
                        "labels_by_strategy": summary["labels_by_strategy"],
                        "seconds": 0.0 if shared else summary["seconds"]})
        progress(f"[{i}/{len(runs)}] {run.run_id}: accuracy {summary['final_accuracy']:.4f} "
                 f"(retrained {summary.get('retrained_accuracy') or float('nan'):.4f}), "
                 f"mean wait {summary['wait_seconds']['mean'] * 1000:.1f} ms ({time.time() - t0:.0f}s elapsed)")
    # the runs' own durations, so a resumed suite reports what the whole suite costs, not this call
    doc = {"scale": scale_name, "scale_config": asdict(scale), "seeds": seeds, "results": results,
           "seconds": sum(r["seconds"] for r in results), "this_call_seconds": time.time() - t0}
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(doc, indent=1))
    from aal_rpc.experiment.report import write_report

    write_report(doc, out_md=report or out / "RESULTS.md", figures_dir=(report.parent if report else out) / "figures",
                 notes=notes)
    return doc


def accuracy_at(curve: list[dict], labels: int) -> float:
    """Accuracy of the best-informed model published with at most `labels` labels (0 before any)."""
    known = [p for p in curve if p["labels"] <= labels and p["accuracy"] is not None]
    if not known:
        return 0.0
    best = max(known, key=lambda p: (p["labels"], p["seconds"]))
    return float(best["accuracy"])


def curve_average(curve: list[dict], budget: int, points: int = 10) -> float:
    """Mean accuracy over the curve at `points` evenly spaced label counts (Table 1's "average performance")."""
    return float(np.mean([accuracy_at(curve, round(budget * i / points)) for i in range(1, points + 1)]))


def labels_per_model(curve: list[dict]) -> float:
    """Mean labels that arrived between one published model and the next: the batch size in sync mode; in async
    mode, how many labels each model chose (its staleness)."""
    labels = sorted(p["labels"] for p in curve)
    return float(np.mean(np.diff(labels))) if len(labels) > 1 else float("nan")


def labels_to_reach(curve: list[dict], target: float) -> int | None:
    hits = [p["labels"] for p in curve if p["accuracy"] is not None and p["accuracy"] >= target]
    return min(hits) if hits else None

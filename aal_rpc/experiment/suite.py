"""The experiment suite: the seed paper's studies (§4, Figures 2-4, Table 1), Cluster-Margin at growing batch
sizes, and the annotator-pace regimes, run on the real system (each run is a full `aal-experiment`, training
with the servers' recipe), with repeated seeds.

Studies:
  (a) sync vs async, for entropy / least confidence / margin at three batch sizes  -> Figure 3 scatter
  (b) mean annotator wait, sync vs async, by batch size (from study a's runs)       -> Figure 4 bars
  (c) 1, 2 and 4 servers for entropy, least confidence, margin and the AAL mix      -> Table 1
  (d) cluster_margin vs margin vs random at growing batch sizes (sync batch mode)   -> labels to a target
  (e) accuracy curves of every method with one server                               -> Figure 2
  (f) sync vs async in three regimes: annotators slower than training (people's pace), about as fast, and
      so fast that the budget is spent before the first model exists                -> accuracy, labels per model,
                                                                                       cold-start share, waits
  (g) every strategy at people's pace (about a batch per training round), async: labels needed to reach a target
      accuracy (Cluster-Margin's measure)

Runs are resumable: a run whose summary.json exists with the same configuration is not run again. Runs of
different studies with the same configuration (study a's async runs at the first batch size and study c's
single-server runs; study f's async runs at study g's pace and study g's runs of that strategy) run once and
are reported in both.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from aal_rpc.experiment.report import write_report
from aal_rpc.experiment.runner import ExperimentConfig, run_experiment

AAL_MIX = "entropy,least_confidence,margin"
UNCERTAINTY = ("entropy", "least_confidence", "margin")
STUDIES = ("a", "c", "d", "e", "f", "g")  # (b) is drawn from (a)'s runs
STRATEGY_METHODS = ("random", "entropy", "least_confidence", "margin", "aal", "cluster_margin")  # study (g)
# Every study runs in each arm, so the effect of what makes a system active from the first minute is measured:
# "with" is rounds as long as the labels' pace allows, the cold start's typical picks and semi-supervised rounds;
# "without" is full rounds, random cold-start picks and rounds on the labels alone.
ARMS: dict[str, dict[str, Any]] = {"with": {"paced": True, "cold_start": "typical", "semi_supervised": True},
        "without": {"paced": False, "cold_start": "random", "semi_supervised": False}}
# the ablation: each of items 1-3 alone on top of "without"; "typical" picks typical items of the untrained
# network's embedding, "pretrained" of the encoder the first server pretrains on the pool (item 2 whole)
ARMS.update({"paced": {**ARMS["without"], "paced": True}, "typical": {**ARMS["without"], "cold_start": "typical"},
             "pretrained": {**ARMS["without"], "cold_start": "typical", "pretrain_steps": 300},
             "semi": {**ARMS["without"], "semi_supervised": True}})


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
    device: str
    target_accuracy: float  # study (d): labels needed to reach this
    # study (f)/(g): one server, one batch size; each regime is a mean labeling time (seconds per label per
    # annotator) chosen against this machine's training round, so that labels arrive slower than a batch per
    # round, about a batch per round, or all before the first round ends (the report shows what they measured)
    regimes: tuple[tuple[str, float], ...] = ()
    regime_budget: int = 0
    regime_batch: int = 0
    regime_annotators: int = 0
    regime_strategy: str = "margin"
    regime_seeds: int = 0  # study (f) runs at least this many seeds, whatever --seeds says
    strategy_regime: str = "equal"  # study (g)'s pace: people at 3 s a label, each model choosing about a batch


SCALES = {
    # The embedded digits data on 2 CPU cores, with the servers' recipe: a round is ~3.3 s of an idle core, 4-12 s
    # on this shared machine, against 4 annotators labeling 0.67, 1.3 or 200 items a second in the three regimes.
    # Studies f and g (docs/RESULTS.md): 5 seeds in study f, 3 in g, about 100 minutes of runs.
    "small": Scale(dataset="digits", model="cnn", budget=150, batch_sizes=(10, 25, 50), cm_batch_sizes=(25, 50, 100),
                   cm_budget=200, workers=3, annotators=8, annotator_delay=0.2, device="cpu", target_accuracy=0.90,
                   regimes=(("slower", 6.0), ("equal", 3.0), ("faster", 0.02)), regime_budget=80, regime_batch=10,
                   regime_annotators=4, regime_seeds=5),
    # Table 1 (study c) and the curves (e) at people's pace on this machine: 4 annotators at 1.5 s a label, so that
    # models trained on labels choose most of the 100 (at "small"'s pace the budget is spent before any exists).
    "table1": Scale(dataset="digits", model="cnn", budget=100, batch_sizes=(10,), cm_batch_sizes=(25,),
                    cm_budget=100, workers=3, annotators=4, annotator_delay=1.5, device="cpu", target_accuracy=0.85),
    # The paper's setting (CIFAR-10 / VGG-16, 10 workers, batch sizes 1000-5000); needs a GPU and CIFAR-10's
    # binary version (cifar-10-binary.tar.gz) unpacked under data/cifar10.
    "paper": Scale(dataset="cifar10:data/cifar10", model="vgg16", budget=20000, batch_sizes=(1000, 2500, 5000),
                   cm_batch_sizes=(1000, 2500, 5000), cm_budget=20000, workers=10, annotators=64,
                   annotator_delay=1.0, device="cuda", target_accuracy=0.75),
}


@dataclass(frozen=True)
class Run:
    study: str
    key: dict  # what distinguishes this run within its study
    config: ExperimentConfig

    @property
    def run_id(self) -> str:
        return self.study + "-" + "-".join(f"{k}={v}" for k, v in self.key.items()).replace(",", "+")


def plan(scale: Scale, *, seeds: int, out: Path, dataset: str | None = None,
         studies: tuple[str, ...] = STUDIES, arms: tuple[str, ...] = ("with",),
         eval_repeats: int = ExperimentConfig.eval_repeats) -> list[Run]:
    """Every run of the chosen `studies`, seed by seed (a suite cut short has whole seeds of every study), each in
    every one of `arms` (ARMS) one after the other."""
    base = ExperimentConfig(dataset=dataset or scale.dataset, model=scale.model, workers=scale.workers,
                            annotators=scale.annotators, budget=scale.budget, annotator_delay=scale.annotator_delay,
                            device=scale.device, threads=1, eval_repeats=eval_repeats)
    paced = replace(base, servers=1, batch_size=scale.regime_batch, annotators=scale.regime_annotators,
                    budget=scale.regime_budget, strategies=[scale.regime_strategy])
    runs: list[Run] = []
    for seed in range(max(seeds, scale.regime_seeds if "f" in studies else 0)):
        every_study = seed < seeds  # the seeds beyond --seeds are study (f)'s alone
        if "f" in studies:  # the middle regime last: a suite cut short has the two ends
            for regime, delay in sorted(scale.regimes, key=lambda r: r[0] == scale.strategy_regime):
                for mode in ("sync", "async"):
                    runs.append(Run("f", {"regime": regime, "mode": mode, "seed": seed}, replace(
                        paced, mode=mode, annotator_delay=delay, seed=seed)))
        if not every_study:
            continue
        if "g" in studies and scale.regimes:
            for method in STRATEGY_METHODS:
                runs.append(Run("g", {"method": method, "seed": seed}, replace(
                    paced, annotator_delay=dict(scale.regimes)[scale.strategy_regime], seed=seed,
                    strategies=AAL_MIX.split(",") if method == "aal" else [method])))
        if "a" in studies:
            for strategy in UNCERTAINTY:
                for b in scale.batch_sizes:
                    for mode in ("sync", "async"):
                        runs.append(Run("a", {"strategy": strategy, "batch": b, "mode": mode, "seed": seed}, replace(
                            base, mode=mode, servers=1, strategies=[strategy], batch_size=b, seed=seed)))
        if "c" in studies:
            for method in (*UNCERTAINTY, "aal"):
                strategies = AAL_MIX.split(",") if method == "aal" else [method]
                for servers in (1, 2, 4):
                    runs.append(Run("c", {"method": method, "servers": servers, "seed": seed}, replace(
                        base, servers=servers, strategies=strategies,
                        assign="random" if method == "aal" else "round-robin", batch_size=scale.batch_sizes[0],
                        seed=seed)))
        if "e" in studies:
            runs.append(Run("e", {"method": "random", "servers": 1, "seed": seed}, replace(
                base, servers=1, strategies=["random"], batch_size=scale.batch_sizes[0], seed=seed)))
        if "d" in studies:
            for method in ("cluster_margin", "margin", "random"):
                for b in scale.cm_batch_sizes:
                    runs.append(Run("d", {"method": method, "batch": b, "seed": seed}, replace(
                        base, mode="sync", servers=1, strategies=[method], batch_size=b, budget=scale.cm_budget,
                        seed=seed)))
    runs = [Run(r.study, {**r.key, "arm": arm}, replace(r.config, **ARMS[arm])) for r in runs for arm in arms]
    return [replace(r, config=replace(r.config, out=str(out / "runs" / r.run_id))) for r in runs]


def matching(runs: list[Run], where: dict[str, str]) -> list[Run]:
    """The runs whose key has every value of `where` (compared as text: {"servers": "1"} matches servers=1)."""
    return [r for r in runs if all(str(r.key.get(k)) == v for k, v in where.items())]


def run_suite(scale_name: str, *, seeds: int, out: Path, dataset: str | None = None, report: Path | None = None,
              notes: Path | None = None, studies: tuple[str, ...] = STUDIES, arms: tuple[str, ...] = ("with",),
              eval_repeats: int = ExperimentConfig.eval_repeats, run_missing: bool = True, from_seed: int = 0,
              where: dict[str, str] | None = None, progress=print) -> dict:
    """Run (or resume) the suite and write its report; `run_missing` False reports the runs already done;
    `from_seed`: only seeds from this one on (two processes can share a suite: one from seed 0, one from a later
    seed; runs found done are not run again); `where`: only the runs whose key has these values (as text; e.g.
    {"method": "aal", "servers": "1"})."""
    scale = SCALES[scale_name]
    runs = plan(scale, seeds=seeds, out=out, dataset=dataset, studies=studies, arms=arms, eval_repeats=eval_repeats)
    runs = [r for r in runs if r.key["seed"] >= from_seed]  # a second process may take the last seeds
    runs = matching(runs, where or {})
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
            if old.get("config") == json.loads(json.dumps(asdict(run.config))):  # as summary.json holds it
                summary = old
        if summary is None and not run_missing:
            continue
        if summary is None:
            summary = run_experiment(run.config, progress=False)
        by_config[same] = summary
        results.append({"study": run.study, **run.key, "final_accuracy": summary["final_accuracy"],
                        "retrained_accuracy": summary.get("retrained_accuracy"),
                        "wait_mean": summary["wait_seconds"]["mean"], "wait_p99": summary["wait_seconds"]["p99"],
                        "curve": summary["curve"], "labels": summary["labels"],
                        "labels_by_strategy": summary["labels_by_strategy"],
                        "labels_per_model": summary.get("labels_per_model"),
                        "cold_start_share": summary.get("cold_start_share"),
                        "typical_share": summary.get("typical_share"),
                        "annotation_seconds": summary.get("annotation_seconds"),
                        "seconds": 0.0 if shared else summary["seconds"]})
        progress(f"[{i}/{len(runs)}] {run.run_id}: accuracy {summary['final_accuracy'] or float('nan'):.4f} "
                 f"(retrained {summary.get('retrained_accuracy') or float('nan'):.4f}), "
                 f"mean wait {summary['wait_seconds']['mean'] * 1000:.1f} ms ({time.time() - t0:.0f}s elapsed)")
    # the runs' own durations, so a resumed suite reports what the whole suite costs, not this call
    doc = {"scale": scale_name, "scale_config": asdict(scale), "seeds": seeds, "studies": list(studies),
           "arms": {arm: ARMS[arm] for arm in arms},
           "training": {k: getattr(ExperimentConfig, k) for k in ("epochs", "min_steps", "warm_start")},
           "results": results, "seconds": sum(r["seconds"] for r in results), "this_call_seconds": time.time() - t0}
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(doc, indent=1))
    write_report(doc, out_md=report or out / "RESULTS.md", figures_dir=(report.parent if report else out) / "figures",
                 notes=notes)
    return doc

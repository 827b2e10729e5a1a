"""One experiment: the whole system on this machine as separate processes, run to a label budget.

It starts one coordinator, M servers, K workers (strategies assigned across them) and one aal-annotate
process with N simulated annotators (a crowd, careless members and several labels per item included);
follows progress through the admin API; waits for a model trained on every item labeled; then writes
summary.json, labels.jsonl (L as the run left it), accuracy.png and wait.png.
"""

from __future__ import annotations

import functools
import json
import random
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from aal_rpc.annotators.oracle import ID_PREFIX, accuracy_of, check_accuracies
from aal_rpc.client import CoordinatorClient
from aal_rpc.coordinator.rules import check_labels_per_item
from aal_rpc.measures import cold_start_share, labels_per_model, typical_share
from aal_rpc.experiment.plots import plot_accuracy, plot_waits
from aal_rpc.experiment.processes import ProcessGroup, command
from aal_rpc.selector import WorkerConfig
from aal_rpc.trainer import TrainerConfig
from aal_rpc.types import is_encoder

POLL_SECONDS = 0.5
FINAL_MODEL_TIMEOUT = 300.0  # seconds to wait, after the budget is spent, for a model trained on all of it
STARTUP_TIMEOUT = 120.0  # seconds for the workers to submit their first candidates
EVAL_SEED = 7_000_000  # retraining seeds, apart from the servers' (seed * 1000 + i + round)
RANDOM_CURVE_POINTS = 5  # budgets random sampling is scored at, for the demo's comparison


@dataclass
class ExperimentConfig:
    dataset: str = "digits"
    model: str = "cnn"
    mode: str = "async"  # or "sync": the classic loop from the same processes, for comparison
    servers: int = 2
    workers: int = 3
    strategies: list[str] = field(default_factory=lambda: ["entropy", "least_confidence", "margin"])
    assign: str = "round-robin"  # or "random" (seeded), as in the paper §4.1
    annotators: int = 8
    budget: int = 400
    batch_size: int = 20
    annotator_delay: float = 0.5
    # the crowd: annotator i answers the truth with probability annotator_accuracy[i % len] (none: always), and each
    # item is labeled by labels_per_item different annotators (the budget counts labels, not items)
    annotator_accuracy: tuple[float, ...] = ()
    labels_per_item: int = 1
    max_labels_per_item: int = 0  # adaptive re-labeling up to this many (aal-coordinator --max-labels-per-item)
    # the servers' training round, as aal-server runs it by default (the recipe, aal_rpc.training.RECIPE)
    epochs: int = TrainerConfig.epochs
    min_steps: int = TrainerConfig.min_steps  # optimizer steps per training round at least
    initial_labels: int = 0  # labels before the first model (0: one batch, like the sync loop's first round)
    pool_capacity: int = 0  # 0: 2 x workers x batch size
    pick: str = "fresh"
    warm_start: bool = TrainerConfig.warm_start
    paced: bool = TrainerConfig.paced  # rounds as long as the pace of labeling allows (trainer/pacing.py)
    pretrain_steps: int = TrainerConfig.pretrain_steps  # the first server pretrains an encoder this long (0: none)
    cold_start: str = WorkerConfig.cold_start  # the workers' picks before any model: "typical" or "random"
    semi_supervised: bool = TrainerConfig.semi_supervised  # rounds also learn from the pool's unlabeled items
    seed: int = 0
    eval_repeats: int = 3  # models trained afresh on the final labels, to score the labels themselves (0: none)
    threads: int = 1  # torch threads per process
    device: str = "cpu"  # torch device of the servers and workers
    out: str = "runs/experiment"

    def __post_init__(self):
        """ValueError for a crowd the run could not have: an accuracy outside [0, 1] or more of them than annotators
        (oracle.OracleAnnotators), labels per item the coordinator refuses (rules.check_labels_per_item: sync mode
        counts items), or more labels per item than annotators, which would leave every item waiting for one more
        annotator who never comes."""
        self.annotator_accuracy = check_accuracies(self.annotator_accuracy)
        if len(self.annotator_accuracy) > self.annotators:
            raise ValueError(f"{len(self.annotator_accuracy)} annotator accuracies for {self.annotators} annotators: "
                             "give at most one each")
        check_labels_per_item(self.labels_per_item, self.mode, self.max_labels_per_item)
        if self.labels_per_item > 1 and self.labels_per_item > self.annotators:
            raise ValueError(f"{self.labels_per_item} labels per item need as many annotators, not {self.annotators}")

    def worker_strategies(self) -> list[str]:
        if self.assign == "random":
            rng = random.Random(self.seed)
            return [rng.choice(self.strategies) for _ in range(self.workers)]
        return [self.strategies[j % len(self.strategies)] for j in range(self.workers)]

    def first_model_labels(self) -> int:
        return self.initial_labels or self.batch_size

    def capacity(self) -> int:
        return self.pool_capacity or 2 * self.workers * self.batch_size


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True) -> dict:
    out = Path(cfg.out)
    data_dir = out / "data"
    shutil.rmtree(data_dir, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("acks.jsonl", "waits.json", "labels.jsonl"):
        (out / stale).unlink(missing_ok=True)
    procs = ProcessGroup(out / "logs")
    running = functools.partial(check_running, procs)
    strategies = cfg.worker_strategies()
    t0 = time.time()
    try:
        _, address = procs.start_coordinator("coordinator", [
            "--data-dir", data_dir, "--dataset", cfg.dataset, "--model", cfg.model, "--mode", cfg.mode,
            "--batch-size", cfg.batch_size, "--labels-per-item", cfg.labels_per_item,
            "--max-labels-per-item", cfg.max_labels_per_item,
            "--pool-capacity", cfg.capacity(), "--pick", cfg.pick, "--seed", cfg.seed])
        for i in range(cfg.servers):
            procs.start(f"server-{i}", command(
                "server", "--coordinator", address, "--server-id", f"server-{i}", "--epochs", cfg.epochs,
                "--min-steps", cfg.min_steps, "--min-labels", cfg.first_model_labels(),
                "--seed", cfg.seed * 1000 + i, "--threads", cfg.threads, "--device", cfg.device,
                "--warm-start" if cfg.warm_start else "--from-scratch",
                "--paced-rounds" if cfg.paced else "--full-rounds",
                "--pretrain-steps", cfg.pretrain_steps if i == 0 else 0,
                "--semi-supervised" if cfg.semi_supervised else "--supervised-only"))
        for j, strategy in enumerate(strategies):
            procs.start(f"worker-{j}", command(
                "worker", "--coordinator", address, "--worker-id", f"worker-{j}", "--shard-index", j,
                "--num-shards", cfg.workers, "--strategy", strategy, "--batch-size", cfg.batch_size,
                "--cold-start", cfg.cold_start,
                "--seed", cfg.seed * 1000 + j, "--threads", cfg.threads, "--device", cfg.device))
        with CoordinatorClient(address, retry_for=30.0) as client:
            _wait_until_serving(client, cfg.batch_size, running)
        annotate = procs.start("annotate", command(
            "annotate", "--coordinator", address, "--oracle", "--annotators", cfg.annotators, "--budget", cfg.budget,
            "--delay", cfg.annotator_delay, "--accuracy", ",".join(map(str, cfg.annotator_accuracy)),
            "--seed", cfg.seed, "--json", "--waits-file", out / "waits.json",
            "--acks-file", out / "acks.jsonl"), capture_stdout=True)

        with CoordinatorClient(address, retry_for=30.0) as client:
            _follow_progress(client, annotate, cfg, progress, running)
            assert annotate.stdout is not None  # capture_stdout=True
            annotate_summary = json.loads(annotate.stdout.read().decode().strip().splitlines()[-1])
            procs.stop("annotate")
            # a trainer learns each item once (with several labels per item, under one label: their consensus), so a
            # model on all of L has as many labels as L has items: the budget with one label per item, about a K-th
            # of it with K
            final = _wait_for_final_model(client, client.stats().labeled, running)
            models = client.models()
            stats = client.stats()
            records = list(client.export(include_payload=cfg.eval_repeats > 0, latest_only=True))
    finally:
        procs.stop_all()
    write_labels(records, out / "labels.jsonl")
    retrained = retrained_accuracies(cfg, records)
    random_curve = random_sampling_curve(cfg, len(records))

    curve = [{"labels": m.num_labels, "accuracy": m.metrics.get("accuracy"), "seconds": m.created_at - t0,
              "version": m.version, "server_id": m.server_id} for m in sorted(models, key=lambda m: m.created_at)]
    encoders = {m.version for m in models if is_encoder(m)}
    by_strategy: dict[str, int] = {}
    for r in records:
        by_strategy[r.provenance.strategy] = by_strategy.get(r.provenance.strategy, 0) + 1
    waits = json.loads((out / "waits.json").read_text())
    summary = {
        "final_accuracy": final.metrics.get("accuracy") if final else None,
        "final_model_version": final.version if final else None,
        "retrained_accuracy": float(np.mean(retrained)) if retrained else None,
        "retrained_accuracies": retrained,
        # random sampling's worth at the same budgets, trained the same way: what active learning must beat
        "random_curve": random_curve,
        "random_accuracy": random_curve[-1]["accuracy"] if random_curve else None,
        "labels": len(records),
        "acknowledged": annotate_summary["acknowledged"],
        "curve": curve,
        "wait_seconds": {k: annotate_summary["wait_seconds"][k] for k in ("mean", "p50", "p99")},
        "model_versions": len(models),
        "labels_by_strategy": by_strategy,
        # labels per model version published, and the share of labels chosen before any model trained on labels
        # existed (at random, or typical items of a pretrained encoder's embedding: typical_share, part of it)
        "labels_per_model": labels_per_model(len(records), max((m.version for m in models), default=0)),
        "cold_start_share": cold_start_share([r.provenance.model_version for r in records], encoders),
        "typical_share": typical_share([(r.provenance.strategy, r.provenance.model_version) for r in records],
                                       encoders),
        "annotation_seconds": annotate_summary["seconds"],
        "worker_strategies": strategies,
        "crowd": crowd_summary(cfg, records),
        "candidates_submitted": stats.candidates_submitted,
        "seconds": time.time() - t0,
        "config": asdict(cfg),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_accuracy(curve, out / "accuracy.png", title=f"{cfg.dataset} / {cfg.model}: accuracy against labels",
                  baseline=random_curve)
    plot_waits(waits, out / "wait.png", title=f"annotator wait ({cfg.annotators} annotators)")
    return summary


def write_labels(records: list, path: Path) -> None:
    """L as the run left it, one JSON line per record (no payload): who gave which item which label, and who chose
    it. With several labels per item, each label is its own line."""
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps({"seq": r.seq, "item_id": r.item_id, "label": r.label, "annotator_id": r.annotator_id,
                                "strategy": r.provenance.strategy, "model_version": r.provenance.model_version}) + "\n")


def crowd_summary(cfg: ExperimentConfig, records: list) -> dict:
    """What crowd a run had and how it fared: its labels per item and annotators' accuracies as configured; the items
    in L and those with all their labels; and per annotator, their labels, the accuracy they were given, and the
    share of their labels that match the dataset's truth (what the accuracy came to)."""
    from aal_rpc.data import load_dataset

    ds = load_dataset(cfg.dataset)
    per_item = Counter(r.item_id for r in records)
    labels: Counter[str] = Counter()
    true: Counter[str] = Counter()
    for r in records:
        labels[r.annotator_id] += 1
        true[r.annotator_id] += int(r.label == ds.y_pool[ds.index_of(r.item_id)])
    given = {f"{ID_PREFIX}-{i}": accuracy_of(cfg.annotator_accuracy, i) for i in range(cfg.annotators)}
    return {
        "labels_per_item": cfg.labels_per_item,
        "annotator_accuracy": list(cfg.annotator_accuracy),
        "items": len(per_item),
        "items_fully_labeled": sum(n >= cfg.labels_per_item for n in per_item.values()),
        "annotators": {a: {"labels": labels[a], "accuracy": given.get(a), "true_share": true[a] / labels[a]}
                       for a in sorted(labels)},
    }


def _train_and_score(cfg: ExperimentConfig, ds, x: np.ndarray, y: np.ndarray, seeds: list[int]) -> list[float]:
    """Held-out accuracy of one model per seed trained from scratch on (x, y) with a server's first round."""
    import torch

    from aal_rpc.models import build_model
    from aal_rpc.training import RECIPE, evaluate, train

    recipe = replace(RECIPE, epochs=cfg.epochs, min_steps=cfg.min_steps)  # a server's round from scratch
    accuracies = []
    # the servers' threads: torch's default (every core) turns small batches on a shared CPU into minutes of
    # threads waiting on each other
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        for seed in seeds:
            torch.manual_seed(seed)
            model = build_model(cfg.model, ds.input_shape, ds.num_classes)
            train(model, x, y, **recipe.kwargs(), seed=seed, device=cfg.device)
            accuracies.append(evaluate(model, ds.x_test, ds.y_test, device=cfg.device)["accuracy"])
    finally:
        torch.set_num_threads(threads)
    return accuracies


def random_sampling_curve(cfg: ExperimentConfig, budget: int, points: int = RANDOM_CURVE_POINTS) -> list[dict]:
    """Random sampling's accuracy at `points` budgets up to `budget`: nested uniform random subsets of the
    pool (seeded by `cfg.seed`), each scored like the run's labels (retrained_accuracies: the same recipe and
    seeds; the full budget with `cfg.eval_repeats` models, the smaller ones with one). [] without eval_repeats."""
    if cfg.eval_repeats == 0 or budget == 0:
        return []
    return [dict(p) for p in _random_curve(cfg.dataset, cfg.model, cfg.epochs, cfg.min_steps, cfg.threads,
                                           cfg.device, cfg.seed, cfg.eval_repeats, budget, points)]


@functools.lru_cache(maxsize=64)
def _random_curve(dataset: str, model: str, epochs: int, min_steps: int, threads: int, device: str, seed: int,
                  eval_repeats: int, budget: int, points: int) -> list[dict]:
    """random_sampling_curve's work, once per process for what it depends on (a suite's runs of one seed share
    it)."""
    from aal_rpc.data import load_dataset

    cfg = ExperimentConfig(dataset=dataset, model=model, epochs=epochs, min_steps=min_steps, threads=threads,
                           device=device, seed=seed, eval_repeats=eval_repeats)

    ds = load_dataset(cfg.dataset)
    order = np.random.default_rng(EVAL_SEED + cfg.seed).permutation(len(ds.y_pool))
    curve = []
    for i in range(1, points + 1):
        n = min(len(order), round(budget * i / points))
        repeats = cfg.eval_repeats if i == points else 1
        rows = order[:n]
        scores = _train_and_score(cfg, ds, ds.x_pool[rows], ds.y_pool[rows], _eval_seeds(cfg, repeats))
        curve.append({"labels": int(n), "accuracy": float(np.mean(scores))})
    return curve


def _eval_seeds(cfg: ExperimentConfig, repeats: int) -> list[int]:
    return [EVAL_SEED + 100 * cfg.seed + k for k in range(repeats)]


def retrained_accuracies(cfg: ExperimentConfig, records: list) -> list[float]:
    """Held-out accuracy of `cfg.eval_repeats` models trained from scratch on the labels the run chose, with
    the servers' recipe and seeds that depend only on `cfg.seed` (so a sync run and an async run of one seed
    are scored by the same trainings): what the chosen labels are worth. The final model's accuracy is one
    training run, and moves by 2-4 points between initialisations on a few hundred labels. Each item once, with its
    consensus label (consensus.py: a crowd's several labels of it, as the servers train on it)."""
    if cfg.eval_repeats == 0 or not records:
        return []
    from aal_rpc.consensus import Votes, consensus
    from aal_rpc.data import load_dataset

    ds = load_dataset(cfg.dataset)
    votes = Votes()
    votes.extend(records)
    agreed = consensus(votes, ds.num_classes).items
    first: dict = {}
    for r in records:
        first.setdefault(r.item_id, r)
    x = np.stack([r.payload.to_array() for r in first.values()])  # train() casts to what the model takes
    y = np.asarray([agreed[i].label for i in first], dtype=np.int64)
    return _train_and_score(cfg, ds, x, y, _eval_seeds(cfg, cfg.eval_repeats))


class ExperimentFailed(RuntimeError):
    """A run that cannot go on (every server, or every worker, exited)."""


def check_running(procs: ProcessGroup) -> None:
    """Raise ExperimentFailed once every server or every worker has exited: nothing would train or select any more,
    and the run would wait for a model or a query that never comes. The message quotes the first one's last log
    line (a model that fails its forward pass, say)."""
    for role in ("server", "worker"):
        names = [n for n in procs.procs if n.startswith(f"{role}-")]
        if names and all(procs.procs[n].poll() is not None for n in names):
            log = procs.log_dir / f"{names[0]}.log"
            lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
            raise ExperimentFailed(f"every {role} exited; {names[0]} said: {lines[-1] if lines else 'nothing'} "
                                   f"(logs in {procs.log_dir})")


def _wait_until_serving(client: CoordinatorClient, candidates: int, running) -> None:
    """Annotators arrive at a running system: wait until the workers have filled S with a first batch, so
    process start-up (seconds of imports) is not counted as annotator wait in either mode. `running()` (as in the
    two below) raises ExperimentFailed once the run cannot go on."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while client.stats().queued < candidates and time.monotonic() < deadline:
        running()
        time.sleep(0.2)


def _follow_progress(client: CoordinatorClient, annotate, cfg: ExperimentConfig, progress: bool, running) -> None:
    with tqdm(total=cfg.budget, desc="labels", unit="label", disable=not progress, dynamic_ncols=True,
              mininterval=1.0) as bar:
        while annotate.poll() is None:
            running()
            s = client.stats()
            bar.update(min(cfg.budget, s.last_seq) - bar.n)  # labels, not items (several labels per item)
            bar.set_postfix(model=f"v{s.latest_model_version}", queued=s.queued, leased=s.leased)
            try:
                annotate.wait(POLL_SECONDS)  # returns as soon as the annotators are done
            except subprocess.TimeoutExpired:
                pass
        bar.update(min(cfg.budget, client.stats().last_seq) - bar.n)
    if annotate.returncode != 0:
        raise RuntimeError(f"aal-annotate exited with {annotate.returncode}; see {cfg.out}/logs/annotate.log")


def _wait_for_final_model(client: CoordinatorClient, labels: int, running):
    """The latest model once one is trained on at least `labels` labels (None if none came in time)."""
    deadline = time.monotonic() + FINAL_MODEL_TIMEOUT
    seen = 0
    while time.monotonic() < deadline:
        running()
        m = client.latest_model(after_version=seen, wait_seconds=min(5.0, deadline - time.monotonic()))
        if m is not None:
            seen = m.version
            if m.num_labels >= labels:
                return m
    return None

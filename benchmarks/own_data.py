"""Issue 18: a team labels its own data, and what the audit says about the model against the truth.

The data is a flat folder of unlabeled pictures under opaque names: scikit-learn's bundled digits, each redrawn
at 28x28 under a random pose with noise (digits28's) and written as a 56x56 PNG, so the coordinator resizes
what people see in its original. ~300 more such files sit in a folder the system never sees. The ten classes are
declared in a file, in the team's order ("zero".."nine", not alphabetical), each with a description. The real
commands run as processes (aal-coordinator with its default 5% audit and no test set, aal-server, aal-worker
--strategy margin), and simulated people label through AnnotationClient at a person's pace; each knows a class
from the picture it is shown (the sha256 of the file's bytes, taken when the files were written), never from an
id. Reported, each against a baseline of the same run:

- time from the first label to the first model (baseline: that model's own training round), and the share of
  labels a model chose (`aal-admin stats --json`: label_origins, chosen_by_model_share);
- the audit's estimated accuracy {value, low, high, labels} of the final model against its TRUE accuracy on the
  held-out files (the model taken out with `aal-admin model --out` and run with aal_rpc.predict): the target is
  the truth within the 95% interval;
- random sampling at the same budget: models trained from scratch with the servers' recipe on as many uniformly
  random files, scored on the held-out files, against the final model and against models trained the same way
  (same recipe and seeds) on the labels the system chose: the points active learning gains.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import random
import subprocess
import tempfile
import threading
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.data.images import digits28_images, digits_arrays
from aal_rpc.experiment.processes import ProcessGroup, command
from aal_rpc.types import AUDIT_STRATEGY

CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")  # label = digit
DESCRIPTIONS = ("a closed loop, no stroke inside", "a single stroke, maybe with a flag at the top",
                "a curve on top, a flat stroke along the bottom", "two bumps open to the left",
                "an open or closed triangle on a vertical stroke", "a flat top, then a belly open to the left",
                "a loop at the bottom with a stroke rising from it", "a flat top and a long diagonal",
                "two loops, one above the other", "a loop at the top with a stroke falling from it")
HOLDOUT = 300  # files the system never sees: the truth the audit's estimate is checked against
INPUT_SIZE = 28  # the model's input (--input-size)
PICTURE_SIZE = 56  # the files themselves: larger than the input, as photos are
SEED = 18
STARTUP_TIMEOUT = 180.0  # seconds for the workers to fill S with their cold-start batch (torch imports on 2 cores)
LABELING_TIMEOUT = 600.0
FINAL_MODEL_TIMEOUT = 180.0  # after the budget: a model trained on every training label
LEASE_WAIT = 1.0  # seconds a person's lease long-polls before asking again
BASELINE_SEED = 7_000_000  # the baselines' training seeds, apart from the servers'
BASELINE_PROCESSES = 2  # trainings at once once the system is stopped: one a core on the 2-core machine


@dataclass(frozen=True)
class Scenario:
    budget: int  # labels the people give, audit ones included
    people: int
    delay: float  # a person's seconds per label, on average ...
    jitter: float  # ... uniformly within ± this
    servers: int
    workers: int
    epochs: int  # the servers' recipe (a first round; warm rounds take a quarter), and the baselines'
    min_steps: int
    min_labels: int  # the first model waits for an initial labeled set of this many labels
    seeds: int  # models trained afresh per baseline


FULL = Scenario(budget=300, people=3, delay=2.0, jitter=0.5, servers=2, workers=2, epochs=40, min_steps=200,
                min_labels=20, seeds=3)
SMOKE = Scenario(budget=40, people=4, delay=0.05, jitter=0.02, servers=1, workers=1, epochs=2, min_steps=10,
                 min_labels=8, seeds=1)


@dataclass
class Photos:
    pool: Path  # the team's flat folder
    holdout: Path  # never shown to the system
    by_sha256: dict[str, int]  # what a person knows: a pool picture's class from its bytes
    pool_class: dict[str, int]  # file name -> class, for the random baseline
    holdout_class: dict[str, int]


def write_photos(root: Path, seed: int = SEED) -> Photos:
    """Every bundled digit as a PNG under a uuid name, HOLDOUT of them in a folder of their own."""
    from PIL import Image

    images, target = digits_arrays()
    rng = np.random.default_rng(seed)
    x = digits28_images(images.astype(np.float32) / 16.0, rng)
    held = set(rng.permutation(len(x))[:HOLDOUT].tolist())
    photos = Photos(root / "photos", root / "held-out", {}, {}, {})
    photos.pool.mkdir(parents=True)
    photos.holdout.mkdir(parents=True)
    digests = []
    for i in range(len(x)):
        img = Image.fromarray(np.round(x[i] * 255).astype(np.uint8))
        buf = io.BytesIO()
        img.resize((PICTURE_SIZE, PICTURE_SIZE), Image.BILINEAR).save(buf, format="PNG")
        data = buf.getvalue()
        name = f"{uuid.UUID(bytes=rng.bytes(16), version=4).hex}.png"
        folder, classes = (photos.holdout, photos.holdout_class) if i in held else (photos.pool, photos.pool_class)
        (folder / name).write_bytes(data)
        classes[name] = int(target[i])
        digests.append(hashlib.sha256(data).hexdigest())
        if i not in held:  # a held-out picture shown to a person would be one nobody can name: counted, skipped
            photos.by_sha256[digests[-1]] = int(target[i])
    if len(set(digests)) != len(digests):  # the noise makes every file unique; a person could not tell two apart
        raise RuntimeError("two pictures with the same bytes")
    return photos


class People:
    """`n` people labeling through AnnotationClient until `budget` labels are given: lease, look for a while,
    submit the class they see."""

    def __init__(self, address: str, photos: Photos, s: Scenario):
        self.address, self.photos, self.s = address, photos, s
        self.lock = threading.Lock()
        self.claimed = 0
        self.given = 0
        self.unknown = 0  # pictures nobody could name (bytes not among the written files): skipped
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> float:
        threads = [threading.Thread(target=self._person, args=(k,), daemon=True) for k in range(self.s.people)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(LABELING_TIMEOUT)
        self.stop.set()
        return time.perf_counter() - t0

    def _claim(self, n: int) -> bool:
        with self.lock:
            if n > 0 and self.claimed >= self.s.budget:
                return False
            self.claimed += n
            return True

    def _person(self, k: int) -> None:
        rng = random.Random(SEED * 1000 + k)
        deadline = time.monotonic() + LABELING_TIMEOUT
        try:
            with AnnotationClient(self.address, annotator_id=f"person-{k}", retry_for=30.0) as client:
                while self._claim(1):
                    query = None
                    while query is None and time.monotonic() < deadline and not self.stop.is_set():
                        query = client.lease(wait_seconds=LEASE_WAIT)
                    if query is None:
                        self._claim(-1)
                        return
                    label = self.photos.by_sha256.get(hashlib.sha256(query.image).hexdigest())
                    time.sleep(rng.uniform(self.s.delay - self.s.jitter, self.s.delay + self.s.jitter))
                    if label is None:
                        client.skip(query)
                        with self.lock:
                            self.unknown += 1
                        self._claim(-1)
                        continue
                    client.submit(query, label)
                    with self.lock:
                        self.given += 1
        except Exception as exc:  # noqa: BLE001 - reported in the results, never a hung benchmark
            self.errors.append(f"person-{k}: {type(exc).__name__}: {exc}")


def admin(address: str, *args) -> str:
    return subprocess.run(command("admin", "--coordinator", address, *args), check=True, capture_output=True,
                          text=True, timeout=120).stdout


def run(*, smoke: bool = False) -> dict:
    s = SMOKE if smoke else FULL
    load_average = os.getloadavg()[0]  # the machine is shared: how busy it was when this began
    phases: dict[str, float] = {}  # seconds each part of the run took
    t = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        phases[name] = now - t
        t = now

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = write_photos(tmp)
        phase("writing_files")
        classes_file = tmp / "classes.txt"
        classes_file.write_text("".join(f"{c}\t{d}\n" for c, d in zip(CLASSES, DESCRIPTIONS)))
        procs = ProcessGroup(tmp / "logs")
        try:
            _, address = procs.start_coordinator("coordinator", [
                "--data-dir", tmp / "coord", "--dataset", f"folder:{photos.pool}", "--classes-file", classes_file,
                "--input-size", INPUT_SIZE, "--model", "cnn"])
            for i in range(s.servers):
                procs.start(f"server-{i}", command(
                    "server", "--coordinator", address, "--server-id", f"server-{i}", "--epochs", s.epochs,
                    "--min-steps", s.min_steps, "--min-labels", s.min_labels, "--seed", 1000 * i, "--threads", 1))
            for j in range(s.workers):
                procs.start(f"worker-{j}", command(
                    "worker", "--coordinator", address, "--worker-id", f"worker-{j}", "--shard-index", j,
                    "--num-shards", s.workers, "--strategy", "margin", "--seed", j, "--threads", 1))
            with CoordinatorClient(address, retry_for=30.0) as client:
                deadline = time.monotonic() + STARTUP_TIMEOUT
                while client.stats().queued == 0 and time.monotonic() < deadline:
                    time.sleep(0.2)
                phase("startup")
                people = People(address, photos, s)
                labeling_seconds = people.run()
                phase("labeling")
                records = list(client.export(include_payload=True, latest_only=True))
                training = [r for r in records if r.provenance.strategy != AUDIT_STRATEGY]
                final = _wait_for_model(client, len(training))
                stats = json.loads(admin(address, "stats", "--json"))
                models = sorted(client.models(), key=lambda m: m.version)
            model_dir = tmp / "model"  # the model trained on every training label (else the latest), taken out
            admin(address, "model", "--out", model_dir, *(("--version", final.version) if final else ()))
        finally:
            procs.stop_all()
        phase("final_model")
        truth, x_holdout, y_holdout = _truth(model_dir, photos)
        card = json.loads((model_dir / "card.json").read_text())
        random_accuracy, chosen_accuracy = _baselines(s, photos, training, x_holdout, y_holdout)
        phase("truth_and_baselines")

    first_label = min(r.labeled_at for r in records)
    first_model = models[0]
    since_first_label = first_model.created_at - first_label
    estimate = card["estimated_accuracy"]  # what `aal-admin stats` reports, for exactly the model taken out
    within = estimate is not None and estimate["low"] <= truth <= estimate["high"]
    random_mean = float(np.mean(random_accuracy))
    chosen_mean = float(np.mean(chosen_accuracy))
    return {
        "budget": s.budget, "labels": len(records), "training_labels": len(training), "people": s.people,
        "delay_seconds": s.delay, "jitter_seconds": s.jitter, "servers": s.servers, "workers": s.workers,
        "recipe": {"epochs": s.epochs, "min_steps": s.min_steps, "min_labels": s.min_labels},
        "pool_files": len(photos.pool_class), "held_out_files": len(photos.holdout_class),
        "picture_size": PICTURE_SIZE, "input_size": INPUT_SIZE, "classes": card["classes"],
        "labeling_seconds": labeling_seconds, "labels_per_second": people.given / labeling_seconds,
        "unknown_pictures": people.unknown, "people_errors": people.errors,
        # time to the first model, against that model's own training round
        "first_model_seconds": since_first_label,
        "first_model_train_seconds": first_model.metrics.get("train_seconds"),
        "first_model_ratio": since_first_label / first_model.metrics["train_seconds"]
        if first_model.metrics.get("train_seconds") else None,
        "first_model_labels": first_model.num_labels,
        "labels_before_first_model": sum(r.labeled_at < first_model.created_at for r in records),
        "label_origins": stats["label_origins"], "chosen_by_model_share": stats["chosen_by_model_share"],
        "versions_published": len(models),
        # the audit's estimate of the final model against its accuracy on the held-out files
        "final_model_version": card["version"], "final_model_labels": card["labels_seen"],
        "final_model_is_complete": final is not None,
        "estimated_accuracy": estimate, "true_accuracy": truth,
        "estimate_error": abs(estimate["value"] - truth) if estimate else None,
        "estimate_over_truth": estimate["value"] / truth if estimate and truth else None,
        "truth_within_interval": within,
        # active learning against random sampling at the same number of training labels, same recipe
        "baseline_seeds": s.seeds,
        "random_accuracies": random_accuracy, "random_accuracy": random_mean,
        "chosen_retrained_accuracies": chosen_accuracy, "chosen_retrained_accuracy": chosen_mean,
        "gain_points_final_model": 100 * (truth - random_mean),
        "gain_points_retrained": 100 * (chosen_mean - random_mean),
        "target": "truth within the audit's 95% interval", "pass": within,
        "phase_seconds": phases, "load_average_at_start": load_average,
    }


def _wait_for_model(client: CoordinatorClient, labels: int):
    """The latest model once one is trained on at least `labels` labels (None if none came in time)."""
    deadline = time.monotonic() + FINAL_MODEL_TIMEOUT
    seen = 0
    while time.monotonic() < deadline:
        m = client.latest_model(after_version=seen, wait_seconds=min(5.0, max(0.1, deadline - time.monotonic())))
        if m is not None:
            seen = m.version
            if m.num_labels >= labels:
                return m
    return None


def _truth(model_dir: Path, photos: Photos) -> tuple[float, np.ndarray, np.ndarray]:
    """The exported model's accuracy on the held-out files, as a team would run it; and those files as the
    model's inputs (prepared as the pool's items were) with their classes, for the baselines."""
    from aal_rpc.predict import load_model

    model = load_model(model_dir)
    names = sorted(photos.holdout_class)
    paths = [photos.holdout / n for n in names]
    y = np.asarray([photos.holdout_class[n] for n in names], dtype=np.int64)
    predicted = np.asarray([p.label for p in model.predict_files(paths)], dtype=np.int64)
    x = np.stack([model.prepare_file(p) for p in paths])
    return float((predicted == y).mean()), x, y


def _baselines(s: Scenario, photos: Photos, training: list, x_test: np.ndarray, y_test: np.ndarray
               ) -> tuple[list[float], list[float]]:
    """Held-out accuracy of models trained from scratch with the servers' first-round recipe, one per seed: on
    as many uniformly random pool files as the system's training labels (a fresh draw per seed), and on the
    labels the system chose (audit ones excluded, as the servers exclude them)."""
    from aal_rpc.data import load_dataset

    pool = load_dataset(f"folder:{photos.pool}", classes=CLASSES, input_size=(INPUT_SIZE, INPUT_SIZE))
    y_pool = np.asarray([photos.pool_class[src] for src in pool.sources], dtype=np.int64)
    x_chosen = np.stack([r.payload.to_array() for r in training])
    y_chosen = np.asarray([r.label for r in training], dtype=np.int64)
    jobs = []
    for k in range(s.seeds):
        seed = BASELINE_SEED + k
        rows = np.random.default_rng(seed).choice(len(y_pool), len(training), replace=False)
        jobs.append((s, pool.x_pool[rows], y_pool[rows], x_test, y_test, seed))
        jobs.append((s, x_chosen, y_chosen, x_test, y_test, seed))
    if s.seeds == 1:  # the smoke size: two short trainings, not worth two interpreters importing torch
        scores = [_train_and_score(job) for job in jobs]
    else:  # the system is stopped: one single-threaded training per core, as the servers train
        with ProcessPoolExecutor(BASELINE_PROCESSES, mp_context=multiprocessing.get_context("spawn")) as ex:
            scores = list(ex.map(_train_and_score, jobs))
    return scores[0::2], scores[1::2]


def _train_and_score(job: tuple) -> float:
    """Held-out accuracy of one model trained from scratch on (x, y) with the servers' first-round recipe."""
    import torch

    from aal_rpc.models import build_model
    from aal_rpc.training import RECIPE, evaluate, train

    s, x, y, x_test, y_test, seed = job
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the servers run (--threads 1): small batches gain nothing from more
    try:
        torch.manual_seed(seed)
        model = build_model("cnn", x_test.shape[1:], len(CLASSES))
        train(model, x, y, **replace(RECIPE, epochs=s.epochs, min_steps=s.min_steps).kwargs(), seed=seed)
        return float(evaluate(model, x_test, y_test)["accuracy"])
    finally:
        torch.set_num_threads(threads)


def rows(r: dict) -> list[str]:
    """The lines of the benchmark table."""
    o = r["label_origins"]
    est = r["estimated_accuracy"]
    share = r["chosen_by_model_share"]
    ratio = f"{r['first_model_ratio']:.2f}×" if r["first_model_ratio"] is not None else "–"
    what = (f"own data: {r['pool_files']} unlabeled {r['picture_size']}×{r['picture_size']} PNGs under opaque "
            f"names, 10 declared classes, {r['people']} people at {r['delay_seconds']:g} ± "
            f"{r['jitter_seconds']:g} s a label, {r['servers']} servers + {r['workers']} margin workers")
    lines = [
        f"| 15 | {what}: first label → first model | {r['first_model_seconds']:.1f} s "
        f"({r['labels_before_first_model']} labels before it) | its training round "
        f"{r['first_model_train_seconds']:.1f} s | {ratio} | – | – |",
        f"| 15b | labels chosen by a model, of {r['labels']} | "
        f"{'–' if share is None else f'{100 * share:.0f}%'} | cold start {o['cold_start']}, audit {o['audit']}, "
        f"model {o['model']}; {r['versions_published']} versions | – | – | – |",
    ]
    if est is not None:
        lines.append(
            f"| 15c | final model (v{r['final_model_version']}, {r['final_model_labels']} labels): audit's "
            f"estimate on {est['labels']} audit labels | {est['value']:.3f} [{est['low']:.3f}, {est['high']:.3f}] "
            f"| true accuracy on {r['held_out_files']} held-out files {r['true_accuracy']:.3f} | "
            f"{r['estimate_over_truth']:.2f} (off by {r['estimate_error']:.3f}) | truth within the 95% interval | "
            f"{'yes' if r['pass'] else '**no**'} |")
    else:
        lines.append(f"| 15c | final model: audit's estimate | none (no audit label) | true accuracy "
                     f"{r['true_accuracy']:.3f} | – | truth within the 95% interval | **no** |")
    lines.append(
        f"| 15d | active learning vs random sampling, {r['training_labels']} training labels, held-out files | "
        f"final model {r['true_accuracy']:.3f}; chosen labels retrained {r['chosen_retrained_accuracy']:.3f} "
        f"({r['baseline_seeds']} seeds) | random files {r['random_accuracy']:.3f} (same recipe and seeds) | "
        f"{r['gain_points_final_model']:+.1f} / {r['gain_points_retrained']:+.1f} points | – | – |")
    return lines


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))

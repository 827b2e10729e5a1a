"""aal-labelstudio: how long from an annotation saved in Label Studio to its record in L, and how many queries per
second the bridge keeps in sync when S changes.

Setup: a real Label Studio 1.23 (its own virtualenv, SQLite, `make labelstudio`), a real coordinator in this process,
the bridge as its command with a window of `window` tasks.

- Latency: an annotator's save (the annotation's POST) until L streams its record, with webhooks (no polling), then
  with polling alone (--no-webhooks, every second). Baselines in the same run: a direct AnnotationClient submit
  (lease held, submit until L streams it), and Label Studio's own save (the POST alone).
- Sync rate as S changes: a new model is published and a worker queues its queries; the time until every task of
  the window shows the new model's queries, as queries per second (the bridge looks every REFRESH_SECONDS).
  Baseline: Label Studio's own bulk import of the same number of tasks (with predictions), the bound on any bridge.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import percentiles

REFRESH_SECONDS = 1.0  # the bridge's --refresh-seconds here (default 5): how soon it looks for stale tasks


def _candidates(ids, images):
    from aal_rpc.data.images import render_png
    from aal_rpc.types import Payload

    out = []
    for n, item_id in enumerate(ids):
        x = (images[n % len(images)] / 16.0).astype(np.float32)[None]
        out.append((str(item_id), Payload.from_array(x, image=render_png(x)), float(n % 97) / 97))
    return out


class Arrivals:
    """When each item's first record reached L (streamed from the coordinator as trainers see it)."""

    def __init__(self, address: str):
        from aal_rpc.client import CoordinatorClient

        self.first: dict[str, float] = {}
        self.cond = threading.Condition()
        self._client = CoordinatorClient(address, retry_for=30)
        self._stream = self._client.follow_labels(0)
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self):
        for rec in self._stream:
            with self.cond:
                self.first.setdefault(rec.item_id, time.time())
                self.cond.notify_all()

    def wait(self, item_id: str, timeout: float = 60.0) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: item_id in self.first, timeout):
                raise TimeoutError(f"item {item_id} never reached L")
            return self.first[item_id]

    def close(self):
        self._stream.cancel()
        self._client.close()


def run(*, smoke: bool = False) -> dict:
    from aal_rpc.labelstudio.local import LocalLabelStudio, label_studio_executable

    exe = label_studio_executable()
    if exe is None:
        return {"skipped": "Label Studio's virtualenv is missing (make labelstudio)"}
    window = 10 if smoke else 50
    samples = 8 if smoke else 100
    with tempfile.TemporaryDirectory() as tmp, LocalLabelStudio(exe) as studio:
        return _measure(Path(tmp), studio, window=window, samples=samples, smoke=smoke)


def _measure(tmp: Path, studio, *, window: int, samples: int, smoke: bool) -> dict:
    from aal_rpc.client import AnnotationClient, CoordinatorClient
    from aal_rpc.coordinator.app import create_coordinator_server
    from aal_rpc.coordinator.contract import CoordinatorConfig
    from aal_rpc.data.images import digits_arrays
    from aal_rpc.experiment.processes import ProcessGroup, command
    from aal_rpc.labelstudio.window import task_json, task_ref
    from aal_rpc.labelstudio.config import REF_FIELD, label_config, parse_label_config, result_for
    from aal_rpc.labelstudio.state import STATE_FILE
    from aal_rpc.models import build_model
    from aal_rpc.serde import weights_to_bytes
    from aal_rpc.types import Provenance, Task

    images, _ = digits_arrays()
    task = Task(dataset="digits", num_classes=10, class_names=tuple(map(str, range(10))), input_shape=(1, 8, 8),
                architecture="mlp")
    polled = max(4, samples // 4)
    n_items = 2 * samples + polled + 4 * window
    srv = create_coordinator_server("127.0.0.1:0", tmp / "coordinator", task,
                                    CoordinatorConfig(pool_capacity=n_items + 4 * window))
    address = f"127.0.0.1:{srv.port}"
    procs = ProcessGroup(tmp / "logs")
    arrivals = Arrivals(address)
    ls = studio.client()
    try:
        with CoordinatorClient(address, retry_for=30) as admin:
            admin.submit_candidates(worker_id="w", strategy="margin", model_version=0,
                                    candidates=_candidates(range(n_items), images))
            # baseline: a direct submit, lease in hand, until L streams the record
            direct = []
            with AnnotationClient(address, "direct", retry_for=30) as client:
                for _ in range(samples):
                    q = client.lease()
                    t0 = time.time()
                    client.submit(q, 1)
                    direct.append(arrivals.wait(q.item_id) - t0)

            def start_bridge(name, *args):
                proc = procs.start(name, command(
                    "labelstudio", "--coordinator", address, "--label-studio-url", studio.url,
                    "--state-dir", tmp / name, "--window", window, "--sweep-seconds", "3600",
                    "--refresh-seconds", REFRESH_SECONDS, *args),
                    capture_stdout=True, env={"LABEL_STUDIO_API_KEY": studio.token})
                first = proc.stdout.readline().decode()
                if first.startswith("listening on "):
                    first = proc.stdout.readline().decode()
                if not first.startswith(("project", "polling project")):
                    raise RuntimeError(f"{name} did not start: {(procs.log_dir / f'{name}.log').read_text()[-2000:]}")
                return int(first.split()[-1]) if first.startswith("polling") else int(first.split()[1])

            def open_tasks(project):
                return [t.dict() for t in ls.tasks.list(project=project, fields="all")
                        if not t.dict()["annotations"]]

            def wait_for(predicate, timeout=120.0):
                deadline = time.monotonic() + timeout
                while not predicate():
                    if time.monotonic() > deadline:
                        raise TimeoutError("the bridge did not get there")
                    time.sleep(0.1)

            def item_of(bridge: str, ref: str) -> str:
                """The item a task shows: task data names it only by an opaque reference to its lease, which the
                bridge's state file maps to the item."""
                with sqlite3.connect(f"file:{tmp / bridge / STATE_FILE}?mode=ro", uri=True) as db:
                    items = {task_ref(lease): item for lease, item in db.execute("SELECT lease_id, item_id FROM tasks")}
                return items[ref]

            def annotate_all(project, bridge, count, iface):
                """Save `count` annotations, one at a time, as annotators do; each one's save -> L time and the
                save (POST) itself."""
                to_l, saves = [], []
                while len(to_l) < count:
                    wait_for(lambda: len(open_tasks(project)) >= 1)
                    t = open_tasks(project)[0]
                    item = item_of(bridge, t["data"][REF_FIELD])
                    t0 = time.time()
                    ls.annotations.create(id=t["id"], result=result_for(int(item) % 10, iface))
                    saves.append(time.time() - t0)
                    to_l.append(arrivals.wait(item) - t0)
                return to_l, saves

            # with webhooks (polling off)
            project = start_bridge("bridge-webhooks", "--create-project", "bench webhooks", "--poll-seconds", "3600")
            iface = parse_label_config(label_config(task.class_names, "image"), task.class_names)
            wait_for(lambda: len(open_tasks(project)) == window)
            webhook_lat, save_lat = annotate_all(project, "bridge-webhooks", samples, iface)

            # S changes: a new model, its queries queued; every task of the window is stale
            weights = weights_to_bytes(build_model(task.architecture, task.input_shape, task.num_classes).state_dict())
            version = admin.upload_model(weights, server_id="s", trained_seq=admin.stats().last_seq, num_labels=1,
                                         architecture=task.architecture, metrics={}).version
            wait_for(lambda: len(open_tasks(project)) == window)
            t0 = time.time()
            admin.submit_candidates(worker_id="w", strategy="margin", model_version=version,
                                    candidates=_candidates(range(10_000, 10_000 + 2 * window), images))
            wait_for(lambda: sum(t["data"]["model_version"] == version for t in open_tasks(project)) == window)
            sync_seconds = time.time() - t0
            procs.stop("bridge-webhooks")

            # baseline: Label Studio importing the same number of tasks itself
            raw = ls.projects.create(title="bench import", label_config=label_config(task.class_names, "image"))
            tasks = [task_json(item_id, payload, Provenance("w", "margin", version, score), iface)
                     for item_id, payload, score in _candidates(range(20_000, 20_000 + window), images)]
            t0 = time.time()
            ls.projects.import_tasks(id=raw.id, request=tasks, return_task_ids=True)
            import_seconds = time.time() - t0

            # polling alone, every second
            project = start_bridge("bridge-polling", "--create-project", "bench polling", "--no-webhooks",
                                   "--poll-seconds", "1")
            wait_for(lambda: len(open_tasks(project)) >= min(window, 4))
            polling_lat, _ = annotate_all(project, "bridge-polling", polled, iface)
            procs.stop("bridge-polling")
    finally:
        arrivals.close()
        procs.stop_all()
        srv.stop(grace=0)
    w, d = percentiles(webhook_lat), percentiles(direct)
    return {
        "window": window, "samples": samples, "label_studio_start_seconds": studio.start_seconds[0],
        "webhooks": w, "polling_1s": percentiles(polling_lat), "direct_submit": d,
        "label_studio_save": percentiles(save_lat),
        "p50_over_direct": w["p50"] / d["p50"], "p99_over_direct": w["p99"] / d["p99"],
        # the webhook is posted inside the save, so the label is in L about when the save returns
        "p50_over_save": w["p50"] / percentiles(save_lat)["p50"],
        "sync_queries_per_second": window / sync_seconds, "sync_seconds": sync_seconds,
        "import_tasks_per_second": window / import_seconds,
        "sync_over_import": (window / sync_seconds) / (window / import_seconds),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(smoke="--smoke" in sys.argv), indent=1))

"""Work in proportion to the labels: bytes the coordinator moves, and candidates the workers submit, per label.

The real system as processes (one coordinator, 2 servers, 3 workers with the daemons' defaults, the
experiment runner's pool capacity) on digits with the cnn, labeled by simulated annotators at people's
pace (8 annotators, each label taking 2 s on average). Reported per acknowledged label:

- bytes moved by the coordinator, sent + received: from its `aal_rpc_request_bytes_total` and
  `aal_rpc_response_bytes_total` counters when its /metrics has them; otherwise an estimate from what
  the clients can see (published model sizes x uploads and x the downloads each worker logged, plus
  candidates submitted, leases and the servers' label streams x their message sizes);
- candidates submitted (and evicted unused), from the coordinator's stats;
- versions published, and downloads per worker (from the workers' "loaded model vN" log lines).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
import urllib.request
from pathlib import Path

from aal_rpc import serde
from aal_rpc.client import CoordinatorClient
from aal_rpc.data import render_png
from aal_rpc.experiment.processes import ProcessGroup, command
from aal_rpc.experiment.runner import ExperimentConfig
from aal_rpc.proto.v1 import selection_pb2
from aal_rpc.types import Payload

BYTE_COUNTERS = ("aal_rpc_request_bytes_total", "aal_rpc_response_bytes_total")
LOADED = re.compile(r"loaded model v(\d+)")
STARTUP_TIMEOUT = 180.0  # seconds for the workers to fill S with their cold-start batch (torch imports on 2 cores)
RUN_TIMEOUT = 900.0


def run(*, labels: int = 320, annotators: int = 8, delay: float = 2.0, servers: int = 2, workers: int = 3,
        smoke: bool = False) -> dict:
    if smoke:
        labels = 40
    cfg = ExperimentConfig(servers=servers, workers=workers, annotators=annotators, budget=labels)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        procs = ProcessGroup(tmp / "logs")
        try:
            coord, address = procs.start_coordinator("coordinator", [
                "--data-dir", tmp / "coord", "--dataset", cfg.dataset, "--model", cfg.model,
                "--pool-capacity", cfg.capacity(), "--metrics-port", "0"])
            metrics_url = f"http://{coord.stdout.readline().decode().strip().removeprefix('metrics on ')}/metrics"
            for i in range(servers):
                procs.start(f"server-{i}", command("server", "--coordinator", address, "--server-id", f"server-{i}",
                                                   "--min-labels", cfg.first_model_labels(), "--seed", i,
                                                   "--threads", "1"))
            for j, strategy in enumerate(cfg.worker_strategies()):
                procs.start(f"worker-{j}", command("worker", "--coordinator", address, "--worker-id", f"worker-{j}",
                                                   "--shard-index", j, "--num-shards", workers, "--strategy",
                                                   strategy, "--batch-size", cfg.batch_size, "--seed", j,
                                                   "--threads", "1"))
            with CoordinatorClient(address, retry_for=30.0) as client:
                deadline = time.monotonic() + STARTUP_TIMEOUT
                while client.stats().queued < cfg.batch_size and time.monotonic() < deadline:
                    time.sleep(0.2)
                bytes_before = _byte_counters(metrics_url)
                t0 = time.perf_counter()
                annotate = procs.start("annotate", command(
                    "annotate", "--coordinator", address, "--oracle", "--annotators", annotators, "--budget", labels,
                    "--delay", delay, "--json"), capture_stdout=True)
                annotate.wait(RUN_TIMEOUT)
                seconds = time.perf_counter() - t0
                summary = json.loads(annotate.stdout.read().decode().strip().splitlines()[-1])
                stats = client.stats()
                models = client.models()
                bytes_after = _byte_counters(metrics_url)
                record = next(iter(client.export(include_payload=True)), None)
        finally:
            procs.stop_all()
        downloads = {j: _loaded_versions(tmp / "logs" / f"worker-{j}.log") for j in range(workers)}
    acknowledged = summary["acknowledged"]
    size = {m.version: m.size_bytes for m in models}
    model_bytes = max(size.values(), default=0)
    if bytes_before is not None and bytes_after is not None:
        moved = {k: bytes_after[k] - bytes_before[k] for k in BYTE_COUNTERS}
        bytes_source = "coordinator counters"
        total = sum(moved.values())
    else:  # the client-side estimate (the coordinator has no byte counters yet)
        candidate = _candidate_message_bytes(record.payload) if record is not None else 0
        moved = {
            "model uploads": sum(size.values()),
            "model downloads": sum(size.get(v, model_bytes) for vs in downloads.values() for v in vs),
            "candidates submitted": stats.candidates_submitted * candidate,
            "leases": acknowledged * candidate,
            "label streams": acknowledged * servers * candidate,
        }
        bytes_source = "client-side estimate"
        total = sum(moved.values())
    per = max(1, acknowledged)
    return {
        "labels": acknowledged, "annotators": annotators, "delay_seconds": delay, "servers": servers,
        "workers": workers, "seconds": seconds, "pool_capacity": cfg.capacity(),
        "bytes_source": bytes_source, "bytes": moved, "bytes_per_label": total / per,
        "model_bytes": model_bytes,
        "candidates_submitted": stats.candidates_submitted, "candidates_evicted": stats.candidates_evicted,
        "candidates_per_label": stats.candidates_submitted / per,
        "versions_published": len(models),
        "downloads_per_worker": [len(downloads[j]) for j in range(workers)],
        "wait_seconds": {k: summary["wait_seconds"][k] for k in ("p50", "p99")},
        "final_accuracy": models[-1].metrics.get("accuracy") if models else None,
        "final_model_labels": models[-1].num_labels if models else 0,
        "target": "candidates per label < 3", "pass": stats.candidates_submitted / per < 3,
    }


def _byte_counters(url: str) -> dict[str, float] | None:
    """The coordinator's byte counters summed over methods, or None while its /metrics has none."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    sums = dict.fromkeys(BYTE_COUNTERS, 0.0)
    seen = False
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
            seen = True
    return sums if seen else None


def _loaded_versions(log: Path) -> list[int]:
    return [int(m.group(1)) for m in LOADED.finditer(log.read_text())] if log.exists() else []


def _candidate_message_bytes(payload: Payload) -> int:
    """What one item weighs on the wire as a worker submits it (the tensor and its picture)."""
    x = payload.to_array()
    msg = selection_pb2.Candidate(item_id="1234", score=0.5,
                                  payload=serde.payload_to_proto(Payload.from_array(x, image=render_png(x))))
    return msg.ByteSize()


def rows(r: dict) -> list[str]:
    """The lines of the benchmark table."""
    mb = r["bytes_per_label"] / 1e6
    return [
        f"| 12 | bytes moved by the coordinator per label ({r['labels']} labels, {r['annotators']} annotators at "
        f"{r['delay_seconds']:.0f} s a label, {r['servers']} servers, {r['workers']} workers; {r['bytes_source']}) | "
        f"{mb:.3f} MB | model {r['model_bytes'] / 1e6:.2f} MB; {r['versions_published']} versions, downloads per "
        f"worker {r['downloads_per_worker']} | – | – | – |",
        f"| 12b | candidates submitted per label (evicted unused: {r['candidates_evicted']}) | "
        f"{r['candidates_per_label']:.2f} | {r['candidates_submitted']} submitted for {r['labels']} labels; wait p50 "
        f"{r['wait_seconds']['p50'] * 1e3:.1f} / p99 {r['wait_seconds']['p99'] * 1e3:.1f} ms | – | < 3 | "
        f"{'yes' if r['pass'] else '**no**'} |",
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))

"""Target 6: a scale simulation on one machine. 1 coordinator, 4 servers, 16 workers and 500 lightweight
simulated annotators (threads of one aal-annotate process) label a fixed number of items. Reports errors
(must be 0), labels/s, annotator wait p50/p99, and the coordinator's CPU and peak memory.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from aal_rpc.client import CoordinatorClient
from aal_rpc.experiment.processes import ProcessGroup, command
from benchmarks.common import cpu_seconds, proc_status_mb, synthetic_npz


def run(*, servers: int = 4, workers: int = 16, annotators: int = 500, labels: int = 5000,
        items: int = 100_000, smoke: bool = False) -> dict:
    if smoke:
        servers, workers, annotators, labels, items = 1, 2, 20, 100, 5_000
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = synthetic_npz(tmp / "data.npz", items)
        procs = ProcessGroup(tmp / "logs")
        try:
            coord, address = procs.start_coordinator("coordinator", [
                "--data-dir", tmp / "coord", "--dataset", dataset, "--model", "mlp", "--pool-capacity", "4096",
                "--max-workers", "1024"])
            for i in range(servers):
                procs.start(f"server-{i}", command("server", "--coordinator", address, "--epochs", "2",
                                                   "--threads", "1", "--min-new-labels", "200", "--seed", i))
            for j in range(workers):
                procs.start(f"worker-{j}", command(
                    "worker", "--coordinator", address, "--shard-index", j, "--num-shards", workers, "--strategy",
                    ("entropy", "least_confidence", "margin")[j % 3], "--batch-size", "256", "--threads", "1"))
            with CoordinatorClient(address) as c:
                deadline = time.monotonic() + 300
                while c.stats().queued < min(2048, labels) and time.monotonic() < deadline:
                    time.sleep(0.5)
            cpu0, t0 = cpu_seconds(coord.pid), time.perf_counter()
            annotate = procs.start("annotate", command(
                "annotate", "--coordinator", address, "--oracle", "--annotators", annotators, "--budget", labels,
                "--json"), capture_stdout=True)
            annotate.wait(timeout=1800)
            elapsed = time.perf_counter() - t0
            cpu = cpu_seconds(coord.pid) - cpu0
            summary = json.loads(annotate.stdout.read().decode().strip().splitlines()[-1])
            with CoordinatorClient(address) as c:
                stats = c.stats()
            peak = proc_status_mb(coord.pid, "VmHWM")
        finally:
            procs.stop_all()
    errors = sum(summary["errors"].values())
    return {"servers": servers, "workers": workers, "annotators": annotators, "labels": summary["acknowledged"],
            "labeled_in_pool": stats.labeled, "models": stats.models, "errors": errors,
            "labels_per_second": summary["acknowledged"] / elapsed,
            "wait_p50_ms": summary["wait_seconds"]["p50"] * 1000, "wait_p99_ms": summary["wait_seconds"]["p99"] * 1000,
            "coordinator_cpu_percent": 100 * cpu / elapsed, "coordinator_peak_rss_mb": peak,
            "target": "zero errors", "pass": errors == 0 and stats.labeled == summary["acknowledged"]}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))

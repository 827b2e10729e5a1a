"""Target 7: growth. Coordinator memory and per-call latency (LeaseQuery, SubmitLabel over gRPC) as the labeled
pool L grows from 10k to 1M records of small synthetic payloads.

L is grown offline between measurements (rows appended straight into the coordinator's SQLite file while
it is stopped), then the coordinator is started on that data dir and measured: its resident memory and
the latency of sequential lease + submit cycles from one client.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.layout import DataDir
from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.experiment.processes import ProcessGroup
from aal_rpc.types import Payload
from benchmarks.common import percentiles, proc_status_mb

PAYLOAD = np.zeros((1, 8, 8), np.float32)


def grow(data_dir: Path, start: int, stop: int) -> None:
    SqliteStore(data_dir).close()  # the schema
    tensor = PAYLOAD.tobytes()
    conn = sqlite3.connect(DataDir(data_dir).database)
    conn.executemany(
        "INSERT INTO labels (seq, item_id, lease_id, label, annotator_id, queued_at, leased_at, labeled_at, "
        "worker_id, strategy, model_version, score, tensor, dtype, shape, image_png) "
        "VALUES (?, ?, ?, 1, 'synthetic', 0, 0, 0, 'w', 'entropy', 0, 0, ?, 'float32', '[1, 8, 8]', x'')",
        ((i, f"synthetic-{i}", f"lease-{i}", tensor) for i in range(start + 1, stop + 1)))
    conn.commit()
    conn.close()


def measure(data_dir: Path, procs: ProcessGroup, size: int, cycles: int) -> dict:
    t0 = time.perf_counter()
    proc, address = procs.start_coordinator("coordinator", ["--data-dir", data_dir, "--pool-capacity", "100000"])
    startup = time.perf_counter() - t0
    lease_lat, submit_lat = [], []
    with CoordinatorClient(address) as c, AnnotationClient(address, "growth") as a:
        c.submit_candidates(worker_id="w", strategy="entropy", model_version=0,
                            candidates=[(f"new-{size}-{k}", Payload.from_array(PAYLOAD), 0.5) for k in range(cycles)])
        for _ in range(cycles):
            t0 = time.perf_counter()
            q = a.lease()
            t1 = time.perf_counter()
            a.submit(q, 1)
            lease_lat.append(t1 - t0)
            submit_lat.append(time.perf_counter() - t1)
        labeled = c.stats().labeled
    mem = proc_status_mb(proc.pid, "VmRSS")
    procs.stop("coordinator")
    return {"labels": labeled, "rss_mb": mem, "startup_seconds": startup,
            "lease": percentiles(lease_lat), "submit": percentiles(submit_lat)}


def run(*, sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000), cycles: int = 500, smoke: bool = False) -> dict:
    if smoke:
        sizes, cycles = (1_000, 5_000), 50
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "coord"
        procs = ProcessGroup(Path(tmp) / "logs")
        try:
            have = 0
            for size in sizes:
                grow(data_dir, have, size)
                have = size
                row = measure(data_dir, procs, size, cycles)
                have += cycles
                rows.append(row)
        finally:
            procs.stop_all()
    first, last = rows[0], rows[-1]
    flat = {op: last[op]["p50"] / first[op]["p50"] for op in ("lease", "submit")}
    return {"rows": rows, "p50_growth": flat, "target": "per-call p50 flat (within 1.5x) from smallest to largest L",
            "pass": all(v <= 1.5 for v in flat.values())}


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))

"""Figure 8: what the PostgreSQL store costs. Durable label cycles (lease + submit, each acknowledged only once
committed) with 8 annotator threads on a coordinator in this process (no gRPC, so the store is what differs):
the shared-database coordinator on a local PostgreSQL server against the embedded coordinator on SQLite, in
the same run. `python -m benchmarks --only store_backends`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.embedded import EmbeddedCoordinator
from aal_rpc.data import render_png
from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.types import Candidate, Payload, Provenance, Task
from benchmarks.common import percentiles, run_threads
from tests.pg_local import LocalPostgres, postgres_bindir

TASK = Task(dataset="digits", num_classes=10, class_names=tuple(map(str, range(10))), input_shape=(1, 8, 8),
            architecture="mlp")
THREADS = 8


def _candidates(n: int) -> list[Candidate]:
    x = np.random.default_rng(0).random((1, 8, 8), dtype=np.float32)
    payload = Payload.from_array(x, image=render_png(x))  # a real picture, as workers send
    return [Candidate(f"item-{i}", payload, Provenance("w0", "margin", 0, 0.5)) for i in range(n)]


def cycles(coordinator, *, items: int, seconds: float) -> dict:
    """Lease + submit as fast as THREADS annotators can for `seconds` (S stocked beforehand with `items`)."""
    stock = _candidates(items)
    for start in range(0, items, 1000):
        coordinator.submit_candidates(worker_id="w0", strategy="margin", model_version=0,
                                      candidates=stock[start:start + 1000])
    latencies: list[list[float]] = [[] for _ in range(THREADS)]
    finished = [0.0] * THREADS

    def annotate(i, stop) -> None:
        while not stop.is_set() and (q := coordinator.lease(f"a{i}")) is not None:
            t0 = time.perf_counter()
            coordinator.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=1, annotator_id=f"a{i}")
            finished[i] = time.perf_counter()
            latencies[i].append(finished[i] - t0)

    t0 = time.perf_counter()
    run_threads(THREADS, annotate, seconds)
    elapsed = max(finished) - t0  # until the last label: a store that empties S early is not charged the idle rest
    lat = percentiles([x for xs in latencies for x in xs])
    return {"labels": lat["count"], "cycles_per_second": lat["count"] / elapsed,
            "submit_p50_ms": lat["p50"] * 1e3, "submit_p99_ms": lat["p99"] * 1e3}


def run(*, seconds: float = 10.0, items: int = 40_000, smoke: bool = False) -> dict:
    if smoke:
        seconds, items = 1.0, 2_000
    bindir = postgres_bindir()
    if bindir is None:
        return {"skipped": "no PostgreSQL server binaries (apt-get install postgresql)"}
    config = CoordinatorConfig(pool_capacity=items, lease_seconds=600)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = EmbeddedCoordinator(SqliteStore(Path(tmp) / "data"), TASK, config)
        try:
            embedded = cycles(sqlite, items=items, seconds=seconds)
        finally:
            sqlite.close()
    from aal_rpc.coordinator.postgres_store import PostgresStore
    from aal_rpc.coordinator.postgres import SharedCoordinator

    with LocalPostgres(bindir) as server:
        shared = SharedCoordinator(PostgresStore(server.new_database(), pool_size=THREADS + 2), TASK, config)
        try:
            postgres = cycles(shared, items=items, seconds=seconds)
        finally:
            shared.close()
    return {"threads": THREADS, "seconds": seconds, "sqlite": embedded, "postgresql": postgres,
            "ratio": postgres["cycles_per_second"] / embedded["cycles_per_second"],
            "measured_at": time.strftime("%Y-%m-%d %H:%M")}

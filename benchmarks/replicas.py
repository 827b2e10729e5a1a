"""Coordinator replicas over PostgreSQL: durable labels/s of 1 and of 2 coordinator processes on one database, and
PostgreSQL's own ceiling for the same transactions, all in one run on one local PostgreSQL server.

No trainers and no workers: S is stocked by submitting candidates through a replica (SubmitCandidates, model
version 0) before each phase, with more than the phase can label. The annotators are coroutines in this process,
spread evenly over the replicas, each holding one AnnotationSession stream with a window of one and labeling at
once (no think time): the coordinators are saturated. Wait = from sending a label to holding its acknowledgement
(sent once the label is committed) and the next query.

For each phase: labels/s, wait p50/p99, the CPU of each coordinator and of PostgreSQL (the postmaster and its
backends), PostgreSQL's commits/s (pg_stat_database.xact_commit) and WAL flushes/s (pg_stat_wal.wal_sync), and
the open sessions each replica's metrics show (aal_rpc_in_flight{method="AnnotationSession"}, what the k8s
autoscaler reads). The bound: the same two transactions a label costs (aal_lease_next, then aal_record_label)
driven by pgbench, a C client, with as many connections as there are annotators and no coordinator at all; and
plain one-row INSERT commits from as many connections. `python -m benchmarks --only replicas`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np

from aal_rpc.client import CoordinatorClient
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.experiment.processes import ProcessGroup, read_line
from aal_rpc.grpc_utils import CHANNEL_OPTIONS
from aal_rpc.proto.v1 import annotation_pb2, annotation_pb2_grpc
from aal_rpc.types import Payload
from benchmarks.common import cpu_seconds, machine_busy, percentiles
from tests.pg_local import LocalPostgres, postgres_bindir

ANNOTATORS = 32  # in total, whatever the number of replicas: the same offered load on 1 and on 2
ANNOTATORS_PER_CHANNEL = 16
CALL_TIMEOUT = 10.0
STOCK_BATCH = 500
STOCK = 1024  # unleased queries kept in S: the order of a full pool (workers keep it full)
REFILL_SECONDS = 0.2
IN_FLIGHT = re.compile(r'^aal_rpc_in_flight\{method="AnnotationSession"\} ([0-9.e+]+)$', re.M)


def run(*, annotators: int = ANNOTATORS, warmup: float = 2.0, seconds: float = 8.0, bound_seconds: float = 4.0,
        stock: int = STOCK, smoke: bool = False) -> dict:
    if smoke:
        annotators, warmup, seconds, bound_seconds = 4, 0.3, 1.0, 0.5
    bindir = postgres_bindir()
    if bindir is None:
        return {"skipped": "no PostgreSQL server binaries (apt-get install postgresql)"}
    with tempfile.TemporaryDirectory() as tmp, LocalPostgres(bindir) as pg:
        url = pg.new_database()
        procs = ProcessGroup(Path(tmp) / "logs")
        stocker = _Stocker(pg, url)
        try:
            args = ["--store", url, "--model", "mlp", "--pool-capacity", 2 * stock, "--lease-seconds", "600",
                    "--metrics-port", "0"]
            replicas = [_Replica.start(procs, "coordinator-0", args)]
            with _Refill(replicas[0].address, url, stock, stocker):
                one = asyncio.run(_phase(replicas, annotators, warmup, seconds, stocker))
                replicas.append(_Replica.start(procs, "coordinator-1", args))
                two = asyncio.run(_phase(replicas, annotators, warmup, seconds, stocker))
                procs.stop("coordinator-1")  # coordinator-0 stays, idle but for the refills
                bound = _bound(pg, bindir, annotators, bound_seconds, stocker)
        finally:
            stocker.close()
            procs.stop_all()
    pairs = bound["same_transactions"]["labels_per_second"]
    return {"annotators": annotators, "seconds": seconds, "stock": stock, "replicas": {"1": one, "2": two},
            "bound": bound, "scaling": two["labels_per_second"] / one["labels_per_second"],
            "one_replica_of_bound": one["labels_per_second"] / pairs,
            "two_replicas_of_bound": two["labels_per_second"] / pairs,
            "cpu_cores": os.cpu_count(), "measured_at": time.strftime("%Y-%m-%d %H:%M")}


class _Replica:
    def __init__(self, name: str, pid: int, address: str, metrics: str):
        self.name, self.pid, self.address, self.metrics = name, pid, address, metrics

    @classmethod
    def start(cls, procs: ProcessGroup, name: str, args: list) -> "_Replica":
        proc, address = procs.start_coordinator(name, args)
        line = read_line(proc)  # "metrics on HOST:PORT", printed right after the address
        if not line.startswith("metrics on "):
            raise RuntimeError(f"{name} did not say where its metrics are (got {line!r})")
        return cls(name, proc.pid, address, line.removeprefix("metrics on "))

    def open_sessions(self) -> float:
        """The coordinator's own count of open AnnotationSession streams, from its /metrics."""
        with urllib.request.urlopen(f"http://{self.metrics}/metrics", timeout=CALL_TIMEOUT) as r:
            found = IN_FLIGHT.search(r.read().decode())
        return float(found.group(1)) if found else 0.0


class _Stocker:
    """PostgreSQL's counters, on an autocommit connection of this process, and the ids of the stocked items."""

    def __init__(self, pg: LocalPostgres, url: str):
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)
        self.database = self.conn.info.dbname
        self.postmaster = int((pg.data / "postmaster.pid").read_text().split("\n", 1)[0])
        self.ids = itertools.count()

    def queued(self, conn=None) -> int:
        """Unleased queries in S."""
        return (conn or self.conn).execute("SELECT count(*) FROM queries WHERE lease_id IS NULL").fetchone()[0]

    def counters(self) -> dict:
        """Commits of this database and WAL flushes of the server so far, and CPU seconds of PostgreSQL's
        processes by pid (backends come and go; each is charged what it used while the window was open)."""
        commits = self.conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                                    (self.database,)).fetchone()[0]
        syncs = self.conn.execute("SELECT wal_sync FROM pg_stat_wal").fetchone()[0]
        cpu = {}
        for pid in self._postgres():
            try:
                cpu[pid] = cpu_seconds(pid)
            except FileNotFoundError:  # a backend that ended since it was listed
                pass
        return {"commits": commits, "wal_syncs": syncs, "cpu": cpu}

    def _postgres(self) -> list[int]:
        pids = [self.postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == self.postmaster:
                    pids.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                pass  # gone meanwhile
        return pids

    def close(self) -> None:
        self.conn.close()


class _Refill:
    """Keeps S near `target` unleased queries while it runs, as workers keep it full: every REFILL_SECONDS it submits
    fresh candidates through a replica (SubmitCandidates) for what was leased meanwhile. A lease costs PostgreSQL a
    pass over S in pick order (the order is not an index's), so S's size is held, not left to drain."""

    def __init__(self, address: str, url: str, target: int, stocker: _Stocker):
        import psycopg

        self.client = CoordinatorClient(address, retry_for=30)
        self.conn = psycopg.connect(url, autocommit=True)
        self.target, self.stocker = target, stocker
        self.payload = Payload.from_array(np.random.default_rng(0).random((1, 8, 8), dtype=np.float32))
        self.stop = threading.Event()
        self.failed: BaseException | None = None
        self.top_up()
        self.thread = threading.Thread(target=self._loop, name="refill", daemon=True)

    def top_up(self) -> None:
        missing = self.target - self.stocker.queued(self.conn)
        while missing > 0:
            ids = [next(self.stocker.ids) for _ in range(min(STOCK_BATCH, missing))]
            r = self.client.submit_candidates(worker_id="stock", strategy="margin", model_version=0,
                                              candidates=[(f"item-{i}", self.payload, 0.5) for i in ids])
            if r.accepted == 0:
                raise RuntimeError(f"S took none of {len(ids)} candidates")
            missing -= r.accepted

    def _loop(self) -> None:
        try:
            while not self.stop.wait(REFILL_SECONDS):
                self.top_up()
        except BaseException as exc:  # noqa: BLE001 - raised again by __exit__
            self.failed = exc

    def __enter__(self) -> "_Refill":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(CALL_TIMEOUT + 30)
        self.client.close()
        self.conn.close()
        if self.failed is not None and exc[0] is None:
            raise RuntimeError("refilling S failed") from self.failed


def _delta(before: dict, after: dict, elapsed: float) -> dict:
    cpu = sum(after["cpu"].values()) - sum(v for pid, v in before["cpu"].items() if pid in after["cpu"])
    return {"commits_per_second": (after["commits"] - before["commits"]) / elapsed,
            "wal_flushes_per_second": (after["wal_syncs"] - before["wal_syncs"]) / elapsed,
            "postgres_cpu_percent": 100 * cpu / elapsed}


async def _phase(replicas: list[_Replica], annotators: int, warmup: float, seconds: float, stocker: _Stocker) -> dict:
    stop = asyncio.Event()
    waits: list[tuple[float, float]] = []
    errors: dict[str, int] = {}
    channels: list[list[grpc.aio.Channel]] = [[] for _ in replicas]
    tasks = []
    for i in range(annotators):  # annotator i on replica i mod n: an even spread, as a Service's would be
        replica, k = i % len(replicas), i // len(replicas)
        if k % ANNOTATORS_PER_CHANNEL == 0:
            channels[replica].append(grpc.aio.insecure_channel(replicas[replica].address, options=CHANNEL_OPTIONS))
        stub = annotation_pb2_grpc.AnnotationServiceStub(channels[replica][-1])
        tasks.append(asyncio.ensure_future(_annotator(stub, f"rep-{len(replicas)}-{i}", stop, waits, errors)))
    try:
        await asyncio.sleep(warmup)
        before, coords0, busy0 = stocker.counters(), [cpu_seconds(r.pid) for r in replicas], machine_busy()
        t0 = time.perf_counter()
        await asyncio.sleep(seconds / 2)
        sessions = [await asyncio.to_thread(r.open_sessions) for r in replicas]
        await asyncio.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
        t1 = time.perf_counter()
        after, coords1, busy1 = stocker.counters(), [cpu_seconds(r.pid) for r in replicas], machine_busy()
        left = stocker.queued()
    finally:
        stop.set()
        _, pending = await asyncio.wait(tasks, timeout=CALL_TIMEOUT)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for channel in (c for cs in channels for c in cs):
            await channel.close()
    elapsed = t1 - t0
    window = [w for start, w in waits if t0 <= start and start + w <= t1]
    labels_per_second = len(window) / elapsed
    pg = _delta(before, after, elapsed)
    return {"replicas": len(replicas), "labels": len(window), "labels_per_second": labels_per_second,
            "wait": percentiles(window) if window else {"p50": float("nan"), "p99": float("nan"), "count": 0},
            "coordinator_cpu_percent": [100 * (b - a) / elapsed for a, b in zip(coords0, coords1)],
            **pg, "commits_per_label": pg["commits_per_second"] / labels_per_second if window else float("nan"),
            "open_sessions_per_replica": sessions, "errors": errors, "queued_left": left,
            "machine_busy_percent": 100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]),
            "load_average": os.getloadavg()[0]}


async def _annotator(stub, name: str, stop: asyncio.Event, waits: list, errors: dict) -> None:
    """One session, window of one: label the held query at once, then wait for the ack and the next query."""
    call = stub.AnnotationSession()
    try:
        await call.write(annotation_pb2.SessionRequest(want=1, open=annotation_pb2.SessionOpen(annotator_id=name)))
        ready: list = []
        ref, acked, t0 = 0, True, 0.0
        while not stop.is_set():
            r = await call.read()
            if r is grpc.aio.EOF:
                return
            ready += r.queries
            if r.HasField("error"):
                code = next((c.name for c in grpc.StatusCode if c.value[0] == r.error.code), "UNKNOWN")
                errors[code] = errors.get(code, 0) + 1
            acked = acked or r.ref == ref
            if not (acked and ready):
                continue
            if ref:
                waits.append((t0, time.perf_counter() - t0))
            q = ready.pop(0)
            ref, acked = ref + 1, False
            t0 = time.perf_counter()
            await call.write(annotation_pb2.SessionRequest(ref=ref, want=1, label=annotation_pb2.SessionLabel(
                lease_id=q.lease_id, item_id=q.item_id, label=1)))
        await call.done_writing()  # the held query goes back to S at once (keep_leases is off)
    except grpc.aio.AioRpcError as exc:
        errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
    finally:
        call.cancel()


# One label's two transactions as the coordinator runs them (postgres_store.lease_next, record_label), pgbench's
# variables passed as parameters (-M prepared); the lease id is unique per client and draw.
# When S is momentarily empty (pgbench outruns the stocker) the lease finds nothing: the item is '' and the label
# changes nothing (only labels that reached L count).
_LABEL_SCRIPT = """\\set r random(1, 1000000000000)
SELECT coalesce((SELECT item_id FROM aal_lease_next('pgb-' || :client_id || '-' || :r, 'pgb-' || :client_id,
    extract(epoch FROM clock_timestamp()), extract(epoch FROM clock_timestamp()) + 600, {cap}, '{pick}', false)
    WHERE item_id IS NOT NULL), '') AS item \\gset
SELECT seq FROM aal_record_label('pgb-' || :client_id || '-' || :r, :item, 1, 'pgb-' || :client_id,
    extract(epoch FROM clock_timestamp()), 1, 'pgb-' || :client_id);
"""
_INSERT_SCRIPT = "INSERT INTO commit_probe (v) VALUES (1);\n"


def _bound(pg: LocalPostgres, bindir: Path, clients: int, seconds: float, stocker: _Stocker) -> dict:
    """PostgreSQL alone: pgbench running a label's transactions, then one-row INSERT commits."""
    config = CoordinatorConfig()
    stocker.conn.execute("CREATE TABLE commit_probe (v integer)")
    out = {}
    for name, script in (("same_transactions", _LABEL_SCRIPT.format(cap=config.max_leases_per_annotator,
                                                                     pick=config.pick)),
                         ("insert_commit", _INSERT_SCRIPT)):
        path = pg.root / f"{name}.sql"
        path.write_text(script)
        labels0 = stocker.conn.execute("SELECT count(*) FROM labels").fetchone()[0]
        duration = max(1, round(seconds))
        before, busy0 = stocker.counters(), machine_busy()
        done = subprocess.run([str(bindir / "pgbench"), "-n", "-M", "prepared", "-f", str(path),
                               "-c", str(clients), "-j", "2", "-T", str(duration),
                               "-h", str(pg.root), "-U", "aal", stocker.database],
                              capture_output=True, text=True, timeout=seconds + 120)
        after, busy1 = stocker.counters(), machine_busy()  # its backends flushed their counts as they ended
        if done.returncode != 0:
            raise RuntimeError(f"pgbench {name} failed ({done.returncode}): {done.stderr[-2000:]}")
        tps = float(re.search(r"^tps = ([0-9.]+)", done.stdout, re.M).group(1))
        latency = float(re.search(r"^latency average = ([0-9.]+) ms", done.stdout, re.M).group(1))
        pg_figures = _delta(before, after, duration)  # commits over pgbench's run time
        out[name] = {"scripts_per_second": tps, "latency_ms": latency, "clients": clients,
                     "commits_per_second": pg_figures["commits_per_second"],
                     "wal_flushes_per_second": pg_figures["wal_flushes_per_second"],
                     "machine_busy_percent": 100 * (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])}
        if name == "same_transactions":
            labeled = stocker.conn.execute("SELECT count(*) FROM labels").fetchone()[0] - labels0
            out[name]["labels"] = labeled
            out[name]["labels_per_second"] = labeled / duration  # durable labels, counted in L
    return out


def rows(r: dict) -> list[str]:
    """This benchmark's lines of the results table (benchmarks/__main__.py)."""
    if "skipped" in r:
        return [f"| 15 | coordinator replicas over PostgreSQL | skipped: {r['skipped']} | – | – | – | – |"]
    b = r["bound"]["same_transactions"]
    ins = r["bound"]["insert_commit"]

    def phase(p):
        cpu = " + ".join(f"{c:.0f}" for c in p["coordinator_cpu_percent"])
        return (f"{p['labels_per_second']:.0f} labels/s, wait p50 {p['wait']['p50'] * 1e3:.1f} / p99 "
                f"{p['wait']['p99'] * 1e3:.1f} ms; CPU coordinators {cpu}%, PostgreSQL "
                f"{p['postgres_cpu_percent']:.0f}%; {p['commits_per_second']:.0f} commits/s "
                f"({p['commits_per_label']:.2f} a label), {p['wal_flushes_per_second']:.0f} WAL flushes/s")

    one, two = r["replicas"]["1"], r["replicas"]["2"]
    bound = (f"pgbench, same 2 transactions, {b['clients']} connections: {b['labels_per_second']:.0f} labels/s "
             f"({b['commits_per_second']:.0f} commits/s); one-row INSERT: {ins['commits_per_second']:.0f} commits/s")
    return [
        f"| 15 | 1 coordinator replica over PostgreSQL, {r['annotators']} session annotators, no think time "
        f"({r['measured_at']}) | {phase(one)} | {bound} | {r['one_replica_of_bound']:.2f} | – | – |",
        f"| 15b | 2 replicas, same database, annotators split evenly | {phase(two)} | 1 replica "
        f"{one['labels_per_second']:.0f} labels/s | {r['scaling']:.2f}× | – | – |",
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))

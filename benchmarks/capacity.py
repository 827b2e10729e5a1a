"""Capacity at people's pace: how many annotators, each labeling one item every 2 s, one coordinator serves with
p99 wait <= 50 ms, while 2 servers train and 2 workers score in their own processes.

First the loop is brought to its steady state (common.warm_up: annotators label as fast as they can until models
trained on labels exist and S is stocked from them; before the first model S holds only the cold start's batch).
The annotators are coroutines in this process, spread over several grpc.aio channels. Each holds one
AnnotationSession stream, as AnnotationClient does (one query asked for with each label: the label's
acknowledgement and the next query come back together), "labels" for 2 s on average (uniform 1-3 s, so they do
not move in lockstep) and sends the label. Wait = from sending the label to holding the next query.
`session=False` runs the same people on the unary calls (long-poll LeaseQuery, SubmitLabel) instead. Their number steps up; each step gets a warm-up, then a
window long enough for a few hundred waits, and the steps stop after the first one that misses the target.
For each step: wait p50/p99, labels/s, and where the CPU went (coordinator, this load generator, the machine),
plus the least S held, so that what bounded the first failing step can be read off.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import tempfile
import time
from pathlib import Path

import grpc

from aal_rpc.experiment.processes import ProcessGroup, command
from aal_rpc.grpc_utils import CHANNEL_OPTIONS
from aal_rpc.proto.v1 import admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc
from benchmarks.annotators import annotator_load
from benchmarks.common import cpu_seconds, machine_busy, percentiles, synthetic_npz, warm_up

STEPS = (25, 50, 100, 200, 400, 800, 1200, 1600, 2000, 2400)
WAIT_TARGET_SECONDS = 0.05
LABEL_SECONDS = 2.0  # mean time a person takes per item; each item takes uniform(0.5, 1.5) x this
ANNOTATORS_PER_CHANNEL = 25  # annotators share connections, as many browsers behind one web front end would
MIN_WAITS = 300  # a step's window lasts until about this many waits are expected (p99 from a few hundred)
LONG_POLL_SECONDS = 10.0
CALL_TIMEOUT = 10.0
STARTUP_TIMEOUT = 180.0  # seconds for the loop's steady state (torch imports, the first models, on 2 busy cores)
WARM_UP_ANNOTATORS = 32  # label as fast as they can until models trained on labels exist and S is stocked


def run(*, steps: tuple[int, ...] = STEPS, warmup: float = 5.0, seconds: float = 15.0, items: int = 200_000,
        capacity: int = 4096, servers: int = 2, workers: int = 2, min_waits: int = MIN_WAITS, keep_going: bool = False,
        smoke: bool = False, session: bool = True) -> dict:
    """keep_going: run every step, not only up to the first failing one (the whole curve, to read a noisy run)."""
    if smoke:
        steps, warmup, seconds, items, capacity, servers, workers, min_waits = (10, 20), 1.0, 3.0, 20_000, 1024, 0, 1, 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        procs = ProcessGroup(tmp / "logs")
        try:
            dataset = synthetic_npz(tmp / "data.npz", items)
            coord, address = procs.start_coordinator("coordinator", [
                "--data-dir", tmp / "coord", "--dataset", dataset, "--model", "mlp", "--pool-capacity", capacity])
            for i in range(servers):  # modest rounds: they keep training without taking the 2 cores
                procs.start(f"server-{i}", command("server", "--coordinator", address, "--server-id", f"server-{i}",
                                                   "--epochs", "1", "--min-steps", "100", "--min-new-labels", "500",
                                                   "--seed", i, "--threads", "1"))
            for j in range(workers):
                procs.start(f"worker-{j}", command(
                    "worker", "--coordinator", address, "--worker-id", f"worker-{j}", "--shard-index", j,
                    "--num-shards", workers, "--strategy", "random" if smoke else "entropy",
                    "--batch-size", "1024", "--seed", j, "--threads", "1"))
            others = [p.pid for name, p in procs.procs.items() if name != "coordinator"]
            result = asyncio.run(_measure(address, coord.pid, others, steps=steps, warmup=warmup, seconds=seconds,
                                          min_waits=min_waits, keep_going=keep_going,
                                          models=2 if servers else 0, session=session))
        finally:
            procs.stop_all()
    failing = next((s for s in result["steps"] if not s["pass"]), None)
    passing = [s for s in result["steps"] if not failing or s["annotators"] < failing["annotators"]]
    return {**result, "servers": servers, "workers": workers, "pool_capacity": capacity, "items": items,
            "transport": "AnnotationSession" if session else "unary",
            "label_seconds": LABEL_SECONDS, "target": f"p99 wait <= {WAIT_TARGET_SECONDS * 1e3:.0f} ms",
            "capacity": passing[-1]["annotators"] if passing else 0, "first_failing": failing}


class _Load:
    """The annotator coroutines and what they measured: (SubmitLabel start, wait) pairs, errors, empty polls."""

    def __init__(self, address: str, session: bool = True):
        self.address = address
        self.session = session
        self.channels: list[grpc.aio.Channel] = []
        self.tasks: list[asyncio.Task] = []
        self.waits: list[tuple[float, float]] = []
        self.errors: dict[str, int] = {}
        self.empty_polls = 0
        self.stop = asyncio.Event()

    def grow(self, n: int) -> None:
        while len(self.tasks) < n:
            i = len(self.tasks)
            if i % ANNOTATORS_PER_CHANNEL == 0:
                self.channels.append(grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS))
            stub = annotation_pb2_grpc.AnnotationServiceStub(self.channels[-1])
            person = self._session_annotator if self.session else self._annotator
            self.tasks.append(asyncio.ensure_future(person(stub, f"capacity-{i}", random.Random(i))))

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, unless stopped first; whether to go on."""
        try:
            await asyncio.wait_for(self.stop.wait(), seconds)
        except asyncio.TimeoutError:
            return True
        return False

    async def _lease(self, stub, annotator: str):
        while not self.stop.is_set():
            try:
                resp = await stub.LeaseQuery(annotation_pb2.LeaseQueryRequest(
                    annotator_id=annotator, wait_seconds=LONG_POLL_SECONDS), timeout=LONG_POLL_SECONDS + CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                self._error(exc)
                await self._sleep(0.5)
                continue
            if resp.found:
                return resp.query
            self.empty_polls += 1
        return None

    async def _annotator(self, stub, annotator: str, rng: random.Random) -> None:
        if not await self._sleep(rng.uniform(0, LABEL_SECONDS)):  # arrive spread over one labeling time
            return
        query = await self._lease(stub, annotator)
        while query is not None:
            if not await self._sleep(LABEL_SECONDS * rng.uniform(0.5, 1.5)):
                break
            t0 = time.perf_counter()
            try:
                await stub.SubmitLabel(annotation_pb2.SubmitLabelRequest(
                    lease_id=query.lease_id, item_id=query.item_id, label=rng.randrange(10),
                    annotator_id=annotator), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                self._error(exc)
            query = await self._lease(stub, annotator)
            if query is not None:
                self.waits.append((t0, time.perf_counter() - t0))
        if query is not None:  # give the held item back to S for whoever comes next
            try:
                await stub.ReleaseQuery(annotation_pb2.ReleaseQueryRequest(
                    lease_id=query.lease_id, item_id=query.item_id, annotator_id=annotator), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                self._error(exc)

    async def _session_annotator(self, stub, annotator: str, rng: random.Random) -> None:
        if not await self._sleep(rng.uniform(0, LABEL_SECONDS)):  # arrive spread over one labeling time
            return
        call = stub.AnnotationSession()
        try:
            await call.write(annotation_pb2.SessionRequest(want=1, open=annotation_pb2.SessionOpen(
                annotator_id=annotator)))
            ready: list = []
            ref = 0
            while not self.stop.is_set():
                while not ready:  # the first query, or the one that came back with the last label
                    r = await call.read()
                    if r is grpc.aio.EOF:
                        return
                    ready += r.queries
                    if r.HasField("error"):
                        self._session_error(r.error.code)
                    if r.dry:
                        self.empty_polls += 1
                query = ready.pop(0)
                if not await self._sleep(LABEL_SECONDS * rng.uniform(0.5, 1.5)):
                    break
                ref += 1
                t0 = time.perf_counter()
                await call.write(annotation_pb2.SessionRequest(ref=ref, want=1, label=annotation_pb2.SessionLabel(
                    lease_id=query.lease_id, item_id=query.item_id, label=rng.randrange(10))))
                acked = False
                while not (acked and ready):
                    r = await call.read()
                    if r is grpc.aio.EOF:
                        return
                    ready += r.queries
                    if r.ref == ref:
                        acked = True
                        if r.HasField("error"):
                            self._session_error(r.error.code)
                    if r.dry:
                        self.empty_polls += 1
                self.waits.append((t0, time.perf_counter() - t0))
            await call.done_writing()  # held leases go back by the session's rule (keep_leases=false: at once)
        except grpc.aio.AioRpcError as exc:
            self._error(exc)
        finally:
            call.cancel()

    def _session_error(self, code: int) -> None:
        name = next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
        self.errors[name] = self.errors.get(name, 0) + 1

    def _error(self, exc: grpc.aio.AioRpcError) -> None:
        self.errors[exc.code().name] = self.errors.get(exc.code().name, 0) + 1

    async def close(self) -> None:
        self.stop.set()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=LONG_POLL_SECONDS + CALL_TIMEOUT)
            for task in pending:
                task.cancel()
        for channel in self.channels:
            await channel.close()


async def _measure(address: str, coord_pid: int, others: list[int], *, steps, warmup: float, seconds: float,
                   min_waits: int, keep_going: bool, models: int, session: bool) -> dict:
    admin_channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    admin = admin_pb2_grpc.AdminServiceStub(admin_channel)
    load = _Load(address, session)
    out = []
    try:
        await admin.GetStats(admin_pb2.GetStatsRequest(), timeout=STARTUP_TIMEOUT, wait_for_ready=True)
        warm = await asyncio.to_thread(
            warm_up, address, lambda s: annotator_load(address, WARM_UP_ANNOTATORS, s, stream=True)["labels"],
            queued=4 * WARM_UP_ANNOTATORS, models=models, timeout=STARTUP_TIMEOUT)
        for n in steps:
            load.grow(n)
            await asyncio.sleep(warmup)
            out.append(await _step(load, admin, n, max(seconds, min_waits * LABEL_SECONDS / n), coord_pid, others))
            if not out[-1]["pass"] and not keep_going:
                break
    finally:
        await load.close()
        await admin_channel.close()
    return {"warm_up": warm, "steps": out}


async def _step(load: _Load, admin, n: int, seconds: float, coord_pid: int, others: list[int]) -> dict:
    errors0, empty0 = sum(load.errors.values()), load.empty_polls
    busy0, total0 = machine_busy()
    coord0, self0, others0 = cpu_seconds(coord_pid), cpu_seconds(os.getpid()), sum(map(cpu_seconds, others))
    t0 = time.perf_counter()
    least_queued = None
    while time.perf_counter() - t0 < seconds:  # S's fill, once a second
        stats = await admin.GetStats(admin_pb2.GetStatsRequest(), timeout=CALL_TIMEOUT)
        least_queued = stats.queued if least_queued is None else min(least_queued, stats.queued)
        await asyncio.sleep(min(1.0, max(0.0, seconds - (time.perf_counter() - t0))))
    t1 = time.perf_counter()
    elapsed = t1 - t0
    busy1, total1 = machine_busy()
    waits = [w for start, w in load.waits if t0 <= start < t1]
    step = {
        "annotators": n, "seconds": elapsed,
        "wait": percentiles(waits),
        "labels_per_second": len(waits) / elapsed,
        "errors": sum(load.errors.values()) - errors0, "empty_polls": load.empty_polls - empty0,
        "least_queued": least_queued,
        "cpu_percent": {
            "coordinator": 100 * (cpu_seconds(coord_pid) - coord0) / elapsed,
            "load_generator": 100 * (cpu_seconds(os.getpid()) - self0) / elapsed,
            "servers_and_workers": 100 * (sum(map(cpu_seconds, others)) - others0) / elapsed,
            "machine_busy": 100 * (busy1 - busy0) / max(1, total1 - total0),  # of all cores together
        },
        "load_average": os.getloadavg(),
    }
    step["pass"] = bool(waits) and step["wait"]["p99"] <= WAIT_TARGET_SECONDS and step["errors"] == 0
    step["bound"] = None if step["pass"] else _bound(step)
    return step


def _bound(step: dict) -> str:
    """A reading of what held a failing step back, from the figures it carries."""
    cpu, parts = step["cpu_percent"], []
    if step["errors"]:
        parts.append(f"{step['errors']} failed calls")
    if step["least_queued"] == 0 or step["empty_polls"]:
        parts.append("S ran dry: the workers did not keep up")
    offered = step["annotators"] / LABEL_SECONDS
    if step["labels_per_second"] < 0.9 * offered:
        parts.append(f"saturated: {step['labels_per_second']:.0f} of the {offered:.0f} labels/s offered were served")
    if cpu["coordinator"] >= 85:
        parts.append("the coordinator's CPU (one event loop)")
    elif cpu["load_generator"] >= 85:
        parts.append("the load generator's CPU")
    elif cpu["machine_busy"] >= 90:
        ours = (cpu["coordinator"] + cpu["load_generator"] + cpu["servers_and_workers"]) / os.cpu_count()
        parts.append(f"every core busy ({ours:.0f} of the machine's {cpu['machine_busy']:.0f}% this benchmark's, the "
                     f"rest other processes): the coordinator waits for a core")
    else:
        parts.append("no CPU saturated")
    return "; ".join(parts)


def rows(r: dict) -> list[str]:
    """This benchmark's lines of the results table (benchmarks/__main__.py)."""
    def step(s):
        c = s["cpu_percent"]
        return (f"{s['annotators']}: p50 {s['wait']['p50'] * 1e3:.1f} / p99 {s['wait']['p99'] * 1e3:.1f} ms, "
                f"{s['labels_per_second']:.0f} labels/s, CPU coordinator {c['coordinator']:.0f}%, load generator "
                f"{c['load_generator']:.0f}%, trainers + workers {c['servers_and_workers']:.0f}%, machine "
                f"{c['machine_busy']:.0f}% (load average {s['load_average'][0]:.1f})")

    w = r["warm_up"]
    setup = (f"{r['servers']} servers + {r['workers']} workers, one item each {r['label_seconds']:.0f} s, after a "
             f"warm-up of {w['labels']} labels{'' if w['steady'] else ' (**not steady**)'}; "
             f"steps {', '.join(str(s['annotators']) for s in r['steps'])}")
    f = r["first_failing"]
    passing = [s for s in r["steps"] if not f or s["annotators"] < f["annotators"]]
    best = step(passing[-1]) if passing else "–"
    fail = f"{step(f)}; bound: {f['bound']}" if f else "none failed"
    return [
        f"| 13 | capacity at people's pace: most annotators with p99 wait ≤ 50 ms ({setup}) | {r['capacity']} "
        f"annotators | – | – | – | – |",
        f"| 13b | the largest passing step | {best} | – | – | ≤ 50 ms | {'yes' if passing else '**no**'} |",
        f"| 13c | the first failing step | {fail} | – | – | – | – |",
    ]


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))

"""Shared pieces of the benchmarks: the bare gRPC echo baseline, load loops, percentiles, synthetic data."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from aal_rpc.experiment.processes import read_address
from aal_rpc.measures import mean_ci
from aal_rpc.grpc_utils import CHANNEL_OPTIONS, create_server, server_loop

ECHO_SERVICE = "bench.Echo"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def proc_status_mb(pid: int, field: str) -> float:
    """A memory figure of a process from /proc/PID/status, in MB: VmRSS (now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_echo(procs, name: str = "echo", *args: str) -> int:
    """Start the bare baseline (benchmarks.echo_server) as its own process; its port."""
    proc = procs.start(name, [sys.executable, "-m", "benchmarks.echo_server", *args], capture_stdout=True)
    return int(read_address(proc, name, procs.log_dir / f"{name}.log").rsplit(":", 1)[1])


def percentiles(samples: list[float]) -> dict:
    """p50, p99, mean and count of `samples` (nan, and count 0, for none)."""
    a = np.asarray(samples, dtype=float)
    if len(a) == 0:
        return {"p50": float("nan"), "p99": float("nan"), "mean": float("nan"), "count": 0}
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean()),
            "count": int(len(a))}


def start_echo_server(chunk: bytes = b"", chunks: int = 0) -> tuple[grpc.aio.Server, int]:
    """A bare gRPC server, same grpcio, server stack and options as the coordinator (asyncio, on the process's
    server loop): Unary echoes, Stream sends `chunks` copies of `chunk`, Bidi answers each message of a stream
    with itself (a message in, a message out: the AnnotationSession's baseline). Stop it with stop_echo_server."""
    async def unary(request, context):
        return request

    async def bidi(request_iterator, context):
        async for message in request_iterator:
            yield message

    async def stream(request, context):
        for _ in range(chunks):
            yield chunk

    async def start():
        server = create_server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(ECHO_SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        }),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    return server_loop().run(start())


def stop_echo_server(server: grpc.aio.Server) -> None:
    server_loop().run(server.stop(0))


def echo_calls(port: int):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    return (channel, channel.unary_unary(f"/{ECHO_SERVICE}/Unary"), channel.unary_stream(f"/{ECHO_SERVICE}/Stream"))


def run_threads(n: int, body: Callable[[int, threading.Event], None], seconds: float) -> None:
    """Run `body(i, stop)` in n threads for `seconds`."""
    stop = threading.Event()
    threads = [threading.Thread(target=body, args=(i, stop), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)


class StreamPairs:
    """One bidirectional stream driven a message at a time from one thread: `pair(msg)` sends a message and
    returns the next one received."""

    def __init__(self, call_factory):
        import queue

        self._outbox: queue.Queue = queue.Queue()
        self._responses = call_factory(iter(self._outbox.get, None))

    def pair(self, msg):
        self._outbox.put(msg)
        return next(self._responses)

    def close(self) -> None:
        self._outbox.put(None)
        for _ in self._responses:
            pass


def round_trips(concurrency: int, seconds: float, open_caller) -> tuple[list[float], float]:
    """Each of `concurrency` threads calls `open_caller()` once for its round-trip function (and the function to
    end it, or None), then times round trips until `seconds` are up: (every latency, elapsed seconds)."""
    lat: list[list[float]] = [[] for _ in range(concurrency)]

    def body(i, stop):
        trip, end = open_caller()
        trip()  # the connection (or stream) is up
        while not stop.is_set():
            t0 = time.perf_counter()
            trip()
            lat[i].append(time.perf_counter() - t0)
        if end is not None:
            end()

    t0 = time.perf_counter()
    run_threads(concurrency, body, seconds)
    return [x for xs in lat for x in xs], time.perf_counter() - t0


def bare_stream_load(port: int, concurrency: int, seconds: float, payload: bytes = b"x" * 64) -> dict:
    """Round trips (a message in, a message out) and pairs/s over `concurrency` bare bidirectional echo streams,
    one per thread, as AnnotationClients hold one AnnotationSession each."""
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS)
    bidi = channel.stream_stream(f"/{ECHO_SERVICE}/Bidi")

    def open_stream():
        s = StreamPairs(bidi)
        return (lambda: s.pair(payload)), s.close

    flat, elapsed = round_trips(concurrency, seconds, open_stream)
    channel.close()
    return {**percentiles(flat), "pairs_per_second": len(flat) / elapsed}


def bare_unary_load(port: int, concurrency: int, seconds: float, payload: bytes = b"x" * 64) -> dict:
    """Round-trip latencies and calls/s of bare echo calls at `concurrency`."""
    channel, unary, _ = echo_calls(port)
    unary(payload, timeout=10, wait_for_ready=True)
    flat, elapsed = round_trips(concurrency, seconds, lambda: ((lambda: unary(payload, timeout=10)), None))
    channel.close()
    return {**percentiles(flat), "calls_per_second": len(flat) / elapsed}


def warm_up(address: str, drive: Callable[[float], int], *, queued: int, models: int = 2,
            timeout: float = 180.0) -> dict:
    """Label with `drive(seconds)` (it labels for that long, returning how many) until the loop is in its steady
    state: `models` models trained on labels published, and S holding at least `queued` queries. Before that, S
    holds only the cold start's one batch (selector/loop.py: random or typical picks pile up in S no more than what
    annotators label while the first model trains), so a load measured then measures the wait for the first model,
    not the annotation path. Returns what it took: seconds, labels, the model version and S's stock at the end."""
    from aal_rpc.client import CoordinatorClient

    t0, labels = time.monotonic(), 0
    with CoordinatorClient(address) as admin:
        while True:
            stats = admin.stats()
            steady = stats.latest_model_version >= models and stats.queued >= queued
            if steady or time.monotonic() - t0 > timeout:
                break
            labels += drive(2.0)
    return {"seconds": time.monotonic() - t0, "labels": labels, "model_version": stats.latest_model_version,
            "queued": stats.queued, "steady": steady}


def synthetic_npz(path: Path, n: int, dim: int = 16, classes: int = 10, seed: int = 0) -> str:
    """A learnable synthetic dataset of n small vectors (a Gaussian mixture), as `npz:PATH`."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=2.0, size=(classes, dim))
    y = rng.integers(0, classes, n + 2000)
    x = (centers[y] + rng.normal(size=(n + 2000, dim))).astype(np.float32)
    np.savez(path, x=x[:n], y=y[:n], x_test=x[n:], y_test=y[n:])
    return f"npz:{path}"


def plus_minus(mean: float, half: float, *, digits: int = 3, scale: float = 1.0) -> str:
    """'mean ± half' as the tables write a figure with its 95% interval; just the mean when the half-width is nan
    (one seed: measures.mean_ci has no interval then)."""
    tail = f" ± {half * scale:.{digits}f}" if half == half else ""
    return f"{mean * scale:.{digits}f}{tail}"


def seeds_stat(values: list) -> dict:
    """A figure over seeds for results.json: {"mean", "ci95", "n"} (measures.mean_ci; None and 0 without any)."""
    mean, half, n = mean_ci(values) if values else (None, None, 0)
    return {"mean": mean, "ci95": half, "n": n}


def stat_pm(stat: dict, scale: float = 1.0, digits: int = 3) -> str:
    """A seeds_stat as a table writes it (plus_minus); '–' for one without values."""
    if stat["mean"] is None or stat["n"] == 0:
        return "–"
    return plus_minus(stat["mean"], stat["ci95"], digits=digits, scale=scale)

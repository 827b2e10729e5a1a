"""Targets 1 and 2: annotator wait and durable label throughput under load, against bare gRPC in the same run.

Load: `annotators` concurrent simulated annotators with no labeling delay, while 2 servers train and 4
workers score (all separate processes), measured in the loop's steady state: after a warm-up of labeling until
models trained on labels are published and S is stocked from them (common.warm_up; before the first model S
holds only the cold start's one batch, and the wait is for that model). Wait = from starting to submit a label to holding the next query.
Each annotator is an AnnotationClient on its AnnotationSession stream (one query ready ahead: the label's
acknowledgement and the next query come back in one message), and again on the unary calls (LeaseQuery +
SubmitLabel) for comparison.
Baselines, from the same client process at the same concurrency, served by a separate process with the same
grpcio and server options: a bare bidirectional echo stream per thread (a message in, a message out; the
stream's baseline, which the ratios use) and bare unary echo calls (the unary calls' baseline).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import grpc

from aal_rpc.client import AnnotationClient
from aal_rpc.experiment.processes import ProcessGroup, command
from aal_rpc.grpc_utils import create_channel
from benchmarks.common import (bare_stream_load, bare_unary_load, cpu_seconds, percentiles, run_threads, start_echo,
                               synthetic_npz, warm_up)


def run(*, annotators: int = 64, seconds: float = 10.0, items: int = 200_000, smoke: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        procs = ProcessGroup(tmp / "logs")
        try:
            port = start_echo(procs)
            bare = _measure_cpu(procs.procs["echo"].pid, lambda: bare_stream_load(port, annotators, seconds),
                                "server_cpu_percent")
            bare_unary = _measure_cpu(procs.procs["echo"].pid, lambda: bare_unary_load(port, annotators, seconds),
                                      "server_cpu_percent")
            dataset = synthetic_npz(tmp / "data.npz", items)
            coord, address = procs.start_coordinator("coordinator", [
                "--data-dir", tmp / "coord", "--dataset", dataset, "--model", "mlp", "--pool-capacity", "8192"])
            for i in range(0 if smoke else 2):
                procs.start(f"server-{i}", command("server", "--coordinator", address, "--epochs", "1",
                                                   "--threads", "1", "--min-new-labels", "500"))
            for j in range(1 if smoke else 4):
                procs.start(f"worker-{j}", command(
                    "worker", "--coordinator", address, "--shard-index", j, "--num-shards", 1 if smoke else 4,
                    "--strategy", "random" if smoke else "entropy", "--batch-size", "1024", "--poll-seconds", "0.1",
                    "--threads", "1"))
            def steady():  # each load starts from the steady state (a stock in S, models trained on labels)
                return warm_up(address, lambda s: annotator_load(address, annotators, s, stream=True)["labels"],
                               queued=annotators, models=0 if smoke else 2)

            warm = steady()
            measured = _measure_cpu(coord.pid, lambda: annotator_load(address, annotators, seconds, stream=True),
                                    "coordinator_cpu_percent")
            steady()
            unary = _measure_cpu(coord.pid, lambda: annotator_load(address, annotators, seconds, stream=False),
                                 "coordinator_cpu_percent")
        finally:
            procs.stop_all()
    cycles = measured["cycles_per_second"]
    wait_ratio = measured["wait"]["p99"] / bare["p99"]
    return {
        "annotators": annotators, "seconds": seconds,
        "bare": bare, "measured": measured, "warm_up": warm,
        "wait_p99_ratio": wait_ratio, "wait_target": "p99 <= 3x bare stream round trip p99",
        "wait_pass": wait_ratio <= 3.0,
        "throughput_ratio": cycles / bare["pairs_per_second"],
        "throughput_target": ">= 0.5 x bare stream message pairs/s",
        "throughput_pass": cycles >= 0.5 * bare["pairs_per_second"],
        # the unary calls (LeaseQuery + SubmitLabel a label) against bare unary calls, as before the stream
        "unary": {"bare": bare_unary, "measured": unary,
                  "wait_p99_ratio": unary["wait"]["p99"] / bare_unary["p99"],
                  "throughput_ratio": unary["cycles_per_second"] / (bare_unary["calls_per_second"] / 2)},
    }


def _measure_cpu(server_pid: int, load, server_key: str) -> dict:
    """`load()`'s figures, with the CPU the server process and this one (the load generator) used meanwhile."""
    server0, self0, t0 = cpu_seconds(server_pid), cpu_seconds(os.getpid()), time.perf_counter()
    figures = load()
    elapsed = time.perf_counter() - t0
    figures[server_key] = 100 * (cpu_seconds(server_pid) - server0) / elapsed
    figures["load_generator_cpu_percent"] = 100 * (cpu_seconds(os.getpid()) - self0) / elapsed
    return figures


def annotator_load(address: str, annotators: int, seconds: float, *, stream: bool) -> dict:
    """`annotators` threads label as fast as they can for `seconds` (AnnotationClient, on the stream or the unary
    calls): the waits, labels/s and errors."""
    channel = create_channel(address)
    waits: list[list[float]] = [[] for _ in range(annotators)]
    errors: list[str] = []
    counts = [0] * annotators

    def body(i, stop):
        client = AnnotationClient(address, f"bench-{i}", channel=channel, retry_for=5, stream=stream,
                                  prefetch=1 if stream else 0)
        q = client.lease(wait_seconds=5)
        while not stop.is_set() and q is not None:
            t0 = time.perf_counter()
            try:
                client.submit(q, 0)
                counts[i] += 1
                q = client.lease(wait_seconds=5)
            except grpc.RpcError as exc:
                errors.append(exc.code().name)
                q = client.lease(wait_seconds=5)
                continue
            waits[i].append(time.perf_counter() - t0)
        client.close()

    t0 = time.perf_counter()
    run_threads(annotators, body, seconds)
    elapsed = time.perf_counter() - t0
    channel.close()
    flat = [w for ws in waits for w in ws]
    return {"wait": percentiles(flat), "cycles_per_second": sum(counts) / elapsed, "labels": sum(counts),
            "errors": len(errors)}


if __name__ == "__main__":
    import json
    print(json.dumps(run(), indent=1))

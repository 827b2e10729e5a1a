"""Held-open calls: no caller can starve another.

A coordinator process (tokens on) is first probed idle, then again while this process holds open
  - `polls` LeaseQuery long polls on an empty pool (annotator token),
  - `follows` StreamLabels follow streams (server token),
  - `downloads` DownloadModel streams whose reader reads nothing (worker token): flow control stops the server,
  - `reflections` reflection streams with a token, and as many again without one (those are refused at once).
Each probe is `probes` sequential calls of health Check, GetStats, and LeaseQuery with no wait (the lease path on
an empty pool), plus the wake latency: from sending SubmitCandidates for one item until one of the waiting long
polls holds it (loaded only: idle, there is no poll to wake). Targets: health and GetStats p99 ≤ 100 ms while held,
and the lease path's p99 within 3× its idle p99. The coordinator's thread count is read from /proc both times.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from aal_rpc import serde
from aal_rpc.client import CoordinatorClient
from aal_rpc.experiment.processes import ProcessGroup
from aal_rpc.grpc_utils import CHANNEL_OPTIONS
from aal_rpc.models import build_model
from aal_rpc.proto.v1 import (admin_pb2, admin_pb2_grpc, annotation_pb2, annotation_pb2_grpc, selection_pb2,
                              selection_pb2_grpc, training_pb2, training_pb2_grpc)
from aal_rpc.security import ClientSecurity
from aal_rpc.serde import weights_to_bytes
from aal_rpc.types import Payload
from benchmarks.common import percentiles

TOKENS = {"annotator": "bench-annotator", "worker": "bench-worker", "server": "bench-server", "admin": "bench-admin"}
CALLS_PER_CHANNEL = 50  # held calls share connections, as many clients behind one proxy would
HEALTH_TARGET_SECONDS = 0.1


def _auth(role: str | None):
    return (("authorization", f"Bearer {TOKENS[role]}"),) if role else ()


def run(*, polls: int = 1000, follows: int = 200, downloads: int = 100, reflections: int = 140, probes: int = 200,
        smoke: bool = False) -> dict:
    if smoke:
        polls, follows, downloads, reflections, probes = 100, 20, 10, 14, 50
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokens = tmp / "tokens"
        tokens.write_text("".join(f"{role}:{token}\n" for role, token in TOKENS.items()))
        procs = ProcessGroup(tmp / "logs")
        try:
            coord, address = procs.start_coordinator("coordinator", [
                "--data-dir", tmp / "coord", "--dataset", "digits", "--model", "mlp", "--tokens-file", tokens])
            task = CoordinatorClient(address, security=ClientSecurity(token=TOKENS["admin"])).task()
            data = weights_to_bytes(build_model("mlp", task.input_shape, task.num_classes).state_dict())
            with CoordinatorClient(address, security=ClientSecurity(token=TOKENS["server"])) as trainer:
                trainer.upload_model(data, server_id="bench", trained_seq=0, num_labels=0, architecture="mlp",
                                     metrics={})
            result = asyncio.run(_measure(address, coord.pid, polls=polls, follows=follows, downloads=downloads,
                                          reflections=reflections, probes=probes))
        finally:
            procs.stop_all()
    loaded, idle = result["loaded"], result["idle"]
    result["health_pass"] = loaded["health"]["p99"] <= HEALTH_TARGET_SECONDS
    result["stats_pass"] = loaded["stats"]["p99"] <= HEALTH_TARGET_SECONDS
    result["lease_ratio"] = loaded["lease"]["p99"] / idle["lease"]["p99"]
    result["lease_pass"] = result["lease_ratio"] <= 3.0
    result["target"] = "health and GetStats p99 <= 100 ms while held; lease p99 <= 3x idle"
    return result


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


async def _probe(channel: grpc.aio.Channel, probes: int) -> dict:
    health = health_pb2_grpc.HealthStub(channel)
    admin = admin_pb2_grpc.AdminServiceStub(channel)
    annotation = annotation_pb2_grpc.AnnotationServiceStub(channel)
    calls = {
        "health": lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10),
        "stats": lambda: admin.GetStats(admin_pb2.GetStatsRequest(), metadata=_auth("admin"), timeout=10),
        "lease": lambda: annotation.LeaseQuery(annotation_pb2.LeaseQueryRequest(annotator_id="probe"),
                                               metadata=_auth("annotator"), timeout=10),
    }
    out = {}
    for name, call in calls.items():
        samples = []
        for _ in range(probes):
            t0 = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - t0)
        out[name] = percentiles(samples)
    return out


async def _forever(first):
    yield first
    await asyncio.Event().wait()  # a request stream that stays open until the call is cancelled


async def _measure(address: str, pid: int, *, polls: int, follows: int, downloads: int, reflections: int,
                   probes: int) -> dict:
    n_channels = -(-(polls + follows + downloads + 2 * reflections) // CALLS_PER_CHANNEL)
    channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(n_channels)]
    probe_channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    held: list = []
    try:
        await probe_channel.channel_ready()
        idle = await _probe(probe_channel, probes)
        idle_threads = _threads(pid)

        def channel(i):
            return channels[i // CALLS_PER_CHANNEL]

        n = 0
        poll_calls = []
        for _ in range(polls):
            call = annotation_pb2_grpc.AnnotationServiceStub(channel(n)).LeaseQuery(
                annotation_pb2.LeaseQueryRequest(annotator_id=f"held-{n}", wait_seconds=55),
                metadata=_auth("annotator"), timeout=60)
            poll_calls.append(call)
            n += 1
        for _ in range(follows):
            held.append(training_pb2_grpc.TrainingServiceStub(channel(n)).StreamLabels(
                training_pb2.StreamLabelsRequest(after_seq=0, follow=True), metadata=_auth("server"), timeout=120))
            n += 1
        for _ in range(downloads):
            held.append(selection_pb2_grpc.SelectionServiceStub(channel(n)).DownloadModel(
                selection_pb2.DownloadModelRequest(version=0), metadata=_auth("worker"), timeout=120))
            n += 1
        refused = []
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        for with_token in (True, False):
            for _ in range(reflections):
                # waiting for the connection: on a loaded machine a connection among a thousand can take a retry,
                # and a call that failed to connect (UNAVAILABLE) says nothing of how the coordinator answers
                call = reflection_pb2_grpc.ServerReflectionStub(channel(n)).ServerReflectionInfo(
                    _forever(request), metadata=_auth("admin" if with_token else None), timeout=120,
                    wait_for_ready=True)
                (held if with_token else refused).append(call)
                n += 1
        for call in held[follows:follows + downloads]:  # each download sends its header, then stalls on flow control
            await call.read()
        held.extend(poll_calls)
        refused_codes = [await call.code() for call in refused]
        await asyncio.sleep(1.0)  # let the long polls reach the server and wait there
        still_held = sum(not call.done() for call in held)
        loaded = await _probe(probe_channel, probes)
        loaded_threads = _threads(pid)
        wake = await _wake_latency(probe_channel, poll_calls, 20)
    finally:
        for call in held:
            call.cancel()
        for ch in (*channels, probe_channel):
            await ch.close()
    return {"held": {"long_polls": polls, "follow_streams": follows, "downloads": downloads,
                     "reflection_streams": reflections, "still_open_when_probed": still_held},
            "unauthenticated_reflection": {"attempted": reflections,
                                           "refused": sum(c == grpc.StatusCode.UNAUTHENTICATED for c in refused_codes),
                                           "codes": dict(Counter(c.name for c in refused_codes))},
            "idle": idle, "loaded": loaded, "wake": wake,
            "coordinator_threads": {"idle": idle_threads, "loaded": loaded_threads}}


async def _wake_latency(channel: grpc.aio.Channel, polls: list, rounds: int) -> dict:
    """From sending a one-item SubmitCandidates until a waiting long poll holds that item."""
    selection = selection_pb2_grpc.SelectionServiceStub(channel)
    x = np.zeros((1, 8, 8), dtype=np.float32)
    waiting = {asyncio.ensure_future(_result(call)): call for call in polls}
    samples = []
    for r in range(rounds):
        item = f"wake-{r}"
        t0 = time.perf_counter()
        await selection.SubmitCandidates(selection_pb2.SubmitCandidatesRequest(
            worker_id="bench", strategy="random", model_version=0,
            candidates=[selection_pb2.Candidate(item_id=item, score=0.5,
                                                      payload=serde.payload_to_proto(Payload.from_array(x)))]),
            metadata=_auth("worker"), timeout=10)
        done, _ = await asyncio.wait(list(waiting), timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not done:
            raise RuntimeError("no long poll took the item")
        samples.append(time.perf_counter() - t0)
        for fut in done:
            waiting.pop(fut)
            if fut.result() is None or not fut.result().found:
                raise RuntimeError("a held long poll ended without the item")
    for fut in waiting:
        fut.cancel()
    return percentiles(samples)


async def _result(call):
    try:
        return await call
    except grpc.aio.AioRpcError:
        return None


def rows(r: dict) -> list[str]:
    """This benchmark's lines of the results table (benchmarks/__main__.py)."""
    def ok(v):
        return "yes" if v else "**no**"

    h, idle, loaded = r["held"], r["idle"], r["loaded"]
    held = (f"{h['long_polls']} long polls, {h['follow_streams']} follows, {h['downloads']} stalled downloads, "
            f"{h['reflection_streams']} reflection streams held")
    threads = r["coordinator_threads"]
    return [
        f"| 14 | health Check p99, {held} (coordinator threads {threads['idle']} idle → {threads['loaded']}) | "
        f"{loaded['health']['p99'] * 1e3:.2f} ms | idle {idle['health']['p99'] * 1e3:.2f} ms | – | ≤ 100 ms | "
        f"{ok(r['health_pass'])} |",
        f"| 14b | GetStats p99, same | {loaded['stats']['p99'] * 1e3:.2f} ms | idle {idle['stats']['p99'] * 1e3:.2f} ms"
        f" | – | ≤ 100 ms | {ok(r['stats_pass'])} |",
        f"| 14c | LeaseQuery p99 (empty pool, no wait), same | {loaded['lease']['p99'] * 1e3:.2f} ms | "
        f"idle {idle['lease']['p99'] * 1e3:.2f} ms | {r['lease_ratio']:.2f} | ≤ 3× | {ok(r['lease_pass'])} |",
        f"| 14d | a new item reaches one of the {h['long_polls']} waiting polls | p50 {r['wake']['p50'] * 1e3:.1f} ms, "
        f"p99 {r['wake']['p99'] * 1e3:.1f} ms | – | – | – | – |",
        f"| 14e | reflection streams opened without a token | {r['unauthenticated_reflection']['refused']} of "
        f"{r['unauthenticated_reflection']['attempted']} refused UNAUTHENTICATED | – | – | all | "
        f"{ok(r['unauthenticated_reflection']['refused'] == r['unauthenticated_reflection']['attempted'])} |",
    ]

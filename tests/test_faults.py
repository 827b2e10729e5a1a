"""Fault tests with real processes: a server killed mid-upload, workers and servers killed under load and
replaced. Each time the system recovers by itself and the labeled pool equals the acknowledged labels."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from aal_rpc.client import CoordinatorClient
from aal_rpc.experiment.processes import command
from tests.conftest import wait_until

pytestmark = pytest.mark.e2e

SLOW_UPLOADER = textwrap.dedent("""
    import sys, time
    from aal_rpc.chunking import sha256_hex
    from aal_rpc.client import CoordinatorClient
    from aal_rpc.proto.v1 import training_pb2
    data = b"\\0" * (8 << 20)
    header = training_pb2.UploadHeader(server_id="doomed", architecture="cnn", size_bytes=len(data),
                                       sha256=sha256_hex(data))
    def requests():
        yield training_pb2.UploadModelRequest(header=header)
        for i in range(8):
            print("chunk", i, flush=True)
            yield training_pb2.UploadModelRequest(chunk=data[i << 20:(i + 1) << 20])
            time.sleep(1)
    CoordinatorClient(sys.argv[1])._training.UploadModel(requests(), timeout=60)
""")


def readline(proc: subprocess.Popen, timeout: float = 60.0) -> str:
    """The process's next line of output; "" if none comes within `timeout` (it is killed, so no read hangs)."""
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    try:
        return proc.stdout.readline().decode()
    finally:
        watchdog.cancel()


def test_server_killed_mid_upload_leaves_registry_unchanged(tmp_path, procs):
    _, address = procs.start_coordinator("coordinator", ["--data-dir", tmp_path / "data"])
    blobs = tmp_path / "data" / "models"
    uploader = procs.start("uploader", [sys.executable, "-c", SLOW_UPLOADER, address], capture_stdout=True)
    for _ in range(3):  # header and a few chunks are through
        assert readline(uploader).startswith("chunk")
    assert wait_until(lambda: list(blobs.glob("*.tmp")))  # the coordinator is streaming the upload to a file
    uploader.send_signal(signal.SIGKILL)
    uploader.wait(10)
    # the coordinator is done with the upload: its temporary file is gone, and a publish would have renamed it
    assert wait_until(lambda: not list(blobs.glob("*.tmp")))
    with CoordinatorClient(address) as c:
        assert c.models() == []
        assert c.stats().models == 0
    assert not list(blobs.glob("*.safetensors"))
    # the system carries on: a real server publishes normally afterwards
    procs.start("worker", command("worker", "--coordinator", address, "--strategy", "random", "--threads", "1"))
    procs.start("server", command("server", "--coordinator", address, "--epochs", "2", "--threads", "1"))
    subprocess.run(command("annotate", "--coordinator", address, "--oracle", "--budget", "10"), check=True,
                   capture_output=True, timeout=120)
    with CoordinatorClient(address) as c:
        assert wait_until(lambda: c.stats().models >= 1)


def test_servers_and_workers_killed_under_load_are_replaced_and_no_label_is_lost(tmp_path, procs):
    _, address = procs.start_coordinator("coordinator", ["--data-dir", tmp_path / "data", "--pool-capacity", "40"])

    def start_worker(n):
        return procs.start(f"worker-{n}", command("worker", "--coordinator", address, "--shard-index", n % 2,
                                                  "--num-shards", "2", "--strategy", "margin", "--batch-size", "10",
                                                  "--poll-seconds", "0.1", "--threads", "1"))

    def start_server(n):
        return procs.start(f"server-{n}", command("server", "--coordinator", address, "--epochs", "2",
                                                  "--threads", "1", "--server-id", f"server-{n}"))

    workers = [start_worker(0), start_worker(1)]
    servers = [start_server(0)]
    acks = tmp_path / "acks.jsonl"
    annotate = procs.start("annotate", command(
        "annotate", "--coordinator", address, "--oracle", "--annotators", "4", "--budget", "120", "--delay", "0.05",
        "--json", "--acks-file", acks), capture_stdout=True)

    def acked():
        return len(acks.read_text().splitlines()) if acks.exists() else 0

    with CoordinatorClient(address) as c:
        for n in range(2, 4):  # twice: kill a worker and the server, start replacements
            assert wait_until(lambda: acked() >= 30 * (n - 1))
            victims = (workers.pop(0), servers.pop(0))
            for v in victims:
                v.send_signal(signal.SIGKILL)
                v.wait(10)
            workers.append(start_worker(n))
            servers.append(start_server(n))
        annotate.wait(timeout=240)
        summary = json.loads(annotate.stdout.read().decode().strip().splitlines()[-1])
        assert summary["acknowledged"] == 120 and summary["errors"] == {}
        labeled = {r.item_id: r.label for r in c.export(include_payload=False)}
        acknowledged = {json.loads(line)["item_id"]: json.loads(line)["label"] for line in acks.read_text().splitlines()}
        assert labeled == acknowledged
        assert wait_until(lambda: any(m.server_id == "server-3" for m in c.models()))

"""End to end: the installed commands as separate processes, talking gRPC on 127.0.0.1, started and stopped
by each test."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from aal_rpc.client import CoordinatorClient
from aal_rpc.experiment.processes import command, read_address
from tests.conftest import check_acknowledged_labels, wait_until

pytestmark = pytest.mark.e2e


def admin(address, *args) -> str:
    return subprocess.run(command("admin", "--coordinator", address, *args), check=True, capture_output=True,
                          text=True, timeout=60).stdout


def test_full_loop_by_hand(tmp_path, procs):
    _, address = procs.start_coordinator("coordinator", ["--data-dir", tmp_path / "data", "--dataset", "digits",
                                                         "--model", "cnn", "--pool-capacity", "60"])
    procs.start("server-0", command("server", "--coordinator", address, "--epochs", "5", "--threads", "1"))
    procs.start("worker-0", command("worker", "--coordinator", address, "--shard-index", "0", "--num-shards", "2",
                                    "--strategy", "entropy", "--batch-size", "10", "--threads", "1"))
    procs.start("worker-1", command("worker", "--coordinator", address, "--shard-index", "1", "--num-shards", "2",
                                    "--strategy", "margin", "--batch-size", "10", "--threads", "1"))
    out = subprocess.run(command("annotate", "--coordinator", address, "--oracle", "--annotators", "3", "--budget",
                                 "80", "--delay", "0.05", "--json"), check=True, capture_output=True, text=True,
                         timeout=240)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["acknowledged"] == 80 and summary["errors"] == {}

    assert wait_until(lambda: json.loads(admin(address, "stats", "--json"))["models"] >= 2)
    stats = json.loads(admin(address, "stats", "--json"))
    assert stats["labeled"] == 80 and stats["latest_model_version"] >= 2
    assert set(stats["labels_by_strategy"]) <= {"random", "typiclust", "entropy", "margin"}
    assert "version" in admin(address, "models")
    export = tmp_path / "labels.jsonl"
    admin(address, "export", "--format", "jsonl", "--out", str(export))
    rows = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(rows) == 80 and len({r["item_id"] for r in rows}) == 80
    assert all(r["worker_id"].startswith("worker-") and r["strategy"] and r["annotator_id"] for r in rows)


def test_coordinator_sigkill_and_restart_loses_no_acknowledged_label(tmp_path, procs):
    data = tmp_path / "data"
    coord, address = procs.start_coordinator("coordinator", ["--data-dir", data, "--pool-capacity", "40"])
    port = address.rsplit(":", 1)[1]
    procs.start("worker", command("worker", "--coordinator", address, "--strategy", "margin", "--batch-size", "20",
                                  "--poll-seconds", "0.1", "--threads", "1"))
    procs.start("server", command("server", "--coordinator", address, "--server-id", "survivor", "--epochs", "2",
                                  "--threads", "1"))
    acks = tmp_path / "acks.jsonl"
    annotate = procs.start("annotate", command(
        "annotate", "--coordinator", address, "--oracle", "--annotators", "4", "--budget", "150", "--delay", "0.02",
        "--json", "--acks-file", acks), capture_stdout=True)

    def acked() -> int:
        return len(acks.read_text().splitlines()) if acks.exists() else 0

    for round_ in range(2):  # kill it twice, at different points
        assert wait_until(lambda: acked() >= 40 * (round_ + 1)), "annotators made no progress"
        coord.send_signal(signal.SIGKILL)
        coord.wait()
        procs.procs.pop("coordinator")
        time.sleep(0.5)
        coord, address2 = _restart(procs, data, port)  # same port: the annotators only know this address
        assert address2 == address

    check_acknowledged_labels(annotate, acks, address, 150)
    # the same server and worker processes carried on through both restarts, with no operator action
    with CoordinatorClient(address) as client:
        assert wait_until(lambda: any(m.num_labels == 150 and m.server_id == "survivor" for m in client.models()))
    assert procs.procs["server"].poll() is None and procs.procs["worker"].poll() is None


def _restart(procs, data, port):
    proc = procs.start("coordinator", command("coordinator", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                                              "--pool-capacity", "40"), capture_stdout=True)
    return proc, read_address(proc, "coordinator", procs.log_dir / "coordinator.log")


def test_sigterm_stops_the_coordinator_gracefully(tmp_path, procs):
    coord, address = procs.start_coordinator("coordinator", ["--data-dir", tmp_path / "data"])
    assert json.loads(admin(address, "stats", "--json"))["labeled"] == 0
    coord.send_signal(signal.SIGTERM)
    assert coord.wait(timeout=30) == 0

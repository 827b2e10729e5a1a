"""Command-line interfaces in-process (click's CliRunner) against a real gRPC coordinator."""

import csv
import json

import numpy as np
from click.testing import CliRunner

from aal_rpc.annotators.terminal import parse_answer, render_terminal
from aal_rpc.cli import admin, annotate, experiment, worker
from aal_rpc.client import CoordinatorClient
from aal_rpc.types import Payload
from tests.conftest import TASK


def queue(address, ids):
    with CoordinatorClient(address) as c:
        x = np.linspace(0, 1, 64, dtype=np.float32).reshape(TASK.input_shape)
        c.submit_candidates(worker_id="w", strategy="entropy", model_version=0,
                            candidates=[(i, Payload.from_array(x), 0.5) for i in ids])


def test_terminal_annotator_labels_skips_and_quits(grpc_coordinator):
    address, srv = grpc_coordinator
    queue(address, ["1", "2", "3", "4"])  # a fourth on screen when the person quits: no 30 s wait for one
    result = CliRunner().invoke(annotate.main, ["--coordinator", address, "--annotator-id", "pat"],
                                input="7\nbanana\ns\n3\nq\n")
    assert result.exit_code == 0, result.output
    assert "not a class" in result.output and "2 labels saved" in result.output
    assert "\u2580" in result.output  # the image was drawn
    s = srv.coordinator.stats()
    assert (s.labeled, s.skipped, s.queued, s.leased) == (2, 1, 1, 0)  # quitting gave the fourth back


def test_admin_stats_models_and_every_export_format(grpc_coordinator, tmp_path):
    address, srv = grpc_coordinator
    queue(address, ["1", "2"])
    c = srv.coordinator
    for name in ("a", "b"):
        q = c.lease(name)
        c.submit_label(lease_id=q.lease_id, item_id=q.item_id, label=2, annotator_id=name)
    runner = CliRunner()
    stats = json.loads(runner.invoke(admin.main, ["--coordinator", address, "stats", "--json"]).output)
    assert stats["labeled"] == 2 and stats["queued"] == 0 and stats["leased"] == 0
    assert stats["latest_model_version"] == 0 and stats["labels_by_strategy"] == {"entropy": 2}
    assert runner.invoke(admin.main, ["--coordinator", address, "models", "--json"]).output.strip() == "[]"

    for fmt in ("jsonl", "csv", "npz"):
        out = tmp_path / f"labels.{fmt}"
        r = runner.invoke(admin.main, ["--coordinator", address, "export", "--format", fmt, "--out", str(out)])
        assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [r["seq"] for r in rows] == [1, 2] and {r["annotator_id"] for r in rows} == {"a", "b"}
    assert rows[0]["strategy"] == "entropy" and rows[0]["worker_id"] == "w"
    with open(tmp_path / "labels.csv") as f:
        assert [r["label"] for r in csv.DictReader(f)] == ["2", "2"]
    with np.load(tmp_path / "labels.npz") as z:
        assert z["x"].shape == (2, 1, 8, 8) and z["y"].tolist() == [2, 2]
        assert z["strategy"].tolist() == ["entropy", "entropy"]


def test_option_validation_is_clear():
    r = CliRunner().invoke(worker.main, ["--coordinator", "x:1", "--shard-index", "2", "--num-shards", "2"])
    assert r.exit_code != 0 and "--shard-index" in r.output
    r = CliRunner().invoke(experiment.main, ["--strategies", "entropy,psychic"])
    assert r.exit_code != 0 and "psychic" in r.output


def test_answers_and_terminal_rendering():
    assert parse_answer("3", TASK) == 3
    assert parse_answer("10", TASK) is None
    assert parse_answer("S", TASK) == "skip"
    assert render_terminal(np.zeros(3, np.float32)).startswith("vector of 3 values")
    assert render_terminal(np.zeros((1, 8, 8), np.float32)).count("\n") == 15  # 32 px tall, two per line


def test_every_command_module_runs_as_a_script():
    """`python -m aal_rpc.cli.X` (what the experiment runner and cmd/ launch) registers every subcommand."""
    import os
    import subprocess
    import sys
    for module, args in (("experiment", ["suite", "--help"]), ("admin", ["export", "--help"]),
                         ("coordinator", ["--help"])):
        out = subprocess.run([sys.executable, "-m", f"aal_rpc.cli.{module}", *args], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "AAL_COORDINATOR": "127.0.0.1:1"})
        assert out.returncode == 0, out.stderr


def test_programs_exit_with_the_commands_status_and_flushed_output(tmp_path):
    """run_program skips the interpreter's teardown; exit codes, stdout, stderr and log lines must survive it."""
    import subprocess
    import sys

    script = tmp_path / "prog.py"
    script.write_text(
        "import logging, sys, click\n"
        "from aal_rpc.cli.common import run_program\n"
        "@click.command()\n"
        "@click.argument('how')\n"
        "def main(how):\n"
        "    logging.basicConfig(stream=sys.stderr, level=logging.INFO)\n"
        "    logging.getLogger('t').info('log line')\n"
        "    click.echo('out line', nl=False)\n"  # no newline: only a flush writes it
        "    if how == 'usage':\n"
        "        raise click.UsageError('bad option')\n"
        "    if how == 'message':\n"
        "        sys.exit('fatal: message')\n"
        "    if how == 'crash':\n"
        "        raise RuntimeError('boom')\n"
        "run_program(main)\n")
    for how, code, in_err in (("ok", 0, "log line"), ("usage", 2, "bad option"), ("message", 1, "fatal: message"),
                              ("crash", 1, "RuntimeError: boom")):
        r = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=60)
        assert r.returncode == code, (how, r.stderr)
        assert r.stdout.startswith("out line") and in_err in r.stderr, (how, r.stdout, r.stderr)


def test_aal_experiment_passes_semi_supervised_rounds_to_its_servers(monkeypatch, tmp_path):
    from aal_rpc.experiment import runner

    class Started(Exception):
        pass

    servers = []

    class NoProcesses:
        def __init__(self, log_dir):
            pass

        def start_coordinator(self, name, args):
            return None, "127.0.0.1:1"

        def start(self, name, cmd, **kwargs):
            servers.append(cmd)
            raise Started

        def stop_all(self):
            pass

    configs = []
    monkeypatch.setattr(runner, "ProcessGroup", NoProcesses)
    monkeypatch.setattr(experiment, "run_experiment",
                        lambda cfg, **kw: configs.append(cfg) or runner.run_experiment(cfg))
    for flag, expected in (("--semi-supervised", True), ("--supervised-only", False)):
        r = CliRunner().invoke(experiment.main, [flag, "--out", str(tmp_path)])
        assert isinstance(r.exception, Started) and configs[-1].semi_supervised is expected
        assert flag in servers[-1] and "aal_rpc.cli.server" in servers[-1]

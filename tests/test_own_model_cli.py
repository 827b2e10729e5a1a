"""Your own model through the real commands: a coordinator, a server and a worker, each a process with the model's
module on its PYTHONPATH, run a task whose model is named by import path or by an entry point. A process that cannot
build the task's model, or builds it with other shapes than the coordinator, stops at start with one line."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest
from safetensors.torch import save_file

from aal_rpc.annotators.oracle import OracleAnnotators
from aal_rpc.client import CoordinatorClient
from aal_rpc.data import load_dataset
from aal_rpc.experiment.processes import command, read_address
from aal_rpc.models import build_model
from tests.conftest import wait_until
from tests.test_own_model import write_entry_point, write_models

pytestmark = pytest.mark.e2e

RUN_TIMEOUT = 120  # seconds; a process that should stop at start and does not fails the test by it


def env(*folders) -> dict:
    return {"PYTHONPATH": os.pathsep.join(map(str, folders))}


def start_system(procs, tmp_path, name: str, model: str, folder) -> str:
    """A coordinator, a server and a worker on digits with `model`, its module in `folder`; the address."""
    data = tmp_path / name
    proc = procs.start(f"coordinator-{name}", command(
        "coordinator", "--listen", "127.0.0.1:0", "--data-dir", data, "--dataset", "digits", "--model", model,
        "--pool-capacity", "20", "--max-labels-per-model", "10"), capture_stdout=True, env=env(folder))
    address = read_address(proc, name, procs.log_dir / f"coordinator-{name}.log")
    procs.start(f"server-{name}", command("server", "--coordinator", address, "--epochs", "1", "--min-steps", "20",
                                          "--threads", "1"), env=env(folder))
    procs.start(f"worker-{name}", command("worker", "--coordinator", address, "--batch-size", "10", "--threads", "1",
                                          "--poll-seconds", "0.1"), env=env(folder))
    return address


def labels_chosen_by_a_model(procs, name: str, address: str, budget: int) -> list:
    """Label `budget` items (an oracle in this process); the records whose item a model's strategy chose. A process
    of the system that stops meanwhile fails the test at once, with its log."""
    with CoordinatorClient(address, retry_for=30) as client:
        oracle = OracleAnnotators(address, load_dataset(client.task().dataset), annotators=2, budget=budget)
        labeling = threading.Thread(target=oracle.run, daemon=True)
        labeling.start()
        mine = [n for n in procs.procs if n.endswith(f"-{name}")]
        stopped = lambda: [n for n in mine if procs.procs[n].poll() is not None]  # noqa: E731
        wait_until(lambda: not labeling.is_alive() or stopped(), timeout=RUN_TIMEOUT)
        if labeling.is_alive():
            oracle.stop()
        assert not stopped(), "\n".join((procs.log_dir / f"{n}.log").read_text()[-2000:] for n in stopped())
        labeling.join(10)
        assert not labeling.is_alive(), f"{budget} labels not given within {RUN_TIMEOUT}s"
        assert wait_until(lambda: client.models(), timeout=60)
        return [r for r in client.export(include_payload=False) if r.provenance.model_version >= 1]


def test_a_model_by_import_path_and_by_entry_point_runs_the_whole_loop(tmp_path, procs):
    folder = tmp_path / "models"
    module = write_models(folder)
    write_entry_point(folder, "my-plain-model", f"{module}:plain")
    by_path = start_system(procs, tmp_path, "path", f"{module}:plain", folder)
    by_entry_point = start_system(procs, tmp_path, "entry", "my-plain-model", folder)
    for name, address in (("path", by_path), ("entry", by_entry_point)):
        chosen = labels_chosen_by_a_model(procs, name, address, 30)
        # the server trained and published the model, and the worker built it, scored its shard and proposed
        assert chosen and {r.provenance.strategy for r in chosen} == {"entropy"}
    for name in list(procs.procs):
        assert procs.procs[name].poll() is None, f"{name} stopped"


def one_line(result: subprocess.CompletedProcess, *phrases: str) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error: "), result
    assert "Traceback" not in result.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def test_a_process_that_cannot_build_the_model_as_the_coordinator_does_stops_at_start(tmp_path, procs):
    folder, other = tmp_path / "models", tmp_path / "other-version"
    module = write_models(folder, hidden=16)
    write_models(other, hidden=32, module=module)  # the same module, another version: other shapes
    model = f"{module}:plain"
    data = tmp_path / "data"
    proc = procs.start("coordinator", command("coordinator", "--listen", "127.0.0.1:0", "--data-dir", data,
                                              "--dataset", "digits", "--model", model), capture_stdout=True,
                       env=env(folder))
    address = read_address(proc, "coordinator", procs.log_dir / "coordinator.log")
    wrong = tmp_path / "wrong.safetensors"
    save_file(build_model("mlp", (1, 8, 8), 10).state_dict(), wrong)

    cases = {
        "worker without the module": (command("worker", "--coordinator", address, "--threads", "1"), env()),
        "server of another version": (command("server", "--coordinator", address, "--threads", "1"), env(other)),
        "server, weights of another model": (command("server", "--coordinator", address, "--threads", "1",
                                                     "--init-weights", wrong), env(folder)),
        "coordinator without the module": (command("coordinator", "--listen", "127.0.0.1:0", "--data-dir",
                                                   tmp_path / "new", "--dataset", "digits", "--model", model), env()),
    }
    running = {name: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      stdin=subprocess.DEVNULL, env={**os.environ, **extra})
               for name, (cmd, extra) in cases.items()}
    results = {}
    try:
        for name, p in running.items():
            _, err = p.communicate(timeout=RUN_TIMEOUT)
            results[name] = subprocess.CompletedProcess(p.args, p.returncode, "", err)
    finally:
        for p in running.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    one_line(results["worker without the module"], repr(model), f"no module named '{module}'", "PYTHONPATH")
    one_line(results["server of another version"], repr(model), "fingerprint", "coordinator")
    one_line(results["server, weights of another model"], "--init-weights", "do not match the task's architecture")
    one_line(results["coordinator without the module"], repr(model), f"no module named '{module}'")
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())  # no task recorded


def test_an_experiment_whose_model_fails_its_forward_pass_ends_in_one_line(tmp_path):
    """Servers and workers refuse a model whose forward pass fails (in eval mode here) at start; aal-experiment then
    says so in one line instead of waiting for a model that never comes."""
    folder = tmp_path / "models"
    module = write_models(folder)
    r = subprocess.run(command("experiment", "--dataset", "digits", "--model", f"{module}:fails_in_eval",
                               "--servers", "1", "--workers", "1", "--annotators", "2", "--budget", "20",
                               "--batch-size", "10", "--threads", "1", "--quiet", "--out", tmp_path / "run"),
                       capture_output=True, text=True, timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL,
                       env={**os.environ, **env(folder)})
    one_line(r, "exited", "failed in eval mode: RuntimeError: boom in eval")

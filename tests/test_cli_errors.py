"""Every command, run as a real process against a real coordinator, ends a failed call with one line on stderr that
names the cause (TLS, token, address) with the status, and a nonzero exit status: no traceback, no waiting out a
deadline, no retrying a refusal."""

from __future__ import annotations

import subprocess

import pytest

from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.experiment.processes import command
from aal_rpc.security import ServerTLS
from tests.conftest import TASK

pytestmark = pytest.mark.e2e

TOKENS = {"ann-token": "annotator", "wrk-token": "worker", "srv-token": "server", "adm-token": "admin"}
RUN_TIMEOUT = 120  # seconds; a command that loops or waits on a refusal runs into it and fails the test


@pytest.fixture
def coordinators(tmp_path, certs):
    """A plaintext coordinator, a TLS one with tokens and a mutual-TLS one: name -> HOST:PORT."""
    servers = {
        "plain": create_coordinator_server("127.0.0.1:0", tmp_path / "plain", TASK),
        "tls": create_coordinator_server("127.0.0.1:0", tmp_path / "tls", TASK, tokens=TOKENS,
                                         tls=ServerTLS(certs / "server.pem", certs / "server.key")),
        "mtls": create_coordinator_server("127.0.0.1:0", tmp_path / "mtls", TASK,
                                          tls=ServerTLS(certs / "server.pem", certs / "server.key", certs / "ca.pem")),
    }
    yield {name: f"127.0.0.1:{srv.port}" for name, srv in servers.items()}
    for srv in servers.values():
        srv.stop(0)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_all(cases: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Run the commands at once (they are slow to import on few cores); name -> (exit status, stderr)."""
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                    text=True) for name, cmd in cases.items()}
    results = {}
    try:
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=RUN_TIMEOUT)
            results[name] = (proc.returncode, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return results


def one_line(result: tuple[int, str], *phrases: str) -> str:
    code, err = result
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("Error: "), (code, err)
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


def test_admin_names_tls_auth_and_unreachable_in_one_line(coordinators, certs):
    ca, other_ca = ["--tls-ca", str(certs / "ca.pem")], ["--tls-ca", str(certs / "other-ca.pem")]
    client_cert = ["--tls-cert", str(certs / "client.pem"), "--tls-key", str(certs / "client.key")]

    def admin(address, *args, then=("stats",)):
        return command("admin", "--coordinator", address, *args, *then)

    r = run_all({
        "plaintext to TLS": admin(coordinators["tls"]),
        "TLS to plaintext": admin(coordinators["plain"], *ca),
        "untrusted certificate": admin(coordinators["tls"], *other_ca, "--token", "adm-token"),
        "no client certificate": admin(coordinators["mtls"], *ca),
        "nothing listens": admin(f"127.0.0.1:{free_port()}"),
        "no token": admin(coordinators["tls"], *ca),
        "unknown token": admin(coordinators["tls"], *ca, "--token", "forged"),
        "annotator token": admin(coordinators["tls"], *ca, "--token", "ann-token"),
        "ok": admin(coordinators["mtls"], *ca, *client_cert, then=("models", "--json")),
    })
    one_line(r["plaintext to TLS"], "speaks TLS", "--tls-ca", "UNAVAILABLE")
    one_line(r["TLS to plaintext"], "does not speak TLS", "UNAVAILABLE")
    one_line(r["untrusted certificate"], "not signed by the CA", "UNAVAILABLE")
    one_line(r["no client certificate"], "client certificate", "--tls-cert")
    one_line(r["nothing listens"], "connection refused", "UNAVAILABLE")
    one_line(r["no token"], "refused the token", "--token", "UNAUTHENTICATED")
    one_line(r["unknown token"], "refused the token", "UNAUTHENTICATED")
    one_line(r["annotator token"], "role", "PERMISSION_DENIED")
    assert r["ok"] == (0, "")  # the same command, rightly set up, succeeds


def test_daemons_and_annotators_stop_at_once_on_a_refusal(coordinators, certs):
    """A worker, a server and simulated annotators with a token of the wrong role, or no TLS where it is spoken:
    one line and exit status 1, not a loop of refused calls nor a wait for a coordinator that answers."""
    ca = ["--tls-ca", str(certs / "ca.pem")]
    tls = coordinators["tls"]
    r = run_all({
        "oracle with a worker token": command("annotate", "--coordinator", tls, *ca, "--token", "wrk-token", "--oracle",
                                              "--annotators", "2", "--budget", "5"),
        "worker with an annotator token": command("worker", "--coordinator", tls, *ca, "--token", "ann-token",
                                                  "--threads", "1"),
        "server with a worker token": command("server", "--coordinator", tls, *ca, "--token", "wrk-token",
                                              "--threads", "1"),
        "worker without TLS": command("worker", "--coordinator", tls, "--threads", "1"),
        "oracle with an unknown token": command("annotate", "--coordinator", tls, *ca, "--token", "forged",
                                                "--oracle"),
    })
    one_line(r["oracle with a worker token"], "PERMISSION_DENIED", "AnnotationService")
    one_line(r["worker with an annotator token"], "PERMISSION_DENIED", "SelectionService")
    one_line(r["server with a worker token"], "PERMISSION_DENIED", "TrainingService")
    one_line(r["worker without TLS"], "speaks TLS", "--tls-ca")
    one_line(r["oracle with an unknown token"], "refused the token", "UNAUTHENTICATED")


def test_a_failure_of_the_models_own_code_ends_a_daemon_in_one_line(caplog):
    """aal-server's rounds and aal-worker's scoring run the model on real data: a forward that fails there (or runs
    out of memory) ends the command with one line naming it, the traceback at DEBUG only."""
    import logging

    import click
    import pytest

    from aal_rpc.cli.common import model_failures

    with caplog.at_level(logging.DEBUG, logger="aal_rpc.cli.common"):
        with pytest.raises(click.ClickException) as info:
            with model_failures("a training round"):
                raise RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB")
    assert info.value.message == "a training round failed: RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
    assert [r.levelno for r in caplog.records] == [logging.DEBUG] and caplog.records[0].exc_info

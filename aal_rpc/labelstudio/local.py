"""A throwaway local Label Studio server for the bridge's tests and benchmark.

It runs the `label-studio` of its own virtualenv (`make labelstudio` builds .venv-labelstudio, or name one with
$AAL_LABEL_STUDIO_VENV) on SQLite in a temporary folder, on a free loopback port, with one admin user. A first start
on an empty database migrates it for half a minute or more, so `make labelstudio` leaves a migrated empty database in
the virtualenv (template/) that each server starts from. The organization allows legacy tokens, which the tests use
only to mint the user's personal access token (what teams give the bridge): since 1.23 legacy tokens are off unless
the organization enables them.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

VENV_ENV = "AAL_LABEL_STUDIO_VENV"
DEFAULT_VENV = Path(__file__).resolve().parents[2] / ".venv-labelstudio"
TEMPLATE = "template"  # in the virtualenv: a migrated, empty data dir (make labelstudio)
START_TIMEOUT = 300.0  # seconds for a start; one that must migrate an empty database takes a minute on 2 cores
STOP_TIMEOUT = 15.0  # seconds between SIGTERM and SIGKILL
EMAIL = "admin@example.com"


def label_studio_executable(venv: Path | None = None) -> Path | None:
    """The `label-studio` command of the Label Studio virtualenv, or None when there is none."""
    venv = Path(venv or os.environ.get(VENV_ENV) or DEFAULT_VENV)
    exe = venv / "bin" / "label-studio"
    return exe if exe.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalLabelStudio:
    """A Label Studio server at `url`; `token` is the admin's personal access token. Stop it with `stop()`."""

    def __init__(self, executable: Path, *, extra_env: dict[str, str] | None = None):
        self.executable = Path(executable)
        self.root = Path(tempfile.mkdtemp(prefix="aal-ls-"))
        self.data = self.root / "data"
        template = self.executable.parent.parent / TEMPLATE
        if (template / "label_studio.sqlite3").exists():
            shutil.copytree(template, self.data)
        else:
            self.data.mkdir()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(16)
        self.legacy_token = secrets.token_hex(20)
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen | None = None
        self.start_seconds: list[float] = []
        try:
            self.start()
            self.token = self._personal_access_token()
        except BaseException:
            self.stop()
            raise

    def env(self) -> dict[str, str]:
        return {**os.environ,
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data), "DJANGO_DB": "sqlite",
                "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
                # the bridge listens on 127.0.0.1: let webhooks reach a loopback address
                "SSRF_PROTECTION_ENABLED": "false",
                # nothing leaves the machine: no version check, no analytics, no error reports
                "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                **self.extra_env}

    def start(self) -> None:
        """Start the server (again, on the same port and data) and wait until it answers."""
        started = time.monotonic()
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             # --password=...: a password may start with "-", which argparse takes for an option when apart
             "--username", EMAIL, f"--password={self.password}", "--user-token", self.legacy_token,
             "--enable-legacy-api-token"],
            cwd=self.root, env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        self.start_seconds.append(time.monotonic() - started)
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"Label Studio did not answer within {START_TIMEOUT:.0f}s:\n{self.log_tail()}")

    def stop_server(self) -> None:
        """Stop the server, keeping its data (start() brings it back)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)  # its own process group (start_new_session): whatever it started too
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self) -> None:
        self.stop_server()
        self.start()

    def stop(self) -> None:
        """Stop the server and delete its data."""
        try:
            self.stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, chars: int = 3000) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def client(self, token: str | None = None):
        """An SDK client as the admin user (with the personal access token unless told otherwise)."""
        from label_studio_sdk import LabelStudio

        return LabelStudio(base_url=self.url, api_key=token or self.token, timeout=60)

    def _personal_access_token(self) -> str:
        """The admin's personal access token, minted with the legacy token (as a person does under Account &
        Settings)."""
        return self.client(self.legacy_token).tokens.create().token

    def __enter__(self) -> "LocalLabelStudio":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

"""Starting and stopping the system's commands as real subprocesses, with their logs in files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

STARTUP_TIMEOUT = 60.0  # seconds for the coordinator to print its address (imports torch on a slow disk)
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL


def command(module: str, *args: object) -> list[str]:
    """The command line of one of our executables, run by this interpreter (no PATH lookup); `args` as str()."""
    return [sys.executable, "-m", f"aal_rpc.cli.{module}", *map(str, args)]


class ProcessGroup:
    """Every process an experiment or test starts; `stop_all` ends them, SIGKILL after a grace period."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], *, capture_stdout: bool = False, env: dict | None = None
              ) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE if capture_stdout else log, stderr=log,
                                stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})
        log.close()
        self.procs[name] = proc
        return proc

    def start_coordinator(self, name: str, args: list[object]) -> tuple[subprocess.Popen, str]:
        """Start aal-coordinator on port 0 and return it with the address from its first line."""
        proc = self.start(name, command("coordinator", "--listen", "127.0.0.1:0", *args), capture_stdout=True)
        address = read_address(proc, name, self.log_dir / f"{name}.log")
        return proc, address

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int | None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()
        return proc.returncode

    def stop_all(self) -> None:
        """Stop the clients first, then the coordinators, so no client sees its coordinator vanish."""
        clients = [n for n in self.procs if not n.startswith("coordinator")]
        self._stop_together(clients)
        self._stop_together(list(self.procs))

    def _stop_together(self, names: list[str]) -> None:
        for name in names:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for name in names:
            proc = self.procs.pop(name)
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout:
                proc.stdout.close()


def read_line(proc: subprocess.Popen, timeout: float = STARTUP_TIMEOUT) -> str:
    """The process's next line of output, stripped; "" if none comes within `timeout` (the process is then killed,
    so a hung process ends in EOF rather than a hung read)."""
    watchdog = threading.Timer(timeout, proc.kill)
    watchdog.start()
    assert proc.stdout is not None, "read_line needs a process started with stdout=PIPE"
    try:
        return proc.stdout.readline().decode().strip()
    finally:
        watchdog.cancel()


def read_address(proc: subprocess.Popen, name: str, log_path: Path) -> str:
    """The HOST:PORT from a coordinator's first line, 'listening on HOST:PORT'."""
    line = read_line(proc)
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        tail = log_path.read_text()[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"{name} did not start (first line {line!r}):\n{tail}")
    return line.removeprefix("listening on ")

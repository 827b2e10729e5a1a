"""A throwaway local PostgreSQL cluster for the tests and benchmarks of the PostgreSQL store (test tooling: no shipped
command uses it, so it lives here, outside the package; benchmarks import it as tests.pg_local from the repo root).

It uses the server binaries of Debian's `postgresql` package (`apt-get install postgresql`): initdb into a
temporary folder, listening only on a Unix socket there (no TCP port at all), trust authentication for the
user `aal`, run as the `postgres` user when we are root (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def postgres_bindir() -> Path | None:
    """The folder of initdb and pg_ctl, or None when no PostgreSQL server is installed."""
    found = [shutil.which("pg_ctl")] + sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    for pg_ctl in filter(None, found):
        bindir = Path(pg_ctl).resolve().parent
        if (bindir / "initdb").exists():
            return bindir
    return None


class LocalPostgres:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="aalpg-"))  # short: a socket path has ~100 characters at most
        self.data = self.root / "data"
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.root, self.user)
        self._run("initdb", "-D", self.data, "-U", "aal", "--auth=trust", "-E", "UTF8", "--no-sync")
        self.start_server()
        self._names = itertools.count()

    def _run(self, tool: str, *args) -> None:
        """Run a server tool in the cluster's folder, as its user. The command is spawned (posix_spawn), never
        forked: a fork of this multi-threaded process (gRPC, torch and psycopg threads; a test restarts the server
        from a timer thread) runs their fork handlers in the child, which crashed it now and then (SIGSEGV before
        the exec). posix_spawn takes neither a folder nor a user, so env -C and runuser set them."""
        command = [shutil.which("env"), "-C", str(self.root)]
        if self.user:
            command += [shutil.which("runuser"), "-u", self.user, "--"]
        done = subprocess.run([*command, str(self.bindir / tool), *map(str, args)], capture_output=True,
                              close_fds=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-1000:] if log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(map(str, args[:1]))} failed ({done.returncode}): "
                               f"{done.stderr.decode().strip()}\n{tail}")

    def start_server(self) -> None:
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", self.data, "-l", self.root / "server.log",
                  "-o", f"-k {self.root} -c listen_addresses= -c max_connections=200")

    def stop_server(self) -> None:
        self._run("pg_ctl", "stop", "-m", "fast", "-w", "-D", self.data)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://aal@/{database}?host={self.root}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and delete the cluster."""
        try:
            self.stop_server()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalPostgres":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

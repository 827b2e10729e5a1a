"""Options and helpers every command shares."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

COORDINATOR_ENV = "AAL_COORDINATOR"
TOKEN_ENV = "AAL_TOKEN"

coordinator_option = click.option(
    "--coordinator", envvar=COORDINATOR_ENV, required=True, metavar="HOST:PORT",
    help=f"The coordinator's address (env {COORDINATOR_ENV}).")

def log_level_option(fn):
    """--log-level and --log-format (text, or json: one object per line for log pipelines)."""
    fn = click.option("--log-format", type=click.Choice(["text", "json"]), envvar="AAL_LOG_FORMAT", default="text",
                      show_default=True, help="json: one JSON object per line (env AAL_LOG_FORMAT).")(fn)
    fn = click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
                      show_default=True)(fn)

    @functools.wraps(fn)
    def wrapper(*args, log_level, log_format, **kwargs):
        setup_logging(log_level, log_format)
        return fn(*args, **kwargs)

    return wrapper


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": round(record.created, 6), "level": record.levelname.lower(), "logger": record.name,
               "msg": record.getMessage(), "pid": record.process}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)

threads_option = click.option(
    "--threads", type=int, default=0, show_default=True,
    help="Torch CPU threads (0: torch's default). Use 1 when many processes share few cores.")


def strategy_list(ctx, param, value: str | None) -> list[str] | None:
    """Click callback: a comma-separated list of known strategy names."""
    from aal_rpc.strategies import STRATEGIES

    if value is None:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in names if s not in STRATEGIES]
    if not names or unknown:
        raise click.BadParameter(f"unknown {unknown}; choose from {sorted(STRATEGIES)}")
    return names


def security_options(fn):
    """--token and --tls-* for every client command; they arrive as one `security` argument."""
    from aal_rpc.security import ClientSecurity

    path = click.Path(exists=True, dir_okay=False, path_type=Path)

    @click.option("--token", envvar=TOKEN_ENV, default=None, help=f"Bearer token of this role (env {TOKEN_ENV}).")
    @click.option("--tls-ca", type=path, default=None, help="CA certificate: use TLS and verify the coordinator.")
    @click.option("--tls-cert", type=path, default=None, help="Client certificate, for mutual TLS.")
    @click.option("--tls-key", type=path, default=None, help="Client private key, for mutual TLS.")
    @functools.wraps(fn)
    def wrapper(*args, token, tls_ca, tls_cert, tls_key, **kwargs):
        if (tls_cert is None) != (tls_key is None):
            raise click.UsageError("--tls-cert and --tls-key go together")
        return fn(*args, security=ClientSecurity(token=token, ca=tls_ca, cert=tls_cert, key=tls_key), **kwargs)

    return wrapper


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def set_threads(threads: int) -> None:
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def default_id(role: str) -> str:
    return f"{role}-{socket.gethostname()}-{os.getpid()}"


def on_termination(callback: Callable[[], None]) -> threading.Event:
    """Call `callback` once on SIGTERM or SIGINT; the returned event is set when that happens."""
    fired = threading.Event()

    def handler(signum, frame):
        if not fired.is_set():
            fired.set()
            callback()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return fired


def run_program(command: click.Command) -> None:
    """Run a command as a program, then end the process without Python's module teardown.

    A process that has imported torch spends about half a second of CPU tearing its modules down after
    its last line is written; coordinators, servers and workers are stopped and started often (rolling
    updates, experiments, tests), so they skip it. By then the command has returned: the store is closed,
    channels are closed, and the log handlers and standard streams are flushed here. An exception that
    escapes the command still ends the process the ordinary way, with its traceback.
    """
    try:
        command.main()  # click's standalone mode always ends in SystemExit
    except SystemExit as exc:
        code = exc.code
    else:
        code = 0
    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


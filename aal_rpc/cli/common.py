"""Options and helpers every command shares."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable

import click

COORDINATOR_ENV = "AAL_COORDINATOR"

coordinator_option = click.option(
    "--coordinator", envvar=COORDINATOR_ENV, required=True, metavar="HOST:PORT",
    help=f"The coordinator's address (env {COORDINATOR_ENV}).")

log_level_option = click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info", show_default=True)

threads_option = click.option(
    "--threads", type=int, default=0, show_default=True,
    help="Torch CPU threads (0: torch's default). Use 1 when many processes share few cores.")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


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

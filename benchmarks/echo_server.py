"""The bare baseline as its own process: `python -m benchmarks.echo_server --chunk-bytes N --chunks K`.

Prints 'listening on 127.0.0.1:PORT' first, like aal-coordinator, and serves until SIGTERM.
"""

from __future__ import annotations

import signal
import sys
import threading

import click

from benchmarks.common import start_echo_server, stop_echo_server


@click.command()
@click.option("--chunk-bytes", type=int, default=0)
@click.option("--chunks", type=int, default=0)
def main(chunk_bytes, chunks):
    server, port = start_echo_server(b"\1" * chunk_bytes, chunks)
    print(f"listening on 127.0.0.1:{port}")
    sys.stdout.flush()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    stop_echo_server(server)


if __name__ == "__main__":
    main()

"""aal-web: the labeling page for people, in a browser, served over HTTP(S) by this process, which talks to the
coordinator for them with each annotator's own token."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import click

from aal_rpc.cli.common import TOKEN_ENV, coordinator_option, log_level_option, run_program
from aal_rpc.grpc_utils import parse_address

log = logging.getLogger("aal.web")

TAB_TIMEOUT_HEARTBEATS = 8  # a page silent for this many heartbeats is taken for gone (browsers throttle the
#                             timers of hidden tabs to about one a minute, so a quiet tab is not a closed one)
CALL_RETRY_SECONDS = 30.0  # a person's action rides out a coordinator restart this long, then shows an error
SHUTDOWN_GRACE_SECONDS = 3.0  # long polls in flight are cut after this; their pages simply poll again
LISTEN_BACKLOG = 2048  # connections waiting to be accepted (uvicorn's own default)

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@coordinator_option
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Address to serve the page on; port 0 picks a free one. The first line printed is "
                   "'listening on HOST:PORT'.")
@click.option("--tls-cert", type=_FILE, default=None, help="Certificate (PEM): serve the page over HTTPS.")
@click.option("--tls-key", type=_FILE, default=None, help="Private key (PEM) of --tls-cert.")
@click.option("--token", envvar=TOKEN_ENV, default=None,
              help=f"An annotator token for people who log in with a name only (env {TOKEN_ENV}). Without it, "
                   "each person logs in with their own annotator token, or with a name when the coordinator "
                   "runs without tokens.")
@click.option("--tls-ca", type=_FILE, default=None, help="CA certificate: reach the coordinator over TLS.")
@click.option("--coordinator-cert", type=_FILE, default=None,
              help="Client certificate for the coordinator, for mutual TLS.")
@click.option("--coordinator-key", type=_FILE, default=None, help="Private key of --coordinator-cert.")
@click.option("--lease-seconds", type=click.FloatRange(min=5), default=120.0, show_default=True,
              help="How long a page's leases last without a heartbeat (pages renew them while open).")
@click.option("--heartbeat-seconds", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="How often an open page renews its leases.")
@click.option("--threads", type=click.IntRange(min=4), default=256, show_default=True,
              help="Coordinator calls in flight at once; each open page's long poll holds one while the query "
                   "pool is empty, so allow one per annotator and some.")
@log_level_option
def main(coordinator, listen, tls_cert, tls_key, token, tls_ca, coordinator_cert, coordinator_key, lease_seconds,
         heartbeat_seconds, threads):
    """Serve the labeling page: annotators log in, see one item at a time, and press a key per class."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if (coordinator_cert is None) != (coordinator_key is None):
        raise click.UsageError("--coordinator-cert and --coordinator-key go together")
    if coordinator_cert is not None and tls_ca is None:
        raise click.UsageError("--coordinator-cert (mutual TLS) needs --tls-ca")
    if heartbeat_seconds * 3 > lease_seconds:
        raise click.UsageError("--heartbeat-seconds must be at most a third of --lease-seconds, so a lease is "
                               "renewed a few times before it could lapse")
    try:
        import uvicorn

        from aal_rpc.web.app import create_app
    except ImportError as exc:
        raise click.ClickException(f"aal-web needs the web extra ({exc.name} is missing): "
                                   "pip install 'aal-rpc[web]'") from exc
    from aal_rpc.security import ClientSecurity
    from aal_rpc.web import coordinator_clients
    from aal_rpc.web.sessions import Sessions

    host, port = parse_address(listen)
    if tls_cert is None:
        log.warning("serving plain HTTP: tokens typed into the page travel in the clear (serve HTTPS with "
                    "--tls-cert/--tls-key, or keep --listen on 127.0.0.1 behind a TLS proxy)")
    security = ClientSecurity(token=token, ca=tls_ca, cert=coordinator_cert, key=coordinator_key)
    connect, channel = coordinator_clients(coordinator, security, lease_seconds=lease_seconds,
                                           retry_for=CALL_RETRY_SECONDS)
    sessions = Sessions(connect, heartbeat_seconds=heartbeat_seconds,
                        tab_timeout=max(lease_seconds, TAB_TIMEOUT_HEARTBEATS * heartbeat_seconds))
    app = create_app(sessions, threads=threads)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # listening before the address is printed: a launcher that connects at once then waits in the backlog
        # until uvicorn accepts, instead of being refused
        sock.listen(LISTEN_BACKLOG)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror}") from exc
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"listening on {shown}:{bound}")
    click.echo(f"open {'https' if tls_cert else 'http'}://{shown}:{bound}/ in a browser")
    sys.stdout.flush()  # launchers read the bound port from the first line
    config = uvicorn.Config(app, ssl_certfile=tls_cert and str(tls_cert), ssl_keyfile=tls_key and str(tls_key),
                            log_config=None, access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
                            server_header=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])  # SIGTERM and SIGINT end it gracefully; leases go back
    finally:
        channel.close()


def run() -> None:
    run_program(main)


if __name__ == "__main__":
    run()

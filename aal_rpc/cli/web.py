"""aal-web: the labeling page for people, in a browser, served over HTTP(S) by this process, which talks to the
coordinator for them with each annotator's own token."""
# Limits not given as options are the modules' named constants: the body size (web/guard.py), the failed-login
# throttle (web/throttle.py), pages per login (web/sessions.py Limits); the help below states them all.

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path

import click

from aal_rpc.cli.common import TOKEN_ENV, coordinator_option, log_level_option, run_program
from aal_rpc.grpc_utils import parse_address
from aal_rpc.web.guard import BODY_SECONDS, HEAD_SECONDS, MAX_BODY_BYTES, MAX_PER_CLIENT, AllowedHosts
from aal_rpc.web.sessions import LONG_POLL_SECONDS, Limits
from aal_rpc.web.throttle import LoginThrottle

log = logging.getLogger("aal.web")

TAB_TIMEOUT_HEARTBEATS = 8  # a page silent for this many heartbeats is taken for gone (browsers throttle the
#                             timers of hidden tabs to about one a minute, so a quiet tab is not a closed one)
STATS_TOKEN_ENV = "AAL_WEB_STATS_TOKEN"
CALL_RETRY_SECONDS = 30.0  # a person's action rides out a coordinator restart this long, then shows an error
SHUTDOWN_GRACE_SECONDS = 3.0  # long polls in flight are cut after this; their pages simply poll again
LISTEN_BACKLOG = 2048  # connections waiting to be accepted (uvicorn's own default)
# Connections and requests at once; past it uvicorn answers 503 at once, so a flood of idle connections cannot
# grow memory without bound. Far above what the logins allowed need: each open page holds one or two.
MAX_CONNECTIONS = 4096
LIMITS = f"""\b
Limits (each refusal is one log line):
  a request body: {MAX_BODY_BYTES // 1024} KiB (413; no more of it is read)
  failed logins per client address: {LoginThrottle.burst}, then one every {LoginThrottle.refill_seconds:g} s
    (429 with Retry-After)
  logins per client address (--max-logins-per-client): a new one ends
    that address's least recently seen login, one with no page open
    first; its items go back
  logins in all (--max-logins): a new one ends the least recently seen
    login with no page open (503 when every login has a page open)
  open pages per login: {Limits.tabs_per_login} (a new one closes the least recently seen)
  items held or waited for, per login (--max-leases-per-login) and per
    annotator over all their logins (--max-leases-per-annotator): 429
    past them (a page holds two)
  a lease's long poll: at most {LONG_POLL_SECONDS:g} s, holding no thread
  connections at once: {MAX_CONNECTIONS} (503 past it); from one client
    address: {MAX_PER_CLIENT} (closed at once past it, said once; not
    counted behind a proxy, --forwarded-allow-ips)
  a request's head: {HEAD_SECONDS:g} s from connecting or from the last
    answer (the connection is closed, no log line); its body:
    {BODY_SECONDS:g} s (408)"""

_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command(epilog=LIMITS)
@coordinator_option
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              help="Address to serve the page on; port 0 picks a free one. The first line printed is "
                   "'listening on HOST:PORT'.")
@click.option("--allowed-hosts", default=None, metavar="HOST,...",
              help="Host names (or addresses) people use to reach the page; any other Host is refused (400), and "
                   "so are posts from pages of other hosts (403): a defence against DNS rebinding. Default: the "
                   "--listen host, localhost, 127.0.0.1 and ::1. Listening on every interface (0.0.0.0, ::) needs "
                   "it; '*' accepts any host (with a warning).")
@click.option("--forwarded-allow-ips", default=None, metavar="IP,...",
              help="Proxies trusted to name the client (X-Forwarded-For), e.g. 127.0.0.1 behind a TLS proxy on "
                   "this host: the per-client limits then count each person's address, not the proxy's.")
@click.option("--tls-cert", type=_FILE, default=None, help="Certificate (PEM): serve the page over HTTPS.")
@click.option("--tls-key", type=_FILE, default=None, help="Private key (PEM) of --tls-cert.")
@click.option("--token", envvar=TOKEN_ENV, default=None,
              help=f"An annotator token for people who log in with a name only (env {TOKEN_ENV}). Without it, "
                   "each person logs in with their own annotator token, or with a name when the coordinator "
                   "runs without tokens.")
@click.option("--stats-token", envvar=STATS_TOKEN_ENV, default=None,
              help=f"An admin token aal-web reads the coordinator's stats with (GetStats only), to show each page "
                   f"the team's progress (env {STATS_TOKEN_ENV}). Without it, pages show it only when the "
                   "coordinator runs without tokens.")
@click.option("--tls-ca", type=_FILE, default=None, help="CA certificate: reach the coordinator over TLS.")
@click.option("--coordinator-cert", type=_FILE, default=None,
              help="Client certificate for the coordinator, for mutual TLS.")
@click.option("--coordinator-key", type=_FILE, default=None, help="Private key of --coordinator-cert.")
@click.option("--lease-seconds", type=click.FloatRange(min=5), default=120.0, show_default=True,
              help="How long a page's leases last without a heartbeat (pages renew them while open).")
@click.option("--heartbeat-seconds", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="How often an open page renews its leases.")
@click.option("--threads", type=click.IntRange(min=4), default=256, show_default=True,
              help="Coordinator calls in flight at once (labels, renewals, logins); the pages' long polls hold "
                   "none.")
@click.option("--max-logins", type=click.IntRange(min=1), default=Limits.logins, show_default=True,
              help="Logins kept at once, in all.")
@click.option("--max-logins-per-client", type=click.IntRange(min=1), default=Limits.logins_per_client,
              show_default=True, help="Logins kept at once per client address (each browser tab logs in).")
@click.option("--max-leases-per-login", type=click.IntRange(min=2), default=Limits.leases_per_login,
              show_default=True, help="Items one login may hold or wait for at once.")
@click.option("--show-model-guess", is_flag=True, default=False,
              help="Pre-select the class the model guesses for each item (marked as the model's guess; the person "
                   "still confirms it with Enter or picks another). Off by default: people shown a guess lean "
                   "towards it. Never for audit or gold items.")
@click.option("--max-leases-per-annotator", type=click.IntRange(min=2), default=Limits.leases_per_annotator,
              show_default=True, help="Items one annotator may hold or wait for at once, over all their logins.")
@log_level_option
def main(coordinator, listen, allowed_hosts, forwarded_allow_ips, tls_cert, tls_key, token, stats_token, tls_ca,
         coordinator_cert, coordinator_key, lease_seconds, heartbeat_seconds, threads, max_logins, max_logins_per_client,
         max_leases_per_login, max_leases_per_annotator, show_model_guess):
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
        host, port = parse_address(listen)
        hosts = AllowedHosts.parse(allowed_hosts) if allowed_hosts is not None else AllowedHosts.for_listen(host)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        import uvicorn

        from aal_rpc.web.app import create_app
        from aal_rpc.web.connections import guarded_protocol
    except ImportError as exc:
        raise click.ClickException(f"aal-web needs the web extra ({exc.name} is missing): "
                                   "pip install 'aal-rpc[web]'") from exc
    from aal_rpc.client import CoordinatorClient
    from aal_rpc.security import ClientSecurity, with_token
    from aal_rpc.web import LongPolls, coordinator_clients
    from aal_rpc.web.lead import LeadView, lead_routes
    from aal_rpc.web.progress import TeamProgress
    from aal_rpc.web.sessions import Sessions

    if tls_cert is None:
        log.warning("serving plain HTTP: tokens typed into the page travel in the clear (serve HTTPS with "
                    "--tls-cert/--tls-key, or keep --listen on 127.0.0.1 behind a TLS proxy and name it with "
                    "--forwarded-allow-ips)")
    if hosts.any:
        log.warning("answering for any Host (--allowed-hosts '*'): a foreign web page whose name resolves to this "
                    "server (DNS rebinding) can use it from a browser; name the hosts people use instead")
    security = ClientSecurity(token=token, ca=tls_ca, cert=coordinator_cert, key=coordinator_key)
    connect, channel = coordinator_clients(coordinator, security, lease_seconds=lease_seconds,
                                           retry_for=CALL_RETRY_SECONDS)
    polls = LongPolls(coordinator, security, lease_seconds=lease_seconds)
    # one try, no waiting: a page's label must not wait on the team's figures
    stats = CoordinatorClient(coordinator, retry_for=0, wait_for_ready=False,
                              channel=with_token(channel, stats_token or token))
    limits = Limits(logins=max_logins, logins_per_client=max_logins_per_client,
                    leases_per_login=max_leases_per_login, leases_per_annotator=max_leases_per_annotator)
    sessions = Sessions(connect, heartbeat_seconds=heartbeat_seconds,
                        tab_timeout=max(lease_seconds, TAB_TIMEOUT_HEARTBEATS * heartbeat_seconds), limits=limits,
                        poll=polls, team=TeamProgress(stats.stats))
    app = create_app(sessions, threads=threads, hosts=hosts, polls=polls, show_model_guess=show_model_guess)
    # the lead's page: each poll calls with the token typed into it, else aal-web's own (--token)
    app.router.routes.extend(lead_routes(LeadView(lambda typed: CoordinatorClient(
        coordinator, retry_for=0, wait_for_ready=False, channel=with_token(channel, typed or token)))))
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
                            server_header=False, limit_concurrency=MAX_CONNECTIONS,
                            # slow heads and bodies are cut, and one address holds a share of the places (unless
                            # behind a proxy, whose address every connection carries)
                            http=guarded_protocol(None if forwarded_allow_ips is not None else MAX_PER_CLIENT),
                            proxy_headers=forwarded_allow_ips is not None,
                            forwarded_allow_ips=forwarded_allow_ips)
    try:
        uvicorn.Server(config).run(sockets=[sock])  # SIGTERM and SIGINT end it gracefully; leases go back
    finally:
        channel.close()


def run() -> None:
    run_program(main)


if __name__ == "__main__":
    run()

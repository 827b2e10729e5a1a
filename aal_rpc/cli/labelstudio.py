"""aal-labelstudio: a Label Studio project as an annotation front end. Leased queries become tasks of the project,
its annotations become labels in L (aal_rpc/labelstudio/reconcile.py says how, case by case)."""

from __future__ import annotations

import logging
import secrets
import socket
import sys
import threading
from pathlib import Path

import click

from aal_rpc.cli.common import (Command, coordinator_option, first_contact, log_level_option, on_termination,
                                run_program, security_options)
from aal_rpc.grpc_utils import parse_address
from aal_rpc.labelstudio.ids import MAX_ID, stored_id, valid_id

log = logging.getLogger("aal.labelstudio")

URL_ENV = "LABEL_STUDIO_URL"
TOKEN_ENV = "LABEL_STUDIO_API_KEY"  # the name Label Studio's own SDK and tools read
STARTUP_BACKOFF = 2.0  # seconds between tries while Label Studio does not answer at start
PROBE_LEASE = "aal-labelstudio-probe"  # a lease nobody holds: renewing it asks whether the token may annotate
SECRET_KEY = "webhook_secret"  # where older bridges kept the webhook secret in the state file (removed at start)


@click.command(cls=Command)
@coordinator_option
@security_options
@click.option("--label-studio-url", envvar=URL_ENV, required=True, metavar="URL",
              help=f"Label Studio's address, e.g. http://localhost:8080 (env {URL_ENV}).")
@click.option("--label-studio-token", envvar=TOKEN_ENV, required=True,
              help=f"A Label Studio user's personal access token (Account & Settings), or a legacy token where the "
                   f"organization allows them (env {TOKEN_ENV}).")
@click.option("--project", type=click.IntRange(min=1, max=MAX_ID), default=None,
              help="Attach to this Label Studio project; its labeling config must offer exactly the task's classes.")
@click.option("--create-project", metavar="TITLE", default=None,
              help="Create a project with a labeling config generated from the task, each class's description as its "
                   "hint and the task's guidelines as the instructions (only once: a restart on the same --state-dir "
                   "keeps using it).")
@click.option("--object", "object_kind", type=click.Choice(["auto", "image", "text"]), default="auto",
              show_default=True, help="What a created project shows: the item's image or its text (auto: from the "
                                      "task's input shape).")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="The bridge's state (SQLite): which leases it holds, which annotations it has recorded. Keep it "
                   "across restarts; one bridge per project and state dir.")
@click.option("--annotator-id", default="labelstudio", show_default=True,
              help="Who the coordinator records as the annotator (\"\" with a token that names its annotator).")
@click.option("--window", type=click.IntRange(1, 5000), default=50, show_default=True,
              help="Queries kept as tasks in the project at once.")
@click.option("--lease-seconds", type=click.FloatRange(1, 86_400), default=600.0, show_default=True,
              help="Length of each lease (renewed at a quarter of it); a bridge down longer loses its unlabeled tasks.")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="Where to receive Label Studio's webhooks; port 0 picks a free one. The first line printed is "
                   "'listening on HOST:PORT'.")
@click.option("--webhook-url", default=None, metavar="URL",
              help="The URL Label Studio posts to (default: http://HOST:PORT/webhook of --listen).")
@click.option("--no-webhooks", is_flag=True, help="Do not register a webhook: poll only.")
@click.option("--poll-seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="How often to poll the project for updated tasks (the webhooks' fallback).")
@click.option("--sweep-seconds", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="How often to read every task of the project (deleted tasks, missed edits).")
@click.option("--refresh-seconds", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="How often to fill the window and swap stale tasks for queries of a newer model.")
@click.option("--on-cancel", type=click.Choice(["defer", "skip"]), default="defer", show_default=True,
              help="A cancelled annotation (Label Studio's Skip): defer (back to S for others; this project does not "
                   "get it again for a while) or skip (the item is dropped as unlabelable for everyone).")
@click.option("--defer-seconds", type=click.FloatRange(0, 86_400), default=0.0, show_default=True,
              help="How long a deferred item is kept from this project (0: the coordinator's default).")
@log_level_option
def main(coordinator, security, label_studio_url, label_studio_token, project, create_project, object_kind, state_dir,
         annotator_id, window, lease_seconds, listen, webhook_url, no_webhooks, poll_seconds, sweep_seconds,
         refresh_seconds, on_cancel, defer_seconds):
    """Keep a window of queries as tasks of a Label Studio project, and send its annotations to L.

    The coordinator token must be of the annotator (or admin) role: it is checked before anything is done in Label
    Studio.

    \b
    Limits (the webhook receiver, open to whoever reaches --listen):
      - a request must arrive whole within 10 s; one request per connection
      - 16 connections at once; more are answered 503 (the poll finds their tasks)
      - a body of 8 MiB at most (413, refused on its Content-Length); no chunked body (411);
        JSON of at most 20,000 objects and arrays, nested about 1,000 deep at most (else 400)
      - only POSTs with the secret header are read (403); the secret is new at each
        start, kept in memory, and readable by every member of the Label Studio
        organization (it shows with the project's webhooks)
      - ids must be positive 64-bit integers; a webhook names at most 1,000 ids and
        10,000 wait at once (past that, the next poll looks instead)
    An annotation whose result is not in the editor's shape is logged once and ignored; the
    state dir is created 0700 and its files 0600.
    """
    if project is not None and create_project is not None:
        raise click.UsageError("--project and --create-project exclude each other")
    if lease_seconds < 4 * refresh_seconds:
        raise click.UsageError("--lease-seconds must be at least four times --refresh-seconds")
    try:
        from aal_rpc.labelstudio.studio import Studio
        from aal_rpc.web.guidelines import guidelines_html  # noqa: F401 - markdown-it, for the instructions
    except ImportError as exc:
        raise click.ClickException(f"aal-labelstudio needs the labelstudio extra ({exc.name} is missing): "
                                   "pip install 'aal-rpc[labelstudio]'") from exc
    from aal_rpc.client import AnnotationClient
    from aal_rpc.labelstudio.bridge import Bridge, BridgeConfig

    for noisy in ("httpx", "httpcore", "faker"):  # one line per HTTP request is the SDK's, not ours
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from aal_rpc.labelstudio.state import BridgeState, StateLocked

    stop = threading.Event()
    client = AnnotationClient(coordinator, annotator_id, lease_seconds=lease_seconds, retry_for=None,
                              security=security)
    wakers: list[threading.Event] = []  # the bridge's wake-up, once it exists
    on_termination(lambda: (stop.set(), client.stop_retrying(), [w.set() for w in wakers]))
    try:
        state = BridgeState(state_dir)
    except StateLocked as exc:
        raise click.ClickException(str(exc)) from None
    receiver = None
    try:
        first_contact(client)
        _check_annotator(client)
        state.delete(SECRET_KEY)
        task = client.task()
        studio = Studio(label_studio_url, label_studio_token)
        _wait_for_studio(studio, stop)
        project_id = _project(studio, state, task, project, create_project, object_kind)
        interface = _interface(studio, project_id, task)
        name_labelers = client.may_name_labeler()
        if not name_labelers:
            log.warning("the coordinator token may not name labelers: every label is recorded as the bridge's own, "
                        "and its Label Studio user only in the state file; give the bridge a token allowed to "
                        "delegate ('annotator+delegate IDENTITY TOKEN' in the coordinator's tokens file)")
        config = BridgeConfig(window=window, lease_seconds=lease_seconds, poll_seconds=poll_seconds,
                              sweep_seconds=sweep_seconds, refresh_seconds=refresh_seconds, on_cancel=on_cancel,
                              defer_seconds=defer_seconds, name_labelers=name_labelers)
        bridge = Bridge(client, studio, state, project_id, interface, config)
        webhook_id = None
        if no_webhooks:
            click.echo(f"polling project {project_id}")
        else:
            receiver, webhook_id = _webhooks(studio, state, project_id, listen, webhook_url, bridge)
        click.echo(f"project {project_id} at {studio.url}/projects/{project_id}")
        sys.stdout.flush()  # launchers read the address from the first line
        log.info("bridging project %d (%s, classes %s) as annotator %r: window %d, leases of %.0fs", project_id,
                 interface.kind, ", ".join(task.class_names), annotator_id or "(the token's)", window, lease_seconds)
        wakers.append(bridge.wake)
        try:
            bridge.run(stop)
        finally:
            if receiver is not None:
                receiver.stop()
            bridge.close(webhook_id)
    finally:
        client.close()
        state.close()
    log.info("stopped; leases kept for the next start")


def _check_annotator(client) -> None:
    """Renew a lease nobody holds: a call the annotator role makes, which changes nothing. A token of another role,
    or one that names another annotator than --annotator-id, ends the command here, before Label Studio is touched
    (the loop would otherwise be refused at every round)."""
    import grpc

    from aal_rpc.client.annotation import LeasedQuery
    from aal_rpc.types import Payload, Provenance

    try:
        client.renew(LeasedQuery(PROBE_LEASE, PROBE_LEASE, 0.0, Payload(b"", "float32", (0,)), Provenance()))
    except grpc.RpcError as exc:
        status = f"{exc.code().name}: {' '.join((exc.details() or '').split())}"
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise click.ClickException(
                f"the coordinator at {client.target} refused the bridge's token ({status}): aal-labelstudio needs a "
                "token of the annotator (or admin) role (--token), and --annotator-id \"\" or the annotator a token "
                "names") from None
        if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
            raise click.ClickException(f"the coordinator at {client.target} refused the bridge's renewals ({status}): "
                                       "check --annotator-id (or give a token that names its annotator) and "
                                       "--lease-seconds") from None


def _wait_for_studio(studio, stop: threading.Event) -> None:
    """Return once Label Studio answers with the token; a refused token ends the command."""
    from label_studio_sdk.core.api_error import ApiError

    from aal_rpc.labelstudio.studio import StudioUnavailable

    warned = False
    while True:
        try:
            user = studio.whoami()
        except StudioUnavailable as exc:
            if not warned:
                log.warning("Label Studio at %s does not answer (%s); waiting for it", studio.url, exc)
                warned = True
            if stop.wait(STARTUP_BACKOFF):
                raise click.ClickException("stopped while waiting for Label Studio") from None
            continue
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise click.ClickException(
                    f"Label Studio at {studio.url} refused the token ({exc.status_code}): give a personal access token "
                    f"(Account & Settings > Personal Access Token) with --label-studio-token or {TOKEN_ENV}; a legacy "
                    "token works only where the organization enables legacy tokens") from None
            raise click.ClickException(f"Label Studio at {studio.url} answered {exc.status_code}: {exc.body}") from None
        log.info("Label Studio at %s answers; acting as %s", studio.url, user.get("email") or user.get("id"))
        return


def _project(studio, state, task, project, create_project, object_kind) -> int:
    """The project to bridge: the one this state dir belongs to, checked against --project, or a new one."""
    from label_studio_sdk.core.api_error import ApiError

    from aal_rpc.labelstudio.config import kind_for, label_config
    from aal_rpc.web.guidelines import guidelines_html

    stored = stored_id(state.get("project_id"))
    if stored is not None and project is not None and project != stored:
        raise click.ClickException(f"the state dir belongs to project {stored}, not {project}: give another "
                                   "--state-dir for another project")
    if stored is None and project is None and create_project is None:
        raise click.UsageError("give --project ID (an existing project) or --create-project TITLE")
    if stored is None and project is None:
        config = label_config(task.class_names, kind_for(task, object_kind), task.class_descriptions)
        stored = studio.create_project(create_project, config, guidelines_html(task.guidelines))
        if valid_id(stored) is None:
            raise click.ClickException(f"Label Studio answered project id {stored!r}: no 64-bit id")
        log.info("created project %d, %r", stored, create_project)
    elif stored is None:
        stored = project
    try:
        studio.project(stored)
    except ApiError as exc:
        if exc.status_code == 404:
            raise click.ClickException(f"Label Studio has no project {stored} (or this user cannot see it)") from None
        raise
    state.put("project_id", str(stored))
    return stored


def _interface(studio, project_id: int, task):
    from aal_rpc.labelstudio.config import ConfigMismatch, parse_label_config

    project = studio.project(project_id)
    try:
        interface = parse_label_config(project.get("label_config") or "", task.class_names)
    except ConfigMismatch as exc:
        raise click.ClickException(f"project {project_id}: {exc}") from None
    if project.get("sampling") != "Uncertainty sampling":
        log.warning("project %d serves tasks by %r: choose 'Uncertainty sampling' (Settings > Annotation) to serve "
                    "them in the coordinator's order", project_id, project.get("sampling"))
    return interface


def _webhooks(studio, state, project_id: int, listen: str, webhook_url: str | None, bridge):
    """Start the receiver, print its address, and point the project's webhook at it (polling alone when Label
    Studio refuses the URL). The secret is new at each start and never written down: Label Studio shows it to every
    member of the organization, and a stopped bridge takes it out of the webhook."""
    from label_studio_sdk.core.api_error import ApiError

    from aal_rpc.labelstudio.webhook import WEBHOOK_PATH, WebhookReceiver

    secret = secrets.token_urlsafe(32)
    host, port = parse_address(listen)
    try:
        receiver = WebhookReceiver(host, port, secret, bridge.hint)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc.strerror}") from None
    receiver.start()
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"listening on {shown}:{receiver.port}")
    if webhook_url is None:
        reach = socket.getfqdn() if host in ("0.0.0.0", "::", "") else shown
        webhook_url = f"http://{reach}:{receiver.port}{WEBHOOK_PATH}"
    try:
        webhook_id = studio.ensure_webhook(project_id, webhook_url, secret, stored_id(state.get("webhook_id")))
    except ApiError as exc:
        log.warning("Label Studio refused the webhook %s (%s: %s); polling every few seconds instead. A Label Studio "
                    "that must post to a private or loopback address needs SSRF_PROTECTION_ENABLED=false",
                    webhook_url, exc.status_code, exc.body)
        return receiver, None
    state.put("webhook_id", str(webhook_id))
    log.info("Label Studio posts annotation events to %s", webhook_url)
    return receiver, webhook_id


def run() -> None:
    run_program(main)


if __name__ == "__main__":
    run()

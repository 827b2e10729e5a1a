"""Options and helpers every command shares, and the one place that turns a failed call into one line.

Every command that talks to the coordinator is a `Command` (or `Group`): a call that fails ends it with one
line on stderr naming the cause (describe_rpc_error: TLS mismatch, token, unreachable, with the status) and
exit status 1, never a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import click

# gRPC's core logs at INFO (a failed TLS handshake, say) to stderr unless told otherwise; a command's error is
# one line. Read when grpc is first imported, so every command module imports this module before anything else.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

log = logging.getLogger(__name__)

COORDINATOR_ENV = "AAL_COORDINATOR"
TOKEN_ENV = "AAL_TOKEN"
PROBE_TIMEOUT = 3.0  # seconds for the connection that diagnoses an unreachable coordinator
_TARGET = "aal.coordinator"  # click context meta keys: where, and how, the command reaches the coordinator
_SECURITY = "aal.security"


def _remember_coordinator(ctx: click.Context, param, value: str) -> str:
    ctx.meta[_TARGET] = value
    return value


coordinator_option = click.option(
    "--coordinator", envvar=COORDINATOR_ENV, required=True, metavar="HOST:PORT", callback=_remember_coordinator,
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


def model_option(fn):
    """--model: a built-in name, MODULE:FACTORY or an installed entry point's name, checked by `check_model` once
    the command runs (a name that resolves to nothing ends it with one line, not a usage error)."""
    from aal_rpc.models import ARCHITECTURES, ENTRY_POINTS

    return click.option(
        "--model", default="cnn", show_default=True, metavar="NAME|MODULE:FACTORY",
        help=f"A built-in model ({', '.join(sorted(ARCHITECTURES))}), your factory by import path (MODULE:FACTORY, "
             f"called as FACTORY(input_shape, num_classes)), or an installed entry point of the group "
             f"{ENTRY_POINTS} (README.md, 'Bring your own model').")(fn)


def check_model(task, fingerprint: str = "", *, run: bool = False, max_weight_bytes: int | None = None) -> None:
    """At start: end the command with one line naming the model and the cause unless this process can build the
    task's architecture; its head gives the task's classes and, with `run` (the processes that train or score
    with it), a forward pass gives their logits (models.check_classifier); its weights are at most
    `max_weight_bytes`; and, given the coordinator's `fingerprint` (GetTask), it builds weights of the same names,
    shapes and dtypes as the coordinator does."""
    from aal_rpc.models import build_model, check_classifier, shape_model
    from aal_rpc.serde import spec_fingerprint, spec_of

    name = task.architecture
    try:
        model = (build_model if run else shape_model)(name, task.input_shape, task.num_classes)
        spec = spec_of(model)
        check_classifier(model, task.input_shape, task.num_classes, run=run)
    except Exception as exc:  # noqa: BLE001 - the user's module (ValueError), torchvision missing (RuntimeError)
        cause = " ".join(str(exc).split()).removeprefix(f"model {name!r}: ")
        raise click.ClickException(f"cannot use the task's model {name!r}: {cause or type(exc).__name__}") from None
    size = sum(t.element_size() * t.nelement() for t in model.state_dict().values())
    if max_weight_bytes is not None and size > max_weight_bytes:
        raise click.ClickException(f"the task's model {name!r} has {size:,} bytes of weights, more than the "
                                   f"registry takes (--max-weight-bytes {max_weight_bytes:,})")
    mine = spec_fingerprint(spec)
    if fingerprint and mine != fingerprint:
        raise click.ClickException(
            f"model {name!r} builds weights of other names, shapes or dtypes here than at the coordinator (fingerprint "
            f"{mine[:12]} here, {fingerprint[:12]} there): run the version of it that the coordinator runs")


@contextlib.contextmanager
def model_failures(doing: str):
    """A failure of the model's own code while `doing` (its forward or backward on real data, out of memory): the
    command ends with one line naming it, its traceback logged at DEBUG (--log-level debug shows it)."""
    try:
        yield
    except (RuntimeError, MemoryError, ValueError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        log.debug("%s failed", doing, exc_info=True)
        text = " ".join(str(exc).split())[:500]
        raise click.ClickException(f"{doing} failed: {type(exc).__name__}{': ' + text if text else ''}") from None


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
        security = ClientSecurity(token=token, ca=tls_ca, cert=tls_cert, key=tls_key)
        click.get_current_context().meta[_SECURITY] = security
        return fn(*args, security=security, **kwargs)

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


# -- failed calls: one line naming the cause ---------------------------------------------------------------


def describe_rpc_error(exc, target: str | None, security=None) -> str:
    """One line saying why a call to the coordinator at `target` failed, and what to do: the token, the TLS
    settings, the address, or else the coordinator's own status; the status code and message always follow.

    `exc` is a grpc.RpcError; `security` the command's ClientSecurity. The aal-coordinator command and any tool
    that calls the coordinator can print this line for a failed call.
    """
    import grpc

    code = exc.code()
    details = " ".join((exc.details() or "").split())
    status = f"{code.name}: {details}" if details else code.name
    where = f"the coordinator at {target}" if target else "the coordinator"
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"{where} refused the token ({status}): pass a valid --token (or set {TOKEN_ENV})"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return f"{where} refused this token's role the call ({status}): use a token of the role this command needs"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        cause, _ = diagnose_connection(target, security, details)
        return f"cannot reach {where}: {cause} ({status})"
    return f"{where} answered {status}"


def diagnose_connection(target: str | None, security, details: str = "") -> tuple[str, bool]:
    """Why the coordinator at `target` does not answer, as (cause, misconfigured): misconfigured when the
    command's own settings are wrong (TLS, certificates), so waiting for the coordinator cannot help.

    Reads gRPC's `details` of the failure, then opens one TCP connection: refused, unresolved or unanswered say
    the coordinator is down or out of reach; one that speaks TLS to a command without --tls-ca says TLS.
    """
    from aal_rpc.grpc_utils import parse_address

    tls = security is not None and security.ca is not None
    upper = details.upper()
    if "WRONG_VERSION_NUMBER" in upper:
        return "it does not speak TLS: drop --tls-ca (or serve TLS there)", True
    if "CERTIFICATE_VERIFY_FAILED" in upper:
        return ("TLS: its certificate is not signed by the CA given with --tls-ca, or not issued for this host "
                "name"), True
    if tls and "HANDSHAKE" in upper:
        return "the TLS handshake failed (check --tls-ca, --tls-cert and --tls-key)", True
    try:
        host, port = parse_address(target or "")
    except ValueError:
        return "no answer", False
    try:
        sock = socket.create_connection((host, port), timeout=PROBE_TIMEOUT)
    except ConnectionRefusedError:
        return "nothing listens there (connection refused): is it running, and is HOST:PORT right?", False
    except socket.gaierror as e:
        return f"the host name {host!r} does not resolve ({e.strerror})", False
    except OSError as e:
        return f"no connection within {PROBE_TIMEOUT:.0f}s ({e.strerror or e}): the network does not reach it", False
    with sock:
        if not tls and _speaks_tls(sock, host):
            return "it speaks TLS: pass --tls-ca with the CA certificate that signed its certificate", True
    if tls and security.cert is None and "SOCKET CLOSED" in upper:
        return ("it closed the connection during the TLS handshake: it may require a client certificate "
                "(mutual TLS: --tls-cert and --tls-key)"), True
    return "it accepts connections but does not answer", False


def _speaks_tls(sock: socket.socket, host: str) -> bool:
    """Does the server on `sock` complete a TLS handshake? (Its certificate is not checked: this only asks
    which protocol it speaks.)"""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with context.wrap_socket(sock, server_hostname=host or None, do_handshake_on_connect=False) as tls:
            tls.do_handshake()
    except (ssl.SSLError, OSError):
        return False
    return True


class _OneLineErrors(click.Command):
    """A failed call to the coordinator ends the command with one line (describe_rpc_error) and exit status 1."""

    def invoke(self, ctx: click.Context):
        import grpc

        try:
            return super().invoke(ctx)
        except grpc.RpcError as exc:
            raise click.ClickException(describe_rpc_error(exc, ctx.meta.get(_TARGET),
                                                          ctx.meta.get(_SECURITY))) from None


class Command(_OneLineErrors, click.Command):
    """A click command that talks to the coordinator: `@click.command(cls=Command)`."""


class Group(_OneLineErrors, click.Group):
    """A click group whose subcommands talk to the coordinator: `@click.group(cls=Group)`."""


def first_contact(client) -> None:
    """A long-running command's first call (client.check()), made without waiting: a wrong token or role, or a
    misconfigured connection (diagnose_connection), fails the command now, with one line. A coordinator that is
    merely down or out of reach is waited for, as in any later outage."""
    import grpc

    from aal_rpc.client.retry import TRANSIENT

    try:
        client.check()
    except grpc.RpcError as exc:
        if exc.code() not in TRANSIENT or diagnose_connection(client.target, client.security,
                                                              " ".join((exc.details() or "").split()))[1]:
            raise

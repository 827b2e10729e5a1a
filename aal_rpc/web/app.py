"""The aal-web HTTP application: the page (aal_rpc/web/static, shipped in the package, nothing from a CDN) and a
small JSON API over aal_rpc/web/sessions.py. Endpoints are thin: parse, call Sessions (in a worker thread, as the
gRPC client blocks; the lease long poll on the event loop, holding no thread), and map errors to HTTP statuses.

Every API call is a POST with a JSON body naming its session (and tab); nothing rides on cookies, so no other
site can make a browser act here (no CSRF), and `/api/close` accepts what navigator.sendBeacon sends. Requests
must name an allowed host, and pages of other hosts may not post (guard.py); a body is read up to
MAX_BODY_BYTES and no further; failed logins are throttled per client (throttle.py).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anyio
import anyio.to_thread
import grpc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aal_rpc.client import LeasedQuery
from aal_rpc.security import TOKEN_CHARS
from aal_rpc.types import strategy_shown
from aal_rpc.web import LongPolls
from aal_rpc.web.guard import BODY_SECONDS, LOOPBACK_NAMES, MAX_BODY_BYTES, AllowedHosts, HostGuard
from aal_rpc.web.guidelines import class_descriptions, class_keys, guidelines_html
from aal_rpc.web.sessions import LONG_POLL_SECONDS, AtLimit, Expired, NotHeld, NotLabeledHere, Sessions
from aal_rpc.web.throttle import LoginThrottle, Throttled

log = logging.getLogger("aal.web")

STATIC = Path(str(resources.files("aal_rpc.web") / "static"))
MAX_TOKEN = 1024  # characters of a token typed at login
MAX_LABEL = 2**31 - 1  # labels travel as int32
FULL_RETRY_SECONDS = 30  # Retry-After when aal-web holds all the logins it keeps
REAP_INTERVAL_SECONDS = 5.0
MAX_UNSENT = 16  # a closing page's last actions not yet sent: one per key pressed in its last frame
# The page may load its own script, style and images (the items arrive as data: URLs) and talk to this server;
# nothing else, so a text item can never run script, even if the page had a bug that inserted it as HTML.
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
# gRPC statuses from the coordinator, as the page should see them
HTTP_STATUS = {
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 410,  # the item or lease is gone
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class BadRequest(ValueError):
    pass


class HttpError(Exception):
    """An answer other than success, with its status and any headers (Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


@dataclass(frozen=True)
class Call:
    """What a handler may use: the sessions, the login throttle, and who calls (remote address)."""

    sessions: Sessions
    throttle: LoginThrottle
    client: str
    show_guess: bool = False  # aal-web --show-model-guess


def item_json(query: LeasedQuery, *, show_guess: bool = False) -> dict:
    """A leased query as the page shows it: its picture as a data: URL (the original file, of its own media type),
    or the text, or a short summary of the values. The item's id stays here: an id may give the answer away
    ("cat_0042.jpg"), so the page knows an item by its lease. With `show_guess` (aal-web --show-model-guess) an item
    the model guessed has `guess` (the class) and `guess_probability`, which the page pre-selects; without it nothing
    of the guess leaves aal-web (a person shown it leans towards it)."""
    text = query.text
    image = query.payload.image_data_url()
    if not image and not text:
        flat = query.array().reshape(-1)
        text = f"{flat.size} values: " + " ".join(f"{v:.3g}" for v in flat[:32]) + (" …" if flat.size > 32 else "")
    p = query.provenance
    shown = {"lease": query.lease_id, "deadline": query.deadline_unix, "image": image,
             "text": text, "strategy": strategy_shown(p.strategy), "model_version": p.model_version,
             "score": p.score}
    if show_guess and p.guess is not None:
        shown.update(guess=p.guess, guess_probability=p.guess_probability)
    return shown


def _error(status: int, message: str, headers: dict | None = None, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) past `limit` bytes: at once when its Content-Length says so, else once that much of
    a stream has come; what lies beyond is never read. One that takes longer than BODY_SECONDS to come: 408; one
    whose client left before it came: 400 (for the log: nobody reads it)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise HttpError(413 if declared.isdigit() else 400, f"a request body is at most {limit} bytes")
    body = bytearray()
    try:
        with anyio.fail_after(BODY_SECONDS):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise HttpError(413, f"a request body is at most {limit} bytes")
    except TimeoutError:
        raise HttpError(408, f"a request body must arrive within {BODY_SECONDS:g} s") from None
    except ClientDisconnect:  # nobody to answer: said in the endpoint's one log line, not as a traceback
        raise HttpError(400, "the client left before its request's body came") from None
    return bytes(body)


def parse(body: bytes) -> dict:
    try:
        args = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BadRequest("the body must be JSON, nested at most a few levels") from None
    if not isinstance(args, dict):
        raise BadRequest("the body must be a JSON object")
    try:  # lone surrogates (raw, or as \ud800 escapes) are not text: no id, name or label holds one
        json.dumps(args, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("the body's strings must be valid Unicode") from None
    return args


def api(handler):
    """An endpoint: the JSON body as a dict in, a dict (or None: 204) out, errors as {"error": ...}. A handler that
    is a coroutine runs on the event loop; any other in a worker thread."""
    is_async = inspect.iscoroutinefunction(handler)

    async def endpoint(request: Request) -> Response:
        client = request.client.host if request.client else ""
        try:
            args = parse(await read_body(request, MAX_BODY_BYTES))
            call = Call(request.app.state.sessions, request.app.state.throttle, client,
                        request.app.state.show_model_guess)
            result = await handler(call, args) if is_async else await run_in_threadpool(handler, call, args)
        except Expired as exc:
            return _error(401, str(exc), expired=exc.what)
        except (NotHeld, NotLabeledHere) as exc:
            return _error(409, str(exc))
        except grpc.RpcError as exc:
            code = exc.code()
            return _error(HTTP_STATUS.get(code, 502), f"coordinator: {exc.details() or code.name}")
        except Exception as exc:  # noqa: BLE001 - the client's mistakes and limits, one log line each
            status, headers = _refusal(exc)
            if status is None:
                raise
            log.info("refused %s from %s: %d %s", request.url.path, client or "?", status, exc)
            return _error(status, str(exc), headers)
        return Response(status_code=204) if result is None else JSONResponse(result)
    return endpoint


def _refusal(exc: Exception) -> tuple[int | None, dict | None]:
    """The status (and headers) of a request refused for what it asked; None for a fault of aal-web's own."""
    if isinstance(exc, HttpError):
        return exc.status, exc.headers
    if isinstance(exc, Throttled):
        return 429, {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if isinstance(exc, AtLimit):
        return (429, None) if exc.what == "leases" else (503, {"Retry-After": str(FULL_RETRY_SECONDS)})
    if isinstance(exc, ValueError):  # BadRequest, and values the coordinator's messages cannot carry
        return 400, None
    return None, None


def _str(args: dict, key: str, *, required: bool = True) -> str:
    value = args.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{key} must be a non-empty string")
    return value


def _label(args: dict, key: str = "label") -> int:
    value = args.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_LABEL:
        raise BadRequest(f"{key} must be a class index")
    return value


# -- the API ------------------------------------------------------------------------------------------------

def login(call: Call, args: dict) -> dict:
    """A login with a token (its identity, when it names one, is the annotator), a name, or both. Refused logins
    count against the client's throttle."""
    token = _str(args, "token", required=False).strip()
    name = _str(args, "name", required=False)
    call.throttle.check(call.client)
    try:
        if token and (len(token) > MAX_TOKEN or not TOKEN_CHARS.fullmatch(token)):
            raise HttpError(401, "this is not a token: a token is printable ASCII without spaces")
        session = call.sessions.login(token or None, name, client=call.client)
    except HttpError:
        call.throttle.failed(call.client)
        raise
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            call.throttle.failed(call.client)
        elif exc.code() == grpc.StatusCode.PERMISSION_DENIED:
            call.throttle.failed(call.client)
            raise HttpError(403, f"this token may not label here (coordinator: {exc.details()})") from None
        raise
    return {"session": session.session_id, "annotator": session.annotator_id}


def logout(call: Call, args: dict) -> None:
    call.sessions.logout(_str(args, "session"))


def open_tab(call: Call, args: dict) -> dict:
    sessions = call.sessions
    session, tab = sessions.open_tab(_str(args, "session"))
    task = session.task
    return {"tab": tab.tab_id, "annotator": session.annotator_id, "class_names": list(task.class_names),
            "class_descriptions": class_descriptions(task.class_names, task.class_descriptions),
            "class_keys": class_keys(task.class_names),
            "guidelines": guidelines_html(task.guidelines), "heartbeat_seconds": sessions.heartbeat_seconds,
            "stats": sessions.stats(session)}


async def lease(call: Call, args: dict) -> dict:
    """The long poll, on the event loop: while it waits it holds no thread (Sessions.lease_async)."""
    wait = args.get("wait", LONG_POLL_SECONDS)
    if not isinstance(wait, (int, float)) or isinstance(wait, bool) or not 0 <= wait <= LONG_POLL_SECONDS:
        raise BadRequest(f"wait must lie in [0, {LONG_POLL_SECONDS}]")
    query = await call.sessions.lease_async(_str(args, "session"), _str(args, "tab"), float(wait))
    return {"item": None if query is None else item_json(query, show_guess=call.show_guess)}


def label(call: Call, args: dict) -> dict:
    result, stats = call.sessions.submit(_str(args, "session"), _str(args, "tab"), _str(args, "lease"), _label(args))
    return {"seq": result.seq, "duplicate": result.duplicate, "stats": stats}


def give_back(how: str):
    def handler(call: Call, args: dict) -> None:
        call.sessions.give_back(_str(args, "session"), _str(args, "tab"), _str(args, "lease"), how)
    return handler


def correct(call: Call, args: dict) -> dict:
    result, stats = call.sessions.correct(_str(args, "session"), _str(args, "lease"), _label(args))
    return {"seq": result.seq, "duplicate": result.duplicate, "stats": stats}


def heartbeat(call: Call, args: dict) -> dict:
    deadlines, lost, stats = call.sessions.heartbeat(_str(args, "session"), _str(args, "tab"))
    return {"deadlines": deadlines, "lost": lost, "stats": stats}


def close_tab(call: Call, args: dict) -> None:
    """The page's goodbye (navigator.sendBeacon): `done` lists what its last keys did that it had not yet sent."""
    done = args.get("done", [])
    if not isinstance(done, list) or len(done) > MAX_UNSENT or not all(isinstance(d, dict) for d in done):
        raise BadRequest(f"done must be a list of at most {MAX_UNSENT} objects")
    actions = []
    for d in done:
        how = _str(d, "action")
        if how not in ("label", "skip", "defer", "release"):
            raise BadRequest(f"unknown action {how!r}")
        actions.append((how, _str(d, "lease"), _label(d) if how == "label" else 0))
    call.sessions.close_tab(_str(args, "session"), _str(args, "tab"), actions)


# -- the application ----------------------------------------------------------------------------------------

class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


def create_app(sessions: Sessions, *, threads: int, hosts: AllowedHosts = AllowedHosts(LOOPBACK_NAMES),
               throttle: LoginThrottle | None = None, polls: LongPolls | None = None,
               show_model_guess: bool = False) -> Starlette:
    """The ASGI application serving `sessions` for `hosts`. `threads`: coordinator calls in flight at once (the
    long polls hold none). `polls`: the long polls' channel (web.LongPolls), closed on the way out.
    `show_model_guess`: items carry the model's guess, which the page pre-selects (item_json); off by default."""

    @contextlib.asynccontextmanager
    async def lifespan(app):
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        stop = threading.Event()

        def reap():
            while not stop.wait(REAP_INTERVAL_SECONDS):
                try:
                    sessions.reap()
                except Exception:  # noqa: BLE001 - housekeeping must outlive a coordinator outage
                    log.exception("reaping silent pages failed")

        reaper = threading.Thread(target=reap, name="reaper", daemon=True)
        reaper.start()
        try:
            yield
        finally:
            stop.set()
            await run_in_threadpool(sessions.close)  # every open page's leases go back to the pool now
            if polls is not None:
                await polls.close()

    routes = [Route("/", index), Mount("/static", StaticFiles(directory=STATIC), name="static")]
    for path, handler in (("login", login), ("logout", logout), ("tab", open_tab), ("lease", lease),
                          ("label", label), ("skip", give_back("skip")), ("defer", give_back("defer")),
                          ("release", give_back("release")), ("correct", correct), ("heartbeat", heartbeat),
                          ("close", close_tab)):
        routes.append(Route(f"/api/{path}", api(handler), methods=["POST"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sessions = sessions
    app.state.throttle = throttle or LoginThrottle()
    app.state.show_model_guess = show_model_guess
    app.add_middleware(HostGuard, hosts=hosts)
    app.add_middleware(SecurityHeaders)  # outermost: refusals carry the headers too
    return app

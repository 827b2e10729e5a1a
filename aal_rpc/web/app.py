"""The aal-web HTTP application: the page (aal_rpc/web/static, shipped in the package, nothing from a CDN) and a
small JSON API over aal_rpc/web/sessions.py. Endpoints are thin: parse, call Sessions in a worker thread (the
gRPC client blocks), and map errors to HTTP statuses.

Every API call is a POST with a JSON body naming its session (and tab); nothing rides on cookies, so no other
site can make a browser act here (no CSRF), and `/api/close` accepts what navigator.sendBeacon sends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from importlib import resources
from pathlib import Path

import anyio.to_thread
import grpc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from aal_rpc.client import LeasedQuery
from aal_rpc.web.guidelines import class_descriptions, guidelines_html
from aal_rpc.web.sessions import Expired, NotHeld, NotLabeledHere, Sessions

log = logging.getLogger("aal.web")

STATIC = Path(str(resources.files("aal_rpc.web") / "static"))
MAX_BODY_BYTES = 16 * 1024  # every request is a few short fields; a token is the longest
LONG_POLL_SECONDS = 10.0  # a page's lease waits this long for a query: short enough that a browser's six
#                           connections per site are never all held by polls of several open tabs
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


def item_json(query: LeasedQuery) -> dict:
    """A leased query as the page shows it: its picture as a data: URL (the original file, of its own media type),
    or the text, or a short summary of the values. The item's id stays here: an id may give the answer away
    ("cat_0042.jpg"), so the page knows an item by its lease."""
    text = query.text
    image = query.payload.image_data_url()
    if not image and not text:
        flat = query.array().reshape(-1)
        text = f"{flat.size} values: " + " ".join(f"{v:.3g}" for v in flat[:32]) + (" …" if flat.size > 32 else "")
    p = query.provenance
    return {"lease": query.lease_id, "deadline": query.deadline_unix, "image": image,
            "text": text, "strategy": p.strategy, "model_version": p.model_version, "score": p.score}


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def api(handler):
    """An endpoint: the JSON body as a dict in, a dict (or None: 204) out, errors as {"error": ...}."""
    async def endpoint(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "request too large")
        try:
            args = json.loads(body or b"{}")
            if not isinstance(args, dict):
                raise BadRequest("the body must be a JSON object")
            result = await run_in_threadpool(handler, request.app.state.sessions, args)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body must be JSON")
        except (BadRequest, ValueError) as exc:
            return _error(400, str(exc))
        except Expired as exc:
            return _error(401, str(exc), expired=exc.what)
        except (NotHeld, NotLabeledHere) as exc:
            return _error(409, str(exc))
        except grpc.RpcError as exc:
            code = exc.code()
            return _error(HTTP_STATUS.get(code, 502), f"coordinator: {exc.details() or code.name}")
        return Response(status_code=204) if result is None else JSONResponse(result)
    return endpoint


def _str(args: dict, key: str, *, required: bool = True) -> str:
    value = args.get(key, "")
    if not isinstance(value, str) or (required and not value):
        raise BadRequest(f"{key} must be a non-empty string")
    return value


def _label(args: dict, key: str = "label") -> int:
    value = args.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRequest(f"{key} must be an integer")
    return value


# -- the API ------------------------------------------------------------------------------------------------

def login(sessions: Sessions, args: dict) -> dict:
    token = _str(args, "token", required=False).strip()
    session = sessions.login(token or None, _str(args, "name", required=False))
    return {"session": session.session_id, "annotator": session.annotator_id}


def logout(sessions: Sessions, args: dict) -> None:
    sessions.logout(_str(args, "session"))


def open_tab(sessions: Sessions, args: dict) -> dict:
    session, tab = sessions.open_tab(_str(args, "session"))
    task = session.task
    return {"tab": tab.tab_id, "annotator": session.annotator_id, "class_names": list(task.class_names),
            "class_descriptions": class_descriptions(task.class_names, task.class_descriptions),
            "guidelines": guidelines_html(task.guidelines), "heartbeat_seconds": sessions.heartbeat_seconds,
            "stats": sessions.stats(session)}


def lease(sessions: Sessions, args: dict) -> dict:
    wait = args.get("wait", LONG_POLL_SECONDS)
    if not isinstance(wait, (int, float)) or not 0 <= wait <= LONG_POLL_SECONDS:
        raise BadRequest(f"wait must lie in [0, {LONG_POLL_SECONDS}]")
    query = sessions.lease(_str(args, "session"), _str(args, "tab"), float(wait))
    return {"item": None if query is None else item_json(query)}


def label(sessions: Sessions, args: dict) -> dict:
    result, stats = sessions.submit(_str(args, "session"), _str(args, "tab"), _str(args, "lease"), _label(args))
    return {"seq": result.seq, "duplicate": result.duplicate, "stats": stats}


def give_back(how: str):
    def handler(sessions: Sessions, args: dict) -> None:
        sessions.give_back(_str(args, "session"), _str(args, "tab"), _str(args, "lease"), how)
    return handler


def correct(sessions: Sessions, args: dict) -> dict:
    result, stats = sessions.correct(_str(args, "session"), _str(args, "lease"), _label(args))
    return {"seq": result.seq, "duplicate": result.duplicate, "stats": stats}


def heartbeat(sessions: Sessions, args: dict) -> dict:
    deadlines, lost, stats = sessions.heartbeat(_str(args, "session"), _str(args, "tab"))
    return {"deadlines": deadlines, "lost": lost, "stats": stats}


def close_tab(sessions: Sessions, args: dict) -> None:
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
    sessions.close_tab(_str(args, "session"), _str(args, "tab"), actions)


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


def create_app(sessions: Sessions, *, threads: int) -> Starlette:
    """The ASGI application serving `sessions`. `threads`: coordinator calls in flight at once (each long poll
    of an open page holds one while the query pool is empty)."""

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

    routes = [Route("/", index), Mount("/static", StaticFiles(directory=STATIC), name="static")]
    for path, handler in (("login", login), ("logout", logout), ("tab", open_tab), ("lease", lease),
                          ("label", label), ("skip", give_back("skip")), ("defer", give_back("defer")),
                          ("release", give_back("release")), ("correct", correct), ("heartbeat", heartbeat),
                          ("close", close_tab)):
        routes.append(Route(f"/api/{path}", api(handler), methods=["POST"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sessions = sessions
    app.add_middleware(SecurityHeaders)
    return app

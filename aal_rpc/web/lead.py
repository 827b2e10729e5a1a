"""The lead's page (GET /lead, static/lead.html + lead.js): the job's figures, live, for admin tokens only.

The page polls POST /api/lead with the token typed into it (kept in the page's memory, never in a cookie). Every
poll proves the token with the coordinator (GetStats is an admin call), so a token that is not an admin's is
refused (403) with a message that says why, and failed tries count against the login throttle. The figures are
client/job.py's job_report, exactly what `aal-admin stats --json` prints, read at most once per
LEAD_REFRESH_SECONDS for every lead at once (each read goes through all of L's provenance).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import grpc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from aal_rpc.client import CoordinatorClient
from aal_rpc.client.job import job_report
from aal_rpc.security import TOKEN_CHARS
from aal_rpc.web.app import HTTP_STATUS, MAX_TOKEN, STATIC, BadRequest, HttpError, parse, read_body
from aal_rpc.web.guard import MAX_BODY_BYTES
from aal_rpc.web.throttle import Throttled

LEAD_REFRESH_SECONDS = 5.0  # the figures a poll gets are at most this old
NOT_ADMIN = ("This page is for the job's lead: it needs an admin token (a tokens-file line 'admin:TOKEN'); the "
             "coordinator refused this one")


def finite(value):
    """`value` with every float that is not finite (NaN, inf) as None: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


class LeadView:
    """The figures for a token. `connect(token)`: a CoordinatorClient that calls with that token (None: aal-web's
    own). `report`: reads the figures with such a client (job_report). `clock`: monotonic seconds."""

    def __init__(self, connect: Callable[[str | None], CoordinatorClient], *,
                 report: Callable[[CoordinatorClient], dict] = job_report,
                 refresh_seconds: float = LEAD_REFRESH_SECONDS, clock: Callable[[], float] = time.monotonic):
        self._connect = connect
        self._report = report
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict | None = None
        self._next = float("-inf")

    def figures(self, token: str | None) -> dict:
        """The job's figures; grpc.RpcError when the coordinator refuses the token (or cannot be reached)."""
        client = self._connect(token)
        try:
            with self._lock:
                cached = self._last if self._clock() < self._next else None
            if cached is not None:
                client.stats()  # the token still has to be an admin's
                return cached
            figures = finite(self._report(client))
            with self._lock:
                self._last, self._next = figures, self._clock() + self._refresh
            return figures
        finally:
            client.close()


async def lead_page(request: Request) -> Response:
    return FileResponse(STATIC / "lead.html")


def lead_api(view: LeadView):
    async def endpoint(request: Request) -> Response:
        address = request.client.host if request.client else ""
        throttle = request.app.state.throttle
        try:
            args = parse(await read_body(request, MAX_BODY_BYTES))
            token = args.get("token", "")
            if not isinstance(token, str) or len(token) > MAX_TOKEN or (token and not TOKEN_CHARS.fullmatch(token)):
                raise BadRequest("this is not a token: a token is printable ASCII without spaces")
            throttle.check(address)
            figures = await run_in_threadpool(view.figures, token.strip() or None)
        except grpc.RpcError as exc:
            code = exc.code()
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                throttle.failed(address)
                message = NOT_ADMIN if code == grpc.StatusCode.PERMISSION_DENIED else \
                    "The coordinator does not know this token"
                return JSONResponse({"error": message}, status_code=HTTP_STATUS[code])
            return JSONResponse({"error": f"coordinator: {exc.details() or code.name}"},
                                status_code=HTTP_STATUS.get(code, 502))
        except Throttled as exc:
            return JSONResponse({"error": "too many refused tokens: wait a little"}, status_code=429,
                                headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
        except HttpError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(figures)
    return endpoint


def lead_routes(view: LeadView) -> list[Route]:
    """The page and its API, to add to aal-web's application (app.router.routes)."""
    return [Route("/lead", lead_page), Route("/api/lead", lead_api(view), methods=["POST"])]

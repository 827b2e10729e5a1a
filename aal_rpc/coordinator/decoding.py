"""Requests whose bytes are not the message they claim to be get INVALID_ARGUMENT and one short log line.

Left to itself grpcio answers such a request INTERNAL ("Exception deserializing request!") and logs a full
traceback for each, so anyone able to reach the port can flood the log. This interceptor swaps each
handler's deserializer for one that turns a failure into a marker, and aborts the call when the handler
meets the marker: before a unary request reaches the servicer, or as a streamed request is read.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
import time
from collections.abc import Callable

import grpc

from aal_rpc.errors import InvalidArgument
from aal_rpc.handlers import Memo, around, replace_behavior

log = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 60.0  # at most one line per minute about undecodable requests, however many arrive


class _Undecodable:
    """Stands in for a request whose bytes did not decode (grpcio treats None as a failure, so not None)."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


def _message_name(deserializer: Callable) -> str:
    cls = getattr(deserializer, "__self__", None)  # generated code hands over `Message.FromString`
    descriptor = getattr(cls, "DESCRIPTOR", None)
    return getattr(descriptor, "name", None) or "request"


def _tolerant(deserializer: Callable) -> Callable:
    name = _message_name(deserializer)

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception:  # noqa: BLE001 - whatever the bytes make the parser raise, the bytes are at fault
            return _Undecodable(name)

    return deserialize


class RateLimitedLog:
    """Logs a warning at most once per `interval` seconds, counting the ones it holds back."""

    def __init__(self, logger: logging.Logger, interval: float = LOG_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at: float | None = None
        self._held_back = 0

    def warning(self, message: str, *args) -> bool:
        """Log (and return True) unless a line went out less than `interval` ago."""
        with self._lock:
            now = self._clock()
            if self._next_at is not None and now < self._next_at:
                self._held_back += 1
                return False
            held_back, self._held_back = self._held_back, 0
            self._next_at = now + self._interval
        if held_back:
            message += " (%d more since the last such line)"
            args = (*args, held_back)
        self._logger.warning(message, *args)
        return True


class RequestDecodingInterceptor(grpc.aio.ServerInterceptor):
    """Undecodable requests get INVALID_ARGUMENT "request is not a valid <Message> message", never INTERNAL."""

    def __init__(self, limiter: RateLimitedLog | None = None):
        self._log = limiter or RateLimitedLog(log)
        self._wrap = Memo(self._checking)

    async def _refuse(self, method: str, context: grpc.aio.ServicerContext, bad: _Undecodable,
                      raised: Exception | None = None):
        """Log (rate-limited) and end the call with INVALID_ARGUMENT, unless the servicer already ended it with
        the error the marker made it raise (`raised`: a call is aborted once)."""
        details = f"request is not a valid {bad.message} message"
        self._log.warning("%s from %s: %s", method, context.peer(), details)
        if not isinstance(raised, grpc.aio.AbortError):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, details)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler  # an unknown method, or one that takes raw bytes (a refusal of the auth interceptor)
        return self._wrap(handler, handler_call_details.method)

    def _checking(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        refuse = self._refuse

        @contextlib.asynccontextmanager
        async def checked(request, context):
            if isinstance(request, _Undecodable):  # a unary request: refused before the servicer sees it
                await refuse(method, context, request)
            yield

        def streamed(behavior):
            # With a request stream the servicer meets the marker as it reads; whatever it makes of the error
            # (even swallowing it), the call fails for its bytes.
            async def requests_of(iterator, bad: list):
                async for request in iterator:
                    if isinstance(request, _Undecodable):
                        bad.append(request)
                        raise InvalidArgument(f"request is not a valid {request.message} message")
                    yield request

            if inspect.isasyncgenfunction(behavior):
                async def run_stream(iterator, context):
                    bad: list[_Undecodable] = []
                    try:
                        async for response in behavior(requests_of(iterator, bad), context):
                            yield response
                    except Exception as exc:
                        if bad:
                            await refuse(method, context, bad[0], exc)
                        raise
                    if bad:
                        await refuse(method, context, bad[0])
                return run_stream

            async def run(iterator, context):
                bad: list[_Undecodable] = []
                try:
                    result = await behavior(requests_of(iterator, bad), context)
                except Exception as exc:
                    if bad:
                        await refuse(method, context, bad[0], exc)
                    raise
                if bad:
                    await refuse(method, context, bad[0])
                return result
            return run

        tolerant = _tolerant(handler.request_deserializer)
        wrap = streamed if handler.request_streaming else (lambda behavior: around(behavior, checked))
        return replace_behavior(handler._replace(request_deserializer=tolerant), wrap)

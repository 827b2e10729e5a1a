"""Requests whose bytes are not the message they claim to be get INVALID_ARGUMENT and one short log line.

Left to itself grpcio answers such a request INTERNAL ("Exception deserializing request!") and logs a full
traceback for each, so anyone able to reach the port can flood the log. This interceptor swaps each
handler's deserializer for one that turns a failure into a marker, and aborts the call when the handler
meets the marker: before a unary request reaches the servicer, or as a streamed request is read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import grpc

from aal_rpc.errors import InvalidArgument

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


class RequestDecodingInterceptor(grpc.ServerInterceptor):
    """Undecodable requests get INVALID_ARGUMENT "request is not a valid <Message> message", never INTERNAL."""

    def __init__(self, limiter: RateLimitedLog | None = None):
        self._log = limiter or RateLimitedLog(log)

    def _refuse(self, method: str, context: grpc.ServicerContext, bad: _Undecodable):
        details = f"request is not a valid {bad.message} message"
        self._log.warning("%s from %s: %s", method, context.peer(), details)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, details)

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler  # an unknown method, or one that takes raw bytes (a refusal of the auth interceptor)
        method = handler_call_details.method
        refuse = self._refuse

        def checked(requests: Iterator, bad: list) -> Iterator:
            for request in requests:
                if isinstance(request, _Undecodable):
                    bad.append(request)
                    raise InvalidArgument(f"request is not a valid {request.message} message")  # servicers map it
                yield request

        def unary_request(behavior):
            def run(request, context):
                if isinstance(request, _Undecodable):
                    refuse(method, context, request)
                return behavior(request, context)
            return run

        # With a request stream the servicer meets the marker as it reads; whatever it makes of the error
        # (even swallowing it), the call fails for its bytes.
        def request_stream(behavior):
            def run(requests, context):
                bad: list[_Undecodable] = []
                try:
                    result = behavior(checked(requests, bad), context)
                except Exception:
                    if bad:
                        refuse(method, context, bad[0])
                    raise
                if bad:
                    refuse(method, context, bad[0])
                return result
            return run

        def request_and_response_stream(behavior):
            def run(requests, context):
                bad: list[_Undecodable] = []
                try:
                    yield from behavior(checked(requests, bad), context)
                except Exception:  # not GeneratorExit: a call closed early just ends
                    if bad:
                        refuse(method, context, bad[0])
                    raise
                if bad:
                    refuse(method, context, bad[0])
            return run

        tolerant = _tolerant(handler.request_deserializer)
        if not handler.request_streaming:
            field = "unary_stream" if handler.response_streaming else "unary_unary"
            return handler._replace(request_deserializer=tolerant,
                                    **{field: unary_request(getattr(handler, field))})
        if handler.response_streaming:
            return handler._replace(request_deserializer=tolerant,
                                    stream_stream=request_and_response_stream(handler.stream_stream))
        return handler._replace(request_deserializer=tolerant, stream_unary=request_stream(handler.stream_unary))

"""Wrapping the behaviour of an asyncio gRPC method handler, for the server's interceptors (auth, request
decoding, metrics)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import grpc


class Memo:
    """`wrap(handler, *extra)`, computed once per distinct argument tuple. An interceptor runs for every call,
    but the handler it is given is the same object for every call of a method (and of a caller, behind the auth
    interceptor), so each wrapping is built once instead of per call: that was a third of the event loop's time.
    The arguments are few (methods × callers from the tokens file), so the memo stays small."""

    def __init__(self, wrap: Callable):
        self._wrap = wrap
        self._done: dict = {}

    def __call__(self, handler: grpc.RpcMethodHandler, *extra) -> grpc.RpcMethodHandler:
        key = (handler, *extra)
        wrapped = self._done.get(key)
        if wrapped is None:
            wrapped = self._done[key] = self._wrap(handler, *extra)
        return wrapped


def replace_behavior(handler: grpc.RpcMethodHandler, wrap: Callable) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour replaced by `wrap(behaviour)`, whichever of the four shapes it has."""
    field = {(False, False): "unary_unary", (False, True): "unary_stream", (True, False): "stream_unary",
             (True, True): "stream_stream"}[(handler.request_streaming, handler.response_streaming)]
    return handler._replace(**{field: wrap(getattr(handler, field))})


def around(behavior: Callable, enter: Callable) -> Callable:
    """An async behaviour that runs `behavior(request, context)` inside the async context manager
    `enter(request, context)`: for a coroutine (which may write its responses itself) or an async generator."""
    if inspect.isasyncgenfunction(behavior):
        async def run_stream(request, context):
            async with enter(request, context):
                async for response in behavior(request, context):
                    yield response
        return run_stream

    async def run(request, context):
        async with enter(request, context):
            return await behavior(request, context)
    return run


class Serialized:
    """A response message serialized ahead of time (a download's chunks, sent to every worker): sent as is."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


class SerializedResponses(grpc.aio.ServerInterceptor):
    """Lets a servicer answer with `Serialized` messages: their bytes go out without serializing again."""

    def __init__(self):
        self._wrap = Memo(_passing_serialized)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.response_serializer is None:
            return handler
        return self._wrap(handler)


def _passing_serialized(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    serialize = handler.response_serializer
    return handler._replace(response_serializer=lambda m: m.data if isinstance(m, Serialized) else serialize(m))

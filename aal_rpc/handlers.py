"""Wrapping the behaviour of an asyncio gRPC method handler, for the server's interceptors (auth, request
decoding, metrics)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import grpc


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

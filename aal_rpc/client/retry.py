"""Retrying calls across a coordinator restart, on top of the channel's own service-config retries, and the
channel handling every client shares."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from aal_rpc.grpc_utils import create_channel
from aal_rpc.security import ClientSecurity

T = TypeVar("T")

RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 2.0


def call_with_retry(fn: Callable[[], T], *, retry_for: float,
                    codes: tuple[grpc.StatusCode, ...] = RETRYABLE) -> T:
    """Call `fn` until it succeeds, fails with a code not in `codes`, or `retry_for` seconds have passed."""
    give_up = time.monotonic() + retry_for
    backoff = INITIAL_BACKOFF
    while True:
        try:
            return fn()
        except grpc.RpcError as exc:
            if exc.code() not in codes or time.monotonic() + backoff > give_up:
                raise
        time.sleep(backoff * (0.5 + random.random()))  # jitter spreads a crowd of reconnecting clients
        backoff = min(MAX_BACKOFF, backoff * 2)


class ChannelClient:
    """Owns (or borrows) a channel to the coordinator and makes retried calls with deadlines on it."""

    def __init__(self, target: str, *, retry_for: float, channel: grpc.Channel | None,
                 security: ClientSecurity | None):
        self.target = target
        self.retry_for = retry_for
        self._channel = channel or create_channel(target, security)
        self._owns_channel = channel is None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def _call(self, method, request, timeout: float):
        return call_with_retry(lambda: method(request, timeout=timeout, wait_for_ready=True),
                               retry_for=self.retry_for)

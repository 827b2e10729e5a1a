"""Retrying calls across a coordinator restart, on top of the channel's own service-config retries."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

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

"""The one retry policy every client shares, the channel handling behind it, and whether the coordinator answers.

A call that fails with UNAVAILABLE or DEADLINE_EXCEEDED is tried again with jittered exponential backoff for
`retry_for` seconds, or for as long as it takes when `retry_for` is None (the daemons: they ride out an outage of
any length). This is the only retry layer (the channels carry no retry policy of their own). Every aal.v1 call is
safe to repeat: label submissions are idempotent per lease, candidates and shard state by item, uploads get a
version only once whole, downloads, polls and exports only read. Keepalive turns a
dead connection into UNAVAILABLE within seconds and long polls ask only for their wait plus a margin
(grpc_utils), so a cut shows, and is retried, long before any deadline of minutes.

Whether the coordinator answers is tracked once per address for the whole process (`Contact`): one log line
when contact is lost, one when it is regained, however many calls and threads retry in between.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from aal_rpc.grpc_utils import create_channel
from aal_rpc.proto.v1 import admin_pb2, admin_pb2_grpc
from aal_rpc.security import ClientSecurity

log = logging.getLogger("aal.client")

T = TypeVar("T")

TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 2.0
PROBE_TIMEOUT = 10.0  # seconds for the GetTask that shows the coordinator answers (check, wait_until_answering)


class Contact:
    """Whether the coordinator at `target` answers this process, judged from the outcomes of its calls.

    Only a call begun after the last change of state can change it again: a call that was already on its way
    when contact was regained (and then fails) or lost (and then succeeds) tells nothing new. So however many
    threads share the coordinator, each outage is logged once as lost and once as regained.
    """

    def __init__(self, target: str):
        self.target = target
        self._lock = threading.Lock()
        self._reached = False  # has the coordinator ever answered this process
        self._lost_at: float | None = None  # monotonic time contact was lost; None while in contact
        self._changed_at = -math.inf

    @property
    def in_contact(self) -> bool:
        return self._lost_at is None

    def answered(self, started: float) -> None:
        """A call begun at `started` (time.monotonic()) got an answer from the coordinator."""
        with self._lock:
            reached, self._reached = self._reached, True
            if self._lost_at is None or started < self._changed_at:
                return
            now = time.monotonic()
            down, self._lost_at, self._changed_at = now - self._lost_at, None, now
        log.info("%s the coordinator at %s after %.1fs", "regained contact with" if reached else "reached",
                 self.target, down)

    def failed(self, exc: grpc.RpcError, started: float) -> None:
        """A call begun at `started` failed with a transient status and is about to be retried."""
        with self._lock:
            if self._lost_at is not None or started < self._changed_at:
                return
            self._lost_at = self._changed_at = time.monotonic()
            reached = self._reached
        log.warning("%s the coordinator at %s (%s: %s); retrying until it answers",
                    "lost contact with" if reached else "cannot reach", self.target, exc.code().name,
                    " ".join((exc.details() or "").split()))


_contacts: dict[str, Contact] = {}
_contacts_lock = threading.Lock()


def contact_with(target: str) -> Contact:
    """This process's Contact with the coordinator at `target` (one per address, shared by all its clients)."""
    with _contacts_lock:
        return _contacts.setdefault(target, Contact(target))


class Retrier:
    """The retry policy: after each failed attempt, either wait (jittered exponential backoff) or give up.

    Parameters
    ----------
    retry_for:
        Seconds from the first failed attempt's start after which to give up; None never gives up.
    contact:
        Told of every answer and every retried failure.
    stop:
        When set, give up at once (a daemon being stopped): the last failure is raised.
    """

    def __init__(self, *, retry_for: float | None, contact: Contact | None = None,
                 stop: threading.Event | None = None):
        self.retry_for = retry_for
        self.contact = contact
        self.stop = stop or threading.Event()
        self._give_up: float | None = None
        self._backoff = INITIAL_BACKOFF

    def answered(self, started: float) -> None:
        """The attempt begun at `started` was answered: the next failure starts a fresh round of retries."""
        self._give_up, self._backoff = None, INITIAL_BACKOFF
        if self.contact is not None:
            self.contact.answered(started)

    def failed(self, exc: grpc.RpcError, started: float) -> None:
        """Return once it is time for the next attempt; raise `exc` when there is to be none."""
        code = exc.code()
        if code not in TRANSIENT:
            if self.contact is not None and code != grpc.StatusCode.CANCELLED:  # a status the coordinator sent
                self.contact.answered(started)
            raise exc
        if self._give_up is None:
            self._give_up = math.inf if self.retry_for is None else started + self.retry_for
        pause = self._backoff * (0.5 + random.random())  # jitter spreads a crowd of reconnecting clients
        if time.monotonic() + pause > self._give_up or self.stop.is_set():
            raise exc
        if self.contact is not None:
            self.contact.failed(exc, started)
        self._backoff = min(MAX_BACKOFF, self._backoff * 2)
        if self.stop.wait(pause):
            raise exc


def call_with_retry(fn: Callable[[], T], *, retry_for: float | None, contact: Contact | None = None,
                    stop: threading.Event | None = None) -> T:
    """Call `fn` until it succeeds, fails with a status that is not transient, `retry_for` seconds have passed
    (None: no limit) or `stop` is set; the last failure is raised."""
    retrier = Retrier(retry_for=retry_for, contact=contact, stop=stop)
    while True:
        started = time.monotonic()
        try:
            result = fn()
        except grpc.RpcError as exc:
            retrier.failed(exc, started)
        else:
            retrier.answered(started)
            return result


class ChannelClient:
    """Owns (or borrows) a channel to the coordinator and makes retried calls with deadlines on it.

    `retry_for` (seconds, or None for no limit) bounds how long a call keeps retrying through an outage, and may
    be changed at any time. `wait_for_ready` False makes a call fail at once while the coordinator cannot be
    reached (one-shot commands) instead of waiting for it within its deadline. `stop_retrying` also cancels the
    calls on their way at that moment: a daemon stopped while the coordinator is gone exits at once, not when
    the call it was in reaches its deadline.
    """

    def __init__(self, target: str, *, retry_for: float | None, channel: grpc.Channel | None,
                 security: ClientSecurity | None, wait_for_ready: bool = True):
        self.target = target
        self.security = security
        self.retry_for = retry_for
        self._wait_for_ready = wait_for_ready
        self.contact = contact_with(target)
        self._stop = threading.Event()
        self._calls: set = set()  # calls on their way, which stop_retrying cancels
        # reentrant: stop_retrying runs in a signal handler, maybe on the thread that holds it
        self._calls_lock = threading.RLock()
        self._channel = channel or create_channel(target, security)
        self._owns_channel = channel is None
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._owns_channel:
            self._channel.close()

    @property
    def wait_for_ready(self) -> bool:
        """Whether a call waits (within its deadline) for the coordinator to be reachable: as constructed, until
        stop_retrying; from then on a call fails at once where the coordinator is gone."""
        return self._wait_for_ready and not self._stop.is_set()

    @wait_for_ready.setter
    def wait_for_ready(self, value: bool) -> None:
        self._wait_for_ready = value

    def stop_retrying(self) -> None:
        """From now on a failed call is not retried, and the calls on their way end now with CANCELLED (a daemon
        being stopped must not wait out an outage). Calls begun later are made once, without waiting for a
        coordinator that cannot be reached."""
        with self._calls_lock:  # a call is begun under the lock: before this (and cancelled) or after (not waiting)
            self._stop.set()
            calls = list(self._calls)
        for call in calls:
            call.cancel()

    @contextlib.contextmanager
    def _on_its_way(self, begin: Callable):
        """Begin a call (`begin()`, a grpc call object) and track it while the block runs, so that stop_retrying
        cancels it; a unary call's future cancelled so is raised as itself (an RpcError with CANCELLED, which is
        never retried)."""
        with self._calls_lock:
            call = begin()
            self._calls.add(call)
        try:
            yield call
        except grpc.FutureCancelledError:
            raise call from None
        finally:
            with self._calls_lock:
                self._calls.discard(call)

    def _awaited(self, begin: Callable[[], grpc.Future]):
        """The result of a call begun by `begin()` with `.future(...)`, which stop_retrying cancels."""
        with self._on_its_way(begin) as call:
            return call.result()

    def check(self) -> None:
        """Ask the coordinator one question (GetTask) now, without waiting for it or retrying: the first call of a
        long-running command, so that a misconfigured connection or token fails it at once."""
        started = time.monotonic()
        self._admin.GetTask(admin_pb2.GetTaskRequest(), timeout=PROBE_TIMEOUT, wait_for_ready=False)
        self.contact.answered(started)

    def wait_until_answering(self) -> None:
        """Return once the coordinator answers (a retried GetTask); raise when this client gives up."""
        self._call(self._admin.GetTask, admin_pb2.GetTaskRequest(), PROBE_TIMEOUT)

    def _retrying(self, fn: Callable[[], T]) -> T:
        return call_with_retry(fn, retry_for=self.retry_for, contact=self.contact, stop=self._stop)

    def _call(self, method, request, timeout: float):
        return self._retrying(lambda: self._awaited(lambda: method.future(request, timeout=timeout,
                                                                           wait_for_ready=self.wait_for_ready)))


class ResumableStream:
    """The messages of a server-streaming call whose messages carry a `seq`, resumed across outages.

    `open_after(seq)` starts the call at the messages after `seq`. When the call fails with a transient status,
    the stream waits (by the client's retry policy) until the coordinator answers again and reopens it after the
    last message received, so the caller sees every message once, in order. `cancel()` ends it from any thread.
    """

    def __init__(self, client: ChannelClient, open_after: Callable[[int], grpc.Call], *, after_seq: int):
        self._client = client
        self._open_after = open_after
        self.after_seq = after_seq
        self._call: grpc.Call | None = None
        self._cancelled = False
        self._lock = threading.Lock()

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            if self._call is not None:
                self._call.cancel()

    def __iter__(self) -> Iterator:
        retrier = Retrier(retry_for=self._client.retry_for, contact=self._client.contact, stop=self._client._stop)
        while True:
            with self._lock:
                if self._cancelled:
                    return
                self._call = call = self._open_after(self.after_seq)
            started, answered = time.monotonic(), False
            try:
                for msg in call:
                    if not answered:
                        retrier.answered(started)
                        answered = True
                    self.after_seq = msg.seq
                    yield msg
                return
            except grpc.RpcError as exc:
                if self._cancelled:
                    return
                retrier.failed(exc, started)  # raises unless it is an outage to ride out
            # a quiet stream proves nothing when reopened: wait until the coordinator answers a question
            self._client.wait_until_answering()

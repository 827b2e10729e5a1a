"""The one retry policy (client/retry.py) without a network: what is retried, what is not, and one log line per
change of contact however many calls fail."""

from __future__ import annotations

import logging
import socket
import threading
import time

import grpc
import pytest

from aal_rpc.client.retry import PROBE_TIMEOUT, ChannelClient, Contact, call_with_retry


class Failure(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "x"):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def failing(*codes: grpc.StatusCode):
    """A call failing with `codes` in turn, then answering "ok"; `.attempts` counts its calls."""
    queue = list(codes)

    def fn():
        fn.attempts += 1
        if queue:
            raise Failure(queue.pop(0))
        return "ok"
    fn.attempts = 0
    return fn


def test_outages_are_retried_until_answered():
    fn = failing(grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert call_with_retry(fn, retry_for=None) == "ok" and fn.attempts == 4


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
                                  grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION])
def test_refusals_are_never_retried(code):
    fn = failing(code)
    with pytest.raises(grpc.RpcError) as info:
        call_with_retry(fn, retry_for=None)
    assert info.value.code() == code and fn.attempts == 1


def test_a_bounded_retry_gives_up_and_a_stop_ends_an_unbounded_one():
    with pytest.raises(grpc.RpcError):
        call_with_retry(failing(*[grpc.StatusCode.UNAVAILABLE] * 1000), retry_for=0)
    stop = threading.Event()
    stop.set()
    fn = failing(*[grpc.StatusCode.DEADLINE_EXCEEDED] * 1000)
    with pytest.raises(grpc.RpcError):
        call_with_retry(fn, retry_for=None, stop=stop)
    assert fn.attempts == 1


def test_contact_is_logged_once_when_lost_and_once_when_regained(caplog):
    contact = Contact("coordinator:1")
    outage = Failure(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    with caplog.at_level(logging.INFO, logger="aal.client"):
        before = time.monotonic()
        contact.answered(before)
        lost_by = time.monotonic()
        for _ in range(3):  # several threads, many retries: one line
            contact.failed(outage, lost_by)
        contact.answered(before)  # an answer to a call begun before the loss says nothing new
        assert not contact.in_contact
        contact.answered(time.monotonic())
        contact.failed(outage, lost_by)  # a call begun before contact came back fails late: nothing new either
        assert contact.in_contact
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("lost contact with the coordinator at coordinator:1 (UNAVAILABLE: Socket closed)")
    assert lines[1].startswith("regained contact with the coordinator at coordinator:1 after")


def test_stop_retrying_cancels_the_call_on_its_way():
    """A daemon stopped while the coordinator is gone: the call it is in ends now with CANCELLED, not at its deadline
    (DEADLINE_EXCEEDED, then no retry, is what the call would end with if it were left to run)."""
    with socket.socket() as gone:  # accepts connections and never answers: a coordinator that stopped responding
        gone.bind(("127.0.0.1", 0))
        gone.listen()
        client = ChannelClient(f"127.0.0.1:{gone.getsockname()[1]}", retry_for=None, channel=None, security=None)
        ended: list[grpc.StatusCode] = []

        def ask():
            try:
                client.wait_until_answering()
            except grpc.RpcError as exc:
                ended.append(exc.code())

        asker = threading.Thread(target=ask)
        asker.start()
        on_its_way_by = time.monotonic() + PROBE_TIMEOUT
        while not client._calls and time.monotonic() < on_its_way_by:  # the call is on its way
            time.sleep(0.01)
        client.stop_retrying()
        asker.join(PROBE_TIMEOUT * 2)
        client.close()
    assert ended == [grpc.StatusCode.CANCELLED]


def test_after_stop_retrying_a_call_fails_at_once_where_the_coordinator_is_gone():
    """Calls a stopping daemon begins after stop_retrying are made once and do not wait for a coordinator that
    cannot be reached: UNAVAILABLE now, not DEADLINE_EXCEEDED at the end of the call's deadline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = ChannelClient(f"127.0.0.1:{port}", retry_for=None, channel=None, security=None)
    client.stop_retrying()
    with pytest.raises(grpc.RpcError) as info:
        client.wait_until_answering()
    client.close()
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

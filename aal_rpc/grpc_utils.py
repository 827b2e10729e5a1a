"""Server and channel factories, with every option named and its reason next to its value."""

from __future__ import annotations

import asyncio
import logging
import threading

import grpc

from aal_rpc.security import ClientSecurity, with_token

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's default; weights travel in 1 MiB chunks, so nothing needs more
# Threads that run the coordinator's store work (SQLite writes, PostgreSQL transactions) for the asyncio servicers.
# A call that waits (a long poll, a follow stream, a download to a slow reader) holds none: it waits on the
# event loop. So this bounds the store work in flight, not the calls a coordinator can hold open.
DEFAULT_MAX_WORKERS = 32

# Keepalive. A connection whose peer vanished without a FIN or RST (a pulled cable, a partition, a NAT that
# forgot it) still looks ESTABLISHED and READY; only an unanswered ping shows it is dead. After KEEPALIVE_TIME_MS
# without reading anything a ping goes out, and PING_TIMEOUT_MS later without its answer the connection is
# closed: its calls fail with UNAVAILABLE and are retried on a new one (client/retry.py). So a dead connection
# is found within 15 s, well inside the call deadlines (30 s); the server finds dead clients the same way.
KEEPALIVE_TIME_MS = 10_000  # ping after this long without reading anything
KEEPALIVE_TIMEOUT_MS = 5_000  # declare the connection dead when a ping is unanswered this long
PING_TIMEOUT_MS = KEEPALIVE_TIMEOUT_MS  # gRPC >= 1.60 waits this long (default 60 s) for any ping's answer
KEEPALIVE_PERMIT_WITHOUT_CALLS = 1  # idle workers keep their channel warm between model versions
# The server accepts a client ping this often; half the clients' interval, so timer jitter never earns a
# strike (after two strikes gRPC closes the connection with GOAWAY too_many_pings).
MIN_PING_INTERVAL_MS = KEEPALIVE_TIME_MS // 2
# A connection attempt is given up after this long (gRPC's default is 20 s). An attempt made while the network
# is cut hangs on a handshake that never completes; giving it up soon lets the channel reconnect within a few
# seconds of the link returning. A TLS handshake needs a few round trips, far less than this.
CONNECT_TIMEOUT_MS = 5_000
# A long poll asks the server to wait `wait_seconds`; its deadline allows this much more for the answer to
# travel. The server ends the poll a little before the deadline (coordinator/servicers.py), so a healthy poll
# never fails with DEADLINE_EXCEEDED, and a poll on a dead connection fails soon after its wait.
LONG_POLL_MARGIN_SECONDS = 5.0

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),  # larger requests get RESOURCE_EXHAUSTED
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", KEEPALIVE_PERMIT_WITHOUT_CALLS),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_pings_without_data", 0),  # streams may idle for long; never starve keepalive pings
    ("grpc.so_reuseport", 0),  # a port-0 bind must never share its port with another process
]

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.http2.ping_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", KEEPALIVE_PERMIT_WITHOUT_CALLS),
    # gRPC's default allows two pings while no data is sent; a long poll or a quiet label stream sends none,
    # and keepalive would stop probing exactly when a dead connection must be found
    ("grpc.http2.max_pings_without_data", 0),
    # No retry policy in the service config: client/retry.py is the one retry policy (gRPC still retries, at
    # once, a call that never left this process, as it always does).
    ("grpc.initial_reconnect_backoff_ms", 100),  # reconnect fast after a coordinator restart
    ("grpc.max_reconnect_backoff_ms", 2_000),  # ...and keep trying often while it is down
    ("grpc.min_reconnect_backoff_ms", CONNECT_TIMEOUT_MS),  # gRPC takes this as the connect timeout
]


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def create_server(interceptors=()) -> grpc.aio.Server:
    """An asyncio gRPC server with the options above. Call it on the loop that will run it (`server_loop()`)."""
    _grpc_log.addFilter(_client_gone)  # once: a logger holds a filter once
    return grpc.aio.server(options=SERVER_OPTIONS, interceptors=list(interceptors))


_grpc_log = logging.getLogger("grpc._cython.cygrpc")
_CLIENT_GONE = "ExecuteBatchError raised in core by servicer method"


def _client_gone(record: logging.LogRecord) -> bool:
    """grpcio logs an ERROR with a traceback when a stream's response cannot be sent because the client has gone
    (cancelled, or its connection dropped) before grpcio noticed the cancel: nothing failed on the server's side.
    Such a record is kept as one DEBUG line, and only where DEBUG is logged."""
    if not record.getMessage().startswith(_CLIENT_GONE):
        return True
    record.levelno, record.levelname, record.exc_info, record.exc_text = logging.DEBUG, "DEBUG", None, None
    record.msg, record.args = f"{record.getMessage()}: the client has gone", ()
    return _grpc_log.isEnabledFor(logging.DEBUG)


class _LoopThread:
    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="grpc-aio", daemon=True).start()

    def run(self, coro, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


_loop_thread: _LoopThread | None = None
_loop_lock = threading.Lock()


def server_loop() -> _LoopThread:
    """The process's event loop for gRPC servers, running in a daemon thread: every aio server a process starts
    (coordinators in tests, the health port) lives on this one loop, and synchronous code drives it with
    `server_loop().run(coroutine)`."""
    global _loop_thread
    with _loop_lock:
        if _loop_thread is None:
            _loop_thread = _LoopThread()
        return _loop_thread


def create_channel(target: str, security: ClientSecurity | None = None) -> grpc.Channel:
    """A channel with the retry policy and keepalive above; TLS and a bearer token when `security` says so."""
    creds = security.channel_credentials() if security else None
    channel = (grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS) if creds
               else grpc.insecure_channel(target, options=CHANNEL_OPTIONS))
    return with_token(channel, security.token if security else None)

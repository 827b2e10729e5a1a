"""Server and channel factories, with every option named and its reason next to its value."""

from __future__ import annotations

import json
from concurrent import futures

import grpc

from aal_rpc.security import ClientSecurity, with_token

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # gRPC's default; weights travel in 1 MiB chunks, so nothing needs more
DEFAULT_MAX_WORKERS = 128  # threads serving RPCs; long polls and label streams each hold one while waiting

# Keepalive: dead peers (a killed worker, a dropped laptop) are detected and their streams reaped.
KEEPALIVE_TIME_MS = 20_000  # ping after this long without activity
KEEPALIVE_TIMEOUT_MS = 10_000  # declare the peer dead when a ping is unanswered this long
KEEPALIVE_PERMIT_WITHOUT_CALLS = 1  # idle workers keep their channel warm between model versions
MIN_PING_INTERVAL_MS = 10_000  # the server accepts client pings this often, below KEEPALIVE_TIME_MS

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),  # larger requests get RESOURCE_EXHAUSTED
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", KEEPALIVE_PERMIT_WITHOUT_CALLS),
    ("grpc.http2.min_ping_interval_without_data_ms", MIN_PING_INTERVAL_MS),
    ("grpc.http2.max_pings_without_data", 0),  # streams may idle for long; never starve keepalive pings
    ("grpc.so_reuseport", 0),  # a port-0 bind must never share its port with another process
]

# Clients retry UNAVAILABLE (a coordinator restarting) with exponential backoff. Every aal.v1 call is
# safe to repeat: label submissions are idempotent per lease, uploads get a new version only once whole.
RETRY_SERVICE_CONFIG = {
    "methodConfig": [{
        "name": [{"service": f"aal.v1.{s}"} for s in
                 ("AnnotationService", "TrainingService", "SelectionService", "AdminService")],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.1s",
            "maxBackoff": "2s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }]
}

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", KEEPALIVE_PERMIT_WITHOUT_CALLS),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)),
    ("grpc.initial_reconnect_backoff_ms", 100),  # reconnect fast after a coordinator restart
    ("grpc.max_reconnect_backoff_ms", 2_000),  # ...and keep trying often while it is down
]


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"address must be HOST:PORT, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def create_server(max_workers: int = DEFAULT_MAX_WORKERS, interceptors=()) -> grpc.Server:
    return grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
                       options=SERVER_OPTIONS, interceptors=list(interceptors))


def create_channel(target: str, security: ClientSecurity | None = None) -> grpc.Channel:
    """A channel with the retry policy and keepalive above; TLS and a bearer token when `security` says so."""
    creds = security.channel_credentials() if security else None
    channel = (grpc.secure_channel(target, creds, options=CHANNEL_OPTIONS) if creds
               else grpc.insecure_channel(target, options=CHANNEL_OPTIONS))
    return with_token(channel, security.token if security else None)

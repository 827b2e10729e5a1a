"""The bridge's webhook receiver: Label Studio POSTs ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_DELETED
here, and the receiver hands the bridge which task (or which deleted annotations) to look at again.

A webhook is only a hint: the bridge reads the task back from Label Studio's API before acting, and looks only at its
own tasks, so a forged or replayed POST can at most make it look again. Only a request carrying the secret header the
bridge registered is read; Label Studio shows that header to every member of the organization, so the secret keeps
out those who can reach the port but not Label Studio, no more. Whoever sends, the receiver is bounded: one request
per connection, each read within a deadline, a few connections at once, a capped body and JSON nesting; anything odd
is answered 4xx with one debug line. The answer is immediate (Label Studio waits for it, one second at most, inside
the annotator's save).
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aal_rpc.labelstudio.ids import valid_id
from aal_rpc.labelstudio.studio import SECRET_HEADER

log = logging.getLogger("aal.labelstudio")

# A payload carries the task's data: a picture of up to 2 MiB is a data: URL of 2.7 MiB. A larger body is refused
# (413) and the task is found by the next poll instead.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_CONNECTIONS = 16  # served at once; more are answered 503 at once (the poll catches what they named)
REQUEST_SECONDS = 10.0  # to send a whole request, from connecting to the body's last byte
MAX_CONTAINERS = 20_000  # JSON objects and arrays in one body: bounds what parsing it may allocate
MAX_NAMED = 1_000  # task and annotation ids one webhook may name (a deletion of many names one each)
WEBHOOK_PATH = "/webhook"


def _ids(values) -> set[int]:
    return {i for i in values if valid_id(i) is not None}


def hints_of(payload) -> tuple[set[int], set[int]]:
    """(task ids to look at, deleted annotation ids) named by one webhook payload; nothing for anything odd (a
    valid id is a positive int within SQLite's int64)."""
    tasks: set[int] = set()
    deleted: set[int] = set()
    if not isinstance(payload, dict):
        return tasks, deleted
    action = payload.get("action")
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        annotation = payload.get("annotation")
        task = payload.get("task")
        named = annotation.get("task") if isinstance(annotation, dict) else None
        if named is None and isinstance(task, dict):
            named = task.get("id")
        if isinstance(named, dict):
            named = named.get("id")
        tasks = _ids([named])
    elif action == "ANNOTATIONS_DELETED":
        annotations = payload.get("annotations")
        if isinstance(annotations, list):
            deleted = _ids(a.get("id") for a in annotations[:MAX_NAMED] if isinstance(a, dict))
    return tasks, deleted


class _DeadlineReader(io.RawIOBase):
    """A connection's reads, each given what is left of the request's deadline: a client that sends a byte now and
    then cannot hold a thread longer than REQUEST_SECONDS."""

    def __init__(self, sock: socket.socket, deadline: float):
        self._sock, self._deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took too long")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


def _json_of(body: bytes):
    """The body's JSON, or None when it is none, or too deep or too big to parse within bounds."""
    if body.count(b"{") + body.count(b"[") > MAX_CONTAINERS:
        return None
    try:
        return json.loads(body or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the interpreter's stack
        return None


class _Server(ThreadingHTTPServer):
    """A thread per connection, MAX_CONNECTIONS at most; errors in a connection end it with one debug line."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64  # connections the kernel holds until accepted (each is then served or refused at once)

    def __init__(self, address, handler, max_connections: int):
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            try:  # a few bytes into a fresh socket's buffer: this never blocks the accepting thread
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):  # not socketserver's traceback on stderr
        import sys

        exc = sys.exc_info()[1]
        log.debug("webhook connection from %s ended: %s: %s", client_address[0], type(exc).__name__, exc)


class _ServerV6(_Server):
    address_family = socket.AF_INET6


class WebhookReceiver:
    """An HTTP server on its own threads; `on_hint(task_ids, deleted_annotation_ids)` is called per webhook."""

    def __init__(self, host: str, port: int, secret: str, on_hint: Callable[[set[int], set[int]], None], *,
                 max_connections: int = MAX_CONNECTIONS, request_seconds: float = REQUEST_SECONDS):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                reader = _DeadlineReader(self.connection, time.monotonic() + request_seconds)
                self.rfile = io.BufferedReader(reader)

            def handle(self):  # one request per connection: its deadline covers all of it
                self.close_connection = True
                self.handle_one_request()

            def do_POST(self):
                if self.path.split("?", 1)[0] != WEBHOOK_PATH:
                    return self._answer(404)
                given = str(self.headers.get(SECRET_HEADER) or "")  # str(): a non-ASCII value comes as a Header
                if not hmac.compare_digest(given.encode(errors="replace"), secret.encode()):
                    return self._answer(403)
                if "chunked" in str(self.headers.get("Transfer-Encoding") or "").lower():
                    return self._answer(411)  # a length, or nothing: a chunked body has no bound up front
                lengths = {str(v).strip() for v in self.headers.get_all("Content-Length") or ["0"]}
                if len(lengths) != 1:
                    return self._answer(400)
                given_length = lengths.pop()
                if not (given_length.isascii() and given_length.isdigit()):
                    return self._answer(400)
                if len(given_length) > 12 or int(given_length) > MAX_BODY_BYTES:
                    return self._answer(413)
                length = int(given_length)
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # the client left mid-body: nobody to answer
                payload = _json_of(body)
                if payload is None:
                    return self._answer(400)
                self._answer(200)
                tasks, deleted = hints_of(payload)
                if tasks or deleted:
                    on_hint(tasks, deleted)

            def do_GET(self):
                self._answer(200 if self.path == "/health" else 404)

            def send_error(self, code, message=None, explain=None):
                # what the base class refuses (an unknown method, HTTP/2.0, a line too long) is the client's fault
                if code == HTTPStatus.NOT_IMPLEMENTED:
                    code = HTTPStatus.METHOD_NOT_ALLOWED
                elif code >= 500:
                    code = HTTPStatus.BAD_REQUEST
                self.close_connection = True
                self._answer(code)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, fmt, *args):  # access lines only at debug level
                log.debug("webhook %s", " ".join((fmt % args).split()))

        server_class = _ServerV6 if ":" in host else _Server
        self.server = server_class((host, port), Handler, max_connections)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="webhooks", daemon=True)
        self.started = False

    def start(self) -> None:
        self._thread.start()
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.server.shutdown()
        self.server.server_close()

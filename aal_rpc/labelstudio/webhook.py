"""The bridge's webhook receiver: Label Studio POSTs ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_DELETED
here, and the receiver hands the bridge which task (or which deleted annotations) to look at again.

A webhook is only a hint: the bridge reads the task back from Label Studio's API before acting, so a forged or
replayed POST can at most make it look again. Still, only a request carrying the secret header the bridge registered
is taken. The answer is immediate (Label Studio waits for it, one second at most, inside the annotator's save).
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aal_rpc.labelstudio.studio import SECRET_HEADER

log = logging.getLogger("aal.labelstudio")

MAX_BODY_BYTES = 32 * 1024 * 1024  # a payload carries the task's data: an image of up to 2 MiB as a data: URL
WEBHOOK_PATH = "/webhook"


def hints_of(payload: dict) -> tuple[set[int], set[int]]:
    """(task ids to look at, deleted annotation ids) named by one webhook payload."""
    tasks, deleted = set(), set()
    action = payload.get("action")
    if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        annotation = payload.get("annotation") or {}
        task = annotation.get("task", (payload.get("task") or {}).get("id"))
        if isinstance(task, dict):
            task = task.get("id")
        if isinstance(task, int):
            tasks.add(task)
    elif action == "ANNOTATIONS_DELETED":
        for annotation in payload.get("annotations") or []:
            if isinstance(annotation, dict) and isinstance(annotation.get("id"), int):
                deleted.add(annotation["id"])
    return tasks, deleted


class _ServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class WebhookReceiver:
    """An HTTP server on its own threads; `on_hint(task_ids, deleted_annotation_ids)` is called per webhook."""

    def __init__(self, host: str, port: int, secret: str, on_hint: Callable[[set[int], set[int]], None]):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                if self.path.split("?", 1)[0] != WEBHOOK_PATH:
                    return self._answer(404)
                given = self.headers.get(SECRET_HEADER) or ""
                if not hmac.compare_digest(given.encode(), secret.encode()):
                    return self._answer(403)
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY_BYTES:
                    return self._answer(413)
                try:
                    payload = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    return self._answer(400)
                self._answer(200)
                if isinstance(payload, dict):
                    tasks, deleted = hints_of(payload)
                    if tasks or deleted:
                        on_hint(tasks, deleted)

            def do_GET(self):
                self._answer(200 if self.path == "/health" else 404)

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, fmt, *args):  # access lines only at debug level
                log.debug("webhook %s", fmt % args)

        server_class = _ServerV6 if ":" in host else ThreadingHTTPServer
        self.server = server_class((host, port), Handler)
        self.server.daemon_threads = True
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

"""A real network partition between the coordinator and the processes that use it.

A TCP proxy stands between them. Cut, it forwards nothing in either direction and closes nothing, as when a
cable is pulled; connections made meanwhile go nowhere. Restored, it drops every connection of before silently
(the coordinator's end is closed, the client's end is left open and never read again: no FIN or RST reaches
the client, whose socket stays ESTABLISHED, as observed in issue 10) and forwards new connections again.

A worker, a server (trainer) and simulated annotators, real `aal-*` processes, run through the proxy with their
default settings while it is cut for longer than any call deadline. Each must survive, say once that it lost
the coordinator and once that it regained it, and carry on: candidates, a new model, the label budget.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from aal_rpc.client.coordinator import CALL_TIMEOUT
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.experiment.processes import command
from tests.conftest import TASK, wait_until

pytestmark = pytest.mark.e2e

JOIN_SECONDS = 30.0  # a forwarding thread ends once its sockets close; never wait on one without bound
CUT_SECONDS = CALL_TIMEOUT + 5  # longer than any call's deadline: no call can simply outwait the cut
PUMP_POLL = 0.1  # seconds a forwarding thread waits for bytes before looking at the proxy's state again


class BlackHoleProxy:
    """Forwards 127.0.0.1:`port` (bound to port 0) to 127.0.0.1:`upstream_port`, and can black-hole the link."""

    def __init__(self, upstream_port: int):
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(PUMP_POLL)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cut = False
        self._closed = False
        self._links: list[dict] = []  # live links: {"client", "upstream", "threads", "dropped"}
        self._stranded: list[socket.socket] = []  # client ends never read again, closed only by close()
        self._acceptor = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True

    def restore(self) -> None:
        """End the cut: drop every earlier connection without a word to its client, then forward new ones."""
        with self._lock:
            links, self._links = self._links, []
            for link in links:
                link["dropped"] = True
        for link in links:
            for t in link["threads"]:
                t.join(JOIN_SECONDS)
                assert not t.is_alive(), "a forwarding thread did not stop"
            if link["upstream"] is not None:
                link["upstream"].close()  # the coordinator's end of the connection is gone
            self._stranded.append(link["client"])  # ...and the client is never told
        with self._lock:
            self._cut = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            links, self._links = self._links, []
            for link in links:
                link["dropped"] = True
        self._acceptor.join(JOIN_SECONDS)
        for link in links:
            for t in link["threads"]:
                t.join(JOIN_SECONDS)
            for s in (link["client"], link["upstream"]):
                if s is not None:
                    s.close()
        for s in self._stranded:
            s.close()
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self._lock:
                cut = self._cut
            link = {"client": client, "upstream": None, "threads": [], "dropped": False}
            if not cut:  # while cut, a new connection goes nowhere: accepted (as the kernel would) and ignored
                try:
                    link["upstream"] = socket.create_connection(self._upstream)
                except OSError:
                    client.close()
                    continue
                link["threads"] = [threading.Thread(target=self._pump, args=(link, a, b), daemon=True)
                                   for a, b in (("client", "upstream"), ("upstream", "client"))]
            with self._lock:
                self._links.append(link)
            for t in link["threads"]:
                t.start()

    def _pump(self, link: dict, source: str, sink: str) -> None:
        src, dst = link[source], link[sink]
        src.settimeout(PUMP_POLL)
        while not link["dropped"]:
            with self._lock:
                cut = self._cut
            if cut:  # bytes stay where they are: unread in the sender's socket
                time.sleep(PUMP_POLL)
                continue
            try:
                data = src.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:  # an orderly close before any cut: pass it on
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                dst.sendall(data)
            except OSError:
                return


def count(text: str, phrase: str) -> int:
    return sum(phrase in line for line in text.splitlines())


def test_worker_server_and_annotators_ride_out_a_partition(tmp_path, procs):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK,
                                    CoordinatorConfig(pool_capacity=30, lease_seconds=300))
    proxy = BlackHoleProxy(srv.port)
    address = f"127.0.0.1:{proxy.port}"
    c = srv.coordinator
    acks = tmp_path / "acks.jsonl"
    budget = 60
    names = ("worker", "server", "annotate")

    def acked() -> int:
        return len(acks.read_text().splitlines()) if acks.exists() else 0

    def log(name: str) -> str:
        return (procs.log_dir / f"{name}.log").read_text()

    try:
        worker = procs.start("worker", command("worker", "--coordinator", address, "--strategy", "margin",
                                               "--batch-size", "10", "--threads", "1"))
        server = procs.start("server", command("server", "--coordinator", address, "--server-id", "s0",
                                               "--epochs", "2", "--min-labels", "10", "--min-new-labels", "10",
                                               "--threads", "1"))
        annotate = procs.start("annotate", command(
            "annotate", "--coordinator", address, "--oracle", "--annotators", "2", "--delay", "0.2",
            "--budget", budget, "--json", "--acks-file", acks), capture_stdout=True)
        assert wait_until(lambda: acked() >= 15 and c.registry.latest() is not None, timeout=120)

        proxy.cut()
        cut_at = time.monotonic()
        # each process notices by itself, long before any call deadline ends
        assert wait_until(lambda: all(count(log(n), "lost contact with the coordinator") for n in names),
                          timeout=CUT_SECONDS)
        time.sleep(max(0.0, CUT_SECONDS - (time.monotonic() - cut_at)))  # the rest of the cut: its length
        submitted, labels, models = c.stats().candidates_submitted, c.stats().labeled, c.registry.latest()
        proxy.restore()

        # everyone is back: the annotators finish their budget, the worker proposes for the labels they take,
        # and the server trains on them
        out, _ = annotate.communicate(timeout=180)
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert annotate.returncode == 0
        assert summary["acknowledged"] == budget and summary["errors"] == {}
        assert c.stats().labeled == budget > labels
        assert wait_until(lambda: c.stats().candidates_submitted > submitted, timeout=60)
        assert wait_until(lambda: c.registry.latest().num_labels > models.num_labels, timeout=120)
        assert worker.poll() is None and server.poll() is None
        for name in names:  # one line when contact was lost, one when it came back: not one per retry
            text = log(name)
            assert count(text, "lost contact with the coordinator") == 1, (name, text[-3000:])
            assert count(text, "regained contact with the coordinator") == 1, (name, text[-3000:])
            assert "Traceback" not in text, (name, text[-3000:])
    finally:
        procs.stop_all()
        proxy.close()
        srv.stop(0)

"""aal-labelstudio under hostile and careless use, without Label Studio: the webhook receiver (fuzzed, flooded with
idle and slow connections, sent bodies too big or too deep), the ids a webhook may name, annotation results in no
editor's shape, the state dir's modes, and a coordinator token of the wrong role refused before Label Studio is
touched. tests/test_labelstudio.py drives the same against a real Label Studio.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import threading

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.experiment.processes import command
from aal_rpc.labelstudio import webhook
from aal_rpc.labelstudio.bridge import MAX_HINTS, Bridge
from aal_rpc.labelstudio.config import Unreadable, label_config, label_of, parse_label_config, result_for
from aal_rpc.labelstudio.ids import stored_id
from aal_rpc.labelstudio.state import LOCK_FILE, STATE_FILE, BridgeState
from aal_rpc.labelstudio.studio import SECRET_HEADER
from aal_rpc.labelstudio.webhook import WEBHOOK_PATH, WebhookReceiver, hints_of
from aal_rpc.security import Principal
from tests.conftest import TASK, wait_until

SECRET = "s3cret-for-tests"
WAIT = 30.0  # seconds for something that happens at once, on a loaded machine
IFACE = parse_label_config(label_config(TASK.class_names, "image"), TASK.class_names)


# -- the pieces -------------------------------------------------------------------------------------------------

def test_an_annotation_in_no_editors_shape_is_unreadable():
    """Label Studio's API takes any JSON as a result, from any user: the bridge reads it as unreadable, never as a
    crash, and never as a label."""
    good = result_for(3, IFACE)
    region = good[0]
    assert label_of(good, IFACE) == 3
    odd = [[{**region, "value": {"choices": [["3"]]}}],  # choices holding a list (Label Studio accepts it)
           [{**region, "value": ["3"]}],                 # value a list
           [{**region, "value": "3"}],
           [{**region, "value": {"choices": "3"}}],       # one string: not a list of names
           [{**region, "value": {"choices": [3]}}],
           [{**region, "value": {"choices": [{"3": 1}]}}],
           {"from_name": IFACE.control}, "3"]
    for result in odd:
        with pytest.raises(Unreadable):
            label_of(result, IFACE)
    # other controls' regions are the project's own business, whatever their shape
    assert label_of([{"from_name": "other", "value": ["x"]}, *good], IFACE) == 3
    assert label_of([{**region, "value": {}}], IFACE) is None


def test_webhooks_name_only_valid_ids():
    """Ids go into SQLite (int64): 2**63 once stopped the bridge. Anything but a positive int below it names
    nothing; an odd payload names nothing."""
    for bad in (2**63, 2**64, 0, -1, True, "5", 5.0, None, [5], {"id": 2**63}):
        assert hints_of({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": bad}}) == (set(), set())
    assert hints_of({"action": "ANNOTATION_CREATED", "annotation": {"task": 2**63 - 1}}) == ({2**63 - 1}, set())
    assert hints_of({"action": "ANNOTATION_UPDATED", "annotation": {"id": 1, "task": {"id": 7}}}) == ({7}, set())
    deleted = [{"id": 2**63}, {"id": -3}, {"id": 4}, "x", None]
    assert hints_of({"action": "ANNOTATIONS_DELETED", "annotations": deleted}) == (set(), {4})
    assert [stored_id(t) for t in (None, "", "7", "0", "-7", str(2**63), "9" * 400, "٣", " 7")] == \
        [None, None, 7, None, None, None, None, None, None]
    for odd in ([], "x", 5, {"action": "ANNOTATION_CREATED", "annotation": [1]}, {"action": ["x"]},
                {"action": "ANNOTATION_CREATED", "annotation": "t", "task": [1]},
                {"action": "ANNOTATIONS_DELETED", "annotations": {"id": 4}}):
        assert hints_of(odd) == (set(), set())


def test_hints_waiting_for_the_loop_are_bounded(tmp_path):
    state = BridgeState(tmp_path)
    try:
        bridge = Bridge(None, None, state, 1, IFACE)
        for start in range(0, 3 * MAX_HINTS, 500):
            bridge.hint(set(range(start + 1, start + 501)), {2**63, -1})
        assert bridge.pending_hints() <= MAX_HINTS
    finally:
        state.close()


def test_the_state_dir_is_the_owners_alone(tmp_path):
    """The state file names items and leases (it once held the webhook secret): 0700 and 0600, also for a state
    dir an older bridge left world-readable."""
    fresh = tmp_path / "fresh"
    BridgeState(fresh).close()
    old = tmp_path / "old"
    old.mkdir()
    os.chmod(old, 0o755)
    (old / STATE_FILE).touch(mode=0o644)
    (old / LOCK_FILE).touch(mode=0o644)
    os.chmod(old / STATE_FILE, 0o644)
    os.chmod(old / LOCK_FILE, 0o644)
    for d in (fresh, old):
        state = BridgeState(d)
        state.put("k", "v")  # the WAL exists while the state is open
        try:
            assert stat.S_IMODE(d.stat().st_mode) == 0o700
            files = [p for p in d.iterdir()]
            assert {p.name for p in files} >= {STATE_FILE, LOCK_FILE, STATE_FILE + "-wal"}
            assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), \
                {p.name: oct(p.stat().st_mode) for p in files}
        finally:
            state.close()


def test_help_writes_down_the_limits():
    from aal_rpc.cli.labelstudio import main

    text = " ".join(CliRunner().invoke(main, ["--help"]).output.split())
    assert "Limits" in text
    assert f"{webhook.REQUEST_SECONDS:.0f} s" in text
    assert f"{webhook.MAX_CONNECTIONS} connections" in text
    assert f"{webhook.MAX_BODY_BYTES // 2**20} MiB" in text
    assert f"{webhook.MAX_CONTAINERS:,} objects" in text
    assert f"{webhook.MAX_NAMED:,} ids" in text and f"{MAX_HINTS:,} wait" in text


# -- the receiver ----------------------------------------------------------------------------------------------

class Hints:
    def __init__(self):
        self.calls: list[tuple[set[int], set[int]]] = []
        self.came = threading.Event()

    def __call__(self, tasks, deleted):
        self.calls.append((tasks, deleted))
        self.came.set()


@pytest.fixture
def receiver():
    hints = Hints()
    r = WebhookReceiver("127.0.0.1", 0, SECRET, hints, max_connections=4, request_seconds=1.0)
    r.start()
    r.hints = hints
    yield r
    r.stop()


def send(port: int, raw: bytes, *, timeout: float = WAIT) -> bytes:
    """Send raw bytes and read the answer until the receiver closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except OSError:  # it answered and closed before taking all we sent
            pass
        return answer_of(s)


def answer_of(s: socket.socket) -> bytes:
    """What the receiver sends on a connection until it closes it."""
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


def status_of(answer: bytes) -> int | None:
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else None


def post(port: int, body: bytes, *, secret: str = SECRET, headers: dict | None = None, length: int | None = None
         ) -> int | None:
    head = {SECRET_HEADER: secret, "Content-Length": str(len(body) if length is None else length),
            "Connection": "close", **(headers or {})}
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return status_of(send(port, f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode() + body))


CREATED = json.dumps({"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "task": 9}}).encode()


def test_bodies_too_big_too_deep_or_unbounded_are_refused(receiver, caplog, capfd):
    caplog.set_level(logging.DEBUG, "aal.labelstudio")
    port = receiver.port
    assert post(port, CREATED, secret="wrong") == 403
    assert post(port, b"", length=10**12) == 413  # refused on the length, nothing read
    assert post(port, b"x" * 10, length=webhook.MAX_BODY_BYTES + 1) == 413
    assert post(port, b"", length=-1) == 400  # once read until the client closed
    assert post(port, b"", headers={"Transfer-Encoding": "chunked"}) == 411
    assert post(port, b"[" * 5_000 + b"]" * 5_000) == 400  # past the parser's depth: once a traceback
    assert post(port, b"[" * 100_000 + b"]" * 100_000) == 400
    assert post(port, b"[{}" + b",{}" * webhook.MAX_CONTAINERS + b"]") == 400
    assert post(port, b"{not json") == 400
    assert not receiver.hints.calls
    # a body longer than it says: only what it says is read
    assert post(port, CREATED + b"garbage", length=len(CREATED)) == 200
    assert receiver.hints.calls == [({9}, set())]
    assert "Traceback" not in caplog.text + "".join(capfd.readouterr())


def test_idle_and_slow_connections_do_not_pin_the_receiver(receiver, capfd):
    """40 idle connections once held 40 threads for good: each connection now has a deadline for its request,
    a few are served at once, the rest are answered 503 at once, and the receiver serves again after."""
    port = receiver.port
    baseline = threading.active_count()
    slow = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    closed = threading.Event()

    def drip():  # a header line now and then: it does not extend the request's deadline
        slow.sendall(b"POST /webhook HTTP/1.1\r\n")
        try:
            while not closed.wait(0.1):
                slow.sendall(b"X-Drip: 1\r\n")
        except OSError:
            pass

    dripping = threading.Thread(target=drip)
    dripping.start()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(40)]
    try:
        assert threading.active_count() <= baseline + 1 + 4  # the dripper, and at most max_connections serving
        for s in [slow] + idle:  # each one is closed by the receiver: answered 503 at once, or at its deadline
            assert status_of(answer_of(s)) in (None, 503)
    finally:
        closed.set()
        dripping.join()
        for s in [slow] + idle:
            s.close()
    assert wait_until(lambda: post(port, CREATED) == 200, WAIT)
    assert receiver.hints.came.wait(WAIT)
    assert "Traceback" not in "".join(capfd.readouterr())


# -- a fuzzer over the receiver's bodies and headers -----------------------------------------------------------

IDS = st.one_of(st.integers(-3, 12), st.sampled_from([2**31, 2**63 - 1, 2**63, 2**64, -2**63]), st.booleans(),
                st.text(max_size=4), st.none(), st.floats(allow_nan=True))
JSON = st.recursive(st.one_of(st.none(), st.booleans(), IDS, st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4),
                                            st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)
PAYLOADS = st.one_of(
    JSON,
    st.fixed_dictionaries({"action": st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED"])},
                          optional={"annotation": st.one_of(JSON, st.fixed_dictionaries({"task": IDS})),
                                    "task": st.one_of(JSON, st.fixed_dictionaries({"id": IDS}))}),
    st.fixed_dictionaries({"action": st.just("ANNOTATIONS_DELETED"),
                           "annotations": st.one_of(JSON, st.lists(st.fixed_dictionaries({"id": IDS}), max_size=5),
                                                    st.just([{"id": i} for i in range(1, 3 * webhook.MAX_NAMED)]))}))
DEEP = st.integers(1, 50_000).map(lambda n: b"[" * n + b"]" * n) | st.integers(1, 50_000).map(
    lambda n: b'{"a":' * n + b"1" + b"}" * n)
BODIES = st.one_of(PAYLOADS.map(lambda p: json.dumps(p).encode()), DEEP, st.binary(max_size=200),
                   st.sampled_from([b"", b"null", b"\xff\xfe", b'{"action": "ANNOTATION_CREATED"', b"1e999999"]))
TOKEN = st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"), min_size=1, max_size=20)
HEADER_VALUES = st.one_of(st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=30),
                          st.sampled_from(["-1", "0", "99999999999999999999", "1e3", " 12 ", "chunked", "²", "١٢"]))
HEADERS = st.dictionaries(st.one_of(TOKEN, st.sampled_from(["Content-Length", "Transfer-Encoding", "Expect",
                                                            "Connection", SECRET_HEADER])),
                          HEADER_VALUES, max_size=4)


@st.composite
def requests(draw):
    body = draw(BODIES)
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "HEAD", "DELETE", "BREW", "", "P\x00ST"]))
    path = draw(st.sampled_from([WEBHOOK_PATH, WEBHOOK_PATH + "?x=1", "/health", "/", "*", "//webhook", "/" * 70_000]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/0.9", "HTTP/x", ""]))
    head = {"Content-Length": str(len(body)), "Connection": "close"}
    if draw(st.booleans()):
        head[SECRET_HEADER] = SECRET
    head.update(draw(HEADERS))
    lines = "".join(f"{k}: {v}\r\n" for k, v in head.items())
    return f"{method} {path} {version}\r\n{lines}\r\n".encode() + body


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


def test_fuzzed_webhooks_never_get_a_5xx_a_traceback_or_a_stopped_bridge(tmp_path, caplog, capfd):
    """Any request, with or without the secret: an answer below 500 (or none, for what is not HTTP), never a
    traceback in the bridge's log, hints bounded, and the receiver still serving a good webhook after."""
    caplog.set_level(logging.DEBUG, "aal.labelstudio")
    state = BridgeState(tmp_path)
    bridge = Bridge(None, None, state, 1, IFACE)
    receiver = WebhookReceiver("127.0.0.1", 0, SECRET, bridge.hint, request_seconds=1.0)
    receiver.start()
    try:
        @FUZZ
        @given(requests())
        def fuzz(raw):
            status = status_of(send(receiver.port, raw))
            assert status is None or status < 500, raw[:200]

        fuzz()
        assert bridge.pending_hints() <= MAX_HINTS
        bridge.wake.clear()
        assert post(receiver.port, CREATED) == 200 and bridge.wake.is_set()
        assert status_of(send(receiver.port, b"GET /health HTTP/1.1\r\n\r\n")) == 200
    finally:
        receiver.stop()
        state.close()
    logged = caplog.text + "".join(capfd.readouterr())
    assert "Traceback" not in logged
    assert all("\n" not in r.getMessage() for r in caplog.records)  # one line each


# -- the coordinator's token -----------------------------------------------------------------------------------

def test_a_token_that_may_not_annotate_ends_the_bridge_before_label_studio(tmp_path):
    """A worker's token, or an annotator's token naming someone else than --annotator-id: the bridge once created
    its project and then was refused every 5 s for ever. Now it ends at once with one line, and never connects to
    Label Studio."""
    tokens = {"wrk-token": Principal("worker"), "alice-token": Principal("annotator", "alice")}
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "coordinator", TASK,
                                    CoordinatorConfig(pool_capacity=8), tokens=tokens)
    studio = socket.socket()  # where Label Studio would be: any connection to it is counted
    studio.bind(("127.0.0.1", 0))
    studio.listen(8)
    studio.settimeout(0.2)
    contacts = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            try:
                conn, _ = studio.accept()
            except OSError:
                continue
            contacts.append(conn)

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    try:
        def bridge(token, *args):
            return subprocess.run(command("labelstudio", "--coordinator", f"127.0.0.1:{srv.port}", "--token", token,
                                          "--label-studio-url", f"http://127.0.0.1:{studio.getsockname()[1]}",
                                          "--create-project", "never", "--state-dir", tmp_path / token, *args),
                                  capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "LABEL_STUDIO_API_KEY": "unused"})

        for token in ("wrk-token", "alice-token"):
            done = bridge(token)
            assert done.returncode == 1, done.stderr
            assert "refused the bridge's token" in done.stderr and "PERMISSION_DENIED" in done.stderr
            assert "Traceback" not in done.stderr, done.stderr
        assert not contacts
    finally:
        stop.set()
        counter.join()
        for conn in contacts:
            conn.close()
        studio.close()
        srv.stop(grace=0)


# -- a window above the coordinator's lease cap ------------------------------------------------------------------

class ImportingStudio:
    """What a fill asks of Label Studio: tasks imported, ids given back."""

    def __init__(self):
        self.imported = 0

    def import_tasks(self, project_id, tasks):
        self.imported += len(tasks)
        return list(range(self.imported - len(tasks) + 1, self.imported + 1))

    def set_prediction_clusters(self, project_id, clusters):
        pass

    def set_model_version(self, project_id, version):
        pass


def test_a_window_above_the_coordinators_lease_cap_fills_to_the_cap_and_says_so_once(tmp_path, caplog):
    from aal_rpc.client import AnnotationClient, CoordinatorClient
    from aal_rpc.labelstudio.bridge import BridgeConfig
    from tests.conftest import make_candidate

    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK,
                                    CoordinatorConfig(lease_seconds=30, max_leases_per_annotator=3))
    address = f"127.0.0.1:{srv.port}"
    state = BridgeState(tmp_path / "state")
    try:
        with CoordinatorClient(address, retry_for=5) as admin:
            admin.submit_candidates(worker_id="w", strategy="margin", model_version=0,
                                    candidates=[(c.item_id, c.payload, 0.5, None)
                                                for c in (make_candidate(str(i)) for i in range(10))])
        with AnnotationClient(address, "labelstudio", retry_for=5) as client:
            studio = ImportingStudio()
            bridge = Bridge(client, studio, state, 1, IFACE, BridgeConfig(window=8))
            bridge.window.fill()
            bridge.window.fill()
            assert studio.imported == 3  # the cap, not the window; and the loop goes on
        said = [r for r in caplog.records if "caps this annotator's leases" in r.getMessage()]
        assert len(said) == 1
    finally:
        state.close()
        srv.stop(0)

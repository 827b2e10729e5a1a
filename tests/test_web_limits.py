"""aal-web under hostile and careless use (issue 19): every limit on what a client may send or hold, checked on
aal-web started as its command on 127.0.0.1:0 in front of a real coordinator, and the sessions core's caps with an
injected clock."""

import http.client
import json
import select
import socket
import time

import grpc
import pytest
from click.testing import CliRunner

from aal_rpc.cli import web as web_cli
from aal_rpc.web.guard import HEAD_SECONDS, MAX_PER_CLIENT
from aal_rpc.client import CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.experiment.processes import command, read_line
from aal_rpc.security import ClientSecurity, Principal
from aal_rpc.web import coordinator_clients
from aal_rpc.web.sessions import AtLimit, Expired, Limits, Sessions
from aal_rpc.web.throttle import LoginThrottle, Throttled
from tests.conftest import TASK, code_of
from tests.test_web import WAIT, Clock, open_desk, queue_digits, start_web

LEASES_PER_LOGIN, LEASES_PER_ANNOTATOR, LOGINS_PER_CLIENT = (Limits.leases_per_login, Limits.leases_per_annotator,
                                                            Limits.logins_per_client)

TOKENS = {"tok-alice": Principal("annotator", "alice"), "tok-anon": Principal("annotator"),
          "tok-worker": Principal("worker"), "tok-admin": Principal("admin")}


class Http:
    """Requests to one aal-web as a client at `client` (an X-Forwarded-For address; aal-web trusts it only when
    started with --forwarded-allow-ips 127.0.0.1)."""

    def __init__(self, web: str, client: str | None = None):
        self.host, port = web.rsplit(":", 1)
        self.port = int(port)
        self.web = web
        self.client = client

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=WAIT)

    def headers(self, extra=None) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.client:
            headers["X-Forwarded-For"] = self.client
        return {**headers, **(extra or {})}

    def send(self, method: str, path: str, body: bytes | None = None, headers=None):
        """(status, body as JSON or text, response headers)"""
        conn = self.connection()
        try:
            conn.request(method, path, body=body, headers=self.headers(headers))
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            data = raw.decode(errors="replace")
        return response.status, data, response

    def post(self, path: str, body, headers=None):
        status, data, response = self.send("POST", f"/api/{path}", json.dumps(body).encode(), headers)
        return status, data, response

    def api(self, path: str, body) -> dict:
        """A call that must succeed."""
        status, data, _ = self.post(path, body)
        assert status in (200, 204), (path, status, data)
        return data

    def login(self, **body) -> tuple[str, str]:
        """(session, tab) of a new login with its page open."""
        session = self.api("login", body)["session"]
        return session, self.api("tab", {"session": session})["tab"]


def web_log(procs, name="web") -> str:
    return (procs.log_dir / f"{name}.log").read_text()


@pytest.fixture
def token_coordinator(tmp_path):
    """A coordinator that checks TOKENS, with 30 digits queued; yields its address."""
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "token-data", TASK,
                                    CoordinatorConfig(lease_seconds=60), tokens=TOKENS)
    address = f"127.0.0.1:{srv.port}"
    queue_digits(address, range(30), security=ClientSecurity(token="tok-worker"))
    yield address
    srv.stop(0)


# -- 2: a body is refused at its limit, before it is read ------------------------------------------------------

def raw_exchange(web: str, head: bytes, body_part: bytes) -> bytes:
    """Send a request's head and part of its body, leave the rest unsent, and read what aal-web answers."""
    host, port = web.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
        sock.sendall(head + body_part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)  # a server that waits for the rest of the body times this out: the test fails
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_body_over_the_limit_is_refused_before_it_is_read(grpc_coordinator, procs):
    web = start_web(procs, grpc_coordinator[0])
    declared = (b"POST /api/login HTTP/1.1\r\nHost: " + web.encode() + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: 50331648\r\n\r\n")
    assert raw_exchange(web, declared, b"{" + b" " * 1000).startswith(b"HTTP/1.1 413")
    chunked = (b"POST /api/login HTTP/1.1\r\nHost: " + web.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 4096
    stream = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8))  # 32 KiB, and no last chunk
    assert raw_exchange(web, chunked, stream).startswith(b"HTTP/1.1 413")
    assert Http(web).api("login", {"name": "alice"})["annotator"] == "alice"  # and it goes on serving


def test_a_client_that_leaves_before_its_body_came_costs_no_error(grpc_coordinator, procs):
    """A request whose body never fully arrives, its client gone: no traceback in aal-web's log, and it serves on."""
    web = start_web(procs, grpc_coordinator[0])
    host, port = web.rsplit(":", 1)
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=WAIT) as sock:
            sock.sendall(b"POST /api/login HTTP/1.1\r\nHost: " + web.encode() + b"\r\nContent-Type: application/json"
                         b"\r\nContent-Length: 100\r\n\r\n{")
            time.sleep(0.2)
    assert Http(web).api("login", {"name": "alice"})["annotator"] == "alice"
    log = (procs.log_dir / "web.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log


# -- 5: a long poll holds no thread ------------------------------------------------------------------------------

def test_long_polls_hold_no_thread_and_others_are_served_meanwhile(grpc_coordinator, procs):
    """22 long polls on an empty pool from three logins of one client, with 4 threads: while all of them wait,
    another person logs in, opens the page, leases and loads the page's script. A login's polls count against
    its lease cap: one over it is answered at once."""
    web = start_web(procs, grpc_coordinator[0], "--threads", "4")
    http_ = Http(web)
    polls, logins = [], [http_.login(name=f"poller{i}") for i in range(3)]

    def poll(session, tab):
        conn = http_.connection()
        conn.request("POST", "/api/lease", body=json.dumps({"session": session, "tab": tab, "wait": 6}).encode(),
                     headers=http_.headers())
        polls.append(conn)

    for session, tab in logins:
        for _ in range(7):
            poll(session, tab)
    poll(*logins[0])  # a login's eighth poll waits too; its ninth is answered at once
    status, data, _ = http_.post("lease", {"session": logins[0][0], "tab": logins[0][1], "wait": 6})
    assert status == 429 and f"{LEASES_PER_LOGIN} items" in data["error"]
    assert http_.send("GET", "/nothing")[0] == 404  # aal-web has read the polls by now

    session, tab = http_.login(name="bob")
    assert http_.api("lease", {"session": session, "tab": tab, "wait": 0}) == {"item": None}
    status, script, _ = http_.send("GET", "/static/app.js")
    assert status == 200 and "aal-web's page" in script
    assert http_.send("GET", "/")[0] == 200
    ready, _, _ = select.select([conn.sock for conn in polls], [], [], 0)
    assert not ready, "a long poll was answered before the others' requests: it was not waiting"
    for conn in polls:  # every poll was held (none refused), and answered at the end of its wait
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"item": None})
        conn.close()


# -- 6: leases per login and per annotator -------------------------------------------------------------------------

def test_a_login_and_an_annotator_hold_at_most_their_lease_caps(grpc_coordinator, procs):
    address, _ = grpc_coordinator
    queue_digits(address, range(40))
    web = Http(start_web(procs, address))
    first = web.login(name="alice")
    leases = []
    for _ in range(LEASES_PER_LOGIN):
        leases.append(web.api("lease", {"session": first[0], "tab": first[1], "wait": 0})["item"]["lease"])
    status, data, _ = web.post("lease", {"session": first[0], "tab": first[1], "wait": 0})
    assert status == 429 and f"{LEASES_PER_LOGIN} items" in data["error"]
    heartbeat = web.api("heartbeat", {"session": first[0], "tab": first[1]})
    assert sorted(heartbeat["deadlines"]) == sorted(leases)  # renewing keeps them, and takes no more

    second = web.login(name="alice")  # the same annotator, logged in again
    for _ in range(LEASES_PER_ANNOTATOR - LEASES_PER_LOGIN):
        assert web.api("lease", {"session": second[0], "tab": second[1], "wait": 0})["item"]
    third = web.login(name="alice")
    status, data, _ = web.post("lease", {"session": third[0], "tab": third[1], "wait": 0})
    assert status == 429 and f"alice holds {LEASES_PER_ANNOTATOR} items" in data["error"]
    bob = web.login(name="bob")
    assert web.api("lease", {"session": bob[0], "tab": bob[1], "wait": 0})["item"]
    web.api("label", {"session": first[0], "tab": first[1], "lease": leases[0], "label": 3})
    assert web.api("lease", {"session": first[0], "tab": first[1], "wait": 0})["item"]  # room again
    with CoordinatorClient(address, retry_for=5) as admin:
        assert admin.stats().leased == LEASES_PER_ANNOTATOR + 1


# -- 7: logins per client and in total, tabs per login -------------------------------------------------------------

def test_a_client_keeps_at_most_its_logins_and_the_oldest_give_their_leases_back(grpc_coordinator, procs):
    address, _ = grpc_coordinator
    extra = 6
    queue_digits(address, range(LOGINS_PER_CLIENT + extra))
    web = Http(start_web(procs, address))
    logins = []
    for i in range(LOGINS_PER_CLIENT + extra):
        session, tab = web.login(name=f"person{i}")
        assert web.api("lease", {"session": session, "tab": tab, "wait": 0})["item"]
        logins.append((session, tab))
    for i, (session, tab) in enumerate(logins):
        status, data, _ = web.post("heartbeat", {"session": session, "tab": tab})
        assert (status == 401 and data["expired"] == "session") == (i < extra), i
    with CoordinatorClient(address, retry_for=5) as admin:
        assert admin.stats().leased == LOGINS_PER_CLIENT


@pytest.fixture
def desk(grpc_coordinator):
    """Sessions with small limits on a real coordinator with 20 digits queued."""
    yield from open_desk(grpc_coordinator[0], 20, limits=Limits(logins=3, logins_per_client=2, tabs_per_login=2))


def test_logins_and_tabs_are_capped_and_the_oldest_idle_go_first(desk):
    sessions, clock, admin = desk

    def busy(name, client):
        """A login with an open page holding one lease."""
        session = sessions.login(None, name, client=client)
        _, tab = sessions.open_tab(session.session_id)
        sessions.lease(session.session_id, tab.tab_id, 0)
        clock.now += 1
        return session

    a = busy("a", "10.0.0.1")
    idle = sessions.login(None, "idle", client="10.0.0.1")  # no page open
    clock.now += 1
    a2 = busy("a2", "10.0.0.1")  # one client over its two: its login without a page goes first
    assert code_of_expired(lambda: sessions.open_tab(idle.session_id)) == "session"
    a3 = busy("a3", "10.0.0.1")  # all of the client's logins have pages: its least recently seen goes
    assert code_of_expired(lambda: sessions.open_tab(a.session_id)) == "session"
    assert admin.stats().leased == 2
    b = busy("b", "10.0.0.2")
    with pytest.raises(AtLimit):  # three logins, all busy: a new one waits rather than evict a person at work
        sessions.login(None, "c", client="10.0.0.3")
    clock.now += 20
    sessions.heartbeat(a3.session_id, sessions.open_tab(a3.session_id)[1].tab_id)
    sessions.heartbeat(b.session_id, sessions.open_tab(b.session_id)[1].tab_id)
    sessions.reap()  # a2's page went silent: its login is idle now
    c = sessions.login(None, "c", client="10.0.0.3")
    assert code_of_expired(lambda: sessions.open_tab(a2.session_id)) == "session"

    # a login keeps its two newest pages; an older page's leases go back
    _, t1 = sessions.open_tab(c.session_id)
    sessions.lease(c.session_id, t1.tab_id, 0)
    clock.now += 1
    sessions.open_tab(c.session_id)
    clock.now += 1
    before = admin.stats().leased
    sessions.open_tab(c.session_id)
    assert code_of_expired(lambda: sessions.lease(c.session_id, t1.tab_id, 0)) == "tab"
    assert admin.stats().leased == before - 1


def code_of_expired(call) -> str:
    with pytest.raises(Expired) as info:
        call()
    return info.value.what


# -- 8: a token alone logs in as the annotator it names -------------------------------------------------------

def test_a_token_alone_logs_in_as_its_identity(token_coordinator):
    connect, channel = coordinator_clients(token_coordinator, ClientSecurity(), lease_seconds=60, retry_for=1)
    sessions = Sessions(connect, heartbeat_seconds=1, tab_timeout=10)
    try:
        alice = sessions.login("tok-alice", "")
        assert alice.annotator_id == "alice"
        _, tab = sessions.open_tab(alice.session_id)
        query = sessions.lease(alice.session_id, tab.tab_id, 0)
        sessions.submit(alice.session_id, tab.tab_id, query.lease_id, 4)
        assert sessions.login("tok-alice", "alice").annotator_id == "alice"
        assert code_of(lambda: sessions.login("tok-alice", "bob")) == grpc.StatusCode.PERMISSION_DENIED
        anon = sessions.login("tok-anon", "")  # a token that names nobody: a name derived from it
        assert anon.annotator_id.startswith("web-") and "tok-anon" not in anon.annotator_id
        assert code_of(lambda: sessions.login("tok-worker", "")) == grpc.StatusCode.PERMISSION_DENIED
        with CoordinatorClient(token_coordinator, retry_for=5, security=ClientSecurity(token="tok-admin")) as c:
            assert [(r.item_id, r.annotator_id) for r in c.export(include_payload=False)] == [(query.item_id, "alice")]
    finally:
        sessions.close()
        channel.close()


# -- 10: hosts and origins ---------------------------------------------------------------------------------------

def test_foreign_hosts_and_origins_are_refused(grpc_coordinator, procs):
    web = start_web(procs, grpc_coordinator[0])
    port = web.rsplit(":", 1)[1]
    client = Http(web)
    assert client.send("GET", "/", headers={"Host": f"evil.example:{port}"})[0] == 400  # DNS rebinding
    assert client.post("login", {"name": "a"}, headers={"Host": f"evil.example:{port}"})[0] == 400
    assert client.post("login", {"name": "a"}, headers={"Origin": "http://evil.example"})[0] == 403
    assert client.post("login", {"name": "a"}, headers={"Origin": "null"})[0] == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert client.send("GET", "/", headers={"Host": host})[0] == 200
    assert client.post("login", {"name": "a"}, headers={"Origin": f"http://localhost:{port}"})[0] == 200
    assert client.post("login", {"name": "a"})[0] == 200  # no Origin: not a browser's cross-site request

    named = Http(start_web(procs, grpc_coordinator[0], "--allowed-hosts", "labels.example.org", name="named"))
    assert named.send("GET", "/", headers={"Host": "labels.example.org"})[0] == 200
    assert named.send("GET", "/", headers={"Host": "localhost"})[0] == 400
    assert named.post("login", {"name": "a"}, headers={"Host": "labels.example.org",
                                                       "Origin": "https://labels.example.org"})[0] == 200
    anyhost = Http(start_web(procs, grpc_coordinator[0], "--allowed-hosts", "*", name="any"))
    assert anyhost.send("GET", "/", headers={"Host": "whatever.example"})[0] == 200
    assert anyhost.post("login", {"name": "a"}, headers={"Host": "a.example", "Origin": "http://b.example"})[0] == 403
    assert "any Host" in web_log(procs, "any")
    assert "refused" in web_log(procs) and "Traceback" not in web_log(procs)


def test_listening_on_every_interface_needs_allowed_hosts():
    result = CliRunner().invoke(web_cli.main, ["--coordinator", "127.0.0.1:1", "--listen", "0.0.0.0:0"])
    assert result.exit_code == 2 and "--allowed-hosts" in result.output
    help_text = CliRunner().invoke(web_cli.main, ["--help"]).output
    for limit in ("--max-logins", "--max-leases-per-login", "16 KiB", "failed logins"):
        assert limit in help_text


# -- 14: failed logins -----------------------------------------------------------------------------------------

def test_failed_logins_are_throttled_per_client(token_coordinator, procs):
    web = start_web(procs, token_coordinator, "--forwarded-allow-ips", "127.0.0.1")
    guesser = Http(web, client="192.0.2.1")
    statuses = []
    for i in range(40):
        status, data, response = guesser.post("login", {"token": f"guess-{i}"})
        statuses.append(status)
        if status == 429:
            assert int(response.getheader("Retry-After")) >= 1 and "try again" in data["error"]
    assert set(statuses) == {401, 429} and statuses.count(401) <= LoginThrottle.burst
    assert guesser.post("login", {"token": "tok-alice"})[0] == 429  # the right token too, from that client
    assert Http(web, client="192.0.2.2").api("login", {"token": "tok-alice"})["annotator"] == "alice"


def test_the_throttle_refills_and_forgets_the_oldest_clients():
    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_clients=3)
    for _ in range(LoginThrottle.burst):
        throttle.check("a")
        throttle.failed("a")
    with pytest.raises(Throttled) as info:
        throttle.check("a")
    assert info.value.retry_after == pytest.approx(LoginThrottle.refill_seconds)
    clock.now += LoginThrottle.refill_seconds
    throttle.check("a")  # one more try
    for client in ("b", "c", "d"):
        throttle.failed(client)
    assert len(throttle) == 3


# -- 16: hostile JSON ------------------------------------------------------------------------------------------

def test_deeply_nested_json_is_a_bad_request(grpc_coordinator, procs):
    web = Http(start_web(procs, grpc_coordinator[0]))
    for body in (b"[" * 10_000, b'{"name": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"token": 1e999999}',
                 b'{"name": "' + b"9" * 10_000 + b'"}'):
        status, data, _ = web.send("POST", "/api/login", body)
        assert status == 400, (body[:20], status, data)
    assert web.api("login", {"name": "alice"})["annotator"] == "alice"
    assert "Traceback" not in web_log(procs)


# -- 17: the address line comes once aal-web listens ---------------------------------------------------------

def test_the_address_is_printed_once_aal_web_listens(grpc_coordinator, procs):
    proc = procs.start("web", command("web", "--coordinator", grpc_coordinator[0], "--listen", "127.0.0.1:0"),
                       capture_stdout=True)
    web = read_line(proc).removeprefix("listening on ")
    host, port = web.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=WAIT):  # at once, no retry: refused if not listening
        pass
    assert Http(web).send("GET", "/")[0] == 200


def _closed(sock: socket.socket) -> bool:
    """Whether aal-web closed this connection (reading it ends at once, or it was reset)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_slow_heads_are_cut_and_one_address_holds_a_share_of_the_connections(grpc_coordinator, procs):
    """Slowloris: connections that never finish a request's head hold their places until HEAD_SECONDS, and one
    address holds at most MAX_PER_CLIENT of them (past it a connection is closed at once), while another address
    is served meanwhile."""
    web = start_web(procs, grpc_coordinator[0])
    host, port = web.rsplit(":", 1)
    slow = []
    try:
        for _ in range(MAX_PER_CLIENT):
            sock = socket.create_connection((host, int(port)), timeout=WAIT)
            sock.sendall(b"GET /api/config HTTP/1.1\r\nHost: " + web.encode() + b"\r\nX-Slow: ")  # never ends
            slow.append(sock)
        with socket.create_connection((host, int(port)), timeout=WAIT) as one_more:
            assert _closed(one_more)
        # another address is served (loopback takes any 127.0.0.0/8 source)
        with socket.create_connection((host, int(port)), timeout=WAIT, source_address=("127.0.0.2", 0)) as other:
            other.sendall(b"GET / HTTP/1.1\r\nHost: " + web.encode() + b"\r\nConnection: close\r\n\r\n")
            assert other.recv(64).startswith(b"HTTP/1.1 200")
        for sock in slow:
            sock.settimeout(HEAD_SECONDS + WAIT)
        assert all(_closed(sock) for sock in slow)  # cut at HEAD_SECONDS, so the address's places are free again
    finally:
        for sock in slow:
            sock.close()
    assert Http(web).api("login", {"name": "alice"})["annotator"] == "alice"

"""aal-web: the sessions core against a real coordinator, and the page in a real browser.

The browser tests run Debian's headless chromium, driven by selenium through chromium-driver, against aal-web
started as its command on 127.0.0.1:0 and a real coordinator; a person's keys and clicks go in, and L must then
hold exactly the labels the page had acknowledged. Without chromium, chromium-driver or selenium they skip on a
developer's machine and fail in CI (CI set), where .ci/run installs them.
"""

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from click.testing import CliRunner

from aal_rpc.cli import web as web_cli
from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.data.images import digits_arrays, render_png
from aal_rpc.experiment.processes import command, read_address
from aal_rpc.models import build_model
from aal_rpc.security import ClientSecurity, Principal, ServerTLS
from aal_rpc.serde import weights_to_bytes
from aal_rpc.types import Payload, Task
from aal_rpc.web import coordinator_clients
from aal_rpc.web.sessions import Expired, NotHeld, NotLabeledHere, Sessions
from tests.conftest import TASK, code_of, wait_until

WAIT = 30.0  # seconds a browser step may take on a loaded 2-core machine


def digit_candidates(ids):
    """Candidates that look like what workers send: the bundled digits, each with its PNG."""
    images, _ = digits_arrays()
    out = []
    for i in ids:
        x = (images[int(i)] / 16.0).astype(np.float32)[None]
        out.append((str(i), Payload.from_array(x, image=render_png(x)), 0.5))
    return out


def queue_digits(address, ids, security=None) -> dict[str, str]:
    """Queue digits; returns item id by picture (data: URL), how a test tells which item a page shows: the page
    itself never learns an item's id."""
    candidates = digit_candidates(ids)
    with CoordinatorClient(address, retry_for=5, security=security) as c:
        assert c.submit_candidates(worker_id="w", strategy="margin", model_version=0,
                                   candidates=candidates).accepted == len(ids)
    pictures = {payload.image_data_url(): item_id for item_id, payload, _ in candidates}
    assert len(pictures) == len(candidates)  # every digit looks different
    return pictures


# -- the sessions core, no browser ----------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def open_desk(address: str, items: int, **options):
    """Sessions on the coordinator at `address` with an injected clock and `items` digits queued; yields (sessions,
    clock, admin client), and closes them. `options` go to Sessions."""
    connect, channel = coordinator_clients(address, ClientSecurity(), lease_seconds=60, retry_for=5)
    clock = Clock()
    sessions = Sessions(connect, heartbeat_seconds=1, tab_timeout=10, clock=clock, **options)
    admin = CoordinatorClient(address, retry_for=5)
    queue_digits(address, range(items))
    yield sessions, clock, admin
    sessions.close()
    admin.close()
    channel.close()


@pytest.fixture
def desk(grpc_coordinator):
    yield from open_desk(grpc_coordinator[0], 6)


def test_a_silent_page_gives_its_leases_back(desk):
    sessions, clock, admin = desk
    session = sessions.login(None, "alice")
    _, tab = sessions.open_tab(session.session_id)
    _, other = sessions.open_tab(session.session_id)
    for t in (tab, other):
        assert sessions.lease(session.session_id, t.tab_id, 0) is not None
    assert admin.stats().leased == 2
    clock.now += 5
    sessions.heartbeat(session.session_id, other.tab_id)  # `other` is still open
    clock.now += 6
    assert sessions.reap() == 1
    assert admin.stats().leased == 1
    with pytest.raises(Expired) as info:
        sessions.lease(session.session_id, tab.tab_id, 0)
    assert info.value.what == "tab"


def test_closing_a_page_or_logging_out_gives_leases_back(desk):
    sessions, _, admin = desk
    session = sessions.login(None, "alice")
    _, tab = sessions.open_tab(session.session_id)
    _, other = sessions.open_tab(session.session_id)
    for t in (tab, tab, other):
        sessions.lease(session.session_id, t.tab_id, 0)
    sessions.close_tab(session.session_id, tab.tab_id)
    assert admin.stats().leased == 1
    sessions.logout(session.session_id)
    assert admin.stats().leased == 0
    with pytest.raises(Expired) as info:
        sessions.open_tab(session.session_id)
    assert info.value.what == "session"


def test_a_closing_page_says_what_its_last_keys_did(desk):
    sessions, _, admin = desk
    session = sessions.login(None, "alice")
    _, tab = sessions.open_tab(session.session_id)
    labeled, skipped, kept = (sessions.lease(session.session_id, tab.tab_id, 0) for _ in range(3))
    sessions.close_tab(session.session_id, tab.tab_id, [("label", labeled.lease_id, 6), ("skip", skipped.lease_id, 0)])
    assert [(r.item_id, r.label) for r in admin.export(include_payload=False)] == [(labeled.item_id, 6)]
    stats = admin.stats()
    assert (stats.skipped, stats.leased, stats.queued) == (1, 0, 4)  # `kept` went back to the pool


def test_heartbeat_renews_leases_and_reports_lost_ones(desk):
    sessions, _, _ = desk
    session = sessions.login(None, "alice")
    _, tab = sessions.open_tab(session.session_id)
    kept = sessions.lease(session.session_id, tab.tab_id, 0)
    gone = sessions.lease(session.session_id, tab.tab_id, 0)
    session.client.release(gone)  # behind the page's back, as an expiry during a laptop's sleep would
    deadlines, lost, _ = sessions.heartbeat(session.session_id, tab.tab_id)
    assert lost == [gone.lease_id]
    assert deadlines[kept.lease_id] >= kept.deadline_unix
    with pytest.raises(NotHeld):
        sessions.submit(session.session_id, tab.tab_id, gone.lease_id, 1)


def test_labels_count_and_only_this_sessions_labels_can_be_corrected(desk):
    sessions, _, admin = desk
    alice, bob = sessions.login(None, "alice"), sessions.login(None, "bob")
    _, a_tab = sessions.open_tab(alice.session_id)
    _, b_tab = sessions.open_tab(bob.session_id)
    qa = sessions.lease(alice.session_id, a_tab.tab_id, 0)
    qb = sessions.lease(bob.session_id, b_tab.tab_id, 0)
    result, stats = sessions.submit(alice.session_id, a_tab.tab_id, qa.lease_id, 2)
    assert not result.duplicate and stats["labels"] == 1 and stats["per_minute"] > 0
    sessions.submit(bob.session_id, b_tab.tab_id, qb.lease_id, 4)
    with pytest.raises(NotLabeledHere):
        sessions.correct(alice.session_id, qb.lease_id, 5)  # bob's label
    fixed, stats = sessions.correct(alice.session_id, qa.lease_id, 7)  # an item is named by the lease it came with
    assert stats == {**stats, "labels": 1, "corrections": 1}
    records = list(admin.export(include_payload=False))
    assert [(r.item_id, r.label, r.annotator_id) for r in records] == [
        (qa.item_id, 2, "alice"), (qb.item_id, 4, "bob"), (qa.item_id, 7, "alice")]
    assert records[-1].seq == fixed.seq and records[-1].supersedes == records[0].seq


def test_login_needs_a_token_the_coordinator_accepts(tmp_path):
    tokens = {"ann-token": Principal("annotator"), "wrk-token": Principal("worker")}
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, tokens=tokens)
    address = f"127.0.0.1:{srv.port}"
    connect, channel = coordinator_clients(address, ClientSecurity(), lease_seconds=60, retry_for=1)
    sessions = Sessions(connect, heartbeat_seconds=1, tab_timeout=10)
    try:
        import grpc

        assert code_of(lambda: sessions.login("forged", "")) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: sessions.login(None, "alice")) == grpc.StatusCode.UNAUTHENTICATED
        session = sessions.login("ann-token", "")
        assert session.annotator_id.startswith("web-") and "ann-token" not in session.annotator_id
        # every role may read the task, but only annotators label: a worker's token is refused at login
        assert code_of(lambda: sessions.login("wrk-token", "w")) == grpc.StatusCode.PERMISSION_DENIED
    finally:
        sessions.close()
        channel.close()
        srv.stop(0)


def test_cli_refuses_inconsistent_options(tmp_path):
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    runner = CliRunner()
    result = runner.invoke(web_cli.main, ["--coordinator", "127.0.0.1:1", "--tls-cert", str(cert)])
    assert result.exit_code == 2 and "--tls-cert and --tls-key go together" in result.output
    result = runner.invoke(web_cli.main, ["--coordinator", "127.0.0.1:1", "--lease-seconds", "10",
                                          "--heartbeat-seconds", "5"])
    assert result.exit_code == 2 and "--heartbeat-seconds" in result.output


def test_cli_says_what_to_install_without_the_web_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    result = CliRunner().invoke(web_cli.main, ["--coordinator", "127.0.0.1:1"])
    assert result.exit_code == 1 and "pip install 'aal-rpc[web]'" in result.output


# -- in a real browser --------------------------------------------------------------------------------------

def browser_binaries() -> tuple[str, str]:
    """Debian's chromium and chromium-driver, and selenium: skip without them, but fail in CI."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium_ok = False
    else:
        selenium_ok = True
    if chromium and driver and selenium_ok:
        return chromium, driver
    message = "browser tests need chromium, chromium-driver (apt-get install chromium chromium-driver) and selenium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browsers(tmp_path):
    """Opens headless chromium browsers, each with a profile of its own; all quit at teardown."""
    chromium, driver_path = browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opened = []

    def open_browser(*args: str):
        options = webdriver.ChromeOptions()
        options.binary_location = chromium  # never Selenium Manager: nothing is downloaded
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                    f"--user-data-dir={tmp_path / f'profile-{len(opened)}'}", *args):
            options.add_argument(arg)
        service = Service(executable_path=driver_path, log_output=str(tmp_path / f"chromedriver-{len(opened)}.log"))
        driver = webdriver.Chrome(options=options, service=service)
        opened.append(driver)
        return Page(driver)

    yield open_browser
    for driver in opened:
        driver.quit()


class Page:
    """The labeling page in one browser, as a person sees and uses it."""

    def __init__(self, driver):
        from selenium.webdriver.common.by import By

        self.driver, self.by = driver, By
        self.pictures: dict[str, str] = {}  # item id by picture, known to the test (queue_digits), not the page

    def el(self, element_id):
        return self.driver.find_element(self.by.ID, element_id)

    def wait(self, predicate, what: str):
        from selenium.webdriver.support.wait import WebDriverWait

        WebDriverWait(self.driver, WAIT, poll_frequency=0.05).until(lambda _: predicate(), message=what)

    def login(self, url: str, *, token: str = "", name: str = "") -> None:
        self.driver.get(url)
        self.wait(lambda: self.el("login").is_displayed(), "the login form")
        self.el("token").send_keys(token)
        self.el("name").send_keys(name)
        self.el("login").submit()

    def shown(self) -> str:
        """The page's reference to the item on screen ("" for none): which item, but not its id."""
        return self.el("stage").get_attribute("data-item")

    def item(self) -> str:
        """The id of the item on screen, told by its picture; "" for none."""
        images = self.el("stage").find_elements(self.by.TAG_NAME, "img")
        return self.pictures.get(images[0].get_attribute("src"), "?") if images and self.shown() else ""

    def count(self, what: str) -> int:
        return int(self.el("stats").get_attribute(f"data-{what}") or 0)

    def press(self, key: str) -> None:
        from selenium.webdriver.common.action_chains import ActionChains

        ActionChains(self.driver).send_keys(key).perform()

    def click(self, css: str) -> None:
        self.driver.find_element(self.by.CSS_SELECTOR, css).click()

    def act(self, action) -> str:
        """Do `action` on the item on screen; once the next item shows, return the id of the one acted on."""
        self.wait(lambda: self.shown(), "an item on screen")
        shown, before = self.shown(), self.item()
        action()
        self.wait(lambda: self.shown() not in ("", shown), f"the item after {before}")
        return before


def start_web(procs, coordinator: str, *args: str, name: str = "web") -> str:
    """aal-web as a subprocess on 127.0.0.1:0; its HOST:PORT from its first line."""
    proc = procs.start(name, command("web", "--coordinator", coordinator, "--listen", "127.0.0.1:0", *args),
                       capture_stdout=True)
    return read_address(proc, name, procs.log_dir / f"{name}.log")


def labeling(procs, browsers, address: str, items: int) -> "Page":
    """`items` digits queued, aal-web started on `address`, and alice logged in to it in a browser, the first item on
    screen."""
    pictures = queue_digits(address, range(items))
    web = start_web(procs, address, "--lease-seconds", "60", "--heartbeat-seconds", "0.5")
    page = browsers()
    page.pictures = pictures
    page.login(f"http://{web}/", name="alice")
    page.wait(lambda: page.item(), "the first item")
    return page


def latest_labels(records) -> dict[str, int]:
    latest = {}
    for r in sorted(records, key=lambda r: r.seq):
        latest[r.item_id] = r.label
    return latest


@pytest.mark.e2e
def test_a_person_labels_with_keys_and_mouse_undoes_defers_and_skips(grpc_coordinator, procs, browsers):
    address, _ = grpc_coordinator
    page = labeling(procs, browsers, address, 30)
    assert page.el("who").text == "alice"
    image = page.el("stage").find_element(page.by.TAG_NAME, "img")
    assert image.value_of_css_property("image-rendering") == "pixelated" and image.size["width"] >= 8 * 16

    deadline = float(page.el("stage").get_attribute("data-deadline"))
    page.wait(lambda: float(page.el("stage").get_attribute("data-deadline") or 0) > deadline, "a renewed lease")

    labels = {page.act(lambda: page.press("3")): 3}  # the digits' own keys
    labels[page.act(lambda: page.click('button.class[data-class="5"]'))] = 5
    deferred = page.act(lambda: page.press("d"))
    skipped = page.act(lambda: page.click("#skip"))
    labels[page.act(lambda: page.press("7"))] = 7
    last = page.act(lambda: page.press("1"))
    labels[last] = 1
    page.wait(lambda: page.count("labels") == 4, "four labels acknowledged")

    page.press("u")  # undo: the last labeled item comes back, to be labeled again
    page.wait(lambda: page.item() == last, "the last labeled item back on screen")
    assert "“1”" in page.el("banner").text
    page.press("9")
    labels[last] = 9
    page.wait(lambda: page.count("corrections") == 1, "the correction acknowledged")
    assert page.count("labels") == 4 and page.item() != last

    with CoordinatorClient(address, retry_for=5) as admin:
        records = list(admin.export(include_payload=False))
        assert latest_labels(records) == labels  # exactly what was acknowledged; nothing deferred or skipped
        assert len(records) == len(labels) + 1 and {r.annotator_id for r in records} == {"alice"}
        first, correction = [r for r in records if r.item_id == last]
        assert correction.supersedes == first.seq and (first.label, correction.label) == (1, 9)
        assert deferred not in labels and skipped not in labels
        assert wait_until(lambda: admin.stats().skipped == 1, timeout=WAIT)  # sent once its undo window ends
        with AnnotationClient(address, "carol", retry_for=5) as carol:
            assert carol.get_item(skipped).state == "skipped"
            assert carol.get_item(deferred).state == "queued"  # back in the pool, for others than alice
        page.wait(lambda: admin.stats().leased == 2, "the item on screen and the next one leased")

        shown = page.el("stage").get_attribute("data-lease")
        page.driver.refresh()  # the login survives a reload; the old page's leases go back, the new one leases
        page.wait(lambda: page.el("stage").get_attribute("data-lease") not in ("", shown), "an item after reload")
        page.wait(lambda: admin.stats().leased == 2, "only the reloaded page's two leases held")
        assert page.count("labels") == 4 and page.el("who").text == "alice"

        page.driver.get("about:blank")  # closing the page gives both back now, not when the 60 s leases end
        assert wait_until(lambda: admin.stats().leased == 0, timeout=WAIT)


def make_certs(directory):
    """A CA and a server certificate for 127.0.0.1 signed by it (openssl), and the server key's SPKI hash."""
    def ssl(*args, **kwargs):
        return subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, **kwargs)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=aal web test CA", "-keyout",
        "ca.key", "-out", "ca.pem")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out",
        "server.csr")
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-out", "server.pem", "-extfile", "server.ext")
    pubkey = ssl("x509", "-in", "server.pem", "-pubkey", "-noout").stdout
    der = ssl("pkey", "-pubin", "-outform", "der", input=pubkey).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.mark.e2e
def test_annotators_with_tokens_label_at_once_over_tls(tmp_path, procs, browsers):
    spki = make_certs(tmp_path)
    tokens = {"tok-alice": Principal("annotator", "alice"), "tok-bob": Principal("annotator", "bob"),
              "tok-worker": Principal("worker"), "tok-admin": Principal("admin")}
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, CoordinatorConfig(lease_seconds=30),
                                    tokens=tokens, tls=ServerTLS(tmp_path / "server.pem", tmp_path / "server.key"))
    address = f"127.0.0.1:{srv.port}"
    try:
        pictures = queue_digits(address, range(20), security=ClientSecurity(token="tok-worker", ca=tmp_path / "ca.pem"))
        web = start_web(procs, address, "--tls-ca", tmp_path / "ca.pem", "--tls-cert", tmp_path / "server.pem",
                        "--tls-key", tmp_path / "server.key")
        trust = f"--ignore-certificate-errors-spki-list={spki}"  # this server's key only, as a CA install would
        alice, bob = browsers(trust), browsers(trust)
        alice.pictures = bob.pictures = pictures

        alice.login(f"https://{web}/", token="forged", name="alice")
        alice.wait(lambda: "token" in alice.el("login-error").text, "the coordinator refusing a forged token")
        bob.login(f"https://{web}/", token="tok-worker", name="bob")
        bob.wait(lambda: "may not label" in bob.el("login-error").text, "the coordinator refusing a worker token")

        alice.login(f"https://{web}/", token="tok-alice", name="alice")
        bob.login(f"https://{web}/", token="tok-bob")  # the token alone: it names bob
        acked, last = {}, {}
        for page, keys in ((alice, "12"), (bob, "34"), (alice, "5"), (bob, "6")):
            for key in keys:
                last[page] = page.act(lambda: page.press(key))
                acked[last[page]] = int(key)
        alice.wait(lambda: alice.count("labels") == 3, "alice's labels acknowledged")
        bob.wait(lambda: bob.count("labels") == 3, "bob's labels acknowledged")
        assert bob.el("who").text == "bob"

        # a reviewer changes alice's last label; her own change of it is then refused, and she labels on
        admin = ClientSecurity(token="tok-admin", ca=tmp_path / "ca.pem")
        with AnnotationClient(address, "reviewer", retry_for=5, security=admin) as reviewer:
            reviewer.correct(last[alice], 8)
        acked[last[alice]] = 8
        alice.press("u")
        alice.wait(lambda: alice.item() == last[alice], "alice's last label back to change")
        alice.press("7")
        alice.wait(lambda: "was not saved" in alice.el("status").text, "the refused change shown")
        assert alice.el("desk").is_displayed() and not alice.el("login").is_displayed()
        acked[alice.act(lambda: alice.press("9"))] = 9
        alice.wait(lambda: alice.count("labels") == 4, "alice's next label acknowledged")

        with CoordinatorClient(address, retry_for=5, security=admin) as c:
            records = list(c.export(include_payload=False))
        assert latest_labels(records) == acked and len(records) == 8
        assert {r.annotator_id for r in records} == {"alice", "bob", "reviewer"}
        with CoordinatorClient(address, retry_for=5, security=admin) as c:
            alice.wait(lambda: c.stats().leased == 4, "each page's item on screen and the next one leased")
            procs.stop("web")  # SIGTERM: aal-web gives every open page's leases back before it exits
            assert c.stats().leased == 0
    finally:
        procs.stop("web")  # before its coordinator, so that it can give its leases back on the way out
        srv.stop(0)


# -- what people see of a task: descriptions, guidelines, pictures; never an item's id --------------------------

GUIDELINES = """# How to label

Pick the **animal** you see; a digit is *two*.

<script>window.aalInjected = "script"</script>

<img src="x" onerror="window.aalInjected = 'img'">

[a trap](javascript:window.aalInjected='link') and [the handbook](https://example.org/handbook).
"""
SECRET_TASK = Task(dataset="digits", num_classes=3, class_names=("cat", "dog", "two"), input_shape=(1, 8, 8),
                   architecture="mlp", class_descriptions=("a small feline", "", "the digit 2, however written"),
                   guidelines=GUIDELINES)
SECRET = "secret"  # in every item id below: an id that gives the answer away, as file names often do


def jpeg(width=320, height=240) -> bytes:
    """A photo-like JPEG: a gradient with a bright square."""
    from PIL import Image

    ramp = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    ramp[60:180, 100:220] = (250, 200, 40)
    out = io.BytesIO()
    Image.fromarray(ramp).save(out, format="JPEG", quality=85)
    return out.getvalue()


@pytest.fixture
def secret_coordinator(tmp_path):
    """A coordinator of SECRET_TASK holding a JPEG photo (asked first) and a PNG digit, ids that tell the class."""
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "secret-data", SECRET_TASK,
                                    CoordinatorConfig(lease_seconds=60))
    address = f"127.0.0.1:{srv.port}"
    x = np.zeros((1, 8, 8), np.float32)
    [(_, digit, _)] = digit_candidates([2])
    with CoordinatorClient(address, retry_for=5) as c:
        c.submit_candidates(worker_id="w", strategy="margin", model_version=0, candidates=[
            (f"img-{SECRET}-class-cat", Payload.from_array(x, image=jpeg()), 0.9),
            (f"img-{SECRET}-class-two", digit, 0.5)])
    yield address
    srv.stop(0)


def test_the_page_gets_descriptions_safe_guidelines_and_no_item_id(secret_coordinator, procs):
    """What aal-web sends a page: each class's description, the guidelines as HTML with the raw HTML in them
    escaped, and items without their ids (corrections name the lease instead)."""
    web = start_web(procs, secret_coordinator, "--lease-seconds", "60")

    def post(path, body) -> tuple[int, str]:
        request = urllib.request.Request(f"http://{web}/api/{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, response.read().decode()

    session = json.loads(post("login", {"name": "alice"})[1])["session"]
    tab = json.loads(post("tab", {"session": session})[1])
    assert tab["class_descriptions"] == ["a small feline", "", "the digit 2, however written"]
    html = tab["guidelines"]
    assert "<h1>How to label</h1>" in html and "<strong>animal</strong>" in html
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html
    assert '<a href="https://example.org/handbook" target="_blank" rel="noopener noreferrer">' in html
    args = {"session": session, "tab": tab["tab"], "wait": 0}
    status, text = post("lease", args)
    assert SECRET not in text
    item = json.loads(text)["item"]
    assert item["image"] == "data:image/jpeg;base64," + base64.b64encode(jpeg()).decode()
    assert post("label", {**args, "lease": item["lease"], "label": 0})[0] == 200
    status, text = post("correct", {"session": session, "lease": item["lease"], "label": 1})
    assert status == 200 and json.loads(text)["stats"]["corrections"] == 1
    with CoordinatorClient(secret_coordinator, retry_for=5) as admin:
        records = list(admin.export(include_payload=False))
    assert [(r.item_id, r.label) for r in records] == [(f"img-{SECRET}-class-cat", 0), (f"img-{SECRET}-class-cat", 1)]


@pytest.mark.e2e
def test_a_person_reads_guidelines_and_descriptions_and_never_an_item_id(secret_coordinator, procs, browsers):
    web = start_web(procs, secret_coordinator, "--lease-seconds", "60")
    page = browsers()
    page.login(f"http://{web}/", name="alice")
    page.wait(lambda: page.shown(), "the first item")
    driver = page.driver

    def nothing_tells_the_id():
        assert SECRET not in driver.title and SECRET not in driver.page_source  # the DOM: text, attributes, alt
        assert SECRET not in page.el("desk").text

    # the guidelines: open on first load, rendered, and nothing in them ran or became markup
    panel = page.el("guidelines")
    assert panel.get_attribute("open") is not None and page.el("guidelines-body").is_displayed()
    body = page.el("guidelines-body")
    assert body.find_element(page.by.TAG_NAME, "h1").text == "How to label"
    assert body.find_element(page.by.TAG_NAME, "strong").text == "animal"
    assert '<script>window.aalInjected = "script"</script>' in body.text  # shown as text
    assert not body.find_elements(page.by.CSS_SELECTOR, "script, img, iframe, [onerror]")
    assert [a.text for a in body.find_elements(page.by.TAG_NAME, "a")] == ["the handbook"]
    assert driver.execute_script("return window.aalInjected === undefined")
    # each class's description under its name, and as the button's title
    cat, dog, two = page.driver.find_elements(page.by.CSS_SELECTOR, "button.class")
    assert cat.text.splitlines() == ["cat 1", "a small feline"] and cat.get_attribute("title") == "a small feline"
    assert dog.text.splitlines() == ["dog 2"] and not dog.get_attribute("title")
    assert two.get_attribute("title") == "the digit 2, however written"
    assert "G guidelines" in page.el("keys").text

    # the photo: its own media type, at its real size (not enlarged, not pixelated)
    image = page.el("stage").find_element(page.by.TAG_NAME, "img")
    assert image.get_attribute("src").startswith("data:image/jpeg;base64,")
    assert (image.size["width"], image.size["height"]) == (320, 240)
    assert image.value_of_css_property("image-rendering") != "pixelated"
    nothing_tells_the_id()

    page.press("g")  # fold the guidelines; the choice holds across a reload
    page.wait(lambda: not page.el("guidelines-body").is_displayed(), "the guidelines folded")

    page.act(lambda: page.press("1"))  # cat
    # the tiny digit: enlarged by a whole factor, nearest neighbour
    page.wait(lambda: page.el("stage").find_elements(page.by.TAG_NAME, "img"), "the digit")
    digit = page.el("stage").find_element(page.by.TAG_NAME, "img")
    assert digit.get_attribute("src").startswith("data:image/png;base64,")
    assert digit.value_of_css_property("image-rendering") == "pixelated" and digit.size["width"] >= 8 * 16
    nothing_tells_the_id()
    page.wait(lambda: page.count("labels") == 1, "the label acknowledged")
    page.press("u")  # the photo is back for a correction: still no id anywhere
    page.wait(lambda: page.el("stage").find_element(page.by.TAG_NAME, "img").get_attribute("src")
              .startswith("data:image/jpeg"), "the photo back")
    assert page.el("banner").text.startswith("Changing your label “cat”")
    nothing_tells_the_id()
    page.press("2")
    page.wait(lambda: page.count("corrections") == 1, "the correction acknowledged")

    driver.refresh()
    page.wait(lambda: page.shown(), "an item after reload")
    assert page.el("guidelines").get_attribute("open") is None
    with CoordinatorClient(secret_coordinator, retry_for=5) as admin:
        labels = [(r.item_id, r.label) for r in admin.export(include_payload=False)]
    assert labels == [(f"img-{SECRET}-class-cat", 0), (f"img-{SECRET}-class-cat", 1)]


# -- the model's guess, behind aal-web --show-model-guess ------------------------------------------------------------


def queue_guessed_digits(address, srv, guesses: dict[int, tuple[int, float]]) -> dict[str, str]:
    """Digits proposed by a published model with its guess for each (class, probability); item id by picture."""
    weights = weights_to_bytes(build_model(TASK.architecture, TASK.input_shape, TASK.num_classes).state_dict())
    with CoordinatorClient(address, retry_for=5) as c:
        version = c.upload_model(weights, server_id="s", trained_seq=0, num_labels=0, architecture=TASK.architecture,
                                 metrics={}).version
        candidates = [(item_id, payload, score, None, *guesses[int(item_id)])
                      for item_id, payload, score in digit_candidates(sorted(guesses))]
        assert c.submit_candidates(worker_id="w", strategy="margin", model_version=version,
                                   candidates=candidates).accepted == len(guesses)
    return {payload.image_data_url(): item_id for item_id, payload, *_ in candidates}


def test_the_guess_reaches_the_page_only_when_aal_web_shows_it(grpc_coordinator):
    from aal_rpc.client.annotation import LeasedQuery
    from aal_rpc.types import Provenance
    from aal_rpc.web.app import item_json

    x = np.zeros(TASK.input_shape, np.float32)
    query = LeasedQuery("i", "L", 0.0, Payload.from_array(x), Provenance("w", "margin", 2, 0.1, guess=4,
                                                                            guess_probability=0.625))
    assert not {"guess", "guess_probability"} & set(item_json(query))  # off by default: nothing of it
    assert item_json(query, show_guess=True)["guess"] == 4
    assert item_json(query, show_guess=True)["guess_probability"] == 0.625
    unguessed = LeasedQuery("i", "L", 0.0, Payload.from_array(x), Provenance("w", "random", 0, 0.1))
    assert "guess" not in item_json(unguessed, show_guess=True)


@pytest.mark.e2e
@pytest.mark.parametrize("shown", [True, False], ids=["--show-model-guess", "default"])
def test_the_models_guess_is_pre_selected_and_confirmed_with_enter(grpc_coordinator, procs, browsers, shown):
    address, srv = grpc_coordinator
    guesses = {0: (0, 0.9), 1: (7, 0.55), 2: (2, 0.8), 3: (3, 0.6)}
    pictures = queue_guessed_digits(address, srv, guesses)
    web = start_web(procs, address, "--lease-seconds", "60", "--heartbeat-seconds", "0.5",
                    *(["--show-model-guess"] if shown else []))
    page = browsers()
    page.pictures = pictures
    page.login(f"http://{web}/", name="alice")
    page.wait(lambda: page.item(), "the first item")

    def marked():
        return [b.get_attribute("data-class") for b in page.driver.find_elements(page.by.CSS_SELECTOR,
                                                                                  "button.class.guess")]

    item = page.item()
    if not shown:
        assert marked() == [] and "guess" not in page.el("meta").text
        assert not page.driver.find_elements(page.by.CSS_SELECTOR, "[data-guess]")
        page.press("\n")  # Enter labels nothing: the next key still labels this item
        labels = {page.act(lambda: page.press("5")): 5}
        assert list(labels) == [item]
    else:
        guess, probability = guesses[int(item)]
        page.wait(lambda: marked() == [str(guess)], "the guess marked")
        button = page.driver.find_element(page.by.CSS_SELECTOR, f'button.class[data-class="{guess}"]')
        assert button.get_attribute("aria-pressed") == "true"
        assert button.get_attribute("data-guess") == f"model's guess {round(100 * probability)}%"
        assert "model's guess" in page.el("meta").text
        labels = {page.act(lambda: page.press("\n")): guess}  # Enter confirms the guess
        other = page.item()
        assert marked() == [str(guesses[int(other)][0])]  # the next item's own guess
        labels[page.act(lambda: page.press("5"))] = 5  # or another class, as always
    page.wait(lambda: page.count("labels") == len(labels), "the labels acknowledged")
    with CoordinatorClient(address, retry_for=5) as admin:
        assert latest_labels(admin.export(include_payload=False)) == labels

"""aal-web for a team of annotators (issue 23, item 3): the team's progress and each person's count today, finding a
class among fifteen with the keyboard, and a skip that can be taken back before it is sent.

The sessions core runs against a real coordinator with injected clocks; the page runs in headless chromium as in
tests/test_web.py (skipped without it on a developer's machine, failed in CI).
"""

import grpc
import pytest

from aal_rpc.client import AnnotationClient, CoordinatorClient
from aal_rpc.coordinator.app import create_coordinator_server
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.security import ClientSecurity, Principal
from aal_rpc.types import Task
from aal_rpc.web import coordinator_clients
from aal_rpc.web.progress import TEAM_REFRESH_SECONDS, TeamProgress
from aal_rpc.web.sessions import Sessions
from tests.conftest import TASK, wait_until
from tests.test_web import WAIT, Clock, browsers, labeling, queue_digits  # noqa: F401 - browsers: a fixture


def test_today_counts_a_persons_labels_over_their_logins_and_the_team_figures_follow_the_coordinator(
        grpc_coordinator):
    address, _ = grpc_coordinator
    queue_digits(address, range(6))
    connect, channel = coordinator_clients(address, ClientSecurity(), lease_seconds=60, retry_for=5)
    clock, day = Clock(), ["2030-01-01"]
    admin = CoordinatorClient(address, retry_for=5)
    team = TeamProgress(admin.stats, clock=clock)
    sessions = Sessions(connect, heartbeat_seconds=1, tab_timeout=10, clock=clock, team=team, today=lambda: day[0])
    try:
        desk = sessions.login(None, "alice")
        phone = sessions.login(None, "alice")  # a second login of the same person
        bob = sessions.login(None, "bob")
        tabs = {s.session_id: sessions.open_tab(s.session_id)[1].tab_id for s in (desk, phone, bob)}

        def label(session, cls):
            query = sessions.lease(session.session_id, tabs[session.session_id], 0)
            return sessions.submit(session.session_id, tabs[session.session_id], query.lease_id, cls)[1]

        first = label(desk, 1)
        assert (first["labels"], first["today"], first["team"]) == (1, 1, {"labeled": 1, "waiting": 5})
        stats = label(phone, 2)
        assert (stats["labels"], stats["today"]) == (1, 2)  # this login's one, and both of alice's today
        assert stats["team"] == first["team"]  # read once per TEAM_REFRESH_SECONDS for every page
        assert label(bob, 3)["today"] == 1
        clock.now += TEAM_REFRESH_SECONDS
        assert sessions.stats(desk)["team"] == {"labeled": 3, "waiting": 3}

        day[0] = "2030-01-02"  # midnight: every count starts again
        assert sessions.stats(desk)["today"] == 0
        assert label(desk, 4)["today"] == 1 and sessions.stats(phone)["today"] == 1
        assert sessions.stats(desk)["labels"] == 2  # the session's own count goes on
    finally:
        sessions.close()
        admin.close()
        channel.close()


def test_with_several_labels_per_item_each_person_gets_an_item_others_labeled_and_never_their_own_again(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK,
                                    CoordinatorConfig(lease_seconds=60, labels_per_item=2))
    address = f"127.0.0.1:{srv.port}"
    queue_digits(address, range(2))
    connect, channel = coordinator_clients(address, ClientSecurity(), lease_seconds=60, retry_for=5)
    sessions = Sessions(connect, heartbeat_seconds=1, tab_timeout=10)
    try:
        people = {name: sessions.login(None, name) for name in ("alice", "bob", "carol")}
        tabs = {name: sessions.open_tab(s.session_id)[1].tab_id for name, s in people.items()}

        def lease(name):
            return sessions.lease(people[name].session_id, tabs[name], 0)

        first = lease("alice")
        sessions.submit(people["alice"].session_id, tabs["alice"], first.lease_id, 1)
        again = lease("bob")  # the item alice labeled comes first: it is owed its second label
        sessions.submit(people["bob"].session_id, tabs["bob"], again.lease_id, 1)
        assert again.item_id == first.item_id
        other = lease("alice")
        assert other is not None and other.item_id != first.item_id
        with CoordinatorClient(address, retry_for=5) as admin:
            assert [(r.item_id, r.annotator_id) for r in admin.export(include_payload=False)] == [
                (first.item_id, "alice"), (first.item_id, "bob")]
    finally:
        sessions.close()
        channel.close()
        srv.stop(grace=0)


def test_a_token_that_may_not_read_stats_means_no_team_figures_and_no_error(tmp_path):
    tokens = {"ann": Principal("annotator", "alice"), "adm": Principal("admin")}
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "data", TASK, tokens=tokens)
    address = f"127.0.0.1:{srv.port}"
    calls = []
    try:
        with CoordinatorClient(address, retry_for=0, security=ClientSecurity(token="ann")) as annotator:
            def stats():
                calls.append(1)
                return annotator.stats()

            clock = Clock()
            team = TeamProgress(stats, clock=clock)
            assert team() is None and team.refused
            clock.now += 10 * TEAM_REFRESH_SECONDS
            assert team() is None and len(calls) == 1  # a refused token is not tried again
        with CoordinatorClient(address, retry_for=0, security=ClientSecurity(token="adm")) as admin:
            assert TeamProgress(admin.stats)() == {"labeled": 0, "waiting": 0}  # --stats-token: an admin's
    finally:
        srv.stop(0)


def test_a_coordinator_away_leaves_the_last_figures(grpc_coordinator):
    address, srv = grpc_coordinator
    clock = Clock()
    with CoordinatorClient(address, retry_for=0, wait_for_ready=False) as admin:
        team = TeamProgress(admin.stats, clock=clock)
        assert team() == {"labeled": 0, "waiting": 0}
        srv.stop(grace=0)
        clock.now += TEAM_REFRESH_SECONDS
        assert team() == {"labeled": 0, "waiting": 0} and not team.refused


# -- in a real browser: fifteen classes, keys only -------------------------------------------------------------

ANIMALS = ("ant", "bee", "cat", "dog", "eagle", "fox", "goat", "horse", "ibis", "jaguar", "koala", "lion",
           "elephant", "newt", "owl")
FIFTEEN = Task(dataset="digits", num_classes=15, class_names=ANIMALS, input_shape=(1, 8, 8), architecture="mlp",
               class_descriptions=("",) * 14 + ("a bird of the night",))


@pytest.fixture
def fifteen(tmp_path):
    srv = create_coordinator_server("127.0.0.1:0", tmp_path / "fifteen", FIFTEEN, CoordinatorConfig(lease_seconds=60))
    yield f"127.0.0.1:{srv.port}"
    srv.stop(0)


@pytest.mark.e2e
def test_a_person_finds_one_of_fifteen_classes_by_typing_and_takes_a_skip_back(fifteen, procs, browsers):  # noqa: F811
    from selenium.webdriver.common.keys import Keys

    page = labeling(procs, browsers, fifteen, 12)
    assert page.el("find").is_displayed() and "/ find a class" in page.el("keys").text
    assert "Del skip" in page.el("keys").text and "S skip" not in page.el("keys").text
    labels = {page.act(lambda: page.press("3")): 2}  # keys 1–9, 0 still reach the first ten

    # / goes to the find box; typing narrows the buttons; Enter labels with the one marked
    page.press("/")
    page.wait(lambda: page.driver.switch_to.active_element == page.el("filter"), "the find box focused")
    page.press("ele")
    shown = [b.text.split()[0] for b in page.driver.find_elements(page.by.CSS_SELECTOR, "button.class")
             if b.is_displayed()]
    assert shown == ["elephant"]
    labels[page.act(lambda: page.press(Keys.ENTER))] = ANIMALS.index("elephant")
    assert page.el("filter").get_attribute("value") == ""  # cleared, and still focused for the next item
    # several match: names starting with the text first, then names holding it; arrows move the mark
    page.press("o")
    marked = page.driver.find_element(page.by.CSS_SELECTOR, "button.class.marked")
    assert marked.text.split()[0] == "owl"
    page.press(Keys.ARROW_DOWN)
    labels[page.act(lambda: page.press(Keys.ENTER))] = ANIMALS.index("dog")
    page.press("night")  # a description matches too
    labels[page.act(lambda: page.press(Keys.ENTER))] = ANIMALS.index("owl")
    page.press(Keys.ESCAPE)  # out of the box: keys label again
    page.wait(lambda: page.driver.switch_to.active_element != page.el("filter"), "the find box left")
    labels[page.act(lambda: page.press("0"))] = 9

    with CoordinatorClient(fifteen, retry_for=5) as admin, AnnotationClient(fifteen, "carol", retry_for=5) as carol:
        # Delete skips, but the skip waits: U takes it back and the item shows again, still leased
        page.driver.execute_script("window.aalSkipUndoMs = 600000")
        skipped = page.act(lambda: page.press(Keys.DELETE))
        assert "U takes it back" in page.el("banner").text
        assert carol.get_item(skipped).state == "leased" and admin.stats().skipped == 0
        page.press("u")
        page.wait(lambda: page.item() == skipped, "the skipped item back on screen")
        labels[page.act(lambda: page.press("5"))] = 4
        # a skip whose window ends is sent
        page.driver.execute_script("window.aalSkipUndoMs = 1")
        first_skip = page.act(lambda: page.press(Keys.DELETE))
        assert wait_until(lambda: carol.get_item(first_skip).state == "skipped", WAIT)
        # a skip still waiting when the page closes goes with its goodbye
        page.driver.execute_script("window.aalSkipUndoMs = 600000")
        last_skip = page.act(lambda: page.click("#skip"))
        page.wait(lambda: page.count("labels") == len(labels), "every label acknowledged")
        assert page.count("today") == len(labels)
        page.wait(lambda: page.el("team").get_attribute("data-labeled") == str(len(labels)), "the team's figures")
        assert "Team: " in page.el("team").text
        assert carol.get_item(last_skip).state == "leased"
        page.driver.get("about:blank")
        assert wait_until(lambda: carol.get_item(last_skip).state == "skipped", WAIT)
        assert wait_until(lambda: admin.stats().leased == 0, WAIT)
        records = list(admin.export(include_payload=False))
    assert {r.item_id: r.label for r in records} == labels
    assert skipped in labels and first_skip not in labels and last_skip not in labels

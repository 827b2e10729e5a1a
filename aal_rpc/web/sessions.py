"""What aal-web keeps for the people labeling in browsers: a session per login, a tab per open page, and the
leases each tab holds, renewed while the tab sends heartbeats and given back when it closes or falls silent.

No HTTP here (aal_rpc/web/app.py translates requests into these calls). Every coordinator call goes through the
annotator's own AnnotationClient, which carries the annotator's bearer token, so the coordinator checks each
person's token and role itself; aal-web decides nothing the coordinator would.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import grpc

from aal_rpc.client import AnnotationClient, LeasedQuery, SubmitResult
from aal_rpc.types import Task

log = logging.getLogger("aal.web")

PACE_WINDOW_SECONDS = 300.0  # labels/minute over the last five minutes: the pace a person has now
PACE_MIN_SECONDS = 30.0  # ...over at least this long, so two quick first labels do not read as 200/min
CORRECTABLE = 1000  # the most recent labels of a session that it may correct (the page undoes its last 20)
SESSION_IDLE_SECONDS = 3600.0  # a login with no open tab is forgotten after an hour
MAX_NAME = 64  # characters of an annotator name
LOST = (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION)  # a lease that is gone for good

Connect = Callable[[str | None, str], AnnotationClient]  # (token, annotator id) -> that annotator's client


class Expired(LookupError):
    """The session or the tab is unknown: logged out, timed out, closed, or aal-web restarted. `what` says which
    ("session": log in again; "tab": register the page again)."""

    def __init__(self, what: str, message: str):
        super().__init__(message)
        self.what = what


class NotHeld(LookupError):
    """The tab holds no such lease (it was labeled, given back, or lost)."""


class NotLabeledHere(LookupError):
    """A correction for an item this session did not label."""


@dataclass
class Tab:
    tab_id: str
    last_seen: float
    leases: dict[str, LeasedQuery] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # leases being labeled or given back right now
    closed: bool = False


class Session:
    """One login: the annotator's client, the labels acknowledged since, and the tabs open."""

    def __init__(self, session_id: str, client: AnnotationClient, task: Task, now: float):
        self.session_id = session_id
        self.client = client
        self.task = task
        self.started = now
        self.last_seen = now
        self.tabs: dict[str, Tab] = {}
        self.labels = 0
        self.corrections = 0
        self._recent: deque[float] = deque()  # when each label of the last PACE_WINDOW_SECONDS was acknowledged
        # the lease each label was given under -> its item, for corrections: the page knows items by lease only
        self.labeled: OrderedDict[str, str] = OrderedDict()

    @property
    def annotator_id(self) -> str:
        return self.client.annotator_id

    def record(self, lease_id: str, item_id: str, now: float) -> None:
        self.labels += 1
        self._recent.append(now)
        self.labeled[lease_id] = item_id
        self.labeled.move_to_end(lease_id)
        while len(self.labeled) > CORRECTABLE:
            self.labeled.popitem(last=False)

    def stats(self, now: float) -> dict:
        while self._recent and self._recent[0] < now - PACE_WINDOW_SECONDS:
            self._recent.popleft()
        span = max(PACE_MIN_SECONDS, min(PACE_WINDOW_SECONDS, now - self.started))
        return {"labels": self.labels, "corrections": self.corrections,
                "per_minute": round(len(self._recent) * 60.0 / span, 1)}


def annotator_for(token: str | None, name: str) -> str:
    """The annotator id of a login: the name given, else one derived from the token (never the token itself)."""
    name = name.strip()
    if len(name) > MAX_NAME or not all(c.isprintable() for c in name):
        raise ValueError(f"a name is at most {MAX_NAME} printable characters")
    if name:
        return name
    if token:
        return "web-" + hashlib.sha256(token.encode()).hexdigest()[:12]
    raise ValueError("give your token, or your name if this coordinator runs without tokens")


class Sessions:
    """Every login and tab of one aal-web process.

    Parameters
    ----------
    connect:
        Makes the AnnotationClient of a login from its token (None: the server's default) and annotator id.
    heartbeat_seconds:
        How often an open page says so (and its leases are renewed).
    tab_timeout:
        Seconds without a request from a tab after which its leases are given back (`reap`). Pages send
        heartbeats well within it; a browser that vanished without saying goodbye is caught here, and the
        coordinator's lease expiry catches what aal-web itself misses (a crash).
    clock:
        Monotonic seconds; tests pass their own.
    """

    def __init__(self, connect: Connect, *, heartbeat_seconds: float, tab_timeout: float,
                 clock: Callable[[], float] = time.monotonic):
        self._connect = connect
        self.heartbeat_seconds = heartbeat_seconds
        self.tab_timeout = tab_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    # -- logins and tabs --------------------------------------------------------------------------------

    def login(self, token: str | None, name: str) -> Session:
        """A new session; the coordinator's answer to GetTask proves the token (grpc.RpcError if it refuses)."""
        client = self._connect(token or None, annotator_for(token, name))
        try:
            task = client.task()
        except BaseException:
            client.close()
            raise
        session = Session(secrets.token_urlsafe(24), client, task, self._clock())
        with self._lock:
            self._sessions[session.session_id] = session
        log.info("%s logged in", session.annotator_id)
        return session

    def logout(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.pop(session_id, None)
            tabs = list(session.tabs.values()) if session else []
            for tab in tabs:
                tab.closed = True
            if session:
                session.tabs.clear()
        if session is not None:
            for tab in tabs:
                self._give_back(session, tab)
            session.client.close()

    def session(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise Expired("session", "this login has ended; log in again")
            session.last_seen = self._clock()
            return session

    def open_tab(self, session_id: str) -> tuple[Session, Tab]:
        session = self.session(session_id)
        tab = Tab(secrets.token_urlsafe(12), self._clock())
        with self._lock:
            session.tabs[tab.tab_id] = tab
        return session, tab

    def _tab(self, session_id: str, tab_id: str) -> tuple[Session, Tab]:
        session = self.session(session_id)
        with self._lock:
            tab = session.tabs.get(tab_id)
            if tab is None:
                raise Expired("tab", "this page was closed or timed out")
            tab.last_seen = self._clock()
        return session, tab

    def close_tab(self, session_id: str, tab_id: str, done: Iterable[tuple[str, str, int]] = ()) -> None:
        """The page is going away: first what it did but had not sent yet, `done` as (how, lease, label) with
        `how` "label" or as in give_back; then its other leases go back at once, for others to label."""
        for how, lease_id, label in done:
            try:
                if how == "label":
                    self.submit(session_id, tab_id, lease_id, label)
                else:
                    self.give_back(session_id, tab_id, lease_id, how)
            except (LookupError, grpc.RpcError) as exc:
                log.info("a closing page's %s of lease %s failed: %s", how, lease_id, exc)
        with self._lock:
            session = self._sessions.get(session_id)
            tab = session.tabs.pop(tab_id, None) if session else None
            if tab is not None:
                tab.closed = True
        if tab is not None:
            self._give_back(session, tab)

    # -- queries ----------------------------------------------------------------------------------------

    def lease(self, session_id: str, tab_id: str, wait_seconds: float) -> LeasedQuery | None:
        """Lease the tab's next query, waiting up to `wait_seconds`; None if none came."""
        session, tab = self._tab(session_id, tab_id)
        query = session.client.lease(wait_seconds=wait_seconds)
        if query is None:
            return None
        with self._lock:
            kept = not tab.closed
            if kept:
                tab.leases[query.lease_id] = query
        if not kept:  # the page closed while this lease was on its way
            self._release_quietly(session, query)
            raise Expired("tab", "this page was closed")
        return query

    def _take(self, session_id: str, tab_id: str, lease_id: str) -> tuple[Session, Tab, LeasedQuery]:
        session, tab = self._tab(session_id, tab_id)
        with self._lock:
            query = tab.leases.get(lease_id)
            if query is None or lease_id in tab.busy:
                raise NotHeld(f"this page holds no lease {lease_id}")
            tab.busy.add(lease_id)
        return session, tab, query

    def _settle(self, tab: Tab, lease_id: str, done: bool) -> None:
        with self._lock:
            tab.busy.discard(lease_id)
            if done:
                tab.leases.pop(lease_id, None)

    def submit(self, session_id: str, tab_id: str, lease_id: str, label: int) -> tuple[SubmitResult, dict]:
        """Label a leased query; returns once the coordinator has it on disk, with the session's new stats."""
        session, tab, query = self._take(session_id, tab_id, lease_id)
        result = self._end_lease(tab, lease_id, lambda: session.client.submit(query, label))
        with self._lock:
            if not result.duplicate:
                session.record(query.lease_id, query.item_id, self._clock())
            return result, session.stats(self._clock())

    def give_back(self, session_id: str, tab_id: str, lease_id: str, how: str) -> None:
        """`how`: "skip" (unlabelable, never offered again), "defer" (don't know: back to the pool, not to this
        annotator for a while) or "release" (back to the pool for anyone)."""
        session, tab, query = self._take(session_id, tab_id, lease_id)
        call = {"skip": session.client.skip, "defer": session.client.defer, "release": session.client.release}[how]
        self._end_lease(tab, lease_id, lambda: call(query))

    def _end_lease(self, tab, lease_id: str, call):
        """Make the call that ends a lease; the tab lets the lease go once it succeeded or the lease is lost."""
        done = False
        try:
            result = call()
            done = True
            return result
        except grpc.RpcError as exc:
            done = exc.code() in LOST
            raise
        finally:
            self._settle(tab, lease_id, done)

    def correct(self, session_id: str, lease_id: str, label: int) -> tuple[SubmitResult, dict]:
        """Change the label this session gave the item it labeled under `lease_id` (undo): a new record in L that
        supersedes the old one."""
        session = self.session(session_id)
        with self._lock:
            item_id = session.labeled.get(lease_id)
            if item_id is None:
                raise NotLabeledHere(f"no item was labeled under lease {lease_id} in this session")
        result = session.client.correct(item_id, label)
        with self._lock:
            if not result.duplicate:
                session.corrections += 1
            return result, session.stats(self._clock())

    def heartbeat(self, session_id: str, tab_id: str) -> tuple[dict[str, float], list[str], dict]:
        """The tab is open: renew its leases. Returns (lease -> new deadline, leases lost, stats); a lease is lost
        when the coordinator no longer holds it for this annotator (it expired while the computer slept)."""
        session, tab = self._tab(session_id, tab_id)
        with self._lock:
            queries = [q for lid, q in tab.leases.items() if lid not in tab.busy]
        deadlines, lost = {}, []
        for query in queries:
            try:
                renewed = session.client.renew(query)
            except grpc.RpcError as exc:
                if exc.code() not in LOST:
                    raise
                with self._lock:
                    if query.lease_id in tab.busy or tab.leases.pop(query.lease_id, None) is None:
                        continue  # labeled or given back meanwhile: not lost
                lost.append(query.lease_id)
                continue
            with self._lock:
                if query.lease_id in tab.leases:
                    tab.leases[query.lease_id] = renewed
                    deadlines[query.lease_id] = renewed.deadline_unix
        with self._lock:
            return deadlines, lost, session.stats(self._clock())

    def stats(self, session: Session) -> dict:
        with self._lock:
            return session.stats(self._clock())

    # -- housekeeping -----------------------------------------------------------------------------------

    def reap(self) -> int:
        """Give back the leases of tabs silent for `tab_timeout`, and forget idle logins; how many tabs closed."""
        now = self._clock()
        silent, idle = [], []
        with self._lock:
            for session in list(self._sessions.values()):
                for tab_id, tab in list(session.tabs.items()):
                    if now - tab.last_seen > self.tab_timeout:
                        tab.closed = True
                        silent.append((session, session.tabs.pop(tab_id)))
                if not session.tabs and now - session.last_seen > SESSION_IDLE_SECONDS:
                    idle.append(self._sessions.pop(session.session_id))
        for session, tab in silent:
            log.info("a page of %s went silent; giving back its %d leases", session.annotator_id, len(tab.leases))
            self._give_back(session, tab)
        for session in idle:
            session.client.close()
        return len(silent)

    def close(self) -> None:
        """Give back every lease and end every session (aal-web is stopping). One try each, no waiting for an
        absent coordinator: what is not given back now returns to the pool when its lease ends."""
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.client.retry_for = 0
            session.client.wait_for_ready = False
            self.logout(session.session_id)

    def _give_back(self, session: Session, tab: Tab) -> None:
        with self._lock:
            queries = [q for lid, q in tab.leases.items() if lid not in tab.busy]
            tab.leases.clear()
        for query in queries:
            self._release_quietly(session, query)

    @staticmethod
    def _release_quietly(session: Session, query: LeasedQuery) -> None:
        try:
            session.client.release(query)
        except grpc.RpcError as exc:  # expired meanwhile, or the coordinator is away: expiry returns it anyway
            log.debug("could not give back lease %s: %s", query.lease_id, exc.code())

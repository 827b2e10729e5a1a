"""What aal-web keeps for the people labeling in browsers: a session per login, a tab per open page, and the
leases each tab holds, renewed while the tab sends heartbeats and given back when it closes or falls silent.

No HTTP here (aal_rpc/web/app.py translates requests into these calls). Every coordinator call goes through the
annotator's own AnnotationClient, which carries the annotator's bearer token, so the coordinator checks each
person's token and role itself; aal-web decides nothing the coordinator would.

What clients may hold here is bounded (Limits): logins per client address and in all, pages per login, and leases
(held or being polled for) per login and per annotator, so no client can grow aal-web's memory or empty S.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import grpc

from aal_rpc.client import LEASE_GONE, AnnotationClient, LeasedQuery, SubmitResult
from aal_rpc.types import Payload, Provenance, Task

log = logging.getLogger("aal.web")

PACE_WINDOW_SECONDS = 300.0  # labels/minute over the last five minutes: the pace a person has now
PACE_MIN_SECONDS = 30.0  # ...over at least this long, so two quick first labels do not read as 200/min
CORRECTABLE = 1000  # the most recent labels of a session that it may correct (the page undoes its last 20)
LONG_POLL_SECONDS = 10.0  # a page's lease waits this long for a query: short enough that a browser's six
#                           connections per site are never all held by polls of several open tabs
SESSION_IDLE_SECONDS = 3600.0  # a login with no open tab is forgotten after an hour
MAX_NAME = 64  # characters of an annotator name
# What a login's probes renew: a lease that cannot exist, so a probe that passes the who-may-act-as-whom checks
# ends in NOT_FOUND or FAILED_PRECONDITION and changes nothing.
PROBE = "aal-web: who is this?"

Team = Callable[[], dict | None]  # the team's progress as pages show it (web/progress.py), None when unknown
Connect = Callable[[str | None, str], AnnotationClient]  # (token, annotator id) -> that annotator's client
# (token, annotator id, wait seconds) -> a leased query or None: a long poll that holds no thread while it waits
Poll = Callable[[str | None, str, float], Awaitable[LeasedQuery | None]]


@dataclass(frozen=True)
class Limits:
    """What the clients of one aal-web may hold at once (README "Limits", `aal-web --help`)."""

    logins: int = 1000  # in all; a new one past this replaces the least recently seen login with no page open
    logins_per_client: int = 32  # per remote address; a new one replaces that address's least recently seen
    tabs_per_login: int = 8  # open pages of one login; a new one replaces its least recently seen
    leases_per_login: int = 8  # items a login holds or is polling for (a page holds two, and its labels on the way)
    leases_per_annotator: int = 16  # the same, over all logins of one annotator


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


class AtLimit(Exception):
    """A login or a lease past a limit (Limits). `what`: "leases" (give some back first) or "logins" (aal-web is
    full of logins with pages open: try again later)."""

    def __init__(self, what: str, message: str):
        super().__init__(message)
        self.what = what


@dataclass
class Tab:
    tab_id: str
    last_seen: float
    leases: dict[str, LeasedQuery] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # leases being labeled or given back right now
    closed: bool = False


class Session:
    """One login: the annotator's client, the labels acknowledged since, and the tabs open."""

    def __init__(self, session_id: str, client: AnnotationClient, task: Task, now: float, *, token: str | None = None,
                 address: str = "", annotator_id: str | None = None):
        self.session_id = session_id
        self.client = client
        # who labels, as shown and counted here; the client's annotator_id is what its calls claim ("" where the
        # token names the annotator and the coordinator fills it in)
        self.annotator_id = client.annotator_id if annotator_id is None else annotator_id
        self.task = task
        self.token = token  # for the long polls, which go over a channel of their own
        self.address = address  # the client's remote address
        self.started = now
        self.last_seen = now
        self.tabs: dict[str, Tab] = {}
        self.polls = 0  # long polls under way: each may bring a lease
        self.labels = 0
        self.corrections = 0
        self._recent: deque[float] = deque()  # when each label of the last PACE_WINDOW_SECONDS was acknowledged
        # the lease each label was given under -> its item, for corrections: the page knows items by lease only
        self.labeled: OrderedDict[str, str] = OrderedDict()

    def held(self) -> int:
        """Leases held, and coming (polls under way)."""
        return self.polls + sum(len(tab.leases) for tab in self.tabs.values())

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


def checked_name(token: str | None, name: str) -> str:
    """The name typed at a login, stripped ("" for none)."""
    name = name.strip()
    if len(name) > MAX_NAME or not all(c.isprintable() for c in name):
        raise ValueError(f"a name is at most {MAX_NAME} printable characters")
    if not name and not token:
        raise ValueError("give your token, or your name if this coordinator runs without tokens")
    return name


def _renews_nothing(client: AnnotationClient, claimed: str) -> grpc.RpcError | None:
    """Renew a lease that cannot exist, claiming to be `claimed`: None when the coordinator looked for the lease
    (the claim passed its checks of who may act as whom), else its refusal."""
    client.annotator_id = claimed
    try:
        client.renew(LeasedQuery(PROBE, PROBE, 0.0, Payload(b"", "", ()), Provenance()))
    except grpc.RpcError as exc:
        return None if exc.code() in LEASE_GONE else exc  # a gone lease: the probe passed the who-checks
    return None


def resolve_annotator(client: AnnotationClient, token: str | None, name: str) -> tuple[str, str]:
    """Who a login labels as, as (what its calls claim, the annotator shown): the name given; else the identity
    its token names (a tokens-file line `annotator alice TOKEN`); else a name derived from the token (never the
    token itself). The coordinator decides, so a login it would refuse at its first lease is refused here
    (grpc.RpcError): a name that is not the token's, or that another token owns; a token that may not label. The
    coordinator tells which identity a token names (GetTask's caller_identity).
    """
    refusal = _renews_nothing(client, name)
    if name or refusal is None:  # a name that passed, or a token that names an identity
        if refusal is not None:
            raise refusal
        if name:
            return name, name
        identity = client.identity()
        if identity:
            return identity, identity
        log.warning("the coordinator did not say which annotator a token names; its calls claim none")
        assert token is not None  # no name: checked_name let the login in for its token
        return "", derived_name(token)
    if refusal.code() != grpc.StatusCode.INVALID_ARGUMENT:  # not "annotator_id is required": a role that may not
        raise refusal
    assert token is not None  # no name (the refusal was of an empty name): checked_name let the login in for its token
    derived = derived_name(token)  # a token that names nobody
    refusal = _renews_nothing(client, derived)
    if refusal is not None:
        raise refusal
    return derived, derived


def derived_name(token: str) -> str:
    return "web-" + hashlib.sha256(token.encode()).hexdigest()[:12]


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
    limits:
        What clients may hold (Limits).
    poll:
        The long poll for a lease (`lease_async`); None: the login's client, in a worker thread.
    team:
        The team's progress for the pages' stats (web/progress.TeamProgress); None: pages show none.
    today:
        Today's date where aal-web runs ("YYYY-MM-DD"); tests pass their own. An annotator's labels today are
        those acknowledged through this aal-web since the day began (or since it started, if later).
    """

    def __init__(self, connect: Connect, *, heartbeat_seconds: float, tab_timeout: float,
                 clock: Callable[[], float] = time.monotonic, limits: Limits = Limits(), poll: Poll | None = None,
                 team: Team | None = None, today: Callable[[], str] = lambda: dt.date.today().isoformat()):
        self._connect = connect
        self._team = team
        self._today = today
        self._day = ""
        self._labels_today: dict[str, int] = {}  # annotator -> labels acknowledged today, over all their logins
        self.heartbeat_seconds = heartbeat_seconds
        self.tab_timeout = tab_timeout
        self.limits = limits
        self._poll = poll
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}

    # -- logins and tabs --------------------------------------------------------------------------------

    def login(self, token: str | None, name: str, *, client: str = "") -> Session:
        """A new session for a person at remote address `client`; the coordinator proves the token and names the
        annotator (resolve_annotator; grpc.RpcError if it refuses). Past a limit on logins, the least recently
        seen login of the same client, or else one with no page open, ends (its leases go back); AtLimit when
        every login has a page open."""
        name = checked_name(token, name)
        annotator = self._connect(token or None, name)
        try:
            task = annotator.task()
            claimed, shown = resolve_annotator(annotator, token, name)
            annotator.annotator_id = claimed
            session = Session(secrets.token_urlsafe(24), annotator, task, self._clock(), token=token or None,
                              address=client, annotator_id=shown)
            with self._lock:
                ended = self._make_room(client)
                self._sessions[session.session_id] = session
        except BaseException:
            annotator.close()
            raise
        for old, tabs in ended:
            log.info("ended the least recently seen login of %s (%s) for a new one", old.annotator_id,
                     old.address or "a client")
            self._finish(old, tabs)
        log.info("%s logged in", session.annotator_id)
        return session

    def _make_room(self, client: str) -> list[tuple[Session, list[Tab]]]:
        """Under the lock: end the logins a new one from `client` replaces (Limits)."""
        def oldest(sessions):  # logins without an open page first, then the least recently seen
            return min(sessions, key=lambda s: (bool(s.tabs), s.last_seen))

        ended = []
        mine = [s for s in self._sessions.values() if s.address == client]
        if len(mine) >= self.limits.logins_per_client:
            ended.append(self._drop(oldest(mine)))
        if len(self._sessions) >= self.limits.logins:
            idle = [s for s in self._sessions.values() if not s.tabs]
            if not idle:
                raise AtLimit("logins", f"aal-web has {len(self._sessions)} logins with pages open, the most it "
                                        "keeps; try again later")
            ended.append(self._drop(oldest(idle)))
        return ended

    def _drop(self, session: Session) -> tuple[Session, list[Tab]]:
        """Under the lock: forget `session` and close its pages; `_finish` then gives their leases back."""
        self._sessions.pop(session.session_id, None)
        tabs = list(session.tabs.values())
        for tab in tabs:
            tab.closed = True
        session.tabs.clear()
        return session, tabs

    def _finish(self, session: Session, tabs: list[Tab]) -> None:
        for tab in tabs:
            self._give_back(session, tab)
        session.client.close()

    def logout(self, session_id: str) -> None:
        with self._lock:
            session = self._sessions.get(session_id)
            ended = self._drop(session) if session else None
        if ended:
            self._finish(*ended)

    def session(self, session_id: str) -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                raise Expired("session", "this login has ended; log in again")
            session.last_seen = self._clock()
            return session

    def open_tab(self, session_id: str) -> tuple[Session, Tab]:
        """Register a page; past Limits.tabs_per_login, the login's least recently seen page closes."""
        session = self.session(session_id)
        tab = Tab(secrets.token_urlsafe(12), self._clock())
        with self._lock:
            closed = None
            if len(session.tabs) >= self.limits.tabs_per_login:
                closed = session.tabs.pop(min(session.tabs.values(), key=lambda t: t.last_seen).tab_id)
                closed.closed = True
            session.tabs[tab.tab_id] = tab
        if closed is not None:
            self._give_back(session, closed)
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
        if session is not None and tab is not None:
            self._give_back(session, tab)

    # -- queries ----------------------------------------------------------------------------------------

    def lease(self, session_id: str, tab_id: str, wait_seconds: float) -> LeasedQuery | None:
        """Lease the tab's next query, waiting up to `wait_seconds`; None if none came. AtLimit past the login's or
        the annotator's lease cap."""
        session, tab = self._reserve(session_id, tab_id)
        query = None
        try:
            query = session.client.lease(wait_seconds=wait_seconds)
        finally:
            kept = self._keep(session, tab, query)
        if not kept and query is not None:  # the page closed while this lease was on its way (kept is False only then)
            self._release_quietly(session, query)
            raise Expired("tab", "this page was closed")
        return query

    async def lease_async(self, session_id: str, tab_id: str, wait_seconds: float) -> LeasedQuery | None:
        """`lease`, as a coroutine: while it waits for a query it holds no thread (the `poll` given)."""
        session, tab = self._reserve(session_id, tab_id)
        query = None
        try:
            if self._poll is None:
                query = await asyncio.to_thread(session.client.lease, wait_seconds=wait_seconds)
            else:
                query = await self._poll(session.token, session.client.annotator_id, wait_seconds)
        finally:
            kept = self._keep(session, tab, query)
        if not kept and query is not None:
            await asyncio.to_thread(self._release_quietly, session, query)
            raise Expired("tab", "this page was closed")
        return query

    def _reserve(self, session_id: str, tab_id: str) -> tuple[Session, Tab]:
        """Count a poll against the caps before it starts: a login cannot have more polls under way than leases."""
        session, tab = self._tab(session_id, tab_id)
        with self._lock:
            held = session.held()
            if held >= self.limits.leases_per_login:
                raise AtLimit("leases", f"this login holds {held} items, the most one login may hold: label or "
                                        "skip them, or close its other pages")
            annotator = session.annotator_id
            total = sum(s.held() for s in self._sessions.values() if s.annotator_id == annotator)
            if total >= self.limits.leases_per_annotator:
                raise AtLimit("leases", f"{annotator} holds {total} items over their logins here, the most one "
                                        "annotator may hold: label or skip them, or close other pages")
            session.polls += 1
        return session, tab

    def _keep(self, session: Session, tab: Tab, query: LeasedQuery | None) -> bool:
        """The poll is over: the tab holds its lease, if any came; False if the tab closed meanwhile."""
        with self._lock:
            session.polls -= 1
            if query is None:
                return True
            if tab.closed:
                return False
            tab.leases[query.lease_id] = query
            return True

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
                self._count_today(session.annotator_id)
        return result, self.stats(session)

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
            done = exc.code() in LEASE_GONE
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
        return result, self.stats(session)

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
                if exc.code() not in LEASE_GONE:
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
        return deadlines, lost, self.stats(session)

    def stats(self, session: Session) -> dict:
        """What a page shows in its header: the session's labels, corrections and pace, the annotator's labels
        today (over all their logins here), and the team's progress when it is known."""
        with self._lock:
            stats = session.stats(self._clock())
            stats["today"] = self._labels_today.get(session.annotator_id, 0) if self._day == self._today() else 0
        team = self._team() if self._team is not None else None
        if team is not None:
            stats["team"] = team
        return stats

    def _count_today(self, annotator: str) -> None:
        """Under the lock: one more label of `annotator` today; a new day starts every count again."""
        day = self._today()
        if day != self._day:
            self._day = day
            self._labels_today.clear()
        self._labels_today[annotator] = self._labels_today.get(annotator, 0) + 1

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
                    idle.append(self._drop(session))
        for session, tab in silent:
            log.info("a page of %s went silent; giving back its %d leases", session.annotator_id, len(tab.leases))
            self._give_back(session, tab)
        for ended in idle:
            self._finish(*ended)
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

"""The PostgreSQL store: the coordinator's whole state in one database, so several coordinator replicas can
serve behind one Service (`aal-coordinator --store postgresql://...`).

The database is the only authority; a replica keeps nothing in memory but caches of immutable things
(weight blobs by version). How the invariants hold across replicas:

- leases are taken with row locks (`FOR UPDATE SKIP LOCKED`): two replicas never hand out the same query,
  and an expired lease is simply a row that may be taken again;
- a label is recorded in one transaction that locks its query row, inserts into L and deletes from S; the
  lease id is UNIQUE in L, so a retried submission is recognised on any replica, and item ids are UNIQUE in
  L, so no item is labeled twice;
- sequence numbers come from database sequences, taken by concurrent transactions that may commit out of
  order. Readers of L stop at a gap in the seqs and pass it only once every transaction that could still
  commit it has ended (`_settled_through`), so a trainer streaming L after seq n never skips a label that
  commits late, and label commits do not wait for each other;
- an offer to S holds an advisory lock exclusively, and every write that moves an item from S to L or to the
  skips holds it shared: a candidate cannot slip into S while its item is being labeled, and labels do not
  serialize on it;
- weight blobs live in the database (bytea), next to their registry row, written in the same transaction;
- every write that can end a long poll sends NOTIFY aal_events; each replica LISTENs and wakes its waiters.

It applies the pool rules of rules.py inside its transactions; the shared-database coordinator
(aal_rpc/coordinator/postgres.py) is built on its atomic operations. Its tables are made and migrated at open by
schema.py (POSTGRES), and rows are encoded and decoded by rows.py. Its two server-side functions are code, not
schema: every open replaces them with the ones this code calls.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, Literal

from aal_rpc.coordinator import corrections, rules, schema
from aal_rpc.coordinator.rounds import RoundClaim, decide
from aal_rpc.coordinator.rows import (LABEL_COLUMNS, LABEL_INSERT_COLUMNS, LATEST_ONLY, MODEL_COLUMNS, QUERY_COLUMNS,
                                      QUERY_INSERT_COLUMNS, count, label_from_row, label_row, model_from_row, model_row,
                                      query_from_row, query_row)
from aal_rpc.coordinator.tally import DEFERS_COUNTER, merge
from aal_rpc.errors import Unavailable
from aal_rpc.types import GOLD_STRATEGY, AnnotatorCounts, Candidate, LabeledRecord, Lease, ModelInfo, Task, shard_key

log = logging.getLogger(__name__)

CHANNEL = "aal_events"
CONNECTION_WAIT = 1.0  # seconds a call waits for a database connection before answering UNAVAILABLE: the
#                        channel's retries (5 attempts) then still end inside the clients' call deadlines
#                        (10 s) with a status their retry loops go on retrying, not DEADLINE_EXCEEDED
SCHEMA_LOCK = 0x4161_6C01  # advisory lock keys ("Aal" + n)
POOL_LOCK = 0x4161_6C02  # exclusive: an offer to S; shared: an item leaving S for L or the skips
ROUND_LOCK = 0x4161_6C03
IMPORT_LOCK = 0x4161_6C04  # one import batch at a time: two imports of one new item must not both append it
LEASE_LOCK = 0x4161_6C05  # with a hash of the annotator id: one lease at a time per annotator, under the lease cap

# Recording a label, server side: one statement, so one round trip and one transaction (autocommit) per label, its
# statements' plans cached per connection. Created after the migrations (CREATE OR REPLACE, under SCHEMA_LOCK), so every
# replica's database has the version its code calls. In order, as `record_label` describes: the pool lock shared
# (before the row, as offers take it), the query row locked by its lease id (this gives the transaction its id,
# asked for again to be sure, before the seq is taken: see `_settled_through`), then the move into L. The move is
# made only where the held lease passes rules.check_held: the same item, the same annotator, a deadline after now.
# The record names p_as (types.delegate_id: the holder, or a labeler it speaks for); the holder is barred from the item.
# The function returns what the rule needs to say why not otherwise (the held lease as locked), and the record of a
# submission of this lease that committed before (a retry), looked up after the row lock.
LABEL_FUNCTION = f"""
CREATE OR REPLACE FUNCTION aal_record_label(p_lease TEXT, p_item TEXT, p_label INTEGER, p_owner TEXT,
                                            p_now DOUBLE PRECISION, p_per_item INTEGER, p_as TEXT)
RETURNS TABLE (held_item TEXT, held_owner TEXT, held_deadline DOUBLE PRECISION, seq BIGINT, strategy TEXT,
               done_item TEXT)
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    h RECORD;
    more BOOLEAN;
BEGIN
    PERFORM pg_advisory_xact_lock_shared({POOL_LOCK});
    SELECT q.item_id, q.lease_owner, q.lease_deadline, pg_current_xact_id() INTO h
        FROM queries q WHERE q.lease_id = p_lease FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT NULL::text, NULL::text, NULL::float8, l.seq, l.strategy, l.item_id
            FROM labels l WHERE l.lease_id = p_lease;
    ELSIF h.item_id = p_item AND h.lease_owner = p_owner AND h.lease_deadline > p_now THEN
        -- rules.wants_another_label: short of p_per_item labels after this one, the item stays in S, never again for
        -- this annotator (a deferral without end, rules.FOREVER)
        SELECT q.labels + 1 < CASE WHEN q.strategy = '{GOLD_STRATEGY}' THEN {rules.MAX_LABELS_PER_ITEM} ELSE p_per_item END
            INTO more FROM queries q WHERE q.item_id = p_item;
        -- one statement: its parts share a snapshot, so the insert reads the row it deletes
        RETURN QUERY WITH moved AS (
                INSERT INTO labels ({{columns}})
                SELECT nextval('label_seq'), q.item_id, q.lease_id, p_label, p_as, q.queued_at, q.leased_at, p_now,
                       q.worker_id, q.strategy, q.model_version, q.score, 0, q.cluster, q.guess, q.guess_probability,
                       q.tensor, q.dtype, q.shape, q.image_png, q.text
                FROM queries q WHERE q.item_id = p_item RETURNING labels.seq, labels.strategy),
            gone AS (DELETE FROM queries WHERE item_id = p_item AND NOT more),
            undeferred AS (DELETE FROM deferrals WHERE item_id = p_item AND NOT more),
            kept AS (UPDATE queries SET lease_id = NULL, lease_owner = NULL, leased_at = NULL, lease_deadline = NULL,
                     labels = labels + 1 WHERE item_id = p_item AND more),
            barred AS (INSERT INTO deferrals (item_id, annotator_id, until)
                       SELECT p_item, p_owner, 'Infinity'::float8 WHERE more
                       ON CONFLICT (item_id, annotator_id) DO UPDATE SET until = EXCLUDED.until)
            SELECT h.item_id, h.lease_owner, h.lease_deadline, moved.seq, moved.strategy, NULL::text
            FROM moved;  -- announced after the commit (PostgresStore._announce): no NOTIFY lock across commits
        IF more THEN
            PERFORM pg_notify('{{channel}}', 'queries');
        END IF;
    ELSE
        RETURN QUERY SELECT h.item_id, h.lease_owner, h.lease_deadline, NULL::bigint, NULL::text, NULL::text;
    END IF;
END
$fn$"""

# "available": not leased, or leased past its deadline (an expired lease needs no reaper to end it)
_AVAILABLE = "(lease_id IS NULL OR lease_deadline <= %(now)s)"


def _order_by(pick: str) -> str:
    order = rules.pick_order(pick)
    return "random()" if order is rules.RANDOM else order.sql()


_QUERY_TYPES = ("item_id TEXT, worker_id TEXT, strategy TEXT, model_version BIGINT, score DOUBLE PRECISION, "
                "queued_at DOUBLE PRECISION, tensor BYTEA, dtype TEXT, shape TEXT, image_png BYTEA, lease_id TEXT, "
                "lease_owner TEXT, leased_at DOUBLE PRECISION, lease_deadline DOUBLE PRECISION, text TEXT, "
                "cluster BIGINT, guess INTEGER, guess_probability DOUBLE PRECISION")  # QUERY_COLUMNS with their types


# aal_lease_next of the release before the model's guess returns fewer columns: CREATE OR REPLACE cannot change a
# function's result, so that one is dropped first (only that one: a replica leasing meanwhile keeps the current one).
_DROP_OLD_LEASE_RESULT = """DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'aal_lease_next'
               AND pg_get_function_result(oid) NOT LIKE '%guess_probability%') THEN
        DROP FUNCTION aal_lease_next(TEXT, TEXT, DOUBLE PRECISION, DOUBLE PRECISION, BIGINT, TEXT, BOOLEAN);
    END IF;
END $$"""


def _lease_function() -> str:
    """Leasing, server side: one statement, one round trip, its own transaction (autocommit), as `lease_next`
    describes. Under a cap (p_cap > 0) it first takes the annotator's lease lock and counts the annotator's live
    leases: each statement of a function sees what committed before it began, so the count includes every lease
    taken under the lock before, and the cap holds exactly across replicas. At the cap it returns one row holding only
    that count, for rules.check_lease_cap to refuse; else the leased query's row (QUERY_COLUMNS) after its count, or
    nothing when no query is free. One branch per pick order (rules.PICK_ORDERS), each a static statement."""
    columns = ", ".join(f"q.{c}" for c in QUERY_COLUMNS.split(", "))

    def take(gold: bool, order: str) -> str:
        return f"""RETURN QUERY UPDATE queries q SET lease_id = p_lease, lease_owner = p_owner, leased_at = p_now,
            lease_deadline = p_deadline
        FROM (SELECT a.item_id FROM queries a WHERE (a.lease_id IS NULL OR a.lease_deadline <= p_now) AND NOT EXISTS
              (SELECT 1 FROM deferrals d WHERE d.item_id = a.item_id AND d.annotator_id = p_owner AND d.until > p_now)
              AND a.strategy {'=' if gold else '<>'} '{GOLD_STRATEGY}'
              ORDER BY {order} LIMIT 1 FOR UPDATE SKIP LOCKED) next
        WHERE q.item_id = next.item_id RETURNING n, {columns};"""

    branches = "\n    ELS".join(f"""IF p_pick = '{pick}' THEN
        {take(False, _order_by(pick))}""" for pick in rules.PICK_ORDERS)
    return f"""
CREATE OR REPLACE FUNCTION aal_lease_next(p_lease TEXT, p_owner TEXT, p_now DOUBLE PRECISION,
                                          p_deadline DOUBLE PRECISION, p_cap BIGINT, p_pick TEXT, p_gold BOOLEAN)
RETURNS TABLE (held BIGINT, {_QUERY_TYPES})
LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    n BIGINT := 0;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    IF p_cap > 0 THEN
        PERFORM pg_advisory_xact_lock({LEASE_LOCK}, hashtext(p_owner));
        SELECT count(*) INTO n FROM queries c WHERE c.lease_owner = p_owner AND c.lease_deadline > p_now;
        IF n >= p_cap THEN
            held := n;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;
    IF p_gold THEN  -- rules.gold_first: a gold item this annotator has not labeled, if there is one
        {take(True, "a.queued_at")}
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    {branches}
    END IF;
END
$fn$"""


def _import_psycopg():
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("the PostgreSQL store needs psycopg: pip install 'aal-rpc[postgres]'") from exc
    return psycopg, psycopg_pool


def redacted(url: str) -> str:
    """A database URL without its password, for logs and messages."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _committed(write: Callable[[], Any]) -> Future:
    """Run a write now; a future like the SQLite store's: resolved once committed, or failed with its error."""
    fut: Future = Future()
    try:
        fut.set_result(write())
    except Exception as exc:
        fut.set_exception(exc)
    return fut


@dataclass(frozen=True)
class PoolCounts:
    labeled: int
    queued: int
    leased: int
    skipped: int
    last_seq: int
    candidates_submitted: int
    candidates_evicted: int
    labels_by_strategy: dict[str, int]
    latest_model_version: int
    models: int
    annotators: dict[str, AnnotatorCounts]


class PostgresStore:
    def __init__(self, url: str, *, pool_size: int = 16, connect_timeout: float = 30.0):
        psycopg, psycopg_pool = _import_psycopg()
        self._psycopg = psycopg
        # the database is down or unreachable, or aborted the transaction to break a deadlock (a lease expiring
        # just as its label commits while a worker's refresh deletes the row): all worth retrying
        self._lost = (psycopg.OperationalError, psycopg_pool.PoolTimeout)
        self.url = url
        # Autocommit connections: a one-statement operation is its own transaction (one round trip, where BEGIN and
        # COMMIT would add two); operations of several statements open one explicitly (`_tx`).
        self._pool = psycopg_pool.ConnectionPool(url, min_size=1, max_size=pool_size, timeout=CONNECTION_WAIT,
                                                 kwargs={"autocommit": True}, open=False)
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise ConnectionError(f"could not connect to the database {redacted(url)} within {connect_timeout:g} s"
                                  ) from exc
        try:
            with self._tx() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))  # replicas starting together
                schema.migrate_postgres(cur, redacted(url))  # first: a database of a newer aal_rpc is left as it is
                # the functions of older releases (a changed signature or result is a new function)
                cur.execute("DROP FUNCTION IF EXISTS aal_record_label(TEXT, TEXT, INTEGER, TEXT, DOUBLE PRECISION)")
                cur.execute("DROP FUNCTION IF EXISTS aal_record_label(TEXT, TEXT, INTEGER, TEXT, DOUBLE PRECISION, "
                            "INTEGER)")
                cur.execute(_DROP_OLD_LEASE_RESULT)
                cur.execute("DROP FUNCTION IF EXISTS aal_lease_next(TEXT, TEXT, DOUBLE PRECISION, DOUBLE PRECISION, "
                            "BIGINT, TEXT)")
                cur.execute(LABEL_FUNCTION.format(columns=LABEL_INSERT_COLUMNS, channel=CHANNEL))
                cur.execute(_lease_function())
        except BaseException:
            self._pool.close()
            raise
        self._gaps: dict[int, list[str]] = {}  # seq -> ids of the transactions in progress when its gap was seen
        self._holes: set[int] = set()  # seqs known never to commit (their transaction failed): one per failure
        self._gaps_lock = threading.Lock()
        self._listeners: list[Callable[[str], None]] = []
        self._closed = threading.Event()
        self._listener = threading.Thread(target=self._listen_loop, name="pg-listen", daemon=True)
        self._listener.start()
        self._announcing: set[str] = set()  # kinds to NOTIFY once more (`_announce`)
        self._announce_ready = threading.Condition()
        self._announcer = threading.Thread(target=self._announce_loop, name="pg-announce", daemon=True)
        self._announcer.start()

    # -- connections, notifications ---------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """A cursor in one transaction: committed when the block ends, rolled back if it raises. Losing the
        database becomes Unavailable (UNAVAILABLE, which clients retry); a write whose commit was cut off is
        recognised when retried (lease ids are unique in L)."""
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield cur

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """A pooled connection in autocommit mode (each statement outside a transaction block commits on its own),
        back in the pool when the block ends, an open transaction rolled back if it raises. Losing the database
        becomes Unavailable."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except self._lost as exc:
            raise Unavailable(f"the database is unavailable or aborted the transaction, retry: "
                              f"{str(exc).strip()[:200]}") from exc

    def on_event(self, callback: Callable[[str], None]) -> None:
        """Call `callback(kind)` whenever any replica changes S ("queries"), L ("labels") or the registry
        ("models"); "*" after the listening connection was re-established (anything may have changed)."""
        self._listeners.append(callback)

    def _notify(self, cur, kind: str) -> None:
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, kind))  # delivered when the transaction commits

    def _announce(self, kind: str) -> None:
        """NOTIFY the replicas of a change already committed, from one thread, many changes in one NOTIFY. A NOTIFY
        in a label's own transaction takes PostgreSQL's notification queue lock at commit and holds it through the
        WAL flush, so concurrent labels committed one at a time, waiting on Lock:object (announced after, they share
        WAL flushes: docs/PERFORMANCE.md, figure 8). A replica that dies between a commit and its NOTIFY
        leaves the others to their safety net, as one that dies mid-write does (`_labels_tx`)."""
        with self._announce_ready:
            self._announcing.add(kind)
            self._announce_ready.notify()

    def _announce_loop(self) -> None:
        while not self._closed.is_set():
            with self._announce_ready:
                while not self._announcing and not self._closed.is_set():
                    self._announce_ready.wait()
                kinds, self._announcing = self._announcing, set()
            for kind in sorted(kinds):
                try:
                    self._execute("SELECT pg_notify(%s, %s)", (CHANNEL, kind))
                except Exception:  # noqa: BLE001 - the database is gone: the listeners re-read everything ("*")
                    log.debug("could not announce %s", kind, exc_info=True)

    def _dispatch(self, kind: str) -> None:
        for callback in self._listeners:
            callback(kind)

    def _listen_loop(self) -> None:
        while not self._closed.is_set():
            try:
                with self._psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._dispatch("*")
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._dispatch(note.payload)
            except self._psycopg.Error as exc:
                if self._closed.is_set():
                    return
                log.warning("notification connection lost (%s); reconnecting", exc)
                self._closed.wait(1.0)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        with self._announce_ready:
            self._announce_ready.notify()
        self._announcer.join(timeout=3)
        self._listener.join(timeout=3)
        self._pool.close()

    # -- task, blobs, reads ----------------------------------------------------------------------------------

    def save_task(self, task: Task) -> Future:
        return _committed(lambda: self._execute(
            "INSERT INTO meta (key, value) VALUES ('task', %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (task.to_json(),)))

    def _execute(self, sql: str, args: tuple = ()) -> None:
        """One statement, its own transaction (autocommit): one round trip."""
        with self._connection() as conn:
            conn.execute(sql, args)

    def _write_candidates(self, cur, rows: list[tuple[Candidate, float]], evicted: list[str]) -> None:
        if evicted:
            cur.execute("DELETE FROM queries WHERE item_id = ANY(%s)", (evicted,))
        if rows:
            cur.execute("DELETE FROM queries WHERE item_id = ANY(%s)", ([c.item_id for c, _ in rows],))
            cur.executemany(
                f"INSERT INTO queries (shard_key, {QUERY_INSERT_COLUMNS}) "
                f"VALUES ({','.join(['%s'] * (1 + count(QUERY_INSERT_COLUMNS)))})",
                [(shard_key(c.item_id), *query_row(c, queued_at)) for c, queued_at in rows])
            self._notify(cur, "queries")

    @staticmethod
    def _skip(cur, item_id: str, annotator_id: str, at: float) -> None:
        cur.execute("DELETE FROM queries WHERE item_id = %s", (item_id,))
        cur.execute("DELETE FROM deferrals WHERE item_id = %s", (item_id,))
        cur.execute("INSERT INTO skips (item_id, shard_key, annotator_id, at) VALUES (%s,%s,%s,%s) "
                    "ON CONFLICT DO NOTHING", (item_id, shard_key(item_id), annotator_id, at))

    def _insert_model(self, cur, m: ModelInfo) -> None:
        cur.execute(f"INSERT INTO models ({MODEL_COLUMNS}) VALUES ({','.join(['%s'] * 10)})", model_row(m))
        self._notify(cur, "models")

    @contextmanager
    def upload_file(self) -> Iterator[IO[bytes]]:
        """A temporary file for an upload to stream into (the blob goes into the database once checked)."""
        with tempfile.NamedTemporaryFile(prefix="aal-upload-", suffix=".tmp") as f:
            yield f

    def read_blob(self, version: int) -> bytes | None:
        with self._tx() as cur:
            cur.execute("SELECT data FROM model_blobs WHERE version = %s", (version,), binary=True)
            row = cur.fetchone()
        return bytes(row[0]) if row else None

    def load_task(self, cur=None) -> Task | None:
        if cur is None:
            with self._tx() as cur:
                return self.load_task(cur)
        cur.execute("SELECT value FROM meta WHERE key = 'task'")
        row = cur.fetchone()
        return Task.from_json(row[0]) if row else None

    def latest_label(self, item_id: str, cur=None, *, by: str | None = None) -> LabeledRecord | None:
        if cur is None:
            with self._tx() as cur:
                return self.latest_label(item_id, cur, by=by)
        cur.execute(f"SELECT {LABEL_INSERT_COLUMNS} FROM labels WHERE item_id = %s "
                    f"{'' if by is None else 'AND annotator_id = %s ' + LATEST_ONLY} ORDER BY seq DESC LIMIT 1",
                    (item_id,) if by is None else (item_id, by), binary=True)
        row = cur.fetchone()
        return label_from_row(row, include_payload=True) if row else None

    # -- L, read by followers ------------------------------------------------------------------------------------

    def read_labels(self, after_seq: int, limit: int, *, include_payload: bool = True,
                    latest_only: bool = False) -> list[LabeledRecord]:
        """Committed records of L after `after_seq` in seq order, up to `limit`, never past a seq that an open
        transaction may still commit (`_settled_through`). Fewer than `limit` means none more are settled now,
        also with `latest_only` (which leaves out records a correction superseded)."""
        cols = LABEL_INSERT_COLUMNS if include_payload else LABEL_COLUMNS
        out: list[LabeledRecord] = []
        cursor = after_seq
        with self._tx() as cur:
            while len(out) < limit:
                through, more = self._settled_through(cur, cursor, limit)
                if through <= cursor:
                    break
                want = limit - len(out)
                cur.execute(f"SELECT {cols} FROM labels WHERE seq > %s AND seq <= %s "
                            f"{LATEST_ONLY if latest_only else ''} ORDER BY seq LIMIT %s", (cursor, through, want),
                            binary=include_payload)
                rows = cur.fetchall()
                out.extend(label_from_row(r, include_payload=include_payload) for r in rows)
                if len(rows) == want or not more:
                    break
                cursor = through
        return out

    def label_ids_after(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        """(seq, item_id) of settled records after `after_seq`, in seq order, at most `limit`."""
        with self._tx() as cur:
            through, _ = self._settled_through(cur, after_seq, limit)
            cur.execute("SELECT seq, item_id FROM labels WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
                        (after_seq, through, limit))
            return [(r[0], r[1]) for r in cur.fetchall()]

    def _settled_through(self, cur, after_seq: int, limit: int) -> tuple[int, bool]:
        """The highest seq s such that every seq in (after_seq, s] is settled: committed, or known never to commit;
        and whether it stopped only because it looked at `limit` seqs (more may be settled beyond).

        Why a gap can be passed: a transaction that records a label takes its transaction id before it takes a
        seq (`_take_seq`, `_locked_lease`, LABEL_FUNCTION). Say a statement's snapshot sees seq h committed but not
        g < h. The holder of g took g, so its id, before h was taken, so before h's transaction committed, so before
        that snapshot: it is in the snapshot's in-progress list or ended before it; ended and committed would make g
        visible. So once every id in the in-progress list of the first snapshot that showed the gap has ended, g is
        visible to any later statement or never will be. Ids are remembered per gap (`_gaps`), so passing a gap never waits for
        transactions that began after it was seen; passed gaps are remembered too (`_holes`).
        """
        cur.execute("SELECT ARRAY(SELECT seq FROM labels WHERE seq > %s ORDER BY seq LIMIT %s), "
                    "ARRAY(SELECT x::text FROM pg_snapshot_xip(pg_current_snapshot()) x)", (after_seq, limit))
        seqs, in_progress = cur.fetchone()
        through, i = after_seq, 0
        while i < len(seqs):
            if seqs[i] == through + 1 or through + 1 in self._holes:
                through += 1
                i += seqs[i] == through
                continue
            gap = through + 1
            with self._gaps_lock:
                holders = self._gaps.setdefault(gap, in_progress)
            if holders:
                cur.execute("SELECT bool_or(pg_xact_status(x::xid8) = 'in progress') FROM unnest(%s::text[]) x",
                            (holders,))
                if cur.fetchone()[0]:
                    return through, False
            cur.execute("SELECT EXISTS (SELECT 1 FROM labels WHERE seq = %s)", (gap,))  # a statement after they ended
            committed = cur.fetchone()[0]
            with self._gaps_lock:
                self._gaps.pop(gap, None)
                if not committed:
                    self._holes.add(gap)
            if committed:  # it committed after our first look: read again from here
                cur.execute("SELECT ARRAY(SELECT seq FROM labels WHERE seq > %s ORDER BY seq LIMIT %s), "
                            "ARRAY(SELECT x::text FROM pg_snapshot_xip(pg_current_snapshot()) x)", (through, limit))
                seqs, in_progress = cur.fetchone()
                i = 0
        return through, len(seqs) == limit and i == len(seqs)

    def _take_seq(self, cur) -> int:
        """The next label seq, taken after this transaction has its id (see `_settled_through`)."""
        cur.execute("SELECT pg_current_xact_id()")
        cur.execute("SELECT nextval('label_seq')")
        return cur.fetchone()[0]

    @contextmanager
    def _labels_tx(self, tx: Callable[[], Any] | None = None) -> Iterator[Any]:
        """`_tx` (or another of its kind: `_connection`) for a write that may take a label seq. If it fails,
        followers waiting at the gap it leaves hear of it ("labels"), as they hear of a commit; a replica that dies
        mid-write leaves that to their safety net."""
        try:
            with (tx or self._tx)() as cur:
                yield cur
        except BaseException:
            try:
                self._execute("SELECT pg_notify(%s, 'labels')", (CHANNEL,))
            except Exception:  # noqa: BLE001 - the database is gone; the failure the caller sees says so
                pass
            raise

    # -- atomic pool operations for the shared-database coordinator --------------------------------------------

    def lease_next(self, annotator_id: str, now: float, lease_seconds: float, pick: str, cap: int = 0,
                   gold: bool = False) -> tuple[Candidate, float, Lease] | None:
        """Lease the next available query in pick order (rules.PICK_ORDERS) that `annotator_id` did not defer;
        None when none is free. Rows other replicas are leasing right now are skipped, not waited for. With `cap`
        (> 0), ResourceExhausted when the annotator already holds that many live leases (rules.check_lease_cap).

        One statement (aal_lease_next, `_lease_function`), its own transaction (autocommit): one round trip. A lease
        need not wait for the disk, as in the embedded store: one lost in a crash only means the query is available
        again and its label is refused (FAILED_PRECONDITION) until leased anew."""
        lease = Lease(uuid.uuid4().hex, annotator_id, now, now + lease_seconds)
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM aal_lease_next(%s, %s, %s, %s, %s, %s, %s)",
                        (lease.lease_id, annotator_id, now, lease.deadline, max(0, cap), pick, gold), binary=True)
            row = cur.fetchone()
        if row is None:
            return None
        if row[1] is None:  # at the cap: only the count came back
            rules.check_lease_cap(annotator_id, row[0], cap)
            raise AssertionError(f"aal_lease_next refused annotator {annotator_id!r} with {row[0]} leases, which "
                                 f"rules.check_lease_cap allows under the cap {cap}: the two disagree")
        cand, queued_at, _ = query_from_row(row[1:])
        return cand, queued_at, lease

    @staticmethod
    def _locked_lease(cur, lease_id: str) -> rules.Held | None:
        """The query held under `lease_id`, row-locked until the transaction ends. The transaction has its id
        from here on (a row lock needs one; asking for it makes sure), as `_settled_through` needs of a seq taker."""
        cur.execute("SELECT item_id, lease_owner, lease_deadline, pg_current_xact_id() FROM queries "
                    "WHERE lease_id = %s FOR UPDATE", (lease_id,))
        row = cur.fetchone()
        return rules.Held(*row[:3]) if row else None

    def _check(self, cur, held: rules.Held | None, *, lease_id: str, item_id: str, annotator_id: str,
               now: float) -> None:
        rules.check_held(held, lease_id=lease_id, item_id=item_id, annotator_id=annotator_id, now=now,
                         item_known=lambda: self._item_known(cur, item_id))

    def _check_held(self, cur, *, lease_id: str, item_id: str, annotator_id: str, now: float) -> None:
        self._check(cur, self._locked_lease(cur, lease_id), lease_id=lease_id, item_id=item_id,
                    annotator_id=annotator_id, now=now)

    @staticmethod
    def _item_known(cur, item_id: str) -> bool:
        cur.execute("SELECT EXISTS (SELECT 1 FROM queries WHERE item_id = %(i)s) OR EXISTS (SELECT 1 FROM labels "
                    "WHERE item_id = %(i)s) OR EXISTS (SELECT 1 FROM skips WHERE item_id = %(i)s)", {"i": item_id})
        return cur.fetchone()[0]

    def record_label(self, *, lease_id: str, item_id: str, label: int, annotator_id: str, now: float,
                     labels_per_item: int = 1, recorded_as: str = "") -> tuple[int, bool, str]:
        """Move a leased query, held by `annotator_id`, into L as a label of `recorded_as` (default: the holder) in one
        transaction (or, while it wants another label, copy it there and keep it in S: rules.wants_another_label);
        returns (seq, duplicate, strategy). A retry of a submission already recorded (on any replica) returns its seq
        with duplicate=True.

        One statement (aal_record_label, LABEL_FUNCTION), its own transaction: it returns once committed, and the
        commit waited for the disk (synchronous_commit is on for labels). It moves the query only for a lease that
        rules.check_held accepts; otherwise it changed nothing and rules.check_held says why."""
        recorded: tuple[int, bool, str] | None = None
        with self._labels_tx(self._connection) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM aal_record_label(%s, %s, %s, %s, %s, %s, %s)",
                        (lease_id, item_id, label, annotator_id, now, labels_per_item, recorded_as or annotator_id))
            row = cur.fetchone()
            if row is not None and row[3] is not None:
                if row[0] is None:  # no held lease, but a submission of this lease committed before: a retry
                    cur.execute("SELECT seq, item_id, label, annotator_id FROM labels WHERE lease_id = %s",
                                (lease_id,))
                    rules.check_retry(rules.Recorded(*cur.fetchone()), lease_id=lease_id, item_id=item_id,
                                      label=label, annotator_id=recorded_as or annotator_id)
                    return row[3], True, row[4]
                recorded = row[3], False, row[4]
            else:
                held = rules.Held(*row[:3]) if row is not None else None
                self._check(cur, held, lease_id=lease_id, item_id=item_id, annotator_id=annotator_id, now=now)
        if recorded is None:
            raise AssertionError(f"aal_record_label refused lease {lease_id}, which rules.check_held accepts: "
                                 "the function and the rule disagree")
        self._announce("labels")
        return recorded

    def record_correction(self, *, item_id: str, label: int, annotator_id: str, is_admin: bool, now: float,
                          delegator: str = "") -> tuple[int, int, bool]:
        """Append a correction of an item's current label in one transaction; returns (seq, supersedes,
        duplicate). The rule (who may correct, what is a retry) is corrections.decide."""
        with self._labels_tx() as cur:
            # one correction of an item at a time: each supersedes the item's latest record
            cur.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (item_id,))
            latest = corrections.target(lambda by: self.latest_label(item_id, cur, by=by), annotator_id=annotator_id,
                                        is_admin=is_admin)
            duplicate = not corrections.decide(latest, item_id=item_id, label=label, annotator_id=annotator_id,
                                               is_admin=is_admin, delegator=delegator)
            assert latest is not None  # decide raised NotFound
            if duplicate:
                return latest.seq, latest.supersedes, True
            record = corrections.record(latest, seq=self._take_seq(cur), label=label, annotator_id=annotator_id,
                                        now=now)
            cur.execute(f"INSERT INTO labels ({LABEL_INSERT_COLUMNS}) "
                        f"VALUES ({','.join(['%s'] * count(LABEL_INSERT_COLUMNS))})",
                        label_row(record))
            self._notify(cur, "labels")
        return record.seq, record.supersedes, False

    def import_records(self, records: list[LabeledRecord]) -> list[LabeledRecord]:
        """Append imported records to L in one transaction, each with a new seq, and take their items out of S (a
        lease on one ends with it). A record whose item is in L or skipped, or repeats an earlier record's item, is
        left out. Returns the records appended, with their seqs."""
        ids = list(dict.fromkeys(r.item_id for r in records))
        with self._labels_tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", (POOL_LOCK,))  # no offer slips an item into S
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (IMPORT_LOCK,))
            # the items' rows of S locked before L is read: a label being recorded for one commits first, or waits
            # and then finds its lease ended
            cur.execute("SELECT item_id FROM queries WHERE item_id = ANY(%s) ORDER BY item_id FOR UPDATE", (ids,))
            cur.execute("SELECT item_id FROM labels WHERE item_id = ANY(%(ids)s) UNION "
                        "SELECT item_id FROM skips WHERE item_id = ANY(%(ids)s)", {"ids": ids})
            taken = {r[0] for r in cur.fetchall()}
            new: list[LabeledRecord] = []
            for r in records:
                if r.item_id not in taken:
                    taken.add(r.item_id)
                    new.append(r)
            if not new:
                return []
            cur.execute("SELECT pg_current_xact_id()")  # before the seqs are taken (see `_settled_through`)
            cur.execute("SELECT nextval('label_seq') FROM generate_series(1, %s)", (len(new),))
            new = [dataclasses.replace(r, seq=seq) for r, seq in zip(new, sorted(row[0] for row in cur.fetchall()))]
            cur.executemany(f"INSERT INTO labels ({LABEL_INSERT_COLUMNS}) "
                            f"VALUES ({','.join(['%s'] * count(LABEL_INSERT_COLUMNS))})",
                            [label_row(r) for r in new])
            new_ids = [r.item_id for r in new]
            cur.execute("DELETE FROM queries WHERE item_id = ANY(%s)", (new_ids,))
            cur.execute("DELETE FROM deferrals WHERE item_id = ANY(%s)", (new_ids,))
            self._notify(cur, "labels")
        return new

    def renew_lease(self, *, lease_id: str, item_id: str, annotator_id: str, lease_seconds: float, now: float
                    ) -> float:
        """Extend a held lease to now + lease_seconds; returns the new deadline."""
        with self._tx() as cur:
            self._check_held(cur, lease_id=lease_id, item_id=item_id, annotator_id=annotator_id, now=now)
            cur.execute("UPDATE queries SET lease_deadline = %s WHERE lease_id = %s", (now + lease_seconds, lease_id))
        return now + lease_seconds

    def find_item(self, item_id: str, now: float
                  ) -> tuple[Candidate, Lease | None] | LabeledRecord | Literal["skipped"] | None:
        """Where an item is: (candidate, live lease or None) in S, its current record in L, "skipped", or None."""
        with self._tx() as cur:
            cur.execute(f"SELECT {QUERY_COLUMNS} FROM queries WHERE item_id = %s", (item_id,), binary=True)
            row = cur.fetchone()
            if row is not None:
                cand, _, lease = query_from_row(row)
                return cand, lease if lease is not None and lease.deadline > now else None
            latest = self.latest_label(item_id, cur)
            if latest is not None:
                return latest
            cur.execute("SELECT 1 FROM skips WHERE item_id = %s", (item_id,))
            return "skipped" if cur.fetchone() else None

    def release_lease(self, *, lease_id: str, item_id: str, annotator_id: str, skip: bool, now: float,
                      defer_until: float = 0.0) -> None:
        """End a lease: back to S (with `defer_until`, not for this annotator before then), or skip the item."""
        with self._tx() as cur:
            if skip:
                cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", (POOL_LOCK,))
            self._check_held(cur, lease_id=lease_id, item_id=item_id, annotator_id=annotator_id, now=now)
            if skip:
                self._skip(cur, item_id, annotator_id, now)
            else:
                cur.execute("UPDATE queries SET lease_id = NULL, lease_owner = NULL, leased_at = NULL, "
                            "lease_deadline = NULL WHERE item_id = %s", (item_id,))
                if defer_until:
                    cur.execute("INSERT INTO counters (name, value) VALUES (%s, 1) ON CONFLICT (name) DO UPDATE "
                                "SET value = counters.value + 1", (DEFERS_COUNTER + annotator_id,))
                    # ended deferrals are forgotten (any item's: an evicted item's too), and an item keeps the
                    # rules.MAX_DEFERRALS_PER_ITEM ending last, as the embedded pool does
                    cur.execute("DELETE FROM deferrals WHERE until <= %s", (now,))
                    cur.execute("INSERT INTO deferrals (item_id, annotator_id, until) VALUES (%s, %s, %s) "
                                "ON CONFLICT (item_id, annotator_id) DO UPDATE SET until = EXCLUDED.until",
                                (item_id, annotator_id, defer_until))
                    cur.execute("DELETE FROM deferrals WHERE item_id = %(item)s AND annotator_id IN (SELECT "
                                "annotator_id FROM deferrals WHERE item_id = %(item)s ORDER BY until DESC "
                                "OFFSET %(keep)s)",
                                {"item": item_id, "keep": rules.MAX_DEFERRALS_PER_ITEM})
                self._notify(cur, "queries")

    def offer(self, candidates: list[Candidate], *, now: float, capacity: int, max_labels: int = 1
              ) -> rules.OfferPlan:
        """Apply rules.plan_offer to a worker's batch in one transaction; returns the plan it applied. An item put
        back for one more label (`max_labels`: adaptive re-labeling) counts its labels, and its annotators are
        barred from it for good, as after any of their labels."""
        ids = [c.item_id for c in candidates]
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (POOL_LOCK,))
            cur.execute("SELECT item_id FROM skips WHERE item_id = ANY(%(ids)s)", {"ids": ids})
            skipped = {r[0] for r in cur.fetchall()}
            cur.execute("SELECT item_id, annotator_id FROM labels WHERE item_id = ANY(%(ids)s) AND supersedes = 0 "
                        "ORDER BY seq", {"ids": ids})
            labelers: dict[str, tuple[str, ...]] = {}
            for item_id, annotator_id in cur.fetchall():
                labelers[item_id] = (*labelers.get(item_id, ()), annotator_id)
            taken = skipped | set(labelers)
            cur.execute(f"SELECT item_id, model_version, NOT {_AVAILABLE} FROM queries WHERE item_id = ANY(%(ids)s)",
                        {"ids": ids, "now": now})
            queued = {r[0]: rules.Queued(r[1], r[2]) for r in cur.fetchall()}
            cur.execute("SELECT COUNT(*) FROM queries")
            size = cur.fetchone()[0]

            def stalest(n: int, exclude: set[str]) -> list[tuple[int, str]]:
                cur.execute(f"SELECT model_version, item_id FROM queries WHERE {_AVAILABLE} AND {rules.EVICTABLE_SQL} AND NOT "
                            f"item_id = ANY(%(exclude)s) ORDER BY {rules.STALEST.sql()} LIMIT %(n)s",
                            {"now": now, "exclude": list(exclude), "n": n})
                return [(v, i) for v, i in cur.fetchall()]

            plan = rules.plan_offer(candidates, taken=taken.__contains__, queued=queued, size=size,
                                    capacity=capacity, stalest=stalest, max_labels=max_labels,
                                    labelers=lambda i: None if i in skipped else labelers.get(i))
            self._write_candidates(cur, [(c, now) for c in plan.put], plan.evicted)
            for item_id, who in plan.relabeled.items():
                cur.execute("UPDATE queries SET labels = %s WHERE item_id = %s", (len(who), item_id))
                cur.executemany("INSERT INTO deferrals (item_id, annotator_id, until) VALUES (%s, %s, 'Infinity') "
                                "ON CONFLICT (item_id, annotator_id) DO UPDATE SET until = EXCLUDED.until",
                                [(item_id, a) for a in who])
            cur.execute("UPDATE counters SET value = value + CASE name WHEN 'candidates_submitted' THEN %s "
                        "ELSE %s END WHERE name IN ('candidates_submitted', 'candidates_evicted')",
                        (len(candidates), len(plan.evicted)))
        return plan

    def count_at_least(self, version: int) -> int:
        with self._tx() as cur:
            cur.execute("SELECT COUNT(*) FROM queries WHERE model_version >= %s", (version,))
            return cur.fetchone()[0]

    def shard_items(self, shard_index: int, num_shards: int) -> tuple[list[str], list[str]]:
        """Queued and skipped item ids of one shard."""
        with self._tx() as cur:
            cur.execute("SELECT item_id FROM queries WHERE shard_key %% %s = %s", (num_shards, shard_index))
            queued = [r[0] for r in cur.fetchall()]
            cur.execute("SELECT item_id FROM skips WHERE shard_key %% %s = %s", (num_shards, shard_index))
            return queued, [r[0] for r in cur.fetchall()]

    def counts(self, now: float) -> PoolCounts:
        with self._tx() as cur:
            cur.execute("SELECT COUNT(DISTINCT item_id) FILTER (WHERE supersedes = 0), COALESCE(MAX(seq), 0) FROM labels")
            labeled, last_seq = cur.fetchone()
            cur.execute(f"SELECT COUNT(*) FILTER (WHERE {_AVAILABLE}), COUNT(*) FILTER (WHERE NOT {_AVAILABLE}) "
                        "FROM queries", {"now": now})
            queued, leased = cur.fetchone()
            cur.execute("SELECT COUNT(*) FROM skips")
            skipped = cur.fetchone()[0]
            cur.execute("SELECT name, value FROM counters")
            counters = dict(cur.fetchall())
            cur.execute("SELECT strategy, COUNT(*) FROM labels WHERE supersedes = 0 GROUP BY strategy")
            by_strategy = {s or "unknown": n for s, n in cur.fetchall()}
            cur.execute("SELECT annotator_id, COUNT(*) FROM labels WHERE supersedes = 0 GROUP BY annotator_id")
            labels_by_annotator = dict(cur.fetchall())
            cur.execute("SELECT annotator_id, COUNT(*) FROM skips GROUP BY annotator_id")
            skips_by_annotator = dict(cur.fetchall())
            cur.execute("SELECT (SELECT version FROM models ORDER BY num_labels DESC, version DESC LIMIT 1), "
                        "(SELECT COUNT(*) FROM models)")
            latest, models = cur.fetchone()
        defers = {name[len(DEFERS_COUNTER):]: n for name, n in counters.items() if name.startswith(DEFERS_COUNTER)}
        return PoolCounts(labeled, queued, leased, skipped, last_seq, counters["candidates_submitted"],
                          counters["candidates_evicted"], by_strategy, latest or 0, models,
                          merge(labels_by_annotator, skips_by_annotator, defers))

    def last_seq(self) -> int:
        with self._tx() as cur:
            cur.execute("SELECT COALESCE(MAX(seq), 0) FROM labels")
            return cur.fetchone()[0]

    # -- the shared registry ------------------------------------------------------------------------------

    def publish_model(self, info: ModelInfo, data: bytes, *, keep: int) -> ModelInfo:
        """Give `info` the next version from the database, store it with its blob, and prune blobs beyond the
        newest `keep` (never the latest model's). Returns the stored entry."""
        with self._tx() as cur:
            cur.execute("SELECT nextval('model_version_seq')")
            version = cur.fetchone()[0]
            stored = dataclasses.replace(info, version=version, created_at=time.time())
            self._insert_model(cur, stored)
            cur.execute("INSERT INTO model_blobs (version, data) VALUES (%s, %s)", (version, data))
            cur.execute("DELETE FROM rounds WHERE server_id = %s", (info.server_id,))  # its round is over
            cur.execute("SELECT version FROM models ORDER BY num_labels DESC, version DESC LIMIT 1")
            latest = cur.fetchone()[0]
            cur.execute("SELECT version FROM models WHERE blob_available ORDER BY version DESC OFFSET %s", (keep,))
            prune = [v for (v,) in cur.fetchall() if v != latest]
            if prune:
                cur.execute("DELETE FROM model_blobs WHERE version = ANY(%s)", (prune,))
                cur.execute("UPDATE models SET blob_available = FALSE WHERE version = ANY(%s)", (prune,))
        return stored

    def begin_round(self, *, server_id: str, num_labels: int, round_seconds: float) -> tuple[float, str]:
        """rounds.decide over every replica's claims, on the database's clock; a granted claim is recorded."""
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (ROUND_LOCK,))
            cur.execute("SELECT extract(epoch FROM clock_timestamp())::float8, "
                        "(SELECT COALESCE(MAX(num_labels), 0) FROM models)")
            now, published = cur.fetchone()
            cur.execute("SELECT server_id, num_labels, started, round_seconds FROM rounds")
            claims = [RoundClaim(*row) for row in cur.fetchall()]
            wait, why = decide(claims, server_id=server_id, num_labels=num_labels, round_seconds=round_seconds,
                               published_labels=published, now=now)
            if wait == 0:
                cur.execute("INSERT INTO rounds (server_id, num_labels, started, round_seconds) "
                            "VALUES (%s, %s, %s, %s) ON CONFLICT (server_id) DO UPDATE SET "
                            "num_labels = EXCLUDED.num_labels, started = EXCLUDED.started, "
                            "round_seconds = EXCLUDED.round_seconds", (server_id, num_labels, now, round_seconds))
                expired = [c.server_id for c in claims if not c.live(now)]
                if expired:
                    cur.execute("DELETE FROM rounds WHERE server_id = ANY(%s)", (expired,))
        return wait, why

    def latest_model(self) -> ModelInfo | None:
        with self._tx() as cur:
            cur.execute(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY num_labels DESC, version DESC LIMIT 1")
            row = cur.fetchone()
        return model_from_row(row) if row else None

    def get_model(self, version: int) -> ModelInfo | None:
        with self._tx() as cur:
            cur.execute(f"SELECT {MODEL_COLUMNS} FROM models WHERE version = %s", (version,))
            row = cur.fetchone()
        return model_from_row(row) if row else None

    def list_models(self) -> list[ModelInfo]:
        with self._tx() as cur:
            cur.execute(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY version")
            return [model_from_row(r) for r in cur.fetchall()]


"""Durable state of the coordinator: SQLite in WAL mode under --data-dir, weight blobs as files beside it.

All writes go through one writer thread that commits whatever has queued up in a single transaction
(group commit): many concurrent label submissions share one fsync, and each caller's future resolves
only after the commit holding its write is on disk. Reads use per-thread connections, which in WAL
mode see only committed data and never block the writer. Its tables are made and migrated at open by
schema.py (SQLITE); rows are encoded and decoded by rows.py.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from aal_rpc.coordinator import schema
from aal_rpc.coordinator.layout import UPLOAD_PREFIX, UPLOAD_SUFFIX, DataDir
from aal_rpc.coordinator.rows import (LABEL_COLUMNS, LABEL_INSERT_COLUMNS, LATEST_ONLY, MODEL_COLUMNS, QUERY_COLUMNS,
                                      QUERY_INSERT_COLUMNS, count, label_from_row, label_row, model_from_row, model_row,
                                      query_from_row, query_row)
from aal_rpc.types import Candidate, LabeledRecord, Lease, ModelInfo, Task

log = logging.getLogger(__name__)

MAX_GROUP = 2048  # writes per transaction; bounds the latency one commit adds to the first writer


@dataclass
class StoredState:
    """Everything the coordinator rebuilds its memory from after a restart."""

    task: Task | None = None
    labeled_item_ids: list[str] = field(default_factory=list)
    labels_by_strategy: dict[str, int] = field(default_factory=dict)
    last_seq: int = 0
    queries: list[tuple[Candidate, float, Lease | None]] = field(default_factory=list)
    labelers: dict[str, list[str]] = field(default_factory=dict)  # item in S -> who gave its labels so far
    skips: list[str] = field(default_factory=list)
    labels_by_annotator: dict[str, int] = field(default_factory=dict)  # first labels (supersedes 0)
    skips_by_annotator: dict[str, int] = field(default_factory=dict)
    models: list[ModelInfo] = field(default_factory=list)


class SqliteStore:
    def __init__(self, data_dir: Path):
        self.layout = DataDir(data_dir)
        self.data_dir = self.layout.root
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.layout.database
        conn = self._connect()
        try:
            schema.migrate_sqlite(conn, str(self.path))  # first: a database of a newer aal_rpc is left as it is
        finally:
            conn.close()
        self.blob_dir = self.layout.models
        self.blob_dir.mkdir(exist_ok=True)
        for tmp in self.layout.partial_uploads():  # partial uploads of a crashed run
            tmp.unlink(missing_ok=True)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()

    # -- connections -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk before it returns
        return conn

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    # -- the writer ---------------------------------------------------------------------------------

    def submit(self, op: Callable[[sqlite3.Connection], Any]) -> Future:
        """Queue a write; the future resolves once the transaction holding it has committed."""
        fut: Future = Future()
        fut.set_running_or_notify_cancel()  # under way: a waiter that gives up cannot cancel what will commit
        if self._closed:
            fut.set_exception(RuntimeError("store is closed"))
            return fut
        self._queue.put((op, fut))
        return fut

    def flush(self) -> None:
        """Return once every write queued so far has committed or failed."""
        self.submit(lambda c: None).result()

    def _write_loop(self) -> None:
        conn = self._connect()
        while True:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            stop = False
            while len(batch) < MAX_GROUP:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(conn, batch)
            if stop:
                break
        conn.close()

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list) -> None:
        """One transaction for the whole group. If any write fails, redo the group with a savepoint per write,
        so one bad write fails alone and its neighbours still commit."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            results = [op(conn) for op, _ in batch]
            conn.execute("COMMIT")
        except Exception:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            SqliteStore._commit_each(conn, batch)
            return
        for (_, fut), result in zip(batch, results):
            fut.set_result(result)

    @staticmethod
    def _commit_each(conn: sqlite3.Connection, batch: list) -> None:
        outcomes: list[tuple[Future, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, fut in batch:
                conn.execute("SAVEPOINT op")
                try:
                    result = op(conn)
                    conn.execute("RELEASE op")
                    outcomes.append((fut, result, None))
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((fut, None, exc))
            conn.execute("COMMIT")
        except Exception as exc:
            log.exception("commit of %d writes failed", len(batch))
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for _, fut in batch:
                fut.set_exception(exc)
            return
        for fut, result, error in outcomes:
            if error is None:
                fut.set_result(result)
            else:
                fut.set_exception(error)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        with self._readers_lock:
            for conn in self._readers:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._readers.clear()

    # -- writes ---------------------------------------------------------------------------------------

    def save_task(self, task: Task) -> Future:
        return self.submit(lambda c: c.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('task', ?)", (task.to_json(),)))

    def append_label(self, r: LabeledRecord, *, requeue: bool = False) -> Future:
        return self.append_labels([r], requeue=requeue)

    def append_labels(self, records: list[LabeledRecord], *, requeue: bool = False) -> Future:
        """Append records to L and take their items out of S (with `requeue`, leave them in S with no lease: they
        want another label), in one transaction; resolves to the last seq."""
        def op(c: sqlite3.Connection) -> int:
            c.executemany(f"INSERT INTO labels ({LABEL_INSERT_COLUMNS}) "
                          f"VALUES ({','.join('?' * count(LABEL_INSERT_COLUMNS))})",
                          [label_row(r) for r in records])
            c.executemany("UPDATE queries SET lease_id = NULL, lease_owner = NULL, leased_at = NULL, "
                          "lease_deadline = NULL WHERE item_id = ?" if requeue else
                          "DELETE FROM queries WHERE item_id = ?", [(r.item_id,) for r in records])
            return records[-1].seq

        return self.submit(op)

    def put_candidates(self, rows: list[tuple[Candidate, float]], evicted: list[str]) -> Future:
        def op(c: sqlite3.Connection) -> None:
            c.executemany("DELETE FROM queries WHERE item_id = ?", [(i,) for i in evicted])
            c.executemany(f"INSERT OR REPLACE INTO queries ({QUERY_INSERT_COLUMNS}) "
                          f"VALUES ({','.join('?' * count(QUERY_INSERT_COLUMNS))})",
                          [query_row(cand, queued_at) for cand, queued_at in rows])

        return self.submit(op)

    def set_lease(self, item_id: str, lease: Lease | None) -> Future:
        args: tuple[object, ...]
        if lease is None:
            args = (None, None, None, None, item_id)
        else:
            args = (lease.lease_id, lease.annotator_id, lease.leased_at, lease.deadline, item_id)
        return self.submit(lambda c: c.execute(
            "UPDATE queries SET lease_id = ?, lease_owner = ?, leased_at = ?, lease_deadline = ? WHERE item_id = ?",
            args))

    def skip_item(self, item_id: str, annotator_id: str, at: float) -> Future:
        def op(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM queries WHERE item_id = ?", (item_id,))
            c.execute("INSERT OR IGNORE INTO skips (item_id, annotator_id, at) VALUES (?,?,?)",
                      (item_id, annotator_id, at))

        return self.submit(op)

    def insert_model(self, m: ModelInfo) -> Future:
        return self.submit(lambda c: c.execute(f"INSERT INTO models ({MODEL_COLUMNS}) VALUES ({','.join('?' * 10)})",
                                               model_row(m)))

    def mark_blob_pruned(self, version: int) -> Future:
        return self.submit(lambda c: c.execute("UPDATE models SET blob_available = 0 WHERE version = ?", (version,)))

    # -- weight blobs: files beside the database ------------------------------------------------------

    def _blob_path(self, version: int) -> Path:
        return self.layout.blob(version)

    @contextmanager
    def upload_file(self) -> Iterator[IO[bytes]]:
        """A temporary file beside the blobs for an upload to stream into; removed on exit unless kept."""
        f = tempfile.NamedTemporaryFile(dir=self.blob_dir, prefix=UPLOAD_PREFIX, suffix=UPLOAD_SUFFIX, delete=False)
        try:
            with f:
                yield f
        finally:
            Path(f.name).unlink(missing_ok=True)

    def keep_blob(self, version: int, f: IO[bytes]) -> None:
        """Make an upload file (from `upload_file`) version `version`'s blob, durably: synced, then renamed."""
        f.flush()
        os.fsync(f.fileno())
        os.replace(f.name, self._blob_path(version))


    def read_blob(self, version: int) -> bytes | None:
        try:
            return self._blob_path(version).read_bytes()
        except FileNotFoundError:
            return None

    def delete_blob(self, version: int) -> None:
        self._blob_path(version).unlink(missing_ok=True)

    # -- reads ----------------------------------------------------------------------------------------

    def load(self) -> StoredState:
        c = self._reader()
        state = StoredState()
        state.task = self.load_task()
        state.labeled_item_ids = [r[0] for r in c.execute("SELECT item_id FROM labels WHERE supersedes = 0")]
        state.labels_by_strategy = {s or "unknown": n for s, n in c.execute(
            "SELECT strategy, COUNT(*) FROM labels WHERE supersedes = 0 GROUP BY strategy")}
        state.last_seq = c.execute("SELECT COALESCE(MAX(seq), 0) FROM labels").fetchone()[0]
        state.queries = [query_from_row(r) for r in c.execute(f"SELECT {QUERY_COLUMNS} FROM queries")]
        for item_id, annotator_id in c.execute("SELECT item_id, annotator_id FROM labels WHERE supersedes = 0 AND "
                                               "item_id IN (SELECT item_id FROM queries) ORDER BY seq"):
            state.labelers.setdefault(item_id, []).append(annotator_id)
        state.skips = [r[0] for r in c.execute("SELECT item_id FROM skips")]
        state.labels_by_annotator = dict(c.execute(
            "SELECT annotator_id, COUNT(*) FROM labels WHERE supersedes = 0 GROUP BY annotator_id"))
        state.skips_by_annotator = dict(c.execute("SELECT annotator_id, COUNT(*) FROM skips GROUP BY annotator_id"))
        state.models = [model_from_row(r) for r in c.execute(f"SELECT {MODEL_COLUMNS} FROM models ORDER BY version")]
        return state

    def load_task(self) -> Task | None:
        row = self._reader().execute("SELECT value FROM meta WHERE key = 'task'").fetchone()
        return Task.from_json(row[0]) if row else None

    def labels_after(self, after_seq: int, limit: int, *, include_payload: bool = True,
                     latest_only: bool = False) -> list[LabeledRecord]:
        """Records of L after `after_seq` in seq order; `latest_only` leaves out records a correction superseded."""
        cols = LABEL_INSERT_COLUMNS if include_payload else LABEL_COLUMNS
        rows = self._reader().execute(
            f"SELECT {cols} FROM labels WHERE seq > ? {LATEST_ONLY if latest_only else ''} ORDER BY seq LIMIT ?",
            (after_seq, limit)).fetchall()
        return [label_from_row(r, include_payload=include_payload) for r in rows]

    def latest_label(self, item_id: str, *, by: str | None = None) -> LabeledRecord | None:
        """The record that holds an item's current label (its last correction, else its first label); with `by`,
        the latest record of that annotator's for the item."""
        row = self._reader().execute(
            f"SELECT {LABEL_INSERT_COLUMNS} FROM labels WHERE item_id = ? "
            f"{'' if by is None else 'AND annotator_id = ? ' + LATEST_ONLY}"
            " ORDER BY seq DESC LIMIT 1", (item_id,) if by is None else (item_id, by)).fetchone()
        return label_from_row(row, include_payload=True) if row else None

    def labelers(self, item_id: str) -> list[str]:
        """Who gave an item its first labels (several with labels_per_item > 1), in seq order."""
        return [r[0] for r in self._reader().execute(
            "SELECT annotator_id FROM labels WHERE item_id = ? AND supersedes = 0 ORDER BY seq", (item_id,))]

    def label_by_lease(self, lease_id: str) -> tuple[int, str, int, str] | None:
        """(seq, item_id, label, annotator_id) of the label recorded under a lease, if any (lease_id is indexed: it
        is UNIQUE)."""
        return self._reader().execute("SELECT seq, item_id, label, annotator_id FROM labels WHERE lease_id = ?",
                                      (lease_id,)).fetchone()

    def label_ids_after(self, after_seq: int, limit: int) -> list[tuple[int, str]]:
        return self._reader().execute(
            "SELECT seq, item_id FROM labels WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)).fetchall()


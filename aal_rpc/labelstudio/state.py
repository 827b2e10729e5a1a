"""The bridge's durable state: one SQLite file in --state-dir, written before and after every change it makes.

`tasks` holds one row per lease the bridge took: the item, the lease, the Label Studio task that shows it, and where
it stands (see TaskState). `annotations` holds every Label Studio annotation seen on those tasks, keyed on its id,
with who made it (the Label Studio user, `completed_by`) and what the bridge did with it; `records` each record the
bridge put in L (its seq), with the annotation and the user behind it; `unreadable` the tasks it could not read, and why. `meta` holds the project and the
webhook (not its secret: that lives in memory, a new one at each start). Label Studio on SQLite hands
a deleted row's id to the next row, so a task id belongs to a row only while the row is live, and an annotation id to
the task it was last seen on. Every write commits at once (synchronous=FULL), so what a restarted bridge reads is
what it had done: with the coordinator's idempotent SubmitLabel (per lease) and CorrectLabel (per item and label),
no annotation is lost or counted twice.

The state dir is the bridge's alone: created 0700, its files 0600 (and made so at each start): it names items and
leases, which annotators must not read.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

STATE_FILE = "bridge.sqlite3"
LOCK_FILE = "bridge.lock"
DIR_MODE = 0o700
FILE_MODE = 0o600  # SQLite gives its -wal and -shm files the database file's mode

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tasks (
    lease_id TEXT PRIMARY KEY,
    item_id TEXT NOT NULL,
    ls_task_id INTEGER UNIQUE,      -- the task while it is the bridge's concern (NULL before and after: Label
                                    -- Studio on SQLite gives a deleted task's id to the next task)
    last_task_id INTEGER,           -- the task it had, for the record
    model_version INTEGER NOT NULL,
    score REAL NOT NULL,
    state TEXT NOT NULL,
    label INTEGER,                  -- the label this bridge last gave the item in L
    seq INTEGER,                    -- its record in L
    refused_label INTEGER,          -- a correction the coordinator refused (not tried again)
    leased_at REAL NOT NULL,
    changed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (state);
CREATE TABLE IF NOT EXISTS annotations (
    ls_annotation_id INTEGER PRIMARY KEY,
    lease_id TEXT NOT NULL,         -- the task row it belongs to (its annotation and task ids may be reused later)
    label INTEGER,                  -- the class its result chooses; NULL for none (or cancelled)
    cancelled INTEGER NOT NULL,
    ls_updated_at TEXT NOT NULL,    -- Label Studio's updated_at: a new value is a new version of the annotation
    deleted INTEGER NOT NULL DEFAULT 0,
    outcome TEXT NOT NULL DEFAULT '',
    seq INTEGER,
    seen_at REAL NOT NULL,
    completed_by TEXT NOT NULL DEFAULT ''  -- the Label Studio user who made it: ls:<email>, or ls:<user id>
);
CREATE INDEX IF NOT EXISTS annotations_by_task ON annotations (lease_id);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,         -- a label or correction the bridge put in L
    ls_annotation_id INTEGER NOT NULL,
    completed_by TEXT NOT NULL       -- the Label Studio user who made the annotation ('' when unknown)
);
CREATE TABLE IF NOT EXISTS unreadable (
    ls_task_id INTEGER PRIMARY KEY,  -- a task of the bridge's that it could not read (logged once per reason)
    reason TEXT NOT NULL,
    seen_at REAL NOT NULL
);
"""


class TaskState:
    LEASED = "leased"      # leased from the coordinator, not yet (known to be) a task in Label Studio
    OPEN = "open"          # a task in Label Studio waiting for its label; the bridge renews the lease
    LABELED = "labeled"    # its first label is in L; later annotations become corrections
    RELEASED = "released"  # given back to the coordinator (cancelled, refreshed, or its task deleted)
    LOST = "lost"          # the lease was lost (expired while nobody renewed it); the item is no longer ours
    REMOVED = "removed"    # labeled, then its task was deleted in Label Studio (L keeps the label)


HELD = (TaskState.LEASED, TaskState.OPEN)  # rows whose lease the bridge holds
FINISHED = (TaskState.RELEASED, TaskState.LOST, TaskState.REMOVED)  # rows no longer the bridge's concern


@dataclass(frozen=True)
class TaskRow:
    lease_id: str
    item_id: str
    ls_task_id: int | None
    model_version: int
    score: float
    state: str
    label: int | None
    seq: int | None
    refused_label: int | None

    @property
    def task_id(self) -> int:
        """`ls_task_id` of a row whose task is in Label Studio: OPEN or LABELED (set_task_id), by_task_id's."""
        assert self.ls_task_id is not None, f"lease {self.lease_id} has no task in Label Studio ({self.state})"
        return self.ls_task_id


@dataclass(frozen=True)
class AnnotationRow:
    ls_annotation_id: int
    lease_id: str
    label: int | None
    cancelled: bool
    ls_updated_at: str
    deleted: bool
    outcome: str
    seq: int | None


_TASK_COLUMNS = "lease_id, item_id, ls_task_id, model_version, score, state, label, seq, refused_label"
_ANNOTATION_COLUMNS = "ls_annotation_id, lease_id, label, cancelled, ls_updated_at, deleted, outcome, seq"


class StateLocked(RuntimeError):
    """Another bridge runs on this state dir."""


class BridgeState:
    """The state file of one bridge; a lock file keeps a second bridge off the same state dir."""

    def __init__(self, state_dir: Path):
        state_dir = Path(state_dir)
        if not state_dir.is_dir() or (state_dir / STATE_FILE).exists():
            state_dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            _own(state_dir)  # a folder given that holds other things keeps its mode: the files are the bridge's
        self._lock = open(os.open(state_dir / LOCK_FILE, os.O_WRONLY | os.O_CREAT, FILE_MODE), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StateLocked(f"another aal-labelstudio runs on {state_dir}") from None
        os.close(os.open(state_dir / STATE_FILE, os.O_WRONLY | os.O_CREAT, FILE_MODE))  # before SQLite creates it
        for name in (LOCK_FILE, STATE_FILE, STATE_FILE + "-wal", STATE_FILE + "-shm", STATE_FILE + "-journal"):
            if (state_dir / name).exists():
                _own(state_dir / name)
        self._db = sqlite3.connect(state_dir / STATE_FILE, isolation_level=None)  # autocommit: each write commits
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(annotations)")}
        if "completed_by" not in columns:  # a state file of a bridge from before it was kept
            self._db.execute("ALTER TABLE annotations ADD COLUMN completed_by TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        self._db.close()
        self._lock.close()

    # -- meta -----------------------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                         "excluded.value", (key, value))

    def delete(self, key: str) -> None:
        self._db.execute("DELETE FROM meta WHERE key = ?", (key,))

    # -- tasks that cannot be read --------------------------------------------------------------------------

    def mark_unreadable(self, ls_task_id: int, reason: str) -> bool:
        """Record why a task cannot be read; False when it was already marked for the same reason."""
        row = self._db.execute("SELECT reason FROM unreadable WHERE ls_task_id = ?", (ls_task_id,)).fetchone()
        if row is not None and row[0] == reason:
            return False
        self._db.execute("INSERT INTO unreadable (ls_task_id, reason, seen_at) VALUES (?, ?, ?) ON CONFLICT "
                         "(ls_task_id) DO UPDATE SET reason = excluded.reason, seen_at = excluded.seen_at",
                         (ls_task_id, reason, time.time()))
        return True

    def clear_unreadable(self, ls_task_id: int) -> None:
        self._db.execute("DELETE FROM unreadable WHERE ls_task_id = ?", (ls_task_id,))

    def unreadable(self) -> dict[int, str]:
        """The tasks marked unreadable, with why."""
        return dict(self._db.execute("SELECT ls_task_id, reason FROM unreadable").fetchall())

    # -- tasks ----------------------------------------------------------------------------------------------

    def add_leased(self, *, lease_id: str, item_id: str, model_version: int, score: float) -> None:
        now = time.time()
        self._db.execute("INSERT INTO tasks (lease_id, item_id, model_version, score, state, leased_at, changed_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (lease_id, item_id, model_version, score, TaskState.LEASED, now, now))

    def set_task_id(self, lease_id: str, ls_task_id: int) -> None:
        """The lease's task exists in Label Studio (no live row may hold that id: see Window._record_task_id)."""
        self._db.execute("UPDATE tasks SET ls_task_id = ?, last_task_id = ?, state = ?, changed_at = ? "
                         "WHERE lease_id = ?", (ls_task_id, ls_task_id, TaskState.OPEN, time.time(), lease_id))

    def set_state(self, lease_id: str, state: str, *, label: int | None = None, seq: int | None = None) -> None:
        """A row that finishes lets go of its task id."""
        detach = ", ls_task_id = NULL" if state in FINISHED else ""
        if label is None:
            self._db.execute(f"UPDATE tasks SET state = ?, changed_at = ?{detach} WHERE lease_id = ?",
                             (state, time.time(), lease_id))
        else:
            self._db.execute(f"UPDATE tasks SET state = ?, label = ?, seq = ?, changed_at = ?{detach} "
                             "WHERE lease_id = ?", (state, label, seq, time.time(), lease_id))

    def set_refused(self, lease_id: str, label: int) -> None:
        self._db.execute("UPDATE tasks SET refused_label = ? WHERE lease_id = ?", (label, lease_id))

    def tasks(self, *states: str) -> list[TaskRow]:
        marks = ",".join("?" * len(states))
        rows = self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE state IN ({marks}) ORDER BY leased_at",
                                states).fetchall()
        return [TaskRow(*r) for r in rows]

    def by_task_id(self, ls_task_id: int) -> TaskRow | None:
        row = self._db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE ls_task_id = ?", (ls_task_id,)).fetchone()
        return TaskRow(*row) if row else None

    def count(self, *states: str) -> int:
        marks = ",".join("?" * len(states))
        return self._db.execute(f"SELECT COUNT(*) FROM tasks WHERE state IN ({marks})", states).fetchone()[0]

    def newest_version(self) -> int:
        return self._db.execute("SELECT COALESCE(MAX(model_version), 0) FROM tasks").fetchone()[0]

    # -- annotations ----------------------------------------------------------------------------------------

    def annotations_of(self, lease_id: str) -> dict[int, AnnotationRow]:
        """The annotations seen on a row's task."""
        rows = self._db.execute(f"SELECT {_ANNOTATION_COLUMNS} FROM annotations WHERE lease_id = ?",
                                (lease_id,)).fetchall()
        return {r[0]: AnnotationRow(r[0], r[1], r[2], bool(r[3]), r[4], bool(r[5]), r[6], r[7]) for r in rows}

    def annotated(self, lease_id: str) -> bool:
        """Whether the row's task has an annotation (of any kind) that was not deleted."""
        return self._db.execute("SELECT 1 FROM annotations WHERE lease_id = ? AND deleted = 0 LIMIT 1",
                                (lease_id,)).fetchone() is not None

    def task_of_annotation(self, ls_annotation_id: int) -> int | None:
        """The live task an annotation was last seen on."""
        row = self._db.execute("SELECT t.ls_task_id FROM annotations a JOIN tasks t ON t.lease_id = a.lease_id "
                               "WHERE a.ls_annotation_id = ?", (ls_annotation_id,)).fetchone()
        return row[0] if row else None

    def record_annotation(self, *, ls_annotation_id: int, lease_id: str, label: int | None, cancelled: bool,
                          ls_updated_at: str, completed_by: str = "") -> None:
        """A version of an annotation as Label Studio has it now (its outcome is cleared until acted on)."""
        self._db.execute(
            "INSERT INTO annotations (ls_annotation_id, lease_id, label, cancelled, ls_updated_at, seen_at, "
            "completed_by) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (ls_annotation_id) DO UPDATE SET "
            "lease_id = excluded.lease_id, label = excluded.label, cancelled = excluded.cancelled, "
            "ls_updated_at = excluded.ls_updated_at, deleted = 0, outcome = '', seq = NULL, "
            "seen_at = excluded.seen_at, completed_by = excluded.completed_by",
            (ls_annotation_id, lease_id, label, int(cancelled), ls_updated_at, time.time(), completed_by))

    def set_outcome(self, ls_annotation_id: int, outcome: str, seq: int | None = None) -> None:
        self._db.execute("UPDATE annotations SET outcome = ?, seq = ? WHERE ls_annotation_id = ?",
                         (outcome, seq, ls_annotation_id))

    def mark_deleted(self, ls_annotation_id: int) -> None:
        self._db.execute("UPDATE annotations SET deleted = 1 WHERE ls_annotation_id = ?", (ls_annotation_id,))

    def record_in_l(self, seq: int, ls_annotation_id: int, completed_by: str) -> None:
        """The bridge put record `seq` in L from this annotation, made by this user."""
        self._db.execute("INSERT INTO records (seq, ls_annotation_id, completed_by) VALUES (?, ?, ?) ON CONFLICT "
                         "(seq) DO NOTHING", (seq, ls_annotation_id, completed_by))

    def labelers(self) -> dict[int, str]:
        """Who made the annotation behind each record the bridge put in L: seq -> ls:<email> (or ls:<user id>; ""
        when unknown). L names the bridge as every record's annotator (the coordinator records the lease's holder);
        this is where the Label Studio user is kept."""
        return dict(self._db.execute("SELECT seq, completed_by FROM records").fetchall())

    def outcomes(self) -> dict[str, int]:
        """How many annotations ended how (for logs and tests)."""
        return dict(self._db.execute("SELECT outcome, COUNT(*) FROM annotations GROUP BY outcome").fetchall())


def _own(path: Path) -> None:
    """Make a state dir or file readable by its owner alone (an older bridge created them 0755 and 0644)."""
    mode = DIR_MODE if path.is_dir() else FILE_MODE
    if path.stat().st_mode & 0o777 != mode:
        os.chmod(path, mode)

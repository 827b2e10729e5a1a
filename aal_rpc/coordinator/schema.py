"""The stores' database schemas: for each backend an ordered list of migrations, and the rule that applies them.

Schema version n is what the first n migrations of a list make. A database records its version (SQLite:
`PRAGMA user_version`; PostgreSQL: the one row of `schema_version`). A store opening it applies the migrations after
that version in one transaction, and refuses a database that a newer aal_rpc made (SchemaTooNew), changing nothing,
rather than guess at tables it does not know. A released migration is never edited: a change is a new one at the end.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from aal_rpc.coordinator import rules


class SchemaTooNew(RuntimeError):
    """The database was made by a newer aal_rpc than this one (its schema version is past the last migration)."""


@dataclass(frozen=True)
class Migration:
    why: str
    statements: tuple[str, ...]


def pending(migrations: tuple[Migration, ...], current: int, where: str) -> tuple[Migration, ...]:
    """The migrations that bring a database at version `current` to the latest; SchemaTooNew past the latest."""
    if current > len(migrations):
        raise SchemaTooNew(f"the database {where} has schema version {current}, written by a newer aal_rpc; this "
                           f"one knows versions up to {len(migrations)}: run the newer aal_rpc, or restore a backup "
                           f"made by this one")
    return migrations[current:]


# -- SQLite (the embedded store) -----------------------------------------------------------------------------------

SQLITE: tuple[Migration, ...] = (
    Migration("the first layout", (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE IF NOT EXISTS labels (
            seq INTEGER PRIMARY KEY, item_id TEXT NOT NULL UNIQUE, lease_id TEXT NOT NULL UNIQUE,
            label INTEGER NOT NULL, annotator_id TEXT NOT NULL,
            queued_at REAL NOT NULL, leased_at REAL NOT NULL, labeled_at REAL NOT NULL,
            worker_id TEXT NOT NULL, strategy TEXT NOT NULL, model_version INTEGER NOT NULL, score REAL NOT NULL,
            tensor BLOB NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, image_png BLOB NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS queries (
            item_id TEXT PRIMARY KEY,
            worker_id TEXT NOT NULL, strategy TEXT NOT NULL, model_version INTEGER NOT NULL, score REAL NOT NULL,
            queued_at REAL NOT NULL,
            tensor BLOB NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, image_png BLOB NOT NULL,
            lease_id TEXT, lease_owner TEXT, leased_at REAL, lease_deadline REAL)""",
        "CREATE TABLE IF NOT EXISTS skips (item_id TEXT PRIMARY KEY, annotator_id TEXT NOT NULL, at REAL NOT NULL)",
        """CREATE TABLE IF NOT EXISTS models (
            version INTEGER PRIMARY KEY,
            server_id TEXT NOT NULL, trained_seq INTEGER NOT NULL, num_labels INTEGER NOT NULL,
            architecture TEXT NOT NULL, metrics TEXT NOT NULL, created_at REAL NOT NULL,
            size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, blob_available INTEGER NOT NULL)""",
    )),
    # L stays append-only: a correction is a new record naming the one it supersedes, so an item has one first label
    # (supersedes = 0) and any number of corrections. SQLite drops no UNIQUE constraint in place: labels is rebuilt.
    Migration("corrections (labels.item_id no longer UNIQUE), text items and Cluster-Margin's clusters", (
        "ALTER TABLE labels RENAME TO labels_v1",
        """CREATE TABLE labels (
            seq INTEGER PRIMARY KEY, item_id TEXT NOT NULL, lease_id TEXT NOT NULL UNIQUE,
            label INTEGER NOT NULL, annotator_id TEXT NOT NULL,
            queued_at REAL NOT NULL, leased_at REAL NOT NULL, labeled_at REAL NOT NULL,
            worker_id TEXT NOT NULL, strategy TEXT NOT NULL, model_version INTEGER NOT NULL, score REAL NOT NULL,
            supersedes INTEGER NOT NULL DEFAULT 0, cluster INTEGER,
            tensor BLOB NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, image_png BLOB NOT NULL,
            text TEXT NOT NULL DEFAULT '')""",
        """INSERT INTO labels (seq, item_id, lease_id, label, annotator_id, queued_at, leased_at, labeled_at,
            worker_id, strategy, model_version, score, tensor, dtype, shape, image_png)
            SELECT seq, item_id, lease_id, label, annotator_id, queued_at, leased_at, labeled_at, worker_id,
            strategy, model_version, score, tensor, dtype, shape, image_png FROM labels_v1""",
        "DROP TABLE labels_v1",
        "ALTER TABLE queries ADD COLUMN text TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE queries ADD COLUMN cluster INTEGER",
        "CREATE UNIQUE INDEX labels_first ON labels (item_id) WHERE supersedes = 0",
        "CREATE INDEX labels_item ON labels (item_id, seq)",
        "CREATE INDEX labels_superseded ON labels (supersedes) WHERE supersedes > 0",
    )),
    # several labels per item (--labels-per-item): one first label per item and annotator, not per item
    Migration("several labels per item", (
        "DROP INDEX labels_first",
        "CREATE UNIQUE INDEX labels_first ON labels (item_id, annotator_id) WHERE supersedes = 0",
    )),
    # the proposing model's guess (types.Provenance.guess), offered to annotators as a pre-annotation
    Migration("the model's guess in an item's provenance", (
        "ALTER TABLE labels ADD COLUMN guess INTEGER",
        "ALTER TABLE labels ADD COLUMN guess_probability REAL NOT NULL DEFAULT 0",
        "ALTER TABLE queries ADD COLUMN guess INTEGER",
        "ALTER TABLE queries ADD COLUMN guess_probability REAL NOT NULL DEFAULT 0",
    )),
)

# Databases made before versions were recorded (user_version 0) have the layout of version 1 or of version 2, told
# apart by labels.supersedes. One of version 1's layout replays every migration: the first is idempotent (IF NOT
# EXISTS), so it adds only what that database lacks, as the code of its day did at every open.
_SQLITE_UNVERSIONED_CORRECTIONS = 2  # the version whose layout has labels.supersedes


def sqlite_version(conn: sqlite3.Connection) -> int:
    """The schema version of the SQLite database on `conn`: recorded, or else told by its layout (0: replay all)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version:
        return version
    columns = {row[1] for row in conn.execute("PRAGMA table_info(labels)")}
    return _SQLITE_UNVERSIONED_CORRECTIONS if "supersedes" in columns else 0


def migrate_sqlite(conn: sqlite3.Connection, where: str) -> int:
    """Bring the SQLite database on `conn` (an autocommit connection: isolation_level None) to the latest version in
    one transaction, recorded in user_version; returns that version. SchemaTooNew for a newer database."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for migration in pending(SQLITE, sqlite_version(conn), where):
            for statement in migration.statements:
                conn.execute(statement)
        if conn.execute("PRAGMA user_version").fetchone()[0] != len(SQLITE):
            conn.execute(f"PRAGMA user_version = {len(SQLITE)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(SQLITE)


# -- PostgreSQL (the shared-database store) -------------------------------------------------------------------------

# A database made before versions were recorded (no row in schema_version) replays every migration, whatever layout
# the code of its day left it with. That is why every statement below is idempotent (IF NOT EXISTS, ON CONFLICT).
POSTGRES: tuple[Migration, ...] = (
    Migration("the first layout", (
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        "CREATE SEQUENCE IF NOT EXISTS label_seq",
        "CREATE SEQUENCE IF NOT EXISTS model_version_seq",
        """CREATE TABLE IF NOT EXISTS labels (
            seq BIGINT PRIMARY KEY, item_id TEXT NOT NULL UNIQUE, lease_id TEXT NOT NULL UNIQUE,
            label INTEGER NOT NULL, annotator_id TEXT NOT NULL,
            queued_at DOUBLE PRECISION NOT NULL, leased_at DOUBLE PRECISION NOT NULL,
            labeled_at DOUBLE PRECISION NOT NULL,
            worker_id TEXT NOT NULL, strategy TEXT NOT NULL, model_version BIGINT NOT NULL,
            score DOUBLE PRECISION NOT NULL,
            tensor BYTEA NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, image_png BYTEA NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS queries (
            item_id TEXT PRIMARY KEY, shard_key BIGINT NOT NULL,
            worker_id TEXT NOT NULL, strategy TEXT NOT NULL, model_version BIGINT NOT NULL,
            score DOUBLE PRECISION NOT NULL, queued_at DOUBLE PRECISION NOT NULL,
            tensor BYTEA NOT NULL, dtype TEXT NOT NULL, shape TEXT NOT NULL, image_png BYTEA NOT NULL,
            lease_id TEXT UNIQUE, lease_owner TEXT, leased_at DOUBLE PRECISION, lease_deadline DOUBLE PRECISION)""",
        "CREATE INDEX IF NOT EXISTS queries_fresh ON queries (model_version DESC, score DESC)",
        "CREATE INDEX IF NOT EXISTS queries_score ON queries (score DESC)",
        """CREATE TABLE IF NOT EXISTS skips (
            item_id TEXT PRIMARY KEY, shard_key BIGINT NOT NULL, annotator_id TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL)""",
        """CREATE TABLE IF NOT EXISTS models (
            version BIGINT PRIMARY KEY, server_id TEXT NOT NULL, trained_seq BIGINT NOT NULL,
            num_labels BIGINT NOT NULL, architecture TEXT NOT NULL, metrics TEXT NOT NULL,
            created_at DOUBLE PRECISION NOT NULL, size_bytes BIGINT NOT NULL, sha256 TEXT NOT NULL,
            blob_available BOOLEAN NOT NULL)""",
        "CREATE INDEX IF NOT EXISTS models_fresh ON models (num_labels DESC, version DESC)",
        "CREATE TABLE IF NOT EXISTS model_blobs (version BIGINT PRIMARY KEY, data BYTEA NOT NULL)",
        """CREATE TABLE IF NOT EXISTS rounds (
            server_id TEXT PRIMARY KEY, num_labels BIGINT NOT NULL, started DOUBLE PRECISION NOT NULL,
            round_seconds DOUBLE PRECISION NOT NULL)""",
        "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
        "INSERT INTO counters (name, value) VALUES ('candidates_submitted', 0), ('candidates_evicted', 0) "
        "ON CONFLICT DO NOTHING",
    )),
    # an item has one first label (supersedes = 0), then any number of corrections, each naming the record it
    # supersedes; "don't know" keeps an item from one annotator until `until`
    Migration("corrections (labels.item_id no longer UNIQUE), text items, Cluster-Margin's clusters, deferrals", (
        "ALTER TABLE labels ADD COLUMN IF NOT EXISTS supersedes BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE labels ADD COLUMN IF NOT EXISTS text TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE queries ADD COLUMN IF NOT EXISTS text TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE labels ADD COLUMN IF NOT EXISTS cluster BIGINT",
        "ALTER TABLE queries ADD COLUMN IF NOT EXISTS cluster BIGINT",
        "ALTER TABLE labels DROP CONSTRAINT IF EXISTS labels_item_id_key",
        "CREATE UNIQUE INDEX IF NOT EXISTS labels_first ON labels (item_id) WHERE supersedes = 0",
        "CREATE INDEX IF NOT EXISTS labels_item ON labels (item_id, seq)",
        "CREATE INDEX IF NOT EXISTS labels_superseded ON labels (supersedes) WHERE supersedes > 0",
        """CREATE TABLE IF NOT EXISTS deferrals (
            item_id TEXT NOT NULL, annotator_id TEXT NOT NULL, until DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (item_id, annotator_id))""",
        "CREATE INDEX IF NOT EXISTS deferrals_until ON deferrals (until)",
    )),
    # several labels per item (--labels-per-item): one first label per item and annotator, not per item; a query
    # counts the labels its item has (rules.PARTLY_LABELED_FIRST, rules.wants_another_label)
    Migration("several labels per item", (
        "DROP INDEX IF EXISTS labels_first",
        "CREATE UNIQUE INDEX IF NOT EXISTS labels_first_per_annotator ON labels (item_id, annotator_id) "
        "WHERE supersedes = 0",
        "ALTER TABLE queries ADD COLUMN IF NOT EXISTS labels INTEGER NOT NULL DEFAULT 0",
    )),
    # the proposing model's guess (types.Provenance.guess), offered to annotators as a pre-annotation
    Migration("the model's guess in an item's provenance", (
        "ALTER TABLE labels ADD COLUMN IF NOT EXISTS guess INTEGER",
        "ALTER TABLE labels ADD COLUMN IF NOT EXISTS guess_probability DOUBLE PRECISION NOT NULL DEFAULT 0",
        "ALTER TABLE queries ADD COLUMN IF NOT EXISTS guess INTEGER",
        "ALTER TABLE queries ADD COLUMN IF NOT EXISTS guess_probability DOUBLE PRECISION NOT NULL DEFAULT 0",
    )),
    # a lease walks S in its pick order instead of sorting all of S: an index on the very expressions of each
    # order's ORDER BY (rules.PICK_ORDERS), audit and partly labeled items first included
    Migration("indexes in the pick orders", tuple(
        f"CREATE INDEX IF NOT EXISTS queries_pick_{name} ON queries ({order.sql()})"
        for name, order in rules.PICK_ORDERS.items() if order is not None)),
    # the lease cap counts an annotator's live leases (aal_lease_next): over the few leased rows, not all of S (a
    # scan of 40,000 queries made each lease 9 ms of the database's CPU)
    Migration("an index of the leased queries by owner", (
        "CREATE INDEX IF NOT EXISTS queries_lease_owner ON queries (lease_owner, lease_deadline) "
        "WHERE lease_owner IS NOT NULL",)),
)

POSTGRES_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), version INTEGER NOT NULL)"""  # one row at most


def postgres_version(cur) -> int:
    """The recorded schema version of the PostgreSQL database (0: none recorded), `cur` in a transaction."""
    cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return 0
    cur.execute("SELECT version FROM schema_version")
    row = cur.fetchone()
    return row[0] if row else 0


def migrate_postgres(cur, where: str) -> int:
    """Bring the PostgreSQL database to the latest version inside the caller's transaction (which holds the schema
    lock, so replicas starting together migrate one at a time); returns that version. SchemaTooNew for a newer
    database."""
    current = postgres_version(cur)
    for migration in pending(POSTGRES, current, where):
        for statement in migration.statements:
            cur.execute(statement)
    if current != len(POSTGRES):
        cur.execute(POSTGRES_VERSION_TABLE)
        cur.execute("INSERT INTO schema_version (version) VALUES (%s) ON CONFLICT (one) DO UPDATE SET "
                    "version = EXCLUDED.version", (len(POSTGRES),))
    return len(POSTGRES)

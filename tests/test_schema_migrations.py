"""The stores' schemas are versioned (coordinator/schema.py): a database an older aal_rpc made opens with its data and
is brought to the latest version, one made before versions were recorded opens as it is, and one a newer aal_rpc made
is refused with a one-line error that changes nothing in it."""

from __future__ import annotations

import sqlite3
import subprocess

import pytest

from aal_rpc.coordinator import rules, schema
from aal_rpc.coordinator.embedded import EmbeddedCoordinator
from aal_rpc.coordinator.layout import DataDir
from aal_rpc.coordinator.rows import QUERY_INSERT_COLUMNS, query_row
from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.experiment.processes import command
from aal_rpc.types import shard_key
from tests.conftest import TASK, make_candidate

LATEST_SQLITE, LATEST_POSTGRES = len(schema.SQLITE), len(schema.POSTGRES)


def check_first_version_data(c) -> None:
    """The data `first_version_rows` wrote, seen through a coordinator on the migrated database (closed after): one
    label and one query, and the label takes a correction (what the first version could not hold)."""
    try:
        s = c.stats()
        assert (s.labeled, s.queued, s.last_seq) == (1, 1, 1)
        assert c.correct_label(item_id="1", label=6, annotator_id="ann") == (2, 1, False)
        assert [(r.label, r.supersedes) for r in c.read_labels(0, 10 ** 6)] == [(3, 0), (6, 1)]
        q = c.lease("ann")
        assert (q.item_id, q.payload.text, q.provenance.cluster, q.provenance.guess) == ("2", "", None, None)
    finally:
        c.close()


def first_version_rows(mark: str, *, shard_key_column: bool = False) -> list[tuple[str, tuple]]:
    """Statements and values that put the task, one label and one query into a database of schema version 1 (whose
    tables have no supersedes, text, cluster or guess columns); `mark` is the driver's placeholder. PostgreSQL's queries
    have a shard_key column too."""
    x = make_candidate("1").payload
    label = ("INSERT INTO labels (seq, item_id, lease_id, label, annotator_id, queued_at, leased_at, labeled_at, "
             "worker_id, strategy, model_version, score, tensor, dtype, shape, image_png) VALUES "
             f"({', '.join([mark] * 16)})", (1, "1", "l1", 3, "ann", 1.0, 2.0, 3.0, "w", "margin", 0, 0.5, x.tensor,
                                              x.dtype, "[1, 8, 8]", b""))
    columns = QUERY_INSERT_COLUMNS.replace(", text, cluster, guess, guess_probability", "")
    values = query_row(make_candidate("2"), 1.0)[:10]
    if shard_key_column:
        columns, values = "shard_key, " + columns, (shard_key("2"), *values)
    query = (f"INSERT INTO queries ({columns}) VALUES ({', '.join([mark] * len(values))})", values)
    return [(f"INSERT INTO meta (key, value) VALUES ('task', {mark})", (TASK.to_json(),)), label, query]


# -- SQLite ---------------------------------------------------------------------------------------------------------


def sqlite_database(data_dir, *, version: int, recorded: bool = True) -> sqlite3.Connection:
    """A data dir whose database has the layout of schema `version`, recorded in it or not (as before versions
    were recorded); the connection is left open for the test to fill."""
    data_dir.mkdir()
    db = sqlite3.connect(DataDir(data_dir).database, isolation_level=None)
    for migration in schema.SQLITE[:version]:
        for statement in migration.statements:
            db.execute(statement)
    if recorded:
        db.execute(f"PRAGMA user_version = {version}")
    return db


def sqlite_version(data_dir) -> int:
    with sqlite3.connect(DataDir(data_dir).database) as db:
        return db.execute("PRAGMA user_version").fetchone()[0]


@pytest.mark.parametrize("recorded", [True, False], ids=["version-recorded", "made-before-versions"])
def test_a_first_version_sqlite_database_is_migrated_with_its_data(tmp_path, recorded):
    data = tmp_path / "data"
    db = sqlite_database(data, version=1, recorded=recorded)
    for sql, values in first_version_rows("?"):
        db.execute(sql, values)
    db.close()
    check_first_version_data(EmbeddedCoordinator(SqliteStore(data), TASK))
    assert sqlite_version(data) == LATEST_SQLITE


# the last layout a database made before versions were recorded can have (later ones record their version)
LAST_UNVERSIONED_SQLITE = 3


def test_a_sqlite_database_made_before_versions_with_the_last_unversioned_layout_opens(tmp_path):
    data = tmp_path / "data"
    sqlite_database(data, version=LAST_UNVERSIONED_SQLITE, recorded=False).close()
    latest = sqlite_database(tmp_path / "latest", version=LATEST_SQLITE)
    tables = latest.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
    latest.close()
    c = EmbeddedCoordinator(SqliteStore(data), TASK)
    c.close()
    assert sqlite_version(data) == LATEST_SQLITE
    with sqlite3.connect(DataDir(data).database) as db:
        assert db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == tables


def test_a_failed_migration_leaves_the_sqlite_database_as_it_was(tmp_path, monkeypatch):
    data = tmp_path / "data"
    db = sqlite_database(data, version=1)
    db.close()
    broken = schema.Migration("breaks halfway", ("ALTER TABLE queries ADD COLUMN extra INTEGER", "NOT SQL"))
    monkeypatch.setattr(schema, "SQLITE", (*schema.SQLITE, broken))
    with pytest.raises(sqlite3.OperationalError):
        SqliteStore(data)
    assert sqlite_version(data) == 1
    with sqlite3.connect(DataDir(data).database) as db:
        assert "text" not in {row[1] for row in db.execute("PRAGMA table_info(queries)")}


@pytest.fixture
def newer_sqlite_data_dir(tmp_path):
    """A data dir whose database a newer aal_rpc made: schema version one past the latest this code knows."""
    data = tmp_path / "data"
    SqliteStore(data).close()
    with sqlite3.connect(DataDir(data).database) as db:
        db.execute(f"PRAGMA user_version = {LATEST_SQLITE + 1}")
    return data


def test_a_newer_sqlite_database_is_refused_and_left_as_it_is(newer_sqlite_data_dir):
    upload = DataDir(newer_sqlite_data_dir).models / "upload-1.tmp"  # its uploads in progress are its own too
    upload.write_bytes(b"x")
    with pytest.raises(schema.SchemaTooNew, match=f"schema version {LATEST_SQLITE + 1}, written by a newer aal_rpc"):
        SqliteStore(newer_sqlite_data_dir)
    assert sqlite_version(newer_sqlite_data_dir) == LATEST_SQLITE + 1
    assert upload.exists()


@pytest.mark.e2e
def test_aal_coordinator_refuses_a_newer_data_dir_in_one_line(newer_sqlite_data_dir):
    done = subprocess.run(command("coordinator", "--listen", "127.0.0.1:0", "--data-dir", newer_sqlite_data_dir,
                                  "--log-level", "error"),  # no warning about the missing tokens file
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "written by a newer aal_rpc" in lines[0], done.stderr


# -- PostgreSQL -----------------------------------------------------------------------------------------------------


def postgres_database(server, *, version: int, recorded: bool = True):
    """A fresh database with the layout of schema `version`, recorded in it or not (as before versions were
    recorded); (url, open autocommit connection)."""
    import psycopg

    url = server.new_database()
    db = psycopg.connect(url, autocommit=True)
    for migration in schema.POSTGRES[:version]:
        for statement in migration.statements:
            db.execute(statement)
    if recorded:
        db.execute(schema.POSTGRES_VERSION_TABLE)
        db.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return url, db


def postgres_version(url) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as db, db.cursor() as cur:
        return schema.postgres_version(cur)


def shared_coordinator(url):
    from aal_rpc.coordinator.postgres import SharedCoordinator
    from aal_rpc.coordinator.postgres_store import PostgresStore

    return SharedCoordinator(PostgresStore(url, pool_size=2), TASK)


@pytest.mark.parametrize("recorded", [True, False], ids=["version-recorded", "made-before-versions"])
def test_a_first_version_postgres_database_is_migrated_with_its_data(postgres, recorded):
    url, db = postgres_database(postgres, version=1, recorded=recorded)
    for sql, values in first_version_rows("%s", shard_key_column=True):
        db.execute(sql, values)
    db.execute("SELECT setval('label_seq', 1)")  # as recording label 1 left it
    db.close()
    check_first_version_data(shared_coordinator(url))
    assert postgres_version(url) == LATEST_POSTGRES


def test_a_newer_postgres_database_is_refused_and_left_as_it_is(postgres):
    url, db = postgres_database(postgres, version=LATEST_POSTGRES)
    db.execute("UPDATE schema_version SET version = %s", (LATEST_POSTGRES + 1,))
    db.close()
    from aal_rpc.coordinator.postgres_store import PostgresStore

    with pytest.raises(schema.SchemaTooNew, match=f"schema version {LATEST_POSTGRES + 1}, written by a newer aal_rpc"):
        PostgresStore(url, pool_size=1)
    assert postgres_version(url) == LATEST_POSTGRES + 1
    import psycopg

    with psycopg.connect(url) as conn:  # its server-side functions were not replaced by this code's either
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'aal_%'").fetchone()[0] == 0


@pytest.mark.parametrize("pick", [name for name, order in rules.PICK_ORDERS.items() if order is not None])
def test_a_postgres_lease_walks_an_index_in_its_pick_order_rather_than_sorting_s(postgres, pick):
    """The pick order's ORDER BY (audit and partly labeled items first) is served by an index on the same
    expressions, so a lease reads the head of S, not all of it."""
    import psycopg

    url = postgres.new_database()
    shared_coordinator(url).close()  # migrates
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SET enable_seqscan = off")  # the plan a large S gets, on this empty table
        plan = "\n".join(row[0] for row in db.execute(
            "EXPLAIN SELECT item_id FROM queries WHERE (lease_id IS NULL OR lease_deadline <= 0) "
            f"AND strategy <> 'gold' ORDER BY {rules.PICK_ORDERS[pick].sql()} LIMIT 1"))
    assert f"queries_pick_{pick}" in plan and "Sort" not in plan, plan


def test_a_postgres_lease_under_a_cap_counts_the_annotators_leases_by_index_not_over_all_of_s(postgres):
    import psycopg

    url = postgres.new_database()
    shared_coordinator(url).close()  # migrates
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("SET enable_seqscan = off")  # the plan a large S gets, on this empty table
        plan = "\n".join(row[0] for row in db.execute(
            "EXPLAIN SELECT count(*) FROM queries c WHERE c.lease_owner = 'a' AND c.lease_deadline > 0"))
    assert "queries_lease_owner" in plan, plan

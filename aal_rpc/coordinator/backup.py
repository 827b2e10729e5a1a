"""Online backup of a coordinator's data dir: `python -m aal_rpc.coordinator.backup --data-dir D --out B`.

Safe while the coordinator runs: SQLite's backup API copies a consistent snapshot of the database (WAL
included), and weight blobs are immutable once published, so they are copied as files. Restore by
stopping the coordinator and starting it with `--data-dir B` (or copying B's contents into its data dir).
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import click

from aal_rpc.coordinator.layout import DataDir

def backup(data_dir: Path, out: Path) -> dict:
    source, target = DataDir(data_dir), DataDir(out)
    if not source.holds_store():
        raise FileNotFoundError(f"{source.root} holds no coordinator database")
    target.models.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source.database}?mode=ro", uri=True)
    dst = sqlite3.connect(target.database)
    with dst:
        src.backup(dst)
    referenced = [v for (v,) in dst.execute("SELECT version FROM models WHERE blob_available")]
    labels = dst.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    src.close()
    dst.close()
    copied = 0
    for version in sorted(referenced):
        blob = source.blob(version)
        if blob.exists():  # pruned between the snapshot and now: the snapshot still lists it as kept
            shutil.copy2(blob, target.blob(version))
            copied += 1
    return {"labels": labels, "models_copied": copied}


@click.command()
@click.option("--data-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def main(data_dir, out):
    """Copy a consistent snapshot of DATA_DIR to OUT while the coordinator keeps running."""
    result = backup(data_dir, out)
    click.echo(f"backed up {result['labels']} labels and {result['models_copied']} model blobs to {out}")


if __name__ == "__main__":
    main()

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

DB = "aal.sqlite3"


def backup(data_dir: Path, out: Path) -> dict:
    data_dir, out = Path(data_dir), Path(out)
    if not (data_dir / DB).exists():
        raise FileNotFoundError(f"{data_dir} holds no coordinator database")
    (out / "models").mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{data_dir / DB}?mode=ro", uri=True)
    dst = sqlite3.connect(out / DB)
    with dst:
        src.backup(dst)
    referenced = {f"v{v:08d}.safetensors" for (v,) in dst.execute("SELECT version FROM models WHERE blob_available")}
    labels = dst.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    src.close()
    dst.close()
    copied = 0
    for name in sorted(referenced):
        blob = data_dir / "models" / name
        if blob.exists():  # pruned between the snapshot and now: the snapshot still lists it as kept
            shutil.copy2(blob, out / "models" / name)
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

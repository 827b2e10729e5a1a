"""The embedded store's data dir: what lives where, known here and nowhere else.

    DATA_DIR/aal.sqlite3                      the database (WAL mode: -wal and -shm files beside it)
    DATA_DIR/models/v00000012.safetensors     the weights of version 12, immutable once published
    DATA_DIR/models/upload-*.tmp              an upload in progress (a crashed run's are removed at start)
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

UPLOAD_PREFIX, UPLOAD_SUFFIX = "upload-", ".tmp"


@dataclass(frozen=True)
class DataDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def database(self) -> Path:
        return self.root / "aal.sqlite3"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def blob(self, version: int) -> Path:
        return self.models / blob_name(version)

    def partial_uploads(self) -> list[Path]:
        return sorted(self.models.glob(f"{UPLOAD_PREFIX}*{UPLOAD_SUFFIX}"))

    def holds_store(self) -> bool:
        return self.database.exists()


def blob_name(version: int) -> str:
    return f"v{version:08d}.safetensors"


def spool_file(folder: Path | None) -> IO[bytes]:
    """A temporary file for an upload in progress, in `folder` (None: the system's temporary folder), named as
    `DataDir.partial_uploads` finds them and removed when closed."""
    return tempfile.NamedTemporaryFile(dir=folder, prefix=UPLOAD_PREFIX, suffix=UPLOAD_SUFFIX)

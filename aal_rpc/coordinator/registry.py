"""The model registry: versioned weights uploaded by the servers, with their provenance and metrics.

An upload streams into a temporary blob of the store (memory stays at one chunk), is checked against the
task's architecture (names, shapes, dtypes, finite values) before it gets a version, and then becomes that
version's blob; only the last `keep` blobs are kept.
"Latest" means trained on the most labels, newest on a tie.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from typing import IO

from aal_rpc.chunking import receive_into
from aal_rpc.coordinator.contract import Store
from aal_rpc.coordinator.signals import Signal
from aal_rpc.coordinator.sqlite_store import SqliteStore
from aal_rpc.errors import NotFound
from aal_rpc.serde import WeightSpec, check_weights_file, spec_fingerprint
from aal_rpc.types import ModelInfo

CACHED_BLOBS = 2  # newest weight blobs held in memory for downloads


class BlobCache:
    """The newest CACHED_BLOBS weight blobs in memory, read through to the store: every worker downloads each
    new version, and a version's weights never change, so a cached blob never goes stale."""

    def __init__(self, store):
        self._store = store
        self._blobs: dict[int, bytes] = {}
        self._lock = threading.Lock()

    def read(self, m: ModelInfo) -> bytes:
        with self._lock:
            data = self._blobs.get(m.version)
        if data is None:
            data = self._store.read_blob(m.version) if m.blob_available else None
            if data is None:
                raise NotFound(f"weights of model version {m.version} were pruned (--keep-models)")
            self.remember(m.version, data)
        return data

    def remember(self, version: int, data: bytes) -> None:
        with self._lock:
            self._blobs[version] = data
            for v in sorted(self._blobs)[:-CACHED_BLOBS]:
                del self._blobs[v]

    def forget(self, version: int) -> None:
        with self._lock:
            self._blobs.pop(version, None)


class RegistryBase:
    """What both registries (this one and the shared-database one) share: receiving an upload, and `get` and
    `read_blob` over their `_lookup`."""

    _cache: BlobCache
    _store: Store
    _spec: WeightSpec

    def _lookup(self, version: int) -> ModelInfo | None:
        raise NotImplementedError

    def _publish_file(self, f: IO[bytes], info: ModelInfo) -> ModelInfo:
        """Give checked weights in `f` the next version, as `info` says; the store takes the file over."""
        raise NotImplementedError

    def receive(self, chunks: Iterable[bytes], *, size_bytes: int, sha256: str, max_bytes: int,
                info: ModelInfo) -> ModelInfo:
        """Stream an upload into a temporary blob, check it, and publish it (a retried upload: `_same_upload`);
        returns the stored entry. Raises InvalidArgument (registry unchanged) for a truncated, corrupt or
        mismatched upload."""
        with self._store.upload_file() as f:
            receive_into(chunks, f, size_bytes=size_bytes, sha256=sha256, max_bytes=max_bytes)
            f.flush()
            check_weights_file(f.name, self._spec)
            retried = self._same_upload(info, sha256)
            if retried is not None:
                return retried
            return self._publish_file(f, dataclasses.replace(info, size_bytes=size_bytes, sha256=sha256))

    def _same_upload(self, info: ModelInfo, sha256: str) -> ModelInfo | None:
        """The version an upload already became, if it is a retry: the same server's same weights and metrics,
        trained on as many labels through the same seq. A server whose upload's answer was lost (a partition) sends
        it again; that must not publish the same model twice."""
        return next((m for m in reversed(self.list()) if (m.server_id, m.sha256, m.trained_seq, m.num_labels,
                                                          m.metrics) == (info.server_id, sha256, info.trained_seq,
                                                                         info.num_labels, info.metrics)), None)

    @property
    def fingerprint(self) -> str:
        """The architecture's weights fingerprint (serde.spec_fingerprint), served with the task."""
        return spec_fingerprint(self._spec)

    def is_published(self, version: int) -> bool:
        return self._lookup(version) is not None

    def page(self, *, after_version: int, limit: int) -> tuple[list[ModelInfo], bool]:
        """Entries with a version above `after_version`, at most `limit`, and whether more follow."""
        later = [m for m in self.list() if m.version > after_version]
        return later[:limit], len(later) > limit

    def list(self) -> list[ModelInfo]:
        raise NotImplementedError

    def latest(self) -> ModelInfo | None:
        raise NotImplementedError

    def get(self, version: int) -> ModelInfo:
        """A version's entry; version 0 is the latest."""
        m = self._lookup(version)
        if m is None:
            raise NotFound(f"model version {version} does not exist" if version else "no model published yet")
        return m

    def read_blob(self, version: int) -> tuple[ModelInfo, bytes]:
        m = self.get(version)
        return m, self._cache.read(m)


class ModelRegistry(RegistryBase):
    _store: SqliteStore

    def __init__(self, store: SqliteStore, *, spec: WeightSpec, keep: int, models: list[ModelInfo], changed: Signal,
                 clock: Callable[[], float] = time.time):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._store = store
        self._spec = spec
        self._keep = keep
        self._changed = changed  # fired once a new version is published
        self._clock = clock
        self._lock = threading.Lock()
        self._models: dict[int, ModelInfo] = {m.version: m for m in models}
        self._latest: ModelInfo | None = max(self._models.values(), key=ModelInfo.freshness, default=None)
        self._next_version = max(self._models, default=0) + 1  # reserved before a blob is written, lock released
        self._cache = BlobCache(store)

    def latest(self) -> ModelInfo | None:
        with self._lock:
            return self._latest

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)

    def list(self) -> list[ModelInfo]:
        with self._lock:
            return [self._models[v] for v in sorted(self._models)]

    def _lookup(self, version: int) -> ModelInfo | None:
        with self._lock:
            return self._latest if version == 0 else self._models.get(version)

    def _publish_file(self, f: IO[bytes], info: ModelInfo) -> ModelInfo:
        with self._lock:
            version = self._next_version
            self._next_version += 1
        # synced and renamed without the lock: readers and long polls are not held up by a large blob's fsync
        self._store.keep_blob(version, f)
        with self._lock:
            info = dataclasses.replace(info, version=version, created_at=self._clock())
            self._store.insert_model(info).result()
            self._models[version] = info
            if self._latest is None or info.freshness() > self._latest.freshness():
                self._latest = info
            self._prune()
        self._changed.fire()
        return info

    def _prune(self) -> None:
        with_blobs = [v for v in sorted(self._models) if self._models[v].blob_available]
        for v in with_blobs[:-self._keep]:
            if self._latest is not None and v == self._latest.version:
                continue
            self._store.delete_blob(v)
            self._cache.forget(v)
            self._store.mark_blob_pruned(v)
            m = self._models[v]
            self._models[v] = dataclasses.replace(m, blob_available=False)

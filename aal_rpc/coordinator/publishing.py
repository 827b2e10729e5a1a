"""The model registry's side of a coordinator, the same for both: receiving weights (the header checked before a
byte is read, the weights streamed into the registry, which checks them and gives them a version, then what
publishing means to the coordinator: `_published`), and reading and listing versions."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from aal_rpc.chunking import iter_chunks, sha256_hex
from aal_rpc.coordinator.contract import CoordinatorConfig
from aal_rpc.coordinator.layout import spool_file
from aal_rpc.coordinator.registry import RegistryBase
from aal_rpc.coordinator.validation import check_publish
from aal_rpc.types import ModelInfo, Task

log = logging.getLogger(__name__)


class Publishing:
    """Mixed into a coordinator that has `task`, `config`, `registry`, `_last_seq_now()` (L's last seq),
    `_upload_folder` (where uploads in progress go; None: the system's temporary folder) and `_published`."""

    task: Task
    config: CoordinatorConfig
    registry: RegistryBase
    _upload_folder: Path | None

    def _last_seq_now(self) -> int:
        raise NotImplementedError

    def _published(self, server_id: str) -> None:
        raise NotImplementedError

    @property
    def weights_fingerprint(self) -> str:
        return self.registry.fingerprint

    def spool(self) -> IO[bytes]:
        return spool_file(self._upload_folder)

    def check_upload(self, *, size_bytes: int, server_id: str, trained_seq: int, num_labels: int, architecture: str,
                     metrics: dict[str, float]) -> None:
        check_publish(self.task, server_id=server_id, architecture=architecture, trained_seq=trained_seq,
                      num_labels=num_labels, metrics=metrics, last_seq=self._last_seq_now(), size=size_bytes,
                      max_bytes=self.config.max_weight_bytes)

    def receive_model(self, chunks: Iterable[bytes], *, size_bytes: int, sha256: str, server_id: str,
                      trained_seq: int, num_labels: int, architecture: str, metrics: dict[str, float]) -> ModelInfo:
        """Check an upload's header, stream its weights into the registry and publish them as a new version."""
        self.check_upload(size_bytes=size_bytes, server_id=server_id, trained_seq=trained_seq, num_labels=num_labels,
                          architecture=architecture, metrics=metrics)
        info = self.registry.receive(
            chunks, size_bytes=size_bytes, sha256=sha256, max_bytes=self.config.max_weight_bytes,
            info=ModelInfo(version=0, server_id=server_id, trained_seq=trained_seq, num_labels=num_labels,
                           architecture=architecture, metrics=dict(metrics)))
        self._published(server_id)
        log.info("model v%d from %s: %d labels, metrics %s", info.version, server_id, num_labels, metrics)
        return info

    def publish_model(self, *, data: bytes, sha256: str | None = None, **header) -> ModelInfo:
        """`receive_model` for weights already in memory (in-process callers)."""
        return self.receive_model(iter_chunks(data), size_bytes=len(data), sha256=sha256 or sha256_hex(data),
                                  **header)

    def read_model(self, version: int) -> tuple[ModelInfo, bytes]:
        return self.registry.read_blob(version)

    def list_models(self, *, after_version: int, limit: int) -> tuple[list[ModelInfo], bool]:
        return self.registry.page(after_version=after_version, limit=limit)

    def latest_model(self) -> ModelInfo | None:
        return self.registry.latest()

"""Weights cross the wire as streams of chunks of at most CHUNK_BYTES, never as one big message."""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

from aal_rpc.errors import InvalidArgument, ResourceExhausted

CHUNK_BYTES = 1 << 20  # 1 MiB: well under the 4 MiB message limit, large enough to keep streaming cheap


def iter_chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start:start + size])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assemble(chunks: Iterable[bytes], *, size_bytes: int, sha256: str, max_bytes: int) -> bytes:
    """Join chunks, rejecting oversized chunks or totals, a short (truncated) stream, or a digest mismatch."""
    parts: list[bytes] = []
    _receive(chunks, parts.append, size_bytes=size_bytes, sha256=sha256, max_bytes=max_bytes)
    return b"".join(parts)


def receive_into(chunks: Iterable[bytes], f: BinaryIO, *, size_bytes: int, sha256: str, max_bytes: int) -> None:
    """Write chunks to the file `f` as they arrive, with the checks of `assemble`: memory stays at one chunk
    however large the stream (an abandoned upload leaves nothing behind in the process)."""
    _receive(chunks, f.write, size_bytes=size_bytes, sha256=sha256, max_bytes=max_bytes)


def _receive(chunks: Iterable[bytes], sink: Callable[[bytes], object], *, size_bytes: int, sha256: str,
             max_bytes: int) -> None:
    """The digest is computed on a helper thread while chunks keep arriving (hashlib releases the GIL for
    large buffers), so verifying costs little more than receiving."""
    if size_bytes <= 0:
        raise InvalidArgument("size_bytes must be positive")
    if size_bytes > max_bytes:
        raise ResourceExhausted(f"weights of {size_bytes} bytes exceed the limit of {max_bytes}")
    received = 0
    hasher = _Hasher()
    try:
        for chunk in chunks:
            if len(chunk) > CHUNK_BYTES:
                raise InvalidArgument(f"chunk of {len(chunk)} bytes exceeds {CHUNK_BYTES}")
            received += len(chunk)
            if received > size_bytes:
                raise InvalidArgument(f"stream carries more than the announced {size_bytes} bytes")
            sink(chunk)
            hasher.put(chunk)
    finally:
        digest = hasher.finish()
    if received != size_bytes:
        raise InvalidArgument(f"truncated stream: got {received} of {size_bytes} bytes")
    if digest != sha256:
        raise InvalidArgument("sha256 of the received weights does not match the header")


class _Hasher:
    """sha256 over a sequence of chunks, on its own thread."""

    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._digest.update(chunk)

    def put(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def finish(self) -> str:
        self._queue.put(None)
        self._thread.join()
        return self._digest.hexdigest()

"""Weights cross the wire as streams of chunks of at most CHUNK_BYTES, never as one big message."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

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
    if size_bytes <= 0:
        raise InvalidArgument("size_bytes must be positive")
    if size_bytes > max_bytes:
        raise ResourceExhausted(f"weights of {size_bytes} bytes exceed the limit of {max_bytes}")
    buf = bytearray()
    digest = hashlib.sha256()
    for chunk in chunks:
        if len(chunk) > CHUNK_BYTES:
            raise InvalidArgument(f"chunk of {len(chunk)} bytes exceeds {CHUNK_BYTES}")
        if len(buf) + len(chunk) > size_bytes:
            raise InvalidArgument(f"stream carries more than the announced {size_bytes} bytes")
        buf += chunk
        digest.update(chunk)
    if len(buf) != size_bytes:
        raise InvalidArgument(f"truncated stream: got {len(buf)} of {size_bytes} bytes")
    if digest.hexdigest() != sha256:
        raise InvalidArgument("sha256 of the received weights does not match the header")
    return bytes(buf)

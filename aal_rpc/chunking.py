"""Weights cross the wire as streams of chunks of at most CHUNK_BYTES, never as one big message."""

from __future__ import annotations

import hashlib
import mmap
import queue
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import crc32c

from aal_rpc.errors import InvalidArgument, ResourceExhausted

CHUNK_BYTES = 1 << 20  # 1 MiB: well under the 4 MiB message limit, large enough to keep streaming cheap
HUGE_PAGE_BYTES = 2 << 20  # x86-64's transparent huge page; smaller blobs are received into plain memory
# crc32c computes CRC-32C with the CPU's CRC instructions (12 GB/s here, against zlib's CRC-32 at 2.3) where it
# has them, or else in software, no faster than zlib: a download is checked by CRC-32C only in hardware
FAST_CRC32C = bool(crc32c.hardware_based)


def iter_chunks(data: bytes, size: int = CHUNK_BYTES) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), size):
        yield bytes(view[start:start + size])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assemble(chunks: Iterable[bytes], *, size_bytes: int, max_bytes: int, sha256: str | None = None,
             crc32: int | None = None, crc32c: int | None = None) -> memoryview:
    """Join chunks, rejecting oversized chunks or totals, a short (truncated) stream, or a digest mismatch: the
    sha256 when given, else a download's transport check (DownloadModelResponse): the CRC-32C when it is given and
    FAST_CRC32C, else the CRC-32. The digest is computed on a helper thread as the chunks arrive.

    Returns a writable view of memory allocated once at the announced size (receive_buffer): each chunk is copied
    into place on the check's thread, while the receiving thread takes the next, and nothing copies the whole blob
    again (serde.weights_from_bytes makes its tensors views of it)."""
    view = memoryview(receive_buffer(size_bytes if 0 < size_bytes <= max_bytes else 0))
    end = 0

    def put(chunk: bytes) -> None:
        nonlocal end
        view[end:end + len(chunk)] = chunk  # _receive has checked that it fits
        end += len(chunk)

    if sha256 is not None:
        check = _sha256_check(sha256, put)
    elif crc32c is not None and FAST_CRC32C:
        check = _crc32c_check(crc32c, put)
    else:
        check = _crc32_check(crc32, put)
    _receive(chunks, _ignore, size_bytes=size_bytes, max_bytes=max_bytes, check=check)
    return view


def _ignore(chunk: bytes) -> None:
    """A chunk's sink that does nothing (assemble's copy is done on the check's thread)."""


def receive_buffer(size: int) -> bytearray | mmap.mmap:
    """Zeroed, writable memory for `size` bytes, asking the kernel for huge pages when it is large.

    Fresh memory is faulted in a page at a time as the chunks land: in 4 KiB pages that cost more than the copy
    itself (40 of the 56 ms that copying 45 MB took here), in 2 MiB pages almost nothing (14 ms). A private
    anonymous map takes the advice where transparent huge pages are on `madvise`; elsewhere (Windows, or a small
    blob) it is plain memory."""
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if size < HUGE_PAGE_BYTES or advice is None or not hasattr(mmap, "MAP_PRIVATE"):
        return bytearray(size)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        memory.madvise(advice)
    except OSError:  # a kernel without transparent huge pages: 4 KiB pages, as bytearray would have
        pass
    return memory


def receive_into(chunks: Iterable[bytes], f: IO[bytes], *, size_bytes: int, sha256: str, max_bytes: int) -> None:
    """Write chunks to the file `f` as they arrive, with the checks of `assemble`: memory stays at one chunk
    however large the stream (an abandoned upload leaves nothing behind in the process)."""
    _receive(chunks, f.write, size_bytes=size_bytes, max_bytes=max_bytes, check=_sha256_check(sha256))


def _receive(chunks: Iterable[bytes], sink: Callable[[bytes], object], *, size_bytes: int, max_bytes: int,
             check: _Check) -> None:
    if size_bytes <= 0:
        raise InvalidArgument("size_bytes must be positive")
    if size_bytes > max_bytes:
        raise ResourceExhausted(f"weights of {size_bytes} bytes exceed the limit of {max_bytes}")
    received = 0
    try:
        for chunk in chunks:
            if len(chunk) > CHUNK_BYTES:
                raise InvalidArgument(f"chunk of {len(chunk)} bytes exceeds {CHUNK_BYTES}")
            received += len(chunk)
            if received > size_bytes:
                raise InvalidArgument(f"stream carries more than the announced {size_bytes} bytes")
            sink(chunk)
            check.put(chunk)
    finally:
        matches = check.finish()
    if received != size_bytes:
        raise InvalidArgument(f"truncated stream: got {received} of {size_bytes} bytes")
    if not matches:
        raise InvalidArgument(f"{check.name} of the received weights does not match the header")


def crc32_of(data: bytes) -> int:
    return zlib.crc32(data)


def crc32c_of(data: bytes) -> int:
    return crc32c.crc32c(data)


class _Check:
    """A digest over a sequence of chunks, computed on its own thread while chunks keep arriving (hashlib and
    zlib release the GIL for large buffers), so verifying costs little more than receiving."""

    def __init__(self, name: str, update: Callable[[bytes], None], matches: Callable[[], bool],
                 place: Callable[[bytes], None] = _ignore):
        self.name = name
        self._place = place  # what else is done with each chunk on this thread, before the digest (its copy)
        self._update = update
        self._matches = matches
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._place(chunk)
            self._update(chunk)

    def put(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def finish(self) -> bool:
        self._queue.put(None)
        self._thread.join()
        return self._matches()


def _sha256_check(expected: str, place: Callable[[bytes], None] = _ignore) -> _Check:
    digest = hashlib.sha256()
    return _Check("sha256", digest.update, lambda: digest.hexdigest() == expected, place)


def _crc32_check(expected: int | None, place: Callable[[bytes], None] = _ignore) -> _Check:
    """zlib's CRC-32: the check of a transfer (downloads). Per 45 MB download it costs the client 24 ms of CPU
    where sha256 costs 48 (with the CPU's SHA extensions, on a loaded 2-core machine; docs/PERFORMANCE.md)."""
    crc = [0]

    def update(chunk: bytes) -> None:
        crc[0] = zlib.crc32(chunk, crc[0])

    return _Check("CRC-32", update, lambda: expected is None or crc[0] == expected, place)


def _crc32c_check(expected: int, place: Callable[[bytes], None] = _ignore) -> _Check:
    """CRC-32C in hardware (crc32c, which releases the GIL for large buffers as zlib does): the same check of a
    transfer as _crc32_check, for a fifth of its CPU."""
    crc = crc32c.CRC32CHash()
    return _Check("CRC-32C", crc.update, lambda: crc.checksum == expected, place)

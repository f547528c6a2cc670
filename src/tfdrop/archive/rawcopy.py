"""Moving finished bytes between files without passing them through Python.

A conversion's worker processes write their encoded records to spool files; the parent appends
those byte ranges to the output zip's member (:class:`tfdrop.archive.stored.StoredWriter`) or,
for a subset whose member comes later, to its spill file: :class:`RangeCopier` copies them with
``preadv``/``pwrite`` through one reused buffer, with no Python object per chunk.
(``copy_file_range`` and ``sendfile`` were measured too, copying a 1.1 GB file on ext4 here,
five alternating runs each: medians 1.21 s and 1.34 s against 0.45 s for the reused buffer;
ext4 has no reflinks, so the kernel copy goes through its splice path.)
:func:`crc32_combine` gives the CRC-32 of two concatenated ranges from theirs, so the zip
member's CRC is known without reading its bytes again (zlib's ``crc32_combine``, which Python
does not expose: GF(2) polynomial arithmetic modulo the CRC-32 polynomial).
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterable
from typing import IO, Final

_POLY: Final = 0xEDB88320  # CRC-32 (zip, gzip), bit-reflected
_TOP: Final = 1 << 31  # the polynomial 1 (x^0) in the reflected order
_CHUNK: Final = 1 << 20


def _multmodp(a: int, b: int) -> int:
    """a(x) * b(x) modulo the CRC-32 polynomial (both reflected)."""
    m = _TOP
    p = 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _powers() -> tuple[int, ...]:
    """x^(2^k) modulo the polynomial, k = 0..31."""
    out = []
    p = _TOP >> 1  # x^1
    for _ in range(32):
        out.append(p)
        p = _multmodp(p, p)
    return tuple(out)


_X2N: Final = _powers()


def _x8n(n: int) -> int:
    """x^(8n) modulo the polynomial: appending n zero bytes."""
    xp = _TOP
    k = 3
    while n:
        if n & 1:
            xp = _multmodp(_X2N[k & 31], xp)
        n >>= 1
        k += 1
    return xp


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """The CRC-32 of ``a + b`` from ``crc32(a)``, ``crc32(b)`` and ``len(b)``."""
    if len2 <= 0:
        return crc1
    return _multmodp(_x8n(len2), crc1) ^ crc2


class RangeCopier:
    """Copies byte ranges between open files through one buffer of its own (not shared
    between threads: each writer holds its own)."""

    def __init__(self, chunk: int = _CHUNK) -> None:
        self._buf: mmap.mmap | None = None
        self._chunk = chunk

    def append(self, f: IO[bytes], pos: int, ranges: Iterable[tuple[int, int, int]]) -> int:
        """Copy byte ranges ``(fd, offset, length)``, in order, to the buffered file ``f`` at
        ``pos`` (its end), then leave ``f`` positioned after them; how many bytes."""
        f.flush()
        end = pos
        for src_fd, src_offset, length in ranges:
            self.copy(src_fd, src_offset, f.fileno(), end, length)
            end += length
        f.seek(end)
        return end - pos

    def copy(self, src_fd: int, src_offset: int, dst_fd: int, dst_offset: int, length: int) -> None:
        """Copy ``length`` bytes of ``src_fd`` at ``src_offset`` to ``dst_fd`` at
        ``dst_offset`` (neither file's position moves).

        Raises:
            OSError: Reading or writing failed (ENOSPC, EIO, ...), or the source ended early.
        """
        if self._buf is None:
            self._buf = mmap.mmap(-1, self._chunk)
        view = memoryview(self._buf)
        done = 0
        while done < length:
            got = os.preadv(src_fd, [view[: min(self._chunk, length - done)]], src_offset + done)
            if got <= 0:
                raise OSError(errno.EIO, f"a file ended {length - done} bytes early")
            put = 0
            while put < got:
                put += os.pwrite(dst_fd, view[put:got], dst_offset + done + put)
            done += got

"""Writing a stored zip member through one page-aligned buffer, its whole blocks past the page
cache where :mod:`tfdrop.archive.direct` gives a direct descriptor of the zip.

A TFRecord member is the bulk of an output archive (1.2 GB for 20,000 VOC images). Written
through zipfile's member writer, every byte lands in a new page-cache page: cProfile of a
single-process VOC 20k conversion put 3.8 s of a 12.8 s run in ``BufferedWriter.write`` (6.0 s
of kernel time in all). :class:`StoredWriter` takes the member's bytes (records a writer
frames, byte ranges of a worker's spool file) into one buffer and writes each full buffer
with one ``pwrite``: through the direct descriptor when there is one, else buffered. Only
the bytes before the member's first block boundary (its local header ends in that block) and
its last partial block are written buffered, so every direct write starts and ends on a
boundary.

A refused alignment (``EINVAL``) writes the rest buffered for good, a short direct write
finishes its buffer buffered. The member's CRC-32 is computed as the bytes come (or combined
from a range's known CRC), and zipfile writes the header and central directory as usual.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from collections.abc import Iterable
from typing import IO, Final, Protocol

from tfdrop.archive.direct import ALIGN
from tfdrop.archive.rawcopy import crc32_combine
from tfdrop.codec import inflate

CHUNK: Final = 1 << 20
"""The buffer: a direct write's most bytes at once (a multiple of :data:`ALIGN`)."""

_FIELDS: Final = ("_crc", "_file_size", "_compress_size", "_fileobj", "_compressor")


class CommitWatch(Protocol):
    """Told where a :class:`StoredWriter`'s member stands on the disk: every byte before
    ``end`` is written (it only grows: nothing before it is written again)."""

    def committed(self, end: int) -> None: ...

    def ended(self, end: int) -> None:
        """The member's last byte is written: it ends at ``end``."""

    def dropped(self) -> None:
        """The member will never be finished (the zip is being discarded)."""


def writes_raw(member: IO[bytes]) -> bool:
    """Whether ``member`` (zipfile's writer of a stored member) has the fields this module
    sets; another Python's zipfile gets its bytes through its own ``write``."""
    return all(hasattr(member, f) for f in _FIELDS) and member._compressor is None  # type: ignore[attr-defined]


class StoredWriter:
    """The bytes of the stored member ``member`` (see :func:`writes_raw`), appended through
    one aligned buffer; ``direct`` is an ``O_DIRECT`` descriptor of the zip's file, or None.

    Use :meth:`write` and :meth:`append_ranges` in any order, then :meth:`close` (which ends
    the member). Not shared between threads.
    """

    def __init__(self, member: IO[bytes], direct: int | None, *, chunk: int = CHUNK) -> None:
        if chunk <= 0 or chunk % ALIGN:
            raise ValueError(f"the buffer must be a positive multiple of {ALIGN} bytes")
        self._member = member
        self._out: IO[bytes] = member._fileobj  # type: ignore[attr-defined]
        self._out.flush()
        self._fd = self._out.fileno()
        self.direct = direct
        self.wrote_direct = False
        """At least one block went through the direct descriptor."""
        self.refused = False
        """A direct write was refused (``EINVAL``); everything after it is buffered."""
        self._buf = mmap.mmap(-1, chunk)  # page-aligned, as O_DIRECT needs
        self._view = memoryview(self._buf)
        self._chunk = chunk
        self._base = self._out.tell()  # the file offset of the buffer's first byte
        self.start = self._base
        """Where the member's data starts in the zip."""
        self.watch: CommitWatch | None = None
        self._head = -self._base % ALIGN  # bytes before the first block boundary
        self._fill = 0
        self.crc = 0
        self.size = 0
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; its length."""
        view = memoryview(data).cast("B")
        self.crc = inflate.crc32(view, self.crc)
        self.size += len(view)
        done = 0
        while done < len(view):
            n = min(self._chunk - self._fill, len(view) - done)
            self._view[self._fill : self._fill + n] = view[done : done + n]
            self._fill += n
            done += n
            if self._fill == self._chunk:
                self._drain()
        return len(view)

    def append_ranges(self, ranges: Iterable[tuple[int, int, int]], crc: int) -> None:
        """Append byte ranges ``(fd, offset, length)`` of open files, in order; ``crc`` is
        the CRC-32 of them all (a worker's spooled records, and the source's bytes they name:
        not hashed again).

        Raises:
            OSError: Reading or writing failed, or a file ended early.
        """
        total = 0
        view = self._view
        chunk = self._chunk
        for fd, offset, length in ranges:
            done = 0
            while done < length:
                want = min(chunk - self._fill, length - done)
                n = os.preadv(fd, [view[self._fill : self._fill + want]], offset + done)
                if n <= 0:
                    raise OSError(errno.EIO, f"a file ended {length - done} bytes early")
                self._fill += n
                done += n
                if self._fill == chunk:
                    self._drain()
            total += length
        self.crc = crc32_combine(self.crc, crc, total)
        self.size += total

    def flush(self) -> None:
        """Nothing: the buffer is written when full and at :meth:`close` (a partial block
        written now would leave every later block off its boundary)."""

    def _drain(self, *, last: bool = False) -> None:
        """Write the buffer's whole blocks (every byte if ``last``) at their offset; keep the
        partial block at the buffer's start."""
        if self._head:
            self._align()
        whole = self._fill - self._fill % ALIGN
        done = self._put_direct(whole) if self.direct is not None and not self.refused else 0
        end = self._fill if last else whole
        self._pwrite(self._fd, done, end)
        rest = self._fill - whole
        if not last and rest:
            self._view[:rest] = self._view[whole : self._fill]
        self._base += whole
        self._fill = rest
        if self.watch is not None and not last:
            self.watch.committed(self._base)

    def _align(self) -> None:
        """Write the bytes before the first block boundary buffered and move the rest to the
        buffer's start, which is then on a boundary (once per member)."""
        n = min(self._head, self._fill)
        self._pwrite(self._fd, 0, n)
        self._view[: self._fill - n] = self._view[n : self._fill]
        self._base += n
        self._fill -= n
        self._head -= n

    def _put_direct(self, whole: int) -> int:
        """Write the buffer's first ``whole`` bytes through the direct descriptor; how many
        went (the rest is written buffered)."""
        assert self.direct is not None
        if not whole:
            return 0
        try:
            put = os.pwrite(self.direct, self._view[:whole], self._base)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.refused = True
            return 0
        self.wrote_direct = True
        return put

    def _pwrite(self, fd: int, start: int, end: int) -> None:
        while start < end:
            start += os.pwrite(fd, self._view[start:end], self._base + start)

    def close(self) -> None:
        """Write what the buffer holds and end the member (zipfile writes its header)."""
        if self.closed:
            return
        self._drain(last=True)  # on an error (ENOSPC) abort() still frees and tells the watch
        self.closed = True
        end = self._base + self._fill
        if self.watch is not None:
            self.watch.ended(end)
        self._free()
        member = self._member
        member._crc = self.crc  # type: ignore[attr-defined]
        member._file_size = self.size  # type: ignore[attr-defined]
        member._compress_size = self.size  # type: ignore[attr-defined]
        self._out.seek(end)
        member.close()

    def abort(self) -> None:
        """Drop the buffer without writing it (the zip is being discarded)."""
        if not self.closed:
            self.closed = True
            self._free()
            if self.watch is not None:
                self.watch.dropped()

    def _free(self) -> None:
        self._view.release()
        # a slice of it may live on in the traceback of the error that stopped the writing:
        # then the map goes when that does
        with contextlib.suppress(BufferError):
            self._buf.close()

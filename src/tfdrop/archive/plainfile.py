"""Reading one plain file as a member, for the sources over files on disk (folders, bare
TFRecords).

A file may change while a conversion reads it (a drop still being copied, ``cp`` over it, a
rewrite in place). Sizes alone miss a same-size rewrite, so each read is checked against the
file's :data:`~tfdrop.archive.source.Stamp` once its data ends: a reader that reached the end
and a range read both prove the bytes they returned came from the file that was listed.

What a stamp cannot see, and a plain file has no checksum to catch: a same-size rewrite whose
mtime was put back (only its ctime moves, as it does for a chmod or a hard link, which must not
fail a run), and writes through a shared ``mmap`` of the file, which move neither time.
"""

from __future__ import annotations

import os

from tfdrop.archive.source import CHUNK, CheckedReader, Stamp, check_stamp
from tfdrop.errors import ArchiveError, TfdropError


class FileReader(CheckedReader):
    """The bytes of an open file descriptor (owned, closed with the reader), exactly ``size``
    of them, and, when ``stamp`` is given, from the file it identifies."""

    def __init__(
        self, fd: int, archive: str, member: str, size: int, stamp: Stamp | None = None
    ) -> None:
        super().__init__(archive, member, size)
        self._fd = fd
        self._stamp = stamp
        self._eof = False

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def _read_into(self, view: memoryview) -> int | None:
        left = self.declared - self.produced
        if left <= 0:
            return None  # the end probe goes through _produce
        n = os.readv(self._fd, [view[:left]])
        self._ended(n == 0)
        return n

    def _produce(self, want: int) -> bytes:
        left = self.declared - self.produced
        # Once the listed size is read, probe one more byte so a growing file is noticed.
        data = os.read(self._fd, min(want, CHUNK, left) if left > 0 else 1)
        self._ended(not data)
        return data

    def _ended(self, eof: bool) -> None:
        # Checked before the size: a file rewritten shorter is "changed", not "truncated".
        if eof and self._stamp is not None:
            check_stamp(self._fd, self._stamp, archive=self.archive, member=self.member)
        self._eof = eof

    def _at_end(self) -> bool:
        return self._eof

    def _too_long(self) -> TfdropError:
        return ArchiveError(
            f"file grew past its listed size of {self.declared} bytes while being read",
            hint="the drop was still being written; it will be retried once settled",
        )


def pread_exact(
    fd: int, offset: int, size: int, stamp: Stamp, *, archive: str, member: str
) -> bytes:
    """``size`` bytes at ``offset`` of an open file that must still be the one ``stamp``
    names, checked after the read (a rewrite during it is seen, not mixed in).

    Raises:
        ArchiveError: The file changed, or ends before the range does.
    """
    data = os.pread(fd, size, offset)
    check_stamp(fd, stamp, archive=archive, member=member)
    if len(data) != size:
        raise ArchiveError(
            "the file ends before the range read from it", archive=archive, member=member
        )
    return data

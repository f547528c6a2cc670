"""Writing an output archive's bulk bytes past the page cache (``O_DIRECT``), where that pays.

A conversion's parent process appends the records its workers spooled to the output zip
(:class:`~tfdrop.archive.rawcopy.RangeCopier`). Through the page cache every one of those
bytes lands in a freshly allocated page, and the fsync that publishing runs writes them out
again later. On this project's VM, writing 1.2 GB into new page-cache pages cost 2.3-6.5 s of
kernel time (the host backs each new guest page on first touch); with ``O_DIRECT`` from one
reused aligned buffer the same bytes went to the disk in 0.4-1.1 s with 0.1-0.5 s of kernel
time (``dd``, alternating). The parent's ``pwrite`` was 4.8 s of an 11 s conversion.

Only local block file systems take it (:data:`LOCAL`): on a network share ``O_DIRECT`` turns
every chunk into a synchronous round trip, on tmpfs the page cache *is* the storage, and
anything unknown keeps buffered writes. ``TFDROP_DIRECT_IO=0`` turns it off (set it where the
output folder sits on a slow spinning disk: the read-back then reads from the disk, not from
memory). Nothing here changes a byte of the output; a file system that refuses the alignment
(``EINVAL``) or ends a direct write short gets the rest written buffered.
"""

from __future__ import annotations

import errno
import mmap
import os
import sys
import threading
from typing import Final

ALIGN: Final = 4096
"""File offsets, lengths and buffer addresses of direct writes are multiples of this (the
logical block size of every disk in use is 512 or 4096)."""

LOCAL: Final = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs"})
"""File systems on a local block device whose direct writes are the disk's own speed."""

_OFF: Final = ("0", "false", "no", "off")


def enabled() -> bool:
    """Whether direct writes may be used at all (``TFDROP_DIRECT_IO`` not set to off)."""
    flag = getattr(os, "O_DIRECT", None)
    return flag is not None and os.environ.get("TFDROP_DIRECT_IO", "").lower() not in _OFF


def fs_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the file system ``path`` (which exists) is on, from the kernel's mount
    table: the mount with the longest mount point that holds it; None when unknown."""
    try:
        real = os.path.realpath(path)
        # the kernel's bytes, decoded as os.readlink decodes a path (a mount point whose
        # name is not UTF-8 still matches)
        with open(mountinfo, encoding=sys.getfilesystemencoding(), errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    best, kind = -1, None
    for line in lines:
        fields = line.split(" ")
        try:
            sep = fields.index("-")
            point = _unescape(fields[4])
            fstype = fields[sep + 1]
        except (ValueError, IndexError):
            continue
        if _under(real, point) and len(point) >= best:  # later mounts shadow earlier ones
            best, kind = len(point), fstype
    return kind


def open_read(path: str, like: int) -> int | None:
    """``path`` opened for reading with ``O_DIRECT`` where direct writes would be used, if it
    is the file already open as ``like``; else None."""
    if not enabled() or fs_type(path) not in LOCAL:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_DIRECT)
    except OSError:
        return None
    if not _same(fd, like):
        os.close(fd)
        return None
    return fd


def open_for(fd: int) -> int | None:
    """A second descriptor of the open file ``fd`` with ``O_DIRECT``, for appending its bulk
    bytes, or None where direct writes are off, not known to pay, or not possible."""
    if not enabled():
        return None
    link = f"/proc/self/fd/{fd}"
    try:
        path = os.readlink(link)
    except OSError:
        return None
    if fs_type(path) not in LOCAL:
        return None
    try:
        direct = os.open(link, os.O_WRONLY | os.O_CLOEXEC | os.O_DIRECT)
    except OSError:
        return None
    if not _same(direct, fd):
        os.close(direct)
        return None
    return direct


class AlignedReads:
    """Sequential reads of any offset and length through an ``O_DIRECT`` descriptor, by way of
    one aligned buffer of its own, each read starting the next in a thread so the disk works
    while the caller checks what it got (the read-back of an archive just written past the
    page cache: buffered, its 1.2 GB landed in new page-cache pages, 1.4-1.8 s here; direct
    and one read at a time, 0.94 s of disk waits plus the checks after each)."""

    def __init__(self, fd: int, size: int = 4 << 20) -> None:
        self.size = size - size % ALIGN or ALIGN
        """The most bytes one :meth:`pread_into` reads."""
        try:
            self._buf = mmap.mmap(-1, self.size + 2 * ALIGN)
        except BaseException:  # out of address space: the descriptor is not left open
            os.close(fd)
            raise
        self.fd = fd
        self._ahead: threading.Thread | None = None
        self._start = 0  # the file offset the buffer holds, and how many bytes (or an error)
        self._got: int | OSError = 0
        self._end = False  # the last read ended at the file's end

    def pread_into(self, view: memoryview, offset: int) -> int | None:
        """Up to ``min(len(view), size)`` bytes at ``offset`` into ``view``; how many (fewer
        only at the file's end), or None when the file system refuses the alignment."""
        n = min(len(view), self.size)
        self._wait()
        got = self._got
        if not (isinstance(got, int) and self._start <= offset and offset + n <= self._start + got):
            start = offset - offset % ALIGN
            self._read(start, -(-(offset + n) // ALIGN) * ALIGN - start)
            got = self._got
        if isinstance(got, OSError):
            if got.errno == errno.EINVAL:
                return None
            raise got
        skip = offset - self._start
        have = max(0, min(n, got - skip))
        view[:have] = memoryview(self._buf)[skip : skip + have]
        if not self._end and have:  # not at the file's end: read the next one now
            nxt = offset + have - (offset + have) % ALIGN
            self._ahead = threading.Thread(
                target=self._read, args=(nxt, self.size + ALIGN), daemon=True
            )
            self._ahead.start()
        return have

    def _read(self, start: int, length: int) -> None:
        self._start = start
        try:
            self._got = os.preadv(self.fd, [memoryview(self._buf)[:length]], start)
            self._end = self._got < length
        except OSError as e:
            self._got, self._end = e, True

    def _wait(self) -> None:
        if self._ahead is not None:
            self._ahead.join()
            self._ahead = None

    def close(self) -> None:
        self._wait()  # the thread reads this descriptor
        os.close(self.fd)


def _same(a: int, b: int) -> bool:
    try:
        sa, sb = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _under(path: str, point: str) -> bool:
    return point in ("/", path) or path.startswith(point.rstrip("/") + "/")


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come as octal escapes."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)

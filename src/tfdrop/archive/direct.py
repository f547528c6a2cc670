"""Writing an output archive's bulk bytes past the page cache (``O_DIRECT``), where that pays.

A conversion writes its records, or appends those its workers spooled, to the output zip's
TFRecord member (:class:`~tfdrop.archive.stored.StoredWriter`). Through the page cache every
one of those bytes lands in a freshly allocated page, and the fsync that publishing runs
writes them out again later. On this project's VM, writing 1.2 GB into new page-cache pages
cost 2.3-6.5 s of kernel time (the host backs each new guest page on first touch); with
``O_DIRECT`` from one reused aligned buffer the same bytes went to the disk in 0.4-1.1 s
with 0.1-0.5 s of kernel time (``dd``, alternating). The parent's ``pwrite`` was 4.8 s of
an 11 s conversion; a single process's ``BufferedWriter.write`` 3.8 s of 12.8 s.

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
import re
import sys
import threading
from collections import deque
from typing import Final

ALIGN: Final = 4096
"""File offsets, lengths and buffer addresses of direct writes are multiples of this (the
logical block size of every disk in use is 512 or 4096)."""

LOCAL: Final = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs"})
"""File systems on a local block device whose direct writes are the disk's own speed."""

_OFF: Final = ("0", "false", "no", "off")
_ESCAPE: Final = re.compile(r"\\([0-7]{3})")


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
    return _open(path, path, os.O_RDONLY, like)


def open_for(fd: int) -> int | None:
    """A second descriptor of the open file ``fd`` with ``O_DIRECT``, for appending its bulk
    bytes, or None where direct writes are off, not known to pay, or not possible."""
    link = f"/proc/self/fd/{fd}"
    try:
        path = os.readlink(link)
    except OSError:
        return None
    return _open(path, link, os.O_WRONLY, fd)


def _open(path: str, name: str, flags: int, like: int) -> int | None:
    """``name`` opened with ``flags`` and ``O_DIRECT`` when direct I/O is on, ``path`` is on
    a :data:`LOCAL` file system and what opened is the file open as ``like``; else None."""
    if not enabled() or fs_type(path) not in LOCAL:
        return None
    try:
        fd = os.open(name, flags | os.O_CLOEXEC | os.O_DIRECT)
    except OSError:
        return None
    if not _same(fd, like):
        os.close(fd)
        return None
    return fd


class _Region:
    """One aligned read of ``AlignedReads``, running in a thread of its own."""

    __slots__ = ("buf", "got", "start", "thread")

    def __init__(self, fd: int, buf: mmap.mmap, start: int) -> None:
        self.buf = buf
        self.start = start
        self.got: int | OSError = 0
        self.thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self.thread.start()

    def _read(self, fd: int) -> None:
        try:
            self.got = os.preadv(fd, [memoryview(self.buf)], self.start)
        except OSError as e:
            self.got = e

    def wait(self) -> int | OSError:
        self.thread.join()
        return self.got


class AlignedReads:
    """Sequential reads of any offset and length through an ``O_DIRECT`` descriptor, by way of
    aligned buffers of its own: the next ``ahead`` aligned blocks of ``size`` are read in
    threads while the caller checks what it got, so the disk always has two reads to work on
    (the read-back of an archive just written past the page cache: buffered, its 1.2 GB landed
    in new page-cache pages, 1.4-1.8 s here; direct, one read at a time, 0.94 s of disk
    reads, two at a time 0.66 s)."""

    def __init__(self, fd: int, size: int = 4 << 20, ahead: int = 2) -> None:
        self.size = max(ALIGN, size - size % ALIGN)
        """The most bytes one :meth:`pread_into` gives."""
        try:
            self._free = [mmap.mmap(-1, self.size) for _ in range(ahead + 1)]
            self._file_size = os.fstat(fd).st_size
        except BaseException:  # out of address space: the descriptor is not left open
            os.close(fd)
            raise
        self.fd = fd
        self._queue: deque[_Region] = deque()
        self._next = 0  # where the next region to read starts

    def pread_into(self, view: memoryview, offset: int) -> int | None:
        """Up to ``min(len(view), size)`` bytes at ``offset`` into ``view``; how many (fewer
        only at the file's end), or None when the file system refuses the alignment."""
        n = min(len(view), self.size)
        if not self._queue or not self._queue[0].start <= offset < self._next:
            self._restart(offset)
        done = 0
        while done < n and self._queue:
            region = self._queue[0]
            got = region.wait()
            if isinstance(got, OSError):
                self._restart(self._file_size)  # nothing more is read ahead
                if got.errno == errno.EINVAL:
                    return done or None
                raise got
            pos = offset + done
            skip = pos - region.start
            take = min(n - done, got - skip)
            if take > 0:
                view[done : done + take] = memoryview(region.buf)[skip : skip + take]
                done += take
            if skip + max(take, 0) >= got:  # this region is used up
                self._free.append(self._queue.popleft().buf)
                if got < self.size:  # the file's end (it shrank)
                    break
                self._fill()
        return done

    def _restart(self, offset: int) -> None:
        """Drop the reads ahead; read on from ``offset``'s block."""
        self._drain()
        self._next = offset - offset % ALIGN
        self._fill()

    def _fill(self) -> None:
        while self._free and self._next < self._file_size:
            self._queue.append(_Region(self.fd, self._free.pop(), self._next))
            self._next += self.size

    def _drain(self) -> None:
        while self._queue:
            region = self._queue.popleft()
            region.wait()
            self._free.append(region.buf)

    def close(self) -> None:
        self._drain()  # the threads read this descriptor
        os.close(self.fd)


def _same(a: int, b: int) -> bool:
    try:
        return os.path.samestat(os.fstat(a), os.fstat(b))
    except OSError:
        return False


def _under(path: str, point: str) -> bool:
    return point in ("/", path) or path.startswith(point.rstrip("/") + "/")


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes come as octal escapes."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)

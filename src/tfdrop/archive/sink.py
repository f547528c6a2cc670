"""Streaming zip writer for tfdrop's outputs (SPEC.md "The TFRecord archive").

Members are written one at a time and never held whole in memory: TFRecord shards and images
are STORED (already compressed; deflating them costs CPU for nothing), annotation text
(XML/JSON/txt/pbtxt) is deflated. Names go through the same rules as on reading, so a file
name taken from an annotation can never produce a zip-slip archive for the next tool.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
import zipfile
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import IO, BinaryIO, Protocol, Self

from tfdrop.archive import direct
from tfdrop.archive.limits import check_write_name
from tfdrop.archive.rawcopy import RangeCopier
from tfdrop.archive.source import CHUNK
from tfdrop.archive.stored import StoredWriter, writes_raw
from tfdrop.errors import FormatError

# zipfile switches to zip64 records past this size; members that may reach it must be
# opened with force_zip64 because their size is not known when the header is written.
_ZIP64_LIMIT = (1 << 31) - 1


DosTime = tuple[int, int, int, int, int, int]


class MemberWriter(Protocol):
    """A stored member being written (:meth:`ZipSink.open_stored`): bytes, and byte ranges of
    an open file whose CRC-32 is known; :meth:`close` ends the member."""

    def write(self, data: bytes, /) -> int: ...

    def append_ranges(self, ranges: Iterable[tuple[int, int, int]], crc: int, /) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def dos_time(seconds: float) -> DosTime:
    """A zip member's timestamp for ``seconds`` since the epoch (local time, as zip tools
    write it), within what the format holds (1980 to 2107)."""
    t = time.localtime(seconds)[:6]
    return max((1980, 1, 1, 0, 0, 0), min(t, (2107, 12, 31, 23, 59, 58)))


def _open_empty(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` for writing from its start, emptied, without O_TRUNC on a file that already
    is empty (the temp file :func:`tfdrop.publish.atomic_path` made): ext4 takes a truncate
    to nothing as "replacing a file" and writes it all out when it is closed, which kept a
    1.1 GB archive's close waiting 0.3-0.5 s; the fsync that publishing runs anyway does it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size:
            os.ftruncate(fd, 0)
        return os.fdopen(fd, "wb")
    except BaseException:
        os.close(fd)
        raise


class ZipSink:
    """Writes a zip member by member.

    Args:
        target: A path, or a binary file opened for writing (e.g. from
            :func:`tfdrop.publish.atomic_write`); a file object is not closed by the sink.
        date_time: The timestamp of every member; the current local time when omitted.
        on_stored: Called with the name and the writer of every member :meth:`open_stored`
            writes through a :class:`~tfdrop.archive.stored.StoredWriter` (a read-back that
            follows it: :mod:`tfdrop.follow`).

    Example:
        >>> with atomic_path(out) as tmp, ZipSink(tmp) as sink:  # doctest: +SKIP
        ...     with sink.open_member("default.tfrecord", compress=False) as w:
        ...         w.write(frame(record))
        ...     sink.write_member("label_map.pbtxt", text.encode(), compress=True)
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | BinaryIO,
        *,
        date_time: DosTime | None = None,
        on_stored: Callable[[str, StoredWriter], None] | None = None,
    ) -> None:
        self._on_stored = on_stored
        self._date_time = date_time if date_time is not None else time.localtime()[:6]
        self._own: BinaryIO | None = None
        if isinstance(target, (str, os.PathLike)):
            self._label = os.fspath(target)
            # Opened here, not by zipfile, so abort() can drop a half-written zip cleanly.
            self._own = target = _open_empty(target)
        else:
            self._label = getattr(target, "name", "<zip>")
        self._zf = zipfile.ZipFile(target, "w", allowZip64=True)
        self._names: list[str] = []
        self._taken: set[str] = set()  # membership in O(1): a writer may add 100,000s of members
        self.copier = RangeCopier()  # copies spooled byte ranges into spill files
        self._direct: int | None = None  # the zip's file with O_DIRECT, for open_stored
        self._direct_tried = False
        self._stored: list[StoredWriter] = []

    @property
    def wrote_direct(self) -> bool:
        """Whether a member's blocks went past the page cache (:mod:`tfdrop.archive.direct`)."""
        return any(w.wrote_direct for w in self._stored)

    @property
    def date_time(self) -> DosTime:
        """Every member's timestamp (local time): a writer that dates its file's content
        (CVAT's ``<dumped>``) uses it, so the same input gives the same bytes."""
        return self._date_time

    @property
    def names(self) -> list[str]:
        """The members written so far, in order."""
        return list(self._names)

    def open_member(self, name: str, *, compress: bool, size: int | None = None) -> IO[bytes]:
        """Start a member and return a writer for its bytes; close it before the next one.

        Args:
            name: A relative ``/``-separated file name (checked like names on reading).
            compress: Deflate the member (text) or store it (TFRecords, images).
            size: The final size if known; an unknown size uses zip64 headers so the member
                may grow past 4 GiB.

        Raises:
            UnsafeArchiveError: The name is absolute, has ``..``, a drive letter or a NUL.
            FormatError: The name was already written (two items share a file name).
        """
        check_write_name(name, archive=self._label)
        if name in self._taken:
            # the name comes from the input (an item's file name): say so, not our temp file
            raise FormatError(
                f"two items would both be written as {name} (their file names collide)",
                hint="give the items distinct file names (or put them in different subsets)",
            )
        info = zipfile.ZipInfo(name, self._date_time)
        info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        info.external_attr = (stat.S_IFREG | 0o644) << 16
        if size is not None:
            info.file_size = size
        self._names.append(name)
        self._taken.add(name)
        large = size is None or size > _ZIP64_LIMIT
        return self._zf.open(info, "w", force_zip64=large)

    def write_member(self, name: str, data: bytes, *, compress: bool) -> None:
        """Write a whole member from bytes (label maps, annotation files, small images)."""
        with self.open_member(name, compress=compress, size=len(data)) as w:
            w.write(data)

    def add_file(self, name: str, path: str | os.PathLike[str], *, compress: bool) -> None:
        """Copy a finished file (e.g. a temp TFRecord shard) into the zip in chunks."""
        with (
            open(path, "rb") as src,
            self.open_member(name, compress=compress, size=os.path.getsize(path)) as w,
        ):
            shutil.copyfileobj(src, w, CHUNK)

    def add_file_known(
        self, name: str, path: str | os.PathLike[str], *, crc: int, size: int
    ) -> None:
        """Store a finished file whose CRC-32 and size are known (a spilled TFRecord shard),
        copied by :meth:`MemberWriter.append_ranges` (not hashed again)."""
        fd = os.open(path, os.O_RDONLY)
        try:
            w = self.open_stored(name, size=size)
            w.append_ranges([(fd, 0, size)], crc)
            w.close()
        finally:
            os.close(fd)

    def open_stored(self, name: str, *, size: int | None = None) -> MemberWriter:
        """Start a stored member (as :meth:`open_member`) written through one aligned buffer
        (:class:`~tfdrop.archive.stored.StoredWriter`): its whole blocks past the page cache
        where :func:`tfdrop.archive.direct.open_for` allows, and byte ranges of a worker's
        spool file appended with their CRC-32 combined, without a Python object per record.
        Where zipfile's member writer lacks the fields this relies on (another Python), the
        bytes go through its own ``write``."""
        member = self.open_member(name, compress=False, size=size)
        if not writes_raw(member):
            return _Through(member)
        if not self._direct_tried:
            self._direct_tried = True
            self._direct = direct.open_for(member._fileobj.fileno())  # type: ignore[attr-defined]
        w = StoredWriter(member, self._direct)
        self._stored.append(w)
        if self._on_stored is not None:
            self._on_stored(name, w)
        return w

    def close(self) -> None:
        """Write the central directory and close the zip."""
        try:
            self._zf.close()
        finally:
            self._close_direct()
            if self._own is not None:
                self._own.close()

    def abort(self) -> None:
        """Stop writing without finishing the zip (the caller discards the file).

        Used on errors: finishing would try to write a central directory after, say, ENOSPC,
        and raise a second error that hides the first.
        """
        # zipfile's __del__ calls close(), which would write a directory into a dead file.
        self._zf.fp = None
        for w in self._stored:
            w.abort()
        self._close_direct()
        if self._own is not None:
            self._own.close()

    def _close_direct(self) -> None:
        if self._direct is not None:
            fd, self._direct = self._direct, None
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _Through:
    """A :class:`MemberWriter` over zipfile's own member writer (ranges read and written)."""

    def __init__(self, member: IO[bytes]) -> None:
        self._member = member

    def write(self, data: bytes, /) -> int:
        return self._member.write(data)

    def append_ranges(self, ranges: Iterable[tuple[int, int, int]], crc: int, /) -> None:
        for fd, offset, length in ranges:
            done = 0
            while done < length:
                data = os.pread(fd, min(CHUNK, length - done), offset + done)
                if not data:
                    raise OSError(f"a file ended {length - done} bytes early")
                self._member.write(data)
                done += len(data)

    def flush(self) -> None:
        self._member.flush()

    def close(self) -> None:
        self._member.close()

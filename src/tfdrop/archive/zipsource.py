"""A :class:`~tfdrop.archive.source.Source` over an untrusted zip file (SPEC.md "Bad input").

The central directory is checked up front (:mod:`tfdrop.archive.zipdir`); each member is then
read straight from the zip with ``os.pread``, inflated in bounded steps, counted against its
declared size and CRC-checked at its end. Nothing is extracted to disk.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from tfdrop.archive.direct import AlignedReads, open_read
from tfdrop.archive.source import (
    CHUNK,
    BaseSource,
    CheckedReader,
    Stamp,
    changed_error,
    check_stamp,
    check_whole,
    stamp,
)
from tfdrop.archive.zipdir import (
    DEFLATED,
    LOCAL,
    SIZES_HINT,
    STORED,
    ZipEntry,
    data_offset,
    local_data_start,
    read_directory,
)
from tfdrop.codec import inflate
from tfdrop.errors import ArchiveError, TfdropError, UnsafeArchiveError
from tfdrop.limits import Limits

_CORRUPT_HINT = "the archive is corrupt; export or copy it again"
ONE_READ: Final = 4 * 1024 * 1024
"""Members of at most this many compressed bytes that are read whole (annotations, images)
take one ``pread`` and one inflate call (:meth:`ZipSource.read_bytes`)."""
_EXTRA_SLACK: Final = 64
"""Bytes of a local header's extra field the one read takes along (Info-ZIP's are 24-28)."""


class ZipSource(BaseSource):
    """The file members of a zip, checked against :class:`Limits` when opened.

    Args:
        path: The zip file (any suffix).
        limits: Safety caps; defaults apply when omitted.

    Raises:
        ArchiveError: Not a zip, truncated, corrupt, encrypted or an unsupported method.
        UnsafeArchiveError: Unsafe names, link entries, duplicates, or declared sizes over the
            caps (entry count, total, per member, ratio).
        OSError: The file cannot be opened (missing, permissions): the caller decides.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, limits: Limits | None = None, direct: bool = False
    ):
        self.path = Path(path)
        lim = limits if limits is not None else Limits()
        label = str(path)
        # Non-blocking open, then a type check: opening a FIFO named *.zip must not hang.
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ArchiveError("not a regular file", archive=label)
        f = os.fdopen(fd, "rb")  # kept open for the source's lifetime
        try:
            entries = read_directory(f, archive=label, limits=lim)
        except BaseException:
            f.close()
            raise
        self._file = f
        self._stamp = stamp(os.fstat(fd))
        self._entries = {e.name: e for e in entries}
        self._starts: dict[str, int] = {}  # member -> offset of its data (read_range)
        super().__init__(label, {e.name: e.size for e in entries}, lim)
        # stored members read past the page cache (a read-back of what was written so); last,
        # so nothing after it can fail and leave it open
        self._direct = open_read(os.fspath(path), fd) if direct else None

    def entry(self, name: str) -> ZipEntry:
        """The central-directory entry of a member (method, CRC, sizes)."""
        try:
            return self._entries[name]
        except KeyError:
            raise self._missing(name) from None

    def data_start(self, name: str) -> int:
        """Where a member's data starts, its local header checked against the directory."""
        start = self._starts.get(name)
        if start is None:
            entry = self.entry(name)
            with self._said_changed(entry):
                start = data_offset(self._file.fileno(), entry, self._label)
            self._starts[name] = start
        return start

    def stored_at(self, name: str) -> int | None:
        """Where a stored member's data starts in the zip (see :meth:`Source.stored_at`)."""
        entry = self.entry(name)
        if entry.method != STORED or not entry.size:
            return None
        return self.data_start(name)

    def stored_fd(self) -> int:
        return self._file.fileno()

    def check_stored(self) -> None:
        """Refuse a zip whose stamp moved at all since it was opened, its ctime included (see
        :meth:`Source.check_stored`). Not proven by the members' CRC-32s, as a range read is:
        a rewrite with its mtime put back can keep a CRC-32 (it is linear), and bytes copied
        here after a worker checked them must be those bytes (an outside attack published an
        archive whose image was not the one checked that way)."""
        if stamp(os.fstat(self._file.fileno())) != self._stamp:
            raise changed_error(self._label, None)

    @contextlib.contextmanager
    def _said_changed(self, entry: ZipEntry) -> Iterator[None]:
        """A local header that is not where the directory says (cut, or another zip written
        over this one while it is read) is "changed" when the file is not the one whose
        directory was read, a moved ctime included: its bytes are known to be wrong."""
        try:
            yield
        except TfdropError:
            if check_stamp(
                self._file.fileno(), self._stamp, archive=self._label, member=entry.name
            ):
                raise changed_error(self._label, entry.name) from None
            raise

    def read_bytes(self, name: str, *, max_size: int) -> bytes:
        """The whole member (see :meth:`BaseSource.read_bytes`). A small member is read with
        one ``pread`` of its local header and data, and inflated in one call; anything that
        is not plainly right on that path (a short read, a long extra field, a stream that is
        corrupt, too short or too long, a CRC-32 mismatch) is read again the careful way,
        which finds the same fault and names it."""
        entry = self.entry(name)
        check_whole(entry.size, max_size, archive=self._label, member=name)
        if 0 < entry.compressed_size <= ONE_READ and entry.size and not self._file.closed:
            data = self._one_read(entry)
            if data is not None:
                return data
        return super().read_bytes(name, max_size=max_size)

    def _one_read(self, entry: ZipEntry) -> bytes | None:
        """The member's bytes from one read, or None where the careful path must decide."""
        want = LOCAL.size + len(entry.raw_name) + _EXTRA_SLACK + entry.compressed_size
        head = os.pread(self._file.fileno(), want, entry.header_offset)
        with self._said_changed(entry):
            begin = local_data_start(head, entry, self._label)
        self._starts.setdefault(entry.name, begin)  # for stored_at: no second header read
        start = begin - entry.header_offset
        end = start + entry.compressed_size
        if end > len(head):
            return None
        raw = memoryview(head)[start:end]
        if entry.method == DEFLATED:
            obj = inflate.decompressobj(-15)
            try:  # one byte over the declared size tells a lying header
                data = obj.decompress(raw, entry.size + 1)
            except inflate.ERRORS:
                return None
            if not obj.eof:
                return None
        else:
            data = bytes(raw)
        if len(data) != entry.size or inflate.crc32(data, 0) != entry.crc:
            return None
        return data

    def _pread(self, name: str, offset: int, size: int) -> bytes | None:
        entry = self.entry(name)
        if entry.method == DEFLATED and entry.size:
            return None
        # a range has no CRC of its own: a zip rewritten in place (cp over it) would mix old
        # and new records unseen, so the file must still be the one whose directory was read,
        # before the read and after it
        fd = self._file.fileno()
        before = check_stamp(fd, self._stamp, archive=self._label, member=name)
        start = self.data_start(name)
        data = os.pread(fd, size, start + offset)
        after = check_stamp(fd, self._stamp, archive=self._label, member=name)
        if before or after:  # only the ctime moved: a chmod, a link, or a disguised rewrite
            self._prove_unchanged(entry, start)
        if len(data) != size:
            raise ArchiveError(
                "truncated: member data ends early",
                archive=self._label,
                member=name,
                offset=offset + len(data),
                hint=_CORRUPT_HINT,
            )
        return data

    def _prove_unchanged(self, entry: ZipEntry, start: int) -> None:
        """The stored member's CRC-32, read whole, against its directory entry: the same, and
        the file's new ctime is taken as its own; else it was rewritten under us."""
        fd = self._file.fileno()
        new = stamp(os.fstat(fd))
        crc, pos, end = 0, start, start + entry.compressed_size
        while pos < end:
            chunk = os.pread(fd, min(CHUNK, end - pos), pos)
            if not chunk:
                break
            crc = inflate.crc32(chunk, crc)
            pos += len(chunk)
        if pos != end or crc != entry.crc or stamp(os.fstat(fd)) != new:
            raise changed_error(self._label, entry.name)
        self._stamp = new

    def close(self) -> None:
        """Close the zip; member readers already open keep their own descriptor."""
        self._file.close()
        if self._direct is not None:
            fd, self._direct = self._direct, None
            os.close(fd)

    def _open_raw(self, name: str, size: int) -> CheckedReader:
        entry = self.entry(name)
        if self._file.closed:
            raise ValueError(f"{self._label} is closed")
        with self._said_changed(entry):
            start = data_offset(self._file.fileno(), entry, self._label)
        # A duplicated descriptor per member: readers stay valid, and safe, after close().
        fd = os.dup(self._file.fileno())
        reads = None
        try:
            if self._direct is not None and entry.method != DEFLATED:
                reads = AlignedReads(os.dup(self._direct))
        except BaseException:
            os.close(fd)
            raise
        return _ZipMemberReader(fd, entry, start, self._label, self._stamp, reads)


class _ZipMemberReader(CheckedReader):
    """A member's bytes, inflated and CRC-checked; any fault in them is first checked against
    the zip's stamp, so a zip rewritten while it is read says so instead of "corrupt"."""

    def __init__(
        self,
        fd: int,
        entry: ZipEntry,
        start: int,
        archive: str,
        stamp: Stamp,
        reads: AlignedReads | None = None,
    ) -> None:
        super().__init__(archive, entry.name, entry.size)
        self._fd = fd
        self._reads = reads
        self._read_ahead = reads is not None  # some bytes may come from reads ahead
        self._stamp = stamp
        self._entry = entry
        self._pos = start
        self._left = entry.compressed_size
        self._crc = 0
        self._inflate = inflate.decompressobj(-15) if entry.method == DEFLATED else None
        if entry.compressed_size == 0 and entry.size == 0:
            # An empty member may be stored as no bytes at all, even under deflate.
            self._inflate = None

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
            if self._reads is not None:
                self._reads.close()
        super().close()

    def _read_input(self, n: int) -> bytes:
        n = min(n, self._left)
        data = os.pread(self._fd, n, self._pos)
        if len(data) != n:
            self._changed()
            raise ArchiveError(
                "truncated: member data ends early", offset=self._pos, hint=_CORRUPT_HINT
            )
        self._pos += n
        self._left -= n
        return data

    def _read_into(self, view: memoryview) -> int | None:
        n = min(len(view), self._left)
        if self._inflate is not None or n == 0:
            return None
        got = None
        if self._reads is not None:
            n = min(n, self._reads.size)
            got = self._reads.pread_into(view[:n], self._pos)
            if got is None:  # the file system refused the alignment: buffered from now on
                self._reads.close()
                self._reads = None
        if got is None:
            got = os.preadv(self._fd, [view[:n]], self._pos)
        if got != n:
            self._changed()
            raise ArchiveError(
                "truncated: member data ends early", offset=self._pos, hint=_CORRUPT_HINT
            )
        self._pos += n
        self._left -= n
        self._crc = inflate.crc32(view[:n], self._crc)
        return n

    def _produce(self, want: int) -> bytes:
        if self._inflate is None:
            # Stored data (TFRecords, images) is copied in the caller's read size, up to a cap.
            out = self._read_input(min(want, 8 * CHUNK))
        else:
            tail = self._inflate.unconsumed_tail
            if tail:
                src = tail
            elif self._left > 0:
                src = self._read_input(CHUNK)
            else:
                self._changed()
                raise ArchiveError(
                    "truncated: deflate data ends before the end of the member",
                    hint=_CORRUPT_HINT,
                )
            try:
                # max_length bounds each step: a bomb inflates one chunk at a time.
                out = self._inflate.decompress(src, min(want, CHUNK))
            except inflate.ERRORS as exc:
                self._changed()
                raise ArchiveError(f"corrupt deflate data ({exc})", hint=_CORRUPT_HINT) from exc
        self._crc = inflate.crc32(out, self._crc)
        return out

    def _at_end(self) -> bool:
        if self._inflate is None:
            return self._left == 0
        return self._inflate.eof

    def _too_long(self) -> TfdropError:
        self._changed()
        return UnsafeArchiveError(
            f"member inflates past its declared size of {self.declared} bytes "
            "(lying header or zip bomb)",
            hint=SIZES_HINT,
        )

    def _changed(self) -> None:
        """Raise "changed" rather than the fault found when the zip was rewritten meanwhile
        (a moved ctime counts here: the data is known to be wrong)."""
        if check_stamp(self._fd, self._stamp, archive=self.archive, member=self.member):
            raise changed_error(self.archive, self.member)

    def _check_end(self) -> None:
        if self._read_ahead:
            # bytes read ahead may predate a rewrite or a cut that a read at the time would
            # have met (an outside attack: a zip cut under a direct read-back passed)
            check_stamp(self._fd, self._stamp, archive=self.archive, member=self.member)
        if self._crc != self._entry.crc:
            self._changed()
            raise crc_mismatch(self._entry.crc, self._crc)


def crc_mismatch(stored: int, data: int) -> ArchiveError:
    """A member whose data does not match its directory entry's CRC-32."""
    return ArchiveError(f"bad CRC-32 (stored {stored:08x}, data {data:08x})", hint=_CORRUPT_HINT)

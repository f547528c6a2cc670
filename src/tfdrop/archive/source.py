"""The read side of the archive layer: one :class:`Source` API over a zip or a folder tree.

Format readers take a :class:`Source` from :func:`tfdrop.archive.open_source` and never care
whether the user dropped ``voc.zip`` or an unzipped ``VOCdevkit/`` tree. Every member is
streamed through a reader that counts what it returns against the size declared up front (and
for zips checks the CRC-32 at the end), so a lying header fails with a clear error instead of
filling memory.
Follows SPEC.md "Bad input": caps on entries, total size and ratio; no links; no extraction.
"""

from __future__ import annotations

import contextlib
import io
import os
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import BinaryIO, Protocol, Self, runtime_checkable

from tfdrop.errors import ArchiveError, MemberNotFoundError, TfdropError
from tfdrop.limits import Limits, MiB

CHUNK = 1 * MiB  # one decompression step: bounds the memory of a member reader
BUFFER = 256 * 1024
DIRECT_MIN = 64 * 1024  # reads at least this large skip the reader's own buffer


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


@runtime_checkable
class Source(Protocol):
    """A read-only set of named members: a zip or a folder tree.

    Names are relative, ``/``-separated, normalised and unique; only files are listed.
    """

    @property
    def label(self) -> str:
        """The archive's path as shown in errors (the ``archive`` field)."""
        ...

    def names(self) -> list[str]:
        """Every file member's name, in archive order (directory order, or sorted for folders)."""
        ...

    def size(self, name: str) -> int:
        """The member's declared size in bytes (raises MemberNotFoundError)."""
        ...

    def exists(self, name: str) -> bool:
        """Whether a file member has exactly this name."""
        ...

    def find(self, name: str) -> str | None:
        """The member named ``name``, matched exactly, else case-insensitively if unique."""
        ...

    def open(self, name: str) -> BinaryIO:
        """A streaming, non-seekable reader of the member's bytes."""
        ...

    def read_bytes(self, name: str, *, max_size: int) -> bytes:
        """The whole member, refused up front if it declares more than ``max_size`` bytes."""
        ...

    def read_range(self, name: str, offset: int, size: int) -> bytes | None:
        """``size`` bytes of the member from ``offset`` (a work unit's records), or None when
        the member cannot be read at an offset without reading what comes before (a deflated
        zip member). Not checked against the member's CRC: the caller has read the member
        whole once, or checks what it reads (TFRecord framing CRCs)."""
        ...

    def stored_at(self, name: str) -> int | None:
        """Where the member's bytes lie unchanged in the file :meth:`stored_fd` reads (a zip's
        stored member), or None: a worker's spooled record names them, and the parent copies
        them from there (:mod:`tfdrop.formats.tfrecord.spool`)."""
        ...

    def stored_fd(self) -> int:
        """The descriptor :meth:`stored_at` offsets point into (only once it gave one)."""
        ...

    def check_stored(self) -> None:
        """After bytes of stored members (from :meth:`stored_at`) were copied: refuse a
        source that changed in any way since it was opened (a chmod or a new hard link
        included: nothing tells those from a rewrite with its mtime put back).

        Raises:
            ArchiveError: The source changed while it was read.
        """
        ...

    def close(self) -> None:
        """Release the source; readers already open stay usable."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class NoStored:
    """A source without stored members (folders, plain files): see :meth:`Source.stored_at`."""

    def stored_at(self, name: str) -> int | None:
        return None

    def stored_fd(self) -> int:
        raise ValueError("this source has no stored members")

    def check_stored(self) -> None:
        raise ValueError("this source has no stored members")


class BaseSource(NoStored, ABC):
    """Shared bookkeeping for sources: the name table, lookups and ``read_bytes``."""

    def __init__(self, label: str, sizes: dict[str, int], limits: Limits) -> None:
        self._label = label
        self._sizes = sizes
        self._limits = limits
        self._folded: dict[str, list[str]] | None = None

    @property
    def label(self) -> str:
        """The archive's path as shown in errors (the ``archive`` field)."""
        return self._label

    @property
    def limits(self) -> Limits:
        """The caps this source was opened with."""
        return self._limits

    def names(self) -> list[str]:
        """Every file member's name, in archive order (directory order, or sorted for folders)."""
        return list(self._sizes)

    def size(self, name: str) -> int:
        """The member's declared size in bytes."""
        try:
            return self._sizes[name]
        except KeyError:
            raise self._missing(name) from None

    def exists(self, name: str) -> bool:
        """Whether a file member has exactly this name."""
        return name in self._sizes

    def find(self, name: str) -> str | None:
        """The member named ``name``: exact match first, else the one case-insensitive match.

        VOC and CVAT exports vary in case (``JPEGImages/X.JPG``), and macOS stores names
        decomposed (NFD) where annotations hold them composed (NFC), so both are folded; an
        ambiguous folded name returns None rather than a guess.
        """
        if name in self._sizes:
            return name
        if self._folded is None:
            self._folded = {}
            for n in self._sizes:
                self._folded.setdefault(_fold(n), []).append(n)
        hits = self._folded.get(_fold(name.replace("\\", "/").strip("/")), [])
        return hits[0] if len(hits) == 1 else None

    def open(self, name: str) -> BinaryIO:
        """A streaming, non-seekable reader of the member's bytes.

        The reader raises :class:`~tfdrop.errors.UnsafeArchiveError` as soon as the data runs
        past the declared size, and :class:`~tfdrop.errors.ArchiveError` (with ``member``
        set) on corrupt data or a short member.
        """
        size = self.size(name)
        return io.BufferedReader(self._open_raw(name, size), buffer_size=BUFFER)

    def read_bytes(self, name: str, *, max_size: int) -> bytes:
        """The whole member, for small members (annotation files, images).

        Raises:
            ArchiveError: The member declares more than ``max_size`` bytes, or is corrupt.
        """
        size = self.size(name)
        check_whole(size, max_size, archive=self._label, member=name)
        with self._open_raw(name, size) as raw:
            return raw.readall()

    def read_range(self, name: str, offset: int, size: int) -> bytes | None:
        """``size`` bytes from ``offset``, or None (see :meth:`Source.read_range`)."""
        declared = self.size(name)
        if offset < 0 or size < 0 or offset + size > declared:
            raise ArchiveError(
                f"bytes {offset}..{offset + size} are outside the member ({declared} bytes)",
                archive=self._label,
                member=name,
            )
        return self._pread(name, offset, size)

    def _pread(self, name: str, offset: int, size: int) -> bytes | None:
        """The bytes, or None when this member cannot be read at an offset."""
        return None

    def close(self) -> None:
        """Release the source; readers already open stay usable."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _missing(self, name: str) -> MemberNotFoundError:
        return MemberNotFoundError("no such member", archive=self._label, member=name)

    @abstractmethod
    def _open_raw(self, name: str, size: int) -> CheckedReader:
        """An unbuffered reader of exactly ``size`` bytes of member ``name``."""


class CheckedReader(io.RawIOBase, ABC):
    """A raw member reader that proves the member is exactly its declared size.

    Subclasses produce chunks; this class buffers them, counts every byte against the
    declared size, and once it has raised stays dead (every later read raises the same
    error, like h11's ERROR state).
    """

    def __init__(self, archive: str, member: str, size: int) -> None:
        super().__init__()
        self.archive = archive
        self.member = member
        self.declared = size
        self.produced = 0
        self._buf = b""
        self._bpos = 0
        self._done = False
        self._error: TfdropError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview | bytearray) -> int:  # type: ignore[override]
        view = memoryview(b).cast("B")
        if self._bpos >= len(self._buf) and not self._done and len(view) >= DIRECT_MIN:
            # Large reads go straight into the caller's buffer when the subclass can.
            with self._guard():
                n = self._read_into(view)
                if n is not None:
                    self._account(n)
                    return n
        chunk = self._next(len(view))
        view[: len(chunk)] = chunk
        return len(chunk)

    def readall(self) -> bytes:
        parts: list[bytes] = []
        while chunk := self._next(CHUNK):
            parts.append(bytes(chunk))
        return b"".join(parts)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Refuse use after an error, and turn failures into errors naming the member."""
        if self._error is not None:
            raise self._error
        if self.closed:
            raise ValueError("read from a closed member reader")
        try:
            yield
        except TfdropError as exc:
            self._error = exc.at(archive=self.archive, member=self.member)
            raise
        except OSError as exc:
            # The file changed or vanished under us (or a disk error): the input is unusable.
            self._error = ArchiveError(
                f"cannot read member: {exc.strerror or exc}",
                archive=self.archive,
                member=self.member,
            )
            raise self._error from exc

    def _account(self, n: int) -> None:
        self.produced += n
        if self.produced > self.declared:
            raise self._too_long()
        if self._at_end():
            self._finish()

    def _next(self, want: int) -> memoryview:
        with self._guard():
            while self._bpos >= len(self._buf) and not self._done:
                data = self._produce(max(want, 64 * 1024))
                self._buf, self._bpos = data, 0
                self._account(len(data))
        view = memoryview(self._buf)[self._bpos : self._bpos + want]
        self._bpos += len(view)
        return view

    def _finish(self) -> None:
        self._done = True
        if self.produced != self.declared:
            raise ArchiveError(
                f"member ends after {self.produced} bytes, {self.declared} declared",
                archive=self.archive,
                member=self.member,
                hint="the archive is truncated or corrupt; export it again",
            )
        self._check_end()

    def _read_into(self, view: memoryview) -> int | None:
        """Read member bytes straight into ``view``; None when this reader cannot now."""
        return None

    @abstractmethod
    def _produce(self, want: int) -> bytes:
        """The next chunk of member bytes (may be empty while input is consumed)."""

    @abstractmethod
    def _at_end(self) -> bool:
        """Whether the member's data is exhausted."""

    @abstractmethod
    def _too_long(self) -> TfdropError:
        """The error for data running past the declared size."""

    def _check_end(self) -> None:
        """Extra checks once all data is read."""


Stamp = tuple[int, int, int, int, int]
"""What identifies a file's contents between two reads: device, inode, size, mtime and ctime
(ns). The first four must not change. The ctime moves on a rewrite whose mtime was put back
(``os.utime``, ``touch -r``), but also on a chmod, a rename or a hard link made or removed,
none of which touch the data: a moved ctime alone is :data:`TOUCHED`, and the caller decides
(a zip checks the member's CRC-32; a plain file, which has none, is taken as it is)."""

TOUCHED = "touched"


def stamp(st: os.stat_result) -> Stamp:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def changed_error(archive: str, member: str | None) -> ArchiveError:
    return ArchiveError(
        "the input changed while it was read (rewritten or replaced in place)",
        archive=archive,
        member=member,
        hint="copy a finished file into the drop folder under a temp name, then rename it",
    )


def check_stamp(fd: int, expected: Stamp, *, archive: str, member: str | None = None) -> str | None:
    """Refuse a file that changed since ``expected`` was taken (rewritten in place, replaced
    by another, grown or cut) while a conversion reads it; :data:`TOUCHED` when only its ctime
    moved, else None.

    Raises:
        ArchiveError: Its device, inode, size or mtime changed.
    """
    now = stamp(os.fstat(fd))
    if now[:4] != expected[:4]:
        raise changed_error(archive, member)
    return TOUCHED if now[4] != expected[4] else None


def check_whole(size: int, max_size: int, *, archive: str, member: str) -> None:
    """Refuse to read a member of ``size`` bytes whole when that is over ``max_size``.

    Raises:
        ArchiveError: It is.
    """
    if size > max_size:
        raise ArchiveError(
            f"member is {size} bytes, over the {max_size}-byte cap for reading it whole",
            archive=archive,
            member=member,
            hint="the member is unexpectedly large; check the export",
        )


def sorted_names(source: Source, *, suffixes: Sequence[str] = ()) -> list[str]:
    """The member names in sorted order, optionally only those ending in one of ``suffixes``
    (compared case-insensitively)."""
    low = tuple(s.lower() for s in suffixes)
    return sorted(n for n in source.names() if not low or n.lower().endswith(low))

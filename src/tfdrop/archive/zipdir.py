"""Reading a zip's end record and central directory without trusting them (PKWARE APPNOTE 6.3).

:func:`read_directory` walks the central directory record by record, checking every name and
declared size against :class:`~tfdrop.archive.limits.Limits` as it goes, so an archive
that declares a million entries or a petabyte fails after a bounded amount of work and memory.
The standard library's zipfile is not used for reading: it loads the whole directory before
anything can be checked and trusts declared sizes when streaming.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Generator
from dataclasses import dataclass
from typing import BinaryIO, Final, NamedTuple, TypeVar

from tfdrop.archive.limits import normalize_name, shown
from tfdrop.errors import ArchiveError, UnsafeArchiveError
from tfdrop.limits import Limits

# --- APPNOTE 4.3.16: end of central directory record -----------------------------------------
EOCD_SIG = b"PK\x05\x06"
EOCD = struct.Struct("<4s4H2LH")
MAX_COMMENT = 0xFFFF
# --- APPNOTE 4.3.14/4.3.15: zip64 end record and its locator ---------------------------------
ZIP64_LOCATOR_SIG = b"PK\x06\x07"
ZIP64_LOCATOR = struct.Struct("<4sLQL")
ZIP64_EOCD_SIG = b"PK\x06\x06"
ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
# --- APPNOTE 4.3.12: central directory file header -------------------------------------------
CENTRAL_SIG = b"PK\x01\x02"
CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
# --- APPNOTE 4.3.7: local file header --------------------------------------------------------
LOCAL_SIG = b"PK\x03\x04"
LOCAL = struct.Struct("<4s2B4HL2L2H")

FLAG_ENCRYPTED = 0x0001
FLAG_STRONG_ENCRYPTION = 0x0040
FLAG_UTF8 = 0x0800  # APPNOTE appendix D: name and comment are UTF-8
EXTRA_ZIP64 = 0x0001
EXTRA_UNICODE_PATH = 0x7075  # Info-ZIP Unicode Path extra field

STORED = 0
DEFLATED = 8
_FLAGS_REFUSED = FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION
_SATURATED = 0xFFFFFFFF  # a 32-bit field whose value is in the zip64 extra field
_UNICODE_PATH_TAG = struct.pack("<H", EXTRA_UNICODE_PATH)  # no field can have it if absent
_S_IFMT = 0o170000
_METHOD_NAMES = {1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstd"}

_ZIP_HINT = "the file is not a complete zip; wait for the copy to finish or export it again"


class ZipEntry(NamedTuple):
    """One file member as the central directory declares it (sizes not yet proven).

    A named tuple, not a frozen dataclass: one is built per member of a 40,000-member
    directory, and a tuple is built in a quarter of the time.
    """

    name: str
    raw_name: bytes
    method: int
    flags: int
    crc: int
    compressed_size: int
    size: int
    header_offset: int


@dataclass(frozen=True, slots=True)
class _End:
    entries: int
    cd_size: int
    cd_offset: int
    cd_end: int  # where the central directory must end (end record or zip64 end record)


def _read_at(f: BinaryIO, offset: int, n: int) -> bytes:
    f.seek(offset)
    return f.read(n)


def _end_positions(tail: bytes) -> list[int]:
    """Where an end record could start in ``tail``, last first (the whole record must fit)."""
    out = []
    pos = tail.rfind(EOCD_SIG)
    while pos >= 0:
        if pos + EOCD.size <= len(tail):
            out.append(pos)
        pos = tail.rfind(EOCD_SIG, 0, pos)
    return out


T = TypeVar("T")
Reads = Generator[tuple[int, int], bytes, T]
"""A sans-IO step function: yields ``(offset, size)`` reads, is sent their bytes, returns."""


def drive(f: BinaryIO, steps: Reads[T]) -> T:
    """Run ``steps`` over a seekable file (the async daemon drives them with aiofiles)."""
    try:
        offset, size = next(steps)
        while True:
            offset, size = steps.send(_read_at(f, offset, size))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _end_at(f: BinaryIO, tail: bytes, pos: int, eocd_at: int, archive: str) -> _End:
    """The end record at ``tail[pos:]`` (file offset ``eocd_at``), with its zip64 record."""
    return drive(f, _end_at_steps(tail, pos, eocd_at, archive))


def _end_at_steps(tail: bytes, pos: int, eocd_at: int, archive: str) -> Reads[_End]:
    _, disk, cd_disk, _, entries, cd_size, cd_offset, _ = EOCD.unpack_from(tail, pos)
    cd_end = eocd_at
    loc_at = eocd_at - ZIP64_LOCATOR.size
    if loc_at >= 0:
        loc = yield loc_at, ZIP64_LOCATOR.size
        if loc[:4] == ZIP64_LOCATOR_SIG:
            _, _, z64_at, _ = ZIP64_LOCATOR.unpack(loc)
            rec = (yield z64_at, ZIP64_EOCD.size) if z64_at < loc_at else b""
            if rec[:4] != ZIP64_EOCD_SIG:
                # The locator's offset is absolute, so it is off when data was prepended
                # (self-extractors); the record then sits right before the locator.
                z64_at = loc_at - ZIP64_EOCD.size
                rec = (yield z64_at, ZIP64_EOCD.size) if z64_at >= 0 else b""
            if len(rec) != ZIP64_EOCD.size or rec[:4] != ZIP64_EOCD_SIG:
                raise ArchiveError("corrupt zip64 end of central directory", archive=archive)
            (_, _, _, _, disk, cd_disk, _, entries, cd_size, cd_offset) = ZIP64_EOCD.unpack(rec)
            cd_end = z64_at
    if disk != 0 or cd_disk != 0:
        raise ArchiveError(
            "split or multi-volume zips are not supported",
            archive=archive,
            hint="join the parts into one zip",
        )
    if cd_size > cd_end:
        raise ArchiveError("corrupt central directory size", archive=archive, hint=_ZIP_HINT)
    return _End(entries, cd_size, cd_offset, cd_end)


def _agrees_steps(end: _End, file_size: int) -> Reads[bool]:
    """Whether an end record describes this file: its central directory inside the file
    where it says, big enough for its entries, starting with a central header whose local
    header is where that says; and no data before the zip when the file itself starts with
    a local header (that is a zip stored inside a zip whose own end is still missing)."""
    cd_start = end.cd_end - end.cd_size
    shift = cd_start - end.cd_offset
    if cd_start < 0 or shift < 0 or end.cd_size < end.entries * CENTRAL.size:
        return False
    if shift and (yield 0, 4) == LOCAL_SIG:
        return False
    if end.entries == 0:
        return end.cd_size == 0 and shift == 0
    central = yield cd_start, CENTRAL.size
    if len(central) != CENTRAL.size or central[:4] != CENTRAL_SIG:
        return False
    local_at: int = CENTRAL.unpack(central)[-1]
    if local_at == 0xFFFFFFFF:
        return True  # in the zip64 extra field; read_directory checks it
    return local_at + shift + 4 <= file_size and (yield local_at + shift, 4) == LOCAL_SIG


def _tail(f: BinaryIO, file_size: int) -> tuple[int, bytes]:
    tail_len = min(file_size, EOCD.size + MAX_COMMENT)
    return file_size - tail_len, _read_at(f, file_size - tail_len, tail_len)


def complete_end(f: BinaryIO, file_size: int) -> _End | None:
    """The end record that makes ``f`` a finished zip, or None (:func:`complete_end_steps`)."""
    return drive(f, complete_end_steps(file_size))


def complete_end_steps(file_size: int) -> Reads[_End | None]:
    """The end record that makes a file of ``file_size`` bytes a finished zip, or None.

    Not a byte pattern anywhere in the last 64 KiB: the record must end exactly at the end of
    the file (its comment length says where) and agree with the file (its central directory
    and first local header where it says). A copy cut right after a stored inner zip's end
    record, or a TFRecord holding the signature, is no finished zip. Sans-IO: the tail is
    one large read, then a few small ones.
    """
    if file_size < EOCD.size:
        return None
    tail_len = min(file_size, EOCD.size + MAX_COMMENT)
    start = file_size - tail_len
    tail = yield start, tail_len
    for pos in _end_positions(tail):
        (comment_len,) = struct.unpack_from("<H", tail, pos + EOCD.size - 2)
        if pos + EOCD.size + comment_len != len(tail):
            continue
        try:
            end = yield from _end_at_steps(tail, pos, start + pos, "")
        except ArchiveError:
            return None
        return end if (yield from _agrees_steps(end, file_size)) else None
    return None


def _find_end(f: BinaryIO, file_size: int, archive: str) -> _End:
    if file_size == 0:
        raise ArchiveError("empty file (0 bytes), not a zip file", archive=archive, hint=_ZIP_HINT)
    end = complete_end(f, file_size)
    if end is not None:
        return end
    # a record that does not end the file (junk appended after the zip): the last one
    start, tail = _tail(f, file_size)
    positions = _end_positions(tail)
    if not positions:
        head = _read_at(f, 0, 4)
        if head == LOCAL_SIG:
            raise ArchiveError(
                "truncated: no end of central directory record", archive=archive, hint=_ZIP_HINT
            )
        raise ArchiveError("not a zip file", archive=archive, hint="drop a .zip archive")
    return _end_at(f, tail, positions[0], start + positions[0], archive)


def _zip64_sizes(
    extra: bytes, size: int, csize: int, offset: int, archive: str, member: str
) -> tuple[int, int, int]:
    """Apply the zip64 extra field (APPNOTE 4.5.3): only the saturated fields are present."""
    if 0xFFFFFFFF not in (size, csize, offset):
        return size, csize, offset  # nothing saturated: the 32-bit fields are the values
    for tag, body in _extras(extra):
        if tag != EXTRA_ZIP64:
            continue
        want = [v == 0xFFFFFFFF for v in (size, csize, offset)]
        vals = (
            list(struct.unpack_from(f"<{sum(want)}Q", body)) if len(body) >= 8 * sum(want) else None
        )
        if vals is None:
            raise ArchiveError("corrupt zip64 extra field", archive=archive, member=member)
        out = []
        for flag, old in zip(want, (size, csize, offset), strict=True):
            out.append(vals.pop(0) if flag else old)
        return out[0], out[1], out[2]
    raise ArchiveError("zip64 sizes without a zip64 extra field", archive=archive, member=member)


def _extras(extra: bytes) -> list[tuple[int, bytes]]:
    out = []
    i = 0
    while i + 4 <= len(extra):
        tag, n = struct.unpack_from("<2H", extra, i)
        out.append((tag, extra[i + 4 : i + 4 + n]))
        i += 4 + n
    return out


def _decode_name(raw: bytes, flags: int, extra: bytes) -> str:
    """Decode a member name: UTF-8 flag, Info-ZIP Unicode Path, else UTF-8 or cp437."""
    if flags & FLAG_UTF8:
        return raw.decode("utf-8", "surrogateescape")
    for tag, body in _extras(extra):
        # Version 1, CRC-32 of the stored name, then the UTF-8 name (Info-ZIP extrafld.txt).
        if (
            tag == EXTRA_UNICODE_PATH
            and len(body) > 5
            and body[0] == 1
            and struct.unpack_from("<L", body, 1)[0] == zlib.crc32(raw)
        ):
            try:
                return body[5:].decode("utf-8")
            except UnicodeDecodeError:
                break
    try:
        # Many tools (macOS, Info-ZIP) store UTF-8 without setting the flag.
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp437")  # APPNOTE appendix D: the default code page


def read_directory(f: BinaryIO, *, archive: str, limits: Limits) -> list[ZipEntry]:
    """Read and check the central directory of the zip open as ``f``.

    Returns:
        The file members (folders skipped), in directory order, with normalised names.

    Raises:
        ArchiveError: Not a zip, truncated, corrupt, encrypted or an unsupported method.
        UnsafeArchiveError: A name, a link entry, a duplicate or a declared size breaks a rule.
    """
    file_size = f.seek(0, os.SEEK_END)
    end = _find_end(f, file_size, archive)
    limits.check_count(end.entries, archive)
    if end.cd_size > limits.max_directory_size:
        raise UnsafeArchiveError(
            f"central directory is {end.cd_size} bytes, over the "
            f"{limits.max_directory_size}-byte cap",
            archive=archive,
        )
    # Data prepended to the zip (self-extractors) shifts every stored offset by `shift`.
    shift = end.cd_end - end.cd_size - end.cd_offset
    if shift < 0:
        raise ArchiveError(
            "truncated: the central directory points past the end of the file",
            archive=archive,
            hint=_ZIP_HINT,
        )
    if shift and _read_at(f, 0, 4) == LOCAL_SIG:
        # data "prepended" that is itself a zip member: the end record found is that of a
        # zip stored inside this one, whose own end record is missing (a copy cut short)
        raise ArchiveError(
            "truncated: the only end record belongs to a zip stored inside this one",
            archive=archive,
            hint=_ZIP_HINT,
        )
    data = _read_at(f, end.cd_offset + shift, end.cd_size)
    if len(data) != end.cd_size:
        raise ArchiveError("truncated central directory", archive=archive, hint=_ZIP_HINT)
    entries = _walk(data, shift, archive, limits)
    _check_layout(entries, end.cd_offset + shift, archive)
    return entries


def _walk(data: bytes, shift: int, archive: str, limits: Limits) -> list[ZipEntry]:
    """The file members of the central directory ``data``, each record checked as it is read.

    This runs for each of up to max_entries records (40,000 in a 20,000-image VOC zip), so
    the common case is tested inline and a checking helper, which raises with the full
    message, is called only when a value could break its rule.
    """
    entries: list[ZipEntry] = []
    seen: set[str] = set()
    total = count = pos = 0
    unpack, head, size_of_data = CENTRAL.unpack_from, CENTRAL.size, len(data)
    max_entries, max_total = limits.max_entries, limits.max_total_uncompressed
    size_floor = min(limits.max_member_size, limits.ratio_floor)
    while pos < size_of_data:
        if data[pos : pos + 4] != CENTRAL_SIG or pos + head > size_of_data:
            raise ArchiveError(
                f"corrupt central directory at byte {pos}", archive=archive, offset=pos
            )
        (_, _, _, _, _, flags, method, _, _, crc, csize, size, n, m, k, _, _, attr, off) = unpack(
            data, pos
        )
        start = pos + head
        raw = data[start : start + n]
        extra = data[start + n : start + n + m]
        pos = start + n + m + k
        if pos > size_of_data:
            raise ArchiveError("truncated central directory", archive=archive, hint=_ZIP_HINT)
        count += 1
        if count > max_entries:
            limits.check_count(count, archive)
        name = _member_name(raw, flags, extra, attr, archive, limits)
        if name is None:
            continue
        if _SATURATED in (size, csize, off):
            size, csize, off = _zip64_sizes(extra, size, csize, off, archive, name)
        if name in seen:
            raise UnsafeArchiveError("duplicate member name", archive=archive, member=name)
        seen.add(name)
        if flags & _FLAGS_REFUSED or (method != DEFLATED and (method != STORED or csize != size)):
            _check_storage(name, flags, method, csize, size, archive)
        if size > size_floor:
            limits.check_member(name, size, csize, archive)
        total += size
        if total > max_total:
            limits.check_total(total, archive, name)
        entries.append(ZipEntry(name, raw, method, flags, crc, csize, size, off + shift))
    return entries


def _member_name(
    raw: bytes, flags: int, extra: bytes, attr: int, archive: str, limits: Limits
) -> str | None:
    """A member's checked, normalised name, or None for a folder; a link is refused."""
    if flags & FLAG_UTF8 or (raw.isascii() and _UNICODE_PATH_TAG not in extra):
        # an ASCII name without a Unicode Path field reads the same in every decoding
        decoded = raw.decode("utf-8", "surrogateescape")
    else:
        decoded = _decode_name(raw, flags, extra)
    name, is_dir = normalize_name(decoded, archive=archive, limits=limits)
    kind = (attr >> 16) & _S_IFMT
    if kind == stat.S_IFLNK:
        raise UnsafeArchiveError("symbolic link entry", archive=archive, member=shown(decoded))
    # Unix mode bits are honoured whatever the creator system says (stricter, not looser).
    # Other special types are read as plain data: Info-ZIP stores a FIFO mode for stdin,
    # and since nothing is ever extracted, only links could redirect anything.
    return None if is_dir or kind == stat.S_IFDIR else name


def _check_storage(name: str, flags: int, method: int, csize: int, size: int, archive: str) -> None:
    """Refuse members tfdrop cannot read: encrypted, unknown method, two stored sizes."""
    if flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION):
        raise ArchiveError(
            "member is encrypted",
            archive=archive,
            member=name,
            hint="export the archive without a password",
        )
    if method not in (STORED, DEFLATED):
        label = _METHOD_NAMES.get(method, str(method))
        raise ArchiveError(
            f"unsupported compression method {label}",
            archive=archive,
            member=name,
            hint="re-create the zip with deflate or no compression",
        )
    if method == STORED and csize != size:
        raise ArchiveError(
            f"stored member declares {csize} bytes stored but {size} bytes of data",
            archive=archive,
            member=name,
        )


SIZES_HINT: Final = (
    "rejected for safety: the zip's sizes or offsets do not add up (a zip bomb or a corrupt "
    "zip); export or copy it again"
)
"""The hint of a zip whose declared sizes or member offsets are impossible."""


def _check_layout(entries: list[ZipEntry], cd_start: int, archive: str) -> None:
    """Members must not overlap each other or the directory (overlap bombs reuse data)."""
    ordered = sorted(entries, key=lambda e: e.header_offset)
    # ``[*ordered[1:], None]`` is one longer than an empty listing: an empty zip (or one whose
    # directory lists nothing) raised ValueError from zip(strict=True) (found by fuzzing)
    for here, after in zip(ordered, [*ordered[1:], None][: len(ordered)], strict=True):
        limit = after.header_offset if after is not None else cd_start
        # A lower bound on the member's end: header, name and data (local extras only add).
        end = here.header_offset + LOCAL.size + len(here.raw_name) + here.compressed_size
        if end > limit:
            what = "overlaps another member" if after is not None else "runs into the directory"
            raise UnsafeArchiveError(
                f"member data {what} (overlapping-entry zip bomb or corrupt zip)",
                archive=archive,
                member=here.name,
                offset=here.header_offset,
                hint=SIZES_HINT,
            )


def data_offset(fd: int, entry: ZipEntry, archive: str) -> int:
    """Check a member's local header against the directory and return where its data starts.

    Reads with ``os.pread`` on ``fd``: no shared file position, so members may be opened
    from several threads at once.
    """
    return local_data_start(
        os.pread(fd, LOCAL.size + len(entry.raw_name), entry.header_offset), entry, archive
    )


def local_data_start(head: bytes, entry: ZipEntry, archive: str) -> int:
    """Where a member's data starts, from ``head``: the bytes at its local header's offset,
    at least the header and the directory's name long (more may follow). The header must be
    a local header naming the directory's file, unencrypted.

    Raises:
        ArchiveError: No local header there, or the member is encrypted.
        UnsafeArchiveError: The local header names another file.
    """
    if len(head) < LOCAL.size or head[:4] != LOCAL_SIG:
        raise ArchiveError(
            "bad local file header", archive=archive, member=entry.name, offset=entry.header_offset
        )
    _, _, _, flags, _, _, _, _, _, _, n, m = LOCAL.unpack_from(head)
    if n != len(entry.raw_name) or head[LOCAL.size : LOCAL.size + n] != entry.raw_name:
        # A different name in the local header is how some scanners are fooled; refuse it.
        raise UnsafeArchiveError(
            "local header names a different file than the central directory",
            archive=archive,
            member=entry.name,
            offset=entry.header_offset,
        )
    if flags & (FLAG_ENCRYPTED | FLAG_STRONG_ENCRYPTION):
        raise ArchiveError("member is encrypted", archive=archive, member=entry.name)
    start: int = entry.header_offset + LOCAL.size + n + m
    return start


def has_end_record(path: str | os.PathLike[str]) -> bool:
    """Whether a file is a finished zip: an end record that ends the file and agrees with it
    (:func:`complete_end`).

    The daemon's settle check and ``convert``'s zip-or-TFRecord test both use this: a zip
    still being copied has no such record yet, and a TFRecord never has one.

    Raises:
        OSError: The file cannot be read.
    """
    with open(path, "rb") as f:
        return complete_end(f, f.seek(0, os.SEEK_END)) is not None

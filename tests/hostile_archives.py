"""Hostile and broken zip archives for tests (SPEC.md "Bad input").

Every builder returns the archive's bytes; :data:`CASES` lists them with the error kind that
tfdrop must report, so the archive tests and a daemon torture suite share one catalogue.
Run ``python tests/hostile_archives.py OUTDIR`` to write them all as files (plus
``cases.json``, the expected kind and the limits each case needs).

Headers are patched in place after zipfile wrote a valid archive, at the offsets APPNOTE 6.3
gives (local header 4.3.7, central directory header 4.3.12).
"""

from __future__ import annotations

import io
import json
import stat
import struct
import sys
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20

# Field offsets inside the headers.
_LOCAL_FLAGS, _LOCAL_CSIZE, _LOCAL_USIZE = 6, 18, 22
_CENTRAL_FLAGS, _CENTRAL_CSIZE, _CENTRAL_USIZE, _CENTRAL_OFFSET = 8, 20, 24, 42


def build_zip(
    members: Iterable[tuple[str | zipfile.ZipInfo, bytes]], *, compress: bool = True
) -> bytes:
    """A zip holding ``members`` exactly as named (zipfile keeps hostile names as given)."""
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names; we want them
        with zipfile.ZipFile(buf, "w", method) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


def _headers(data: bytes) -> tuple[list[int], list[int]]:
    """Offsets of every local header and every central directory header, in order."""
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        local = [i.header_offset for i in zf.infolist()]
        pos = zf.start_dir
    central = []
    while data[pos : pos + 4] == b"PK\x01\x02":
        central.append(pos)
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        pos += 46 + n + m + k
    return local, central


def _put(buf: bytearray, offset: int, fmt: str, value: int) -> None:
    struct.pack_into(fmt, buf, offset, value)


def named(name: str, data: bytes = b"pwned\n") -> bytes:
    """One member with the given name (``../x``, ``/etc/x``, ``C:\\x``, ``..\\x`` ...)."""
    return build_zip([(name, data)])


def zip_slip() -> bytes:
    return named("../../evil.txt")


def absolute_path() -> bytes:
    return named("/etc/evil.conf")


def drive_letter() -> bytes:
    return named("C:\\Windows\\evil.dll")


def backslash_traversal() -> bytes:
    return named("images\\..\\..\\evil.txt")


def nul_in_name() -> bytes:
    """A name with a NUL byte (``evil.txt\\0.jpg``), patched in after writing."""
    data = bytearray(named("evil.txtX.jpg"))
    return bytes(data.replace(b"evil.txtX.jpg", b"evil.txt\x00.jpg"))


def symlink_entry() -> bytes:
    """A Unix symlink member (mode S_IFLNK) pointing at /etc/passwd."""
    info = zipfile.ZipInfo("link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return build_zip([(info, b"/etc/passwd"), ("ok.txt", b"ok")])


def raw_zip(name: str, payload: bytes, *, method: int, crc: int, size: int) -> bytes:
    """A one-member zip around an already compressed ``payload``, headers as given."""
    raw = name.encode()
    local = struct.pack(
        "<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0x21, crc, len(payload), size, len(raw), 0
    )
    central = struct.pack(
        "<4s6H3L5H2L",
        b"PK\x01\x02",
        0x031E,  # made by Unix, version 3.0
        20,
        0,
        method,
        0,
        0x21,
        crc,
        len(payload),
        size,
        len(raw),
        0,
        0,
        0,
        0,
        (stat.S_IFREG | 0o644) << 16,
        0,
    )
    cd_at = len(local) + len(raw) + len(payload)
    cd_size = len(central) + len(raw)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, cd_size, cd_at, 0)
    return local + raw + payload + central + raw + end


def ratio_bomb(size: int = 200 * MiB) -> bytes:
    """One member of ``size`` zeros, deflated (about 1000:1), built in bounded memory.

    Each MiB is compressed once after a full flush (which resets the deflate history), so
    its compressed bytes can be repeated: 200 MiB costs the time of compressing one MiB.
    """
    block = bytes(MiB)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = comp.compress(block) + comp.flush(zlib.Z_FULL_FLUSH)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    rest = comp.compress(bytes(size % MiB)) + comp.flush()
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(block, crc)
    crc = zlib.crc32(bytes(size % MiB), crc)
    return raw_zip("zeros.bin", unit * (size // MiB) + rest, method=8, crc=crc, size=size)


def total_size_bomb(members: int = 11, member_size: int = MiB) -> bytes:
    """Many honest stored members whose total passes a (lowered) total-size cap."""
    block = bytes(member_size)
    return build_zip(((f"part{i:04d}.bin", block) for i in range(members)), compress=False)


def lying_sizes(real_size: int = 64 * MiB, declared: int = 1000) -> bytes:
    """A deflated member of ``real_size`` zeros whose headers claim ``declared`` bytes.

    The CRC is that of the real data, so only a reader that trusts the declared size and
    stops there would miss it; one that inflates until the stream ends fills memory.
    """
    data = bytearray(ratio_bomb(real_size))
    local, central = _headers(bytes(data))
    _put(data, local[0] + _LOCAL_USIZE, "<L", declared)
    _put(data, central[0] + _CENTRAL_USIZE, "<L", declared)
    return bytes(data)


def short_member(missing: int = 100) -> bytes:
    """A deflated member whose headers claim ``missing`` bytes more than its stream holds."""
    text = b"<annotation><object/></annotation>\n" * 300
    data = bytearray(build_zip([("a.xml", text)]))
    local, central = _headers(bytes(data))
    _put(data, local[0] + _LOCAL_USIZE, "<L", len(text) + missing)
    _put(data, central[0] + _CENTRAL_USIZE, "<L", len(text) + missing)
    return bytes(data)


def truncated(fraction: float = 0.5) -> bytes:
    """A valid zip cut short (a copy still in progress): no end record."""
    whole = build_zip([("annotations.xml", b"<annotations/>" * 2000), ("b.bin", bytes(4000))])
    return whole[: int(len(whole) * fraction)]


def corrupt_stored() -> bytes:
    """A stored member with one data byte flipped: a CRC-32 mismatch."""
    data = bytearray(build_zip([("a.bin", b"A" * 4096)], compress=False))
    local, _ = _headers(bytes(data))
    data[local[0] + 30 + len("a.bin") + 100] ^= 0xFF
    return bytes(data)


def corrupt_deflate() -> bytes:
    """A deflated member with garbage in the middle of its stream."""
    text = b"".join(b"<object><name>cat%d</name></object>\n" % i for i in range(5000))
    data = bytearray(build_zip([("annotations.xml", text)]))
    local, _ = _headers(bytes(data))
    start = local[0] + 30 + len("annotations.xml")
    data[start + 200 : start + 216] = b"\xff" * 16
    return bytes(data)


def empty_file() -> bytes:
    return b""


def not_a_zip() -> bytes:
    return b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n"


def cp437_name() -> bytes:
    """A name stored in code page 437 without the UTF-8 flag (old Windows tools): ``café.txt``."""
    return build_zip([("cafX.txt", b"x")]).replace(b"cafX.txt", b"caf\x82.txt")


def utf8_name_without_flag() -> bytes:
    """A UTF-8 name without the UTF-8 flag (macOS Archive Utility): ``café.txt``."""
    # "é" is two bytes in UTF-8, so a two-byte placeholder keeps every length field right.
    return build_zip([("cafXY.txt", b"x")]).replace(b"cafXY.txt", "café.txt".encode())


def many_entries(count: int) -> bytes:
    """``count`` empty members (for a lowered ``max_entries``)."""
    return build_zip(((f"f{i}", b"") for i in range(count)), compress=False)


def entry_count_lie(count: int = 300, claimed: int = 1) -> bytes:
    """``count`` members whose end record claims only ``claimed`` entries."""
    data = bytearray(many_entries(count))
    eocd = data.rfind(b"PK\x05\x06")
    _put(data, eocd + 8, "<H", claimed)
    _put(data, eocd + 10, "<H", claimed)
    return bytes(data)


def entry_count_claim(claimed: int = 0xFFFF) -> bytes:
    """Three members whose end record claims ``claimed`` entries (refused before listing)."""
    data = bytearray(many_entries(3))
    eocd = data.rfind(b"PK\x05\x06")
    _put(data, eocd + 8, "<H", claimed)
    _put(data, eocd + 10, "<H", claimed)
    return bytes(data)


def duplicate_names() -> bytes:
    return build_zip([("annotations.xml", b"<a/>"), ("annotations.xml", b"<b/>")])


def encrypted_flag() -> bytes:
    """A member with the encryption flag set (as ``zip -e`` writes)."""
    data = bytearray(build_zip([("a.txt", b"secret" * 100)]))
    local, central = _headers(bytes(data))
    data[local[0] + _LOCAL_FLAGS] |= 1
    data[central[0] + _CENTRAL_FLAGS] |= 1
    return bytes(data)


def overlapping_entries() -> bytes:
    """Two directory entries sharing one local header's data (Fifield's overlap bomb shape)."""
    data = bytearray(build_zip([("a.bin", bytes(4096)), ("b.bin", bytes(4096))]))
    _, central = _headers(bytes(data))
    _put(data, central[1] + _CENTRAL_OFFSET, "<L", 0)
    return bytes(data)


def local_name_mismatch() -> bytes:
    """The local header names a different file than the central directory."""
    data = bytearray(build_zip([("good.txt", b"x")]))
    local, _ = _headers(bytes(data))
    data[local[0] + 30 : local[0] + 38] = b"evil.txt"
    return bytes(data)


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile archive: its builder, the error kind tfdrop must report, the member the
    error must name (None when the archive as a whole is at fault) and the limits (fields of
    ``Limits``) it assumes; ``kind`` None means it must be read fine."""

    build: Callable[[], bytes]
    kind: str | None
    member: str | None = None
    limits: dict[str, int] = field(default_factory=dict)


_U = "unsafe_archive"
_B = "bad_archive"

CASES: dict[str, Case] = {
    "zip_slip": Case(zip_slip, _U, "../../evil.txt"),
    "absolute_path": Case(absolute_path, _U, "/etc/evil.conf"),
    "drive_letter": Case(drive_letter, _U, "C:\\Windows\\evil.dll"),
    "backslash_traversal": Case(backslash_traversal, _U, "images\\..\\..\\evil.txt"),
    "nul_in_name": Case(nul_in_name, _U, "evil.txt\\x00.jpg"),
    "symlink_entry": Case(symlink_entry, _U, "link"),
    "ratio_bomb": Case(ratio_bomb, _U, "zeros.bin"),
    "total_size_bomb": Case(
        total_size_bomb, _U, "part0010.bin", {"max_total_uncompressed": 10 * MiB}
    ),
    "lying_sizes": Case(lying_sizes, _U, "zeros.bin"),
    "short_member": Case(short_member, _B, "a.xml"),
    "truncated": Case(truncated, _B),
    "corrupt_stored": Case(corrupt_stored, _B, "a.bin"),
    "corrupt_deflate": Case(corrupt_deflate, _B, "annotations.xml"),
    "empty_file": Case(empty_file, _B),
    "not_a_zip": Case(not_a_zip, _B),
    "cp437_name": Case(cp437_name, None),
    "utf8_name_without_flag": Case(utf8_name_without_flag, None),
    "many_entries": Case(lambda: many_entries(101), _U, None, {"max_entries": 100}),
    "entry_count_lie": Case(entry_count_lie, _U, None, {"max_entries": 100}),
    "entry_count_claim": Case(entry_count_claim, _U, None, {"max_entries": 1000}),
    "duplicate_names": Case(duplicate_names, _U, "annotations.xml"),
    "encrypted_flag": Case(encrypted_flag, _B, "a.txt"),
    "overlapping_entries": Case(overlapping_entries, _U, "a.bin"),
    "local_name_mismatch": Case(local_name_mismatch, _U, "good.txt"),
}


def write_all(outdir: str | Path) -> list[Path]:
    """Write every case as ``<name>.zip`` plus ``cases.json`` into ``outdir``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, case in CASES.items():
        path = out / f"{name}.zip"
        path.write_bytes(case.build())
        paths.append(path)
    manifest = {
        n: {"kind": c.kind, "member": c.member, "limits": c.limits} for n, c in CASES.items()
    }
    (out / "cases.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/hostile_archives.py OUTDIR")
    for p in write_all(sys.argv[1]):
        print(p)

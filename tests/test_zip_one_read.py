"""ZipSource.read_bytes's one-read path answers exactly as the careful, chunked path does.

A small member read whole takes one ``pread`` and one inflate call; whatever is not plainly
right there is read again the careful way. So for every member, intact or damaged, the bytes
or the error (its class and its words) must be those of the careful reader, which is
``_open_raw(...).readall()``, the path every member took before.
"""

from __future__ import annotations

import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from hostile_archives import (
    build_zip,
    corrupt_deflate,
    corrupt_stored,
    local_name_mismatch,
    lying_sizes,
    raw_zip,
    short_member,
)
from tfdrop.archive import zipsource
from tfdrop.archive.zipsource import ZipSource
from tfdrop.errors import TfdropError

BIG = 1 << 30


def _careful(src: ZipSource, name: str) -> bytes:
    with src._open_raw(name, src.size(name)) as raw:
        return raw.readall()


def _outcome(read: Callable[[], bytes]) -> tuple[str, object]:
    try:
        return "bytes", read()
    except TfdropError as exc:
        return type(exc).__name__, str(exc)


def _both(path: Path) -> list[tuple[tuple[str, object], tuple[str, object]]]:
    out = []
    with ZipSource(path) as src:
        for name in src.names():
            fast = _outcome(lambda: src.read_bytes(name, max_size=BIG))  # noqa: B023
            slow = _outcome(lambda: _careful(src, name))  # noqa: B023
            out.append((fast, slow))
    return out


def _with_extra(extra_len: int) -> bytes:
    """The members, the first with an unknown extra field of ``extra_len`` data bytes (zipfile
    writes it into the local and the central header)."""
    members: list[tuple[str | zipfile.ZipInfo, bytes]] = list(_members())
    info = zipfile.ZipInfo(str(members[0][0]))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.extra = struct.pack("<2H", 0xCAFE, extra_len) + bytes(extra_len)
    members[0] = (info, members[0][1])
    return build_zip(members)


def _members() -> list[tuple[str, bytes]]:
    rng = random.Random(5)
    return [
        ("a.xml", b"<annotation><object/></annotation>\n" * 300),
        ("b.jpg", rng.randbytes(70_000)),
        ("c.bin", b"x"),
        ("d.bin", b""),
    ]


def _cases() -> dict[str, bytes]:
    plain = build_zip(_members())
    stored = build_zip(_members(), compress=False)
    text = b"<object/>" * 1000
    packed = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = packed.compress(text) + packed.flush()
    crc = zlib.crc32(text)
    open_ended = zlib.compressobj(6, zlib.DEFLATED, -15)
    unfinished = open_ended.compress(text) + open_ended.flush(zlib.Z_SYNC_FLUSH)
    return {
        "deflated": plain,
        "stored": stored,
        "extra_over_slack": _with_extra(196),
        "extra_within_slack": _with_extra(5),
        "corrupt_deflate": corrupt_deflate(),
        "corrupt_stored": corrupt_stored(),
        "short_member": short_member(),
        "lying_sizes": lying_sizes(real_size=1 << 20, declared=1000),
        "local_name_mismatch": local_name_mismatch(),
        "crc_lie": raw_zip("x.xml", stream, method=8, crc=crc ^ 1, size=len(text)),
        "size_one_short": raw_zip("x.xml", stream, method=8, crc=crc, size=len(text) - 1),
        "size_one_over": raw_zip("x.xml", stream, method=8, crc=crc, size=len(text) + 1),
        "stream_cut": raw_zip("x.xml", stream[:-9], method=8, crc=crc, size=len(text)),
        "trailing_bytes": raw_zip("x.xml", stream + b"junk", method=8, crc=crc, size=len(text)),
        "stored_as_deflate": raw_zip("x.xml", text, method=8, crc=crc, size=len(text)),
        # every byte out, but no final block: the stream never ends
        "unfinished_stream": raw_zip("x.xml", unfinished, method=8, crc=crc, size=len(text)),
    }


def _local_name_longer() -> bytes:
    """The local header's name is the central one plus a byte (the data's first): a check that
    compares only as many bytes as the central name has would pass it."""
    data = build_zip([("good.txt", b"hello" * 100)])
    n = struct.unpack_from("<H", data, 26)[0]
    return data[:26] + struct.pack("<H", n + 1) + data[28:]


@pytest.mark.parametrize("case", sorted(_cases()))
def test_one_read_agrees_with_the_careful_reader(tmp_path: Path, case: str) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(_cases()[case])
    for fast, slow in _both(path):
        assert fast == slow


def test_intact_members_take_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast path is really taken (not the careful one each time) for intact members."""
    path = tmp_path / "x.zip"
    path.write_bytes(build_zip(_members()))

    def refuse(self: ZipSource, name: str, size: int) -> object:
        raise AssertionError(f"{name} was read the careful way")

    monkeypatch.setattr(ZipSource, "_open_raw", refuse)
    with ZipSource(path) as src:
        got = {n: src.read_bytes(n, max_size=BIG) for n in src.names() if src.size(n)}
    assert got == {n: d for n, d in _members() if d}


def test_local_name_one_byte_longer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.zip"
    path.write_bytes(_local_name_longer())
    with ZipSource(path) as src:
        with pytest.raises(TfdropError, match="different file"):
            src.read_bytes("good.txt", max_size=BIG)
        with pytest.raises(TfdropError, match="different file"):
            src.open("good.txt").read()


def test_over_one_read_cap_goes_the_careful_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zipsource, "ONE_READ", 1000)
    path = tmp_path / "x.zip"
    path.write_bytes(build_zip(_members()))
    for fast, slow in _both(path):
        assert fast == slow


def test_cut_file_agrees(tmp_path: Path) -> None:
    """A zip whose member data was cut after the directory was read (a copy in progress)."""
    data = build_zip(_members(), compress=False)
    path = tmp_path / "x.zip"
    path.write_bytes(data)
    with ZipSource(path) as src:
        with path.open("r+b") as f:
            f.truncate(len(data) // 3)
        for name in src.names():
            fast = _outcome(lambda: src.read_bytes(name, max_size=BIG))  # noqa: B023
            slow = _outcome(lambda: _careful(src, name))  # noqa: B023
            assert fast == slow


def _mutations(data: bytes, rng: random.Random) -> bytes:
    """One random damage: a flipped bit anywhere, a header field changed, or a cut."""
    out = bytearray(data)
    kind = rng.choice(["bit", "bit", "field", "cut"])
    if kind == "bit":
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    elif kind == "field":
        pos = rng.choice([i for i in range(len(out) - 4) if out[i : i + 4] == b"PK\x03\x04"])
        at = pos + rng.choice([14, 18, 22, 26, 28])  # crc, sizes, name and extra lengths
        out[at] = rng.randrange(256)
    else:
        out = out[: rng.randrange(len(out))]
    return bytes(out)


@pytest.mark.parametrize("compress", [True, False])
def test_random_damage_gets_the_careful_readers_answer(tmp_path: Path, compress: bool) -> None:
    """A bit flipped anywhere, a local header field rewritten, or a cut: for every member the
    bytes or the error of the careful reader (the central directory still read, else the
    zip is refused before either path runs)."""
    rng = random.Random(11 if compress else 12)
    data = build_zip(_members(), compress=compress)
    path = tmp_path / "x.zip"
    compared = 0
    for _ in range(150):
        path.write_bytes(_mutations(data, rng))
        try:
            pairs = _both(path)
        except TfdropError:
            continue  # the directory itself is damaged
        for fast, slow in pairs:
            assert fast == slow
            compared += 1
    assert compared > 200


def _other_layout() -> bytes:
    """A zip of the same names whose members sit elsewhere (longer first member)."""
    members = _members()
    return build_zip([(members[0][0], members[0][1] * 3), *members[1:]])


@pytest.mark.parametrize("how", ["cut", "rewritten"])
@pytest.mark.parametrize("careful", [False, True])
def test_a_zip_cut_or_rewritten_while_read_is_changed_not_corrupt(
    tmp_path: Path, how: str, careful: bool
) -> None:
    """Outside attack 14: a zip cut short, or another zip written over it, while it is read
    was "bad local file header" (the local header was not where the directory read at the
    start says): the file is not the one whose directory was read, and the error says so."""
    path = tmp_path / "x.zip"
    data = build_zip(_members())
    path.write_bytes(data)
    with ZipSource(path) as src:
        last = max(src.names(), key=lambda n: src.entry(n).header_offset)
        with path.open("r+b") as f:
            if how == "cut":
                f.truncate(src.entry(last).header_offset + 10)
            else:
                f.write(_other_layout())

        def read() -> bytes:
            return src.open(last).read() if careful else src.read_bytes(last, max_size=BIG)

        with pytest.raises(TfdropError, match="changed while it was read"):
            read()

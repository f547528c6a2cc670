"""ZipSource against the hostile catalogue and real zips (SPEC.md "Bad input").

Each hostile case asserts the error class, its ``archive``/``member`` fields and, for the
bombs, that memory stayed bounded while the archive was opened and read.
"""

from __future__ import annotations

import io
import os
import subprocess
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hostile_archives as hostile
from conftest import require_tool
from tfdrop.archive import ZipSink, ZipSource, has_end_record, open_source
from tfdrop.errors import ArchiveError, MemberNotFoundError, UnsafeArchiveError
from tfdrop.limits import Limits

MiB = 1 << 20


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile")
    hostile.write_all(out)
    return out


def _drain(path: Path, limits: Limits | None = None) -> list[str]:
    """Open a zip and read every member to the end; returns the names."""
    with ZipSource(path, limits=limits) as src:
        for name in src.names():
            with src.open(name) as f:
                while f.read(MiB):
                    pass
        return src.names()


def _peak(fn: Callable[[], object]) -> int:
    """Peak Python heap (bytes) allocated while ``fn`` runs (its exception is swallowed)."""
    tracemalloc.start()
    try:
        fn()
    except ArchiveError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_every_hostile_case_reports_its_documented_error_kind(hostile_dir: Path, case: str) -> None:
    spec = hostile.CASES[case]
    path = hostile_dir / f"{case}.zip"
    limits = Limits(**spec.limits)
    if spec.kind is None:
        assert _drain(path, limits) == ["café.txt"]
        return
    with pytest.raises(ArchiveError) as info:
        _drain(path, limits)
    assert info.value.kind == spec.kind
    assert info.value.archive == str(path)
    assert info.value.member == spec.member
    assert isinstance(info.value, ValueError)  # a data error: the input goes to failed/


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../evil.txt", "'..' component"),
        ("a/../../evil.txt", "'..' component"),
        ("a/b/..", "'..' component"),
        ("/etc/evil.conf", "absolute path"),
        ("\\\\server\\share\\evil", "absolute path"),
        ("C:\\evil.dll", "drive letter"),
        ("c:evil.dll", "drive letter"),
        ("..\\evil.txt", "'..' component"),
        ("images\\..\\..\\evil.txt", "'..' component"),
    ],
)
def test_zip_slip_names_are_rejected_naming_the_member(tmp_path: Path, name: str, why: str) -> None:
    path = tmp_path / "slip.zip"
    path.write_bytes(hostile.named(name))
    with pytest.raises(UnsafeArchiveError) as info:
        ZipSource(path)
    assert info.value.member == name
    assert info.value.archive == str(path)
    assert why in info.value.message


def test_nul_in_a_name_is_rejected_and_reported_escaped(tmp_path: Path) -> None:
    path = tmp_path / "nul.zip"
    path.write_bytes(hostile.nul_in_name())
    with pytest.raises(UnsafeArchiveError) as info:
        ZipSource(path)
    assert info.value.member == "evil.txt\\x00.jpg"
    assert "NUL" in info.value.message


def test_symlink_entry_is_rejected_even_beside_good_members(tmp_path: Path) -> None:
    path = tmp_path / "link.zip"
    path.write_bytes(hostile.symlink_entry())
    with pytest.raises(UnsafeArchiveError, match="symbolic link") as info:
        ZipSource(path)
    assert info.value.member == "link"


def test_ratio_bomb_is_refused_from_the_directory_without_inflating(hostile_dir: Path) -> None:
    path = hostile_dir / "ratio_bomb.zip"
    assert path.stat().st_size < 1 * MiB  # 200 MiB of zeros inside
    with pytest.raises(UnsafeArchiveError, match="ratio") as info:
        ZipSource(path)
    assert info.value.member == "zeros.bin"
    assert _peak(lambda: ZipSource(path)) < 256 * 1024


def test_honest_compressible_members_pass_the_default_ratio_cap(tmp_path: Path) -> None:
    # CVAT-like annotation XML: repetitive but with varying numbers, about 3 MiB.
    rows = [
        f'<box label="car" xtl="{i * 7 % 1920}.{i % 10}0" ytl="{i * 13 % 1080}.50" '
        f'xbr="{(i * 7 + 40) % 1920}.00" ybr="{(i * 13 + 30) % 1080}.25" occluded="0"/>'
        for i in range(30_000)
    ]
    xml = ("<annotations>\n" + "\n".join(rows) + "\n</annotations>\n").encode()
    path = tmp_path / "cvat.zip"
    with ZipSink(path) as sink:
        sink.write_member("annotations.xml", xml, compress=True)
        sink.write_member("images/a.jpg", os.urandom(300_000), compress=False)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("annotations.xml")
        assert info.file_size > MiB
        assert info.file_size / info.compress_size > 5
    with ZipSource(path) as src:
        assert src.read_bytes("annotations.xml", max_size=16 * MiB) == xml


def test_lying_declared_size_fails_unsafe_after_a_bounded_read(hostile_dir: Path) -> None:
    path = hostile_dir / "lying_sizes.zip"  # 64 MiB of zeros declared as 1000 bytes
    with ZipSource(path) as src:
        assert src.size("zeros.bin") == 1000
        with src.open("zeros.bin") as f, pytest.raises(UnsafeArchiveError, match="declared") as e:
            f.read(1000)  # the first inflated chunk already runs past the declared size
        assert e.value.member == "zeros.bin"
        with pytest.raises(UnsafeArchiveError):
            src.read_bytes("zeros.bin", max_size=1 << 30)

        def read_all() -> None:
            src.read_bytes("zeros.bin", max_size=1 << 30)

        assert _peak(read_all) < 8 * MiB


def test_member_shorter_than_declared_is_a_broken_archive(hostile_dir: Path) -> None:
    with ZipSource(hostile_dir / "short_member.zip") as src:
        with pytest.raises(ArchiveError, match="ends after") as info:
            src.read_bytes("a.xml", max_size=MiB)
        assert not isinstance(info.value, UnsafeArchiveError)
        assert info.value.member == "a.xml"


@pytest.mark.parametrize(
    ("case", "member", "pattern"),
    [
        ("corrupt_stored", "a.bin", "CRC-32"),
        ("corrupt_deflate", "annotations.xml", "deflate|CRC-32"),
    ],
)
def test_corrupt_member_data_is_an_archive_error_naming_the_member(
    hostile_dir: Path, case: str, member: str, pattern: str
) -> None:
    path = hostile_dir / f"{case}.zip"
    with ZipSource(path) as src:
        f = src.open(member)
        with pytest.raises(ArchiveError, match=pattern) as info:
            f.read()
        assert info.value.member == member
        assert info.value.archive == str(path)
        with pytest.raises(ArchiveError, match=pattern):
            f.read(1)  # a failed reader stays failed
        f.close()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "truncated: no end of central directory record"),
        ("empty_file", "empty file (0 bytes), not a zip file"),
        ("not_a_zip", "not a zip file"),
        ("encrypted_flag", "member is encrypted"),
    ],
)
def test_unreadable_zips_say_why_in_plain_words(hostile_dir: Path, case: str, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        ZipSource(hostile_dir / f"{case}.zip")
    assert info.value.message == message
    assert not isinstance(info.value, UnsafeArchiveError)


def test_entry_cap_holds_even_when_the_end_record_lies(hostile_dir: Path) -> None:
    lim = Limits(max_entries=100)
    for case in ("many_entries", "entry_count_lie"):
        with pytest.raises(UnsafeArchiveError, match="more than 100 entries"):
            ZipSource(hostile_dir / f"{case}.zip", limits=lim)
    assert len(ZipSource(hostile_dir / "entry_count_lie.zip").names()) == 300


def test_total_size_cap_names_the_member_that_crosses_it(hostile_dir: Path) -> None:
    lim = Limits(max_total_uncompressed=10 * MiB)
    with pytest.raises(UnsafeArchiveError, match="in total") as info:
        ZipSource(hostile_dir / "total_size_bomb.zip", limits=lim)
    assert info.value.member == "part0010.bin"  # 11 MiB > 10 MiB
    assert len(ZipSource(hostile_dir / "total_size_bomb.zip").names()) == 11


def test_member_size_cap(hostile_dir: Path) -> None:
    lim = Limits(max_member_size=MiB - 1)
    with pytest.raises(UnsafeArchiveError, match="cap") as info:
        ZipSource(hostile_dir / "total_size_bomb.zip", limits=lim)
    assert info.value.member == "part0000.bin"


def test_impossible_sizes_get_a_hint_about_sizes_not_links(hostile_dir: Path) -> None:
    """Outside attack 14: a lying size and overlapping members said "re-create the zip
    without links or absolute paths" (the hint of unsafe names)."""
    with ZipSource(hostile_dir / "lying_sizes.zip") as src, pytest.raises(UnsafeArchiveError) as e:
        src.read_bytes("zeros.bin", max_size=1 << 30)
    with pytest.raises(UnsafeArchiveError) as overlap:
        ZipSource(hostile_dir / "overlapping_entries.zip")
    for err in (e.value, overlap.value):
        assert err.hint is not None
        assert "sizes" in err.hint
        assert "links" not in err.hint


def test_duplicates_overlaps_and_header_mismatches_are_unsafe(hostile_dir: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="duplicate") as dup:
        ZipSource(hostile_dir / "duplicate_names.zip")
    assert dup.value.member == "annotations.xml"
    with pytest.raises(UnsafeArchiveError, match="overlaps"):
        ZipSource(hostile_dir / "overlapping_entries.zip")
    with ZipSource(hostile_dir / "local_name_mismatch.zip") as src:
        with pytest.raises(UnsafeArchiveError, match="local header") as info:
            src.open("good.txt")
        assert info.value.member == "good.txt"


def test_non_utf8_names_decode_as_cp437_and_unflagged_utf8_as_utf8(hostile_dir: Path) -> None:
    for case in ("cp437_name", "utf8_name_without_flag"):
        with ZipSource(hostile_dir / f"{case}.zip") as src:
            assert src.names() == ["café.txt"]
            assert src.read_bytes("café.txt", max_size=10) == b"x"


def test_has_end_record_tells_a_finished_zip_from_a_partial_copy(hostile_dir: Path) -> None:
    whole = hostile.build_zip([("a.txt", b"a" * 10_000)])
    path = hostile_dir.parent / "copying.zip"
    path.write_bytes(whole[: len(whole) // 2])
    assert not has_end_record(path)
    path.write_bytes(whole)
    assert has_end_record(path)
    assert not has_end_record(hostile_dir / "not_a_zip.zip")
    assert not has_end_record(hostile_dir / "empty_file.zip")


_SEED = hostile.build_zip(
    [
        ("annotations.xml", b"<annotations>" + b"<box/>" * 300 + b"</annotations>"),
        ("images/a.jpg", bytes(range(256)) * 8),
        ("label_map.pbtxt", b"item {\n\tid: 1\n\tname: 'cat'\n}\n\n"),
    ]
)
_STORED_SEED = hostile.build_zip([("a.bin", b"A" * 300), ("b.bin", b"B" * 300)], compress=False)


def _read_everything_or_archive_error(data: bytes, tmp: Path) -> None:
    path = tmp / "fuzz.zip"
    path.write_bytes(data)
    try:
        with open_source(path) as src:
            for name in src.names():
                whole = src.read_bytes(name, max_size=MiB)
                with src.open(name) as f:  # large reads take the direct (readinto) path
                    assert f.read(MiB) + f.read() == whole
    except ArchiveError:
        pass  # the only acceptable failure: never struct.error, zlib.error, IndexError ...


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    seed=st.sampled_from([_SEED, _STORED_SEED]),
    flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=6),
)
def test_corrupted_bytes_anywhere_give_archive_error_or_correct_data(
    tmp_path: Path, seed: bytes, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(seed)
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    _read_everything_or_archive_error(bytes(data), tmp_path)


def test_every_truncation_of_a_zip_is_an_archive_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.zip"
    for cut in range(len(_SEED)):
        path.write_bytes(_SEED[:cut])
        with pytest.raises(ArchiveError):
            _read_all(path)


def _read_all(path: Path) -> None:
    with ZipSource(path) as src:
        for name in src.names():
            src.read_bytes(name, max_size=MiB)


def test_missing_member_is_named(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(_SEED)
    with ZipSource(path) as src:
        for call in (src.open, src.size, lambda n: src.read_bytes(n, max_size=1)):
            with pytest.raises(MemberNotFoundError) as info:
                call("images/missing.jpg")
            assert info.value.member == "images/missing.jpg"
            assert info.value.archive == str(path)


def test_read_bytes_refuses_a_member_over_its_cap_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(_SEED)
    with ZipSource(path) as src:
        size = src.size("images/a.jpg")
        with pytest.raises(ArchiveError, match="cap") as info:
            src.read_bytes("images/a.jpg", max_size=size - 1)
        assert info.value.member == "images/a.jpg"
        assert not isinstance(info.value, UnsafeArchiveError)
        assert len(src.read_bytes("images/a.jpg", max_size=size)) == size


def test_readers_stay_valid_after_the_source_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(_SEED)
    src = ZipSource(path)
    f = src.open("images/a.jpg")
    src.close()
    assert f.read() == bytes(range(256)) * 8
    f.close()
    with pytest.raises(ValueError, match="closed"):
        src.open("images/a.jpg")


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65_537, MiB, -1])
def test_streamed_reads_in_any_chunk_size_match_zipfile(tmp_path: Path, chunk: int) -> None:
    payload = b"".join(b"%08d,%d\n" % (i, i * i) for i in range(60_000))  # ~1.1 MiB, deflated
    path = tmp_path / "a.zip"
    with ZipSink(path) as sink:
        sink.write_member("a.csv", payload, compress=True)
        sink.write_member("b.bin", payload[:70_000], compress=False)
    with ZipSource(path) as src, zipfile.ZipFile(path) as oracle:
        for name in ("a.csv", "b.bin"):
            parts = []
            limit = 5000 if chunk == 1 else None  # one byte at a time: a prefix is enough
            with src.open(name) as f:
                while part := f.read(chunk):
                    parts.append(part)
                    if limit is not None and len(parts) >= limit:
                        break
            got = b"".join(parts)
            assert got == oracle.read(name)[: len(got)]
            if limit is None:
                assert len(got) == src.size(name)


def test_find_matches_case_insensitively_only_when_unambiguous(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(
        hostile.build_zip([("JPEGImages/X.JPG", b"1"), ("a/B.txt", b"2"), ("a/b.TXT", b"3")])
    )
    with ZipSource(path) as src:
        assert src.find("JPEGImages/X.JPG") == "JPEGImages/X.JPG"
        assert src.find("jpegimages/x.jpg") == "JPEGImages/X.JPG"
        assert src.find("jpegimages\\x.jpg") == "JPEGImages/X.JPG"
        assert src.find("a/b.txt") is None  # two candidates
        assert src.find("a/B.txt") == "a/B.txt"
        assert src.find("nothing") is None
        assert src.exists("a/B.txt")
        assert not src.exists("a/b.txt")


def test_names_are_normalised_and_folders_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(
        hostile.build_zip(
            [("./top.txt", b"1"), ("dir/", b""), ("dir//sub\\x.txt", b"2"), ("dir/./y.txt", b"3")]
        )
    )
    with ZipSource(path) as src:
        assert src.names() == ["top.txt", "dir/sub/x.txt", "dir/y.txt"]
        assert src.read_bytes("dir/sub/x.txt", max_size=1) == b"2"


def test_zips_from_info_zip_with_data_descriptors_and_prepended_stub_are_read(
    tmp_path: Path,
) -> None:
    require_tool("zip", "zip")
    tree = tmp_path / "tree"
    (tree / "Annotations").mkdir(parents=True)
    (tree / "Annotations" / "a.xml").write_bytes(b"<annotation/>" * 500)
    (tree / "JPEGImages").mkdir()
    (tree / "JPEGImages" / "a.jpg").write_bytes(os.urandom(20_000))
    made = tmp_path / "voc.zip"
    subprocess.run(["zip", "-qr", str(made), "."], cwd=tree, check=True)
    # Streamed from stdin: sizes follow the data in a data descriptor (flag bit 3).
    streamed = tmp_path / "streamed.zip"
    with open(streamed, "wb") as out:
        subprocess.run(["zip", "-q", "-", "-"], input=b"hello\n" * 1000, stdout=out, check=True)
    stub = tmp_path / "sfx.zip"
    stub.write_bytes(b"#!/bin/sh\nexit 0\n" * 10 + made.read_bytes())
    with ZipSource(made) as src:
        assert sorted(src.names()) == ["Annotations/a.xml", "JPEGImages/a.jpg"]
        assert (
            src.read_bytes("JPEGImages/a.jpg", max_size=MiB)
            == (tree / "JPEGImages" / "a.jpg").read_bytes()
        )
    with ZipSource(stub) as src:
        assert src.read_bytes("Annotations/a.xml", max_size=MiB) == b"<annotation/>" * 500
    with ZipSource(streamed) as src:
        assert src.read_bytes("-", max_size=MiB) == b"hello\n" * 1000


def test_zip64_end_records_and_zip64_members_are_read(tmp_path: Path) -> None:
    require_tool("zip", "zip")
    (tmp_path / "hi.txt").write_bytes(b"hi\n" * 1000)
    forced = tmp_path / "z64.zip"
    # -fz: zip64 extra fields and a zip64 end record, the plain record saturated.
    subprocess.run(["zip", "-q", "-fz", str(forced), "hi.txt"], cwd=tmp_path, check=True)
    assert b"PK\x06\x06" in forced.read_bytes()
    stub = tmp_path / "sfx64.zip"  # the zip64 locator's absolute offset is now wrong
    stub.write_bytes(b"MZ" + bytes(1000) + forced.read_bytes())
    member = tmp_path / "member64.zip"
    with zipfile.ZipFile(member, "w") as zf, zf.open("big.bin", "w", force_zip64=True) as w:
        w.write(b"z" * 100_000)
    for path in (forced, stub):
        with ZipSource(path) as src:
            assert src.names() == ["hi.txt"]
            assert src.read_bytes("hi.txt", max_size=MiB) == b"hi\n" * 1000
    with ZipSource(member) as src:
        assert src.read_bytes("big.bin", max_size=MiB) == b"z" * 100_000


def test_open_source_reads_a_zip_whatever_its_suffix(tmp_path: Path) -> None:
    path = tmp_path / "export.bin"
    path.write_bytes(_SEED)
    with open_source(path) as src:
        assert isinstance(src, ZipSource)
        assert "label_map.pbtxt" in src.names()


def test_a_fifo_named_like_a_zip_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "drop.zip"
    os.mkfifo(fifo)
    with pytest.raises(ArchiveError, match="not a regular file") as info:
        open_source(fifo)
    assert info.value.archive == str(fifo)


def test_find_matches_macos_decomposed_names_to_composed_ones(tmp_path: Path) -> None:
    import unicodedata

    nfd = unicodedata.normalize("NFD", "images/café.jpg")
    path = tmp_path / "mac.zip"
    path.write_bytes(hostile.build_zip([(nfd, b"jpg")]))
    with ZipSource(path) as src:
        assert src.names() == [nfd]
        assert src.find("images/café.jpg") == nfd  # NFC, as an annotation file holds it


@pytest.mark.parametrize("bad", [0, -1, True, 1.5])
def test_limits_must_be_positive_integers(bad: object) -> None:
    with pytest.raises(ValueError, match="max_ratio"):
        Limits(max_ratio=bad)  # type: ignore[arg-type]


def test_hostile_catalogue_runs_as_a_script_writing_every_case(tmp_path: Path) -> None:
    import json
    import sys

    out = tmp_path / "cases"
    script = Path(__file__).with_name("hostile_archives.py")
    subprocess.run([sys.executable, str(script), str(out)], check=True)
    manifest = json.loads((out / "cases.json").read_text())
    assert set(manifest) == set(hostile.CASES)
    assert manifest["total_size_bomb"]["limits"] == {"max_total_uncompressed": 10 * MiB}
    assert all((out / f"{name}.zip").is_file() for name in manifest)


def test_members_open_and_read_concurrently_from_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    members = {f"images/{i:03d}.jpg": os.urandom(20_000 + i) for i in range(64)}
    path = tmp_path / "many.zip"
    with ZipSink(path) as sink:
        for name, body in members.items():
            sink.write_member(name, body, compress=bool(len(body) % 2))
    with ZipSource(path) as src, ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            got = dict(
                zip(
                    members,
                    pool.map(lambda n: src.read_bytes(n, max_size=MiB), members),
                    strict=True,
                )
            )
            assert got == members


def test_members_work_as_text_and_line_iterators(tmp_path: Path) -> None:
    path = tmp_path / "yolo.zip"
    lines = [f"{i % 3} 0.5 0.5 0.{i % 9 + 1} 0.2\n" for i in range(2000)]
    with ZipSink(path) as sink:
        sink.write_member("obj_train_data/a.txt", "".join(lines).encode(), compress=True)
        sink.write_member("obj.names", "chat\nchién\n".encode(), compress=True)
    with ZipSource(path) as src:
        with src.open("obj_train_data/a.txt") as f:
            assert [line.decode() for line in f] == lines
        with io.TextIOWrapper(src.open("obj.names"), encoding="utf-8") as t:
            assert t.read().splitlines() == ["chat", "chién"]


def test_claimed_entry_count_and_directory_size_are_refused_before_listing(
    hostile_dir: Path,
) -> None:
    path = hostile_dir / "entry_count_claim.zip"
    with pytest.raises(UnsafeArchiveError, match="more than 1000 entries"):
        ZipSource(path, limits=Limits(max_entries=1000))
    assert _peak(lambda: ZipSource(path, limits=Limits(max_entries=1000))) < 200_000
    with pytest.raises(UnsafeArchiveError, match="central directory is"):
        ZipSource(hostile_dir / "many_entries.zip", limits=Limits(max_directory_size=1000))


@pytest.mark.parametrize(("crc_ok", "expected"), [(True, "café.txt"), (False, "cafe.txt")])
def test_info_zip_unicode_path_extra_is_used_only_when_its_crc_matches(
    tmp_path: Path, crc_ok: bool, expected: str
) -> None:
    import struct
    import zlib

    utf8 = "café.txt".encode()
    crc = zlib.crc32(b"cafe.txt") if crc_ok else 0x12345678
    info = zipfile.ZipInfo("cafe.txt")
    info.extra = struct.pack("<2HBL", 0x7075, 5 + len(utf8), 1, crc) + utf8
    path = tmp_path / "up.zip"
    path.write_bytes(hostile.build_zip([(info, b"x")]))
    with ZipSource(path) as src:
        assert src.names() == [expected]
        assert src.read_bytes(expected, max_size=1) == b"x"

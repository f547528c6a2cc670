"""Spooled records (tfdrop.formats.tfrecord.spool, tfdrop.archive.rawcopy): worker processes
frame their records into spool files, the parent appends the runs to the output zip with a
combined CRC-32. The archive must be the one a single process writes, the zip must check
(Python's zipfile and Info-ZIP), and no spool file may outlive the conversion."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import time
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

import tfdrop.convert
from conftest import mounted_tmpfs
from daemon_support import png, voc_xml
from tfdrop.archive import ZipSink
from tfdrop.archive import sink as sink_module
from tfdrop.archive.rawcopy import RangeCopier, crc32_combine
from tfdrop.archive.sink import MemberWriter
from tfdrop.codec.model import LabelMap
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats import Notes, WriteOptions
from tfdrop.formats.base import FormatName
from tfdrop.formats.tfrecord import TfrecordWriter
from tfdrop.formats.tfrecord import spool as spool_mod
from tfdrop.formats.tfrecord.spool import UnitSpool, takes_spans
from tfdrop.stream import iter_records
from tfdrop.units import window

LABELS = ("cat", "dog", "bird")


@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_crc32_combine_is_the_crc_of_the_concatenation(a: bytes, b: bytes) -> None:
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc32_combine_over_large_lengths() -> None:
    a, b = os.urandom(1000), bytes(5_000_000) + b"x"
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_the_copier_copies_ranges_at_offsets_and_refuses_a_short_source(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    data = os.urandom(3_000_001)
    src.write_bytes(data)
    dst.write_bytes(b"head")
    copier = RangeCopier(chunk=64 * 1024)  # many chunks per range
    with open(src, "rb") as s, open(dst, "r+b") as d:
        copier.copy(s.fileno(), 10, d.fileno(), 4, 2_000_000)
        copier.copy(s.fileno(), 0, d.fileno(), 2_000_004, 7)
        with pytest.raises(OSError, match="ended"):
            copier.copy(s.fileno(), 2_999_990, d.fileno(), 2_000_011, 100)
    got = dst.read_bytes()
    assert got[:4] == b"head"
    assert got[4:2_000_004] == data[10:2_000_010]
    assert got[2_000_004:2_000_011] == data[:7]
    assert got[2_000_011:] == data[2_999_990:]  # what the source had before it ended


def _unzip_checks(path: Path) -> None:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
    if shutil.which("unzip"):
        subprocess.run(["unzip", "-tq", str(path)], check=True, capture_output=True)


def write_parts(
    sink: ZipSink, name: str, f: BinaryIO, parts: list[bytes], head: bytes, tail: bytes
) -> MemberWriter:
    """Start the stored member ``name``: ``head``, ``parts`` (the file ``f`` holds them one
    after another) appended as ranges, ``tail``; the writer, not closed."""
    w = sink.open_stored(name)
    w.write(head)
    offset = 0
    for part in parts:
        w.append_ranges([(f.fileno(), offset, len(part))], zlib.crc32(part))
        offset += len(part)
    w.write(tail)
    return w


def _member_of_writes_and_ranges(out: Path, spool: Path, parts: list[bytes]) -> bytes:
    """A zip of a stored member of writes and ``parts`` appended from ``spool`` (after a
    deflated member, so it starts off a block boundary), and a spilled file stored whole."""
    with ZipSink(out, date_time=(1980, 1, 1, 0, 0, 0)) as sink, open(spool, "rb") as f:
        sink.write_member("first.txt", b"a deflated member first", compress=True)
        write_parts(sink, "a.bin", f, parts, b"written first;", b";written last").close()
        size = spool.stat().st_size
        sink.add_file_known("c.bin", spool, crc=zlib.crc32(spool.read_bytes()), size=size)
    _unzip_checks(out)
    with zipfile.ZipFile(out) as zf:
        assert zf.read("a.bin") == b"written first;" + b"".join(parts) + b";written last"
        assert zf.read("c.bin") == spool.read_bytes()
    return out.read_bytes()


def test_a_member_of_writes_and_appended_ranges_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = tmp_path / "spool"
    parts = [os.urandom(n) for n in (5, 70_000, 1, 300_000, 4096, 2_500_000)]
    spool.write_bytes(b"".join(parts))
    raw = _member_of_writes_and_ranges(tmp_path / "raw.zip", spool, parts)
    # another Python's zipfile, whose member writer lacks the fields StoredWriter sets: the
    # bytes go through its own write, and the archive is the same
    monkeypatch.setattr(sink_module, "writes_raw", lambda member: False)
    assert _member_of_writes_and_ranges(tmp_path / "through.zip", spool, parts) == raw


def test_runs_and_records_keep_each_subsets_order_in_direct_and_spilled_members(
    tmp_path: Path,
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    out = tmp_path / "out.zip"
    options = WriteOptions(workdir=tmp_path)
    assert takes_spans(options)
    assert not takes_spans(WriteOptions(shards=2))
    assert not takes_spans(WriteOptions(compression="gzip"))
    unit = UnitSpool(str(spool_dir / "u1"))
    with ZipSink(out) as sink:
        writer = TfrecordWriter(sink, options, Notes())
        writer.write_record("train", b"t0")  # the direct member
        writer.write_record("val", b"v0")  # spilled
        unit.add("train", b"t1")
        unit.add("val", b"v1")
        unit.add("train", b"t2")
        first = unit.flush("train")
        assert first is not None
        writer.write_span(first)
        writer.write_record("train", b"t3")
        for span in unit.flush_all():
            writer.write_span(span)
        unit.close()
        writer.write_record("val", b"v2")
        writer.close(LabelMap.from_names(["cat"]))
    _unzip_checks(out)
    with zipfile.ZipFile(out) as zf:
        train = list(iter_records(io.BytesIO(zf.read("train.tfrecord"))))
        val = list(iter_records(io.BytesIO(zf.read("val.tfrecord"))))
    assert train == [b"t0", b"t1", b"t2", b"t3"]
    assert val == [b"v0", b"v1", b"v2"]


def _voc(path: Path, n: int, *, bad: int | None = None) -> Path:
    """A VOC zip whose items alternate between train and val, with labels first met late
    (items the parent must resolve interleave with items a worker encodes)."""
    ids = [f"{i:04d}" for i in range(n)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            labels = [LABELS[(i + k) % (1 + min(2, i // 40))] for k in range(1 + i % 3)]
            xml = voc_xml(i, labels) if i != bad else "<annotation><filename>x"
            zf.writestr(f"Annotations/{ids[i]}.xml", xml)
            zf.writestr(f"JPEGImages/{ids[i]}.png", png(i))
        zf.writestr("ImageSets/Main/train.txt", "".join(f"{i}\n" for i in ids[::2]))
        zf.writestr("ImageSets/Main/val.txt", "".join(f"{i}\n" for i in ids[1::2]))
        zf.writestr("labelmap.txt", "cat:::\n")  # dog and bird come from the objects
    return path


def _members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize(
    "extra",
    [{}, {"shards": 2}, {"compression": "gzip"}, {"masks": True}],
    ids=["spooled", "shards", "gzip", "masks"],
)
def test_two_subsets_read_by_two_workers_give_the_single_process_archive(
    tmp_path: Path, extra: dict[str, object]
) -> None:
    src = _voc(tmp_path / "in.zip", 300)
    work = tmp_path / "work"
    work.mkdir()
    one = convert(src, tmp_path / "one.zip", ConvertOptions(jobs=1, **extra))  # type: ignore[arg-type]
    two = convert(
        src,
        tmp_path / "two.zip",
        ConvertOptions(jobs=2, **extra),  # type: ignore[arg-type]
        workdir=work,
    )
    assert _members(tmp_path / "one.zip") == _members(tmp_path / "two.zip")
    assert (one.items, one.objects, one.subsets, one.labels) == (
        two.items,
        two.objects,
        two.subsets,
        two.labels,
    )
    assert one.subsets == {"train": 150, "val": 150}
    _unzip_checks(tmp_path / "two.zip")
    assert list(work.iterdir()) == []  # no spool folder left


def test_a_failing_unit_leaves_no_spool_file(tmp_path: Path) -> None:
    src = _voc(tmp_path / "in.zip", 300, bad=250)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(FormatError) as info:
        convert(src, tmp_path / "out.zip", ConvertOptions(jobs=2), workdir=work)
    assert info.value.member == "Annotations/0250.xml"
    assert list(work.iterdir()) == []
    assert not (tmp_path / "out.zip").exists()


def test_a_full_work_folder_is_an_os_error_and_leaves_nothing(tmp_path: Path) -> None:
    src = _voc(tmp_path / "in.zip", 400)
    with mounted_tmpfs(tmp_path / "fs", "256k") as work:
        filler = work / "filler"
        filler.write_bytes(b"x" * (256 * 1024 - 8192))  # room for less than one unit's records
        with pytest.raises(OSError) as info:
            convert(src, tmp_path / "out.zip", ConvertOptions(jobs=2), workdir=work)
        assert info.value.errno == 28  # ENOSPC, from a worker's spool write
        assert list(work.iterdir()) == [filler]
    assert not (tmp_path / "out.zip").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- found by the outside attack on the spooled path ------------------------------------------


def _tfrecord_pair(tmp_path: Path) -> tuple[Path, Path]:
    """Two TFRecord archives of the same layout and record sizes, labels cat vs dog."""
    out = []
    for label in ("cat", "dog"):
        voc = tmp_path / f"voc-{label}.zip"
        with zipfile.ZipFile(voc, "w") as zf:
            for i in range(600):
                zf.writestr(f"Annotations/{i:04d}.xml", voc_xml(i, [label]))
                zf.writestr(f"JPEGImages/{i:04d}.png", png(1))
        archive = tmp_path / f"{label}.zip"
        convert(voc, archive, ConvertOptions(jobs=1))
        out.append(archive)
    assert out[0].stat().st_size == out[1].stat().st_size
    return out[0], out[1]


@pytest.mark.parametrize("jobs", [1, 2])
@pytest.mark.parametrize(
    "how", ["copied-over", "rewritten", "rewritten-mtime-kept", "bare-replaced", "bare-rewritten"]
)
def test_an_input_rewritten_while_workers_read_it_is_refused_not_mixed(
    tmp_path: Path, how: str, jobs: int
) -> None:
    """A drop rewritten in place mid-run (``cp B.zip in.zip``) gave an archive of old and new
    records that validated; work units read ranges, which have no CRC of their own. The
    second attack found the same for a bare ``.tfrecord`` rewritten in place (checked only
    when opened) and for a same-size rewrite whose mtime was put back."""
    a, b = _tfrecord_pair(tmp_path)
    if how.startswith("bare-"):
        folder = tmp_path / "bare"
        folder.mkdir()
        with zipfile.ZipFile(a) as zf:
            zf.extractall(folder)
        with zipfile.ZipFile(b) as zf:
            new = zf.read("default.tfrecord")
        src = folder / "default.tfrecord"

        def act() -> None:
            if how == "bare-rewritten":
                with open(src, "r+b") as f:
                    f.write(new)
            else:
                (folder / "new").write_bytes(new)
                os.replace(folder / "new", src)
    else:
        src = tmp_path / "in.zip"
        shutil.copyfile(a, src)

        def act() -> None:
            before = src.stat()
            if how == "copied-over":
                shutil.copyfile(b, src)
            else:
                with open(src, "r+b") as f:
                    f.write(b.read_bytes())
            if how == "rewritten-mtime-kept":
                os.utime(src, ns=(before.st_atime_ns, before.st_mtime_ns))

    done: list[int] = []

    def progress(n: int, total: int | None) -> None:
        if n == 100 and not done:
            done.append(n)
            act()

    error: str | None = None
    try:
        report = convert(src, tmp_path / "out.zip", ConvertOptions(jobs=jobs), progress=progress)
    except TfdropError as exc:
        error = str(exc)
    if error is not None:
        assert "changed while it was read" in error
        assert not (tmp_path / "out.zip").exists()
    else:  # finishing is fine only with the old data throughout
        assert report.labels == {"cat": 600}


def test_member_order_is_the_same_whoever_encodes_the_records(tmp_path: Path) -> None:
    """Item 0 in val (encoded by a worker), item 1 in train with a label the parent resolves:
    the members came out train-first with two jobs, val-first with one."""
    src = tmp_path / "in.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for i in range(200):
            label = "bird" if i == 1 else "cat"
            zf.writestr(f"Annotations/{i:04d}.xml", voc_xml(i, [label]))
            zf.writestr(f"JPEGImages/{i:04d}.png", png(i))
        zf.writestr("ImageSets/Main/val.txt", "0000\n")
        zf.writestr("ImageSets/Main/train.txt", "".join(f"{i:04d}\n" for i in range(1, 200)))
        zf.writestr("labelmap.txt", "cat:::\n")
    names = []
    for jobs in (1, 2):
        convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        with zipfile.ZipFile(tmp_path / f"out{jobs}.zip") as zf:
            names.append(zf.namelist())
    assert names[0] == names[1] == ["val.tfrecord", "train.tfrecord", "label_map.pbtxt"]


@pytest.mark.parametrize("target", ["tfrecord", "cvat"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_the_same_input_converts_to_the_same_bytes_whenever(
    tmp_path: Path, jobs: int, target: FormatName
) -> None:
    """Members were dated by the clock, so two runs' archives differed (an outside attack
    compared them): they carry the input's mtime, or SOURCE_DATE_EPOCH. So does CVAT's
    ``<dumped>`` (attack 15: it was the clock's)."""
    src = _voc(tmp_path / "in.zip", 300)
    os.utime(src, (1_600_000_000, 1_600_000_000))
    outs = []
    for n in range(2):
        out = tmp_path / f"out{n}.zip"
        convert(src, out, ConvertOptions(jobs=jobs, target_format=target))
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    with zipfile.ZipFile(tmp_path / "out0.zip") as zf:
        assert {i.date_time for i in zf.infolist()} == {time.localtime(1_600_000_000)[:6]}


def test_source_date_epoch_dates_the_members(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    src = _voc(tmp_path / "in.zip", 10)
    convert(src, tmp_path / "out.zip", ConvertOptions(jobs=1))
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        assert {i.date_time for i in zf.infolist()} == {time.localtime(1_700_000_000)[:6]}


def test_many_units_reuse_a_slot_file_each_and_give_the_single_process_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _voc(tmp_path / "in.zip", 300)
    one = convert(src, tmp_path / "one.zip", ConvertOptions(jobs=1))
    log = tmp_path / "spools.log"
    real = spool_mod.UnitSpool.__init__

    def logged(self: UnitSpool, path: str, *, reuse: bool = False) -> None:
        with open(log, "a") as f:  # the forked workers write here too
            f.write(f"{path} {reuse}\n")
        real(self, path, reuse=reuse)

    monkeypatch.setattr(spool_mod.UnitSpool, "__init__", logged)
    monkeypatch.setattr(tfdrop.convert, "UNIT_ITEMS", 4)  # 75 units on 2 workers
    work = tmp_path / "work"
    work.mkdir()
    two = convert(src, tmp_path / "two.zip", ConvertOptions(jobs=2), workdir=work)
    assert _members(tmp_path / "one.zip") == _members(tmp_path / "two.zip")
    assert (one.items, one.subsets, one.labels) == (two.items, two.subsets, two.labels)
    lines = log.read_text().splitlines()
    assert len(lines) >= 70  # one spool per unit
    names = {line.split()[0] for line in lines}
    assert all(line.endswith(" True") for line in lines)
    assert len(names) == window(2) + 1  # every unit in one of the slots, each slot reused
    assert list(work.iterdir()) == []  # the slots' folder goes with the pool

"""The read-back that follows the TFRecord member while it is written (tfdrop.follow): it
only saves the end's read. It is used when the label map was known from the start, gives up
on any doubt (then the member is read back whole, as before), finds a byte that reached the
disk wrong, leaves no thread or descriptor behind, and relies on the writer never writing a
byte of the member twice, which is checked here too."""

from __future__ import annotations

import gzip
import io
import os
import random
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from test_readback import MAP, _archive, _check, _item, _written
from test_spool import LABELS, _voc
from tfdrop import convert as convert_module
from tfdrop.codec.model import LabelMap, LabelMapItem
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import DataError, ValidationError
from tfdrop.follow import Follower
from tfdrop.limits import DEFAULT_LIMITS
from tfdrop.readback import Followed, validate_archive

PINNED = LabelMap(tuple(LabelMapItem(id=i + 1, name=n) for i, n in enumerate(LABELS)))


def _noisy_voc(path: Path, n: int, size: int = 128) -> Path:
    """A VOC zip of ``n`` noise images (``size`` px, ~50 kB each at 128: a member of MBs)."""
    rng = random.Random(5)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            img = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            zf.writestr(f"JPEGImages/{i:04d}.png", buf.getvalue())
            zf.writestr(
                f"Annotations/{i:04d}.xml",
                f"<annotation><filename>{i:04d}.png</filename><size><width>{size}</width>"
                f"<height>{size}</height></size><object><name>{LABELS[i % 3]}</name><bndbox>"
                "<xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>"
                "</annotation>",
            )
    return path


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[Followed | None]:
    """What each conversion's end check was given as followed."""
    seen: list[Followed | None] = []

    def validate(*args: Any, followed: Followed | None = None, **kw: Any) -> int:
        seen.append(followed)
        return validate_archive(*args, followed=followed, **kw)

    monkeypatch.setattr(convert_module, "validate_archive", validate)
    return seen


@pytest.mark.parametrize(
    ("jobs", "extra"),
    [(1, {}), (2, {}), (1, {"compression": "gzip"}), (2, {"shards": 3})],
)
def test_a_followed_conversion_is_the_same_archive_and_skips_the_end_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, jobs: int, extra: dict[str, Any]
) -> None:
    src = _voc(tmp_path / "in.zip", 300)
    seen = _spy(monkeypatch)
    threads, fds = threading.active_count(), _fds()
    options = ConvertOptions(jobs=jobs, label_map=PINNED, **extra)
    convert(src, tmp_path / "followed.zip", options)
    assert threading.active_count() == threads
    assert _fds() == fds
    followed = seen[-1]
    assert followed is not None
    with zipfile.ZipFile(tmp_path / "followed.zip") as zf:
        assert zf.testzip() is None  # what the follower read is what the file holds now
        info = zf.getinfo(followed.name)
        assert (followed.size, followed.crc) == (info.file_size, info.CRC)
    # items alternate train / val: the first member is train's, half of them (a third with
    # shards: round-robin)
    first = "train.tfrecord-00000-of-00003" if "shards" in extra else "train.tfrecord"
    assert (followed.name, followed.records) == (first, 50 if "shards" in extra else 150)
    monkeypatch.setattr(Follower, "attach", lambda self, name, writer: None)
    convert(src, tmp_path / "whole.zip", options)
    assert seen[-1] is None  # read back whole at the end
    assert (tmp_path / "followed.zip").read_bytes() == (tmp_path / "whole.zip").read_bytes()


def test_a_gzip_member_that_deflates_far_is_followed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # attack 12: the follower read with the input's ratio cap (200:1), not the read-back's,
    # gave up on tfdrop's own compressible output and the member was read again
    box = "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>10</xmax><ymax>12</ymax></bndbox>"
    objects = f"<object><name>cat</name>{box}</object>" * 1000
    with zipfile.ZipFile(tmp_path / "in.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(300):
            zf.writestr(
                f"Annotations/{i:04d}.xml",
                f"<annotation><filename>{i:04d}.png</filename><size><width>16</width>"
                f"<height>16</height></size>{objects}</annotation>",
            )
    seen = _spy(monkeypatch)
    options = ConvertOptions(jobs=1, images=False, compression="gzip", label_map=PINNED)
    convert(tmp_path / "in.zip", tmp_path / "out.zip", options)
    with zipfile.ZipFile(tmp_path / "out.zip") as zf:
        stream = zf.read("default.tfrecord")
    records = gzip.decompress(stream)
    assert len(records) > DEFAULT_LIMITS.ratio_floor  # checked for its ratio, which is past
    assert len(records) > DEFAULT_LIMITS.max_ratio * len(stream)  # the input's cap
    assert seen[-1] is not None


def test_labels_met_late_are_read_back_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _voc(tmp_path / "in.zip", 200)  # dog and bird first appear in later items
    seen = _spy(monkeypatch)
    threads = threading.active_count()
    report = convert(src, tmp_path / "out.zip", ConvertOptions(jobs=1))
    assert seen == [None]  # the map grew after the follower took it: it is not trusted
    assert report.validated_items == 200
    assert threading.active_count() == threads


def test_a_byte_that_reaches_the_disk_wrong_fails_the_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _voc(tmp_path / "in.zip", 300)
    real = os.pwrite
    hits: list[int] = []

    def pwrite(fd: int, data: Any, offset: int) -> int:
        view = memoryview(data)
        if len(view) > 8192 and not hits:  # a whole buffer of the member: one bit off
            hits.append(offset)
            at = len(view) // 2
            view[at] ^= 0x10  # in the writer's own aligned buffer, put back after
            try:
                return real(fd, data, offset)
            finally:
                view[at] ^= 0x10
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    threads = threading.active_count()
    with pytest.raises(ValidationError, match=r"read back|CRC|crc"):
        convert(src, tmp_path / "out.zip", ConvertOptions(jobs=1, label_map=PINNED))
    assert hits
    assert not (tmp_path / "out.zip").exists()
    assert threading.active_count() == threads


def test_a_bad_item_late_stops_the_follower(tmp_path: Path) -> None:
    src = _voc(tmp_path / "in.zip", 300, bad=290)
    threads, fds = threading.active_count(), _fds()
    for jobs in (1, 2):
        with pytest.raises(DataError):
            convert(src, tmp_path / "out.zip", ConvertOptions(jobs=jobs, label_map=PINNED))
        assert threading.active_count() == threads
        assert _fds() == fds
        assert not (tmp_path / "out.zip").exists()


def test_the_writer_never_writes_a_byte_of_the_member_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what lets the follower trust bytes it read before the member ended
    src = _noisy_voc(tmp_path / "in.zip", 100)
    writes: list[tuple[int, int]] = []
    commits: list[int] = []
    real_pwrite, real_commit = os.pwrite, Follower.committed

    def pwrite(fd: int, data: Any, offset: int) -> int:
        if "out.zip" in os.readlink(f"/proc/self/fd/{fd}"):  # the archive's temp file
            writes.append((offset, len(memoryview(data))))
        return real_pwrite(fd, data, offset)

    def committed(self: Follower, end: int) -> None:
        commits.append(end)
        real_commit(self, end)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(Follower, "committed", committed)
    convert(src, tmp_path / "out.zip", ConvertOptions(jobs=2, label_map=PINNED))
    assert commits == sorted(commits)
    assert len(commits) > 2
    assert len(writes) > 2
    end = 0
    for offset, length in writes:
        assert offset >= end, "a byte written again"
        end = offset + length


def test_a_followed_member_the_zip_disagrees_with_is_read_whole(tmp_path: Path) -> None:
    items = [_item(f"{i}.jpg") for i in range(50)]
    good = _archive(tmp_path / "a.zip", items)
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("train.tfrecord")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    right = Followed("train.tfrecord", start, info.file_size, info.CRC, 50, 50)

    def check(followed: Followed) -> int:
        written = _written(50, 50)
        return validate_archive(
            good, "tfrecord", written, MAP, masks=False, limits=DEFAULT_LIMITS, followed=followed
        )

    assert check(right) == 50
    # figures the zip does not back: the follower's counts are not taken (50 records are read)
    for wrong in (
        Followed("train.tfrecord", start, info.file_size, info.CRC ^ 1, 7, 7),
        Followed("train.tfrecord", start + 1, info.file_size, info.CRC, 7, 7),
        Followed("train.tfrecord", start, info.file_size - 1, info.CRC, 7, 7),
    ):
        assert check(wrong) == 50
    # and a follower's counts that the zip backs but the written figures do not: refused
    with pytest.raises(ValidationError):
        check(Followed("train.tfrecord", start, info.file_size, info.CRC, 49, 49))
    assert _check(good, _written(50, 50)) == 50

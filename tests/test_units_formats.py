"""Work units of the COCO, CVAT and TFRecord readers: ``convert --jobs N`` writes the same
bytes, counts and warnings whatever N, and a unit's items are the source's items in order."""

from __future__ import annotations

import gzip
import json
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest

from daemon_support import png
from tfdrop.archive import open_source
from tfdrop.convert import ConvertOptions, Report, convert
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats import FormatName, Notes, ReadOptions
from tfdrop.formats.coco.reader import CocoReader
from tfdrop.formats.coco.spill import Spill, read_groups
from tfdrop.formats.cvat.reader import CvatReader
from tfdrop.formats.tfrecord import TfrecordReader

LABELS = ("cat", "dog", "bird")


def _records(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _same(tmp_path: Path, src: Path, target: FormatName, **kw: object) -> Report:
    """Convert with 1 and 2 jobs; the archives, counts and warnings must be equal."""
    one = convert(src, tmp_path / "one.zip", ConvertOptions(target_format=target, jobs=1, **kw))  # type: ignore[arg-type]
    two = convert(src, tmp_path / "two.zip", ConvertOptions(target_format=target, jobs=2, **kw))  # type: ignore[arg-type]
    assert _records(tmp_path / "one.zip") == _records(tmp_path / "two.zip")
    for field in ("items", "objects", "labels", "subsets", "lossy", "warnings", "skipped"):
        assert getattr(one, field) == getattr(two, field), field
    return one


def _coco(path: Path, n: int, *, shuffled: bool = False, missing: int = -1) -> Path:
    images: list[dict[str, Any]] = [
        {"id": i + 1, "file_name": f"{i:04d}.png", "width": 16, "height": 16} for i in range(n)
    ]
    anns: list[dict[str, Any]] = []
    for i in range(n):
        for k in range(i % 4):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + (i + k) % 3,
                         "bbox": [1, 2, 4 + k, 20], "iscrowd": 0, "area": 9})  # fmt: skip
    if shuffled:
        random.Random(1).shuffle(anns)
    cats = [{"id": i + 1, "name": name} for i, name in enumerate(LABELS)]
    doc = {"images": images, "annotations": anns, "categories": cats}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/instances_train.json", json.dumps(doc))
        val = [im | {"file_name": "v" + str(im["file_name"])} for im in images[:70]]
        zf.writestr("annotations/instances_val.json", json.dumps(doc | {"images": val}
                    | {"annotations": [a for a in anns if a["image_id"] <= 70]}))  # fmt: skip
        for i in range(n):
            if i != missing:
                zf.writestr(f"images/train/{i:04d}.png", png(i))
                zf.writestr(f"images/val/v{i:04d}.png", png(i))
    return path


@pytest.mark.parametrize("target", ["tfrecord", "voc"])
def test_a_coco_source_read_by_two_workers_gives_the_same_archive(
    tmp_path: Path, target: FormatName
) -> None:
    one = _same(tmp_path, _coco(tmp_path / "in.zip", 200, shuffled=True, missing=130), target)
    assert one.items == 270
    assert one.warning_counts.get("box_clipped", 0) > 0  # boxes 20 high on 16-pixel images
    assert one.warning_counts["missing_image"] == 1


def test_the_units_of_a_coco_source_are_its_items_in_order(tmp_path: Path) -> None:
    src = _coco(tmp_path / "in.zip", 150, shuffled=True)
    with open_source(src) as source:
        plain = [(it.name, it.subset, it.objects) for it in
                 CocoReader(source, ReadOptions(images=False), Notes()).items()]  # fmt: skip
        reader = CocoReader(source, ReadOptions(images=False), Notes())
        units = reader.units(max_items=64, max_bytes=1 << 30)
        assert units is not None
        assert len(units) == 3 + 2  # 150 images, then 70
        worker = CocoReader(source, ReadOptions(images=False), Notes())  # as a worker opens it
        by_unit = [(it.name, it.subset, it.objects) for u in units for it in worker.unit_items(u)]
        assert by_unit == plain
        assert [(it.name, it.subset, it.objects) for it in reader.items()] == plain
        reader.close()


def test_coco_units_are_bounded_by_their_annotations_bytes_without_images(
    tmp_path: Path,
) -> None:
    src = _coco(tmp_path / "in.zip", 150, shuffled=True)
    with open_source(src) as source:
        reader = CocoReader(source, ReadOptions(images=False), Notes())
        whole = reader.units(max_items=1000, max_bytes=1 << 30)
        assert whole is not None
        assert len(whole) == 2  # one per file: nothing to cut by count
        reader.close()
        reader = CocoReader(source, ReadOptions(images=False), Notes())
        small = reader.units(max_items=1000, max_bytes=1)
        assert small is not None
        assert len(small) == 150 + 70  # each image's annotations alone exceed one byte
        reader.close()


def test_a_bad_coco_file_is_read_in_one_process_for_the_sequential_error(tmp_path: Path) -> None:
    src = tmp_path / "in.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("annotations/instances_a.json", json.dumps(
            {"images": [{"id": 1, "file_name": "x.png", "width": 4, "height": 4}],
             "annotations": [], "categories": [{"id": 1, "name": "cat"}]}))  # fmt: skip
        zf.writestr("annotations/instances_b.json", '{"images": [{"id": 1}], "categories": []}')
    with open_source(src) as source:
        assert CocoReader(source, ReadOptions(), Notes()).units(max_items=1, max_bytes=1) is None


def test_a_spill_in_several_runs_is_saved_grouped_in_the_order_groups_gives(
    tmp_path: Path,
) -> None:
    spill = Spill(tmp_path, run_bytes=64, sorted_flush=64)
    order = [5, 1, 3, 1, 0, 5, 2, 1, 4, 0] * 5
    for k, pos in enumerate(order):
        spill.add(pos, (k, "x" * (k % 3)))
    expected = dict(spill.groups())
    spill2 = Spill(tmp_path, run_bytes=64, sorted_flush=64)
    for k, pos in enumerate(order):
        spill2.add(pos, (k, "x" * (k % 3)))
    offsets = spill2.save_sorted(tmp_path / "s.spill", 7)
    assert len(spill2._runs) > 2
    assert read_groups(tmp_path / "s.spill", offsets[0], offsets[7]) == expected
    assert read_groups(tmp_path / "s.spill", offsets[2], offsets[4]) == {
        p: expected[p] for p in (2, 3)
    }
    assert offsets[6] == offsets[7]  # position 6 has no records
    spill.close()
    spill2.close()


def _cvat(path: Path, n: int, *, bad: int | None = None, images: bool = True) -> Path:
    rows = []
    for i in range(n):
        shapes = "".join(
            f'<box label="{LABELS[(i + k) % 3]}" occluded="0" xtl="1" ytl="2" xbr="{5 + k}" '
            f'ybr="{18 if k == 1 else 9}"><attribute name="color">red</attribute></box>\n'
            for k in range(i % 4)
        )
        if i == bad:
            shapes += '<box label="cat" xtl="x" ytl="1" xbr="2" ybr="3"/>'
        rows.append(
            f'  <image id="{i}" name="{i:04d}.png" width="16" height="16">\n{shapes}</image>\n'
        )
        if i % 50 == 7:
            rows.append('  <tag label="cat"/>\n  <!-- a comment <image> -->\n')
    labels = "".join(f"<label><name>{lb}</name></label>" for lb in LABELS)
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n'
        f"  <meta><task><labels>{labels}</labels></task></meta>\n" + "".join(rows)
        + "</annotations>\n"
    )  # fmt: skip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.xml", xml)
        for i in range(n if images else 0):
            zf.writestr(f"images/{i:04d}.png", png(i))
    return path


@pytest.mark.parametrize("target", ["tfrecord", "coco"])
def test_a_cvat_source_read_by_two_workers_gives_the_same_archive(
    tmp_path: Path, target: FormatName
) -> None:
    one = _same(tmp_path, _cvat(tmp_path / "in.zip", 230), target)
    assert one.items == 230
    assert one.skipped["tag"] == 5
    assert one.lossy.get("attribute:color", 0) > 0 or target == "coco"


def test_a_cvat_source_without_images_warns_once_with_two_workers(tmp_path: Path) -> None:
    one = _same(tmp_path, _cvat(tmp_path / "in.zip", 150, images=False), "tfrecord")
    assert one.warning_counts["no_images"] == 1


def test_a_bad_cvat_image_in_a_later_unit_gives_the_sequential_error(tmp_path: Path) -> None:
    src = _cvat(tmp_path / "in.zip", 200, bad=170)
    errors = []
    for jobs in (1, 2):
        with pytest.raises(FormatError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(info.value.to_dict())
    assert errors[0] == errors[1]
    assert errors[0]["line"] > 300  # the line in the file, not in the unit's fragment


def test_a_cvat_file_cut_short_gives_the_sequential_error(tmp_path: Path) -> None:
    whole = _cvat(tmp_path / "whole.zip", 150)
    with zipfile.ZipFile(whole) as zf:
        xml = zf.read("annotations.xml")
    src = tmp_path / "in.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("annotations.xml", xml[: len(xml) * 3 // 4])
        for i in range(150):
            zf.writestr(f"images/{i:04d}.png", png(i))
    errors = []
    for jobs in (1, 2):
        with pytest.raises(FormatError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(info.value.to_dict())
    assert errors[0] == errors[1]


def test_the_units_of_a_cvat_source_are_its_items_in_order(tmp_path: Path) -> None:
    src = _cvat(tmp_path / "in.zip", 150)
    with open_source(src) as source:
        plain = [(it.name, it.objects) for it in
                 CvatReader(source, ReadOptions(images=False), Notes()).items()]  # fmt: skip
        reader = CvatReader(source, ReadOptions(images=False), Notes())
        units = reader.units(max_items=64, max_bytes=1 << 30)
        assert units is not None
        assert len(units) == 3
        worker = CvatReader(source, ReadOptions(images=False), Notes())
        assert [(it.name, it.objects) for u in units for it in worker.unit_items(u)] == plain
        reader.close()


def _tfrecord_zip(tmp_path: Path) -> Path:
    """A stored zip of two record files (train 200 items, val 70), written by tfdrop."""
    out = tmp_path / "records.zip"
    convert(_coco(tmp_path / "coco.zip", 200), out, ConvertOptions(jobs=1))
    return out


@pytest.mark.parametrize("target", ["tfrecord", "voc", "coco"])
def test_a_tfrecord_source_read_by_two_workers_gives_the_same_archive(
    tmp_path: Path, target: FormatName
) -> None:
    src = _tfrecord_zip(tmp_path)
    one = _same(tmp_path, src, target)
    assert one.items == 270


def test_the_units_of_a_tfrecord_source_are_its_records_in_order(tmp_path: Path) -> None:
    src = _tfrecord_zip(tmp_path)
    with open_source(src) as source:
        reader = TfrecordReader(source, ReadOptions(), Notes())
        units = reader.units(max_items=64, max_bytes=1 << 30)
        assert [(u.file, u.first) for u in units] == [
            (0, 0),
            (0, 64),
            (0, 128),
            (0, 192),
            (1, 0),
            (1, 64),
        ]
        by_unit = [it for u in units for it in reader.unit_items(u)]
        assert by_unit == list(reader.items())


def _bare(tmp_path: Path, name: str, data: bytes) -> Path:
    folder = tmp_path / "bare"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def test_bare_and_gzip_record_files_split_as_far_as_they_can(tmp_path: Path) -> None:
    with zipfile.ZipFile(_tfrecord_zip(tmp_path)) as zf:
        train = zf.read("train.tfrecord")
    plain = _bare(tmp_path, "train.tfrecord", train)
    one = _same(tmp_path, plain, "voc")
    assert one.items == 200
    zipped = _bare(tmp_path, "z.tfrecord.gz", gzip.compress(train))
    assert _same(tmp_path, zipped, "voc").items == 200
    with open_source(tmp_path / "bare") as source:
        reader = TfrecordReader(source, ReadOptions(), Notes())
        units = reader.units(max_items=64, max_bytes=1 << 30)
        assert reader.files == ["train.tfrecord", "z.tfrecord.gz"]
        assert len([u for u in units if u.file == 0]) == 4
        assert [u.size for u in units if u.file == 1] == [-1]  # gzip: one whole-file unit


def test_a_bad_record_in_a_later_unit_gives_the_sequential_error(tmp_path: Path) -> None:
    with zipfile.ZipFile(_tfrecord_zip(tmp_path)) as zf:
        train = bytearray(zf.read("train.tfrecord"))
    with open_source(tmp_path / "records.zip") as source:
        reader = TfrecordReader(source, ReadOptions(), Notes())
        unit = reader.units(max_items=64, max_bytes=1 << 30)[2]
    train[unit.offset + 40] ^= 0xFF  # inside record 128's payload: its data CRC fails
    src = _bare(tmp_path, "train.tfrecord", bytes(train))
    errors = []
    for jobs in (1, 2):
        with pytest.raises(TfdropError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(info.value.to_dict())
    assert errors[0] == errors[1]
    assert (errors[0]["record"], errors[0]["offset"]) == (128, unit.offset)


def test_record_offsets_find_every_record_whatever_the_chunk_size() -> None:
    import io

    from tfdrop.codec.framing import encode_record
    from tfdrop.stream import record_offsets

    records = [encode_record(b"x" * n) for n in (0, 1, 30, 7, 100)]
    data = b"".join(records)
    starts = [sum(map(len, records[:i])) for i in range(len(records) + 1)]
    for chunk in (1, 5, 12, 13, 64, 1 << 20):
        assert list(record_offsets(io.BytesIO(data), chunk_size=chunk) or []) == starts
    assert record_offsets(io.BytesIO(data[:-1])) is None  # ends inside a record
    assert record_offsets(io.BytesIO(gzip.compress(data))) is None


def test_a_deflated_member_cannot_be_read_at_an_offset(tmp_path: Path) -> None:
    src = tmp_path / "in.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("a.bin", b"0123456789" * 10, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("b.bin", b"0123456789" * 10, compress_type=zipfile.ZIP_STORED)
    with open_source(src) as source:
        assert source.read_range("a.bin", 0, 4) is None
        assert source.read_range("b.bin", 13, 4) == b"3456"
        with pytest.raises(TfdropError, match="outside the member"):
            source.read_range("b.bin", 98, 4)


def test_a_voc_reader_without_read_ahead_gives_the_same_items(tmp_path: Path) -> None:
    from test_units import _voc
    from tfdrop.formats.voc.reader import VocReader

    src = _voc(tmp_path / "in.zip", 70, listed_only=2)
    with open_source(src) as source:
        ahead = list(VocReader(source, ReadOptions(), Notes()).items())
        inline = list(VocReader(source, ReadOptions(read_ahead=False), Notes()).items())
    assert inline == ahead
    assert len(inline) == 72


@pytest.mark.parametrize(("depth", "cap", "ok"), [(7, 64, True), (9, 9, True), (10, 9, False),
                                                  (12, 64, True), (65, 64, False)])  # fmt: skip
def test_the_fast_xml_path_measures_depth_exactly(depth: int, cap: int, ok: bool) -> None:
    from tfdrop.errors import LimitExceededError
    from tfdrop.formats.common.xmlsafe import parse_small
    from tfdrop.limits import Limits

    xml = ("<a>" * depth + "</a>" * depth).encode()
    if ok:
        assert parse_small(xml, limits=Limits(max_depth=cap)).tag == "a"
    else:
        with pytest.raises(LimitExceededError):
            parse_small(xml, limits=Limits(max_depth=cap))

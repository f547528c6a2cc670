"""Read-back validation (tfdrop.readback): a written archive that differs from what was written
is never published; the TFRecord path checks frames, schema, counts and the label map."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import pytest

from conftest import records_bytes
from tfdrop.codec.labelmap import format_label_map
from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.errors import ValidationError
from tfdrop.formats.base import FormatName
from tfdrop.limits import DEFAULT_LIMITS
from tfdrop.readback import Written, validate_archive

MAP = LabelMap.from_names(["cat", "dog"])


def _item(name: str, label: str = "cat", label_id: int = 1) -> Item:
    box = Box(0.1, 0.2, 0.5, 0.6)
    return Item(
        name=name,
        width=10,
        height=10,
        image_format="jpeg",
        objects=(Annotation(label=label, label_id=label_id, box=box),),
    )


def _archive(path: Path, items: list[Item], label_map: LabelMap = MAP) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.tfrecord", records_bytes(items))
        zf.writestr("label_map.pbtxt", format_label_map(label_map))
    return path


def _written(items: int, objects: int) -> Written:
    return Written(items, objects, Counter({"train": items}), Counter({"cat": objects}))


def _check(path: Path, written: Written, label_map: LabelMap = MAP) -> int:
    return validate_archive(
        path, "tfrecord", written, label_map, masks=False, limits=DEFAULT_LIMITS
    )


def test_an_archive_as_written_reads_back(tmp_path: Path) -> None:
    path = _archive(tmp_path / "a.zip", [_item("a.jpg"), _item("b.jpg")])
    assert _check(path, _written(2, 2)) == 2


def test_a_record_missing_from_the_archive_fails(tmp_path: Path) -> None:
    path = _archive(tmp_path / "a.zip", [_item("a.jpg")])
    with pytest.raises(ValidationError, match="wrote 2 items"):
        _check(path, _written(2, 2))


def test_a_record_whose_label_text_and_id_disagree_with_the_map_fails_naming_it(
    tmp_path: Path,
) -> None:
    path = _archive(tmp_path / "a.zip", [_item("a.jpg"), _item("b.jpg", "cat", 2)])
    with pytest.raises(ValidationError) as info:
        _check(path, _written(2, 2))
    assert (info.value.member, info.value.record) == ("train.tfrecord", 1)


def test_a_label_map_that_differs_from_the_one_stated_fails(tmp_path: Path) -> None:
    path = _archive(tmp_path / "a.zip", [_item("a.jpg")], LabelMap.from_names(["cat", "fox"]))
    with pytest.raises(ValidationError, match=r"label_map\.pbtxt"):
        _check(path, _written(1, 1))


def test_a_corrupt_frame_fails(tmp_path: Path) -> None:
    data = bytearray(records_bytes([_item("a.jpg")]))
    data[20] ^= 0xFF
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("train.tfrecord", bytes(data))
        zf.writestr("label_map.pbtxt", format_label_map(MAP))
    with pytest.raises(ValidationError, match="does not read back"):
        _check(path, _written(1, 1))


@pytest.mark.parametrize("target", ["voc", "coco", "yolo", "cvat", "tfrecord"])
def test_a_label_map_out_of_id_order_with_background_converts_to_every_target(
    tmp_path: Path, target: FormatName
) -> None:
    # found by the outside attack: VOC and COCO list labels by id, so a map written
    # "id 2 cat, id 1 dog" (and one with background id 0) failed the read-back as a "bug"
    from tfdrop.codec.model import LabelMapItem
    from tfdrop.convert import ConvertOptions, convert

    lm = LabelMap(
        (
            LabelMapItem(id=0, name="background"),
            LabelMapItem(id=2, name="cat"),
            LabelMapItem(id=1, name="dog"),
        )
    )
    src = _archive(tmp_path / "in.zip", [_item("a.jpg", "cat", 2), _item("b.jpg", "dog", 1)], lm)
    report = convert(src, tmp_path / "out.zip", ConvertOptions(target_format=target, images=False))
    assert (report.items, report.objects) == (2, 2)


def test_every_byte_of_a_stored_member_is_under_a_record_crc(tmp_path: Path) -> None:
    """A change anywhere in a stored member fails the read-back on the records' own CRCs,
    even with a zip CRC-32 that matches the change."""
    clean = records_bytes([_item("a.jpg"), _item("b.jpg")])
    for pos in range(0, len(clean), max(1, len(clean) // 97)):
        data = bytearray(clean)
        data[pos] ^= 0x01
        path = tmp_path / f"{pos}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr("train.tfrecord", bytes(data))
            zf.writestr("label_map.pbtxt", format_label_map(MAP))
        with pytest.raises(ValidationError):
            _check(path, _written(2, 2))


def test_records_swapped_in_place_fail_on_the_zip_crc(tmp_path: Path) -> None:
    """Two records of one length swapped pass their own CRC32Cs: the read-back skipped the
    zip CRC-32 for a while, and an archive that unzip -t refuses was published (an outside
    attack swapped two records in the temp archive before the read-back)."""
    one, two = records_bytes([_item("a.jpg")]), records_bytes([_item("b.jpg")])
    assert len(one) == len(two)
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("train.tfrecord", one + two)
        zf.writestr("label_map.pbtxt", format_label_map(MAP))
    raw = path.read_bytes()
    start = raw.index(one + two)
    path.write_bytes(raw[:start] + two + one + raw[start + len(one) + len(two) :])
    with pytest.raises(ValidationError, match="CRC"):
        _check(path, _written(2, 2))

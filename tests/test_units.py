"""Work units (tfdrop.units): a conversion read by worker processes gives the same archive,
the same counts and the same first error as one read in a single process."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from daemon_support import png, voc_xml
from tfdrop.archive import open_source
from tfdrop.codec.model import LabelMap
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats import FormatName, Notes, ReadOptions
from tfdrop.formats.base import Splittable
from tfdrop.formats.images import ImagesReader
from tfdrop.formats.voc.reader import VocReader

LABELS = ("cat", "dog", "bird", "fox")


def _voc(path: Path, n: int, *, bad: int | None = None, listed_only: int = 0) -> Path:
    """A VOC zip of ``n`` annotated items whose labels first appear late and out of order
    (ids by first appearance depend on every item before), ``listed_only`` ids with an image
    but no annotation, and optionally item ``bad`` broken."""
    ids = [f"{i:04d}" for i in range(n + listed_only)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            labels = [LABELS[(i * 7 + k) % (1 + min(3, i // 50))] for k in range(i % 4)]
            xml = voc_xml(i, labels) if i != bad else "<annotation><filename>x"
            zf.writestr(f"Annotations/{ids[i]}.xml", xml)
        for i, item_id in enumerate(ids):
            zf.writestr(f"JPEGImages/{item_id}.png", png(i))
        zf.writestr("ImageSets/Main/train.txt", "".join(f"{i}\n" for i in ids))
    return path


def _records(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


@pytest.mark.parametrize("target", ["tfrecord", "coco", "yolo"])
def test_two_workers_write_the_same_archive_as_one_process(
    tmp_path: Path, target: FormatName
) -> None:
    src = _voc(tmp_path / "in.zip", 230, listed_only=3)
    one = convert(src, tmp_path / "one.zip", ConvertOptions(target_format=target, jobs=1))
    two = convert(src, tmp_path / "two.zip", ConvertOptions(target_format=target, jobs=2))
    assert _records(tmp_path / "one.zip") == _records(tmp_path / "two.zip")
    assert (one.items, one.objects, one.labels, one.subsets) == (
        two.items,
        two.objects,
        two.labels,
        two.subsets,
    )
    assert one.items == 233
    assert one.label_map.names == two.label_map.names == ["cat", "dog", "bird", "fox"]
    assert one.warning_counts == two.warning_counts


def test_the_units_of_a_voc_source_are_its_items_in_order(tmp_path: Path) -> None:
    src = _voc(tmp_path / "in.zip", 130, listed_only=2)
    with open_source(src) as source:
        reader = VocReader(source, ReadOptions(images=False), Notes())
        units = reader.units(max_items=64, max_bytes=1 << 30)
        assert len(units) == 4  # 64 + 64 + 2 annotated, then the listed-only ids
        by_unit = [it.name for u in units for it in reader.unit_items(u)]
        assert by_unit == [it.name for it in reader.items()]
        small = reader.units(max_items=1000, max_bytes=1)
        assert len(small) == 131  # one item per unit once the byte bound is passed


def test_a_bad_item_in_a_later_unit_gives_the_sequential_error(tmp_path: Path) -> None:
    src = _voc(tmp_path / "in.zip", 200, bad=150)
    errors = []
    for jobs in (1, 2):
        with pytest.raises(FormatError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(info.value.to_dict())
        assert not (tmp_path / f"out{jobs}.zip").exists()
    assert errors[0] == errors[1]
    assert errors[0]["member"] == "Annotations/0150.xml"


def test_a_yolo_source_read_by_two_workers_gives_the_same_archive(tmp_path: Path) -> None:
    voc = _voc(tmp_path / "in.zip", 200)
    convert(voc, tmp_path / "yolo.zip", ConvertOptions(target_format="yolo", jobs=1))
    src = tmp_path / "yolo.zip"
    one = convert(src, tmp_path / "one.zip", ConvertOptions(jobs=1))
    two = convert(src, tmp_path / "two.zip", ConvertOptions(jobs=2))
    assert _records(tmp_path / "one.zip") == _records(tmp_path / "two.zip")
    assert (one.items, one.objects) == (two.items, two.objects) == (200, one.objects)


def test_plan_ranges_bounds_items_and_bytes() -> None:
    from tfdrop.formats.base import plan_ranges

    assert plan_ranges([], max_items=2, max_bytes=10) == []
    assert plan_ranges([1, 1, 1, 1, 1], max_items=2, max_bytes=10) == [(0, 2), (2, 4), (4, 5)]
    assert plan_ranges([4, 4, 4, 20, 1], max_items=9, max_bytes=10) == [
        (0, 2),
        (2, 3),
        (3, 4),
        (4, 5),
    ]


def test_box_masks_made_for_the_od_api_are_counted_in_the_report(tmp_path: Path) -> None:
    # found by the outside attack: with --masks, boxes got a filled mask without a word
    src = _voc(tmp_path / "in.zip", 130)
    one = convert(src, tmp_path / "one.zip", ConvertOptions(masks=True, jobs=1))
    two = convert(src, tmp_path / "two.zip", ConvertOptions(masks=True, jobs=2))
    assert one.lossy["box_as_mask"] == one.objects > 0
    assert two.lossy == one.lossy
    assert _records(tmp_path / "one.zip") == _records(tmp_path / "two.zip")


def test_an_rle_mask_kept_as_its_box_is_counted_in_the_report(tmp_path: Path) -> None:
    # found by the outside attack: masks became boxes without --masks, uncounted
    import json

    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 16}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 4], "iscrowd": 1,
             "segmentation": {"size": [16, 16], "counts": [0, 4, 12, 4, 236]}, "area": 8},
        ],
    }  # fmt: skip
    src = tmp_path / "coco.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("annotations/instances_default.json", json.dumps(coco))
        zf.writestr("images/default/a.png", png(1))
    report = convert(src, tmp_path / "out.zip", ConvertOptions())
    assert report.lossy.get("mask_as_box") == 1
    masked = convert(src, tmp_path / "m.zip", ConvertOptions(masks=True))
    assert "mask_as_box" not in masked.lossy


def test_a_worker_that_dies_is_a_clear_error_not_a_broken_pool(tmp_path: Path) -> None:
    import os
    import signal

    from tfdrop.errors import WorkerDiedError
    from tfdrop.units import JobSpec, parallel_items

    src = _voc(tmp_path / "in.zip", 200)
    with open_source(src) as source:
        reader = VocReader(source, ReadOptions(), Notes())
        units = list(reader.units(max_items=8, max_bytes=1 << 30))
    spec = JobSpec(src, "voc", ReadOptions(), reader.label_map() or LabelMap(), False)
    stream = parallel_items(spec, units, 2, Notes(), on_unit=lambda: None)
    next(stream)
    import multiprocessing

    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
    with pytest.raises(WorkerDiedError, match="died"):
        list(stream)


def test_an_annotation_declaring_another_size_than_its_image_is_refused(tmp_path: Path) -> None:
    # found by the outside attack: a 100x80 declaration over a 200x160 JPEG was written with
    # the declared size (boxes normalised by it), and validate called it valid
    xml = voc_xml(0, ["cat"]).replace("<width>16</width>", "<width>32</width>")
    src = tmp_path / "in.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("Annotations/0000.xml", xml)
        zf.writestr("JPEGImages/0000.png", png(0))
    with pytest.raises(FormatError, match="declares a 32x16 image, but the image is 16x16") as e:
        convert(src, tmp_path / "out.zip", ConvertOptions())
    assert e.value.item == "0000.png"


def _camera(path: Path, n: int, *, bad: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            zf.writestr(f"cam/{i:04d}.png", png(i) if i != bad else b"\x89PNG\r\n\x1a\nnot")
    return path


def test_a_camera_images_zip_is_split_into_units_and_written_the_same(tmp_path: Path) -> None:
    src = _camera(tmp_path / "cam.zip", 150)
    with open_source(src) as source:
        reader = ImagesReader(source, ReadOptions(), Notes())
        assert isinstance(reader, Splittable)
        units = reader.units(max_items=64, max_bytes=1 << 30)
        assert units == [(0, 64), (64, 128), (128, 150)]
        names = [it.name for u in units for it in reader.unit_items(u)]
        assert names == [it.name for it in reader.items()]
    one = convert(src, tmp_path / "one.zip", ConvertOptions(jobs=1))
    two = convert(src, tmp_path / "two.zip", ConvertOptions(jobs=2))
    assert _records(tmp_path / "one.zip") == _records(tmp_path / "two.zip")
    assert one.items == two.items == 150


def test_a_bad_camera_image_in_a_later_unit_gives_the_sequential_error(tmp_path: Path) -> None:
    src = _camera(tmp_path / "cam.zip", 150, bad=140)
    errors = []
    for jobs in (1, 2):
        with pytest.raises(TfdropError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(info.value.to_dict())
    assert errors[0] == errors[1]
    assert errors[0]["member"] == "cam/0140.png"

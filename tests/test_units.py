"""Work units (tfdrop.units): a conversion read by worker processes gives the same archive,
the same counts and the same first error as one read in a single process."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from daemon_support import png
from tfdrop.archive import open_source
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError
from tfdrop.formats import FormatName, Notes, ReadOptions
from tfdrop.formats.voc import VocReader

LABELS = ("cat", "dog", "bird", "fox")


def _xml(i: int, labels: list[str]) -> str:
    objs = "".join(
        f"<object><name>{lb}</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
        f"<xmax>{10 + k}</xmax><ymax>12</ymax></bndbox></object>"
        for k, lb in enumerate(labels)
    )
    return (
        f"<annotation><filename>{i:04d}.png</filename><size><width>16</width>"
        f"<height>16</height></size>{objs}</annotation>"
    )


def _voc(path: Path, n: int, *, bad: int | None = None, listed_only: int = 0) -> Path:
    """A VOC zip of ``n`` annotated items whose labels first appear late and out of order
    (ids by first appearance depend on every item before), ``listed_only`` ids with an image
    but no annotation, and optionally item ``bad`` broken."""
    ids = [f"{i:04d}" for i in range(n + listed_only)]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            labels = [LABELS[(i * 7 + k) % (1 + min(3, i // 50))] for k in range(i % 4)]
            xml = _xml(i, labels) if i != bad else "<annotation><filename>x"
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

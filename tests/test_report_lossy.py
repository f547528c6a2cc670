"""What a TFRecord has no room for is counted in the report, never dropped silently."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tfdrop.convert import ConvertOptions, convert
from tfdrop.formats import FormatName

CVAT_XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><labels>
    <label><name>car</name><attributes><attribute><name>color</name></attribute></attributes></label>
  </labels></task></meta>
  <image id="0" name="a.png" width="10" height="8">
    <tag label="car"></tag>
    <box label="car" occluded="0" xtl="1" ytl="1" xbr="5" ybr="4">
      <attribute name="color">red</attribute>
    </box>
    <polygon label="car" occluded="0" points="1,1;6,1;6,6"></polygon>
  </image>
</annotations>
"""


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, "PNG")
    return buf.getvalue()


def test_attributes_polygons_and_tags_lost_to_tfrecord_are_counted(tmp_path: Path) -> None:
    src = tmp_path / "cvat.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("annotations.xml", CVAT_XML)
        zf.writestr("images/a.png", _png(10, 8))
    report = convert(src, tmp_path / "out.zip", ConvertOptions(target_format="tfrecord"))
    doc = json.loads(json.dumps(report.to_dict()))
    assert doc["objects"] == 2
    assert doc["lossy"]["attribute:color"] == 1
    assert doc["lossy"]["polygon"] == 1
    assert report.lossy.get("tag", 0) + report.skipped.get("tag", 0) >= 1


def test_with_masks_a_polygon_is_not_lost(tmp_path: Path) -> None:
    src = tmp_path / "cvat.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("annotations.xml", CVAT_XML)
        zf.writestr("images/a.png", _png(10, 8))
    report = convert(src, tmp_path / "out.zip", ConvertOptions(masks=True))
    assert "polygon" not in report.lossy


def _rich_tfrecord(tmp_path: Path) -> Path:
    """One record with a feature tfdrop does not know, a source id that is more than the
    name, and an object area."""
    from conftest import records_bytes
    from tfdrop.codec.model import Annotation, Box, Item

    obj = Annotation("cat", Box(0.1, 0.1, 0.5, 0.5), label_id=1, area=12.0)
    item = Item("a.png", width=10, height=8, image=_png(10, 8), image_format="png",
                source_id="cam7/000123", objects=(obj,),
                extra=(("image/custom", b"\x0a\x03\x0a\x01v"),))  # fmt: skip
    src = tmp_path / "rich.tfrecord"
    src.write_bytes(records_bytes([item]))
    return src


@pytest.mark.parametrize(
    ("target", "lost"),
    [
        ("coco", {"feature:image/custom": 1, "source_id": 1}),
        ("voc", {"feature:image/custom": 1, "source_id": 1, "area": 1}),
        ("yolo", {"feature:image/custom": 1, "source_id": 1, "area": 1}),
        ("cvat", {"feature:image/custom": 1, "source_id": 1, "area": 1}),
    ],
)
def test_unknown_features_source_ids_and_areas_a_target_drops_are_counted(
    tmp_path: Path, target: FormatName, lost: dict[str, int]
) -> None:
    # the coco, voc and yolo writers dropped item.extra without a word; cvat and yolo the area
    report = convert(
        _rich_tfrecord(tmp_path), tmp_path / "o.zip", ConvertOptions(target_format=target)
    )
    assert {
        k: v for k, v in report.lossy.items() if k in lost or k in ("area", "source_id")
    } == lost
    assert all(not k.startswith("feature:") or k in lost for k in report.lossy)


def test_a_tfrecord_target_keeps_them_all(tmp_path: Path) -> None:
    report = convert(_rich_tfrecord(tmp_path), tmp_path / "o.zip", ConvertOptions())
    assert report.lossy == {}

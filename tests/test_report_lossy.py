"""What a TFRecord has no room for is counted in the report, never dropped silently."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from tfdrop.convert import ConvertOptions, convert

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

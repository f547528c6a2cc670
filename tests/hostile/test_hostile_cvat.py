"""Hostile CVAT for images/video inputs through the real CLI: huge declared images with
masks, huge attribute values, ids that are not numbers, encodings, shapes outside the image."""

from __future__ import annotations

import base64
import io
import os
import zipfile
from pathlib import Path

from PIL import Image

from hostile.harness import accepted, refused

HEAD = '<?xml version="1.0" encoding="{enc}"?>\n<annotations><version>1.1</version>\n'


def _jpeg(width: int = 20, height: int = 10) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _src(tmp_path: Path, name: str, body: str, *, enc: str = "utf-8", image: bool = True) -> Path:
    xml = (HEAD.format(enc=enc) + body + "\n</annotations>\n").encode(enc)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations.xml", xml)
        if image:
            zf.writestr("images/a.jpg", _jpeg())
    src = tmp_path / name
    src.write_bytes(buf.getvalue())
    return src


def _image(shapes: str, *, width: int = 20, height: int = 10, id_: str = "0") -> str:
    return f'<image id="{id_}" name="a.jpg" width="{width}" height="{height}">{shapes}</image>'


BOX = '<box label="cat" xtl="1" ytl="1" xbr="5" ybr="5"/>'


def test_a_100000_square_image_with_masks_is_refused_at_max_mask_pixels(tmp_path: Path) -> None:
    # regression: the rasteriser allocated width x height (MemoryError at 100000^2)
    src = _src(tmp_path, "huge.zip", _image(BOX, width=100_000, height=100_000), image=False)
    refused(tmp_path, src, ("--to", "tfrecord", "--masks"), expect=("max_mask_pixels",))


def test_a_huge_polygon_image_with_masks_is_refused_too(tmp_path: Path) -> None:
    poly = '<polygon label="cat" points="1,1;90,1;90,90"/>'
    src = _src(tmp_path, "poly.zip", _image(poly, width=30_000, height=30_000), image=False)
    refused(tmp_path, src, ("--to", "tfrecord", "--masks"), expect=("max_mask_pixels",))


def test_a_megabyte_attribute_value_is_refused_at_max_text_bytes(tmp_path: Path) -> None:
    # regression: 100 MB took 180 s and was published; random text keeps the zip ratio honest
    value = base64.b64encode(os.urandom(750_000)).decode()
    box = BOX.replace("/>", f'><attribute name="n">{value}</attribute></box>')
    refused(tmp_path, _src(tmp_path, "attr.zip", _image(box)), expect=("max_text_bytes",))


def test_a_megabyte_label_attribute_is_refused(tmp_path: Path) -> None:
    label = base64.b64encode(os.urandom(750_000)).decode()
    box = f'<box label="{label}" xtl="1" ytl="1" xbr="5" ybr="5"/>'
    refused(tmp_path, _src(tmp_path, "label.zip", _image(box)), expect=("max_text_bytes",))


def test_ids_that_are_not_numbers_are_refused_naming_them(tmp_path: Path) -> None:
    refused(
        tmp_path,
        _src(tmp_path, "sup.zip", _image(BOX, id_="\u00b2")),
        expect=("<image> id '\u00b2'", "annotations.xml"),
    )
    track = (
        "<meta><task><original_size><width>20</width><height>10</height></original_size></task>"
        '</meta><track id="0" label="cat"><box frame="123456789012345678901" xtl="1" ytl="1" '
        'xbr="5" ybr="5" outside="0"/></track>'
    )
    refused(tmp_path, _src(tmp_path, "frame.zip", track, image=False), expect=("<box> frame",))


def test_shift_jis_annotations_stream_and_keep_their_labels(tmp_path: Path) -> None:
    box = '<box label="\u732b" xtl="1" ytl="1" xbr="5" ybr="5"/>'
    src = _src(tmp_path, "sjis.zip", _image(box), enc="Shift_JIS")
    accepted(tmp_path, src)
    with zipfile.ZipFile(tmp_path / "out" / "out.zip") as zf:
        assert "\u732b" in zf.read("label_map.pbtxt").decode("utf-8")


def test_a_polygon_30_px_past_the_right_edge_converts_clipped(tmp_path: Path) -> None:
    poly = '<polygon label="cat" points="2,2;50,2;50,8"/>'
    accepted(tmp_path, _src(tmp_path, "edge.zip", _image(poly)), ("--to", "tfrecord", "--masks"))


def test_deep_nesting_and_absurd_numbers_are_refused(tmp_path: Path) -> None:
    deep = _image("<a>" * 5000 + "</a>" * 5000)
    refused(tmp_path, _src(tmp_path, "deep.zip", deep), expect=("max_depth",))
    big = '<box label="cat" xtl="1" ytl="1" xbr="5" ybr="5" z_order="' + "9" * 5000 + '"/>'
    refused(tmp_path, _src(tmp_path, "num.zip", _image(big)), expect=("max_number_length",))
    rle = '<mask label="cat" rle="0, ' + "9" * 30 + '" left="0" top="0" width="2" height="2"/>'
    refused(tmp_path, _src(tmp_path, "rle.zip", _image(rle)), expect=("a.jpg",))
    nan = '<box label="cat" xtl="nan" ytl="1" xbr="inf" ybr="5"/>'
    refused(tmp_path, _src(tmp_path, "nan.zip", _image(nan)), expect=("not a finite number",))

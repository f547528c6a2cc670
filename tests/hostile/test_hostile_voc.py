"""Hostile Pascal VOC inputs through the real CLI: list-file bombs, declared encodings,
label maps, shapes outside the image."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from hostile.harness import accepted, refused


def _jpeg(width: int = 20, height: int = 10) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


def _zip(members: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _voc(label: str = "cat", box: tuple[str, str, str, str] = ("1", "1", "5", "5")) -> str:
    xmin, ymin, xmax, ymax = box
    return (
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height></size>"
        f"<object><name>{label}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object></annotation>"
    )


def _labels(out: Path) -> str:
    with zipfile.ZipFile(out / "out.zip") as zf:
        return zf.read("label_map.pbtxt").decode("utf-8")


def test_a_hundred_list_files_of_one_id_are_refused_at_max_list_lines(tmp_path: Path) -> None:
    # regression: 100 x 1 MiB lists of "ab" (each under the ratio floor): 5 GB and 61 s before
    members: dict[str, bytes | str] = {"Annotations/ab.xml": _voc(), "JPEGImages/ab.jpg": _jpeg()}
    for n in range(100):
        members[f"ImageSets/Main/s{n:04d}.txt"] = "ab\n" * 349525
    src = tmp_path / "lists.zip"
    src.write_bytes(_zip(members))
    refused(tmp_path, src, expect=("max_list_lines is 2000000", "ImageSets/Main/s0005.txt"))


def test_gbk_and_shift_jis_annotations_keep_their_labels(tmp_path: Path) -> None:
    for encoding in ("GBK", "Shift_JIS"):
        xml = f'<?xml version="1.0" encoding="{encoding}"?>\n' + _voc("\u732b")
        src = tmp_path / f"{encoding}.zip"
        src.write_bytes(
            _zip({"Annotations/a.xml": xml.encode(encoding), "JPEGImages/a.jpg": _jpeg()})
        )
        accepted(tmp_path, src)
        assert "name: '\u732b'" in _labels(tmp_path / "out") or "\u732b" in _labels(
            tmp_path / "out"
        )
        (tmp_path / "out" / "out.zip").unlink()


def test_an_encoding_python_does_not_know_is_refused_by_name(tmp_path: Path) -> None:
    xml = '<?xml version="1.0" encoding="x-martian"?>\n' + _voc()
    src = tmp_path / "enc.zip"
    src.write_bytes(_zip({"Annotations/a.xml": xml, "JPEGImages/a.jpg": _jpeg()}))
    refused(tmp_path, src, expect=("x-martian", "Annotations/a.xml"))


def test_a_box_past_the_edge_is_clipped_and_converts(tmp_path: Path) -> None:
    src = tmp_path / "edge.zip"
    src.write_bytes(
        _zip({"Annotations/a.xml": _voc(box=("10", "2", "60", "9")), "JPEGImages/a.jpg": _jpeg()})
    )
    run = accepted(tmp_path, src)
    assert "Traceback" not in run.stderr


def test_a_box_wholly_outside_is_refused_naming_the_item(tmp_path: Path) -> None:
    src = tmp_path / "out-of-image.zip"
    src.write_bytes(
        _zip({"Annotations/a.xml": _voc(box=("30", "2", "60", "9")), "JPEGImages/a.jpg": _jpeg()})
    )
    refused(tmp_path, src, expect=("lies outside the 20x10 image", "a.jpg"))


def test_a_label_labelmap_txt_cannot_carry_is_refused_when_writing_voc(tmp_path: Path) -> None:
    cvat = (
        '<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>'
        '<image id="0" name="a.jpg" width="20" height="10">'
        '<box label="a:b" xtl="1" ytl="1" xbr="5" ybr="5"/></image></annotations>'
    )
    src = tmp_path / "colon.zip"
    src.write_bytes(_zip({"annotations.xml": cvat, "images/a.jpg": _jpeg()}))
    refused(tmp_path, src, ("--to", "voc"), expect=("label 'a:b'", "labelmap.txt"))


def test_deep_nesting_and_a_huge_text_node_are_refused(tmp_path: Path) -> None:
    cases = {
        "deep.zip": "<annotation>" + "<a>" * 5000 + "</a>" * 5000 + "</annotation>",
        "text.zip": _voc().replace("<filename>a.jpg", "<filename>a.jpg" + " " * 100_000),
    }
    for name, xml in cases.items():
        src = tmp_path / name
        src.write_bytes(_zip({"Annotations/a.xml": xml, "JPEGImages/a.jpg": _jpeg()}))
        need = "max_depth" if name == "deep.zip" else "max_text_bytes"
        refused(tmp_path, src, expect=(need,))


def test_a_60_mb_annotation_of_empty_elements_is_refused_before_a_tree_is_built(
    tmp_path: Path,
) -> None:
    # found by the outside attack: 397 KB zipped, under max_file_bytes and max_ratio, it
    # parsed into a 1.45 GB tree and died (a traceback from the worker pool)
    import random

    rng = random.Random(1)  # a random tag now and then keeps the ratio under max_ratio
    head = (
        "<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax>"
        "<ymax>5</ymax></bndbox>"
    )
    objs = (
        head + ("<x/>" * 100 + f"<y{rng.getrandbits(32):08x}/>") * 20 + "</object>"
        for _ in range(7000)
    )
    xml = (
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height>"
        "</size>" + "".join(objs) + "</annotation>"
    )
    src = tmp_path / "bigxml.zip"
    src.write_bytes(_zip({"Annotations/a.xml": xml, "JPEGImages/a.jpg": _jpeg()}))
    run = refused(tmp_path, src, expect=("max_xml_elements", "Annotations/a.xml"))
    assert run.peak_rss < 400 << 20

"""Pascal VOC reader/writer: Datumaro's VOC assets value by value, round trips through
TFRecord (read by real TensorFlow), pinned label maps, and hostile or malformed inputs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from conftest import require_corpus
from tfdrop.archive import ZipSink, open_source
from tfdrop.codec.model import Annotation, Box, Item, LabelMap, LabelMapItem
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import (
    DetectError,
    FormatError,
    LimitExceededError,
    SchemaError,
    UnknownLabelError,
)
from tfdrop.formats import FORMATS, Notes, ReadOptions, WriteOptions, detect_format
from tfdrop.formats.common.pixels import f32
from tfdrop.formats.common.xmlsafe import SafeXmlParser, parse_bytes
from tfdrop.formats.voc.layout import format_labelmap, parse_labelmap, voc_color
from tfdrop.formats.voc.reader import VocReader
from tfdrop.limits import Limits
from tfhelpers import tf_records

VOC20 = [
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
]  # fmt: skip


def assets() -> Path:
    return require_corpus("openvinotoolkit__datumaro", "tests", "assets", "voc_dataset")


def jpeg(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def zip_tree(
    folder: Path, out: Path, *, prefix: str = "", extra: dict[str, bytes] | None = None
) -> Path:
    """Zip a folder (deflated, as CVAT exports), optionally under a prefix, plus extra members."""
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, prefix + path.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(prefix + name, data)
    return out


def make_zip(out: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def read_items(path: Path, *, images: bool = True) -> tuple[list[Item], VocReader, Notes]:
    notes = Notes()
    with open_source(path) as src:
        reader = VocReader(src, ReadOptions(images=images), notes)
        return list(reader.items()), reader, notes


def voc_xml(
    name: str,
    objects: list[dict[str, str]],
    *,
    size: tuple[str, str] | None = ("100", "50"),
) -> str:
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if size else ""
    objs = "".join(
        "<object>"
        + f"<name>{o.get('name', 'cat')}</name>"
        + "".join(f"<{k}>{o[k]}</{k}>" for k in ("pose", "truncated", "difficult") if k in o)
        + "<bndbox>"
        + "".join(f"<{k}>{o.get(k, d)}</{k}>" for k, d in zip(
            ("xmin", "ymin", "xmax", "ymax"), ("1", "2", "30", "40"), strict=True))
        + "</bndbox></object>"
        for o in objects
    )  # fmt: skip
    return f"<annotation><filename>{name}</filename>{size_xml}{objs}</annotation>"


def oracle(xml_path: Path, size: tuple[int, int] | None = None) -> list[dict[str, object]]:
    """Expected objects read by hand with ElementTree (an independent parse of the file)."""
    root = ET.parse(xml_path).getroot()
    if size is None:
        w, h = int(root.findtext("size/width") or 0), int(root.findtext("size/height") or 0)
    else:
        w, h = size
    out: list[dict[str, object]] = []
    for obj in root.findall("object"):
        b = obj.find("bndbox")
        assert b is not None
        out.append(
            {
                "label": obj.findtext("name"),
                "box": tuple(
                    f32(float(b.findtext(k) or "nan") / d)
                    for k, d in (("xmin", w), ("ymin", h), ("xmax", w), ("ymax", h))
                ),
                "difficult": (obj.findtext("difficult") or "0") == "1",
                "truncated": (obj.findtext("truncated") or "0") == "1",
                "occluded": (obj.findtext("occluded") or "0") == "1",
                "view": obj.findtext("pose") or "",
            }
        )
    return out


def got(item: Item) -> list[dict[str, object]]:
    return [
        {
            "label": o.label,
            "box": tuple(f32(v) for v in (o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax)),
            "difficult": o.difficult,
            "truncated": o.truncated,
            "occluded": o.occluded,
            "view": o.view,
        }
        for o in item.objects
    ]


# --- Datumaro's assets, value by value ---------------------------------------------------------


def test_voc_dataset1_objects_sizes_subsets_and_actions_match_the_xml(tmp_path: Path) -> None:
    src = assets() / "voc_dataset1"
    items, _, notes = read_items(zip_tree(src, tmp_path / "v1.zip"))
    by_name = {i.name: i for i in items}
    assert sorted(by_name) == ["2007_000001.jpg", "2007_000002.jpg"]
    one = by_name["2007_000001.jpg"]
    assert (one.subset, one.width, one.height, one.image_format) == ("train", 20, 10, "jpeg")
    assert one.image == (src / "JPEGImages" / "2007_000001.jpg").read_bytes()
    # Expected values written out by hand from Annotations/2007_000001.xml ...
    cat, person = one.objects
    assert (cat.label, cat.view, cat.truncated, cat.difficult, cat.occluded) == (
        "cat", "Unspecified", True, False, False)  # fmt: skip
    assert cat.box == Box(1 / 20, 2 / 10, 3 / 20, 4 / 10)
    assert (person.label, person.view, person.truncated, person.difficult) == (
        "person", "", False, False)  # fmt: skip
    assert person.box == Box(4 / 20, 5 / 10, 6 / 20, 7 / 10)
    assert dict(person.attributes)["phoning"] == "1"
    assert dict(person.attributes)["jumping"] == "0"
    assert len(person.attributes) == 11
    # ... and checked against an independent ElementTree parse of the same file.
    assert got(one) == oracle(src / "Annotations" / "2007_000001.xml")
    # The head part of the person is not convertible: said, not dropped silently.
    assert notes.skipped["part"] == 1
    # 2007_000002 is listed in test.txt with an image but no annotation: no objects.
    two = by_name["2007_000002.jpg"]
    assert (two.subset, two.objects) == ("test", ())
    with Image.open(src / "JPEGImages" / "2007_000002.jpg") as im:
        assert (two.width, two.height) == im.size


def test_voc_dataset2_without_sizes_or_images_names_the_missing_image(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as err:
        read_items(zip_tree(assets() / "voc_dataset2", tmp_path / "v2.zip"))
    assert err.value.item == "@.jpg"
    assert err.value.member == "Annotations/@.xml"
    assert "JPEGImages/@.jpg" in err.value.message


def test_voc_dataset2_with_images_takes_sizes_from_headers_and_labels_from_labelmap(
    tmp_path: Path,
) -> None:
    src = assets() / "voc_dataset2"
    extra = {f"JPEGImages/{n}.jpg": jpeg(16, 12) for n in "@abcd"}
    items, reader, _ = read_items(zip_tree(src, tmp_path / "v2.zip", extra=extra))
    # labelmap.txt order, without VOC's class 0 "background"
    assert list(reader.labels()) == [*VOC20, "ignored"]
    assert [i.name for i in items] == ["@.jpg", "a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    # per-class lists (cow_trainval.txt, ...) are not subsets; trainval.txt is
    assert {i.subset for i in items} == {"trainval"}
    for item in items:
        assert (item.width, item.height) == (16, 12)
        assert got(item) == oracle(src / "Annotations" / f"{item.stem}.xml", (16, 12))
    a = items[1].objects[0]
    assert (a.label, a.occluded, a.box) == ("background", True, Box(1 / 16, 2 / 12, 4 / 16, 6 / 12))
    assert items[0].objects == ()


def test_voc_dataset3_skips_comment_lines_in_subset_lists(tmp_path: Path) -> None:
    src = assets() / "voc_dataset3"
    items, _, notes = read_items(zip_tree(src, tmp_path / "v3.zip", prefix="VOCdevkit/VOC2007/"))
    assert [(i.name, i.subset) for i in items] == [("2007_000001.jpg", "train")]
    assert got(items[0]) == oracle(src / "Annotations" / "2007_000001.xml")
    assert not notes.warnings


# --- round trip through TFRecord, read by TensorFlow ------------------------------------------


def rich_voc(tmp: Path) -> Path:
    """A CVAT-style VOC zip: decimals, flags, attributes, a PNG, a prefix-less layout."""
    a = voc_xml("a.jpg", [
        {"name": "cat", "pose": "Left", "truncated": "1", "difficult": "0",
         "xmin": "10.5", "ymin": "3.25", "xmax": "99.75", "ymax": "49"},
        {"name": "dog", "difficult": "1", "xmin": "0", "ymin": "0", "xmax": "100", "ymax": "50"},
    ])  # fmt: skip
    b = voc_xml("b.png", [{"name": "person", "xmin": "1.1", "ymin": "2.2", "xmax": "3.3"}],
                size=("64", "48"))  # fmt: skip
    b = b.replace("</bndbox>", "</bndbox><attributes><attribute><name>color</name>"
                  "<value>red &amp; blue</value></attribute></attributes>")  # fmt: skip
    return make_zip(tmp / "rich.zip", {
        "Annotations/a.xml": a, "Annotations/b.xml": b,
        "Annotations/c.xml": voc_xml("c.jpg", [], size=("20", "20")),
        "JPEGImages/a.jpg": jpeg(100, 50), "JPEGImages/b.png": png(64, 48),
        "JPEGImages/c.jpg": jpeg(20, 20),
        "ImageSets/Main/train.txt": "a\nb\n", "ImageSets/Main/val.txt": "c\n",
        "labelmap.txt": "# label:color_rgb:parts:actions\nbackground:0,0,0::\nperson:1,2,3::\n"
                        "dog:4,5,6::\ncat:7,8,9::\n",
    })  # fmt: skip


def test_voc_to_tfrecord_to_voc_keeps_boxes_labels_and_flags(
    tf: ModuleType, tmp_path: Path
) -> None:
    src = rich_voc(tmp_path)
    rec = tmp_path / "rec.zip"
    report = convert(src, rec, ConvertOptions(target_format="tfrecord"))
    assert report.source_format == "voc"
    assert [(it.id, it.name) for it in report.label_map.items] == [
        (1, "person"),
        (2, "dog"),
        (3, "cat"),
    ]
    parsed = {r["image/filename"].decode(): r for r in tf_records(tf, rec, tmp_path)}
    assert sorted(parsed) == ["a.jpg", "b.png", "c.jpg"]
    a = parsed["a.jpg"]
    assert a["subset"] == "train"
    assert a["image/object/class/label"] == [3, 2]
    assert a["image/object/class/text"] == [b"cat", b"dog"]
    assert a["image/object/bbox/xmin"] == [f32(10.5 / 100), 0.0]
    assert a["image/object/bbox/ymin"] == [f32(3.25 / 50), 0.0]
    assert a["image/object/bbox/xmax"] == [f32(99.75 / 100), 1.0]
    assert (a["image/width"], a["image/height"], a["image/format"]) == (100, 50, b"jpeg")
    assert parsed["b.png"]["image/format"] == b"png"
    assert parsed["c.jpg"]["subset"] == "val"
    with zipfile.ZipFile(src) as zf:
        assert parsed["b.png"]["image/encoded"] == zf.read("JPEGImages/b.png")

    back = tmp_path / "back.zip"
    convert(rec, back, ConvertOptions(target_format="voc"))
    before, _, _ = read_items(src)
    after, reader, _ = read_items(back)
    assert list(reader.labels()) == ["person", "dog", "cat"]
    assert [(i.name, i.subset, i.width, i.height, i.image) for i in after] == [
        (i.name, i.subset, i.width, i.height, i.image) for i in before
    ]
    for x, y in zip(before, after, strict=True):
        assert [(o.label, o.difficult, o.truncated) for o in x.objects] == [
            (o.label, o.difficult, o.truncated) for o in y.objects
        ]
        assert [
            tuple(map(f32, (o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax))) for o in x.objects
        ] == [tuple(map(f32, (o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax))) for o in y.objects]
    with zipfile.ZipFile(back) as zf:
        xml = zf.read("Annotations/a.xml").decode()
        assert "<xmin>10.5</xmin>" in xml
        assert "<ymax>49</ymax>" in xml
        assert "<pose>Left</pose>" in xml
        head = zf.read("labelmap.txt").decode().splitlines()[:3]
        assert head == ["# label:color_rgb:parts:actions", "background:0,0,0::", "person:128,0,0::"]
        assert zf.read("ImageSets/Main/train.txt") == b"a\nb\n"


def test_voc_to_voc_keeps_cvat_attributes_and_escapes_them(tmp_path: Path) -> None:
    out = tmp_path / "out.zip"
    report = convert(rich_voc(tmp_path), out, ConvertOptions(target_format="voc"))
    assert report.items == 3
    items, _, _ = read_items(out)
    assert items[1].objects[0].attributes == (("color", "red & blue"),)


def test_corpus_voc_dataset1_through_tfrecord_parses_in_tensorflow(
    tf: ModuleType, tmp_path: Path
) -> None:
    src = zip_tree(assets() / "voc_dataset1", tmp_path / "v1.zip")
    rec = tmp_path / "rec.zip"
    convert(
        src, rec, ConvertOptions(target_format="tfrecord", label_map=LabelMap.from_names(VOC20))
    )
    parsed = {r["image/filename"].decode(): r for r in tf_records(tf, rec, tmp_path)}
    one = parsed["2007_000001.jpg"]
    assert one["image/object/class/label"] == [8, 15]  # cat, person in VOC's 20-class map
    assert one["image/object/bbox/xmin"] == [f32(1 / 20), f32(4 / 20)]
    assert one["image/object/bbox/ymax"] == [f32(4 / 10), f32(7 / 10)]
    assert one["image/source_id"] == b"2007_000001.jpg"
    assert parsed["2007_000002.jpg"]["image/object/class/label"] == []


def test_pinned_label_map_rejects_a_label_it_lacks_naming_label_and_item(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "x.zip", {
        "Annotations/p.xml": voc_xml("p.jpg", [{"name": "cat"}, {"name": "unicorn"}]),
        "JPEGImages/p.jpg": jpeg(100, 50),
    })  # fmt: skip
    with pytest.raises(UnknownLabelError) as err:
        convert(src, tmp_path / "o.zip", ConvertOptions(label_map=LabelMap.from_names(VOC20)))
    assert "unicorn" in err.value.message
    assert err.value.item == "p.jpg"
    assert not (tmp_path / "o.zip").exists()


# --- layout: roots, subsets, lookups ----------------------------------------------------------


def test_vocdevkit_prefix_case_insensitive_images_and_default_subset(tmp_path: Path) -> None:
    root = "VOCdevkit/VOC2007/"
    src = make_zip(tmp_path / "x.zip", {
        root + "Annotations/000005.xml": voc_xml("000005.jpg", [{"name": "car"}]),
        root + "Annotations/000007.xml": voc_xml("", [{"name": "car"}], size=None),
        root + "JPEGImages/000005.JPG": jpeg(100, 50),
        root + "JPEGImages/000007.jpeg": jpeg(60, 45),
        root + "ImageSets/Main/train.txt": "000005\n",
        root + "ImageSets/Main/car_train.txt": "000005  1\n000007 -1\n",
    })  # fmt: skip
    with open_source(src) as s:
        assert detect_format(s.names()) == "voc"
    items, _, _ = read_items(src)
    assert [(i.name, i.subset) for i in items] == [
        ("000005.jpg", "train"),
        ("000007.jpeg", "default"),
    ]
    assert (items[1].width, items[1].height) == (60, 45)  # from the header: no <size>
    assert items[1].objects[0].box == Box(1 / 60, 2 / 45, 30 / 60, 40 / 45)


def test_trainval_is_the_union_and_more_specific_subsets_win(tmp_path: Path) -> None:
    members: dict[str, bytes | str] = {
        f"Annotations/{n}.xml": voc_xml(f"{n}.jpg", []) for n in ("a", "b", "c")
    }
    members |= {f"JPEGImages/{n}.jpg": jpeg(8, 8) for n in ("a", "b", "c")}
    members |= {
        "ImageSets/Main/train.txt": "a\n",
        "ImageSets/Main/val.txt": "b\n",
        "ImageSets/Main/trainval.txt": "a\nb\nc\n",
    }
    items, _, notes = read_items(make_zip(tmp_path / "x.zip", members))
    assert [i.subset for i in items] == ["train", "val", "trainval"]
    assert not notes.warnings


def test_detection_prefers_voc_and_ignores_cvat_annotations_xml() -> None:
    assert FORMATS["voc"].detect(["Annotations/a.xml", "JPEGImages/a.jpg"]) == 80
    assert FORMATS["voc"].detect(["annotations.xml", "images/a.jpg"]) == 0
    assert detect_format(["Annotations/a.xml", "JPEGImages/a.jpg"]) == "voc"


@pytest.mark.parametrize(
    ("names", "formats"),
    [
        (["Annotations/a.xml", "JPEGImages/a.jpg", "obj.names", "obj.data",
          "obj_train_data/a.txt", "obj_train_data/a.jpg"], "voc, yolo"),
        (["annotations.xml", "images/a.jpg", "annotations/instances_default.json"], "coco, cvat"),
        (["annotations.xml", "images/a.jpg", "extra/Annotations/a.xml"], "cvat, voc"),
    ],
)  # fmt: skip
def test_a_source_holding_two_annotation_formats_is_refused_naming_both(
    names: list[str], formats: str
) -> None:
    # one was read, and the other dropped without a word
    with pytest.raises(DetectError, match=f"2 formats \\({formats}\\)") as info:
        detect_format(names, archive="w.zip")
    assert info.value.archive == "w.zip"
    assert info.value.hint is not None
    assert "--from" in info.value.hint


def test_labelmap_parsing_and_voc_palette() -> None:
    text = b"# label:color_rgb:parts:actions\nbackground:0,0,0::\nbus:1,1,1::\ncar:2,2,2:wheel:\n"
    assert parse_labelmap(text, "labelmap.txt") == ["bus", "car"]
    assert [voc_color(i) for i in (0, 1, 15, 20)] == [
        (0, 0, 0), (128, 0, 0), (192, 128, 128), (0, 64, 128)]  # fmt: skip


# --- writer details ---------------------------------------------------------------------------


def write_voc(tmp: Path, items: list[Item], *, images: bool = True) -> tuple[Path, Notes]:
    notes = Notes()
    out = tmp / "w.zip"
    with ZipSink(out) as sink:
        writer = FORMATS["voc"].open_writer(sink, WriteOptions(images=images), notes)  # type: ignore[misc]
        for item in items:
            writer.write(item)
        writer.close(LabelMap.from_names(["cat"]))
    return out, notes


def test_writer_counts_masks_as_lost_and_writes_no_image_without_bytes(tmp_path: Path) -> None:
    obj = Annotation("cat", Box(0.1, 0.2, 0.3, 0.4), label_id=1, mask=b"\x89PNG fake")
    out, notes = write_voc(tmp_path, [Item("x.jpg", width=10, height=10, objects=(obj,))])
    assert notes.lossy == {"mask": 1}
    with zipfile.ZipFile(out) as zf:
        assert "JPEGImages/x.jpg" not in zf.namelist()
        assert "Annotations/x.xml" in zf.namelist()
    items, _, _ = read_items(out, images=False)
    assert items[0].objects[0].box == Box(1 / 10, 2 / 10, 3 / 10, 4 / 10)


def test_labelmap_txt_names_labels_as_the_objects_do_when_records_use_display_names(
    tmp_path: Path,
) -> None:
    # name 'n01440764', display_name 'tench', records say 'tench': labelmap.txt said n01440764
    lm = LabelMap((LabelMapItem(1, "n01440764", "tench"), LabelMapItem(2, "n02", "goldfish")))
    obj = Annotation("tench", Box(0.1, 0.2, 0.3, 0.4), label_id=1)
    out = tmp_path / "w.zip"
    with ZipSink(out) as sink:
        writer = FORMATS["voc"].open_writer(sink, WriteOptions(images=False), Notes())  # type: ignore[misc]
        writer.write(Item("x.jpg", width=10, height=10, objects=(obj,)))
        writer.close(lm)
    with zipfile.ZipFile(out) as zf:
        labels = [ln.split(":")[0] for ln in zf.read("labelmap.txt").decode().splitlines()[1:]]
        assert "<name>tench</name>" in zf.read("Annotations/x.xml").decode()
    assert labels[-2:] == ["tench", "n02"]  # goldfish is on no object: the map's name stays


def test_writer_refuses_two_items_with_the_same_stem(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="same VOC id"):
        write_voc(tmp_path, [Item("x.jpg", width=4, height=4), Item("x.png", width=4, height=4)])


# --- hostile and malformed inputs -------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotation><filename>&lol3;</filename></annotation>"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotation><filename>&xxe;</filename></annotation>"""


@pytest.mark.parametrize(
    ("xml", "message", "line"),
    [
        (BILLION_LAUGHS, "DOCTYPE", 2),
        (XXE, "DOCTYPE", 2),
        ("<annotation><filename>h.jpg</filename>\n<object><name>cat", "malformed XML", 2),
        ("<annotation>&undefined;</annotation>", "undefined entity", 1),
    ],
    ids=["billion-laughs", "external-entity", "truncated", "undefined-entity"],
)
def test_hostile_xml_is_a_format_error_naming_member_and_line(
    tmp_path: Path, xml: str, message: str, line: int
) -> None:
    src = make_zip(tmp_path / "x.zip", {"Annotations/h.xml": xml, "JPEGImages/h.jpg": jpeg(9, 9)})
    with pytest.raises(FormatError, match=message) as err:
        read_items(src)
    assert (err.value.member, err.value.line) == ("Annotations/h.xml", line)


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"xmin": "abc"}, "xmin is 'abc', not a number"),
        ({"ymax": "nan"}, "ymax is 'nan', not a number"),
        ({"xmax": ""}, "xmax is '', not a number"),
        ({"xmin": "101", "xmax": "130"}, "lies outside the 100x50 image"),
        ({"ymin": "-50", "ymax": "-5"}, "lies outside the 100x50 image"),
        ({"xmin": "40", "xmax": "30"}, "min above max"),
        ({"difficult": "maybe"}, "difficult is 'maybe', not 0 or 1"),
    ],
    ids=["word", "nan", "empty", "right-of", "above", "inverted", "flag"],
)
def test_bad_boxes_and_numbers_name_item_and_object(
    tmp_path: Path, obj: dict[str, str], message: str
) -> None:
    xml = voc_xml("b.jpg", [{"name": "cat"}, {"name": "cat", **obj}])
    src = make_zip(tmp_path / "x.zip", {"Annotations/b.xml": xml, "JPEGImages/b.jpg": jpeg(9, 9)})
    with pytest.raises(FormatError, match=message) as err:
        read_items(src)
    assert (err.value.item, err.value.obj, err.value.member) == ("b.jpg", 1, "Annotations/b.xml")


BOX = "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>30</xmax><ymax>40</ymax></bndbox>"


@pytest.mark.parametrize(
    ("inner", "key"),
    [
        ("<name>cat</name>" + BOX + BOX.replace(">1<", ">5<"), "bndbox"),
        ("<name>cat</name><name>dog</name>" + BOX, "name"),
        ("<name>cat</name><difficult>0</difficult><difficult>1</difficult>" + BOX, "difficult"),
        (
            "<name>cat</name>" + BOX.replace("<xmin>1</xmin>", "<xmin>1</xmin><xmin>9</xmin>"),
            "xmin",
        ),
    ],
)
def test_a_second_single_value_element_of_an_object_is_refused(
    tmp_path: Path, inner: str, key: str
) -> None:
    # the first was taken and the second ignored without a word
    size = "<size><width>100</width><height>50</height></size>"
    xml = f"<annotation><filename>d.jpg</filename>{size}<object>{inner}</object></annotation>"
    src = make_zip(tmp_path / "x.zip", {"Annotations/d.xml": xml})
    with pytest.raises(FormatError, match=f"two <{key}>") as err:
        read_items(src, images=False)
    assert (err.value.item, err.value.obj, err.value.key) == ("d.jpg", 0, key)


@pytest.mark.parametrize(
    "dup", ["<size><width>7</width><height>7</height></size>", "<filename>e.jpg</filename>"]
)
def test_a_second_size_or_filename_of_an_annotation_is_refused(tmp_path: Path, dup: str) -> None:
    xml = voc_xml("d.jpg", [{}]).replace("</annotation>", dup + "</annotation>")
    src = make_zip(tmp_path / "x.zip", {"Annotations/d.xml": xml})
    with pytest.raises(FormatError, match="the annotation has two") as err:
        read_items(src, images=False)
    assert err.value.member == "Annotations/d.xml"


def test_box_within_one_pixel_outside_is_clamped_with_a_warning(tmp_path: Path) -> None:
    xml = voc_xml("b.jpg", [{"xmin": "-0.5", "xmax": "101", "ymax": "50"}])
    src = make_zip(tmp_path / "x.zip", {"Annotations/b.xml": xml, "JPEGImages/b.jpg": jpeg(9, 9)})
    items, _, notes = read_items(src)
    assert items[0].objects[0].box == Box(0.0, 2 / 50, 1.0, 1.0)
    assert notes.warning_counts["box_clamped"] == 1


def test_a_missing_image_with_a_size_is_kept_without_bytes_and_warned(tmp_path: Path) -> None:
    # CVAT's "Pascal VOC 1.1" with save-images off failed "image not found"
    src = make_zip(tmp_path / "x.zip", {"Annotations/m.xml": voc_xml("m.jpg", [{}])})
    items, _, notes = read_items(src)
    assert (items[0].image, items[0].width, len(items[0].objects)) == (None, 100, 1)
    (warning,) = notes.warnings
    assert warning["code"] == "missing_image"
    assert (warning["item"], warning["member"]) == ("m.jpg", "Annotations/m.xml")
    assert "JPEGImages/m.jpg" in warning["message"]
    items, _, notes = read_items(src, images=False)  # asked for no images: nothing to warn
    assert (items[0].image, items[0].width, notes.warnings) == (None, 100, [])


@pytest.mark.parametrize("masks", [False, True])
def test_segmentation_masks_that_are_not_read_are_counted_as_lost(
    tmp_path: Path, masks: bool
) -> None:
    # with --masks, SegmentationObject/<id>.png was ignored without a word
    src = make_zip(tmp_path / "x.zip", {
        "Annotations/m.xml": voc_xml("m.jpg", [{}, {"name": "dog"}]),
        "SegmentationObject/m.png": png(100, 50),
        "SegmentationClass/m.png": png(100, 50),
        "Annotations/n.xml": voc_xml("n.jpg", [{}]),
    })  # fmt: skip
    notes = Notes()
    with open_source(src) as s:
        items = list(VocReader(s, ReadOptions(images=False, masks=masks), notes).items())
    assert len(items) == 2
    assert notes.lossy == {"segmentation_object": 2, "segmentation_class": 1}


def test_a_missing_image_without_a_size_names_item_and_expected_member(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "x.zip", {"Annotations/m.xml": voc_xml("m.jpg", [{}], size=None)})
    with pytest.raises(FormatError, match=r"expected member JPEGImages/m\.jpg") as err:
        read_items(src, images=False)
    assert err.value.item == "m.jpg"


def test_bad_size_is_a_format_error(tmp_path: Path) -> None:
    xml = voc_xml("s.jpg", [{}], size=("12.5", "10"))
    src = make_zip(tmp_path / "x.zip", {"Annotations/s.xml": xml, "JPEGImages/s.jpg": jpeg(9, 9)})
    with pytest.raises(FormatError, match=r"width is '12\.5'") as err:
        read_items(src)
    assert err.value.item == "s.jpg"


def test_safe_parser_gives_the_same_events_fed_whole_or_byte_by_byte() -> None:
    data = voc_xml("e.jpg", [{"name": "a"}, {"name": "b"}]).encode()
    whole = SafeXmlParser()
    whole.feed(data)
    whole.close()
    single = SafeXmlParser()
    for i in range(len(data)):
        single.feed(data[i : i + 1])
    single.close()
    shape = [(e.kind, e.element.tag) for e in whole.events()]
    assert shape == [(e.kind, e.element.tag) for e in single.events()]
    assert ET.tostring(parse_bytes(data)) == ET.tostring(ET.fromstring(data))
    dead = SafeXmlParser(member="m")
    with pytest.raises(FormatError):
        dead.feed(b"<!DOCTYPE x []><x/>")
    with pytest.raises(FormatError, match="DOCTYPE"):
        dead.feed(b"<y/>")  # a parser that failed stays failed


# --- CLI --------------------------------------------------------------------------------------


def test_cli_converts_a_voc_zip_and_reports(tmp_path: Path) -> None:
    src = rich_voc(tmp_path)
    out = tmp_path / "cli.zip"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    done = subprocess.run(
        [sys.executable, "-m", "tfdrop", "convert", str(src), "--to", "tfrecord", "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "voc -> tfrecord: 3 items, 3 objects" in done.stdout + done.stderr
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["label_map.pbtxt", "train.tfrecord", "val.tfrecord"]
    bad = make_zip(tmp_path / "bad.zip", {"Annotations/h.xml": XXE})
    done = subprocess.run(
        [sys.executable, "-m", "tfdrop", "convert", str(bad), "--to", "tfrecord"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Annotations/h.xml" in done.stderr + done.stdout
    assert "DOCTYPE" in done.stderr + done.stdout


@pytest.mark.parametrize(
    "encoding", ["iso-8859-1", "utf-16"], ids=["latin-1-declared", "utf-16-with-bom"]
)
def test_annotations_in_other_encodings_take_the_safe_path_and_read_right(
    tmp_path: Path, encoding: str
) -> None:
    xml = voc_xml("e.jpg", [{"name": "caf\u00e9"}]).replace(
        "<annotation>", f'<?xml version="1.0" encoding="{encoding}"?>\n<annotation>', 1
    )
    src = make_zip(
        tmp_path / "x.zip",
        {"Annotations/e.xml": xml.encode(encoding), "JPEGImages/e.jpg": jpeg(9, 9)},
    )
    items, _, _ = read_items(src)
    assert items[0].objects[0].label == "caf\u00e9"


def test_utf16_billion_laughs_is_refused_too(tmp_path: Path) -> None:
    data = BILLION_LAUGHS.replace('version="1.0"', 'version="1.0" encoding="utf-16"').encode(
        "utf-16"
    )
    src = make_zip(tmp_path / "x.zip", {"Annotations/h.xml": data, "JPEGImages/h.jpg": jpeg(9, 9)})
    with pytest.raises(FormatError, match="DOCTYPE"):
        read_items(src)


def test_prefetch_keeps_order_raises_at_the_failing_job_and_stops_when_closed() -> None:
    import threading

    from tfdrop.formats.common.prefetch import prefetched

    assert list(prefetched(list(range(50)), lambda i: i * i, depth=2)) == [i * i for i in range(50)]

    def fail_at_3(i: int) -> int:
        if i == 3:
            raise FormatError("bad job", item=str(i))
        return i

    got_values: list[int] = []
    with pytest.raises(FormatError, match="bad job"):
        got_values.extend(prefetched(list(range(10)), fail_at_3))
    assert got_values == [0, 1, 2]
    gen = prefetched(list(range(10_000)), lambda i: i, depth=1)
    assert next(gen) == 0
    gen.close()
    assert not any(t.name == "tfdrop-prefetch" for t in threading.enumerate())


def test_datumaro_tf_records_through_voc_come_back_equal_record_for_record(
    tmp_path: Path,
) -> None:
    from tfdrop.formats.tfrecord import TfrecordReader

    src = require_corpus("openvinotoolkit__datumaro", "tests", "assets", "tf_detection_api_dataset")
    voc, back = tmp_path / "voc.zip", tmp_path / "back.zip"
    convert(src, voc, ConvertOptions(target_format="voc"))
    report = convert(voc, back, ConvertOptions(target_format="tfrecord"))
    assert report.source_format == "voc"

    def records(path: Path) -> list[tuple[object, ...]]:
        with open_source(path) as s:
            reader = TfrecordReader(s, ReadOptions(), Notes())
            return sorted(
                (
                    i.name, i.subset, i.width, i.height, i.image, i.image_format,
                    tuple(
                        (o.label, o.label_id, o.difficult, o.truncated, o.occluded, o.view,
                         tuple(map(f32, (o.box.xmin, o.box.ymin, o.box.xmax, o.box.ymax))))
                        for o in i.objects
                    ),
                )
                for i in reader.items()
            )  # fmt: skip

    before, after = records(src), records(back)
    assert len(before) == 3
    assert after == before


# --- the budget, encodings, clipping, label maps ---------------------------------------


def read_limited(path: Path, limits: Limits, *, masks: bool = False) -> tuple[list[Item], Notes]:
    notes = Notes()
    with open_source(path) as src:
        reader = VocReader(src, ReadOptions(limits=limits, masks=masks), notes)
        return list(reader.items()), notes


def test_xml_nested_past_max_depth_is_limit_exceeded_naming_member_and_line(
    tmp_path: Path,
) -> None:
    src = make_zip(tmp_path / "x.zip", {"Annotations/h.xml": "<a>" * 100, "JPEGImages/h.jpg": b""})
    with pytest.raises(LimitExceededError, match="max_depth is 64") as err:
        read_items(src)
    assert (err.value.member, err.value.line, err.value.limit) == (
        "Annotations/h.xml",
        1,
        "max_depth",
    )


def test_box_sticking_out_of_the_image_is_clipped_with_a_box_clipped_warning(
    tmp_path: Path,
) -> None:
    xml = voc_xml("b.jpg", [{"xmin": "50", "xmax": "130", "ymin": "-20", "ymax": "40"}])
    src = make_zip(tmp_path / "x.zip", {"Annotations/b.xml": xml, "JPEGImages/b.jpg": jpeg(9, 9)})
    items, _, notes = read_items(src)
    assert items[0].objects[0].box == Box(0.5, 0.0, 1.0, 40 / 50)
    assert notes.warning_counts["box_clipped"] == 1
    assert "clipped to its edges" in notes.warnings[0]["message"]


def list_bomb(out: Path, *, lists: int, lines: int) -> Path:
    members: dict[str, bytes | str] = {
        "Annotations/ab.xml": voc_xml("ab.jpg", [{}]),
        "JPEGImages/ab.jpg": jpeg(9, 9),
    }
    for n in range(lists):
        members[f"ImageSets/Main/s{n:04d}.txt"] = "ab\n" * lines
    return make_zip(out, members)


def test_many_list_files_naming_one_item_cost_one_subset_entry_and_counted_warnings(
    tmp_path: Path,
) -> None:
    # regression: 100 lists x 349525 lines of one id took 5 GB and stored 34.6 M conflicts
    items, notes = read_limited(list_bomb(tmp_path / "x.zip", lists=20, lines=3000), Limits())
    assert [(i.name, i.subset) for i in items] == [("ab.jpg", "s0000")]
    assert notes.warning_counts["item_in_two_subsets"] == 19 * 3000
    assert len(notes.warnings) <= 200


def test_list_lines_over_max_list_lines_across_files_is_limit_exceeded(tmp_path: Path) -> None:
    src = list_bomb(tmp_path / "x.zip", lists=10, lines=1000)  # each file is under the cap
    with pytest.raises(LimitExceededError, match="max_list_lines is 5000") as err:
        read_limited(src, Limits(max_list_lines=5000))
    assert err.value.limit == "max_list_lines"
    assert str(err.value.member).startswith("ImageSets/Main/s")


def test_ids_listed_without_files_are_counted_not_kept(tmp_path: Path) -> None:
    members: dict[str, bytes | str] = {
        "Annotations/a.xml": voc_xml("a.jpg", [{}]),
        "JPEGImages/a.jpg": jpeg(9, 9),
        "ImageSets/Main/train.txt": "a\n" + "".join(f"ghost{i}\n" for i in range(5000)),
    }
    items, notes = read_limited(make_zip(tmp_path / "x.zip", members), Limits())
    assert [(i.name, i.subset) for i in items] == [("a.jpg", "train")]
    assert notes.warning_counts["listed_without_files"] == 5000


def test_a_labelmap_of_60k_labels_reads_in_order_and_max_labels_is_enforced(tmp_path: Path) -> None:
    names = [f"l{i}" for i in range(60_000)]
    text = "".join(f"{n}:0,0,0::\n" for n in names).encode()
    assert parse_labelmap(text, "labelmap.txt") == names
    with pytest.raises(LimitExceededError, match="max_labels is 1000") as err:
        parse_labelmap(text, "labelmap.txt", max_labels=1000)
    assert (err.value.member, err.value.line) == ("labelmap.txt", 1001)


def test_20k_distinct_labels_in_one_file_read_and_max_labels_is_enforced(tmp_path: Path) -> None:
    xml = voc_xml("b.jpg", [{"name": f"c{i}"} for i in range(20_000)])
    src = make_zip(tmp_path / "x.zip", {"Annotations/b.xml": xml, "JPEGImages/b.jpg": jpeg(9, 9)})
    items, _ = read_limited(src, Limits())
    assert len({o.label for o in items[0].objects}) == 20_000
    with pytest.raises(LimitExceededError, match="max_labels is 100") as err:
        read_limited(src, Limits(max_labels=100))
    assert err.value.item == "b.jpg"


def test_objects_over_max_objects_per_item_are_limit_exceeded(tmp_path: Path) -> None:
    xml = voc_xml("b.jpg", [{}] * 11)
    src = make_zip(tmp_path / "x.zip", {"Annotations/b.xml": xml, "JPEGImages/b.jpg": jpeg(9, 9)})
    with pytest.raises(LimitExceededError, match="max_objects_per_item is 10") as err:
        read_limited(src, Limits(max_objects_per_item=10))
    assert (err.value.member, err.value.item) == ("Annotations/b.xml", "b.jpg")


def test_a_label_over_max_text_bytes_is_limit_exceeded_on_either_parse_path(
    tmp_path: Path,
) -> None:
    for pad in (0, 70_000):  # a small file (fast path) and one over the cap (measured)
        xml = voc_xml("b.jpg", [{"name": "x" * 2000}]).replace(
            "</annotation>", "<!--" + "p" * pad + "--></annotation>"
        )
        src = make_zip(
            tmp_path / f"x{pad}.zip", {"Annotations/b.xml": xml, "JPEGImages/b.jpg": jpeg(9, 9)}
        )
        with pytest.raises(LimitExceededError, match="max_text_bytes is 1000") as err:
            read_limited(src, Limits(max_text_bytes=1000))
        assert err.value.member == "Annotations/b.xml"


def test_a_coordinate_over_max_number_length_is_limit_exceeded(tmp_path: Path) -> None:
    xml = voc_xml("b.jpg", [{"xmin": "0" * 70 + "1"}])
    src = make_zip(tmp_path / "x.zip", {"Annotations/b.xml": xml, "JPEGImages/b.jpg": jpeg(9, 9)})
    with pytest.raises(LimitExceededError, match="max_number_length is 64") as err:
        read_items(src)
    assert (err.value.item, err.value.obj, err.value.key) == ("b.jpg", 0, "xmin")


def test_xml_and_images_over_the_file_caps_are_limit_exceeded(tmp_path: Path) -> None:
    src = make_zip(
        tmp_path / "x.zip",
        {"Annotations/b.xml": voc_xml("b.jpg", [{}]), "JPEGImages/b.jpg": jpeg(9, 9)},
    )
    with pytest.raises(LimitExceededError, match="max_file_bytes is 100"):
        read_limited(src, Limits(max_file_bytes=100))
    with pytest.raises(LimitExceededError, match="max_image_bytes is 100") as err:
        read_limited(src, Limits(max_image_bytes=100))
    assert err.value.member == "JPEGImages/b.jpg"


@pytest.mark.parametrize("encoding", ["gbk", "shift_jis", "euc-jp", "gb18030", "cp1252"])
def test_a_declared_encoding_python_knows_is_honoured_never_reinterpreted(
    tmp_path: Path, encoding: str
) -> None:
    label = "caf\u00e9" if encoding == "cp1252" else "\u732b"  # 猫
    xml = f'<?xml version="1.0" encoding="{encoding.upper()}"?>\n' + voc_xml(
        "b.jpg", [{"name": label}]
    )
    src = make_zip(
        tmp_path / "x.zip",
        {"Annotations/b.xml": xml.encode(encoding), "JPEGImages/b.jpg": jpeg(9, 9)},
    )
    items, _, _ = read_items(src)
    assert items[0].objects[0].label == label


def test_an_unknown_or_violated_encoding_is_refused_naming_it(tmp_path: Path) -> None:
    bad = {
        "klingon": b'<?xml version="1.0" encoding="klingon"?><annotation/>',
        "GBK": b'<?xml version="1.0" encoding="GBK"?><annotation>\x80</annotation>',
    }
    for name, data in bad.items():
        src = make_zip(tmp_path / f"{name}.zip", {"Annotations/b.xml": data})
        with pytest.raises(FormatError, match=repr(name) if name == "klingon" else name) as err:
            read_items(src)
        assert err.value.member == "Annotations/b.xml"


@pytest.mark.parametrize(
    ("label", "why"),
    [
        ("a:b", "':'"),
        ("two\nlines", "line break"),
        ("#tag", "comment"),
        (" cat", "white space"),
    ],
    ids=["colon", "newline", "hash", "space"],
)
def test_writer_refuses_a_label_labelmap_txt_cannot_carry_naming_it(
    tmp_path: Path, label: str, why: str
) -> None:
    item = Item(
        name="a.jpg", width=10, height=10, objects=(Annotation(label=label, box=Box(0, 0, 1, 1)),)
    )
    with ZipSink(tmp_path / "out.zip") as sink:
        writer = FORMATS["voc"].open_writer(sink, WriteOptions(), Notes())  # type: ignore[misc]
        with pytest.raises(FormatError, match=why) as err:
            writer.write(item)  # refused before anything of the item is written
    assert repr(label) in str(err.value)
    assert (err.value.item, err.value.obj) == ("a.jpg", 0)
    with pytest.raises(FormatError, match=why):
        format_labelmap([label])  # a label map entry no object uses is refused too


def test_attack_an_image_side_past_int32_is_a_format_error_not_an_encoder_error(
    tmp_path: Path,
) -> None:
    xml = voc_xml("a.jpg", [{}], size=("100000000000000000000", "50"))
    src = make_zip(tmp_path / "x.zip", {"Annotations/a.xml": xml, "JPEGImages/a.jpg": jpeg(9, 9)})
    with pytest.raises(FormatError, match="not a whole number of pixels") as err:
        read_items(src)
    assert (err.value.item, err.value.key) == ("a.jpg", "width")


def test_attack_masks_on_a_huge_declared_image_are_refused_naming_the_item(tmp_path: Path) -> None:
    xml = voc_xml("a.jpg", [{}], size=("100000", "100000"))
    src = make_zip(tmp_path / "x.zip", {"Annotations/a.xml": xml, "JPEGImages/a.jpg": jpeg(9, 9)})
    with pytest.raises(LimitExceededError, match="max_mask_pixels") as err:
        read_limited(src, Limits(), masks=True)
    assert (err.value.member, err.value.item) == ("Annotations/a.xml", "a.jpg")
    assert len(read_limited(src, Limits())[0][0].objects) == 1  # without masks: fine


def test_attack_an_object_with_too_many_children_is_limit_exceeded(tmp_path: Path) -> None:
    xml = voc_xml("a.jpg", [{}]).replace("<object>", "<object>" + "<x>1</x>" * 50)
    src = make_zip(tmp_path / "x.zip", {"Annotations/a.xml": xml, "JPEGImages/a.jpg": jpeg(9, 9)})
    with pytest.raises(LimitExceededError, match="max_values_per_feature is 20") as err:
        read_limited(src, Limits(max_values_per_feature=20))
    assert (err.value.item, err.value.obj) == ("a.jpg", 0)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_image_neither_jpeg_nor_png_fails_the_conversion_naming_it(
    tmp_path: Path, jobs: str
) -> None:
    # found by an outside attack: convert published an archive its own validate refused
    members: dict[str, bytes | str] = {}
    for i in range(40):
        members[f"Annotations/a{i:02}.xml"] = voc_xml(f"a{i:02}.jpg", [{"name": "cat"}])
        members[f"JPEGImages/a{i:02}.jpg"] = jpeg(100, 50)
    members["JPEGImages/a17.jpg"] = os.urandom(3000)
    src = make_zip(tmp_path / "in.zip", members)
    out = tmp_path / "out.zip"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    done = subprocess.run(
        [sys.executable, "-m", "tfdrop", "convert", str(src), "--to", "tfrecord", "-o", str(out),
         "--jobs", jobs],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    said = done.stderr + done.stdout
    assert done.returncode == 1, said
    assert "a17" in said, said
    assert "neither a JPEG nor a PNG" in said, said
    assert "Traceback" not in said
    assert not out.exists()


def _coco_zip(path: Path, file_name: str, attributes: dict[str, str]) -> Path:
    import json

    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5], "area": 25,
           "iscrowd": 0, "segmentation": [], "attributes": attributes}  # fmt: skip
    doc = {
        "categories": [{"id": 1, "name": "cat"}],
        "images": [{"id": 1, "file_name": file_name, "width": 64, "height": 48}],
        "annotations": [ann],
    }
    return make_zip(path, {f"images/default/{file_name}": jpeg(64, 48),
                           "annotations/instances_default.json": json.dumps(doc)})  # fmt: skip


@pytest.mark.parametrize(
    "attributes", [{"k": "a\x02b"}, {"k\x02": "v"}, {"k": "a\uffffb"}], ids=["value", "key", "ffff"]
)
def test_attribute_text_xml_cannot_carry_is_written_as_replacement_and_warned(
    tmp_path: Path, attributes: dict[str, str]
) -> None:
    # found by an outside attack: written raw, only the read-back caught it ("a bug in tfdrop")
    src = _coco_zip(tmp_path / "in.zip", "a.jpg", attributes)
    out = tmp_path / "out.zip"
    report = convert(src, out, ConvertOptions(target_format="voc"))
    assert report.warning_counts.get("xml_characters") == 1
    with zipfile.ZipFile(out) as zf:
        xml = zf.read("Annotations/a.xml").decode()
    ET.fromstring(xml)  # well-formed
    assert "\ufffd" in xml


def test_a_file_name_xml_cannot_carry_is_refused_naming_the_item(tmp_path: Path) -> None:
    src = _coco_zip(tmp_path / "in.zip", "c\x01.jpg", {})
    out = tmp_path / "out.zip"
    with pytest.raises(FormatError, match=r"XML 1\.0 cannot carry") as err:
        convert(src, out, ConvertOptions(target_format="voc"))
    assert err.value.item == "c\x01.jpg"
    assert not out.exists()


def test_an_image_cut_before_its_end_marker_fails_the_conversion_naming_it(
    tmp_path: Path,
) -> None:
    # found by an outside attack: published, validate passed, and TF's decoder refused it
    whole = jpeg(100, 50)
    src = make_zip(tmp_path / "in.zip", {
        "Annotations/a.xml": voc_xml("a.jpg", [{"name": "cat"}]), "JPEGImages/a.jpg": whole,
        "Annotations/b.xml": voc_xml("b.jpg", [{"name": "cat"}]),
        "JPEGImages/b.jpg": whole[: len(whole) * 2 // 3],
    })  # fmt: skip
    out = tmp_path / "out.zip"
    with pytest.raises(SchemaError, match="cut short") as err:
        convert(src, out, ConvertOptions())
    assert err.value.item == "b.jpg"
    assert not out.exists()

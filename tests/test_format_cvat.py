"""CVAT for images/video 1.1: Datumaro's CVAT assets value by value, round trips through
TFRecord (parsed by real TensorFlow), a TF-written record set through CVAT and back, the
written archive's layout, and hostile or malformed inputs each with its own error."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import require_corpus
from tfdrop.archive import ZipSink, open_source
from tfdrop.codec.model import Annotation, Box, Item, LabelMap, Shape
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError, LimitExceededError, MemberNotFoundError, UnknownLabelError
from tfdrop.formats import FORMATS, Notes, ReadOptions, WriteOptions, detect_format
from tfdrop.formats.common.pixels import f32
from tfdrop.formats.cvat import rle
from tfdrop.formats.cvat.reader import CvatReader
from tfdrop.formats.cvat.video import frame_images
from tfdrop.limits import Limits
from tfhelpers import tf_records


def assets(*parts: str) -> Path:
    return require_corpus("openvinotoolkit__datumaro", "tests", "assets", "cvat_dataset", *parts)


def jpeg(width: int, height: int, color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_zip(out: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def read_items(
    path: Path, *, images: bool = True, masks: bool = False
) -> tuple[list[Item], CvatReader, Notes]:
    notes = Notes()
    with open_source(path) as src:
        reader = CvatReader(src, ReadOptions(images=images, masks=masks), notes)
        return list(reader.items()), reader, notes


def cvat_xml(images: str, labels: tuple[str, ...] = ("cat", "dog")) -> str:
    meta = "".join(f"<label><name>{n}</name><attributes/></label>" for n in labels)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n<version>1.1</version>\n'
        f"<meta><task><mode>annotation</mode><labels>{meta}</labels></task></meta>\n"
        f"{images}\n</annotations>\n"
    )


def px(box: Box, w: int, h: int) -> tuple[float, ...]:
    return tuple(round(v, 6) for v in box.to_pixels(w, h))


# --- Datumaro's assets, value by value --------------------------------------------------------

A_ATTRS = (("a1", "true"), ("a2", "v3"), ("a3", "0003"), ("a4", "2.4"))


def test_project_export_subsets_boxes_polygons_attributes_match_the_xml() -> None:
    root = assets("for_images", "export_project")
    items, reader, notes = read_items(root)
    assert list(reader.labels()) == ["label1", "label2"]
    attrs = {s.name: [(a.name, a.input_type, a.default) for a in s.attributes]
             for s in reader.label_specs()}  # fmt: skip
    assert attrs["label1"] == [
        ("a1", "checkbox", "false"), ("a2", "radio", "v1"), ("a3", "text", "0000"),
        ("a4", "number", "0")]  # fmt: skip
    assert attrs["label2"] == []
    assert [(i.subset, i.name, i.width, i.height, i.frame) for i in items] == [
        ("Test", "img0.jpg", 8, 8, 0), ("Test", "img1.jpg", 10, 10, 1),
        ("Train", "img0.jpg", 8, 8, 0), ("Train", "img1.jpg", 10, 10, 1),
        ("Validation", "img0.jpg", 8, 8, 0), ("Validation", "img1.jpg", 10, 10, 1),
    ]  # fmt: skip
    for item in items:
        assert item.image == (root / "images" / item.subset / item.name).read_bytes()
        assert item.image_format == "jpeg"
        obj = item.objects[0]
        if item.name == "img1.jpg":  # <points label="label2" points="1,2;3,4;5,6">: keypoints
            (kp,) = item.objects[1:]
            assert (kp.label, kp.shape, kp.box) == ("label2", Shape.POINTS, Box(0.1, 0.2, 0.5, 0.6))
            assert [(p.x, p.y, p.visibility) for p in kp.keypoints] == [
                (0.1, 0.2, 2), (0.3, 0.4, 2), (0.5, 0.6, 2)]  # fmt: skip
        else:
            assert len(item.objects) == 1
        assert obj.label == "label1"
        assert obj.z_order == 1
        if item.name == "img0.jpg":  # <box occluded="1" xtl="0" ytl="2" xbr="4" ybr="4">
            assert obj.box == Box(0 / 8, 2 / 8, 4 / 8, 4 / 8)
            assert (obj.shape, obj.occluded, obj.attributes) == (Shape.BOX, True, A_ATTRS)
        else:  # <polygon points="1,2;3,4;6,5">: its bounding box, points kept
            assert obj.box == Box(1 / 10, 2 / 10, 6 / 10, 5 / 10)
            assert (obj.shape, obj.occluded, obj.attributes) == (Shape.POLYGON, False, ())
            assert obj.polygon == (1.0, 2.0, 3.0, 4.0, 6.0, 5.0)
            assert obj.mask is None  # masks are off
    # polylines have no box meaning: skipped, and said so
    assert dict(notes.skipped) == {"polyline": 3}
    assert all(w["item"] in ("img0.jpg", "img1.jpg") for w in notes.warnings)


def test_task_export_takes_the_subset_from_the_file_name_and_skips_unlabeled_shapes() -> None:
    items, reader, notes = read_items(assets("for_images", "export_task"))
    assert list(reader.labels()) == ["label1", "label2"]
    assert [(i.subset, i.name, len(i.objects)) for i in items] == [
        ("train", "img0.jpg", 1),
        ("train", "img1.jpg", 1),  # its polygon has label="" (skipped); its points are kept
    ]
    obj = items[0].objects[0]
    assert (obj.label, obj.box, obj.occluded, obj.attributes) == (
        "label1", Box(0, 0.25, 0.5, 0.5), True, A_ATTRS)  # fmt: skip
    assert dict(notes.skipped) == {"polyline": 1, "unlabeled": 1}


def test_video_tracks_become_per_frame_boxes_and_outside_frames_are_skipped() -> None:
    items, reader, notes = read_items(assets("for_video"))
    assert list(reader.labels()) == ["klhg", "z U k", "II"]
    # frames 10, 13, 16 as images/frame_0000NN.png, sized by meta original_size (25x20)
    assert [(i.name, i.frame, i.width, i.height, i.subset) for i in items] == [
        ("frame_000010.png", 10, 25, 20, "default"),
        ("frame_000013.png", 13, 25, 20, "default"),
        ("frame_000016.png", 16, 25, 20, "default"),
    ]
    assert items[0].image == (assets("for_video") / "images" / "frame_000010.png").read_bytes()
    # track 0 (II): a box at frame 10, outside at 13 and 16
    box, kp = items[0].objects
    assert (box.label, box.track_id, box.occluded) == ("II", 0, True)
    assert (kp.label, kp.track_id, len(kp.keypoints)) == ("klhg", 1, 3)
    assert box.box == Box(3 / 25, 4 / 20, 10 / 25, 5 / 20)
    assert [i.objects for i in items[1:]] == [(), ()]
    # track 1 is points (frame 10, outside at 13), track 2 a polyline (frame 13, outside at 16)
    assert dict(notes.skipped) == {"polyline": 1}


def test_video_skeleton_track_outside_its_frames_is_skipped_and_its_parts_are_not_labels() -> None:
    root = require_corpus("cvat-ai__datumaro", "tests", "assets", "cvat_dataset", "for_video")
    items, reader, notes = read_items(root)
    assert list(reader.labels()) == ["klhg", "z U k", "II", "skeleton"]
    assert reader.skeletons()["skeleton"].names == ("1", "2", "3", "4")
    assert [(i.name, len(i.objects)) for i in items] == [
        ("frame_000010.png", 2), ("frame_000013.png", 0), ("frame_000016.png", 0)]  # fmt: skip
    # the asset's skeleton points (x 48..89, y 106..159) all lie outside its 25x20 frames
    assert notes.skipped["keypoints_outside_image"] == 3  # one per frame of the track
    # this copy of the asset lacks frame 16's image: the frame stays, without bytes, said so
    assert items[2].image is None
    assert notes.warning_counts["missing_frame_image"] == 1


# --- conversions through TFRecord, read by TensorFlow -----------------------------------------


def test_project_export_to_tfrecord_parses_in_tensorflow_with_every_value(
    tf: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "p.zip"
    report = convert(assets("for_images", "export_project"), out, ConvertOptions())
    assert (report.items, report.objects, report.skipped) == (6, 9, {"polyline": 3})
    assert report.subsets == {"Test": 2, "Train": 2, "Validation": 2}
    records = tf_records(tf, out, tmp_path)
    assert sorted(r["subset"] for r in records) == ["Test"] * 2 + ["Train"] * 2 + ["Validation"] * 2
    for r in records:
        n = 2 if r["image/filename"] == b"img1.jpg" else 1  # img1 has its points too
        assert r["image/object/class/text"] == [b"label1", b"label2"][:n]
        assert r["image/object/class/label"] == [1, 2][:n]
        assert r["image/source_id"] == r["image/filename"]
        assert r["image/format"] == b"jpeg"
        if r["image/filename"] == b"img0.jpg":
            assert (r["image/width"], r["image/height"]) == (8, 8)
            assert [r[f"image/object/bbox/{k}"] for k in ("xmin", "ymin", "xmax", "ymax")] == [
                [0.0], [0.25], [0.5], [0.5]]  # fmt: skip
        else:
            assert [r[f"image/object/bbox/{k}"] for k in ("xmin", "ymin", "xmax", "ymax")] == [
                [f32(0.1)] * 2, [f32(0.2)] * 2, [f32(0.6), f32(0.5)],
                [f32(0.5), f32(0.6)]]  # fmt: skip
    with zipfile.ZipFile(out) as zf:
        pbtxt = zf.read("label_map.pbtxt").decode()
    assert ("name: 'label1'" in pbtxt, "name: 'label2'" in pbtxt) == (True, True)


def test_video_to_tfrecord_parses_in_tensorflow(tf: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "v.zip"
    report = convert(assets("for_video"), out, ConvertOptions())
    assert (report.items, report.objects) == (3, 2)
    records = tf_records(tf, out, tmp_path)
    assert [r["image/filename"] for r in records] == [
        b"frame_000010.png", b"frame_000013.png", b"frame_000016.png"]  # fmt: skip
    first = records[0]
    assert first["image/object/class/text"] == [b"II", b"klhg"]
    assert first["image/object/class/label"] == [3, 1]  # the meta's label order: klhg, z U k, II
    assert first["image/object/bbox/xmin"][0] == f32(3 / 25)
    assert first["image/object/bbox/ymax"][0] == f32(5 / 20)
    assert first["image/format"] == b"png"


def rich_cvat(tmp: Path) -> Path:
    """Decimal boxes, a polygon, a mask, tags, attributes, flags, groups, two subsets."""
    images = """
  <image id="0" name="a.jpg" width="50" height="40" subset="train">
    <box label="cat" occluded="1" xtl="1.25" ytl="2.5" xbr="33.3333" ybr="39.99" z_order="2"
         group_id="4">
      <attribute name="color">red &amp; blue</attribute>
      <attribute name="difficult">true</attribute>
      <attribute name="pose">Frontal</attribute>
    </box>
    <polygon label="dog" occluded="0" points="10.5,10;20,10.25;15,30.125" z_order="0"/>
    <mask label="dog" rle="2, 3, 1, 3" left="4" top="5" width="4" height="3" z_order="1"/>
    <tag label="sunny"/>
  </image>
  <image id="1" name="sub/b.jpg" width="30" height="20" subset="val">
    <box label="dog" occluded="0" xtl="0" ytl="0" xbr="30" ybr="20">
      <attribute name="truncated">true</attribute>
    </box>
  </image>
  <image id="2" name="empty.jpg" width="30" height="20" subset="val"/>"""
    return make_zip(
        tmp / "rich.zip",
        {
            "annotations.xml": cvat_xml(images, ("cat", "dog", "sunny")),
            "images/train/a.jpg": jpeg(50, 40),
            "images/val/sub/b.jpg": jpeg(30, 20),
            "images/val/empty.jpg": jpeg(30, 20),
        },
    )


def key(item: Item) -> tuple[str, str]:
    return (item.subset, item.name)


def test_cvat_to_tfrecord_to_cvat_keeps_boxes_to_float32_and_labels_exactly(
    tf: ModuleType, tmp_path: Path
) -> None:
    src = rich_cvat(tmp_path)
    mid, back = tmp_path / "mid.zip", tmp_path / "back.zip"
    convert(src, mid, ConvertOptions(target_format="tfrecord"))
    assert len(tf_records(tf, mid, tmp_path)) == 3  # TensorFlow parses every record
    convert(mid, back, ConvertOptions(target_format="cvat"))
    before, _, _ = read_items(src)
    after, reader, _ = read_items(back)
    assert list(reader.labels()) == ["cat", "dog", "sunny"]
    assert sorted(map(key, before)) == sorted(map(key, after))
    by_key = {key(i): i for i in after}
    for item in before:
        got = by_key[key(item)]
        assert (got.width, got.height, got.image) == (item.width, item.height, item.image)
        assert [o.label for o in got.objects] == [o.label for o in item.objects]
        for a, b in zip(item.objects, got.objects, strict=True):
            for side in ("xmin", "ymin", "xmax", "ymax"):
                assert f32(getattr(a.box, side)) == f32(getattr(b.box, side)), (item.name, side)
            # flags travel through the record's keys
            assert (a.difficult, a.truncated, a.occluded, a.view) == (
                b.difficult, b.truncated, b.occluded, b.view)  # fmt: skip


def test_cvat_to_cvat_keeps_polygons_masks_tags_attributes_and_groups(tmp_path: Path) -> None:
    src = rich_cvat(tmp_path)
    out = tmp_path / "again.zip"
    options = ConvertOptions(source_format="cvat", target_format="cvat", masks=True)
    report = convert(src, out, options)
    assert (report.items, report.objects, report.lossy) == (3, 4, {})
    before, _, _ = read_items(src, masks=True)
    after, reader, _ = read_items(out, masks=True)
    assert [(key(i), i.tags) for i in before] == [(key(i), i.tags) for i in after]
    for a, b in zip(before, after, strict=True):
        assert a.objects == b.objects  # boxes, polygons, masks, attributes, flags, z, group
    attrs = {s.name: {x.name: x for x in s.attributes} for s in reader.label_specs()}
    assert attrs["cat"]["color"].values == ("red & blue",)
    assert attrs["cat"]["difficult"].input_type == "checkbox"
    assert "sunny" in reader.labels()  # a tag's label is declared too
    with zipfile.ZipFile(out) as zf:
        names = zf.namelist()
        xml = zf.read("annotations.xml").decode()
    assert names[-1] == "annotations.xml"
    assert {"images/train/a.jpg", "images/val/sub/b.jpg", "images/val/empty.jpg"} <= set(names)
    for text in (
        "<version>1.1</version>",
        "<subsets>train\nval</subsets>",
        '<polygon label="dog"',
        'rle="2, 3, 1, 3, 3"',  # CVAT's mask2Rle writes the last background run too
        '<tag label="sunny"',
        'group_id="4"',
    ):
        assert text in xml


def test_without_masks_a_mask_goes_to_cvat_as_its_box_and_is_counted_lossy(
    tmp_path: Path,
) -> None:
    out = tmp_path / "boxed.zip"
    report = convert(rich_cvat(tmp_path), out, ConvertOptions(target_format="cvat"))
    assert report.lossy == {"mask_as_box": 1}
    items, _, _ = read_items(out)
    assert [o.shape for o in items[0].objects] == [Shape.BOX, Shape.POLYGON, Shape.BOX]


def test_mask_reads_as_the_bounding_box_of_its_pixels(tmp_path: Path) -> None:
    items, _, _ = read_items(rich_cvat(tmp_path))
    mask = items[0].objects[2]
    # rle 2,3,1,3 over a 4x3 rectangle at (4,5): rows "0011", "1011", "1000"
    assert mask.shape == Shape.MASK
    assert mask.box == Box(4 / 50, 5 / 40, 8 / 50, 8 / 40)


# --- a TF-written OD record set -> cvat -> tfrecord -------------------------------------------


def tf_example(tf: ModuleType, name: str, w: int, h: int, objs: list[dict[str, Any]]) -> bytes:
    import hashlib

    image = jpeg(w, h, (20, 120, 220))
    f = tf.train.Feature

    def b(values: list[bytes]) -> Any:
        return f(bytes_list=tf.train.BytesList(value=values))

    def i(values: list[int]) -> Any:
        return f(int64_list=tf.train.Int64List(value=values))

    def fl(values: list[float]) -> Any:
        return f(float_list=tf.train.FloatList(value=values))

    feats = {  # the keys and order TF models' create_pascal_tf_record.py writes
        "image/height": i([h]),
        "image/width": i([w]),
        "image/filename": b([name.encode()]),
        "image/source_id": b([name.encode()]),
        "image/key/sha256": b([hashlib.sha256(image).hexdigest().encode()]),
        "image/encoded": b([image]),
        "image/format": b([b"jpeg"]),
        "image/object/bbox/xmin": fl([o["box"][0] for o in objs]),
        "image/object/bbox/xmax": fl([o["box"][2] for o in objs]),
        "image/object/bbox/ymin": fl([o["box"][1] for o in objs]),
        "image/object/bbox/ymax": fl([o["box"][3] for o in objs]),
        "image/object/class/text": b([o["label"].encode() for o in objs]),
        "image/object/class/label": i([o["id"] for o in objs]),
        "image/object/difficult": i([o.get("difficult", 0) for o in objs]),
        "image/object/truncated": i([o.get("truncated", 0) for o in objs]),
        "image/object/view": b([o.get("view", b"Unspecified") for o in objs]),
    }
    ex = tf.train.Example(features=tf.train.Features(feature=feats))
    return bytes(ex.SerializeToString())


def example_values(tf: ModuleType, raw: bytes) -> dict[str, list[Any]]:
    ex = tf.train.Example.FromString(raw)
    out: dict[str, list[Any]] = {}
    for k, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        out[k] = list(getattr(feat, kind).value) if kind else []
    return out


def test_tf_written_records_through_cvat_come_back_equal_record_for_record(
    tf: ModuleType, tmp_path: Path
) -> None:
    records = [
        tf_example(tf, "p1.jpg", 64, 48, [
            {"box": (0.1234567, 0.2, 0.987654, 0.75), "label": "person", "id": 1, "truncated": 1},
            {"box": (0.0, 0.0, 1.0, 1.0), "label": "car", "id": 2, "view": b"Frontal"},
        ]),
        tf_example(tf, "p2.jpg", 33, 17, [
            {"box": (1 / 3, 2 / 7, 0.5, 11 / 17), "label": "car", "id": 2, "difficult": 1},
        ]),
        tf_example(tf, "p3.jpg", 20, 20, []),
    ]  # fmt: skip
    rec_path = tmp_path / "train.tfrecord"
    with tf.io.TFRecordWriter(str(rec_path)) as w:
        for r in records:
            w.write(r)
    src = make_zip(
        tmp_path / "tf.zip",
        {
            "train.tfrecord": rec_path.read_bytes(),
            "label_map.pbtxt": "item { id: 1 name: 'person' }\nitem { id: 2 name: 'car' }\n",
        },
    )
    mid, back = tmp_path / "cvat.zip", tmp_path / "back.zip"
    convert(src, mid, ConvertOptions(target_format="cvat"))
    convert(mid, back, ConvertOptions(target_format="tfrecord"))
    with zipfile.ZipFile(back) as zf:
        assert sorted(zf.namelist()) == ["label_map.pbtxt", "train.tfrecord"]
        (tmp_path / "back.tfrecord").write_bytes(zf.read("train.tfrecord"))
    again = [bytes(r.numpy()) for r in tf.data.TFRecordDataset(str(tmp_path / "back.tfrecord"))]
    assert len(again) == len(records)
    assert len(tf_records(tf, back, tmp_path)) == 3  # the seed's description parses them
    for original, got in zip(records, again, strict=True):
        assert example_values(tf, got) == example_values(tf, original)


# --- detection, writer, label maps ------------------------------------------------------------


def test_detection_scores_annotations_xml_and_subset_xml_beside_images() -> None:
    assert FORMATS["cvat"].detect(["annotations.xml", "images/a.jpg"]) == 100
    assert FORMATS["cvat"].detect(["export/annotations.xml"]) == 100
    assert FORMATS["cvat"].detect(["train.xml", "images/a.jpg"]) == 60
    assert FORMATS["cvat"].detect(["Annotations/a.xml", "JPEGImages/a.jpg"]) == 0
    assert detect_format(["annotations.xml", "images/x.png"]) == "cvat"


def test_pinned_label_map_rejects_an_unknown_label_naming_label_and_item(tmp_path: Path) -> None:
    xml = cvat_xml('<image id="0" name="u.jpg" width="9" height="9">'
                   '<box label="unicorn" xtl="1" ytl="1" xbr="2" ybr="2"/></image>')  # fmt: skip
    src = make_zip(tmp_path / "u.zip", {"annotations.xml": xml, "images/u.jpg": jpeg(9, 9)})
    pinned = LabelMap.from_names(["cat", "dog"])
    with pytest.raises(UnknownLabelError, match="'unicorn'") as err:
        convert(src, tmp_path / "o.zip", ConvertOptions(label_map=pinned))
    assert err.value.item == "u.jpg"
    assert err.value.archive == str(src)
    assert not (tmp_path / "o.zip").exists()


def test_writer_without_images_writes_only_annotations_and_reads_back(tmp_path: Path) -> None:
    notes = Notes()
    out = tmp_path / "w.zip"
    poly = Annotation("cat", Box(0.1, 0.1, 0.5, 0.5), label_id=1, shape=Shape.POLYGON,
                      polygon=(1.0, 1.0, 5.0, 1.0, 3.0, 5.0), track_id=7)  # fmt: skip
    with ZipSink(out) as sink:
        writer = FORMATS["cvat"].open_writer(sink, WriteOptions(images=False), notes)  # type: ignore[misc]
        writer.write(Item("x.jpg", width=10, height=10, objects=(poly,), image=jpeg(10, 10)))
        writer.close(LabelMap.from_names(["cat"]))
    with zipfile.ZipFile(out) as zf:
        assert zf.namelist() == ["annotations.xml"]
    assert notes.lossy == {"track_id": 1}
    with ZipSink(tmp_path / "w2.zip") as sink:
        writer = FORMATS["cvat"].open_writer(sink, WriteOptions(), notes)  # type: ignore[misc]
        crowd = Annotation("cat", Box(0, 0, 1, 1), label_id=1, is_crowd=True)
        writer.write(Item("y.jpg", width=4, height=4, source_id="42", objects=(crowd,),
                          extra=(("image/custom", b""),)))  # fmt: skip
        writer.close(LabelMap.from_names(["cat"]))
    assert notes.lossy == {"track_id": 1, "feature:image/custom": 1, "source_id": 1, "is_crowd": 1}
    items, _, read_notes = read_items(out)  # annotations only: said once, no error
    assert items[0].objects[0].polygon == poly.polygon
    assert read_notes.warning_counts["no_images"] == 1


def test_writer_refuses_an_item_without_a_size(tmp_path: Path) -> None:
    with ZipSink(tmp_path / "w.zip") as sink:
        writer = FORMATS["cvat"].open_writer(sink, WriteOptions(), Notes())  # type: ignore[misc]
        with pytest.raises(FormatError, match="no image size") as err:
            writer.write(Item("nosize.jpg"))
    assert err.value.item == "nosize.jpg"


# --- hostile and malformed inputs -------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<annotations><image id="0" name="&lol3;" width="9" height="9"/></annotations>"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<annotations><image id="0" name="&xxe;" width="9" height="9"/></annotations>"""
GOOD_IMAGE = '<image id="0" name="h.jpg" width="9" height="9">'


@pytest.mark.parametrize(
    ("xml", "message", "line"),
    [
        (BILLION_LAUGHS, "DOCTYPE", 2),
        (XXE, "DOCTYPE", 2),
        (cvat_xml(GOOD_IMAGE + '\n<box label="cat" xtl="1"', ()), "malformed XML", 7),
        ("<annotations>&undefined;</annotations>", "undefined entity", 1),
    ],
    ids=["billion-laughs", "external-entity", "truncated", "undefined-entity"],
)
def test_hostile_xml_is_a_format_error_naming_member_and_line(
    tmp_path: Path, xml: str, message: str, line: int
) -> None:
    src = make_zip(tmp_path / "x.zip", {"annotations.xml": xml, "images/h.jpg": jpeg(9, 9)})
    with pytest.raises(FormatError, match=message) as err:
        read_items(src)
    assert (err.value.member, err.value.line) == ("annotations.xml", line)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ('<polygon label="cat" points="1,2;3"/>', "malformed points"),
        ('<polygon label="cat" points="1,2;3,x;5,5"/>', "malformed points"),
        ('<polygon label="cat" points="1,2;3,4"/>', "fewer than 3 points"),
        ('<box label="cat" xtl="1" ytl="1" xbr="nan" ybr="2"/>', "xbr='nan' is not a finite"),
        ('<box label="cat" xtl="1" ytl="1" ybr="2"/>', "no xbr attribute"),
        ('<box label="cat" xtl="10" ytl="1" xbr="30" ybr="2"/>', "lies outside the 9x9 image"),
        ('<box label="cat" xtl="5" ytl="1" xbr="2" ybr="2"/>', "inverted"),
        ('<mask label="cat" rle="1, x" left="0" top="0" width="2" height="2"/>', "integers"),
        ('<mask label="cat" rle="9" left="0" top="0" width="2" height="2"/>', "covers 9 pixels"),
        ('<mask label="cat" rle="1, 1" left="9" top="0" width="2" height="2"/>', "lies outside"),
    ],
    ids=[
        "odd",
        "word",
        "two-points",
        "nan",
        "missing",
        "outside",
        "inverted",
        "rle-word",
        "rle-long",
        "mask-out",
    ],
)
def test_malformed_shapes_name_member_item_object_and_line(
    tmp_path: Path, shape: str, message: str
) -> None:
    body = f'{GOOD_IMAGE}\n<box label="cat" xtl="1" ytl="1" xbr="2" ybr="2"/>\n{shape}\n</image>'
    src = make_zip(
        tmp_path / "x.zip", {"annotations.xml": cvat_xml(body), "images/h.jpg": jpeg(9, 9)}
    )
    with pytest.raises(FormatError, match=message) as err:
        read_items(src)
    e = err.value
    assert (e.member, e.item, e.obj, e.line) == ("annotations.xml", "h.jpg", 1, 7)


def test_missing_image_is_its_own_error_unless_images_are_off(tmp_path: Path) -> None:
    body = GOOD_IMAGE + "</image>" + '<image id="1" name="gone.jpg" width="9" height="9"/>'
    src = make_zip(
        tmp_path / "x.zip", {"annotations.xml": cvat_xml(body), "images/h.jpg": jpeg(9, 9)}
    )
    with pytest.raises(MemberNotFoundError, match=r"'gone\.jpg'") as err:
        read_items(src)
    assert (err.value.item, err.value.member) == ("gone.jpg", "annotations.xml")
    items, _, _ = read_items(src, images=False)  # sizes are in the annotation
    assert [i.name for i in items] == ["h.jpg", "gone.jpg"]


def test_a_file_mixing_images_and_tracks_is_refused(tmp_path: Path) -> None:
    body = (
        GOOD_IMAGE + '</image><track id="0" label="cat"><box frame="0" outside="0" '
        'keyframe="1" xtl="1" ytl="1" xbr="2" ybr="2"/></track>'
    )
    src = make_zip(
        tmp_path / "x.zip", {"annotations.xml": cvat_xml(body), "images/h.jpg": jpeg(9, 9)}
    )
    with pytest.raises(FormatError, match="mixes <image>"):
        read_items(src)


def test_no_annotation_file_is_a_clear_error(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "x.zip", {"other.xml": "<root/>", "images/h.jpg": jpeg(9, 9)})
    with pytest.raises(FormatError, match="no CVAT annotation file"):
        read_items(src)


def test_image_size_missing_from_the_xml_comes_from_the_image_header(tmp_path: Path) -> None:
    body = '<image id="0" name="h.jpg"><box label="cat" xtl="1" ytl="1" xbr="12" ybr="7"/></image>'
    src = make_zip(
        tmp_path / "x.zip", {"annotations.xml": cvat_xml(body), "images/h.jpg": jpeg(12, 7)}
    )
    items, _, _ = read_items(src, images=False)
    assert (items[0].width, items[0].height) == (12, 7)
    assert items[0].objects[0].box == Box(1 / 12, 1 / 7, 1.0, 1.0)


def test_rotated_box_becomes_its_enclosing_box_and_is_counted_as_lossy(tmp_path: Path) -> None:
    body = GOOD_IMAGE + '<box label="cat" xtl="2" ytl="3" xbr="6" ybr="5" rotation="90"/></image>'
    src = make_zip(
        tmp_path / "x.zip", {"annotations.xml": cvat_xml(body), "images/h.jpg": jpeg(9, 9)}
    )
    items, _, notes = read_items(src)
    assert px(items[0].objects[0].box, 9, 9) == (3.0, 2.0, 5.0, 6.0)
    assert notes.lossy == {"rotation": 1}


# --- streaming ----------------------------------------------------------------------------------


def big_cvat(tmp: Path, images: int, *, video: bool = False) -> Path:
    head = cvat_xml("", ("cat", "dog")).rsplit("</annotations>", 1)[0]
    if video:
        head = head.replace("<task>", "<task><original_size><width>640</width>"
                            "<height>480</height></original_size>")  # fmt: skip
    out = tmp / f"big-{images}-{video}.zip"
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("annotations.xml", "w") as f,
    ):
        f.write(head.encode())
        if video:  # 4 tracks over every frame: per-frame objects are only complete at the end
            for t in range(4):
                f.write(f'<track id="{t}" label="cat">'.encode())
                for i in range(images):
                    f.write(f'<box frame="{i}" outside="0" occluded="0" keyframe="1" xtl="{t}"'
                            f' ytl="1" xbr="{t + 9}.5" ybr="20"/>'.encode())  # fmt: skip
                f.write(b"</track>\n")
        else:
            for i in range(images):
                boxes = "".join(
                    f'<box label="dog" xtl="{j}" ytl="1.5" xbr="{j + 30}" ybr="40">'
                    '<attribute name="color">red</attribute></box>'
                    for j in range(5)
                )
                f.write(f'<image id="{i}" name="i{i:06d}.jpg" width="640" height="480">'
                        f"{boxes}</image>\n".encode())  # fmt: skip
        f.write(b"</annotations>\n")
    return out


@pytest.mark.parametrize("video", [False, True], ids=["images", "video-tracks"])
def test_reading_streams_memory_does_not_grow_with_the_number_of_images(
    tmp_path: Path, video: bool
) -> None:
    import tracemalloc

    def peak(n: int) -> int:
        path = big_cvat(tmp_path, n, video=video)
        tracemalloc.start()
        count = 0
        with open_source(path) as src:
            for item in CvatReader(src, ReadOptions(images=False), Notes()).items():
                count += len(item.objects)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == n * (4 if video else 5)
        return top

    small, large = peak(150), peak(1200)
    assert large < small * 1.5 + 256 * 1024, (small, large)


# --- layouts and the CLI ----------------------------------------------------------------------


def test_a_zip_with_one_top_folder_reads_like_the_folder(tmp_path: Path) -> None:
    root = assets("for_images", "export_project")
    members: dict[str, bytes | str] = {
        f"proj/{p.relative_to(root).as_posix()}": p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }
    zipped, _, _ = read_items(make_zip(tmp_path / "top.zip", members))
    plain, _, _ = read_items(root)
    assert zipped == plain
    assert detect_format(list(members)) == "cvat"


def test_datumaro_subset_files_each_give_their_subset_and_labels_merge(tmp_path: Path) -> None:
    box = '<box label="{}" xtl="1" ytl="1" xbr="3" ybr="3"/>'
    src = make_zip(
        tmp_path / "d.zip",
        {
            "train.xml": cvat_xml(GOOD_IMAGE + box.format("cat") + "</image>", ("cat",)),
            "test.xml": cvat_xml(GOOD_IMAGE + box.format("dog") + "</image>", ("dog",)),
            "images/h.jpg": jpeg(9, 9),
        },
    )
    items, reader, _ = read_items(src)
    assert list(reader.labels()) == ["dog", "cat"]  # files in name order: test.xml, train.xml
    assert [(i.subset, i.objects[0].label) for i in items] == [("test", "dog"), ("train", "cat")]


def test_cli_converts_a_cvat_video_export_and_writes_its_report(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "video.zip"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfdrop",
            "convert",
            str(assets("for_video")),
            "--to",
            "tfrecord",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "3 items, 2 objects" in done.stdout
    report = json.loads((tmp_path / "video.report.json").read_text())
    assert report["skipped"] == {"polyline": 1}
    assert [it["name"] for it in report["label_map"]] == ["klhg", "z U k", "II"]


def test_frames_named_without_extension_find_their_png_and_take_its_extension(
    tmp_path: Path,
) -> None:
    # a video task exported as "CVAT for images": name="frame_000003", images/frame_000003.PNG
    buf = io.BytesIO()
    Image.new("RGB", (9, 9)).save(buf, "PNG")
    body = '<image id="3" name="frame_000003" width="9" height="9"/>'
    src = make_zip(
        tmp_path / "f.zip",
        {"annotations.xml": cvat_xml(body), "images/frame_000003.PNG": buf.getvalue()},
    )
    (item,), _, _ = read_items(src)
    assert (item.name, item.image_format, item.image) == (
        "frame_000003.PNG", "png", buf.getvalue())  # fmt: skip


def test_names_without_extension_round_trip_unchanged(tmp_path: Path) -> None:
    # CVAT's TFRecord export wrote filenames like "img0": the name stays as it is
    notes = Notes()
    out = tmp_path / "w.zip"
    with ZipSink(out) as sink:
        writer = FORMATS["cvat"].open_writer(sink, WriteOptions(), notes)  # type: ignore[misc]
        writer.write(Item("img0", width=9, height=9, image=jpeg(9, 9)))
        writer.close(LabelMap())
    (item,), _, _ = read_items(out)
    assert (item.name, item.width, item.image is not None) == ("img0", 9, True)


@settings(max_examples=60, deadline=None)
@given(
    size=st.tuples(st.integers(1, 8000), st.integers(1, 8000)),
    coords=st.lists(
        st.tuples(*[st.floats(0, 1, width=32)] * 4).map(
            lambda c: (min(c[0], c[2]), min(c[1], c[3]), max(c[0], c[2]), max(c[1], c[3]))
        ),
        min_size=1,
        max_size=6,
    ),
)
def test_any_float32_box_written_to_cvat_reads_back_to_the_same_float32(
    size: tuple[int, int], coords: list[tuple[float, float, float, float]]
) -> None:
    import tempfile

    width, height = size
    objs = tuple(Annotation("cat", Box(*c), label_id=1) for c in coords)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "h.zip"
        with ZipSink(out) as sink:
            writer = FORMATS["cvat"].open_writer(sink, WriteOptions(), Notes())  # type: ignore[misc]
            writer.write(Item("h.jpg", width=width, height=height, objects=objs))
            writer.close(LabelMap.from_names(["cat"]))
        (item,), _, notes = read_items(out)
    assert not notes.warnings or notes.warning_counts.keys() == {"no_images"}
    for want, got in zip(objs, item.objects, strict=True):
        for side in ("xmin", "ymin", "xmax", "ymax"):
            assert f32(getattr(got.box, side)) == f32(getattr(want.box, side))


# --- the budget, ids, encodings, clipping ----------------------------------------------


def read_limited(
    path: Path, limits: Limits, *, masks: bool = False, images: bool = False
) -> tuple[list[Item], Notes]:
    notes = Notes()
    with open_source(path) as src:
        reader = CvatReader(src, ReadOptions(limits=limits, masks=masks, images=images), notes)
        return list(reader.items()), notes


def one_image(tmp: Path, body: str, *, head: str = GOOD_IMAGE, **kw: Any) -> Path:
    return make_zip(tmp / "x.zip", {"annotations.xml": cvat_xml(f"{head}\n{body}\n</image>", **kw)})


def test_xml_nested_past_max_depth_is_limit_exceeded(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "x.zip", {"annotations.xml": "<annotations>\n" + "<image>" * 100})
    with pytest.raises(LimitExceededError, match="max_depth is 64") as err:
        read_items(src)
    assert (err.value.member, err.value.line) == ("annotations.xml", 2)


def test_a_huge_declared_image_with_masks_is_limit_exceeded_before_any_raster(
    tmp_path: Path,
) -> None:
    head = '<image id="0" name="h.jpg" width="100000" height="100000">'
    body = '<polygon label="cat" points="1,1;50,1;50,50"/>'
    with pytest.raises(LimitExceededError, match="max_mask_pixels is 67108864") as err:
        read_limited(one_image(tmp_path, body, head=head), Limits(), masks=True)
    assert (err.value.member, err.value.item, err.value.value) == (
        "annotations.xml",
        "h.jpg",
        10**10,
    )
    items, _ = read_limited(one_image(tmp_path, body, head=head), Limits())  # boxes only: fine
    assert len(items[0].objects) == 1


def test_an_attribute_value_over_max_text_bytes_is_refused_as_it_streams(tmp_path: Path) -> None:
    big = f'<box label="cat" xtl="1" ytl="1" xbr="2" ybr="2"><attribute name="n">{"v" * 70_000}'
    src = one_image(tmp_path, big + "</attribute></box>")
    with pytest.raises(LimitExceededError, match="max_text_bytes is 65536") as err:
        read_limited(src, Limits())
    assert (err.value.member, err.value.limit) == ("annotations.xml", "max_text_bytes")


@pytest.mark.parametrize(
    "body",
    [
        '<box label="{}" xtl="1" ytl="1" xbr="2" ybr="2"/>',
        '<box label="cat" xtl="1" ytl="1" xbr="2" ybr="2"><attribute name="{}">v</attribute></box>',
    ],
    ids=["label", "attribute-name"],
)
def test_names_over_max_text_bytes_are_refused(tmp_path: Path, body: str) -> None:
    src = one_image(tmp_path, body.format("n" * 2000))
    with pytest.raises(LimitExceededError, match="max_text_bytes is 1000"):
        read_limited(src, Limits(max_text_bytes=1000))


def test_a_tag_longer_than_the_token_cap_is_refused_before_expat_buffers_it(
    tmp_path: Path,
) -> None:
    points = ";".join(f"{i % 9},{i % 7}" for i in range(5000))
    src = one_image(tmp_path, f'<polygon label="cat" points="{points}"/>')
    limits = Limits(max_values_per_feature=1000, max_number_length=8)  # 8000-byte tags
    with pytest.raises(LimitExceededError, match="one XML tag is longer than 8000 bytes") as err:
        read_limited(src, limits)
    assert err.value.limit == "max_values_per_feature"
    items, _ = read_limited(src, Limits())  # 10,000 values: within the default budget
    assert len(items[0].objects[0].polygon) == 10_000


@pytest.mark.parametrize(
    ("xml", "what"),
    [
        ('<image id="\u00b2" name="h.jpg" width="9" height="9"></image>', "<image> id '\u00b2'"),
        ('<image id="1' + "0" * 20 + '" name="h.jpg" width="9" height="9"></image>', "<image> id"),
        (
            '<track id="\u00b2" label="cat"><box frame="0" xtl="1" ytl="1" xbr="2" ybr="2"/>'
            "</track>",
            "track id '\u00b2'",
        ),
        (
            '<track id="0" label="cat"><box frame="1' + "0" * 20 + '" xtl="1" ytl="1" xbr="2"'
            ' ybr="2"/></track>',
            "<box> frame",
        ),
        (
            '<track id="0" label="cat"><box frame="\u0663" xtl="1" ytl="1" xbr="2" ybr="2"/>'
            "</track>",
            "<box> frame",
        ),
    ],
    ids=["image-superscript", "image-21-digits", "track-superscript", "frame-21-digits", "arabic"],
)
def test_ids_that_are_not_ascii_int64_numbers_are_format_errors_naming_the_member(
    tmp_path: Path, xml: str, what: str
) -> None:
    src = make_zip(tmp_path / "x.zip", {"annotations.xml": cvat_xml(xml)})
    with pytest.raises(FormatError, match=re.escape(what)) as err:
        read_limited(src, Limits())
    assert err.value.member == "annotations.xml"
    assert err.value.line is not None
    if "image" in what:
        assert err.value.item == "h.jpg"


def test_frame_images_with_unicode_or_huge_digits_are_not_frames() -> None:
    names = ["images/frame_\u0663.png", "images/frame_" + "9" * 30 + ".png", "images/frame_7.png"]
    assert frame_images(names) == {7: "images/frame_7.png"}


def test_a_polygon_30_px_past_the_right_edge_is_clipped_with_box_clipped(tmp_path: Path) -> None:
    src = one_image(tmp_path, '<polygon label="cat" points="2,2;39,2;39,8"/>')
    items, notes = read_limited(src, Limits(), masks=True)
    obj = items[0].objects[0]
    assert px(obj.box, 9, 9) == (2, 2, 9, 8)
    assert obj.mask is not None
    assert notes.warning_counts["box_clipped"] == 1
    assert "clipped to its edges" in notes.warnings[0]["message"]


@pytest.mark.parametrize(
    "shape",
    [
        '<polygon label="cat" points="20,2;39,2;39,8"/>',
        '<box label="cat" xtl="-30" ytl="1" xbr="-5" ybr="2"/>',
    ],
    ids=["polygon", "box"],
)
def test_a_shape_with_nothing_inside_the_image_is_an_error(tmp_path: Path, shape: str) -> None:
    with pytest.raises(FormatError, match="lies outside the 9x9 image") as err:
        read_limited(one_image(tmp_path, shape), Limits())
    assert (err.value.item, err.value.obj) == ("h.jpg", 0)


def test_a_mask_rectangle_past_the_edge_is_cropped_with_box_clipped(tmp_path: Path) -> None:
    # 4x2 rectangle at left=7 on a 9-wide image: columns 7..8 are inside, all pixels set
    src = one_image(
        tmp_path, '<mask label="cat" rle="0, 8" left="7" top="0" width="4" height="2"/>'
    )
    items, notes = read_limited(src, Limits(), masks=True)
    assert px(items[0].objects[0].box, 9, 9) == (7, 0, 9, 2)
    assert notes.warning_counts["box_clipped"] == 1


def test_objects_over_max_objects_per_item_are_refused_while_the_image_streams(
    tmp_path: Path,
) -> None:
    src = one_image(tmp_path, '<box label="cat" xtl="1" ytl="1" xbr="2" ybr="2"/>' * 11)
    with pytest.raises(LimitExceededError, match="max_objects_per_item is 10") as err:
        read_limited(src, Limits(max_objects_per_item=10))
    assert (err.value.item, err.value.line) == ("h.jpg", 6)


def test_attributes_over_max_values_per_feature_are_refused_while_the_image_streams(
    tmp_path: Path,
) -> None:
    attrs = '<attribute name="a">v</attribute>' * 20
    src = one_image(tmp_path, f'<box label="cat" xtl="1" ytl="1" xbr="2" ybr="2">{attrs}</box>')
    with pytest.raises(LimitExceededError, match="max_values_per_feature is 10"):
        read_limited(src, Limits(max_values_per_feature=10))


def test_video_frame_objects_over_max_objects_per_item_are_refused(tmp_path: Path) -> None:
    tracks = "".join(
        f'<track id="{t}" label="cat"><box frame="0" xtl="1" ytl="1" xbr="2" ybr="2"/></track>'
        for t in range(11)
    )
    xml = cvat_xml(tracks).replace(
        "<task>", "<task><original_size><width>9</width><height>9</height></original_size>"
    )
    src = make_zip(tmp_path / "x.zip", {"annotations.xml": xml})
    with pytest.raises(LimitExceededError, match="max_objects_per_item is 10"):
        read_limited(src, Limits(max_objects_per_item=10))


def test_labels_over_max_labels_are_refused_in_meta_and_in_shapes(tmp_path: Path) -> None:
    src = one_image(tmp_path, "", labels=tuple(f"l{i}" for i in range(11)))
    with pytest.raises(LimitExceededError, match="max_labels is 10"):
        read_limited(src, Limits(max_labels=10))
    boxes = "".join(f'<box label="x{i}" xtl="1" ytl="1" xbr="2" ybr="2"/>' for i in range(11))
    with pytest.raises(LimitExceededError, match="max_labels is 10") as err:
        read_limited(one_image(tmp_path, boxes, labels=()), Limits(max_labels=10))
    assert err.value.item == "h.jpg"


@pytest.mark.parametrize("encoding", ["shift_jis", "gbk", "euc-kr"])
def test_annotations_xml_in_a_declared_multibyte_encoding_reads_right_streamed(
    tmp_path: Path, encoding: str
) -> None:
    label = "\u732b" if encoding != "euc-kr" else "\uace0\uc591\uc774"  # 猫 / 고양이
    xml = cvat_xml(
        f'{GOOD_IMAGE}<box label="{label}" xtl="1" ytl="1" xbr="2" ybr="2">'
        f'<attribute name="n">{label}</attribute></box></image>' * 3000,
        labels=(label,),
    ).replace('encoding="utf-8"', f'encoding="{encoding}"')
    src = make_zip(tmp_path / "x.zip", {"annotations.xml": xml.encode(encoding)})
    items, _ = read_limited(src, Limits())
    assert len(items) == 3000
    assert {(o.label, o.attributes) for i in items for o in i.objects} == {(label, (("n", label),))}


def test_a_bad_declared_encoding_is_refused_naming_it(tmp_path: Path) -> None:
    xml = cvat_xml("").replace('encoding="utf-8"', 'encoding="x-unknown-9"')
    with pytest.raises(FormatError, match="'x-unknown-9'") as err:
        read_limited(make_zip(tmp_path / "x.zip", {"annotations.xml": xml}), Limits())
    assert err.value.member == "annotations.xml"


def test_rle_counts_over_the_budget_are_refused_before_splitting() -> None:
    with pytest.raises(LimitExceededError, match="max_values_per_feature is 3"):
        rle.parse_counts("1, 2, 3, 4", max_values=3)
    with pytest.raises(LimitExceededError, match="max_number_length is 4"):
        rle.parse_counts("1, 123456789", max_number_length=4)


def test_attack_box_masks_on_a_huge_image_are_refused_in_the_reader_naming_the_item(
    tmp_path: Path,
) -> None:
    head = '<image id="0" name="h.jpg" width="2147483647" height="2147483647">'
    src = one_image(tmp_path, '<box label="cat" xtl="1" ytl="1" xbr="2" ybr="2"/>', head=head)
    with pytest.raises(LimitExceededError, match="max_mask_pixels") as err:
        read_limited(src, Limits(), masks=True)
    assert (err.value.member, err.value.item) == ("annotations.xml", "h.jpg")


def test_attack_a_meta_original_size_past_int32_is_a_format_error(tmp_path: Path) -> None:
    xml = cvat_xml("").replace(
        "<task>",
        "<task><original_size><width>99999999999</width><height>9</height></original_size>",
    )
    with pytest.raises(FormatError, match="not a pixel size"):
        read_limited(make_zip(tmp_path / "x.zip", {"annotations.xml": xml}), Limits())

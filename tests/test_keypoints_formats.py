"""Keypoints through the formats: CVAT skeletons and points, COCO keypoints, TFRecord.

- CVAT -> TFRecord -> CVAT and COCO -> TFRecord -> COCO give every keypoint back exactly
  (float32 of the normalised values), with the skeleton's names and edges.
- A CVAT "COCO Keypoints 1.0" export (person_keypoints_default.json + images/) reads as COCO
  with source_id = the COCO image id and filename = its file_name (create_coco_tf_record's
  conventions); back to COCO the image ids come from source_id.
- The label map gets ``keypoints { id label }`` (edges in a comment TF's parser skips) and the
  report a ``keypoints`` section; VOC counts keypoints as lost.
- TensorFlow parses the keypoint keys of a converted archive; the corpus's person_keypoints and
  CVAT skeleton files convert with every keypoint.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from conftest import require_corpus
from tfdrop.archive import open_source
from tfdrop.codec.example import encode_example
from tfdrop.codec.labelmap import parse_label_map
from tfdrop.codec.model import Annotation, Box, Item, Point
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError, LabelMapError
from tfdrop.formats import Notes, ReadOptions
from tfdrop.formats.coco.reader import CocoReader
from tfdrop.formats.cvat.meta import LabelSpec
from tfdrop.formats.cvat.reader import CvatReader
from tfdrop.formats.cvat.skeleton import skeletons_of
from tfdrop.formats.tfrecord import open_reader
from tfdrop.labels import load_label_map
from tfdrop.stream import RecordWriter
from tfhelpers import tf_records


def f32(v: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", v))[0])


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def make_zip(out: Path, members: dict[str, bytes | str]) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data.encode() if isinstance(data, str) else data)
    return out


def coco_items(path: Path) -> tuple[list[Item], CocoReader]:
    notes = Notes()
    with open_source(path) as src:
        reader = CocoReader(src, ReadOptions(), notes)
        return list(reader.items()), reader


def cvat_items(path: Path) -> tuple[list[Item], CvatReader, Notes]:
    notes = Notes()
    with open_source(path) as src:
        reader = CvatReader(src, ReadOptions(), notes)
        return list(reader.items()), reader, notes


def as_f32(points: tuple[Point, ...]) -> tuple[Point, ...]:
    return tuple(Point(f32(p.x), f32(p.y), p.visibility, p.name) for p in points)


# --- COCO -------------------------------------------------------------------------------------

KP_CATEGORY = {
    "id": 1,
    "name": "person",
    "supercategory": "",
    "keypoints": ["nose", "left_eye", "right_eye"],
    "skeleton": [[1, 2], [1, 3]],
}


def coco_keypoints_export(tmp: Path) -> Path:
    """CVAT's "COCO Keypoints 1.0" layout: annotations/person_keypoints_default.json."""
    doc = {
        "categories": [KP_CATEGORY, {"id": 2, "name": "car", "supercategory": ""}],
        "images": [
            {"id": 397133, "file_name": "a.jpg", "width": 640, "height": 427},
            {"id": 7, "file_name": "b.jpg", "width": 33, "height": 17},
        ],
        "annotations": [
            {"id": 1, "image_id": 397133, "category_id": 1, "bbox": [100.5, 50, 200, 300],
             "area": 600.0, "iscrowd": 0, "segmentation": [],
             "keypoints": [150.25, 80, 2, 170.125, 75.5, 1, 0, 0, 0], "num_keypoints": 2},
            {"id": 2, "image_id": 397133, "category_id": 2, "bbox": [1, 1, 10, 10],
             "area": 100.0, "iscrowd": 0, "segmentation": []},
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [1, 2, 30, 14], "area": 420.0,
             "iscrowd": 0, "segmentation": [],
             "keypoints": [3.3, 4.7, 2, 30.1, 15.9, 2, 11, 12, 2], "num_keypoints": 3},
        ],
    }  # fmt: skip
    return make_zip(
        tmp / "kp.zip",
        {
            "annotations/person_keypoints_default.json": json.dumps(doc),
            "images/a.jpg": jpeg(640, 427),
            "images/b.jpg": jpeg(33, 17),
        },
    )


def test_a_coco_keypoints_export_reads_keypoints_with_create_coco_tf_record_ids(
    tmp_path: Path,
) -> None:
    items, reader = coco_items(coco_keypoints_export(tmp_path))
    assert [(i.name, i.source_id) for i in items] == [("a.jpg", "397133"), ("b.jpg", "7")]
    person, car = items[0].objects
    assert person.keypoints == (
        Point(150.25 / 640, 80 / 427, 2, "nose"),
        Point(170.125 / 640, 75.5 / 427, 1, "left_eye"),
        Point(0.0, 0.0, 0, "right_eye"),
    )
    assert car.keypoints == ()
    sk = reader.skeletons()["person"]
    assert (sk.names, sk.edges) == (("nose", "left_eye", "right_eye"), ((0, 1), (0, 2)))


def test_coco_to_tfrecord_to_coco_gives_the_keypoints_back_exactly(tmp_path: Path) -> None:
    src = coco_keypoints_export(tmp_path)
    mid = tmp_path / "mid.zip"
    report = convert(src, mid, ConvertOptions())
    assert report.lossy == {}
    back = tmp_path / "back.zip"
    convert(mid, back, ConvertOptions(target_format="coco"))
    with zipfile.ZipFile(back) as zf:
        doc = json.loads(zf.read("annotations/instances_default.json"))
    original = json.loads(zipfile.ZipFile(src).read("annotations/person_keypoints_default.json"))
    cats = {c["id"]: c for c in doc["categories"]}
    assert cats[1]["keypoints"] == KP_CATEGORY["keypoints"]
    assert cats[1]["skeleton"] == KP_CATEGORY["skeleton"]
    assert "keypoints" not in cats[2]
    # image ids come back from image/source_id, file names from image/filename
    assert [(i["id"], i["file_name"]) for i in doc["images"]] == [(397133, "a.jpg"), (7, "b.jpg")]
    got = [(a["image_id"], a.get("keypoints"), a.get("num_keypoints")) for a in doc["annotations"]]
    want = [(a["image_id"], a.get("keypoints"), a.get("num_keypoints"))
            for a in original["annotations"]]  # fmt: skip
    assert got == want
    # and as items: the same float32 values as the TFRecord held
    a, _ = coco_items(src)
    b, _ = coco_items(back)
    for x, y in zip(a, b, strict=True):
        for ox, oy in zip(x.objects, y.objects, strict=True):
            assert as_f32(ox.keypoints) == as_f32(oy.keypoints)


def test_the_label_map_and_report_carry_the_keypoints_and_edges(tmp_path: Path) -> None:
    out = tmp_path / "o.zip"
    report = convert(coco_keypoints_export(tmp_path), out, ConvertOptions())
    with zipfile.ZipFile(out) as zf:
        lm = parse_label_map(zf.read("label_map.pbtxt"))
    person = lm.get(1)
    assert person is not None
    assert [(k.id, k.label) for k in person.keypoints] == [
        (0, "nose"), (1, "left_eye"), (2, "right_eye")]  # fmt: skip
    assert person.keypoint_edges == ((0, 1), (0, 2))
    assert report.to_dict()["keypoints"] == {
        "person": {"num_keypoints": 3, "names": ["nose", "left_eye", "right_eye"],
                   "edges": [[0, 1], [0, 2]], "offset": 0}}  # fmt: skip


def test_tensorflow_parses_the_keypoints_of_a_converted_archive(
    tf: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "o.zip"
    convert(coco_keypoints_export(tmp_path), out, ConvertOptions())
    var = tf.io.VarLenFeature
    extra = {
        "image/object/keypoint/x": var(tf.float32),
        "image/object/keypoint/y": var(tf.float32),
        "image/object/keypoint/visibility": var(tf.int64),
        "image/object/keypoint/text": var(tf.string),
        "image/object/keypoint/num": var(tf.int64),
    }
    first, second = tf_records(tf, out, tmp_path, extra=extra)
    assert first["image/source_id"] == b"397133"
    assert first["image/object/keypoint/x"] == [
        f32(150.25 / 640), f32(170.125 / 640), 0.0, 0.0, 0.0, 0.0]  # fmt: skip
    assert first["image/object/keypoint/visibility"] == [2, 1, 0, 0, 0, 0]
    # every object carries the dataset's slots, named (create_coco_tf_record's layout)
    assert first["image/object/keypoint/text"] == [b"nose", b"left_eye", b"right_eye"] * 2
    assert first["image/object/keypoint/num"] == [2, 0]
    assert second["image/object/keypoint/y"] == [f32(4.7 / 17), f32(15.9 / 17), f32(12 / 17)]


def test_person_keypoints_beside_instances_is_left_out_with_a_warning(tmp_path: Path) -> None:
    doc = {"categories": [KP_CATEGORY], "images": [], "annotations": []}
    src = make_zip(
        tmp_path / "c.zip",
        {
            "annotations/instances_train.json": json.dumps(doc),
            "annotations/person_keypoints_train.json": json.dumps(doc),
        },
    )
    report = convert(src, tmp_path / "o.zip", ConvertOptions())
    assert [w["member"] for w in report.warnings if w["code"] == "ignored_member"] == [
        "annotations/person_keypoints_train.json"
    ]


def test_keypoints_to_voc_are_counted_as_lost(tmp_path: Path) -> None:
    report = convert(
        coco_keypoints_export(tmp_path), tmp_path / "v.zip", ConvertOptions(target_format="voc")
    )
    assert report.lossy["keypoints"] == 2


# --- CVAT -------------------------------------------------------------------------------------

SVG = (
    '&lt;line data-type="edge" data-node-from="1" data-node-to="2"&gt;&lt;/line&gt;'
    '&lt;line data-type="edge" data-node-from="2" data-node-to="3"&gt;&lt;/line&gt;'
    + "".join(
        f'&lt;circle data-type="element node" data-node-id="{i}" data-label-name="{n}"&gt;'
        "&lt;/circle&gt;"
        for i, n in ((1, "head"), (2, "neck"), (3, "tail"))
    )
)
META = (
    "<label><name>animal</name><type>skeleton</type><attributes/>"
    f"<svg>{SVG}</svg></label>"
    + "".join(
        f"<label><name>{n}</name><type>points</type><attributes/><parent>animal</parent></label>"
        for n in ("head", "neck", "tail")
    )
    + "<label><name>marks</name><attributes/></label>"
)
IMAGES = """
<image id="0" name="a.jpg" width="64" height="48">
  <skeleton label="animal" occluded="0" z_order="0">
    <points label="head" outside="0" occluded="0" points="10.5,12.25"/>
    <points label="neck" outside="0" occluded="1" points="20,20.5"/>
    <points label="tail" outside="1" occluded="0" points="33.3,40.1"/>
  </skeleton>
  <points label="marks" occluded="0" points="1,2;60.5,47;30,3.3" z_order="0"/>
</image>
<image id="1" name="b.jpg" width="17" height="9">
  <skeleton label="animal" occluded="0" z_order="0">
    <points label="tail" outside="0" occluded="0" points="3,4"/>
    <points label="head" outside="0" occluded="0" points="16.9,8.9"/>
  </skeleton>
</image>
"""


def cvat_skeletons(tmp: Path) -> Path:
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
        f"<meta><task><mode>annotation</mode><labels>{META}</labels></task></meta>"
        f"{IMAGES}</annotations>"
    )
    return make_zip(
        tmp / "cv.zip",
        {"annotations.xml": xml, "images/a.jpg": jpeg(64, 48), "images/b.jpg": jpeg(17, 9)},
    )


def test_cvat_skeletons_and_points_become_keypoints_in_skeleton_order(tmp_path: Path) -> None:
    items, reader, notes = cvat_items(cvat_skeletons(tmp_path))
    assert list(reader.labels()) == ["animal", "marks"]
    sk = reader.skeletons()["animal"]
    assert (sk.names, sk.edges) == (("head", "neck", "tail"), ((0, 1), (1, 2)))
    animal, marks = items[0].objects
    assert animal.keypoints == (
        Point(10.5 / 64, 12.25 / 48, 2, "head"),
        Point(20 / 64, 20.5 / 48, 1, "neck"),
        Point(33.3 / 64, 40.1 / 48, 0, "tail"),  # outside: not labelled, coordinates kept
    )
    # the box of the labelled points only
    assert (animal.box.xmin, animal.box.ymax) == (10.5 / 64, 20.5 / 48)
    assert [(p.x * 64, p.y * 48, p.visibility) for p in marks.keypoints] == [
        (1, 2, 2), (60.5, 47, 2), (30, 3.3, 2)]  # fmt: skip
    # a point the element does not list is padded, in the skeleton's order
    (second,) = items[1].objects
    assert [(p.name, p.visibility) for p in second.keypoints] == [
        ("head", 2), ("neck", 0), ("tail", 2)]  # fmt: skip
    assert not notes.skipped


def test_cvat_to_tfrecord_to_cvat_gives_the_skeletons_back_exactly(tmp_path: Path) -> None:
    src = cvat_skeletons(tmp_path)
    mid, back = tmp_path / "mid.zip", tmp_path / "back.zip"
    convert(src, mid, ConvertOptions())
    report = convert(mid, back, ConvertOptions(target_format="cvat"))
    assert "keypoint_visibility" not in report.lossy
    a, _, _ = cvat_items(src)
    b, reader, _ = cvat_items(back)
    sk = reader.skeletons()["animal"]
    assert (sk.names, sk.edges) == (("head", "neck", "tail"), ((0, 1), (1, 2)))
    for x, y in zip(a, b, strict=True):
        assert [o.label for o in x.objects] == [o.label for o in y.objects]
        for ox, oy in zip(x.objects, y.objects, strict=True):
            assert as_f32(ox.keypoints) == as_f32(oy.keypoints)


# --- the corpus -------------------------------------------------------------------------------


def _no_keypoints_lost(report: Any) -> None:
    assert not any("keypoint" in k or k in ("points", "skeleton") for k in report.skipped)
    assert not any("keypoint" in k or "skeleton" in k for k in report.lossy)


def test_corpus_person_keypoints_convert_with_every_keypoint(tmp_path: Path) -> None:
    root = require_corpus(
        "cvat-ai__datumaro", "tests", "assets", "coco_dataset", "coco_person_keypoints"
    )
    report = convert(root, tmp_path / "o.zip", ConvertOptions())
    _no_keypoints_lost(report)
    assert report.to_dict()["keypoints"]["a"]["names"] == ["a_1", "a_2", "a_3"]
    with zipfile.ZipFile(tmp_path / "o.zip") as zf:
        assert "keypoints {" in zf.read("label_map.pbtxt").decode()


def test_corpus_cvat_skeletons_convert_with_every_keypoint(tmp_path: Path) -> None:
    root = require_corpus("cvat-ai__datumaro", "tests", "assets", "cvat_dataset", "for_images")
    report = convert(root, tmp_path / "o.zip", ConvertOptions())
    _no_keypoints_lost(report)
    assert report.to_dict()["keypoints"]["skeleton"] == {
        "num_keypoints": 4, "names": ["1", "2", "3", "4"], "edges": [[2, 1], [0, 3]],
        "offset": 0}  # fmt: skip
    items, _, _ = cvat_items(root)
    skeletons = [o for i in items for o in i.objects if o.label == "skeleton"]
    assert [len(o.keypoints) for o in skeletons] == [4, 4]


# --- the dataset's keypoint layout through the formats (outside attack) ------------------------


def _coco(tmp: Path, categories: list[dict[str, Any]], annotations: list[dict[str, Any]],
          images: int = 1) -> Path:  # fmt: skip
    doc = {
        "categories": categories,
        "images": [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48}
                   for i in range(1, images + 1)],
        "annotations": [{"id": n, "iscrowd": 0, "area": 1.0, "segmentation": [], **a}
                        for n, a in enumerate(annotations, 1)],
    }  # fmt: skip
    members: dict[str, bytes | str] = {"annotations/instances_default.json": json.dumps(doc)}
    for i in range(1, images + 1):
        members[f"images/{i}.jpg"] = jpeg(64, 48)
    return make_zip(tmp / "c.zip", members)


def _coco_back(out: Path) -> dict[str, Any]:
    with zipfile.ZipFile(out) as zf:
        doc: dict[str, Any] = json.loads(zf.read("annotations/instances_default.json"))
    return doc


TWO_KINDS = [
    {"id": 1, "name": "person", "keypoints": ["a", "b", "c"], "skeleton": []},
    {"id": 2, "name": "hand", "keypoints": ["x", "y"], "skeleton": [[1, 2]]},
    {"id": 3, "name": "car"},
]
TWO_KINDS_ANNS = [
    {"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9],
     "keypoints": [2, 3, 2, 4, 5, 2, 6, 7, 1], "num_keypoints": 3},
    {"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},
    {"image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5]},
    {"image_id": 3, "category_id": 2, "bbox": [1, 1, 9, 9],
     "keypoints": [2, 3, 2, 4, 5, 2], "num_keypoints": 2},
]  # fmt: skip


@pytest.mark.interop
def test_every_record_has_one_k_the_od_api_decoder_can_reshape(
    tf: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "o.zip"
    report = convert(_coco(tmp_path, TWO_KINDS, TWO_KINDS_ANNS, images=3), out, ConvertOptions())
    assert report.to_dict()["keypoints"]["hand"]["offset"] == 3
    assert report.training is not None
    assert report.training.input_reader is not None
    assert "num_keypoints: 5" in report.training.input_reader
    extra = {"image/object/keypoint/x": tf.io.VarLenFeature(tf.float32)}
    for rec in tf_records(tf, out, tmp_path, extra=extra):
        boxes = len(rec["image/object/bbox/xmin"])
        # the record of boxes only carries the slots too (create_coco_tf_record pads them)
        assert tf.reshape(rec["image/object/keypoint/x"], [-1, 5]).shape[0] == boxes


def test_each_category_gets_its_own_keypoints_back_from_global_ids(tmp_path: Path) -> None:
    pinned = tmp_path / "pin.pbtxt"
    pinned.write_text(
        "item { id: 1 name: 'person' keypoints { id: 5 label: 'a' } keypoints { id: 6 "
        "label: 'b' } keypoints { id: 7 label: 'c' } }\nitem { id: 2 name: 'hand' keypoints "
        "{ id: 0 label: 'x' } keypoints { id: 1 label: 'y' } }\nitem { id: 3 name: 'car' }\n"
    )
    mid, back = tmp_path / "m.zip", tmp_path / "b.zip"
    src = _coco(tmp_path, TWO_KINDS, TWO_KINDS_ANNS, images=3)
    convert(src, mid, ConvertOptions(label_map=load_label_map(pinned)))
    convert(mid, back, ConvertOptions(target_format="coco"))
    doc = _coco_back(back)
    cats = {c["name"]: c.get("keypoints") for c in doc["categories"]}
    assert cats == {"person": ["a", "b", "c"], "hand": ["x", "y"], "car": None}
    kps = sorted((a["category_id"], a.get("keypoints")) for a in doc["annotations"])
    assert kps == [(1, [2, 3, 2, 4, 5, 2, 6, 7, 1]), (2, [2, 3, 2, 4, 5, 2]), (3, None),
                   (3, None)]  # fmt: skip


def test_a_pinned_maps_keypoint_order_is_the_slot_order(tmp_path: Path) -> None:
    pinned = tmp_path / "pin.pbtxt"
    pinned.write_text(
        "item { id: 1 name: 'person' keypoints { id: 0 label: 'c' } "
        "keypoints { id: 1 label: 'b' } keypoints { id: 2 label: 'a' } }\n"
    )
    cats = [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"], "skeleton": [[1, 2]]}]
    anns = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9],
             "keypoints": [8, 8, 2, 16, 16, 2, 32, 32, 2]}]  # fmt: skip
    out = tmp_path / "o.zip"
    report = convert(
        _coco(tmp_path, cats, anns), out, ConvertOptions(label_map=load_label_map(pinned))
    )
    (item,) = [i for i in tfrecord_items(out)]
    assert [(p.name, p.x * 64) for p in item.objects[0].keypoints] == [
        ("c", 32), ("b", 16), ("a", 8)]  # fmt: skip
    assert report.to_dict()["keypoints"]["person"]["edges"] == [[2, 1]]


def test_a_pinned_map_naming_other_keypoints_is_a_clear_error(tmp_path: Path) -> None:
    pinned = tmp_path / "pin.pbtxt"
    pinned.write_text("item { id: 1 name: 'person' keypoints { id: 0 label: 'a' } "
                      "keypoints { id: 1 label: 'b' } }\n")  # fmt: skip
    cats = [{"id": 1, "name": "person", "keypoints": ["a", "b", "c"]}]
    with pytest.raises(LabelMapError, match=r"'person'.*'a', 'b', 'c'.*'a', 'b'"):
        convert(_coco(tmp_path, cats, []), tmp_path / "o.zip",
                ConvertOptions(label_map=load_label_map(pinned)))  # fmt: skip


def tfrecord_items(archive: Path) -> list[Item]:
    with open_source(archive) as src:
        return list(open_reader(src, ReadOptions(), Notes()).items())


def test_a_trailing_unlabelled_keypoint_of_a_nameless_category_comes_back(tmp_path: Path) -> None:
    cats = [{"id": 1, "name": "hand", "keypoints": [], "skeleton": [[1, 2]]}]
    anns = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9],
             "keypoints": [20, 30, 2, 0, 0, 0], "num_keypoints": 1}]  # fmt: skip
    mid, back = tmp_path / "m.zip", tmp_path / "b.zip"
    convert(_coco(tmp_path, cats, anns), mid, ConvertOptions())
    convert(mid, back, ConvertOptions(target_format="coco"))
    (ann,) = _coco_back(back)["annotations"]
    assert ann["keypoints"] == [20, 30, 2, 0, 0, 0]


CVAT_NO_META = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
<image id="0" name="a.jpg" width="64" height="48">
 <box label="car" occluded="0" xtl="1" ytl="1" xbr="5" ybr="5" z_order="0"/>
</image>
<image id="1" name="b.jpg" width="64" height="48">
 <skeleton label="animal" occluded="0" z_order="0">
  <points label="head" outside="0" occluded="0" points="10,10"/>
  <points label="tail" outside="0" occluded="0" points="20,20"/>
 </skeleton>
 <skeleton label="animal" occluded="0" z_order="0">
  <points label="tail" outside="0" occluded="0" points="30,30"/>
 </skeleton>
 <skeleton label="animal" occluded="0" z_order="0">
  <points label="tail" outside="0" occluded="0" points="5,5"/>
  <points label="head" outside="0" occluded="0" points="40,40"/>
 </skeleton>
 EXTRA
</image>
</annotations>"""


def _cvat_no_meta(tmp: Path, extra: str = "") -> Path:
    xml = CVAT_NO_META.replace("EXTRA", extra)
    images = {"images/a.jpg": jpeg(64, 48), "images/b.jpg": jpeg(64, 48)}
    return make_zip(tmp / "n.zip", {"annotations.xml": xml, **images})


def test_undeclared_skeletons_are_scanned_and_put_in_the_first_objects_order(
    tmp_path: Path,
) -> None:
    out = tmp_path / "o.zip"
    report = convert(_cvat_no_meta(tmp_path), out, ConvertOptions())
    first, second = tfrecord_items(out)
    # the record before the first skeleton carries the slots: its box has none of its own
    assert first.objects[0].keypoints == ()
    named = [[(p.name, p.visibility, round(p.x * 64)) for p in o.keypoints]
             for o in second.objects]  # fmt: skip
    assert named == [[("head", 2, 10), ("tail", 2, 20)], [("head", 0, 0), ("tail", 2, 30)],
                     [("head", 2, 40), ("tail", 2, 5)]]  # fmt: skip
    assert report.to_dict()["keypoints"]["animal"]["names"] == ["head", "tail"]


def test_an_undeclared_skeleton_naming_a_new_point_is_refused(tmp_path: Path) -> None:
    extra = ('<skeleton label="animal" occluded="0" z_order="0">'
             '<points label="paw" outside="0" occluded="0" points="1,1"/></skeleton>')  # fmt: skip
    with pytest.raises(FormatError, match="'paw'") as exc:
        convert(_cvat_no_meta(tmp_path, extra), tmp_path / "o.zip", ConvertOptions())
    assert (exc.value.item, exc.value.obj) == ("b.jpg", 3)


def test_tfrecord_objects_whose_names_are_swapped_are_reordered(tmp_path: Path) -> None:
    kp = (Point(0.1, 0.1, 2, "nose"), Point(0.2, 0.2, 2, "eye"))
    objs = tuple(Annotation(label="person", label_id=1, box=Box(0, 0, 1, 1), keypoints=k)
                 for k in (kp, kp[::-1]))  # fmt: skip
    item = Item(name="a.jpg", width=64, height=48, image=jpeg(64, 48), image_format="jpeg",
                objects=objs)  # fmt: skip
    src = tmp_path / "in.tfrecord"
    with src.open("wb") as f, RecordWriter(f) as w:
        w.write(encode_example(item))  # the record's own K, no label map: a foreign record
    out = tmp_path / "o.zip"
    convert(src, out, ConvertOptions())
    (back,) = tfrecord_items(out)
    assert [[p.name for p in o.keypoints] for o in back.objects] == [["nose", "eye"]] * 2
    # the second object's points moved with their names
    assert [[round(p.x, 3) for p in o.keypoints] for o in back.objects] == [[0.1, 0.2]] * 2


def test_svg_names_with_markup_characters_round_trip_the_edges(tmp_path: Path) -> None:
    names = ['left "eye"', "R&D", "a<b"]
    cats = [{"id": 1, "name": "face", "keypoints": names, "skeleton": [[1, 2], [2, 3]]}]
    anns = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9],
             "keypoints": [2, 3, 2, 4, 5, 2, 6, 7, 2]}]  # fmt: skip
    cv, back = tmp_path / "cv.zip", tmp_path / "b.zip"
    convert(_coco(tmp_path, cats, anns), cv, ConvertOptions(target_format="cvat"))
    report = convert(cv, back, ConvertOptions())
    assert report.to_dict()["keypoints"]["face"]["edges"] == [[0, 1], [1, 2]]


def test_svg_attributes_in_single_quotes_and_entities_are_read() -> None:
    svg = ("<line data-node-from='1' data-node-to='2'></line>"
           "<circle data-node-id='1' data-label-name='R&amp;D'></circle>"
           '<circle data-node-id="2" data-label-name="say &quot;hi&quot;"></circle>')  # fmt: skip
    specs = (LabelSpec("f", type="skeleton", svg=svg), LabelSpec("R&D", parent="f"),
             LabelSpec('say "hi"', parent="f"))  # fmt: skip
    assert skeletons_of(specs)["f"].edges == ((0, 1),)


CVAT_POINT_ATTR = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version><meta><task><labels>
<label><name>face</name><type>skeleton</type><attributes/><svg></svg></label>
<label><name>eye</name><type>points</type><attributes/><parent>face</parent></label>
</labels></task></meta>
<image id="0" name="a.jpg" width="64" height="48">
 <skeleton label="face" occluded="0" z_order="0">
  <points label="eye" outside="0" occluded="0" points="10,12">
   <attribute name="colour">green</attribute></points>
 </skeleton>
</image></annotations>"""


def test_attributes_on_skeleton_points_are_counted_as_lost(tmp_path: Path) -> None:
    src = make_zip(tmp_path / "a.zip", {"annotations.xml": CVAT_POINT_ATTR,
                                        "images/a.jpg": jpeg(64, 48)})  # fmt: skip
    report = convert(src, tmp_path / "o.zip", ConvertOptions())
    assert report.lossy.get("attribute:colour") == 1


CVAT_VIDEO = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version><meta><task><mode>interpolation</mode><size>3</size><labels>
<label><name>face</name><type>skeleton</type><attributes/><svg></svg></label>
<label><name>eye</name><type>points</type><attributes/><parent>face</parent></label>
</labels></task></meta>
<track id="0" label="face" source="manual">
  <skeleton frame="0" keyframe="1" outside="0" occluded="0" z_order="0"></skeleton>
  <skeleton frame="2" keyframe="1" outside="1" occluded="0" z_order="0"></skeleton>
  <track id="1" label="eye" source="manual">
    <points frame="0" keyframe="1" outside="0" occluded="0" points="10,10" z_order="0">
      <attribute name="colour">green</attribute></points>
    <points frame="1" keyframe="1" outside="0" occluded="0" points="12,12" z_order="0"></points>
    <points frame="2" keyframe="1" outside="1" occluded="0" points="12,12" z_order="0"></points>
  </track>
</track></annotations>"""


def test_video_point_attributes_and_points_of_a_frame_without_skeleton_are_counted(
    tmp_path: Path,
) -> None:
    members: dict[str, bytes | str] = {"annotations.xml": CVAT_VIDEO}
    for i in range(3):
        members[f"images/frame_{i:06d}.jpg"] = jpeg(64, 48)
    report = convert(make_zip(tmp_path / "v.zip", members), tmp_path / "o.zip", ConvertOptions())
    # frame 1's point has no <skeleton> to go into; frame 2's is outside with its skeleton
    assert report.lossy.get("keypoint_without_skeleton") == 1
    assert report.lossy.get("attribute:colour") == 1


def test_coco_num_keypoints_disagreeing_and_keypoints_outside_are_warned(tmp_path: Path) -> None:
    cats = [{"id": 1, "name": "person", "keypoints": ["a", "b"]}]
    anns = [{"image_id": 1, "category_id": 1, "bbox": [1, 1, 9, 9],
             "keypoints": [2, 3, 2, 130, -5, 1], "num_keypoints": 7}]  # fmt: skip
    out = tmp_path / "o.zip"
    report = convert(_coco(tmp_path, cats, anns), out, ConvertOptions())
    assert report.warning_counts == {"num_keypoints_mismatch": 1, "keypoint_outside_image": 1}
    (item,) = tfrecord_items(out)
    assert [p.visibility for p in item.objects[0].keypoints] == [2, 1]  # kept, counted by tfdrop

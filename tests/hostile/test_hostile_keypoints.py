"""Hostile keypoints through the real CLI: wrong lengths, non-numbers, bad visibilities,
huge K (``max_keypoints``) in COCO, CVAT and TFRecord inputs, each refused naming where."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from hostile.harness import png, refused, zip_of
from tfdrop.codec.example import encode_example
from tfdrop.codec.model import Annotation, Box, Item, Point
from tfdrop.codec.proto import Example
from tfdrop.stream import RecordWriter

ANN = "annotations/person_keypoints_default.json"


def coco(tmp: Path, keypoints: Any, names: list[str] | None = None) -> Path:
    doc = {
        "categories": [{"id": 1, "name": "person", "keypoints": names or ["a", "b"]}],
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "annotations": [
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2],
             "keypoints": keypoints}
        ],
    }  # fmt: skip
    return zip_of(tmp / "in.zip", {ANN: json.dumps(doc), "images/a.png": png()})


def test_coco_keypoints_not_in_threes_are_refused(tmp_path: Path) -> None:
    src = coco(tmp_path, [1, 1, 2, 3])
    refused(tmp_path, src, expect=("annotation 5", "not 3 per keypoint", ANN, "a.png"))


def test_coco_keypoints_holding_text_are_refused(tmp_path: Path) -> None:
    src = coco(tmp_path, [1, 1, 2, "x", 3, 2])
    refused(tmp_path, src, expect=("annotation 5", "'x'", "not a number", "a.png"))


def test_coco_keypoints_other_than_the_category_names_are_refused(tmp_path: Path) -> None:
    src = coco(tmp_path, [1, 1, 2, 3, 3, 2, 4, 4, 2])
    refused(tmp_path, src, expect=("annotation 5", "3 keypoints but its category names 2"))


def test_coco_keypoint_visibility_other_than_0_1_2_is_refused(tmp_path: Path) -> None:
    src = coco(tmp_path, [1, 1, 7, 3, 3, 2])
    refused(tmp_path, src, expect=("annotation 5", "visibility 7", "a.png"))


def test_coco_huge_k_is_a_max_keypoints_error(tmp_path: Path) -> None:
    src = coco(tmp_path, [1, 1, 2] * 5000, names=[])
    refused(tmp_path, src, expect=("max_keypoints", "a.png"))


def test_coco_category_of_huge_k_is_a_max_keypoints_error(tmp_path: Path) -> None:
    src = coco(tmp_path, [1, 1, 2], names=[f"k{i}" for i in range(5000)])
    refused(tmp_path, src, expect=("max_keypoints", ANN))


def test_coco_skeleton_naming_a_missing_keypoint_is_refused(tmp_path: Path) -> None:
    doc = {"categories": [{"id": 1, "name": "p", "keypoints": ["a", "b"], "skeleton": [[1, 9]]}],
           "images": [], "annotations": []}  # fmt: skip
    src = zip_of(tmp_path / "in.zip", {ANN: json.dumps(doc)})
    refused(tmp_path, src, expect=("skeleton edge [1, 9]", ANN))


def cvat(tmp: Path, body: str) -> Path:
    xml = (
        "<annotations><version>1.1</version><meta><task><labels>"
        "<label><name>s</name><type>skeleton</type><attributes/></label>"
        "<label><name>a</name><type>points</type><parent>s</parent></label>"
        "<label><name>m</name></label></labels></task></meta>"
        f'<image id="0" name="a.png" width="8" height="8">{body}</image></annotations>'
    )
    return zip_of(tmp / "in.zip", {"annotations.xml": xml, "images/a.png": png()})


def test_cvat_skeleton_point_with_two_points_is_refused(tmp_path: Path) -> None:
    src = cvat(tmp_path, '<skeleton label="s"><points label="a" points="1,1;2,2"/></skeleton>')
    refused(tmp_path, src, expect=("must hold one point", "annotations.xml", "a.png"))


def test_cvat_skeleton_point_of_an_undeclared_name_is_refused(tmp_path: Path) -> None:
    src = cvat(tmp_path, '<skeleton label="s"><points label="zz" points="1,1"/></skeleton>')
    refused(tmp_path, src, expect=("'zz'", "does not declare", "a.png"))


def test_cvat_points_that_are_not_numbers_are_refused(tmp_path: Path) -> None:
    src = cvat(tmp_path, '<points label="m" points="1,1;x,2"/>')
    refused(tmp_path, src, expect=("malformed points", "a.png"))


def test_cvat_points_of_huge_k_are_a_max_keypoints_error(tmp_path: Path) -> None:
    points = ";".join(f"{i % 7},{i % 5}" for i in range(5000))
    src = cvat(tmp_path, f'<points label="m" points="{points}"/>')
    refused(tmp_path, src, expect=("max_keypoints", "a.png"))


def _tfrecord(tmp: Path, **lists: list[Any]) -> Path:
    item = Item(
        name="a.png", width=8, height=8, image=png(), image_format="png",
        objects=(Annotation(label="p", label_id=1, box=Box(0, 0, 1, 1),
                            keypoints=(Point(0.5, 0.5, 2, "a"), Point(0.1, 0.1, 2, "b"))),),
    )  # fmt: skip
    ex = Example.FromString(encode_example(item))
    feats = ex.features.feature  # type: ignore[attr-defined]
    for short, values in lists.items():
        key = f"image/object/keypoint/{short}"
        del feats[key]
        kind = "float_list" if short in ("x", "y") else "int64_list"
        getattr(feats[key], kind).value.extend(values)
    buf = io.BytesIO()
    with RecordWriter(buf) as w:
        w.write(ex.SerializeToString())
    return zip_of(tmp / "in.zip", {"train.tfrecord": buf.getvalue()})


def test_tfrecord_keypoint_y_shorter_than_x_is_refused_naming_the_key(tmp_path: Path) -> None:
    src = _tfrecord(tmp_path, y=[0.5])
    refused(tmp_path, src, expect=("image/object/keypoint/y", "has 1 values", "train.tfrecord"))


def test_tfrecord_keypoint_counts_not_one_per_object_are_refused(tmp_path: Path) -> None:
    src = _tfrecord(tmp_path, num=[1, 1, 1])
    refused(tmp_path, src, expect=("image/object/keypoint/num", "the record has 1 boxes"))


# --- outside attack on the keypoint layout --------------------------------------------------


def test_padding_one_big_skeleton_over_many_objects_is_a_limit_error_naming_the_item(
    tmp_path: Path,
) -> None:
    # a 1024-point skeleton and 200 objects listing one point each: 204,800 slots in one record
    meta = "".join(f"<label><name>p{i}</name><type>points</type><parent>s</parent></label>"
                   for i in range(1024))  # fmt: skip
    one = '<skeleton label="s"><points label="p0" points="1,1"/></skeleton>'
    xml = (
        "<annotations><version>1.1</version><meta><task><labels>"
        f"<label><name>s</name><type>skeleton</type></label>{meta}</labels></task></meta>"
        f'<image id="0" name="a.png" width="8" height="8">{one * 200}</image></annotations>'
    )
    src = zip_of(tmp_path / "in.zip", {"annotations.xml": xml, "images/a.png": png()})
    refused(tmp_path, src, expect=("max_values_per_feature", "a.png"))


def test_padding_boxes_to_a_big_k_is_a_limit_error_before_encoding(tmp_path: Path) -> None:
    doc = {
        "categories": [{"id": 1, "name": "person", "keypoints": [f"k{i}" for i in range(1000)]},
                       {"id": 2, "name": "box"}],
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "annotations": [{"id": n, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2]}
                        for n in range(1, 201)],
    }  # fmt: skip
    src = zip_of(tmp_path / "in.zip", {ANN: json.dumps(doc), "images/a.png": png()})
    refused(tmp_path, src, expect=("max_values_per_feature", "a.png"))


def test_a_meta_declaring_a_sub_label_twice_is_refused_naming_it(tmp_path: Path) -> None:
    xml = (
        "<annotations><version>1.1</version><meta><task><labels>"
        "<label><name>s</name><type>skeleton</type></label>"
        "<label><name>p</name><type>points</type><parent>s</parent></label>"
        "<label><name>p</name><type>points</type><parent>s</parent></label>"
        "</labels></task></meta></annotations>"
    )
    src = zip_of(tmp_path / "in.zip", {"annotations.xml": xml})
    refused(tmp_path, src, expect=("'s'", "'p' twice", "annotations.xml"))


def test_coco_keypoint_names_that_repeat_are_refused_for_cvat_not_as_a_bug(
    tmp_path: Path,
) -> None:
    src = coco(tmp_path, [1, 1, 2, 3, 3, 2], names=["a", "a"])
    run = refused(tmp_path, src, ("--to", "cvat"), expect=("'a' twice", "a.png"))
    assert "bug" not in run.stderr


def test_a_pinned_map_with_other_keypoint_names_is_refused_naming_them(tmp_path: Path) -> None:
    pin = tmp_path / "pin.pbtxt"
    pin.write_text("item { id: 1 name: 'person' keypoints { id: 0 label: 'a' } }\n")
    src = coco(tmp_path, [1, 1, 2, 3, 3, 2])
    run = refused(tmp_path, src, ("--to", "tfrecord", "--label-map", str(pin)),
                  expect=("'person'", "'a', 'b'"))  # fmt: skip
    assert "bug" not in run.stderr


def test_tfrecord_infinite_keypoint_is_refused_naming_record_key_and_object(
    tmp_path: Path,
) -> None:
    src = _tfrecord(tmp_path, x=[float("inf"), 0.5])
    refused(tmp_path, src, ("--to", "coco"),
            expect=("record 0", "image/object/keypoint/x", "object 0", "inf"))  # fmt: skip


def test_tfrecord_keypoint_name_not_utf8_is_refused_naming_the_record(tmp_path: Path) -> None:
    item = Item(
        name="a.png", width=8, height=8, image=png(), image_format="png",
        objects=(Annotation(label="p", label_id=1, box=Box(0, 0, 1, 1),
                            keypoints=(Point(0.5, 0.5, 2, "a"),)),),
    )  # fmt: skip
    ex = Example.FromString(encode_example(item))
    text = ex.features.feature["image/object/keypoint/text"].bytes_list  # type: ignore[attr-defined]
    text.value[0] = b"\xff\xfe"
    buf = io.BytesIO()
    with RecordWriter(buf) as w:
        w.write(ex.SerializeToString())
    src = zip_of(tmp_path / "in.zip", {"train.tfrecord": buf.getvalue()})
    refused(tmp_path, src, ("--to", "coco"),
            expect=("record 0", "image/object/keypoint/text", "UTF-8"))  # fmt: skip

"""Keypoints in the Example codec (tfdrop.codec.keypoints, example, schema).

- Objects' keypoints go out as the OD API's flattened ``image/object/keypoint/*`` lists, the
  same K per object (shorter ones padded with visibility 0), ``num`` the labelled count per
  object as TF models' create_coco_tf_record writes it, and come back equal (float32).
- Records without keypoints carry none of those keys.
- Lists that do not fit the objects are a SchemaError naming the key; bad visibilities and
  counts are validate problems; the C all-clear check leaves keypoint records to Python.
- Real TensorFlow parses the keys with VarLenFeature and gets the values back.
"""

from __future__ import annotations

import math
import struct
from types import ModuleType

import pytest

from tfdrop.codec.example import decode_example, encode_example, parse_example, to_item
from tfdrop.codec.keypoints import (
    KP_NUM,
    KP_TEXT,
    KP_VIS,
    KP_X,
    KP_Y,
    encode_keypoints,
    keypoint_losses,
)
from tfdrop.codec.model import (
    Annotation,
    Box,
    Item,
    Keypoint,
    KeypointLayout,
    LabelMap,
    LabelMapItem,
    Point,
)
from tfdrop.codec.proto import Example
from tfdrop.codec.schema import check_parsed, fast_check
from tfdrop.errors import LimitExceededError, SchemaError


def f32(v: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", v))[0])


def _item(*objects: Annotation) -> Item:
    return Item(name="p.jpg", width=640, height=480, image_format="jpeg", objects=objects)


PERSON = Annotation(
    label="person",
    label_id=1,
    box=Box(0.1, 0.2, 0.5, 0.9),
    keypoints=(
        Point(0.15, 0.25, 2, "nose"),
        Point(0.3, 0.31, 1, "left_eye"),
        Point(0.0, 0.0, 0, "right_eye"),
    ),
)
CAR = Annotation(label="car", label_id=2, box=Box(0.6, 0.6, 0.9, 0.8))


def _features(data: bytes) -> dict[str, list[object]]:
    ex = Example.FromString(data)
    out: dict[str, list[object]] = {}
    for key, feat in ex.features.feature.items():  # type: ignore[attr-defined]
        kind = feat.WhichOneof("kind")
        out[key] = list(getattr(feat, kind).value) if kind else []
    return out


def test_keypoints_are_written_flattened_with_the_same_k_per_object() -> None:
    f = _features(encode_example(_item(PERSON, CAR)))
    assert f[KP_X] == [f32(0.15), f32(0.3), 0.0, 0.0, 0.0, 0.0]
    assert f[KP_Y] == [f32(0.25), f32(0.31), 0.0, 0.0, 0.0, 0.0]
    assert f[KP_VIS] == [2, 1, 0, 0, 0, 0]
    assert f[KP_TEXT] == [b"nose", b"left_eye", b"right_eye", b"", b"", b""]
    assert f[KP_NUM] == [2, 0]  # labelled keypoints per object, as create_coco_tf_record


def test_keypoints_come_back_equal_and_padding_is_dropped_again() -> None:
    back = decode_example(encode_example(_item(PERSON, CAR)))
    person, car = back.objects
    assert person.keypoints == tuple(
        Point(f32(p.x), f32(p.y), p.visibility, p.name) for p in PERSON.keypoints
    )
    assert car.keypoints == ()
    # a second pass writes the same bytes
    assert encode_example(back) == encode_example(decode_example(encode_example(back)))


def test_an_unlabelled_keypoint_with_its_name_is_kept() -> None:
    nothing = Annotation(
        label="person", label_id=1, box=Box(0, 0, 1, 1), keypoints=(Point(0, 0, 0, "nose"),)
    )
    (obj,) = decode_example(encode_example(_item(nothing))).objects
    assert obj.keypoints == (Point(0.0, 0.0, 0, "nose"),)


def test_records_without_keypoints_carry_no_keypoint_key() -> None:
    assert not any("keypoint" in k for k in _features(encode_example(_item(CAR))))


def _with(**lists: list[object]) -> bytes:
    ex = Example.FromString(encode_example(_item(PERSON, CAR)))
    feats = ex.features.feature  # type: ignore[attr-defined]
    for short, values in lists.items():
        key = f"image/object/keypoint/{short}"
        del feats[key]
        kind = {"x": "float_list", "y": "float_list", "text": "bytes_list"}.get(short, "int64_list")
        getattr(feats[key], kind).value.extend(values)
    return bytes(ex.SerializeToString())


@pytest.mark.parametrize(
    ("lists", "key", "words"),
    [
        ({"y": [0.1] * 5}, KP_Y, "has 5 values but image/object/keypoint/x has 6"),
        ({"x": [0.1] * 5, "y": [0.1] * 5}, KP_X, "not a multiple of the record's 2 boxes"),
        ({"visibility": [2] * 4}, KP_VIS, "has 4 values but the record has 6 keypoints"),
        ({"text": [b"a"] * 7}, KP_TEXT, "has 7 values but the record has 6 keypoints"),
        ({"num": [1, 1, 1]}, KP_NUM, "has 3 values but the record has 2 boxes"),
    ],
)
def test_keypoint_lists_that_do_not_fit_the_objects_are_refused_naming_the_key(
    lists: dict[str, list[object]], key: str, words: str
) -> None:
    with pytest.raises(SchemaError, match=words) as exc:
        parse_example(_with(**lists))
    assert exc.value.key == key


def test_keypoint_x_without_y_is_refused() -> None:
    ex = Example.FromString(encode_example(_item(PERSON)))
    del ex.features.feature[KP_Y]  # type: ignore[attr-defined]
    with pytest.raises(SchemaError, match="present without image/object/keypoint/y"):
        parse_example(ex.SerializeToString())


def test_bad_visibilities_and_counts_are_problems_and_not_all_clear() -> None:
    data = _with(visibility=[2, 1, 7, 0, 0, 0], num=[2, 9])
    problems = check_parsed(parse_example(data, strict=True), verify_sha256=False)
    assert [(p.key, p.obj) for p in problems] == [(KP_VIS, 0), (KP_NUM, 1)]
    assert "visibility 7 is not 0, 1 or 2" in problems[0].message
    assert fast_check(data, verify_sha256=False) is None


def test_a_clean_keypoint_record_has_no_problems() -> None:
    data = encode_example(_item(PERSON, CAR))
    assert check_parsed(parse_example(data, strict=True), verify_sha256=False) == []


@pytest.mark.interop
def test_tensorflow_parses_the_keypoint_keys(tf: ModuleType) -> None:
    data = encode_example(_item(PERSON, CAR))
    var = tf.io.VarLenFeature
    desc = {
        KP_X: var(tf.float32),
        KP_Y: var(tf.float32),
        KP_VIS: var(tf.int64),
        KP_TEXT: var(tf.string),
        KP_NUM: var(tf.int64),
    }
    got = {
        k: tf.sparse.to_dense(v).numpy().tolist()
        for k, v in tf.io.parse_single_example(data, desc).items()
    }
    assert got[KP_X] == [f32(0.15), f32(0.3), 0.0, 0.0, 0.0, 0.0]
    assert got[KP_Y] == [f32(0.25), f32(0.31), 0.0, 0.0, 0.0, 0.0]
    assert got[KP_VIS] == [2, 1, 0, 0, 0, 0]
    assert got[KP_TEXT] == [b"nose", b"left_eye", b"right_eye", b"", b"", b""]
    assert got[KP_NUM] == [2, 0]
    # the OD API's reshape: [objects, num_keypoints]
    assert tf.reshape(got[KP_X], [-1, 3]).shape == (2, 3)


# --- the dataset's one num_keypoints axis (outside attack, findings 1-6) ----------------------

FACE_PERSON = LabelMap(
    (
        LabelMapItem(1, "face", keypoints=(Keypoint(0, "left_eye"), Keypoint(1, "right_eye"))),
        LabelMapItem(2, "person", keypoints=(Keypoint(2, "nose"), Keypoint(3, "neck"))),
        LabelMapItem(3, "car"),
    )
)
FACE = Annotation(
    label="face",
    label_id=1,
    box=Box(0.1, 0.1, 0.2, 0.2),
    keypoints=(Point(0.11, 0.12, 2, "left_eye"), Point(0.0, 0.0, 0, "right_eye")),
)


def test_the_label_maps_global_ids_are_the_slots_of_one_axis() -> None:
    layout = FACE_PERSON.keypoint_layout
    assert layout is not None
    assert (layout.total, layout.slots) == (4, {"face": (0, 1), "person": (2, 3)})
    f = _features(encode_example(_item(FACE, CAR), layout))
    # every object carries all 4 slots, its own label's filled (the OD API's layout)
    assert f[KP_X] == [f32(0.11), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert f[KP_TEXT] == [b"left_eye", b"right_eye", b"nose", b"neck"] * 2
    assert f[KP_NUM] == [1, 0]


def test_a_record_without_keypoint_objects_still_carries_the_slots() -> None:
    f = _features(encode_example(_item(CAR), FACE_PERSON.keypoint_layout))
    assert (f[KP_X], f[KP_VIS], f[KP_NUM]) == ([0.0] * 4, [0] * 4, [0])


def test_a_dataset_without_keypoints_is_written_as_before() -> None:
    assert encode_example(_item(CAR), None) == encode_example(_item(CAR))
    assert KP_X not in _features(encode_example(_item(CAR)))


def test_slots_are_read_back_by_label_and_a_trailing_unlabelled_keypoint_is_kept() -> None:
    data = encode_example(_item(FACE, CAR), FACE_PERSON.keypoint_layout)
    face, car = decode_example(data, label_map=FACE_PERSON).objects
    # right_eye is (0, 0, v=0): no longer mistaken for padding
    assert face.keypoints == (Point(f32(0.11), f32(0.12), 2, "left_eye"),
                              Point(0.0, 0.0, 0, "right_eye"))  # fmt: skip
    assert car.keypoints == ()


def test_the_padding_is_bounded_before_any_list_is_built() -> None:
    layout = KeypointLayout({"face": tuple(range(1000))}, ("",) * 1000)
    with pytest.raises(LimitExceededError, match="max_values_per_feature") as exc:
        encode_keypoints([CAR] * 200, layout, max_values=100_000)
    assert exc.value.value == 200_000


def test_a_label_map_whose_keypoint_ids_repeat_has_no_layout() -> None:
    old = LabelMap((LabelMapItem(1, "a", keypoints=(Keypoint(0, "x"),)),
                    LabelMapItem(2, "b", keypoints=(Keypoint(0, "y"),))))  # fmt: skip
    assert old.keypoint_layout is None


def _record(**lists: list[object]) -> bytes:
    ex = Example.FromString(encode_example(_item(CAR)))
    feats = ex.features.feature  # type: ignore[attr-defined]
    for key, values in lists.items():
        full = f"image/object/keypoint/{key}"
        kind = {"x": "float_list", "y": "float_list", "text": "bytes_list"}.get(key, "int64_list")
        getattr(feats[full], kind).value.extend(values)
    return ex.SerializeToString()


def test_a_nan_keypoint_is_unlabelled_and_counted_when_visibility_said_labelled() -> None:
    p = parse_example(_record(x=[math.nan, 0.5], y=[0.1, 0.5], visibility=[2, 2]))
    item = to_item(p)
    assert item.objects[0].keypoints == (Point(0.0, 0.0, 0, ""), Point(0.5, 0.5, 2, ""))
    assert keypoint_losses(p.keypoints, p.num_objects) == {"keypoint_nan": 1}
    assert check_parsed(p, verify_sha256=False) == []


def test_a_nan_keypoint_without_visibility_is_simply_unlabelled() -> None:
    p = parse_example(_record(x=[math.nan], y=[math.nan]))
    assert to_item(p).objects[0].keypoints == (Point(0.0, 0.0, 0, ""),)
    assert keypoint_losses(p.keypoints, p.num_objects) == {}


def test_an_infinite_keypoint_and_a_name_that_is_not_utf8_are_problems() -> None:
    p = parse_example(_record(x=[math.inf], y=[0.1], text=[b"\xff\xfe"]))
    problems = check_parsed(p, verify_sha256=False)
    assert [(pr.key, pr.obj) for pr in problems] == [(KP_X, 0), (KP_TEXT, 0)]
    assert "inf" in problems[0].message
    assert "UTF-8" in problems[1].message

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

import struct
from types import ModuleType

import pytest

from tfdrop.codec.example import decode_example, encode_example, parse_example
from tfdrop.codec.keypoints import KP_NUM, KP_TEXT, KP_VIS, KP_X, KP_Y
from tfdrop.codec.model import Annotation, Box, Item, Point
from tfdrop.codec.proto import Example
from tfdrop.codec.schema import check_parsed, fast_check
from tfdrop.errors import SchemaError


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

"""Schema checks (tfdrop.codec.schema), one rule at a time (SPEC.md "Schema checks").

Each rule has a good record that passes and records that break it, with the key and object the
problem names. Where the C all-clear check is built, it must never pass a record the full check
faults (``fast_check`` answers ``None`` for every bad record here, a count for good ones).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tfdrop.codec import wire
from tfdrop.codec.example import (
    AREA,
    DIFFICULT,
    ENCODED,
    FILENAME,
    FORMAT,
    HEIGHT,
    LABEL,
    MASK,
    SHA256,
    TEXT,
    WIDTH,
    XMAX,
    XMIN,
    YMAX,
    YMIN,
    parse_example,
)
from tfdrop.codec.labeltable import LabelTable
from tfdrop.codec.model import LabelMap, LabelMapItem
from tfdrop.codec.proto import Example
from tfdrop.codec.schema import Problem, check_parsed, fast_check
from tfdrop.errors import LimitExceededError, SchemaError

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 12 + b"\x00\x00\x00\x00IEND\xaeB`\x82"
JPEG = b"\xff\xd8\xff\xda\x00\x02 a small jpeg\xff\xd9"  # its start of scan, data, end
LM = LabelMap.from_names(["cat", "dog"])
LM_BG = LabelMap((LabelMapItem(0, "background"), LabelMapItem(1, "cat"), LabelMapItem(2, "dog")))


def record(**changes: Any) -> bytes:
    """A good two-object record; keyword ``a__b`` sets feature ``image/a/b`` (None removes)."""
    feats: dict[str, Any] = {
        FILENAME: [b"a.jpg"],
        HEIGHT: [480],
        WIDTH: [640],
        ENCODED: [JPEG],
        SHA256: [hashlib.sha256(JPEG).hexdigest().encode()],
        XMIN: [0.0, 0.25],
        XMAX: [0.5, 1.0],
        YMIN: [0.1, 0.0],
        YMAX: [0.1, 1.0],  # a zero-height box is allowed (min <= max)
        LABEL: [1, 2],
        TEXT: [b"cat", b"dog"],
        DIFFICULT: [0, 1],
    }
    for name, value in changes.items():
        key = "image/" + name.replace("__", "/")
        if value is None:
            feats.pop(key, None)
        else:
            feats[key] = value
    ex = Example()
    f = ex.features.feature  # type: ignore[attr-defined]
    for key, values in feats.items():
        if values and isinstance(values[0], bytes):
            f[key].bytes_list.value.extend(values)
        elif values and isinstance(values[0], float):
            f[key].float_list.value.extend(values)
        elif values:
            f[key].int64_list.value.extend(values)
        else:
            f[key].SetInParent()
    return bytes(ex.SerializeToString())


def problems(
    data: bytes, label_map: LabelMap | None = None, *, need_both: bool = True
) -> list[Problem]:
    found = check_parsed(parse_example(data), label_map, need_both=need_both)
    if wire.HAVE_C and found:
        # the C all-clear check may never call a faulty record valid
        assert fast_check(data, label_map) is None
    return found


def one(data: bytes, label_map: LabelMap | None = None, *, need_both: bool = True) -> Problem:
    found = problems(data, label_map, need_both=need_both)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("label_map", [None, LM, LM_BG])
def test_the_good_record_has_no_problem(label_map: LabelMap | None) -> None:
    assert problems(record(), label_map) == []
    if wire.HAVE_C:
        assert fast_check(record(), label_map) == 2


def test_a_record_without_objects_is_valid() -> None:
    data = record(
        object__bbox__xmin=[],
        object__bbox__xmax=[],
        object__bbox__ymin=[],
        object__bbox__ymax=[],
        object__class__label=[],
        object__class__text=[],
        object__difficult=[],
    )
    assert problems(data, LM) == []


# --- list lengths -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("object__class__label", LABEL),
        ("object__class__text", TEXT),
        ("object__difficult", DIFFICULT),
        ("object__bbox__ymax", YMAX),
        ("object__area", AREA),
    ],
)
def test_per_object_list_of_another_length_is_a_schema_error(name: str, key: str) -> None:
    value: list[Any] = [0.5] if key in (YMAX, AREA) else [b"cat"] if key == TEXT else [1]
    with pytest.raises(SchemaError) as info:
        parse_example(record(**{name: value * 3}))
    # a longer box list sets the object count, so then another coordinate is the odd one
    assert info.value.key == key or (key == YMAX and info.value.key in (XMIN, XMAX, YMIN))
    with pytest.raises(SchemaError):
        parse_example(record(**{name: value}))


def test_a_missing_box_coordinate_is_a_problem() -> None:
    p = one(record(object__bbox__ymin=None))
    assert p.key == YMIN


def test_labels_without_boxes_is_a_schema_error() -> None:
    data = record(
        object__bbox__xmin=None,
        object__bbox__xmax=None,
        object__bbox__ymin=None,
        object__bbox__ymax=None,
    )
    with pytest.raises(SchemaError):
        parse_example(data)


def test_boxes_without_class_id_or_text_is_a_problem() -> None:
    p = one(record(object__class__label=None, object__class__text=None))
    assert p.key == LABEL
    assert "neither" in p.message
    # a reader fills the other one in (need_both=False)
    assert problems(record(object__class__label=None), LM, need_both=False) == []
    assert problems(record(object__class__text=None), LM, need_both=False) == []


@pytest.mark.parametrize("label_map", [None, LM])
def test_boxes_with_only_class_text_or_only_class_label_are_a_problem(
    label_map: LabelMap | None,
) -> None:
    # the OD API's decoder reads both; validate names the one that is missing
    p = one(record(object__class__label=None), label_map)
    assert p.key == LABEL
    assert "missing while image/object/class/text is present" in p.message
    p = one(record(object__class__text=None), label_map)
    assert p.key == TEXT
    assert "missing while image/object/class/label is present" in p.message


# --- boxes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", [math.nan, math.inf, -math.inf, -0.01, 1.0001, 2.0, -1e-30], ids=repr
)
@pytest.mark.parametrize(
    ("name", "key"), [("object__bbox__xmin", XMIN), ("object__bbox__ymax", YMAX)]
)
def test_a_coordinate_outside_0_1_is_a_problem_naming_key_and_object(
    bad: float, name: str, key: str
) -> None:
    good = record()
    values = [0.0, 0.25] if key == XMIN else [0.1, 1.0]
    values[1] = bad
    found = problems(record(**{name: values}))
    assert found, f"{bad!r} passed"
    assert found[0].key == key
    assert found[0].obj == 1
    assert problems(good) == []


def test_edges_0_and_1_and_negative_zero_are_inside() -> None:
    data = record(
        object__bbox__xmin=[-0.0, 0.0],
        object__bbox__xmax=[1.0, 0.0],
        object__bbox__ymin=[0.0, 1.0],
        object__bbox__ymax=[1.0, 1.0],
    )
    assert problems(data) == []


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"object__bbox__xmin": [0.6, 0.25]}, XMIN),  # 0.6 > xmax 0.5
        ({"object__bbox__ymin": [0.1, 0.5], "object__bbox__ymax": [0.1, 0.4]}, YMIN),
    ],
)
def test_min_greater_than_max_is_a_problem(changes: dict[str, Any], key: str) -> None:
    p = one(record(**changes))
    assert p.key == key
    assert ">" in p.message


# --- ids and the label map --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, -(2**63)])
def test_an_id_below_1_is_a_problem(bad: int) -> None:
    p = one(record(object__class__label=[1, bad]))
    assert (p.key, p.obj) == (LABEL, 1)
    p = one(record(object__class__label=[1, bad], object__class__text=None), LM, need_both=False)
    assert (p.key, p.obj) == (LABEL, 1)


def test_id_0_is_allowed_when_the_label_map_has_background() -> None:
    data = record(object__class__label=[1, 0], object__class__text=[b"cat", b"background"])
    assert problems(data, LM_BG) == []
    assert {(p.key, p.obj) for p in problems(data, LM)} == {(LABEL, 1), (TEXT, 1)}


def test_text_and_id_disagreeing_with_the_label_map_is_a_problem() -> None:
    p = one(record(object__class__label=[2, 2]), LM)  # "cat" is 1
    assert (p.key, p.obj) == (LABEL, 0)
    assert "'cat' id 1" in p.message
    assert problems(record(object__class__label=[2, 2])) == []  # no map: nothing to compare


def test_text_not_in_the_label_map_is_a_problem() -> None:
    p = one(record(object__class__text=[b"cat", b"fox"]), LM)
    assert (p.key, p.obj) == (TEXT, 1)
    assert "fox" in p.message


def test_id_not_in_the_label_map_is_a_problem() -> None:
    p = one(record(object__class__label=[1, 7], object__class__text=None), LM, need_both=False)
    assert (p.key, p.obj) == (LABEL, 1)
    assert "7" in p.message


def test_display_name_and_repeated_names_are_matched_like_tf_models() -> None:
    lm = LabelMap(
        (
            LabelMapItem(1, "NA", display_name="person"),
            LabelMapItem(2, "NA", display_name="bicycle"),
        )
    )
    assert problems(record(object__class__text=[b"person", b"bicycle"]), lm) == []
    assert one(record(object__class__text=[b"person", b"NA"]), lm).key == TEXT


# --- image key and masks ----------------------------------------------------------------------


def test_sha256_that_does_not_match_the_image_is_a_problem() -> None:
    p = one(record(key__sha256=[hashlib.sha256(b"other").hexdigest().encode()]))
    assert p.key == SHA256
    upper = hashlib.sha256(JPEG).hexdigest().upper().encode()
    assert problems(record(key__sha256=[upper])) == []
    assert problems(record(key__sha256=None)) == []
    assert problems(record(encoded=None)) == []  # nothing to hash


def test_a_mask_that_is_not_png_is_a_problem() -> None:
    assert problems(record(object__mask=[PNG, PNG])) == []
    p = one(record(object__mask=[PNG, JPEG]))
    assert (p.key, p.obj) == (MASK, 1)
    p = one(record(object__mask=[b"", PNG]))
    assert (p.key, p.obj) == (MASK, 0)


def test_numerical_masks_are_not_checked_as_png() -> None:
    # TF's NUMERICAL_MASKS (a float list) is kept as an unknown key, not an error
    data = record(object__mask=[0.0, 1.0, 1.0, 0.0])
    assert problems(data) == []
    assert [k for k, _ in parse_example(data).extra] == [MASK]


# --- image size -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "key"), [("height", HEIGHT), ("width", WIDTH)])
@pytest.mark.parametrize("bad", [None, [0], [-5], []])
def test_missing_or_non_positive_image_size_is_a_problem(
    name: str, key: str, bad: list[int] | None
) -> None:
    assert one(record(**{name: bad})).key == key


@pytest.mark.parametrize("label_map", [None, LM])
def test_class_text_that_is_not_utf8_is_a_problem(label_map: LabelMap | None) -> None:
    # the readers refuse such a label; validate once called the record valid
    p = one(record(object__class__text=[b"cat", b"caf\xe9"]), label_map)
    assert (p.key, p.obj) == (TEXT, 1)
    assert "UTF-8" in p.message
    assert problems(record(object__class__text=[b"cat", "caf\u00e9".encode()])) == []


# --- the embedded image's header (found by the outside attack) -----------------------------


def jpeg(width: int, height: int) -> bytes:
    """A JPEG's segments: APP0, a baseline start-of-frame with the size, a start of scan,
    its data, the end of image."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0\x00\x11\x08" + height.to_bytes(2, "big") + width.to_bytes(2, "big")
    sof += b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof + b"\xff\xda\x00\x02scan data\xff\xd9"


def png(width: int, height: int) -> bytes:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00"
    iend = b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + ihdr + b"\x00\x00\x00\x00" + iend


def with_image(image: bytes, fmt: bytes, **changes: Any) -> bytes:
    return record(encoded=[image], format=[fmt], key__sha256=None, **changes)


@pytest.mark.parametrize("image", [jpeg(640, 480), png(640, 480)], ids=["jpeg", "png"])
def test_an_image_whose_header_matches_height_and_width_is_valid(image: bytes) -> None:
    fmt = b"png" if image.startswith(b"\x89PNG") else b"jpeg"
    assert problems(with_image(image, fmt)) == []
    if wire.HAVE_C:
        assert fast_check(with_image(image, fmt)) == 2


@pytest.mark.parametrize("image", [jpeg(640, 481), png(640, 481)], ids=["jpeg", "png"])
def test_image_height_that_disagrees_with_the_image_header_is_a_problem(image: bytes) -> None:
    fmt = b"png" if image.startswith(b"\x89PNG") else b"jpeg"
    p = one(with_image(image, fmt))
    assert p.key == HEIGHT
    assert "is 480 but the image is 481 pixels high" in p.message
    p = one(with_image(image, fmt, height=[481], width=[64]))
    assert p.key == WIDTH
    assert "is 64 but the image is 640 pixels wide" in p.message


@pytest.mark.parametrize("fmt", [b"jpg", b"JPEG", b"bmp", b"raw"])
def test_image_format_other_than_jpeg_or_png_is_a_problem(fmt: bytes) -> None:
    p = one(with_image(jpeg(640, 480), fmt))
    assert p.key == FORMAT
    assert "is not 'jpeg' or 'png'" in p.message


def test_a_png_labelled_jpeg_is_a_problem() -> None:
    p = one(with_image(png(640, 480), b"jpeg"))
    assert p.key == FORMAT
    assert "says 'jpeg' but image/encoded is a PNG image" in p.message
    assert one(with_image(jpeg(640, 480), b"png")).key == FORMAT


def test_image_encoded_that_is_not_an_image_is_a_problem() -> None:
    p = one(with_image(b"GIF89a....", b"jpeg"))
    assert p.key == ENCODED
    assert "neither a JPEG nor a PNG" in p.message
    assert problems(with_image(b"", b"jpeg")) == []  # no image kept: nothing to check


@pytest.mark.parametrize("image", [jpeg(640, 480), png(640, 480)], ids=["jpeg", "png"])
def test_an_image_cut_before_its_end_marker_is_a_problem_and_bytes_after_it_are_not(
    image: bytes,
) -> None:
    """TensorFlow's decode_image refuses a JPEG without its EOI and a PNG without IEND, and
    takes bytes after them: validate says the same, with and without the C all-clear check
    (which walks the markers and chunks the same way)."""
    fmt = b"png" if image.startswith(b"\x89PNG") else b"jpeg"
    marker = 12 if fmt == b"png" else 2
    p = one(with_image(image[:-marker], fmt))
    assert p.key == ENCODED
    assert f"is a {fmt.decode().upper()} image cut short (it has no end marker)" in p.message
    trailing = with_image(image + b"\x00 trailing bytes", fmt)
    assert problems(trailing) == []
    # the C check walks a PNG's chunks and a JPEG's markers as the Python one does
    assert fast_check(trailing) == (2 if wire.HAVE_C else None)
    if wire.HAVE_C:
        assert fast_check(with_image(image, fmt)) == 2


def test_a_mask_of_another_size_than_the_image_is_a_problem() -> None:
    assert problems(record(object__mask=[png(640, 480), png(640, 480)])) == []
    p = one(record(object__mask=[png(640, 480), png(480, 640)]))
    assert (p.key, p.obj) == (MASK, 1)
    assert "instance mask is 480x640 but the image is 640x480" in p.message


def test_image_checks_are_skipped_when_the_image_is_not_verified() -> None:
    data = with_image(png(1, 1), b"bmp", object__mask=[png(2, 2), png(2, 2)])
    assert check_parsed(parse_example(data), verify_sha256=False) == []
    assert {p.key for p in check_parsed(parse_example(data))} == {FORMAT, HEIGHT, WIDTH, MASK}


# --- ids and texts across records (codec.labeltable) ------------------------------------------


def test_the_label_table_names_contradictions_and_respects_max_labels() -> None:
    table = LabelTable(max_labels=2)
    assert table.observe([b"cat", b"dog"], [1, 2], "record 0") == []
    assert table.observe([b"", b"cat"], [0, 1], "record 1") == []  # unlabeled: left out
    (p,) = table.observe([b"fox"], [1], "record 2")
    assert (p.key, p.obj) == (TEXT, 0)
    assert "id 1 is 'fox' here but 'cat' in record 0" in p.message
    (p,) = table.observe([b"cat"], [3], "record 3")
    assert (p.key, p.obj) == (LABEL, 0)
    with pytest.raises(LimitExceededError, match="max_labels is 2"):
        table.observe([b"bird"], [3], "record 4")


class _NothingKnown:
    """Stands in for LabelTable.known: no record takes the one-set-operation path."""

    def __ge__(self, other: object) -> bool:
        return False

    def add(self, pair: object) -> None:
        pass


_LABEL_RECORDS = st.lists(
    st.lists(st.tuples(st.sampled_from([b"", b"cat", b"dog", b"fox"]), st.integers(0, 3))),
    max_size=12,
)


@given(records=_LABEL_RECORDS)
def test_the_label_tables_shortcut_says_what_the_loop_says(
    records: list[list[tuple[bytes, int]]],
) -> None:
    fast, slow = LabelTable(max_labels=3), LabelTable(max_labels=3)
    slow.known = _NothingKnown()  # type: ignore[assignment]
    for n, objs in enumerate(records):
        texts, ids = [t for t, _ in objs], [i for _, i in objs]
        got = []
        for table in (fast, slow):
            try:
                got.append(table.observe(texts, ids, f"record {n}"))
            except LimitExceededError as exc:
                got.append([exc.message])  # type: ignore[list-item]
        assert got[0] == got[1]
        assert fast.ids == slow.ids
        assert fast.texts == slow.texts

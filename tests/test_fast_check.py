"""The C all-clear check (``schema.fast_check``) never calls a faulty record valid.

``fast_check`` may answer ``None`` for a valid record (the full path then decides), but a
number only when :func:`parse_example` + :func:`check_parsed` find no problem; it must agree
on the object count. Records are generated around every schema rule's edges, then mutated at
the protobuf level (types changed, keys dropped, lists lengthened).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tfdrop.codec import wire
from tfdrop.codec.example import encode_example, parse_example
from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.codec.proto import Example
from tfdrop.codec.schema import check_parsed, fast_check
from tfdrop.errors import TfdropError

pytestmark = pytest.mark.skipif(not wire.HAVE_C, reason="built without the C accelerator")

LABELS = LabelMap.from_names(["cat", "dog", "bird"])
EDGES = [0.0, -0.0, 0.25, 1.0, 1.0000001, -1e-9, math.nan, math.inf, -math.inf]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8

coords = st.one_of(st.sampled_from(EDGES), st.floats(0, 1, width=32))
objects = st.builds(
    Annotation,
    label=st.sampled_from(["cat", "dog", "bird", "fox", ""]),
    box=st.builds(Box, coords, coords, coords, coords),
    label_id=st.sampled_from([1, 2, 3, 4, 0, -1]),
    difficult=st.booleans(),
    mask=st.sampled_from([None, PNG]),
)


def _items() -> st.SearchStrategy[Item]:
    return st.builds(
        Item,
        name=st.sampled_from(["a.jpg", "b/c.png", ""]),
        width=st.sampled_from([0, -3, 640]),
        height=st.sampled_from([0, 480]),
        image=st.sampled_from([None, b"jpegbytes"]),
        image_format=st.just("jpeg"),
        sha256=st.sampled_from(["", "00", "D7F5" * 16]),
        objects=st.lists(objects, max_size=4).map(tuple),
    )


def _full_path(data: bytes, label_map: LabelMap | None) -> tuple[int, list[object]]:
    try:
        parsed = parse_example(data)
    except TfdropError as exc:
        return -1, [exc]
    return parsed.num_objects, list(check_parsed(parsed, label_map))


def _mutate(data: bytes, choice: int, key_index: int) -> bytes:
    ex = Example.FromString(data)
    feats = ex.features.feature  # type: ignore[attr-defined]
    keys = sorted(feats.keys())
    if not keys:
        return data
    key = keys[key_index % len(keys)]
    if choice == 0:
        del feats[key]
    elif choice == 1:
        feats[key].ClearField(feats[key].WhichOneof("kind") or "bytes_list")
        feats[key].int64_list.value.append(7)
    elif choice == 2:
        feats[key].ClearField(feats[key].WhichOneof("kind") or "bytes_list")
        feats[key].float_list.value.append(0.5)
    else:
        feats[key].bytes_list.value.append(b"\xff\xfe")
    return bytes(ex.SerializeToString())


@settings(max_examples=500, deadline=None)
@given(
    item=_items(),
    mutate=st.none() | st.tuples(st.integers(0, 3), st.integers(0, 40)),
    pinned=st.booleans(),
)
def test_fast_check_never_passes_a_record_the_full_check_faults(
    item: Item, mutate: tuple[int, int] | None, pinned: bool
) -> None:
    try:
        data = encode_example(item)
    except TfdropError:
        return  # mixed masks: not encodable, nothing to check
    if mutate is not None:
        data = _mutate(data, *mutate)
    label_map = LABELS if pinned else None
    fast = fast_check(data, label_map)
    n, problems = _full_path(data, label_map)
    if fast is not None:
        assert problems == []
        assert fast == n


def test_fast_check_passes_ordinary_valid_records() -> None:
    objs = tuple(
        Annotation(label=name, label_id=i, box=Box(0.1, 0.2, 0.5, 0.9))
        for i, name in enumerate(["cat", "dog", "bird"], start=1)
    )
    item = Item(name="x.jpg", width=64, height=48, image=b"\xff\xd8img", image_format="jpeg")
    data = encode_example(Item(**{**_fields(item), "objects": objs}))
    assert fast_check(data, LABELS) == 3
    assert fast_check(data, None) == 3


def test_fast_check_rejects_a_wrong_sha256() -> None:
    item = Item(name="x.jpg", width=4, height=4, image=None, sha256="ab" * 32)
    data = encode_example(item)
    assert fast_check(data) == 0  # no image embedded: nothing to compare
    ex = Example.FromString(encode_example(Item(name="x.jpg", width=4, height=4, image=b"i")))
    ex.features.feature["image/key/sha256"].bytes_list.value[0] = b"ab" * 32  # type: ignore[attr-defined]
    assert fast_check(bytes(ex.SerializeToString())) is None


def _fields(item: Item) -> dict[str, object]:
    return {name: getattr(item, name) for name in item.__slots__}

"""Example <-> Item mapping (tfdrop.codec.example): round trips, unknown keys, bad input.

- Random items survive ``encode_example`` -> ``decode_example`` (boxes and areas as the float32
  values the wire holds; ``image/key/sha256`` recomputed from an embedded image).
- Features tfdrop does not know pass through byte for byte.
- Any byte string either parses or raises a :class:`tfdrop.errors.TfdropError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layout_cases import CASES, Case, base, entry, example
from tfdrop.codec import example as ex_mod
from tfdrop.codec import wire
from tfdrop.codec.example import (
    LABEL,
    XMIN,
    decode_example,
    encode_example,
    parse_example,
    to_item,
)
from tfdrop.codec.model import Annotation, Box, Item, LabelMap, Shape
from tfdrop.codec.proto import Example, Feature
from tfdrop.errors import ExampleError, SchemaError, TfdropError

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 12 + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def f32(v: float) -> float:
    """The value a float32 list holds for ``v``."""
    return float(struct.unpack("<f", struct.pack("<f", v))[0])


def f32_box(b: Box) -> Box:
    return Box(f32(b.xmin), f32(b.ymin), f32(b.xmax), f32(b.ymax))


# --- strategies -------------------------------------------------------------------------------

text = st.text(max_size=20)  # hypothesis leaves out lone surrogates: Item text is valid Unicode
coord = st.floats(min_value=0.0, max_value=1.0)
int64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def items(draw: st.DrawFn) -> Item:
    n = draw(st.integers(0, 5))
    with_masks = draw(st.booleans())
    with_area = draw(st.booleans())
    objects = tuple(
        Annotation(
            label=draw(text),
            box=Box(draw(coord), draw(coord), draw(coord), draw(coord)),
            label_id=draw(st.integers(1, 2**40)),
            difficult=draw(st.booleans()),
            truncated=draw(st.booleans()),
            occluded=draw(st.booleans()),
            view=draw(text),
            mask=draw(st.binary(min_size=1, max_size=40)) if with_masks else None,
            is_crowd=draw(st.booleans()),
            area=draw(st.floats(min_value=0, max_value=1e6)) if with_area else None,
            shape=Shape.MASK if with_masks else Shape.BOX,
        )
        for _ in range(n)
    )
    image = draw(st.none() | st.binary(min_size=1, max_size=64))
    return Item(
        name=draw(text),
        subset=draw(st.sampled_from(["default", "train"])),
        width=draw(int64),
        height=draw(int64),
        image=image,
        image_format=draw(st.sampled_from(["", "jpeg", "png"])),
        source_id=draw(text),
        sha256="" if image else draw(st.sampled_from(["", "ab" * 32])),
        objects=objects,
    )


def expected(item: Item) -> Item:
    """What decoding the encoded item gives: float32 values, the image's SHA-256."""
    objects = tuple(
        replace(
            o,
            box=f32_box(o.box),
            area=None if o.area is None else f32(o.area),
        )
        for o in item.objects
    )
    sha = hashlib.sha256(item.image).hexdigest() if item.image else item.sha256
    return replace(item, objects=objects, sha256=sha)


# --- round trips ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(items())
def test_encode_then_decode_gives_the_same_item(item: Item) -> None:
    data = encode_example(item)
    assert decode_example(data, subset=item.subset) == expected(item)


@settings(max_examples=60, deadline=None)
@given(items())
def test_decoding_through_protobuf_only_gives_the_same_item_as_the_fast_path(item: Item) -> None:
    data = encode_example(item)
    feats = ex_mod._features_slow(data)
    fast = wire.parse_features(data)  # protobuf's output is canonical: no fallback
    assert feats.keys() == fast.keys()
    for k in feats:
        assert feats[k][0] == fast[k][0]
        assert feats[k][2] == fast[k][2]


@settings(max_examples=60, deadline=None)
@given(items())
def test_encoded_example_reads_back_with_protobuf_as_the_od_api_keys(item: Item) -> None:
    ex = Example.FromString(encode_example(item))
    f = ex.features.feature  # type: ignore[attr-defined]
    assert f["image/filename"].bytes_list.value == [item.name.encode()]
    assert f["image/height"].int64_list.value == [item.height]
    assert f["image/width"].int64_list.value == [item.width]
    assert list(f["image/object/class/label"].int64_list.value) == [
        o.label_id for o in item.objects
    ]
    assert list(f["image/object/bbox/xmin"].float_list.value) == [
        f32(o.box.xmin) for o in item.objects
    ]
    assert list(f["image/object/class/text"].bytes_list.value) == [
        o.label.encode() for o in item.objects
    ]


def test_item_with_no_objects_writes_empty_per_object_lists_like_the_pascal_script() -> None:
    data = encode_example(Item(name="a.jpg", width=4, height=3))
    f = Example.FromString(data).features.feature  # type: ignore[attr-defined]
    for key in (*ex_mod.BOX_KEYS, ex_mod.LABEL, ex_mod.TEXT):
        assert key in f
        assert len(getattr(f[key], f[key].WhichOneof("kind")).value) == 0
    assert decode_example(data).objects == ()


def test_negative_and_large_int64_values_survive() -> None:
    item = Item(
        name="x",
        width=-(2**63),
        height=2**63 - 1,
        objects=(Annotation(label="a", box=Box(0, 0, 1, 1), label_id=2**62),),
    )
    out = decode_example(encode_example(item))
    assert (out.width, out.height, out.objects[0].label_id) == (-(2**63), 2**63 - 1, 2**62)


def test_mask_on_some_objects_only_is_refused_with_the_object() -> None:
    objs = (
        Annotation(label="a", box=Box(0, 0, 1, 1), label_id=1, mask=PNG),
        Annotation(label="b", box=Box(0, 0, 1, 1), label_id=2),
    )
    with pytest.raises(SchemaError) as info:
        encode_example(Item(name="m.png", objects=objs))
    assert info.value.key == "image/object/mask"
    assert info.value.obj == 1


def test_labels_come_from_the_label_map_when_a_record_has_ids_only() -> None:
    e = Example()
    f = e.features.feature  # type: ignore[attr-defined]
    for k, v in zip(ex_mod.BOX_KEYS, (0.1, 0.2, 0.3, 0.4), strict=True):
        f[k].float_list.value.append(v)
    f[ex_mod.LABEL].int64_list.value.append(2)
    lm = LabelMap.from_names(["cat", "dog"])
    item = decode_example(e.SerializeToString(), label_map=lm)
    assert item.objects[0].label == "dog"
    assert item.objects[0].label_id == 2
    assert decode_example(e.SerializeToString()).objects[0].label == ""


# --- unknown keys -----------------------------------------------------------------------------


def _with_unknown() -> tuple[bytes, dict[str, bytes]]:
    item = Item(
        name="u.jpg",
        width=10,
        height=20,
        image=b"\xff\xd8jpeg",
        image_format="jpeg",
        objects=(Annotation(label="cat", box=Box(0.1, 0.2, 0.3, 0.4), label_id=1),),
    )
    e = Example.FromString(encode_example(item))
    f = e.features.feature  # type: ignore[attr-defined]
    f["image/object/keypoint/z"].float_list.value.extend([0.5, float("nan"), 1e-40])
    f["image/object/group_of"].int64_list.value.extend([-1, 0, 2**63 - 1])
    f["image/caption"].bytes_list.value.extend([b"\x00\xff", b"a cat"])
    f["empty/feature"].SetInParent()
    f["image/object/mask"].float_list.value.extend([0.0, 1.0])  # TF's NUMERICAL_MASKS
    wanted = {
        k: f[k].SerializeToString()
        for k in (
            "image/object/keypoint/z",
            "image/object/group_of",
            "image/caption",
            "empty/feature",
            "image/object/mask",
        )
    }
    return e.SerializeToString(), wanted


def test_unknown_keys_pass_through_byte_for_byte() -> None:
    data, wanted = _with_unknown()
    item = decode_example(data)
    assert dict(item.extra) == wanted
    again = Example.FromString(encode_example(item)).features.feature  # type: ignore[attr-defined]
    for key, raw in wanted.items():
        assert again[key].SerializeToString() == raw
    # and a second pass changes nothing more
    assert dict(decode_example(encode_example(item)).extra) == wanted


def test_unknown_keys_pass_through_from_a_non_canonical_record() -> None:
    data, wanted = _with_unknown()
    # an unknown top-level field pushes parsing onto protobuf's slow path
    noisy = data + b"\x12\x03abc"
    item = decode_example(noisy)
    assert dict(item.extra) == wanted


def test_a_known_key_with_the_wrong_type_names_the_key() -> None:
    e = Example()
    e.features.feature["image/height"].bytes_list.value.append(b"10")  # type: ignore[attr-defined]
    with pytest.raises(ExampleError) as info:
        parse_example(e.SerializeToString())
    assert info.value.key == "image/height"
    assert "int64_list" in info.value.message


def test_per_object_lists_of_different_lengths_name_the_key() -> None:
    e = Example()
    f = e.features.feature  # type: ignore[attr-defined]
    for k in ex_mod.BOX_KEYS:
        f[k].float_list.value.extend([0.1, 0.2])
    f[ex_mod.LABEL].int64_list.value.append(1)
    with pytest.raises(SchemaError) as info:
        parse_example(e.SerializeToString())
    assert info.value.key == ex_mod.LABEL


def test_text_that_is_not_utf8_names_the_key() -> None:
    e = Example()
    e.features.feature["image/filename"].bytes_list.value.append(b"\xff")  # type: ignore[attr-defined]
    with pytest.raises(ExampleError) as info:
        parse_example(e.SerializeToString())
    assert info.value.key == "image/filename"
    e = Example()
    f = e.features.feature  # type: ignore[attr-defined]
    for k in ex_mod.BOX_KEYS:
        f[k].float_list.value.append(0.5)
    f[ex_mod.TEXT].bytes_list.value.append(b"\xc3")
    with pytest.raises(ExampleError) as info:
        to_item(parse_example(e.SerializeToString()))
    assert (info.value.key, info.value.obj) == (ex_mod.TEXT, 0)


def test_unknown_key_that_is_not_utf8_is_refused() -> None:
    # protobuf refuses it; the fast path once accepted it and renamed the key to U+FFFD
    entry = b"\x0a\x02\xff\xfe\x12\x02\x0a\x00"
    data = b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    with pytest.raises(ExampleError):
        parse_example(data)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_parse_or_raise_a_tfdrop_error(data: bytes) -> None:
    try:
        item = decode_example(data)
    except TfdropError:
        return
    assert isinstance(item, Item)


@settings(max_examples=150, deadline=None)
@given(items(), st.data())
def test_corrupted_encodings_parse_or_raise_a_tfdrop_error(item: Item, data: st.DataObject) -> None:
    raw = bytearray(encode_example(item))
    if raw:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(TfdropError):
        decode_example(bytes(raw[:cut]))


def test_text_with_a_lone_surrogate_is_refused_with_key_item_and_object() -> None:
    # a folder file name that is not UTF-8 arrives as "\udcff.png" (surrogateescape); it once
    # crashed encode_example with UnicodeEncodeError, a traceback in `tfdrop convert`
    with pytest.raises(ExampleError) as info:
        encode_example(Item(name="\udcff.png"))
    assert (info.value.key, info.value.obj) == ("image/filename", None)
    assert info.value.item == "\\udcff.png"
    obj = Annotation(label="ok", box=Box(0, 0, 1, 1), label_id=1)
    bad = replace(obj, label="c\udc80t")
    with pytest.raises(ExampleError) as info:
        encode_example(Item(name="a.png", objects=(obj, bad)))
    assert (info.value.key, info.value.obj, info.value.item) == (ex_mod.TEXT, 1, "a.png")
    with pytest.raises(ExampleError) as info:
        encode_example(Item(name="a.png", objects=(replace(obj, view="\udcff"),)))
    assert (info.value.key, info.value.obj) == (ex_mod.VIEW, 0)


def _extras(n: int) -> tuple[tuple[str, bytes], ...]:
    out = []
    for i in range(n):
        f = Feature()
        f.int64_list.value.append(i)  # type: ignore[attr-defined]
        out.append((f"extra/{i:02d}", f.SerializeToString()))
    return tuple(out)


def test_the_same_item_encodes_to_the_same_bytes_in_every_process() -> None:
    # upb orders map entries by a per-process hash seed: the same conversion run twice once
    # gave different record bytes
    script = (
        "import hashlib\n"
        "from tfdrop.codec.example import encode_example\n"
        "from tfdrop.codec.model import Annotation, Box, Item\n"
        "from tfdrop.codec.proto import Feature\n"
        "extra = []\n"
        "for i in range(20):\n"
        "    f = Feature()\n"
        "    f.int64_list.value.append(i)\n"
        "    extra.append((f'extra/{i:02d}', f.SerializeToString()))\n"
        "item = Item(name='a.jpg', width=3, height=4, image=b'abc', image_format='jpeg',\n"
        "    objects=(Annotation(label='x', box=Box(0, 0, 1, 1), label_id=1),),\n"
        "    extra=tuple(extra))\n"
        "print(hashlib.sha256(encode_example(item)).hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        ).stdout
        for seed in (1, 2)
    }
    assert len(digests) == 1


def test_unknown_keys_decode_in_record_order() -> None:
    item = Item(name="a.jpg", extra=_extras(20))  # sorted names: the order encode writes
    assert decode_example(encode_example(item)).extra == item.extra


# --- single-value keys: exactly one value, as TensorFlow's FixedLenFeature([]) -------


def _with(**values: list[object]) -> bytes:
    ex = Example.FromString(encode_example(Item(name="a.jpg", width=4, height=3, image=b"i")))
    feats = ex.features.feature  # type: ignore[attr-defined]
    for key, vals in values.items():
        name = "image/" + key.replace("__", "/")
        kind = feats[name].WhichOneof("kind")
        getattr(feats[name], kind).ClearField("value")
        getattr(feats[name], kind).value.extend(vals)
    return bytes(ex.SerializeToString())


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"height": [3, 4]}, "image/height"),
        ({"width": []}, "image/width"),
        ({"filename": [b"a.jpg", b"b.jpg"]}, "image/filename"),
        ({"source_id": []}, "image/source_id"),
        ({"encoded": [b"i", b"j"]}, "image/encoded"),
        ({"format": [b"jpeg", b"png"]}, "image/format"),
        ({"key__sha256": [b"", b""]}, "image/key/sha256"),
    ],
)
def test_a_single_value_key_with_none_or_several_values_is_a_schema_error(
    values: dict[str, list[object]], key: str
) -> None:
    data = _with(**values)
    for strict in (False, True):
        with pytest.raises(SchemaError, match="exactly one") as info:
            parse_example(data, strict=strict)
        assert info.value.key == key


def test_an_empty_feature_for_a_single_value_key_takes_the_default_like_tensorflow() -> None:
    ex = Example.FromString(encode_example(Item(name="a.jpg", width=4, height=3, image=b"i")))
    ex.features.feature["image/source_id"].Clear()  # type: ignore[attr-defined]
    assert parse_example(bytes(ex.SerializeToString()), strict=True).source_id == ""


def test_strict_refuses_a_non_canonical_layout_the_lenient_reader_takes() -> None:
    good = encode_example(Item(name="a.jpg", width=4, height=3, image=b"i"))
    # the same height entry again at the end: protobuf keeps the last, TF may not
    entry = b"\x0a\x0cimage/height" + b"\x12\x05" + b"\x1a\x03\x0a\x01\x05"
    _, start = wire._len(good, 1, len(good))
    body = good[start:] + b"\x0a" + bytes([len(entry)]) + entry
    data = b"\x0a" + wire.varint(len(body)) + body
    assert parse_example(data).height == 5
    with pytest.raises(ExampleError, match="canonical"):
        parse_example(data, strict=True)


def test_max_values_per_feature_is_passed_through_decode_example() -> None:
    item = Item(
        name="a.jpg",
        width=4,
        height=3,
        objects=tuple(Annotation(label="c", label_id=1, box=Box(0, 0, 1, 1)) for _ in range(5)),
    )
    data = encode_example(item)
    assert len(decode_example(data, max_values_per_feature=5).objects) == 5
    with pytest.raises(TfdropError, match="max_values_per_feature is 4"):
        decode_example(data, max_values_per_feature=4)


# --- layouts outside the canonical one (found by the outside attack) ------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.alike], ids=lambda c: c.name)
def test_strict_takes_a_layout_tensorflow_and_protobuf_read_alike(case: Case) -> None:
    parsed = parse_example(case.data, strict=True)
    assert (parsed.height, parsed.width, parsed.filename) == (48, 64, "a.jpg")
    assert parsed.lists[LABEL] == [1]
    assert parsed.lists[XMIN] == [0.25]


@pytest.mark.parametrize("case", [c for c in CASES if not c.alike], ids=lambda c: c.name)
def test_strict_refuses_a_layout_tensorflow_refuses_or_reads_differently(case: Case) -> None:
    with pytest.raises(ExampleError, match="canonical") as info:
        parse_example(case.data, strict=True)
    assert case.message in info.value.message


def test_a_key_without_a_value_names_the_key_and_is_never_a_fast_path_record() -> None:
    data = example([*base(), entry(b"image/object/view", None)])
    for parse in (wire.parse_features, wire.parse_features_py):
        with pytest.raises(wire.NotCanonical):
            parse(data)
    with pytest.raises(ExampleError) as info:
        parse_example(data, strict=True)
    assert info.value.key == "image/object/view"
    assert parse_example(data).height == 48  # the lenient reader takes it, as protobuf does

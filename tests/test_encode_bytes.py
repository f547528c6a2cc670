"""The hand-built Example bytes equal protobuf's deterministic serialization of the same item.

``encode_example`` builds the wire bytes itself (one copy of the image instead of three); the
reference here fills the same features through protobuf's message API.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from tfdrop.codec import example as E
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.codec.proto import Example, Feature
from tfdrop.codec.wire import varint


def _reference(item: Item) -> bytes:
    ex: Any = Example()
    f = ex.features.feature
    image = item.image or b""
    sha = E.image_sha256(image) if image else item.sha256
    objs = item.objects
    f[E.HEIGHT].int64_list.value.append(item.height)
    f[E.WIDTH].int64_list.value.append(item.width)
    for key, value in (
        (E.FILENAME, item.name),
        (E.SOURCE_ID, item.source_id),
        (E.FORMAT, item.image_format),
        (E.SHA256, sha),
    ):
        f[key].bytes_list.value.append(value.encode())
    f[E.ENCODED].bytes_list.value.append(image)
    for key, attr in ((E.XMIN, "xmin"), (E.XMAX, "xmax"), (E.YMIN, "ymin"), (E.YMAX, "ymax")):
        f[key].float_list.value.extend(getattr(o.box, attr) for o in objs)
    f[E.TEXT].bytes_list.value.extend(o.label.encode() for o in objs)
    f[E.LABEL].int64_list.value.extend(o.label_id for o in objs)
    f[E.DIFFICULT].int64_list.value.extend(int(o.difficult) for o in objs)
    f[E.TRUNCATED].int64_list.value.extend(int(o.truncated) for o in objs)
    f[E.VIEW].bytes_list.value.extend(o.view.encode() for o in objs)
    if any(o.occluded for o in objs):
        f[E.OCCLUDED].int64_list.value.extend(int(o.occluded) for o in objs)
    if objs and all(o.mask is not None for o in objs):
        f[E.MASK].bytes_list.value.extend(o.mask for o in objs if o.mask is not None)
    if any(o.is_crowd for o in objs):
        f[E.IS_CROWD].int64_list.value.extend(int(o.is_crowd) for o in objs)
    if objs and all(o.area is not None for o in objs):
        f[E.AREA].float_list.value.extend(o.area for o in objs if o.area is not None)
    for key, raw in item.extra:
        if key not in f:
            f[key].CopyFrom(Feature.FromString(raw))
    return bytes(ex.SerializeToString(deterministic=True))


floats = st.floats(allow_nan=False, width=32) | st.sampled_from([math.inf, -math.inf, 1e39])
ints = st.integers(-(2**63), 2**63 - 1)


def _feature(kind: str, values: list[Any]) -> bytes:
    """A serialized Feature of one kind (through the message API, as the reference)."""
    feature: Any = Feature()
    getattr(feature, kind).value.extend(values)
    return bytes(feature.SerializeToString())


_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)  # no str of them encodes as UTF-8
text = st.text(st.characters(blacklist_categories=_SURROGATES), max_size=20)
objects = st.builds(
    Annotation,
    label=text,
    box=st.builds(Box, floats, floats, floats, floats),
    label_id=ints,
    difficult=st.booleans(),
    truncated=st.booleans(),
    occluded=st.booleans(),
    view=text,
    mask=st.just(b"\x89PNG\r\n\x1a\nmask"),
    is_crowd=st.booleans(),
    area=st.none() | floats,
)
unknown = st.lists(
    st.tuples(
        st.sampled_from(["zz/extra", "a/first", "image/object/x"]),
        st.sampled_from(
            [
                _feature("float_list", [1.5, 2.0]),
                _feature("int64_list", [-3, 300]),
                _feature("bytes_list", [b"q"]),
            ]
        ),
    ),
    max_size=3,
    unique_by=lambda kv: kv[0],
)
items = st.builds(
    Item,
    name=text,
    width=ints,
    height=st.integers(0, 10_000),
    image=st.none() | st.binary(max_size=300),
    image_format=st.sampled_from(["jpeg", "png", ""]),
    source_id=text,
    sha256=st.sampled_from(["", "ab" * 32]),
    objects=st.lists(objects, max_size=5).map(tuple),
    extra=unknown.map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(items)
def test_encode_example_bytes_equal_protobufs_deterministic_serialization(item: Item) -> None:
    assert E.encode_example(item) == _reference(item)


def test_varint_matches_protobufs_encoding_of_int64() -> None:
    for v in (0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63), -300):
        ex: Any = Feature()
        ex.int64_list.value.append(v)
        raw = ex.SerializeToString()
        assert raw.endswith(varint(v))

"""The canonical wire fast path (tfdrop.codec.wire) agrees exactly with protobuf's parser.

Random Examples are encoded by hand so that the non-canonical encodings protobuf accepts are
covered too: unpacked lists, packed lists split in chunks, map entries with the value first,
duplicate keys, unknown fields, over-long varints, negative int64s (10-byte varints). Whenever the
fast path does not raise :class:`NotCanonical`, its answer must equal the slow path's
(``example._features_slow``) value for value and byte for byte; on protobuf's own output it must
never need the slow path.
"""

from __future__ import annotations

import importlib
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tfdrop.codec import example, wire, wirescan
from tfdrop.codec.proto import Example
from tfdrop.errors import ExampleError, LimitExceededError

# --- a hand-written protobuf encoder with knobs for non-canonical output ----------------------


def varint(n: int, *, extra: int = 0) -> bytes:
    """Base-128 varint of ``n`` (two's complement for negatives); ``extra`` over-long bytes."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if not n:
            out.append(b)
            break
        out.append(b | 0x80)
    if extra:
        out[-1] |= 0x80
        out += b"\x80" * (extra - 1) + b"\x00"
    return bytes(out)


def ld(field: int, payload: bytes, *, extra: int = 0) -> bytes:
    """A length-delimited field (wire type 2)."""
    return varint(field << 3 | 2) + varint(len(payload), extra=extra) + payload


def key_of(s: str) -> bytes:
    return s.encode()


@dataclass(frozen=True)
class Feat:
    kind: int  # 0 empty Feature, 1 bytes, 2 float, 3 int64
    values: tuple[object, ...]
    packed: bool = True  # floats/int64s: packed (canonical) or one tag per value
    chunks: int = 1  # packed: split into this many packed runs (protobuf concatenates them)
    overlong: int = 0  # over-long varint bytes in int64 values


def enc_feature(f: Feat) -> bytes:
    if f.kind == 0:
        return b""
    if f.kind == 1:
        body = b"".join(ld(1, v) for v in f.values)  # type: ignore[arg-type]
    elif f.kind == 2:
        floats = [struct.pack("<f", v) for v in f.values]
        if f.packed:
            body = b"".join(ld(1, b"".join(part)) for part in _split(floats, f.chunks))
        else:
            body = b"".join(b"\x0d" + x for x in floats)
    else:
        ints = [varint(v, extra=f.overlong) for v in f.values]  # type: ignore[arg-type]
        if f.packed:
            body = b"".join(ld(1, b"".join(part)) for part in _split(ints, f.chunks))
        else:
            body = b"".join(b"\x08" + x for x in ints)
    return ld(f.kind, body)


def _split(parts: list[bytes], n: int) -> list[list[bytes]]:
    if not parts:
        return [[]]
    size = max(1, -(-len(parts) // n))
    return [parts[i : i + size] for i in range(0, len(parts), size)]


@dataclass(frozen=True)
class Entry:
    key: bytes
    feat: Feat | None  # None: the entry has only a key
    value_first: bool = False
    unknown_field: bool = False  # an unknown field inside the entry


def enc_entry(e: Entry) -> bytes:
    parts = [ld(1, e.key)]
    if e.feat is not None:
        parts.append(ld(2, enc_feature(e.feat)))
    if e.value_first:
        parts.reverse()
    if e.unknown_field:
        parts.append(varint(3 << 3 | 0) + varint(7))
    return ld(1, b"".join(parts))


def enc_example(entries: list[Entry], *, unknown_top: bool = False, split: bool = False) -> bytes:
    body = [enc_entry(e) for e in entries]
    if split and len(body) > 1:
        # the Features message written twice: protobuf merges them
        out = ld(1, b"".join(body[:1])) + ld(1, b"".join(body[1:]))
    else:
        out = ld(1, b"".join(body)) if entries else b""
    if unknown_top:
        out += ld(5, b"junk")
    return out


# --- strategies -------------------------------------------------------------------------------

KEYS = st.sampled_from(
    [
        "image/filename",
        "image/height",
        "image/object/bbox/xmin",
        "image/object/class/label",
        "image/object/class/text",
        "image/object/mask",
        "x",
        "",
        "unknown/ключ",
    ]
)
F32 = st.floats(width=32, allow_nan=True)
I64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def feats(draw: st.DrawFn) -> Feat:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return Feat(0, ())
    if kind == 1:
        return Feat(1, tuple(draw(st.lists(st.binary(max_size=200), max_size=4))))
    values = draw(st.lists(F32 if kind == 2 else I64, max_size=6))
    return Feat(
        kind,
        tuple(values),
        packed=draw(st.booleans()),
        chunks=draw(st.integers(1, 3)),
        overlong=0 if kind == 2 else draw(st.sampled_from([0, 0, 0, 1, 2])),
    )


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    return Entry(
        key=key_of(draw(KEYS)),
        feat=draw(st.none() | feats()),
        value_first=draw(st.booleans()),
        unknown_field=draw(st.sampled_from([False, False, False, True])),
    )


def same(a: wire.Features, b: wire.Features) -> bool:
    """Equal, with floats compared as float32 bit patterns (NaN == NaN)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        (ka, va, ra), (kb, vb, rb) = a[k], b[k]
        if ka != kb or ra != rb or len(va) != len(vb):
            return False
        if ka == wire.FLOAT_KIND:
            if [struct.pack("<f", x) for x in va] != [struct.pack("<f", x) for x in vb]:
                return False
        elif va != vb:
            return False
    return True


# --- tests ------------------------------------------------------------------------------------

# the C accelerator when built, and always the pure-Python walk it mirrors
FAST_PATHS = [wire.parse_features_py] + ([wire.parse_features] if wire.HAVE_C else [])


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ents=st.lists(entries(), max_size=6),
    unknown_top=st.booleans(),
    split=st.booleans(),
)
def test_fast_path_agrees_with_protobuf_on_any_encoding(
    ents: list[Entry], unknown_top: bool, split: bool
) -> None:
    data = enc_example(ents, unknown_top=unknown_top, split=split)
    _check_agreement(data)


def _check_agreement(data: bytes) -> None:
    """Both fast paths (C and Python) either hand over or answer exactly as protobuf does."""
    try:
        slow: wire.Features | None = example._features_slow(data)
    except ExampleError:
        slow = None  # protobuf refuses it: no fast path may accept it
    for parse in FAST_PATHS:
        try:
            fast = parse(data)
        except wire.NotCanonical:
            continue
        assert slow is not None, f"{parse.__name__} accepted bytes protobuf refuses"
        assert same(fast, slow), (parse.__name__, fast, slow)


@settings(max_examples=150, deadline=None)
@given(
    ents=st.lists(st.tuples(KEYS, feats()), max_size=6),
)
def test_fast_path_takes_everything_protobuf_writes(ents: list[tuple[str, Feat]]) -> None:
    ex = Example()
    fmap = ex.features.feature  # type: ignore[attr-defined]
    for k, f in ents:
        feat = fmap[k]
        if f.kind == 1:
            feat.bytes_list.value.extend(f.values)
        elif f.kind == 2:
            feat.float_list.value.extend(f.values)
        elif f.kind == 3:
            feat.int64_list.value.extend(f.values)
    data = ex.SerializeToString()
    slow = example._features_slow(data)
    for parse in FAST_PATHS:
        assert same(parse(data), slow)  # must not raise NotCanonical


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fast_path_on_random_bytes_raises_only_not_canonical_or_agrees(data: bytes) -> None:
    _check_agreement(data)


def _one(key: bytes, feat: bytes) -> bytes:
    return ld(1, ld(1, ld(1, key) + ld(2, feat)))


def test_negative_int64_from_ten_byte_varint_matches_protobuf() -> None:
    data = _one(b"k", ld(3, ld(1, varint(-1) + varint(-(2**63)) + varint(300))))
    for parse in FAST_PATHS:
        assert parse(data)[b"k"][1] == [-1, -(2**63), 300]


def test_ten_byte_varint_with_high_bits_set_is_not_taken_by_fast_path() -> None:
    # protobuf keeps the low 64 bits of b"\xff"*9 + b"\x7f" (-1); the fast path once returned
    # 2**70-1, an int64 out of range
    data = _one(b"k", ld(3, ld(1, b"\xff" * 9 + b"\x7f")))
    for parse in FAST_PATHS:
        with pytest.raises(wire.NotCanonical):
            parse(data)
    assert example._features_slow(data)[b"k"][1] == [-1]
    high = _one(b"image/height", ld(3, ld(1, b"\xff" * 9 + b"\x7f")))
    assert example.parse_example(high).height == -1


def test_over_long_varint_is_left_to_protobuf() -> None:
    # value 0 as b"\x80\x00": protobuf re-serializes it as b"\x00", so the fast path's raw
    # Feature bytes would differ from the reference; it must hand the record over
    data = _one(b"k", ld(3, ld(1, b"\x80\x00")))
    for parse in FAST_PATHS:
        with pytest.raises(wire.NotCanonical):
            parse(data)
    assert example._features_slow(data)[b"k"][:2] == (3, [0])


def test_key_that_is_not_utf8_is_rejected_like_protobuf_does() -> None:
    data = _one(b"\xff\xfe", ld(1, b""))
    with pytest.raises(ExampleError):
        example._features_slow(data)
    for parse in FAST_PATHS:
        with pytest.raises(wire.NotCanonical):
            parse(data)
    with pytest.raises(ExampleError):
        example.parse_example(data)


def test_duplicate_map_key_is_left_to_protobuf_where_the_last_entry_wins() -> None:
    # TensorFlow's own parser does not always agree with protobuf on a key twice
    a = ld(1, ld(1, b"k") + ld(2, ld(3, ld(1, varint(1)))))
    b = ld(1, ld(1, b"k") + ld(2, ld(3, ld(1, varint(2)))))
    data = ld(1, a + b)
    for parse in FAST_PATHS:
        with pytest.raises(wire.NotCanonical):
            parse(data)
    assert example._features_slow(data)[b"k"][1] == [2]


def test_duplicate_empty_map_key_is_left_to_protobuf() -> None:
    data = ld(1, ld(1, ld(1, b"k")) + ld(1, ld(1, b"k") + ld(2, b"")))
    for parse in FAST_PATHS:
        with pytest.raises(wire.NotCanonical):
            parse(data)


def test_empty_example_and_empty_features_are_empty() -> None:
    for parse in FAST_PATHS:
        assert parse(b"") == {} == example._features_slow(b"")
        assert parse(b"\x0a\x00") == {} == example._features_slow(b"\x0a\x00")


def test_empty_packed_run_is_left_to_protobuf() -> None:
    # b"\x0a\x00" inside a FloatList is an empty packed run; protobuf never writes one and
    # re-serializes the Feature without it
    data = _one(b"k", ld(2, ld(1, b"")))
    for parse in FAST_PATHS:
        with pytest.raises(wire.NotCanonical):
            parse(data)
    assert example._features_slow(data)[b"k"] == (2, [], b"\x12\x00")


def _c_module() -> Any:
    """The built C accelerator, even when ``TFDROP_NO_C`` keeps wire.py off it."""
    try:
        return importlib.import_module("tfdrop.codec._wire")
    except ImportError:  # pragma: no cover - depends on the build
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true: the C accelerator must be built")
        pytest.skip("built without the C accelerator")


def test_c_accelerator_and_python_walk_agree_on_protobuf_output() -> None:
    c = _c_module()
    ex = Example()
    f = ex.features.feature  # type: ignore[attr-defined]
    f["a"].bytes_list.value.extend([b"x", b""])
    f["b"].float_list.value.extend([0.5, -0.0, 1e30])
    f["c"].int64_list.value.extend([0, 127, 128, -1, 2**63 - 1])
    f["d"].SetInParent()
    data = ex.SerializeToString()
    assert c.parse_features(data, wire.DEFAULT_MAX_VALUES) == wire.parse_features_py(data)


# --- values per feature (60 M floats became 60 M Python objects) ----------------------

ALL_PATHS = [*FAST_PATHS, example._features_slow]


@pytest.mark.parametrize(
    ("feature", "count"),
    [
        (ld(2, ld(1, bytes(4 * 11))), 11),  # packed floats: counted from the length
        (ld(3, ld(1, bytes(11))), 11),  # one-byte varints
        (ld(3, ld(1, b"\x80\x01" * 11)), 11),  # two-byte varints
        (ld(1, b"".join(ld(1, b"v") for _ in range(11))), 11),  # bytes: counted as parsed
    ],
)
def test_a_list_over_max_values_raises_the_limit_in_every_path(feature: bytes, count: int) -> None:
    data = _one(b"k", feature)
    for parse in ALL_PATHS:
        with pytest.raises(LimitExceededError) as info:
            parse(data, 10)
        assert (info.value.limit, info.value.cap, info.value.key) == (
            "max_values_per_feature",
            10,
            "k",
        )
        assert info.value.value >= 11
        assert len(parse(data, count)[b"k"][1]) == count  # exactly at the cap: fine


def test_values_are_counted_before_protobuf_on_non_canonical_layouts() -> None:
    unpacked = _one(b"k", ld(3, b"\x08\x01" * 50))  # unpacked varints: not canonical
    split = _one(b"k", ld(2, ld(1, bytes(80)) + ld(1, bytes(80))))  # two packed runs
    twice = ld(1, ld(1, ld(1, b"k") + ld(2, ld(3, ld(1, bytes(30))))) * 2)  # a key twice
    for data, n in ((unpacked, 50), (split, 40), (twice, 60)):
        for parse in FAST_PATHS:
            with pytest.raises((wire.NotCanonical, LimitExceededError)):
                parse(data, 10)
        with pytest.raises(LimitExceededError, match="max_values_per_feature is 10"):
            example._features_slow(data, 10)
        assert wirescan.feature_value_counts(data)[b"k"] == n


def test_wire_count_refuses_groups_and_stops_on_malformed_bytes() -> None:
    for data in (b"\x0b\x0c", b"\x0a\x05ab", b"\x0a\xff"):
        with pytest.raises(wirescan.Malformed):
            wirescan.feature_value_counts(data)


def test_tfdrop_no_c_makes_the_pure_python_path_be_used() -> None:
    code = "from tfdrop.codec import wire; print(wire.HAVE_C, wire.C_DISABLED, wire.od_check)"
    env = {**os.environ, "TFDROP_NO_C": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "True", "None"]
    env["TFDROP_NO_C"] = "0"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split()[1] == "False"


# --- the C Example builder (session 5) ----------------------------------------------------

_FEATURE = st.one_of(
    st.tuples(st.just("bytes"), st.lists(st.binary(max_size=300), max_size=5)),
    st.tuples(
        st.just("float"),
        st.lists(
            st.floats(width=64, allow_nan=True) | st.sampled_from([1e39, -1e39, 5e-46]),
            max_size=6,
        ),
    ),
    st.tuples(
        st.just("int64"),
        st.lists(st.integers(-(1 << 63), (1 << 63) - 1) | st.integers(0, 200), max_size=6),
    ),
    st.tuples(st.just("raw"), st.binary(max_size=40)),
)


def _build(builder: wire.ExampleBuilder, feats: dict[bytes, tuple[str, Any]]) -> bytes:
    for key, (kind, values) in feats.items():
        if kind == "bytes":
            builder.bytes_list(key, values)
        elif kind == "float":
            builder.float_list(key, values)
        elif kind == "int64":
            builder.int64_list(key, values)
        else:
            builder.raw_feature(key, values)
    return builder.serialize()


@pytest.mark.skipif(not wire.HAVE_C, reason="compares the C builder with the Python one")
@settings(max_examples=400, deadline=None)
@given(feats=st.dictionaries(st.binary(min_size=0, max_size=30), _FEATURE, max_size=8))
def test_the_c_builder_writes_the_python_builders_bytes(
    feats: dict[bytes, tuple[str, Any]],
) -> None:
    c = _build(wire.new_builder(), feats)
    assert type(wire.new_builder()) is not wire.ExampleBuilder
    assert c == _build(wire.ExampleBuilder(), feats)


@pytest.mark.skipif(not wire.HAVE_C, reason="the C builder")
def test_the_c_builder_refuses_an_int64_overflow_when_the_list_is_added() -> None:
    b = wire.new_builder()
    with pytest.raises(OverflowError, match="outside the int64 range"):
        b.int64_list(b"k", [1, 1 << 63])
    b.int64_list(b"k", [-(1 << 63), (1 << 63) - 1])
    assert b.serialize() == _build(
        wire.ExampleBuilder(), {b"k": ("int64", [-(1 << 63), (1 << 63) - 1])}
    )


def test_the_builder_in_use_matches_protobuf() -> None:
    """Whichever builder runs, protobuf reads back what went in."""
    b = wire.new_builder()
    b.bytes_list(b"image/encoded", [b"\xff\xd8" * 100])
    b.float_list(b"image/object/bbox/xmin", [0.25, 0.5])
    b.int64_list(b"image/height", [480])
    b.int64_list(b"neg", [-5])
    ex = Example.FromString(b.serialize())
    f = ex.features.feature  # type: ignore[attr-defined]
    assert f["image/encoded"].bytes_list.value == [b"\xff\xd8" * 100]
    assert list(f["image/object/bbox/xmin"].float_list.value) == [0.25, 0.5]
    assert list(f["image/height"].int64_list.value) == [480]
    assert list(f["neg"].int64_list.value) == [-5]

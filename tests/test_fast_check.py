"""The C all-clear check (``schema.fast_check``) never calls a faulty record valid.

``fast_check`` may answer ``None`` for a valid record (the full path then decides), but a
number only when :func:`parse_example` (``strict``, as ``validate`` runs it) + :func:`check_parsed`
find no problem; it must agree on the object count. And the full path passes a record only when
protobuf parses it into the same values under TensorFlow's rules (one value per single-value
key, right types, one length per object list). Records are generated around every schema
rule's edges, then mutated at the protobuf level (types changed, keys dropped, lists
lengthened) and byte by byte (flips, inserts, deletes, truncation: an attack found 89 false
all-clears in 20,000 byte-corrupted records).

Without the C accelerator (``TFDROP_NO_C=1``, the suite's second run) ``fast_check`` answers
``None`` and these tests check the full path against protobuf alone; under ``CI=true`` a build
without the extension fails instead of passing quietly.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import replace
from typing import Any

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tfdrop.codec import wire
from tfdrop.codec.example import (
    LABEL,
    OBJECT_KEYS,
    SCALAR_KEYS,
    TEXT,
    encode_example,
    parse_example,
)
from tfdrop.codec.imagehead import jpeg_end_py
from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.codec.proto import Example
from tfdrop.codec.schema import check_parsed, fast_check, fast_scan
from tfdrop.errors import TfdropError


def test_the_c_path_is_built_unless_disabled_on_purpose() -> None:
    if wire.HAVE_C or wire.C_DISABLED:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("CI=true: the C accelerator must be built (or disabled with TFDROP_NO_C=1)")
    pytest.skip("built without the C accelerator (fast_check answers None)")


LABELS = LabelMap.from_names(["cat", "dog", "bird"])
EDGES = [0.0, -0.0, 0.25, 1.0, 1.0000001, -1e-9, math.nan, math.inf, -math.inf]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 12 + b"\x00\x00\x00\x00IEND\xaeB`\x82"
# a JPEG's start: APP0, then a start-of-frame of 640x480 (what the valid items declare)
JPEG_640 = (
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    b"\xff\xc0\x00\x11\x08\x01\xe0\x02\x80\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    b"\xff\xd9"
)

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
        parsed = parse_example(data, strict=True)
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
    image = b"\xff\xd8\xff\xda\x00\x02img\xff\xd9"  # a start of scan, its data, the end
    item = Item(name="x.jpg", width=64, height=48, image=image, image_format="jpeg")
    data = encode_example(replace(item, objects=objs))
    assert fast_check(data, LABELS) == (3 if wire.HAVE_C else None)
    assert fast_check(data, None) == (3 if wire.HAVE_C else None)
    assert _full_path(data, LABELS) == (3, [])


def test_fast_check_rejects_a_wrong_sha256() -> None:
    item = Item(name="x.jpg", width=4, height=4, image=None, sha256="ab" * 32)
    data = encode_example(item)
    assert fast_check(data) == (0 if wire.HAVE_C else None)  # no image: nothing to compare
    ex = Example.FromString(encode_example(Item(name="x.jpg", width=4, height=4, image=b"i")))
    ex.features.feature["image/key/sha256"].bytes_list.value[0] = b"ab" * 32  # type: ignore[attr-defined]
    assert fast_check(bytes(ex.SerializeToString())) is None


# --- byte-level corruption ----------------------------------------------------------

_TYPES = {"bytes_list": "bytes_list", "float_list": "float_list", "int64_list": "int64_list"}


def _tf_verdict(data: bytes) -> tuple[bool, int]:
    """Whether protobuf parses ``data`` into an Example TensorFlow's OD decoder accepts (the
    rules validate must imply), and the box count."""
    try:
        ex = Example.FromString(data)
    except DecodeError:
        return False, -1
    feats: Any = ex.features.feature  # type: ignore[attr-defined]
    lengths = set()
    for key in feats:
        kind = feats[key].WhichOneof("kind")
        want = SCALAR_KEYS.get(key) or OBJECT_KEYS.get(key)
        if want is None or kind is None:
            continue
        if kind != want and not (key == "image/object/mask" and kind == "float_list"):
            return False, -1
        n = len(getattr(feats[key], kind).value)
        if key in SCALAR_KEYS and n != 1:
            return False, -1
        if key in OBJECT_KEYS and n and kind == want:
            lengths.add(n)
    return len(lengths) <= 1, max(lengths, default=0)


def _corrupt(data: bytes, ops: list[tuple[int, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, where, value in ops:
        i = where % (len(buf) + 1)
        if op == 0 and i < len(buf):
            buf[i] ^= 1 << (value % 8)  # flip a bit
        elif op == 1:
            buf.insert(i, value)
        elif op == 2 and i < len(buf):
            del buf[i]
        elif op == 3:
            del buf[i:]
        elif i < len(buf):
            buf[i] = value  # overwrite a byte
    return bytes(buf)


def _valid_items() -> st.SearchStrategy[Item]:
    good = st.builds(
        Annotation,
        label=st.sampled_from(["cat", "dog", "bird"]),
        box=st.builds(Box, st.just(0.1), st.just(0.2), st.just(0.6), st.just(0.7)),
        label_id=st.sampled_from([1, 2, 3]),
        difficult=st.booleans(),
    )
    return st.builds(
        Item,
        name=st.sampled_from(["a.jpg", "b/c.png"]),
        width=st.just(640),
        height=st.just(480),
        image=st.sampled_from([None, b"jpegbytes", JPEG_640]),
        image_format=st.sampled_from(["jpeg", "png"]),
        objects=st.lists(good, max_size=3).map(tuple),
    )


def _check_verdicts(data: bytes, label_map: LabelMap | None) -> None:
    fast = fast_check(data, label_map)
    n, problems = _full_path(data, label_map)
    if fast is not None:
        assert problems == [], "the fast path passed a record the full check faults"
        assert fast == n
    if not problems:
        ok, boxes = _tf_verdict(data)
        assert ok, "the full check passed a record TensorFlow's rules refuse"
        assert boxes == n
    _check_fast_parsers_agree(data)


def _check_fast_parsers_agree(data: bytes) -> None:
    """The C walk and the pure-Python walk give the same answer on any bytes."""
    if not wire.HAVE_C:
        return
    answers: list[object] = []
    for parse in (wire.parse_features_py, wire.parse_features):
        try:
            answers.append(parse(data))
        except wire.NotCanonical:
            answers.append("not canonical")
        except TfdropError as exc:
            answers.append(f"{exc.key}: {exc}")
    assert repr(answers[0]) == repr(answers[1])  # repr: NaN equals itself


@settings(max_examples=1500, deadline=None)
@given(
    item=st.one_of(_valid_items(), _items()),
    ops=st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 1 << 16), st.integers(0, 255)),
        min_size=1,
        max_size=3,
    ),
    pinned=st.booleans(),
)
def test_byte_corruption_never_gets_an_all_clear_the_full_check_or_tensorflow_would_refuse(
    item: Item, ops: list[tuple[int, int, int]], pinned: bool
) -> None:
    try:
        data = encode_example(item)
    except TfdropError:
        return
    _check_verdicts(_corrupt(data, ops), LABELS if pinned else None)


def test_two_heights_and_two_filenames_fail_both_paths() -> None:
    ex = Example.FromString(encode_example(Item(name="a.jpg", width=4, height=3, image=b"i")))
    feats: Any = ex.features.feature  # type: ignore[attr-defined]
    feats["image/height"].int64_list.value.append(5)
    feats["image/filename"].bytes_list.value.append(b"b.jpg")
    data = bytes(ex.SerializeToString())
    assert fast_check(data) is None
    n, problems = _full_path(data, None)
    assert n == -1
    assert "exactly one" in str(problems[0])
    assert _tf_verdict(data) == (False, -1)


@pytest.mark.parametrize("key", sorted(SCALAR_KEYS))
def test_every_single_value_key_with_a_second_malformed_value_fails(key: str) -> None:
    # the C check once read only the first value of these seven keys
    item = Item(name="a.jpg", width=4, height=3, image=b"i", image_format="jpeg")
    ex = Example.FromString(encode_example(item))
    feats: Any = ex.features.feature  # type: ignore[attr-defined]
    kind = SCALAR_KEYS[key]
    getattr(feats[key], kind).value.append(b"x" if kind == "bytes_list" else 7)
    data = bytes(ex.SerializeToString())
    assert fast_check(data) is None
    assert _full_path(data, None)[0] == -1
    for cut in range(1, 4):  # the second value truncated on the wire, not only duplicated
        _check_verdicts(data[:-cut], None)


def test_corruption_keeps_some_records_valid_so_the_property_is_not_vacuous() -> None:
    import random

    rng = random.Random(9)
    data = encode_example(
        Item(
            name="a.jpg",
            width=640,
            height=480,
            image=JPEG_640[:-2] + bytes(range(200)) + JPEG_640[-2:],
            image_format="jpeg",
            objects=(Annotation(label="cat", label_id=1, box=Box(0.1, 0.2, 0.5, 0.6)),),
        )
    )
    passed = 0
    for _ in range(400):
        bad = _corrupt(data, [(0, rng.randrange(len(data)), rng.randrange(256))])
        _check_verdicts(bad, None)
        passed += _full_path(bad, None)[1] == []
    assert 0 < passed < 400


# --- the embedded image's header, checked in C since session 5 -----------------------------


def _png_head(w: int, h: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + b"\x00\x00\x00\x0dIHDR"
        + w.to_bytes(4, "big")
        + h.to_bytes(4, "big")
        + b"\x08\x02\x00\x00\x00"
        + b"\x00\x00\x00\x00"  # its CRC (not checked)
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def _jpeg_head(w: int, h: int, sof: int, pre: list[tuple[int, bytes]]) -> bytes:
    """SOI, the segments ``pre`` (marker, payload), fill bytes, a frame header (marker
    ``sof``), a start of scan, its data and the end of image."""
    out = b"\xff\xd8"
    for marker, payload in pre:
        out += bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload
    out += b"\xff\xff"  # fill
    frame = b"\x08" + h.to_bytes(2, "big") + w.to_bytes(2, "big") + b"\x03" + bytes(9)
    out += bytes([0xFF, sof]) + (len(frame) + 2).to_bytes(2, "big") + frame
    return out + b"\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + b"scan data\xff\xd9"


_SIZES = st.sampled_from([0, 1, 640, 65535])


@settings(max_examples=600, deadline=None)
@given(
    kind=st.sampled_from(["png", "jpeg", "other", "none"]),
    fmt=st.sampled_from(["jpeg", "png", "", "gif", "JPEG"]),
    real=st.tuples(_SIZES, _SIZES),
    declared=st.tuples(st.sampled_from([1, 640, 65535]), st.sampled_from([1, 640, 65535])),
    sof=st.sampled_from([0xC0, 0xC2, 0xC4, 0xC8, 0xCC, 0xCF, 0xDA, 0xD0, 0x01]),
    pre=st.lists(
        st.tuples(st.sampled_from([0xE0, 0xE1, 0xFE, 0xDB]), st.binary(max_size=6)), max_size=2
    ),
    cut=st.none() | st.integers(0, 40),
)
def test_the_c_image_check_agrees_with_image_problems_both_ways(
    kind: str,
    fmt: str,
    real: tuple[int, int],
    declared: tuple[int, int],
    sof: int,
    pre: list[tuple[int, bytes]],
    cut: int | None,
) -> None:
    """The all-clear check reads the image header itself (JPEG frame and scan, PNG IHDR and
    IEND): it never passes a record the full check finds something wrong with, and it passes
    every one with nothing wrong when the image's markers follow one another."""
    image = {
        "png": _png_head(*real),
        "jpeg": _jpeg_head(*real, sof, pre),
        "other": b"GIF89a" + bytes(20),
        "none": b"",
    }[kind]
    if cut is not None:
        image = image[:cut]
    obj = Annotation(label="cat", label_id=1, box=Box(0.1, 0.2, 0.5, 0.9))
    item = Item(
        name="x", width=declared[0], height=declared[1], image=image or None,
        image_format=fmt, objects=(obj,),
    )  # fmt: skip
    data = encode_example(item)
    n, problems = _full_path(data, None)
    fast = fast_check(data)
    if not wire.HAVE_C:
        assert fast is None
        return
    if fast is not None:
        assert problems == []
        assert fast == n
    if kind != "jpeg" or sof not in (0xD0, 0x01):
        # a standalone marker there leaves bytes that are no marker: the Python path skips
        # them, as libjpeg does; the C one leaves such an image to it
        assert (fast is not None) == (problems == []), problems


@settings(max_examples=300, deadline=None)
@given(item=_items())
def test_labels_from_the_c_check_are_the_parsed_ones(item: Item) -> None:
    """``validate`` takes the class texts and ids for its label table from the all-clear check
    instead of a full parse."""
    try:
        data = encode_example(item)
    except TfdropError:
        return
    fast = fast_scan(data, None, labels=True)
    if fast is None:
        return
    parsed = parse_example(data)
    assert list(fast.texts) == parsed.lists.get(TEXT, [])
    assert list(fast.ids) == parsed.lists.get(LABEL, [])
    assert fast_scan(data, None) == fast._replace(texts=(), ids=())


@pytest.mark.parametrize(
    ("image", "fmt", "passes"),
    [
        (_jpeg_head(640, 480, 0xC0, [(0xE0, b"JFIF\x00")]), "jpeg", True),
        (_jpeg_head(640, 481, 0xC0, []), "jpeg", False),  # the frame says another height
        (_jpeg_head(640, 480, 0xC2, []), "png", False),  # a JPEG called png
        (_png_head(640, 480), "png", True),
        (_png_head(641, 480), "png", False),
        (_png_head(640, 480), "gif", False),
        (b"GIF89a" + bytes(20), "", False),
    ],
)
def test_the_c_image_check_on_plain_cases(image: bytes, fmt: str, passes: bool) -> None:
    obj = Annotation(label="cat", label_id=1, box=Box(0.1, 0.2, 0.5, 0.9))
    item = Item(name="x", width=640, height=480, image=image, image_format=fmt, objects=(obj,))
    data = encode_example(item)
    assert (fast_check(data) is not None) == (passes and wire.HAVE_C)
    assert (_full_path(data, None)[1] == []) == passes


# --- a JPEG's markers walked to its end, in C and in Python --------------------------------

_MARKERS = st.sampled_from(
    [0xC0, 0xC2, 0xC4, 0xDB, 0xDD, 0xE0, 0xE1, 0xFE, 0xDA, 0xD9, 0xD8, 0xD0, 0x01, 0x00]
)
_LOOSE_BYTES = [b"\xff", b"\xff\xff", b"\x00", b"\xff\x00", b"\xff\xd9", b"\xff\xda"]
_LOOSE_BYTES += [b"\xff\x01", b"\xff\xd3", b"\xff\xff\xd7", b"\x07\xff\x01\xff\x00"]
_PIECE = st.one_of(
    st.tuples(_MARKERS, st.binary(max_size=12)).map(
        lambda mp: bytes([0xFF, mp[0]]) + (len(mp[1]) + 2).to_bytes(2, "big") + mp[1]
    ),
    st.sampled_from(_LOOSE_BYTES),
    st.binary(max_size=8),
)


@settings(max_examples=1500, deadline=None)
@given(pieces=st.lists(_PIECE, max_size=12), cut=st.none() | st.integers(0, 200))
def test_the_c_jpeg_walk_is_the_python_one(pieces: list[bytes], cut: int | None) -> None:
    """``image_complete`` walks a JPEG's markers in C when it can (``wire.jpeg_end``): the
    same answer as :func:`jpeg_end_py` for any bytes after a start of image, whole or cut."""
    if wire.jpeg_end is None:
        return  # TFDROP_NO_C: only the Python walk runs (the first test says why)
    data = b"\xff\xd8" + b"".join(pieces)
    if cut is not None:
        data = data[:cut]
    assert wire.jpeg_end(data) == jpeg_end_py(data)


@pytest.mark.parametrize(
    "run", [b"\xff\x01", b"\xff\xd0", b"\xff\x00", b"\x00\xff\xff\x01", b"\xff\xfe\x00\x04\xff\xd9"]
)  # fmt: skip
def test_both_walks_follow_runs_of_markers_past_any_count(run: bytes) -> None:
    """A header of 70,000 standalone markers, stuffed zeros or tiny comments (outside attack
    18: the walk once stopped at 65,536 and judged by the last bytes): both walks go on to
    the end, so a cut inside the run is cut and the whole image, trailer and all, is whole."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 200, 30)).save(buf, "JPEG")
    real = buf.getvalue()
    whole = real[:2] + run * 70_000 + real[2:] + b"trailer"
    walks = [jpeg_end_py] + ([wire.jpeg_end] if wire.jpeg_end is not None else [])
    for walk in walks:
        assert walk(whole) == 1
        assert walk(whole[: 2 + len(run) * 69_000]) == 0
        assert walk(whole[: 2 + len(run) * 69_000] + b"\xff\xd9") == 0  # an EOI, no scan


_SCAN_BYTES = st.sampled_from(
    [b"\x00", b"\x12", b"\xff\x00", b"\xff\xd3", b"\xff\xff", b"\xff", b"\xfe", b"\xff\xd9"]
)


@settings(max_examples=800, deadline=None)
@given(
    body=st.lists(_SCAN_BYTES, min_size=0, max_size=120),
    pad=st.integers(0, 40),
    end=st.sampled_from([b"", b"\xff", b"\xff\xd9", b"\xff\x00", b"\xff\xd9trailer"]),
)
def test_the_c_scan_finds_markers_as_the_python_walk_at_every_offset(
    body: list[bytes], pad: int, end: bytes
) -> None:
    """Entropy-coded data is searched 16 bytes at a time in C (SSE2): stuffed zeros, restarts,
    runs of 0xFF and a marker on, across or just past a 16-byte boundary, and data that ends
    in the middle of a 0xFF pair, get the Python walk's answer."""
    if wire.jpeg_end is None:
        return
    head = b"\xff\xd8\xff\xda\x00\x02" + b"\x55" * pad
    data = head + b"".join(body) + end
    assert wire.jpeg_end(data) == jpeg_end_py(data)


def test_the_c_jpeg_walk_is_the_python_one_on_noisy_images_cut_everywhere() -> None:
    """Long scans (a noisy image: a 0xFF every few hundred bytes, stuffed), cut at every
    byte: the 16-byte search and the Python walk agree."""
    if wire.jpeg_end is None:
        return
    noise = Image.frombytes("RGB", (48, 40), os.urandom(48 * 40 * 3))
    for kw in ({}, {"progressive": True}):
        buf = io.BytesIO()
        noise.save(buf, "JPEG", quality=95, **kw)
        data = buf.getvalue()
        assert jpeg_end_py(data) == 1
        for cut in range(len(data) + 1):
            assert wire.jpeg_end(data[:cut]) == jpeg_end_py(data[:cut]), cut


def test_the_c_jpeg_walk_is_the_python_one_on_real_files_cut_everywhere() -> None:
    if wire.jpeg_end is None:
        return
    images = []
    for kw in ({}, {"progressive": True}, {"progressive": True, "optimize": True}):
        buf = io.BytesIO()
        Image.new("RGB", (20, 12), (9, 200, 30)).save(buf, "JPEG", **kw)
        images.append(buf.getvalue())
    for data in images:
        assert jpeg_end_py(data) == 1
        for cut in range(len(data) + 1):
            assert wire.jpeg_end(data[:cut]) == jpeg_end_py(data[:cut]), cut

"""Fuzzing each format reader through ``convert()``, and the codec's three parsers.

Contract: whatever the bytes, the only exception that may escape is a
:class:`tfdrop.errors.TfdropError` (a documented error with a kind and a location); a
``KeyError``, ``IndexError``, ``struct.error``, ``RecursionError`` ... is a bug.

Seeds are real archives of every format, written by tfdrop itself from one small TFRecord
dataset (boxes, difficult flags, two labels, PNG images). Hypothesis mutates one member of a
seed (byte flips, cuts, inserted bytes, duplicated runs, and for text formats numbers and
tokens swapped for hostile ones: ``-1``, ``nan``, ``1e309``, huge integers, empty strings),
rebuilds a valid zip around it so the format reader (not the zip layer) meets the damage, and
runs the whole conversion (read, label ids, write, read-back validation). Raw zip bytes are
mutated too, for the archive layer.

CI runs a short, derandomized session (120 conversions per test and 480 parser calls, the
same examples every run). A long session:
``TFDROP_FUZZ_EXAMPLES=20000 TFDROP_FUZZ_RANDOM=1 pytest tests/test_fuzz_formats.py``.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import warnings
import zipfile
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon_support import png, tfrecord_bytes, tfrecord_zip
from tfdrop.codec.example import decode_example, encode_example
from tfdrop.codec.framing import NEED_DATA, RecordDecoder, encode_record
from tfdrop.codec.labelmap import parse_label_map
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError, SchemaError, TfdropError
from tfdrop.formats import FORMATS, FormatName, SourceFormat

EXAMPLES = int(os.environ.get("TFDROP_FUZZ_EXAMPLES", "120"))


def _fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=not os.environ.get("TFDROP_FUZZ_RANDOM"),
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


FUZZ = _fuzz(EXAMPLES)  # whole conversions: ~30 ms each
FUZZ_CODEC = _fuzz(EXAMPLES * 4)  # one parser call: ~1 ms each
# targets a TFRecord dataset is written as; "images" is read only (a zip of plain images)
TARGETS: tuple[FormatName, ...] = ("tfrecord", "voc", "cvat", "coco", "yolo")
HOSTILE_TOKENS = (
    b"-1",
    b"0",
    b"nan",
    b"inf",
    b"-inf",
    b"1e309",
    b"99999999999999999999999",
    b"",
    b"\xff\xfe",
    b"&amp;",
    b"<x>",
    b'"',
    b"null",
    b"[]",
    b"{}",
    b"\x00",
    b"../../x",
)


# CVAT for video 1.1: tracks (interpolated boxes, an outside frame, a polygon track)
_CVAT_VIDEO = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
<meta><task><size>4</size><mode>interpolation</mode>
<labels><label><name>cat</name></label><label><name>dog</name></label></labels>
<original_size><width>64</width><height>48</height></original_size></task></meta>
<track id="0" label="cat">
<box frame="0" outside="0" occluded="0" keyframe="1" xtl="1.5" ytl="2" xbr="30" ybr="40"/>
<box frame="2" outside="0" occluded="1" keyframe="1" xtl="5" ytl="6" xbr="34.25" ybr="44"/>
<box frame="3" outside="1" occluded="0" keyframe="1" xtl="5" ytl="6" xbr="34" ybr="44"/>
</track>
<track id="1" label="dog">
<polygon frame="1" outside="0" occluded="0" keyframe="1" points="1,1;20,1;20,20"/>
<polygon frame="2" outside="1" occluded="0" keyframe="1" points="1,1;20,1;20,20"/>
</track>
</annotations>
"""


def _zip_of(members: dict[str, bytes]) -> bytes:
    return _rezip(list(members.items()))


@cache
def seeds() -> dict[str, bytes]:
    """One archive per readable format, written by tfdrop from the same small dataset."""
    out: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src.zip"
        src.write_bytes(tfrecord_zip(3, tag="fz"))
        out["tfrecord"] = src.read_bytes()
        for fmt in TARGETS[1:]:
            dst = Path(tmp) / f"{fmt}.zip"
            convert(src, dst, ConvertOptions(source_format="tfrecord", target_format=fmt))
            out[fmt] = dst.read_bytes()
        out["cvat-video"] = _zip_of({"annotations.xml": _CVAT_VIDEO.encode()})
        images = io.BytesIO()
        with zipfile.ZipFile(images, "w") as zi:
            zi.writestr("cam/a.png", png(3))
            zi.writestr("cam/b.png", png(4))
        out["images"] = images.getvalue()
    return out


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return [(i.filename, zf.read(i)) for i in zf.infolist()]


def _rezip(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a duplicated member name is one of the mutations
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return buf.getvalue()


_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:e-?\d+)?")


@st.composite
def mutated(draw: st.DrawFn, data: bytes, text: bool) -> bytes:
    """``data`` after 1-4 mutations (token swaps for text, byte edits for everything)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("token", "flip", "cut", "insert", "dup", "delete")))
        if kind == "token" and text:
            spans = [m.span() for m in _NUMBER.finditer(bytes(buf))]
            token = draw(st.sampled_from(HOSTILE_TOKENS))
            if spans:
                a, b = spans[draw(st.integers(0, len(spans) - 1))]
                buf[a:b] = token
                continue
            kind = "insert"
        if not buf:
            buf += draw(st.binary(max_size=16))
            continue
        pos = draw(st.integers(0, len(buf) - 1))
        if kind == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del buf[pos:]
        elif kind in {"insert", "token"}:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "dup":
            end = min(len(buf), pos + draw(st.integers(1, 256)))
            buf[pos:pos] = buf[pos:end]
        else:
            del buf[pos : pos + draw(st.integers(1, 64))]
    return bytes(buf)


def _is_text(name: str) -> bool:
    return name.endswith((".xml", ".json", ".txt", ".names", ".data", ".pbtxt"))


@st.composite
def damaged_archives(draw: st.DrawFn) -> tuple[str, bytes]:
    """(source format, a seed with one member damaged, or its raw zip bytes damaged)."""
    fmt = draw(st.sampled_from(sorted(seeds())))
    seed = seeds()[fmt]
    if draw(st.integers(0, 9)) == 0:
        return fmt, draw(mutated(seed, text=False))
    members = _members(seed)
    # annotation members first: that is where a reader's own parsing is
    weights = [i for i, (n, _) in enumerate(members) if _is_text(n) or n.endswith(".tfrecord")]
    index = draw(st.sampled_from(weights or list(range(len(members)))))
    name, data = members[index]
    members[index] = (name, draw(mutated(data, text=_is_text(name))))
    if draw(st.integers(0, 7)) == 0:  # a member dropped, renamed or added
        op = draw(st.integers(0, 2))
        if op == 0 and len(members) > 1:
            members.pop(draw(st.integers(0, len(members) - 1)))
        elif op == 1:
            members[index] = (name + draw(st.sampled_from(("x", "/", ".bak"))), members[index][1])
        else:
            members.append((draw(st.sampled_from(("annotations.xml", "obj.names"))), b"?"))
    return fmt, _rezip(members)


def _format_named(name: str) -> FormatName:
    """The format table's key equal to ``name`` (a seed's name without its variant)."""
    return next(k for k in FORMATS if k == name)


def _convert_must_only_raise_tfdrop_errors(fmt: str, data: bytes, auto: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.zip"
        src.write_bytes(data)
        work = Path(tmp) / "work"
        work.mkdir()
        source: SourceFormat = "auto" if auto else _format_named(fmt.removesuffix("-video"))
        options = ConvertOptions(source_format=source, target_format="tfrecord", masks=auto)
        error: TfdropError | None = None
        try:
            convert(src, Path(tmp) / "out.zip", options, workdir=work)
        except TfdropError as exc:
            error = exc
        if error is not None:
            assert error.to_dict()["kind"]
            assert not (Path(tmp) / "out.zip").exists()  # nothing published on failure


def test_seeds_of_every_format_convert_cleanly() -> None:
    for fmt, data in seeds().items():
        _convert_must_only_raise_tfdrop_errors(fmt, data, auto=False)
    assert sorted(seeds()) == ["coco", "cvat", "cvat-video", "images", "tfrecord", "voc", "yolo"]


@FUZZ
@given(case=damaged_archives(), auto=st.booleans())
def test_every_format_reader_raises_only_tfdrop_errors_on_damaged_archives(
    case: tuple[str, bytes], auto: bool
) -> None:
    _convert_must_only_raise_tfdrop_errors(*case, auto=auto)


@cache
def _framed() -> bytes:
    return tfrecord_bytes(3, tag="fr")


@FUZZ_CODEC
@given(st.data(), st.integers(1, 64))
def test_framing_decoder_raises_only_tfdrop_errors_on_damaged_streams(
    data: st.DataObject, chunk: int
) -> None:
    stream = data.draw(mutated(_framed(), text=False))
    dec = RecordDecoder(max_record_size=1 << 20)
    try:
        for i in range(0, len(stream), chunk):
            dec.feed(stream[i : i + chunk])
            while (rec := dec.next_record()) is not NEED_DATA:
                assert isinstance(rec, bytes)
        dec.feed(b"")
        while isinstance(dec.next_record(), bytes):
            pass
    except TfdropError:
        pass


@cache
def _example() -> bytes:
    item = Item(
        name="a.png",
        width=10,
        height=20,
        image=b"\x89PNG....",
        image_format="png",
        objects=(
            Annotation("cat", Box(0.1, 0.2, 0.3, 0.4), label_id=1, difficult=True),
            Annotation("dog", Box(0.5, 0.5, 1.0, 1.0), label_id=2, truncated=True),
        ),
    )
    return encode_example(item)


@FUZZ_CODEC
@given(st.data())
def test_example_mapper_raises_only_tfdrop_errors_on_damaged_examples(
    data: st.DataObject,
) -> None:
    raw = data.draw(mutated(_example(), text=False))
    try:
        item = decode_example(raw)
    except TfdropError:
        return
    # box ranges are the schema check's job (convert runs it), not the mapper's
    assert len(item.objects) <= 2 + len(raw)


_LABEL_MAP = (
    b"# a comment\nitem {\n\tid: 1\n\tname: 'cat'\n\tdisplay_name: \"Cat\"\n}\n\n"
    b'item: {\n  name: "dog"\n  id: 2\n}\n'
)


@FUZZ_CODEC
@given(st.data())
def test_label_map_parser_raises_only_tfdrop_errors_on_damaged_text(data: st.DataObject) -> None:
    text = data.draw(mutated(_LABEL_MAP, text=True))
    try:
        label_map = parse_label_map(text, file="fuzz.pbtxt")
    except TfdropError:
        return
    ids = [i.id for i in label_map.items]
    assert len(ids) == len(set(ids))


def test_encode_record_is_used_by_the_framing_seed() -> None:
    # the framing seed is three records: a mutation-free decode gives them back
    dec = RecordDecoder()
    dec.feed(_framed())
    dec.feed(b"")
    records = []
    while isinstance(rec := dec.next_record(), bytes):
        records.append(rec)
    assert len(records) == 3
    assert encode_record(records[0]) == _framed()[: len(encode_record(records[0]))]


def test_xml_declaring_an_unknown_encoding_is_a_format_error(tmp_path: Path) -> None:
    """Found by this fuzzer: ``encoding='utf-1'`` escaped the VOC reader as a LookupError."""
    members = [
        (n, b"<?xml version='1.0' encoding='utf-1'?><annotation>" if n.endswith(".xml") else d)
        for n, d in _members(seeds()["voc"])
    ]
    src = tmp_path / "voc.zip"
    src.write_bytes(_rezip(members))
    with pytest.raises(FormatError, match="utf-1"):
        convert(src, tmp_path / "out.zip", ConvertOptions(source_format="voc"))


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e999", "99999999999999999999999", "-5"])
def test_cvat_image_size_that_is_not_finite_is_a_format_error(tmp_path: Path, value: str) -> None:
    """Found by this fuzzer: ``width="inf"`` escaped the CVAT reader as an OverflowError,
    ``width="1e23"`` as a ValueError from the record encoder."""
    members = []
    for n, d in _members(seeds()["cvat"]):
        if n == "annotations.xml":
            d = re.sub(rb'width="\d+"', f'width="{value}"'.encode(), d, count=1)
        members.append((n, d))
    src = tmp_path / "cvat.zip"
    src.write_bytes(_rezip(members))
    with pytest.raises(TfdropError, match=r"not a number|not a pixel size"):
        convert(src, tmp_path / "out.zip", ConvertOptions(source_format="cvat"))


def test_example_missing_one_box_coordinate_is_a_schema_error() -> None:
    """Found by this fuzzer: a renamed ``bbox/ymin`` key made decode_example raise IndexError."""
    raw = _example().replace(b"image/object/bbox/ymin", b"hmage/object/bbox/ymin")
    with pytest.raises(SchemaError, match="missing") as info:
        decode_example(raw)
    assert info.value.key == "image/object/bbox/ymin"


@pytest.mark.parametrize(
    ("field", "value"),
    [("id", 2**63), ("id", -(2**64)), ("width", 2**64), ("height", 2**40), ("width", 1e300)],
)
def test_coco_numbers_beyond_64_bits_are_format_errors(
    tmp_path: Path, field: str, value: float
) -> None:
    """Found by this fuzzer: an image id or width past int64 escaped as an OverflowError."""
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 16, "height": 16}],
        "annotations": [],
        "categories": [{"id": 1, "name": "cat"}],
    }
    doc["images"][0][field] = value
    src = tmp_path / "coco.zip"
    src.write_bytes(_rezip([("annotations/instances_default.json", json.dumps(doc).encode())]))
    with pytest.raises(FormatError, match=r"range|not a positive integer"):
        convert(src, tmp_path / "out.zip", ConvertOptions(source_format="coco"))


def test_an_empty_zip_is_a_tfdrop_error_not_a_value_error(tmp_path: Path) -> None:
    """Found by this fuzzer: a zip listing no members raised ValueError in the layout check."""
    src = tmp_path / "empty.zip"
    src.write_bytes(_rezip([]))
    with pytest.raises(TfdropError):
        convert(src, tmp_path / "out.zip", ConvertOptions())

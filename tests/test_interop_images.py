"""Which images TensorFlow can decode, and which tfdrop calls complete: the same ones.

``codec.imagehead.image_complete`` is what makes ``convert`` refuse, and ``validate`` flag, a
JPEG or PNG cut before its end marker: TensorFlow's ``decode_image`` refuses those, and
training would stop at the record. Here real TensorFlow decides on each case, whole and cut at
every offset: the shapes real files have (EXIF thumbnails, fill bytes, stray bytes a writer
left between segments, trailers phones append, text chunks, tables and comments between a
progressive JPEG's scans), and the cuts outside attacks 16 and 17 found misjudged (a cut at a
thumbnail's own end, at an FF D9 inside a comment, or inside a table between scans; a PNG cut
before its IEND with ``IEND`` in a text chunk).
"""

from __future__ import annotations

import io
import struct
import zlib
from types import ModuleType

import pytest
from PIL import Image

from tfdrop.codec.imagehead import image_complete, image_kind

pytestmark = pytest.mark.interop


def _jpeg(size: tuple[int, int] = (24, 16), **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 30, 200)).save(buf, "JPEG", quality=80, **kw)
    return buf.getvalue()


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _at_marker(data: bytes, marker: int) -> int:
    """Where the first segment with ``marker`` starts (walking by lengths from SOI)."""
    pos = 2
    while data[pos + 1] != marker:
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return pos


def _third_scan(data: bytes) -> int:
    """Where a progressive JPEG's third start of scan is (a scan's data never holds FF DA)."""
    first = data.index(b"\xff\xda")
    return data.index(b"\xff\xda", data.index(b"\xff\xda", first + 2) + 2)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with_text(text: bytes) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (1, 2, 3)).save(buf, "PNG")
    png = buf.getvalue()
    iend = png.rindex(b"IEND") - 4
    return png[:iend] + _chunk(b"tEXt", b"Comment\x00" + text) + png[iend:]


def _cases() -> dict[str, bytes]:
    plain = _jpeg()
    thumb = _jpeg((8, 8))
    dqt = _at_marker(plain, 0xDB)
    app0 = _at_marker(plain, 0xE0)
    app0_len = struct.unpack_from(">H", plain, app0 + 2)[0]
    progressive = _jpeg(progressive=True)
    sof2 = _at_marker(progressive, 0xC2)
    trailer = b"\x00\x00\x00\x00SEFHtrailer after the end"
    third = _third_scan(progressive)
    # a quantization table no frame uses, between scans, whose values are FF D9 (outside
    # attack 17: cjpeg's luma table at quality 6 holds 255, 217)
    table = _segment(0xDB, b"\x03" + bytes([0xFF, 0xD9]) * 32)
    return {
        "plain": plain,
        "progressive": progressive,
        "trailer": plain + trailer,
        "exif thumbnail": plain[:2] + _segment(0xE1, b"Exif\x00\x00" + thumb) + plain[2:],
        "fill bytes": plain[:dqt] + b"\xff\xff\xff" + plain[dqt:],
        "FF D9 in a comment": plain[:dqt] + _segment(0xFE, b"ab\xff\xd9cd") + plain[dqt:],
        # libjpeg skips bytes that are no marker ("extraneous bytes before marker") and decodes
        "stray bytes, trailer": plain[:dqt] + b"\x00\x00" + plain[dqt:] + trailer,
        "APP0 length one short, trailer": (
            plain[: app0 + 2] + (app0_len - 1).to_bytes(2, "big") + plain[app0 + 4 :] + trailer
        ),
        "progressive, stray byte": progressive[:sof2] + b"\x07" + progressive[sof2:] + trailer,
        "FF D9 in a table between scans": progressive[:third] + table + progressive[third:],
        "FF D9 in a comment between scans": (
            progressive[:third] + _segment(0xFE, b"ab\xff\xd9cd") + progressive[third:]
        ),
        "png": _png_with_text(b"plain text"),
        "png with IEND in its text": _png_with_text(b"\x00\x00\x00\x00IEND\xaeB`\x82"),
        "png, trailer": _png_with_text(b"x") + b"junk after IEND",
    }


CASES = _cases()


def _decodes(tf: ModuleType, data: bytes) -> bool:
    try:
        tf.io.decode_image(data, expand_animations=False)
    except tf.errors.OpError:
        return False
    return True


@pytest.mark.parametrize("name", list(CASES))
def test_tensorflow_decodes_each_whole_image_and_tfdrop_calls_it_complete(
    tf: ModuleType, name: str
) -> None:
    data = CASES[name]
    assert _decodes(tf, data), name
    assert image_complete(data), name


@pytest.mark.parametrize(
    "name", ["plain", "exif thumbnail", "FF D9 in a comment", "stray bytes, trailer",
             "FF D9 in a table between scans", "FF D9 in a comment between scans", "png",
             "png with IEND in its text"],
)  # fmt: skip
def test_an_image_cut_anywhere_before_its_end_is_refused_by_both(tf: ModuleType, name: str) -> None:
    """Every cut from the first byte to the end marker: TensorFlow refuses each, and so does
    image_complete (a cut after the end marker, in the trailer, is whole for both)."""
    data = CASES[name]
    png = name.startswith("png")
    end = data.rindex(b"IEND") + 8 if png else data.rindex(b"\xff\xd9") + 2
    start = 8 if png else 3  # from a whole magic number on (before it: not this check's)
    disagree = [
        cut for cut in range(start, end) if image_complete(data[:cut]) != _decodes(tf, data[:cut])
    ]
    assert disagree == [], f"{name}: cut at {disagree[:10]}"
    assert all(image_complete(data[:cut]) for cut in range(end, len(data) + 1))


def test_a_jpeg_without_its_end_before_another_jpeg_is_cut_short(tf: ModuleType) -> None:
    """Files joined after a cut: TensorFlow refuses the second start of image."""
    whole = CASES["plain"]
    joined = whole[:-2] + whole
    assert not _decodes(tf, joined)
    assert not image_complete(joined)


def test_seventy_thousand_segments_before_the_image_are_walked_to_its_end(tf: ModuleType) -> None:
    """A real JPEG behind 70,000 comments, each holding FF D9, and a PNG behind 70,000
    private chunks (outside attack 18: past 65,536 the walk judged by the last bytes, so a cut
    inside the comments passed and the whole file with a trailer did not)."""
    plain, png = CASES["plain"], CASES["png"]
    jpeg = plain[:2] + _segment(0xFE, b"\xff\xd9") * 70_000 + plain[2:]
    many = png[:33] + _chunk(b"prVt", b"") * 70_000 + png[33:]  # after the IHDR chunk
    for whole, cut in ((jpeg, 2 + 6 * 69_000), (many, 33 + 12 * 69_000 + 9)):
        assert _decodes(tf, whole + b"trailer")
        assert image_complete(whole + b"trailer")
        assert not _decodes(tf, whole[:cut])
        assert not image_complete(whole[:cut])


def test_a_start_of_image_without_a_marker_after_it_is_no_jpeg(tf: ModuleType) -> None:
    """TensorFlow takes a JPEG by its first three bytes (FF D8 FF): with a stray byte after
    the start of image it is no image to it, and to tfdrop neither (outside attack 17)."""
    stray = CASES["plain"][:2] + b"\x00" + CASES["plain"][2:]
    assert not _decodes(tf, stray)
    assert image_kind(stray) is None

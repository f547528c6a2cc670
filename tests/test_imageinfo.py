"""Image sizes from headers: the JPEG/PNG fast path agrees with Pillow, bad bytes are errors."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from conftest import require_corpus
from tfdrop.errors import FormatError
from tfdrop.formats.common.imageinfo import ImageInfo, probe


def _encode(mode: str, size: tuple[int, int], fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_encode("RGB", (123, 45), "JPEG"), ImageInfo("jpeg", 123, 45)),
        (_encode("RGB", (640, 1), "JPEG", progressive=True), ImageInfo("jpeg", 640, 1)),
        (_encode("L", (3, 4000), "JPEG"), ImageInfo("jpeg", 3, 4000)),
        (_encode("CMYK", (17, 19), "JPEG"), ImageInfo("jpeg", 17, 19)),
        (
            _encode("RGB", (50, 60), "JPEG", exif=b"Exif\x00\x00" + b"\x00" * 64),
            ImageInfo("jpeg", 50, 60),
        ),
        (_encode("RGBA", (7, 9), "PNG"), ImageInfo("png", 7, 9)),
        (_encode("P", (1, 1), "PNG"), ImageInfo("png", 1, 1)),
        (_encode("RGB", (11, 13), "BMP"), ImageInfo("bmp", 11, 13)),
    ],
)
def test_probe_reads_format_and_size_from_the_header(data: bytes, expected: ImageInfo) -> None:
    assert probe(data, name="x") == expected
    assert probe(io.BytesIO(data), name="x") == expected  # the stream path (Pillow)


def test_probe_agrees_with_pillow_on_every_corpus_image() -> None:
    root = require_corpus()
    images = [p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert images
    for path in images:
        data = path.read_bytes()
        try:
            with Image.open(io.BytesIO(data)) as img:
                want = img.size
        except OSError:
            with pytest.raises(FormatError):
                probe(data, name=path.name)
            continue
        info = probe(data, name=path.name)
        assert (info.width, info.height) == want, path


@pytest.mark.parametrize("cut", [2, 10, 30])
def test_a_truncated_header_is_a_format_error_naming_the_member(cut: int) -> None:
    data = _encode("RGB", (20, 20), "JPEG")[:cut]
    with pytest.raises(FormatError) as info:
        probe(data, name="images/a.jpg")
    assert info.value.member == "images/a.jpg"


def test_bytes_that_are_no_image_are_a_format_error() -> None:
    with pytest.raises(FormatError, match="not a readable image"):
        probe(b"GIF87a-not-really", name="x.gif")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "the image is empty (0 bytes)"),
        (b"hello, world", "starts with bytes 68 65 6c 6c 6f 2c 20 77"),
        (b"\xff\xd8\xff", "starts as a JPEG but is cut short"),
    ],
)
def test_an_unreadable_image_says_what_is_wrong_without_object_reprs(
    data: bytes, says: str
) -> None:
    # found by the outside attack: "cannot identify image file <_io.BytesIO object at 0x..>"
    for given in (data, io.BytesIO(data)):
        with pytest.raises(FormatError) as info:
            probe(given, name="images/a.jpg")
        assert says in str(info.value)
        assert " object at 0x" not in str(info.value)
        assert info.value.member == "images/a.jpg"


class _Unseekable(io.RawIOBase):
    """A stream that reads but cannot seek, as a zip member's."""

    def __init__(self, data: bytes) -> None:
        self._buf = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        return self._buf.readinto(b)


def _stream(data: bytes) -> io.BufferedReader:
    return io.BufferedReader(_Unseekable(data))


def test_a_stream_that_cannot_seek_is_probed_as_its_bytes_are() -> None:
    # found by an outside attack: a JPEG cut after its frame header, streamed from a zip
    # member, was "the image is empty (0 bytes)" (Pillow had read the stream to its end)
    jpeg = _encode("RGB", (64, 48), "JPEG")
    cut = jpeg[: jpeg.find(b"\xff\xc0") + 19]
    assert probe(_stream(cut), name="a.jpg") == probe(cut, name="a.jpg")
    assert probe(_stream(cut), name="a.jpg") == ImageInfo("jpeg", 64, 48)
    bmp = _encode("RGB", (5, 3), "BMP")
    assert probe(_stream(bmp), name="b.bmp") == ImageInfo("bmp", 5, 3)
    with pytest.raises(FormatError, match="not a readable image") as err:
        probe(_stream(jpeg[:10]), name="c.jpg")
    assert "empty" not in str(err.value)


def test_image_complete_wants_the_end_marker_tensorflow_wants() -> None:
    # TF's decode_image refuses a JPEG without its EOI and a PNG without IEND, and takes
    # bytes after either (checked with TensorFlow when this was written; outside attack 15)
    from tfdrop.codec.imagehead import image_complete

    jpeg = _encode("RGB", (64, 48), "JPEG")
    progressive = _encode("RGB", (64, 48), "JPEG", progressive=True)
    thumb = _encode("RGB", (8, 8), "JPEG")
    png = _encode("RGB", (64, 48), "PNG")
    for whole in (jpeg, progressive, png, jpeg + b"\xff\xdatrailer", png + b"junk"):
        assert image_complete(whole)
    for cut in (jpeg[:-2], jpeg[: len(jpeg) // 2], progressive[:-2], png[:-12], png[:-4]):
        assert not image_complete(cut)
    # a thumbnail's own EOI, before the main image's first scan, does not end it
    with_thumb = jpeg[:2] + b"\xff\xe1" + (len(thumb) + 2).to_bytes(2, "big") + thumb + jpeg[2:]
    assert image_complete(with_thumb)
    assert not image_complete(with_thumb[: len(with_thumb) - 40])
    assert image_complete(b"GIF89a")  # not a JPEG or PNG: not this check's to judge

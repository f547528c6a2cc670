"""Image file facts from headers only: format and size (Pillow reads the header, no decode).

SPEC.md: images are embedded unchanged, never re-encoded; their size comes from the annotation
or from the image header. ``image/format`` is "jpeg" or "png" as TF's decoders expect.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Final

from tfdrop.codec.imagehead import jpeg_size as _jpeg_size
from tfdrop.codec.imagehead import png_size
from tfdrop.errors import FormatError

if TYPE_CHECKING:
    from tfdrop.archive.source import Source

IMAGE_EXTENSIONS: Final = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
_PIL_FORMATS: Final = {"JPEG": "jpeg", "PNG": "png", "BMP": "bmp", "GIF": "gif", "TIFF": "tiff"}
_PIL_FORMATS_WEBP: Final = {"WEBP": "webp", "MPO": "jpeg"}
_KNOWN: Final = "JPEG, PNG, BMP, GIF, TIFF, WebP"
OPEN_FORMATS: Final = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")
"""The only Pillow plugins tfdrop lets open an image (``Image.open(..., formats=...)``): what
the readers accept. Pillow would otherwise try every plugin it has, and some decode in full
just to open (an ICO holding a 13000 x 13000 PNG, EPS through Ghostscript). An MPO (a
camera's multi-picture JPEG) opens through JPEG's."""
_MAGIC: Final = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG", "PNG"),
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WebP"),
)
_OBJECT_REPR: Final = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    format: str
    width: int
    height: int


def is_image_name(name: str) -> bool:
    """Whether a member name looks like an image file (by extension, case-insensitive)."""
    dot = name.rfind(".")
    return dot > name.rfind("/") and name[dot:].lower() in IMAGE_EXTENSIONS


def format_from_name(name: str) -> str:
    """``image/format`` for a file name: jpg/jpeg -> "jpeg", png -> "png", else the extension."""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return "jpeg" if ext in ("jpg", "jpeg", "jpe") else ext


def _unidentified(stream: IO[bytes]) -> str:
    """What is wrong with bytes no image reader knows, in words (Pillow's message shows the
    stream object's repr): empty, or which bytes it starts with."""
    head = b""
    with contextlib.suppress(OSError, ValueError):
        stream.seek(0)
        head = stream.read(8)
    if not head:
        return "not a readable image: the image is empty (0 bytes)"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return f"not a readable image: it starts as a {kind} but is cut short or damaged"
    return (
        f"not a readable image: it starts with bytes {head.hex(' ')}, which begin none of "
        f"the image formats tfdrop reads ({_KNOWN})"
    )


def probe(data: bytes | IO[bytes], *, name: str) -> ImageInfo:
    """Format and size from the header of an image; :class:`FormatError` naming it otherwise.

    JPEG and PNG headers are read directly (about 20x faster than opening with Pillow, which
    still answers for every other format and for anything the fast path does not recognise).
    """
    if not isinstance(data, bytes) and not data.seekable():
        # Pillow reads a stream it cannot seek whole anyway, and what is wrong with it could
        # not be told after (a zip member: a JPEG cut short was "empty (0 bytes)", found by
        # an outside attack); read as bytes, its header is also read the fast way
        data = data.read()
    if isinstance(data, bytes):
        if (size := png_size(data)) is not None:
            return ImageInfo("png", *size)
        if (size := _jpeg_size(data)) is not None:
            return ImageInfo("jpeg", *size)
    from PIL import Image, UnidentifiedImageError  # only here: ~8 ms a JPEG or PNG never needs

    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            # only the header is read here: what Pillow warns of (a bomb, a bad EXIF) is for
            # whoever decodes the pixels; nothing of it may reach the terminal
            warnings.simplefilter("ignore")
            with Image.open(stream, formats=OPEN_FORMATS) as img:
                fmt = img.format or ""
                width, height = img.size
    except UnidentifiedImageError:
        raise FormatError(_unidentified(stream), member=name) from None
    except (Image.DecompressionBombError, OSError, ValueError) as exc:
        message = _OBJECT_REPR.sub("the image", str(exc))
        raise FormatError(f"not a readable image: {message}", member=name) from None
    kind = _PIL_FORMATS.get(fmt) or _PIL_FORMATS_WEBP.get(fmt) or fmt.lower()
    return ImageInfo(kind, width, height)


def probe_member(source: Source, name: str, data: bytes | None = None) -> ImageInfo:
    """:func:`probe` of image member ``name``: its ``data`` when already read, else only the
    header, streamed from the member."""
    if data is not None:
        return probe(data, name=name)
    with source.open(name) as f:
        return probe(f, name=name)

"""JPEG and PNG facts from the first header bytes only: which of the two, and the pixel size.

Pure (no Pillow, no I/O): the schema check uses it on ``image/encoded`` and instance masks,
:mod:`tfdrop.formats.imageinfo` for probing image files. A JPEG's size sits in its first
start-of-frame segment, found by skipping segments by their lengths (no decoding).
"""

from __future__ import annotations

import re
import struct
from typing import Final

PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC: Final = b"\xff\xd8"
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE: Final = frozenset((0x01, *range(0xD0, 0xD8)))


def image_kind(data: bytes) -> str | None:
    """``"jpeg"`` or ``"png"`` from the magic bytes, else ``None``."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    return None


_JPEG_EOI: Final = b"\xff\xd9"
_PNG_IEND: Final = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # IEND: no data, then its CRC-32
_MARKER: Final = re.compile(rb"[^\xff]*\xff+([^\xff])", re.DOTALL)
"""The next JPEG marker as libjpeg's ``next_marker`` finds it: bytes that are not 0xFF are
skipped (it warns "extraneous bytes before marker" and decodes on), so are 0xFF fill bytes."""
MAX_HEADER_STEPS: Final = 1 << 16
"""Most markers (JPEG) or chunks (PNG) :func:`image_complete` walks before it judges by the
last bytes alone: real files have tens (a PNG of 64 MiB in 8 KiB chunks, 8,192); a file made
of millions of tiny segments is judged in bounded time."""


def image_complete(data: bytes) -> bool:
    """Whether a JPEG or PNG reaches its end marker: TensorFlow's decoder refuses one that
    does not, even when only the marker is missing; bytes after the marker are fine.

    JPEG: an end-of-image after the first start-of-scan, found by walking the markers as
    libjpeg does (an EXIF thumbnail's own scan and EOI lie inside its APP1 segment, an FF D9
    in a comment inside the comment). PNG: an IEND chunk, found by walking the chunks (an
    ``IEND`` inside a text chunk is text). True for other data (not this function's to
    judge)."""
    if data.startswith(JPEG_MAGIC):
        sos = _first_scan(data)
        if sos == -2:
            return data.endswith(_JPEG_EOI)
        # entropy-coded data stuffs every 0xFF, so an EOI after the first scan is the end
        return sos >= 0 and (data.endswith(_JPEG_EOI) or data.find(_JPEG_EOI, sos) >= 0)
    if data.startswith(PNG_MAGIC):
        return _has_iend(data)
    return True


def _first_scan(data: bytes) -> int:
    """Where a JPEG's first start-of-scan marker is; -1 if none (the data ends first, or an
    EOI comes before it), -2 past :data:`MAX_HEADER_STEPS` markers."""
    pos, end = 2, len(data)
    for _ in range(MAX_HEADER_STEPS):
        if pos + 1 < end and data[pos] == 0xFF and 0 < data[pos + 1] < 0xFF:
            marker, pos = data[pos + 1], pos + 2  # the usual case: one marker after another
        else:
            found = _MARKER.match(data, pos)
            if found is None:
                return -1
            marker, pos = data[found.end() - 1], found.end()
        if marker == 0xDA:
            return pos - 2
        if marker == 0xD9:
            return -1
        if marker and marker not in _STANDALONE:  # FF 00 is skipped, as libjpeg does
            if pos + 2 > end:
                return -1
            pos += struct.unpack_from(">H", data, pos)[0]
    return -2


def _has_iend(data: bytes) -> bool:
    """Whether walking a PNG's chunks by their lengths meets a whole IEND chunk (beyond
    :data:`MAX_HEADER_STEPS` chunks: whether it ends with one)."""
    pos, end = 8, len(data)
    for _ in range(MAX_HEADER_STEPS):
        if pos + 12 > end:
            return False
        length: int = struct.unpack_from(">I", data, pos)[0]
        if data[pos + 4 : pos + 8] == b"IEND":
            return pos + 12 + length <= end
        pos += 12 + length
    return data.endswith(_PNG_IEND)


def png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's IHDR (the first 24 bytes), else None."""
    if len(data) >= 24 and data.startswith(PNG_MAGIC) and data[12:16] == b"IHDR":
        w, h = struct.unpack_from(">II", data, 16)
        return (w, h) if w and h else None
    return None


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JPEG's first start-of-frame segment, else None."""
    if not data.startswith(JPEG_MAGIC):
        return None
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF:
            if pos + 9 > end:
                return None
            h, w = struct.unpack_from(">HH", data, pos + 5)
            return (w, h) if w and h else None
        if marker == 0xDA or length < 2:  # scan data before any frame header: malformed
            return None
        pos += 2 + length
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a PNG or JPEG from its header, else None."""
    return png_size(data) or jpeg_size(data)

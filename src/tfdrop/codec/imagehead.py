"""JPEG and PNG facts from the first header bytes only: which of the two, and the pixel size.

Pure (no Pillow, no I/O): the schema check uses it on ``image/encoded`` and instance masks,
:mod:`tfdrop.formats.imageinfo` for probing image files. A JPEG's size sits in its first
start-of-frame segment, found by skipping segments by their lengths (no decoding).
"""

from __future__ import annotations

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
_JPEG_SOS: Final = b"\xff\xda"
_PNG_IEND: Final = b"IEND\xaeB`\x82"  # the chunk type and its CRC-32


def image_complete(data: bytes) -> bool:
    """Whether a JPEG or PNG reaches its end marker (JPEG: an end-of-image after the first
    start-of-scan; PNG: the IEND chunk). TensorFlow's decoder refuses one that does not,
    even when only the marker is missing; bytes after the marker are fine. True for other
    data (not this function's to judge)."""
    if data.startswith(JPEG_MAGIC):
        if data.endswith(_JPEG_EOI):
            return True
        # entropy-coded data stuffs every 0xFF, so an EOI after the first scan began is the
        # end; the scan is found by segment lengths, past an EXIF thumbnail (which has its
        # own scan and EOI inside its APP1 segment)
        sos = _first_scan(data)
        return sos >= 0 and data.find(_JPEG_EOI, sos) >= 0
    if data.startswith(PNG_MAGIC):
        return data.endswith(_PNG_IEND) or data.find(_PNG_IEND, 33) >= 0
    return True


def _first_scan(data: bytes) -> int:
    """Where a JPEG's first start-of-scan marker is, walking its segments; -1 if none."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return -1
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker in _STANDALONE:
            pos += 2
        elif marker == _JPEG_SOS[1]:
            return pos
        else:
            pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return -1


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

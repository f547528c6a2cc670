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

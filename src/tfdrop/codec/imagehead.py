"""JPEG and PNG facts from the first header bytes only: which of the two, and the pixel size.

Pure (no Pillow, no I/O): the schema check uses it on ``image/encoded`` and instance masks,
:mod:`tfdrop.formats.imageinfo` for probing image files. A JPEG's size sits in its first
start-of-frame segment, found by skipping segments by their lengths (no decoding).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import Final

from tfdrop.codec.wire import jpeg_end as _jpeg_end_c

PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC: Final = b"\xff\xd8\xff"  # what TensorFlow takes for a JPEG (SOI, a marker)
# JPEG start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE: Final = frozenset((0x01, *range(0xD0, 0xD8)))
_SKIPPED: Final = _STANDALONE | {0x00, 0xFF}
"""Bytes after 0xFF that start no segment: stuffing, fill, TEM and the restart markers."""


def image_kind(data: bytes) -> str | None:
    """``"jpeg"`` or ``"png"`` from the magic bytes, else ``None``."""
    if data.startswith(PNG_MAGIC):
        return "png"
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    return None


_MARKER: Final = re.compile(
    rb"(?:[^\xff]*+\xff++[\x00\x01\xd0-\xd7])*+[^\xff]*+\xff++([^\xff])", re.DOTALL
)
"""The next JPEG marker that starts a segment, as libjpeg's ``next_marker`` finds it: bytes
that are not 0xFF are skipped (it warns "extraneous bytes before marker" and decodes on), so
are 0xFF fill bytes, FF 00 and the standalone markers (TEM, RST; possessive, so a run of
millions of them is one pass)."""
_SCAN_END: Final = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""The marker that ends entropy-coded data: 0xFF then a byte that is not a stuffed zero, a
restart marker or more fill (one pair, so a long run of 0xFF costs one pass)."""


def image_complete(data: bytes) -> bool:
    """Whether a JPEG or PNG reaches its end marker: TensorFlow's decoder refuses one that
    does not, even when only the marker is missing; bytes after the marker are fine.

    JPEG: the markers walked as libjpeg reads them, scan by scan (:func:`jpeg_end`), to an
    end of image after a scan (an EXIF thumbnail's own EOI lies inside its APP1 segment, an
    FF D9 in a comment or a table between scans inside that segment). PNG: an IEND chunk,
    found by walking the chunks (an ``IEND`` inside a text chunk is text). True for other
    data (not this function's to judge)."""
    if data.startswith(JPEG_MAGIC):
        return jpeg_end(data) == 1
    if data.startswith(PNG_MAGIC):
        return _has_iend(data)
    return True


def jpeg_end_py(data: bytes) -> int:
    """1 when a JPEG's markers, walked from its SOI as libjpeg reads them, end with an EOI
    after a scan; 0 when the data ends first (or an EOI comes before any scan, or a second
    SOI). Between markers a segment is skipped by its length, and after a start of scan its
    entropy-coded data up to the next marker that is not a restart (``_wire.c`` ``jpeg_end``
    is the same walk). No bound on the markers: the walk is linear in the data, and a
    judgement by the last bytes alone is wrong both ways (a cut inside comments holding
    FF D9 would pass, a whole file with a trailer would not)."""
    pos, end = 2, len(data)
    scanned = entropy = False
    while True:  # each turn moves on by at least two bytes: linear in the data, no bound
        marker, pos = _next_marker(data, pos, entropy)
        if marker == 0xD9:
            return int(scanned)
        if marker < 0 or marker == 0xD8:  # the data ended; a second SOI ("two SOI markers")
            return 0
        entropy = marker == 0xDA
        if entropy:
            scanned = True
        elif marker in _STANDALONE:  # a TEM that ended a scan; header markers follow
            continue
        length = struct.unpack_from(">H", data, pos)[0] if pos + 2 <= end else end
        pos += length
        if pos > end:
            return 0


def _next_marker(data: bytes, pos: int, entropy: bool) -> tuple[int, int]:
    """The next marker that starts a segment (or ends the image) and the position after it
    (-1 when the data ends first): in entropy-coded data the next one that is not a stuffed
    zero or a restart, else the next past bytes, fill and standalone markers (all skipped,
    as libjpeg does)."""
    if entropy:
        found = _SCAN_END.search(data, pos)
    elif pos + 1 < len(data) and data[pos] == 0xFF and data[pos + 1] not in _SKIPPED:
        return data[pos + 1], pos + 2  # the usual case: one segment after another
    else:
        found = _MARKER.match(data, pos)
    if found is None:
        return -1, pos
    return data[found.end() - 1], found.end()


jpeg_end: Callable[[bytes], int] = _jpeg_end_c if _jpeg_end_c is not None else jpeg_end_py
""":func:`jpeg_end_py`, in C when the accelerator is built (and not off)."""


def _has_iend(data: bytes) -> bool:
    """Whether walking a PNG's chunks by their lengths meets a whole IEND chunk."""
    pos, end = 8, len(data)
    while pos + 12 <= end:  # each chunk is at least 12 bytes: linear in the data
        length: int = struct.unpack_from(">I", data, pos)[0]
        if data[pos + 4 : pos + 8] == b"IEND":
            return pos + 12 + length <= end
        pos += 12 + length
    return False


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

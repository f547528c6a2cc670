"""CVAT's mask run-length encoding, as CVAT for images/video 1.1 writes ``<mask rle=...>``.

Follows CVAT's own code (``cvat-core`` ``mask2Rle``/``rle2Mask`` and the dataset manager's
``cvat.py`` dump/load): a ``<mask>`` carries ``left top width height`` (the sub-rectangle of the
image it covers; CVAT stores ``right = left + width - 1``) and ``rle``, comma-separated run
lengths over that rectangle's pixels in row-major order, alternating value 0, 1, 0, ... and
always starting with a background run (``0`` when the first pixel is set). Runs may end early:
CVAT fills the rest of the rectangle with background.

Pure functions over ``bytes`` of 0/1 pixels; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tfdrop.errors import FormatError
from tfdrop.limits import DEFAULT_LIMITS, exceeded

_ZERO: Final = b"\x00"
_ONE: Final = b"\x01"


def parse_counts(
    text: str,
    *,
    max_values: int = DEFAULT_LIMITS.max_values_per_feature,
    max_number_length: int = DEFAULT_LIMITS.max_number_length,
) -> list[int]:
    """``"3, 1, 2"`` -> ``[3, 1, 2]``; :class:`FormatError` for anything but non-negative ints.

    At most ``max_values`` counts (``max_values_per_feature``), counted before splitting, each
    at most ``max_number_length`` characters.
    """
    n = text.count(",") + 1
    if n > max_values:
        raise exceeded("max_values_per_feature", n, max_values)
    parts = text.split(",") if text.strip() else []
    longest = max(map(len, parts), default=0)
    if longest > max_number_length and max(len(p.strip()) for p in parts) > max_number_length:
        raise exceeded("max_number_length", max(len(p.strip()) for p in parts), max_number_length)
    try:
        counts = [int(part) for part in parts]
    except ValueError:
        raise FormatError(f"mask rle is not a list of integers: {text[:40]!r}") from None
    if any(c < 0 for c in counts):
        raise FormatError("mask rle has a negative run length")
    return counts


def format_counts(counts: Sequence[int]) -> str:
    """Run lengths as CVAT writes them: ``"3, 1, 2"`` (a Python list without its brackets)."""
    return ", ".join(str(c) for c in counts)


def decode(
    counts: Sequence[int],
    width: int,
    height: int,
    *,
    max_pixels: int = DEFAULT_LIMITS.max_mask_pixels,
) -> bytes:
    """Row-major 0/1 pixels of a ``width`` x ``height`` rectangle from CVAT run lengths
    (the rectangle checked against ``max_pixels`` before anything is allocated)."""
    if width <= 0 or height <= 0:
        raise FormatError(f"mask rectangle {width}x{height} is empty")
    total = width * height
    if total > max_pixels:
        raise exceeded("max_mask_pixels", total, max_pixels)
    if sum(counts) > total:
        raise FormatError(
            f"mask rle covers {sum(counts)} pixels but its rectangle {width}x{height} has {total}"
        )
    out = bytearray()
    for i, count in enumerate(counts):
        out += (_ONE if i % 2 else _ZERO) * count
    out += _ZERO * (total - len(out))
    return bytes(out)


def encode(bits: bytes) -> list[int]:
    """CVAT run lengths of row-major 0/1 pixels (first run: background, possibly 0)."""
    counts: list[int] = []
    pos, n = 0, len(bits)
    value = 0
    while pos < n:
        # bytes.find jumps a whole run in C: one Python step per run, not per pixel
        nxt = bits.find(_ZERO if value else _ONE, pos)
        end = n if nxt < 0 else nxt
        counts.append(end - pos)
        pos = end
        value ^= 1
    if not counts:
        counts.append(0)
    return counts


def paste(
    bits: bytes,
    left: int,
    top: int,
    width: int,
    height: int,
    image_w: int,
    image_h: int,
    *,
    max_pixels: int = DEFAULT_LIMITS.max_mask_pixels,
) -> bytes:
    """The rectangle's pixels placed into a full ``image_w`` x ``image_h`` 0/1 buffer."""
    if image_w * image_h > max_pixels:
        raise exceeded("max_mask_pixels", image_w * image_h, max_pixels)
    if left < 0 or top < 0 or left + width > image_w or top + height > image_h:
        raise FormatError(
            f"mask rectangle left={left} top={top} {width}x{height} is outside the "
            f"{image_w}x{image_h} image"
        )
    full = bytearray(image_w * image_h)
    for row in range(height):
        start = (top + row) * image_w + left
        full[start : start + width] = bits[row * width : (row + 1) * width]
    return bytes(full)


def crop(bits: bytes, image_w: int, left: int, top: int, right: int, bottom: int) -> bytes:
    """Rows ``top..bottom-1``, columns ``left..right-1`` of a full row-major buffer."""
    return b"".join(
        bits[row * image_w + left : row * image_w + right] for row in range(top, bottom)
    )

"""COCO run-length encoded masks in pure Python (pycocotools ``maskApi.c`` semantics).

COCO stores a mask of ``h x w`` pixels as run lengths over the pixels in column-major
(Fortran) order, starting with a run of zeros (which may be 0). Two spellings exist:

- uncompressed: ``{"counts": [0, 20, 30], "size": [h, w]}`` (Datumaro and CVAT write these for
  crowd objects);
- compressed: ``{"counts": "<string>", "size": [h, w]}`` as ``rleToString`` writes it: each
  count, from the third on, is stored as the difference to the count two places before, then as
  little-endian groups of 5 bits in characters ``48 + (bits | 0x20 if more)``, the last group
  sign-extended from bit 4 (``rleFrString`` / ``rleToString`` in ``maskApi.c``).

tfdrop's masks are row-major 0/1 bytes (:mod:`tfdrop.formats.common.masks`); the transposition uses
byte slicing with a step, so it runs at C speed.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfdrop.errors import FormatError, LimitExceededError

_MAX_GROUPS = 13
"""5-bit groups of one compressed count: 13 hold 64 bits (a longer run made each step slower)."""

__all__ = [
    "check_counts",
    "counts_area",
    "counts_bbox",
    "counts_from_bits",
    "counts_to_bits",
    "decode_counts_string",
    "encode_counts_string",
]


def decode_counts_string(text: str, *, max_counts: int | None = None) -> list[int]:
    """Run lengths from a compressed COCO RLE string (``rleFrString``).

    ``max_counts``: raise :class:`LimitExceededError` (``max_values_per_feature``) as soon as
    the string holds more counts than this, before the list grows past it.
    """
    counts: list[int] = []
    cap = len(text) if max_counts is None else max_counts
    p = 0
    n = len(text)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise FormatError("compressed RLE string ends inside a count")
            if k >= _MAX_GROUPS:  # maskApi.c reads counts into a 64-bit long
                raise FormatError(f"compressed RLE count at character {p} is over 64 bits")
            c = ord(text[p]) - 48
            if not 0 <= c < 64:
                raise FormatError(f"compressed RLE string has an invalid character {text[p]!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)  # sign-extend the last group
        if len(counts) > 2:
            x += counts[-2]
        if x < 0:
            raise FormatError(f"compressed RLE string decodes to a negative run ({x})")
        if len(counts) >= cap:
            raise LimitExceededError(
                f"max_values_per_feature is {cap}, and this input needs at least {cap + 1}",
                limit="max_values_per_feature",
                value=cap + 1,
                cap=cap,
            )
        counts.append(x)
    return counts


def encode_counts_string(counts: Sequence[int]) -> str:
    """The compressed COCO RLE string of run lengths (``rleToString``)."""
    out: list[str] = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as the C code's signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def check_counts(counts: Sequence[int], height: int, width: int) -> None:
    """:class:`FormatError` unless the counts are non-negative ints covering ``h * w``."""
    if height <= 0 or width <= 0:
        raise FormatError(f"RLE size {height}x{width} is not positive")
    total = 0
    for c in counts:
        if type(c) is not int or c < 0:
            raise FormatError(f"RLE count {c!r} is not a non-negative integer")
        total += c
    if total != height * width:
        raise FormatError(
            f"RLE counts cover {total} pixels but the mask is {height}x{width} "
            f"({height * width} pixels)"
        )


def counts_to_bits(counts: Sequence[int], height: int, width: int) -> bytes:
    """Row-major 0/1 bytes (``width * height``) of a mask given as COCO run lengths."""
    check_counts(counts, height, width)
    runs = bytearray()
    value = 0
    for c in counts:
        runs += (b"\x01" if value else b"\x00") * c
        value ^= 1
    col = bytes(runs)  # column-major: pixel (x, y) at x * height + y
    return b"".join(col[y::height] for y in range(height))


def counts_from_bits(bits: bytes, width: int, height: int) -> list[int]:
    """COCO run lengths (column-major, zeros first) of a row-major 0/1 mask."""
    if len(bits) != width * height:
        raise FormatError(f"mask has {len(bits)} pixels, expected {width}x{height}")
    col = b"".join(bits[x::width] for x in range(width))
    counts: list[int] = []
    pos = 0
    n = len(col)
    value = 0
    while pos < n:
        nxt = col.find(b"\x00" if value else b"\x01", pos)
        end = n if nxt < 0 else nxt
        counts.append(end - pos)
        pos = end
        value ^= 1
    return counts


def counts_area(counts: Sequence[int]) -> int:
    """The number of mask pixels (the odd runs), as pycocotools' ``rleArea``."""
    return sum(counts[1::2])


def counts_bbox(counts: Sequence[int], height: int) -> tuple[int, int, int, int] | None:
    """``(xmin, ymin, xmax, ymax)`` in pixels, max exclusive, of the mask's pixels, or None."""
    xmin = ymin = 1 << 62
    xmax = ymax = -1
    pos = 0
    for i, c in enumerate(counts):
        if i % 2 and c:
            first, last = pos, pos + c - 1
            x0, y0 = divmod(first, height)
            x1, y1 = divmod(last, height)
            if x0 != x1:  # the run wraps into the next column: it covers top and bottom rows
                y0, y1 = 0, height - 1
            xmin, xmax = min(xmin, x0), max(xmax, x1)
            ymin, ymax = min(ymin, y0), max(ymax, y1)
        pos += c
    if xmax < 0:
        return None
    return xmin, ymin, xmax + 1, ymax + 1

"""Pixel coordinate text that reads back to the same float32 (SPEC.md "Conversions": boxes exact).

Pixel formats (VOC, CVAT, YOLO, COCO) store coordinates as decimal text; tfdrop keeps boxes
normalised like the TFRecord does. A writer multiplies a normalised value by the image size and
must write text that, divided by the same size on read, gives the same float32 the TFRecord held.
:func:`pixel_str` writes whole numbers as integers (what CVAT and VOC tools write) and otherwise
the shortest decimal (1..9 places) that round-trips, falling back to ``repr`` of the float.
"""

from __future__ import annotations

import math
import struct

__all__ = ["clip_box", "f32", "pixel_str", "pixel_value"]

_F32 = struct.Struct("<f")


def f32(value: float) -> float:
    """``value`` rounded to the nearest float32, as a Python float (what a TFRecord stores)."""
    try:
        return float(_F32.unpack(_F32.pack(value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def pixel_value(norm: float, size: int) -> float:
    """The pixel coordinate a normalised value stands for (``norm * size``)."""
    return norm * size


def pixel_str(norm: float, size: int) -> str:
    """Decimal text ``t`` for ``norm * size`` with ``f32(float(t) / size) == f32(norm)``.

    Tries the nearest whole number, then 1..9 decimal places; the first that round-trips wins.

    >>> pixel_str(12 / 500, 500)
    '12'
    >>> pixel_str(12.5 / 500, 500)
    '12.5'
    """
    if size <= 0 or not math.isfinite(norm):
        raise ValueError(f"cannot write a coordinate for size {size} and value {norm!r}")
    target = f32(norm)
    pixels = norm * size
    whole = round(pixels)
    if f32(whole / size) == target:
        return str(int(whole))
    for places in range(1, 10):
        text = f"{pixels:.{places}f}"
        if f32(float(text) / size) == target:
            # "12.50" never wins over "12.5" (shorter places are tried first), but a value like
            # 12.0 at places=1 would have been caught as whole, so stripping is only cosmetic.
            return text.rstrip("0").rstrip(".") if "." in text else text
    return repr(pixels)


Clip = tuple[tuple[float, float, float, float], str]


def clip_box(
    xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int, tolerance: float
) -> Clip:
    """A pixel box clipped to a ``width`` x ``height`` image, and how it fared.

    The state is ``"inside"`` (unchanged), ``"clamped"`` (it reached at most ``tolerance``
    pixels outside: rounding, as VOC's 1-based boxes reaching ``width`` do), ``"clipped"`` (it
    stuck out further; the part inside is kept) or ``"outside"`` (nothing of it is inside).
    Callers check ``min <= max`` first.
    """
    w, h = float(width), float(height)
    if xmin >= 0 and ymin >= 0 and xmax <= w and ymax <= h:
        return (xmin, ymin, xmax, ymax), "inside"
    x0, y0, x1, y1 = max(0.0, xmin), max(0.0, ymin), min(w, xmax), min(h, ymax)
    if max(-xmin, -ymin, xmax - w, ymax - h) <= tolerance:
        return (min(x0, x1), min(y0, y1), x1, y1), "clamped"
    if x0 > x1 or y0 > y1 or (x0 == x1 and xmin < xmax) or (y0 == y1 and ymin < ymax):
        return (xmin, ymin, xmax, ymax), "outside"
    return (x0, y0, x1, y1), "clipped"

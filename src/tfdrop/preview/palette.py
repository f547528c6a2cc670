"""A colour per label, the same in every run and on every machine (a hash of the name, not
Python's salted ``hash``), so one label looks the same across pages and images."""

from __future__ import annotations

import colorsys
import zlib
from typing import Final

_GOLDEN: Final = 0.618033988749895
"""Hues step by the golden ratio: neighbouring hashes still land on distinct hues."""


def label_colour(label: str) -> tuple[int, int, int]:
    """The label's colour as 8-bit RGB: a hue, a saturation and a brightness chosen by three
    parts of the hash of the label's name (two labels of close hues still differ in shade)."""
    digest = zlib.crc32(label.encode("utf-8", "surrogatepass"))
    hue = ((digest & 0xFFFF) * _GOLDEN) % 1.0
    saturation = 0.6 + 0.4 * ((digest >> 16) & 0xFF) / 255
    value = 0.7 + 0.3 * ((digest >> 24) & 0xFF) / 255
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def hex_colour(rgb: tuple[int, int, int]) -> str:
    """``#rrggbb`` for CSS."""
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def text_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on ``rgb`` (its perceived brightness)."""
    r, g, b = rgb
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)

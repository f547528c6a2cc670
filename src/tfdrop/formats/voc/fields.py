"""The small fields of a VOC annotation: where an error is, text, numbers, flags, the size.

Every value a VOC element holds once (``<filename>``, ``<size>``, an object's ``<name>`` or
``<bndbox>``) must appear once: a second one would be silently ignored (ElementTree's
``find`` takes the first), so :func:`single` refuses it, naming item and object.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Final

from tfdrop.errors import FormatError
from tfdrop.limits import Limits, exceeded

MAX_SIDE: Final = 2**31 - 1
"""Pixels; a larger image side is not an image size (the record's int64 would take it)."""
_TRUE: Final = frozenset({"1", "true", "yes"})
_FALSE: Final = frozenset({"0", "false", "no", ""})


@dataclass(frozen=True, slots=True)
class Where:
    member: str
    item: str
    limits: Limits

    def error(self, message: str, *, obj: int | None = None, key: str | None = None) -> FormatError:
        return FormatError(message, member=self.member, item=self.item, obj=obj, key=key)


def single(
    elem: ET.Element | None, tag: str, where: Where, obj: int | None = None
) -> ET.Element | None:
    """The one ``<tag>`` child of ``elem`` (``None`` if there is none); two are a FormatError
    naming item and object, never the first taken and the second ignored."""
    if elem is None:
        return None
    found = elem.findall(tag)
    if len(found) > 1:
        raise twice(where, tag, obj)
    return found[0] if found else None


def twice(where: Where, tag: str, obj: int | None) -> FormatError:
    """The error for a second ``<tag>`` where one is allowed."""
    what = "the annotation" if obj is None else f"object {obj}"
    return where.error(f"{what} has two <{tag}> elements; one is allowed", obj=obj, key=tag)


def box_coords(box: ET.Element, where: Where, obj: int) -> dict[str, str]:
    """``<bndbox>``'s children by tag (each once)."""
    coords: dict[str, str] = {}
    for c in box:
        if c.tag in coords:
            raise twice(where, c.tag, obj)
        coords[c.tag] = (c.text or "").strip()
    return coords


def child_text(
    elem: ET.Element | None, tag: str, where: Where, obj: int | None = None
) -> str | None:
    """The stripped text of the one ``<tag>`` child, ``None`` when there is none."""
    child = single(elem, tag, where, obj)
    return None if child is None else (child.text or "").strip()


def number(text: str | None, what: str, where: Where, obj: int | None) -> float:
    cap = where.limits.max_number_length
    if text is not None and len(text) > cap:
        raise exceeded(
            "max_number_length",
            len(text),
            cap,
            member=where.member,
            item=where.item,
            obj=obj,
            key=what,
        )
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        shown = "missing" if text is None else repr(text)
        raise where.error(f"{what} is {shown}, not a number", obj=obj, key=what)
    return value


def flag(text: str | None, what: str, where: Where, obj: int) -> bool:
    low = (text or "").lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise where.error(f"{what} is {text!r}, not 0 or 1", obj=obj, key=what)


def image_size(root: ET.Element, where: Where) -> tuple[int, int]:
    size = single(root, "size", where)
    out = []
    for key in ("width", "height"):
        text = child_text(size, key, where)
        if not text:
            out.append(0)
            continue
        value = number(text, key, where, None)
        if value < 0 or value != int(value) or value > MAX_SIDE:
            raise where.error(f"image {key} is {text!r}, not a whole number of pixels", key=key)
        out.append(int(value))
    return out[0], out[1]

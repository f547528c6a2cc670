"""One CVAT shape element (``<box>``, ``<polygon>``, ``<mask>``, ...) -> one :class:`Annotation`.

SPEC.md "Conversions": boxes are divided by the image size (no 1-based shift); a polygon
becomes its bounding box (and keeps its points), with masks on also a full-image 0/1 PNG; a
CVAT ``<mask>`` (RLE, see :mod:`.rle`) becomes the bounding box of its pixels and, with masks
on, its PNG. ``<skeleton>`` and ``<points>`` become keypoint objects (:mod:`.skeleton`), boxed
by their labelled points; one whose points all lie outside the image is skipped and counted.
Polylines, ellipses and cuboids have no box meaning for the OD API: they are skipped and
counted in the report (Notes.skip), never dropped silently. Attributes
``difficult``/``truncated``/``occluded`` set the flags, ``pose`` the view (as CVAT's VOC export
carries them); other attributes are kept as (name, value).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Final

from PIL import Image

from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Annotation, Box, Point, Shape
from tfdrop.errors import FormatError, LimitExceededError
from tfdrop.formats.base import Notes
from tfdrop.formats.common.masks import bitmap_mask_png, polygons_mask_png
from tfdrop.formats.common.pixels import clip_box
from tfdrop.formats.cvat import rle, skeleton
from tfdrop.limits import DEFAULT_LIMITS, Limits, exceeded

SKIPPED_SHAPES: Final = frozenset({"polyline", "ellipse", "cuboid"})
KEYPOINT_SHAPES: Final = frozenset({"points", "skeleton"})
SHAPES: Final = frozenset({"box", "polygon", "mask"}) | KEYPOINT_SHAPES | SKIPPED_SHAPES
FLAG_ATTRIBUTES: Final = frozenset({"difficult", "truncated", "occluded"})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
LINE_ATTR: Final = "tfdrop-line"
"""Set by the reader on each shape element: the line of its start tag, for errors."""


@dataclass(frozen=True, slots=True)
class Where:
    """The image a shape belongs to, for sizes and error locations."""

    width: int
    height: int
    member: str
    item: str
    masks: bool = False
    line: int | None = None
    limits: Limits = DEFAULT_LIMITS
    skeletons: dict[str, Skeleton] = field(default_factory=dict)
    """Skeleton label -> its keypoints, from the meta block."""

    def error(self, message: str) -> FormatError:
        # the shape's own line and index are added by parse_shape (FormatError.at)
        return FormatError(message, member=self.member, item=self.item)

    def number_text(self, el: ET.Element, key: str, raw: str) -> str:
        """``raw`` if it is no longer than ``max_number_length``, else ``limit_exceeded``."""
        cap = self.limits.max_number_length
        if len(raw) > cap:
            raise exceeded(
                "max_number_length", len(raw), cap, member=self.member, item=self.item, key=key
            )
        return raw


INT64_MAX: Final = (1 << 63) - 1


def _number(el: ET.Element, key: str, where: Where) -> float:
    raw = el.get(key)
    if raw is None:
        raise where.error(f"<{el.tag}> has no {key} attribute")
    text = where.number_text(el, key, raw)  # a LimitExceededError is a ValueError too
    try:
        value = float(text)
    except ValueError:
        raise where.error(f"<{el.tag}> {key}={raw[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise where.error(f"<{el.tag}> {key}={raw!r} is not a finite number")
    return value


def _box_coords(el: ET.Element, where: Where) -> tuple[float, float, float, float]:
    get = el.get
    try:  # the common case in one step; the slow path below says what is wrong
        coords = (
            float(get("xtl")),  # type: ignore[arg-type]
            float(get("ytl")),  # type: ignore[arg-type]
            float(get("xbr")),  # type: ignore[arg-type]
            float(get("ybr")),  # type: ignore[arg-type]
        )
        if math.isfinite(sum(coords)) and all(
            len(get(k) or "") <= where.limits.max_number_length
            for k in ("xtl", "ytl", "xbr", "ybr")
        ):
            return coords
    except (TypeError, ValueError):
        pass
    x0, y0, x1, y1 = (_number(el, k, where) for k in ("xtl", "ytl", "xbr", "ybr"))
    return x0, y0, x1, y1


def _int(el: ET.Element, key: str, where: Where, default: int | None = None) -> int:
    raw = el.get(key)
    if raw is None:
        if default is None:
            raise where.error(f"<{el.tag}> has no {key} attribute")
        return default
    text = where.number_text(el, key, raw)
    try:
        value = int(text)
    except ValueError:
        raise where.error(f"<{el.tag}> {key}={raw[:40]!r} is not an integer") from None
    if abs(value) > INT64_MAX:
        raise where.error(f"<{el.tag}> {key}={raw[:40]!r} is out of the 64-bit range")
    return value


def parse_points(el: ET.Element, where: Where) -> tuple[float, ...]:
    """``points="x0,y0;x1,y1;..."`` -> ``(x0, y0, x1, y1, ...)``."""
    raw = el.get("points")
    if raw is None:
        raise where.error(f"<{el.tag}> has no points attribute")
    values, cap = 2 * (raw.count(";") + 1), where.limits.max_values_per_feature
    if values > cap:
        raise exceeded("max_values_per_feature", values, cap, member=where.member, item=where.item)
    out: list[float] = []
    for pair in raw.split(";"):
        xy = pair.split(",")
        try:
            if len(xy) != 2:
                raise ValueError
            x, y = float(xy[0]), float(xy[1])
        except ValueError:
            raise where.error(
                f"<{el.tag}> has malformed points (expected 'x,y;x,y;...'): {raw[:60]!r}"
            ) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise where.error(f"<{el.tag}> has a point that is not finite: {pair!r}")
        out += (x, y)
    return tuple(out)


def _box(xmin: float, ymin: float, xmax: float, ymax: float, where: Where, notes: Notes) -> Box:
    """Pixels -> normalised box. Within one pixel outside the image is clamped (CVAT rounds
    edges to 2 decimals) with a ``box_clamped`` warning; further out it is clipped to the image
    with a ``box_clipped`` warning. Inverted, or with nothing inside the image, is an error."""
    w, h = where.width, where.height
    shown = f"({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g})"
    if xmin > xmax or ymin > ymax:
        raise where.error(f"box {shown} is inverted (a min above its max)")
    coords, state = clip_box(xmin, ymin, xmax, ymax, w, h, 1.0)
    if state == "outside":
        raise where.error(f"box {shown} lies outside the {w}x{h} image")
    if state != "inside":
        code, how = ("box_clamped", "clamped to") if state == "clamped" else ("box_clipped", "")
        notes.warn(
            code,
            f"box {shown} clamped to the {w}x{h} image"
            if how
            else f"box {shown} sticks out of the {w}x{h} image; clipped to its edges",
            member=where.member,
            item=where.item,
        )
    return Box.from_pixels(*coords, w, h)


def _rotated(
    el: ET.Element, coords: tuple[float, float, float, float], where: Where, notes: Notes
) -> tuple[float, float, float, float]:
    """CVAT rotates a box about its centre (degrees): keep the axis-aligned box around it
    (clipped to the image by :func:`_box`; the OD API has no rotated boxes, the report counts
    the loss)."""
    angle = _number(el, "rotation", where) if el.get("rotation") else 0.0
    if angle % 360 == 0:
        return coords
    notes.lose("rotation")
    x0, y0, x1, y1 = coords
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hw, hh = (x1 - x0) / 2, (y1 - y0) / 2
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    dx, dy = hw * c + hh * s, hw * s + hh * c
    return cx - dx, cy - dy, cx + dx, cy + dy


def _mask(el: ET.Element, where: Where, notes: Notes) -> tuple[Box, bytes | None] | None:
    """Box of a ``<mask>``'s pixels and, with masks on, its full-image PNG (None: empty).

    A rectangle reaching outside the image is cropped to it (``box_clipped``); one with nothing
    inside is an error. Every raster is checked against ``max_mask_pixels`` first.
    """
    left, top = _int(el, "left", where), _int(el, "top", where)
    width, height = _int(el, "width", where), _int(el, "height", where)
    iw, ih = where.width, where.height
    if (
        width > 0
        and height > 0
        and (left >= iw or top >= ih or left + width <= 0 or top + height <= 0)
    ):
        raise where.error(
            f"mask rectangle left={left} top={top} {width}x{height} lies outside the "
            f"{iw}x{ih} image"
        )
    lim = where.limits
    counts = rle.parse_counts(
        el.get("rle") or "",
        max_values=lim.max_values_per_feature,
        max_number_length=lim.max_number_length,
    )
    bits = rle.decode(counts, width, height, max_pixels=lim.max_mask_pixels)
    if left < 0 or top < 0 or left + width > iw or top + height > ih:
        cl, ct = max(0, -left), max(0, -top)
        cr, cb = min(width, iw - left), min(height, ih - top)
        bits = rle.crop(bits, width, cl, ct, cr, cb)
        notes.warn(
            "box_clipped",
            f"mask rectangle left={left} top={top} {width}x{height} sticks out of the "
            f"{iw}x{ih} image; clipped to its edges",
            member=where.member,
            item=where.item,
        )
        left, top, width, height = left + cl, top + ct, cr - cl, cb - ct
    # the box from the rectangle alone: a full-image buffer only when a PNG is wanted
    bbox = Image.frombytes("L", (width, height), bits).getbbox()
    if bbox is None:
        return None
    x0, y0, x1, y1 = bbox  # right/bottom exclusive: the box covers whole pixels
    png = None
    if where.masks:
        full = rle.paste(bits, left, top, width, height, iw, ih, max_pixels=lim.max_mask_pixels)
        png = bitmap_mask_png(full, iw, ih, max_pixels=lim.max_mask_pixels)
    box = Box.from_pixels(left + x0, top + y0, left + x1, top + y1, iw, ih)
    return box, png


def _attributes(
    el: ET.Element,
) -> tuple[dict[str, bool], str, tuple[tuple[str, str], ...]]:
    flags: dict[str, bool] = {}
    view = ""
    kept: list[tuple[str, str]] = []
    for a in el.findall("attribute"):
        name, value = a.get("name") or "", (a.text or "").strip()
        if name in FLAG_ATTRIBUTES:
            flags[name] = value.lower() in _TRUE
        elif name == "pose":
            view = value
        elif name:
            kept.append((name, value))
    return flags, view, tuple(kept)


def parse_shape(
    el: ET.Element,
    where: Where,
    notes: Notes,
    *,
    label: str | None = None,
    track_id: int | None = None,
    index: int | None = None,
) -> Annotation | None:
    """The annotation of one shape element, or ``None`` when it is skipped (and noted)."""
    try:
        return _parse_shape(el, where, notes, label, track_id)
    except (FormatError, LimitExceededError) as exc:
        line = el.get(LINE_ATTR)
        raise exc.at(
            member=where.member,
            item=where.item,
            obj=index,
            line=int(line) if line else where.line,
        ) from None


def _parse_shape(
    el: ET.Element, where: Where, notes: Notes, label: str | None, track_id: int | None
) -> Annotation | None:
    kind = el.tag
    label = el.get("label") if label is None else label
    if kind in SKIPPED_SHAPES:
        notes.skip(
            kind,
            f"<{kind}> has no bounding-box meaning for detection",
            member=where.member,
            item=where.item,
        )
        return None
    if not label:
        notes.skip("unlabeled", f"<{kind}> has no label", member=where.member, item=where.item)
        return None
    polygon: tuple[float, ...] = ()
    mask: bytes | None = None
    points: tuple[Point, ...] = ()
    if kind in KEYPOINT_SHAPES:
        kps = _keypoints(el, label, where, notes)
        if kps is None:
            return None
        box, points = kps
        shape = Shape.POINTS
    elif kind == "box":
        box = _box(*_rotated(el, _box_coords(el, where), where, notes), where, notes)
        shape = Shape.BOX
    elif kind == "polygon":
        polygon = parse_points(el, where)
        if len(polygon) < 6:
            raise where.error("<polygon> has fewer than 3 points")
        xs, ys = polygon[0::2], polygon[1::2]
        box = _box(min(xs), min(ys), max(xs), max(ys), where, notes)
        if where.masks:
            mask = polygons_mask_png(
                [polygon], where.width, where.height, max_pixels=where.limits.max_mask_pixels
            )
        shape = Shape.POLYGON
    else:
        got = _mask(el, where, notes)
        if got is None:
            notes.skip(
                "empty_mask", "<mask> has no pixels set", member=where.member, item=where.item
            )
            return None
        box, mask = got
        shape = Shape.MASK
    flags, view, attributes = _attributes(el)
    return Annotation(
        label=label,
        box=box,
        difficult=flags.get("difficult", False),
        truncated=flags.get("truncated", False),
        occluded=el.get("occluded") == "1" or flags.get("occluded", False),
        view=view,
        mask=mask,
        shape=shape,
        polygon=polygon,
        attributes=attributes,
        track_id=track_id,
        z_order=_int(el, "z_order", where, 0),
        group=_int(el, "group_id", where, 0),
        keypoints=points,
    )


def _keypoints(
    el: ET.Element, label: str, where: Where, notes: Notes
) -> tuple[Box, tuple[Point, ...]] | None:
    """Box and keypoints of a ``<skeleton>`` or ``<points>`` (None: all outside the image)."""
    if el.tag == "skeleton":
        sk = where.skeletons.get(label)
        names = sk.names if sk is not None else ()
        pts = skeleton.skeleton_points(el, names, lambda child: parse_points(child, where))
        for child in el.iter("points"):
            for attr in child.findall("attribute"):
                notes.lose(f"attribute:{attr.get('name') or ''}")  # a point holds no attribute
    else:
        flat = parse_points(el, where)
        v = skeleton.visibility(el)
        pts = [(flat[i], flat[i + 1], v, "") for i in range(0, len(flat), 2)]
    if not pts:
        raise where.error(f"<{el.tag}> has no points")
    cap = where.limits.max_keypoints
    if len(pts) > cap:
        raise exceeded("max_keypoints", len(pts), cap, member=where.member, item=where.item)
    x0, y0, x1, y1 = skeleton.bounds(pts)
    if clip_box(x0, y0, x1, y1, where.width, where.height, 1.0)[1] == "outside":
        notes.skip(
            "keypoints_outside_image",
            f"<{el.tag}> {label!r}: its points ({x0:g}, {y0:g})-({x1:g}, {y1:g}) all lie "
            f"outside the {where.width}x{where.height} image",
            member=where.member,
            item=where.item,
        )
        return None
    box = _box(x0, y0, x1, y1, where, notes)
    return box, skeleton.normalised(pts, where.width, where.height)

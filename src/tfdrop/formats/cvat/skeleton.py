"""CVAT keypoints: ``<skeleton>`` (its ``<points label=...>`` children) and ``<points>``.

A skeleton label's keypoints are the meta labels whose ``<parent>`` is it, in meta order;
its edges come from the label's ``<svg>`` (``<line data-node-from="a" data-node-to="b">``
between ``<circle data-node-id="a" data-label-name="...">``), as CVAT writes them. Without a
meta block the order is the skeleton element's own. A point's visibility is COCO's: 0 for
``outside="1"`` (its coordinates are kept), 1 for ``occluded="1"``, else 2. A skeleton point
its element does not list is padded (0, 0, visibility 0). A ``<points>`` shape outside a
skeleton is a keypoint object of unnamed points. Either way the object's box is the bounding
box of its labelled points (of all of them when none is labelled).
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from typing import Final

from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Point
from tfdrop.errors import FormatError
from tfdrop.formats.cvat.meta import LabelSpec

_LINE: Final = re.compile(r"<line\b[^>]*>")
_CIRCLE: Final = re.compile(r"<circle\b[^>]*>")
_ATTR: Final = re.compile(r"""([\w-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
ParsePoints = Callable[[ET.Element], tuple[float, ...]]
"""Element -> its ``points`` as flat pixel coordinates (:func:`.shapes.parse_points`)."""


def _attrs(tag: str) -> dict[str, str]:
    """A tag's attributes, either quote, entities decoded (``&quot;``, ``&amp;``, ...)."""
    return {k: html.unescape(a or b) for k, a, b in _ATTR.findall(tag)}


def skeletons_of(specs: Sequence[LabelSpec]) -> dict[str, Skeleton]:
    """Skeleton label -> its keypoint names (sub-labels in meta order) and svg edges."""
    out: dict[str, Skeleton] = {}
    for spec in specs:
        if spec.type != "skeleton":
            continue
        names = tuple(s.name for s in specs if s.parent == spec.name)
        twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
        if twice is not None:
            raise FormatError(
                f"skeleton label {spec.name!r} declares its point {twice!r} twice in <meta>"
            )
        out[spec.name] = Skeleton(names, _svg_edges(spec.svg, names))
    return out


def _svg_edges(svg: str, names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    """The svg's edges as pairs of keypoint indices (edges naming unknown nodes are left out:
    the drawing is CVAT's, not data tfdrop can check)."""
    index = {n: i for i, n in enumerate(names)}
    node: dict[str, int] = {}
    for tag in _CIRCLE.findall(svg):
        a = _attrs(tag)
        if a.get("data-node-id") is not None and a.get("data-label-name") in index:
            node[a["data-node-id"]] = index[a["data-label-name"]]
    edges = []
    for tag in _LINE.findall(svg):
        a = _attrs(tag)
        src, dst = node.get(a.get("data-node-from", "")), node.get(a.get("data-node-to", ""))
        if src is not None and dst is not None:
            edges.append((src, dst))
    return tuple(edges)


def visibility(el: ET.Element) -> int:
    """COCO's visibility of a CVAT point element."""
    if el.get("outside") == "1":
        return 0
    return 1 if el.get("occluded") == "1" else 2


def skeleton_points(
    el: ET.Element, names: tuple[str, ...], parse: ParsePoints
) -> list[tuple[float, float, int, str]]:
    """(x, y, visibility, name) in pixels of each keypoint of a ``<skeleton>`` element, in the
    skeleton's order (``names``; the element's order when empty)."""
    found: dict[str, tuple[float, float, int]] = {}
    order: list[str] = []
    for child in el:
        if child.tag != "points":
            continue
        name = child.get("label") or ""
        if name in found:
            raise FormatError(f"<skeleton> lists its point {name!r} twice")
        if names and name not in names:
            raise FormatError(f"<skeleton> has a point {name!r} its label does not declare")
        xy = parse(child)
        if len(xy) != 2:
            raise FormatError(f"<points label={name!r}> of a <skeleton> must hold one point")
        found[name] = (xy[0], xy[1], visibility(child))
        order.append(name)
    return [(*found.get(n, (0.0, 0.0, 0)), n) for n in (names or tuple(order))]


def normalised(
    pts: list[tuple[float, float, int, str]], width: int, height: int
) -> tuple[Point, ...]:
    return tuple(Point(x / width, y / height, v, n) for x, y, v, n in pts)


def bounds(pts: list[tuple[float, float, int, str]]) -> tuple[float, float, float, float]:
    """The pixel bounds of the labelled points (all points when none is labelled)."""
    use = [p for p in pts if p[2] > 0] or pts
    xs, ys = [p[0] for p in use], [p[1] for p in use]
    return min(xs), min(ys), max(xs), max(ys)

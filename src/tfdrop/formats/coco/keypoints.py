"""COCO keypoints: a category's ``keypoints`` names and ``skeleton`` edges, an annotation's
``keypoints`` ``[x, y, v] * K`` (``num_keypoints`` is its labelled count, recomputed on write).

COCO numbers skeleton edges from 1; Datumaro's exporter writes them from 0 (its test assets
hold ``[0, 1]``): a skeleton holding a 0 is read as 0-based. A category that names no keypoints
(Datumaro writes ``"keypoints": []`` for some) takes its K from its annotations, unnamed.
"""

from __future__ import annotations

from typing import Any

from tfdrop.codec.keypoints import VISIBILITIES, Skeleton
from tfdrop.codec.model import Point
from tfdrop.errors import FormatError
from tfdrop.formats.coco.index import utf8
from tfdrop.limits import Limits


class KeypointCategories:
    """Category id -> its declared :class:`Skeleton` (categories with keypoints or edges)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.by_id: dict[int, Skeleton] = {}

    def add(self, value: dict[str, Any], path: str, member: str) -> None:
        names, edges = value.get("keypoints"), value.get("skeleton")
        if not names and not edges:
            return
        cat_id = value["id"]  # checked by Categories.add first
        where: dict[str, Any] = {"member": member, "key": f"{path}.keypoints"}
        if names is None:
            names = []
        if type(names) is not list or not all(isinstance(n, str) for n in names):
            raise FormatError(f"category {cat_id}: keypoints must be a list of names", **where)
        self.limits.check("max_keypoints", len(names), **where)
        for n in names:
            utf8(n, "keypoint name", self.limits, **where)
        self.by_id[int(cat_id)] = Skeleton(tuple(names), _edges(edges, len(names), cat_id, path,
                                                                 member, self.limits))  # fmt: skip

    def skeletons(self, names: dict[int, str]) -> dict[str, Skeleton]:
        """Label name -> skeleton (``names``: category id -> label)."""
        return {names[i]: sk for i, sk in self.by_id.items() if i in names}


def _edges(
    edges: Any, k: int, cat_id: Any, path: str, member: str, limits: Limits
) -> tuple[tuple[int, int], ...]:
    where: dict[str, Any] = {"member": member, "key": f"{path}.skeleton"}
    if edges is None:
        return ()
    if type(edges) is not list or not all(
        type(e) is list and len(e) == 2 and all(type(v) is int for v in e) for e in edges
    ):
        raise FormatError(f"category {cat_id}: skeleton must be a list of [a, b] pairs", **where)
    limits.check("max_values_per_feature", 2 * len(edges), **where)
    base = 0 if any(0 in e for e in edges) else 1
    out = tuple((a - base, b - base) for a, b in edges)
    top = k if k else limits.max_keypoints
    bad = next((e for e in edges if not all(base <= v < top + base for v in e)), None)
    if bad is not None:
        raise FormatError(
            f"category {cat_id}: skeleton edge {bad} names a keypoint it does not have "
            f"(it has {k})",
            **where,
        )
    return out


def keypoints_ok(kp: Any) -> bool:
    """The fast check when an annotation is spilled: a list of numbers, 3 per keypoint."""
    return type(kp) is list and len(kp) % 3 == 0 and all(type(v) in (int, float) for v in kp)


def parse_keypoints(
    kp: list[Any], names: tuple[str, ...], width: int, height: int
) -> tuple[Point, ...]:
    """``[x, y, v] * K`` in pixels -> points normalised by the image size (FormatError: a
    non-finite coordinate, a visibility not 0/1/2, or K other than the category's)."""
    k = len(kp) // 3
    if names and k != len(names):
        raise FormatError(
            f"{k} keypoints but its category names {len(names)} (one [x, y, v] per name)"
        )
    out = []
    for j in range(k):
        x, y, v = kp[3 * j : 3 * j + 3]
        if v not in VISIBILITIES:
            raise FormatError(f"keypoint {j} has visibility {v!r}, not 0, 1 or 2")
        if not (abs(x) < float("inf") and abs(y) < float("inf")):
            raise FormatError(f"keypoint {j} has a coordinate that is not a finite number")
        out.append(Point(x / width, y / height, int(v), names[j] if names else ""))
    return tuple(out)


def refuse_keypoints(kp: Any, ann_id: Any, path: str, item: str) -> None:
    """The FormatError for an annotation's ``keypoints`` that :func:`keypoints_ok` refused."""
    if type(kp) is not list:
        what = "must be a list [x, y, v, ...]"
    elif len(kp) % 3:
        what = f"has {len(kp)} values, not 3 per keypoint ([x, y, v, ...])"
    else:
        bad = next(v for v in kp if type(v) not in (int, float))
        what = f"holds {bad!r}, which is not a number"
    raise FormatError(f"annotation {ann_id}: keypoints {what}", key=f"{path}.keypoints", item=item)

"""The OD API's keypoint keys: ``image/object/keypoint/{x,y,visibility,text,num}``.

TF models' ``create_coco_tf_record.py`` writes x, y (normalised), visibility and text
flattened over the objects, every object with the same K values (one without keypoints gets K
zeros with visibility 0), and ``num`` once per object: its labelled keypoints (COCO's
``num_keypoints``). The OD API's ``TfExampleDecoder`` reshapes x and y to
``[-1, num_keypoints]``, so a record holds ``objects x K`` values.

tfdrop writes K = the most keypoints any object of the record has (a label's objects all have
their label's K, see :class:`~tfdrop.codec.model.Annotation`); an object with fewer is padded
with ``(0, 0)``, visibility 0 and an empty name. Reading back, those padding slots (empty name,
visibility 0, at 0, 0, at the end of an object's slots) are dropped again, so an object of a
label without keypoints comes back without any. Without ``keypoint/text`` nothing is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from tfdrop.codec.model import Annotation, Keypoint, LabelMapItem, Point
from tfdrop.errors import ExampleError, SchemaError

KP_X: Final = "image/object/keypoint/x"
KP_Y: Final = "image/object/keypoint/y"
KP_VIS: Final = "image/object/keypoint/visibility"
KP_TEXT: Final = "image/object/keypoint/text"
KP_NUM: Final = "image/object/keypoint/num"
KEYPOINT_KEYS: Final[dict[str, str]] = {
    KP_X: "float_list",
    KP_Y: "float_list",
    KP_VIS: "int64_list",
    KP_TEXT: "bytes_list",
    KP_NUM: "int64_list",
}
VISIBILITIES: Final = frozenset({0, 1, 2})
"""COCO's and the OD API's: 0 not labelled, 1 labelled but not visible, 2 visible."""


@dataclass(frozen=True, slots=True)
class Skeleton:
    """A label's keypoints as its source declares them: names in order (the keypoint id is
    the index) and edges as pairs of those indices (0-based)."""

    names: tuple[str, ...]
    edges: tuple[tuple[int, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The report's ``keypoints`` entry of one label."""
        return {
            "num_keypoints": len(self.names),
            "names": list(self.names),
            "edges": [list(e) for e in self.edges],
        }

    @classmethod
    def of_item(cls, it: LabelMapItem) -> Skeleton | None:
        """The skeleton a label map item gives (its ``keypoints`` by id), if any."""
        if not it.keypoints:
            return None
        kps = sorted(it.keypoints, key=lambda k: k.id)
        base = kps[0].id
        edges = tuple((a - base, b - base) for a, b in it.keypoint_edges)
        return cls(tuple(k.label for k in kps), edges)

    def label_map_fields(self, first_id: int = 0) -> dict[str, Any]:
        """``keypoints`` and ``keypoint_edges`` of a :class:`LabelMapItem` (ids from
        ``first_id``)."""
        return {
            "keypoints": tuple(Keypoint(first_id + i, n) for i, n in enumerate(self.names)),
            "keypoint_edges": tuple((first_id + a, first_id + b) for a, b in self.edges),
        }


def record_k(objects: Sequence[Annotation]) -> int:
    """The K of a record: the most keypoints one of its objects has."""
    return max((len(o.keypoints) for o in objects), default=0)


def encode_keypoints(
    objects: Sequence[Annotation],
) -> tuple[list[float], list[float], list[int], list[str], list[int]]:
    """(x, y, visibility, names, num) flattened over ``objects``, K values each."""
    k = record_k(objects)
    xs: list[float] = []
    ys: list[float] = []
    vis: list[int] = []
    names: list[str] = []
    num: list[int] = []
    for o in objects:
        pts = o.keypoints
        xs += [p.x for p in pts]
        ys += [p.y for p in pts]
        vis += [p.visibility for p in pts]
        names += [p.name for p in pts]
        num.append(sum(1 for p in pts if p.visibility > 0))
        pad = k - len(pts)
        if pad:
            xs += [0.0] * pad
            ys += [0.0] * pad
            vis += [0] * pad
            names += [""] * pad
    return xs, ys, vis, names, num


def check_keypoint_lists(kp: dict[str, list[Any]], n: int) -> None:
    """:class:`SchemaError` unless the keypoint lists fit ``n`` objects of K keypoints each."""
    if KP_X not in kp or KP_Y not in kp:
        present = next(iter(kp))
        missing = KP_Y if KP_X in kp else KP_X
        raise SchemaError(f"{present} is present without {missing}", key=missing)
    total = len(kp[KP_X])
    if len(kp[KP_Y]) != total:
        raise SchemaError(
            f"has {len(kp[KP_Y])} values but {KP_X} has {total} (one x and one y per keypoint)",
            key=KP_Y,
        )
    if n == 0:
        raise SchemaError(f"{total} keypoints but the record has no boxes", key=KP_X)
    if total % n:
        raise SchemaError(
            f"has {total} values, not a multiple of the record's {n} boxes (the OD API reshapes "
            "them to [objects, num_keypoints]: every object needs the same number)",
            key=KP_X,
        )
    for key in (KP_VIS, KP_TEXT):
        got = kp.get(key)
        if got is not None and len(got) != total:
            raise SchemaError(
                f"has {len(got)} values but the record has {total} keypoints", key=key
            )
    num = kp.get(KP_NUM)
    if num is not None and len(num) != n:
        raise SchemaError(
            f"has {len(num)} values but the record has {n} boxes (one count per object)",
            key=KP_NUM,
        )


def keypoint_problems(kp: dict[str, list[Any]], n: int) -> list[tuple[str, str, int]]:
    """(key, message, object) for each visibility outside {0, 1, 2} and each count above K
    (lengths are checked by :func:`check_keypoint_lists` when the record is parsed)."""
    out: list[tuple[str, str, int]] = []
    k = len(kp.get(KP_X, ())) // n if n else 0
    vis = kp.get(KP_VIS)
    if vis is not None and not set(vis) <= VISIBILITIES:
        for j, v in enumerate(vis):
            if v not in VISIBILITIES:
                out.append((KP_VIS, f"visibility {v} is not 0, 1 or 2 (COCO's)", j // k))
    num = kp.get(KP_NUM)
    if num is not None:
        for i, v in enumerate(num):
            if not 0 <= v <= k:
                out.append((KP_NUM, f"{v} keypoints, but each object has {k}", i))
    return out


def _padding(x: float, y: float, v: int, name: bytes) -> bool:
    return not name and not v and x == 0.0 and y == 0.0


def object_keypoints(kp: dict[str, list[Any]], n: int) -> list[tuple[Point, ...]]:
    """Each object's keypoints (checked lists, see :func:`check_keypoint_lists`)."""
    xs, ys = kp[KP_X], kp[KP_Y]
    k = len(xs) // n
    vis = kp.get(KP_VIS)
    texts = kp.get(KP_TEXT)
    out: list[tuple[Point, ...]] = []
    for i in range(n):
        lo, hi = i * k, (i + 1) * k
        if texts is not None:
            while hi > lo and _padding(xs[hi - 1], ys[hi - 1], vis[hi - 1] if vis else 0,
                                       texts[hi - 1]):  # fmt: skip
                hi -= 1
        pts = []
        for j in range(lo, hi):
            v = vis[j] if vis is not None else (0 if math.isnan(xs[j]) else 2)
            pts.append(Point(xs[j], ys[j], v, _name(texts[j], i) if texts else ""))
        out.append(tuple(pts))
    return out


def _name(raw: bytes, obj: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ExampleError("keypoint name is not UTF-8 text", key=KP_TEXT, obj=obj) from None

"""The OD API's keypoint keys: ``image/object/keypoint/{x,y,visibility,text,num}``.

The OD API's ``TfExampleDecoder`` reads keypoints with ONE ``num_keypoints`` for the dataset
(it reshapes x and y to ``[num_boxes, num_keypoints]``); with several keypoint classes the label
map gives each class GLOBAL keypoint ids (TF models' ``face_person_with_keypoints_label_map``:
face 0-5, person 6-22, ``num_keypoints`` 23), and ``create_coco_tf_record.py`` pads every
object of every record with K zeros when the dataset has keypoints.

tfdrop writes that layout (:class:`~tfdrop.codec.model.KeypointLayout`, from the label map's
``keypoints { id label }``): every object of every record carries ``layout.total`` slots, its
own label's filled, the others ``(0, 0)`` with visibility 0; ``text`` the slot names; ``num``
the labelled count. Reading back, an object takes the slots its label's ids name. Without a
layout (records from elsewhere), an object takes all K slots of its record, trailing padding
(empty name, visibility 0, at 0, 0) dropped when ``keypoint/text`` is present. A NaN
coordinate is the OD API's mark of an unlabelled keypoint: read as (0, 0), visibility 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from tfdrop.codec.model import Annotation, Keypoint, KeypointLayout, LabelMapItem, Point
from tfdrop.codec.wire import DEFAULT_MAX_VALUES, too_many_values
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

    def to_dict(self, slots: Sequence[int] = ()) -> dict[str, Any]:
        """The report's ``keypoints`` entry of one label (``slots``: its global keypoint ids,
        ``offset`` the first: where its keypoints sit on the dataset's num_keypoints axis)."""
        out: dict[str, Any] = {
            "num_keypoints": len(self.names),
            "names": list(self.names),
            "edges": [list(e) for e in self.edges],
        }
        if slots:
            out["offset"] = slots[0]
            if list(slots) != list(range(slots[0], slots[0] + len(slots))):
                out["ids"] = list(slots)
        return out

    @classmethod
    def of_item(cls, it: LabelMapItem) -> Skeleton | None:
        """The skeleton a label map item gives (its ``keypoints`` by id; edges, as global
        ids in the map, become indices into the names)."""
        if not it.keypoints:
            return None
        kps = sorted(it.keypoints, key=lambda k: k.id)
        index = {k.id: i for i, k in enumerate(kps)}
        edges = tuple(
            (index[a], index[b]) for a, b in it.keypoint_edges if a in index and b in index
        )
        return cls(tuple(k.label for k in kps), edges)

    def label_map_fields(self, first_id: int = 0) -> dict[str, Any]:
        """``keypoints`` and ``keypoint_edges`` of a :class:`LabelMapItem` (global ids from
        ``first_id``)."""
        return {
            "keypoints": tuple(Keypoint(first_id + i, n) for i, n in enumerate(self.names)),
            "keypoint_edges": tuple((first_id + a, first_id + b) for a, b in self.edges),
        }


def record_k(objects: Sequence[Annotation]) -> int:
    """The K of a record: the most keypoints one of its objects has."""
    return max((len(o.keypoints) for o in objects), default=0)


KeypointLists = tuple[list[float], list[float], list[int], list[str], list[int]]


def encode_keypoints(
    objects: Sequence[Annotation],
    layout: KeypointLayout | None = None,
    *,
    max_values: int = DEFAULT_MAX_VALUES,
) -> KeypointLists:
    """(x, y, visibility, names, num) flattened over ``objects``: ``layout.total`` slots each
    (:class:`LimitExceededError` before any list is built when that is over ``max_values``);
    without a layout, the record's K (the most keypoints one object has)."""
    if layout is None:
        return _encode_record_k(objects)
    k = layout.total
    if k * len(objects) > max_values:
        raise too_many_values(KP_X.encode(), k * len(objects), max_values)
    xs = [0.0] * (k * len(objects))
    ys = [0.0] * (k * len(objects))
    vis = [0] * (k * len(objects))
    num: list[int] = []
    for i, o in enumerate(objects):
        slots = layout.slots.get(o.label, ())
        if len(o.keypoints) != len(slots):
            raise ExampleError(
                f"object of label {o.label!r} has {len(o.keypoints)} keypoints, but the "
                f"dataset's keypoint layout gives its label {len(slots)}",
                key=KP_X,
                obj=i,
            )
        base = i * k
        for slot, p in zip(slots, o.keypoints, strict=True):
            if p.name != layout.names[slot]:
                raise ExampleError(
                    f"object of label {o.label!r}: keypoint {p.name!r} is not its label's "
                    f"keypoint {layout.names[slot]!r} (the layout's order)",
                    key=KP_TEXT,
                    obj=i,
                )
            xs[base + slot], ys[base + slot], vis[base + slot] = p.x, p.y, p.visibility
        num.append(sum(1 for p in o.keypoints if p.visibility > 0))
    return xs, ys, vis, list(layout.names) * len(objects), num


def _encode_record_k(objects: Sequence[Annotation]) -> KeypointLists:
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
    """(key, message, object) for each visibility outside {0, 1, 2}, each count above K, each
    infinite coordinate and each name that is not UTF-8 (lengths are checked by
    :func:`check_keypoint_lists` when the record is parsed; NaN is the OD API's mark of an
    unlabelled keypoint, not a problem)."""
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
    for key in (KP_X, KP_Y):
        for j, v in enumerate(kp.get(key, ())):
            if math.isinf(v):
                out.append((key, f"keypoint {j % k} is {v} (not a coordinate)", j // k))
    for j, raw in enumerate(kp.get(KP_TEXT, ())):
        if not _utf8_ok(raw):
            out.append((KP_TEXT, f"keypoint {j % k}'s name is not UTF-8 text", j // k))
    return out


def _utf8_ok(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _padding(x: float, y: float, v: int, name: bytes) -> bool:
    return not name and not v and x == 0.0 and y == 0.0


def object_keypoints(
    kp: dict[str, list[Any]],
    n: int,
    labels: Sequence[str] = (),
    layout: KeypointLayout | None = None,
) -> list[tuple[Point, ...]]:
    """Each object's keypoints (checked lists, see :func:`check_keypoint_lists`): with a
    ``layout`` whose total is the record's K, the slots of the object's label (``labels``,
    one per object; none for a label without keypoints); else all of the object's slots."""
    k = len(kp[KP_X]) // n
    out: list[tuple[Point, ...]] = []
    for i in range(n):
        out.append(tuple(_point(kp, i * k + j, i) for j in _slots(kp, i, k, labels, layout)))
    return out


def _slots(
    kp: dict[str, list[Any]], i: int, k: int, labels: Sequence[str], layout: KeypointLayout | None
) -> Sequence[int]:
    """The slot indices (within the object's K) that are the object's keypoints."""
    if layout is not None and layout.total == k and i < len(labels):
        return layout.slots.get(labels[i], ())
    hi = k
    texts, vis = kp.get(KP_TEXT), kp.get(KP_VIS)
    if texts is not None:
        xs, ys, lo = kp[KP_X], kp[KP_Y], i * k
        while hi > 0 and _padding(xs[lo + hi - 1], ys[lo + hi - 1],
                                  vis[lo + hi - 1] if vis else 0, texts[lo + hi - 1]):  # fmt: skip
            hi -= 1
    return range(hi)


def _point(kp: dict[str, list[Any]], j: int, obj: int) -> Point:
    x, y = kp[KP_X][j], kp[KP_Y][j]
    vis, texts = kp.get(KP_VIS), kp.get(KP_TEXT)
    name = _name(texts[j], obj) if texts else ""
    if math.isnan(x) or math.isnan(y):
        return Point(0.0, 0.0, 0, name)  # the OD API's unlabelled keypoint
    return Point(x, y, vis[j] if vis is not None else 2, name)


def keypoint_losses(
    kp: dict[str, list[Any]],
    n: int,
    labels: Sequence[str] = (),
    layout: KeypointLayout | None = None,
) -> dict[str, int]:
    """What :func:`object_keypoints` cannot keep, for the report's ``lossy``:
    ``keypoint_nan`` (a NaN coordinate whose visibility said labelled: read as unlabelled)
    and ``keypoint_other_label`` (a non-padding value in a slot the object's label does not
    own, or any for a label the layout has no keypoints for)."""
    xs, ys, vis = kp[KP_X], kp[KP_Y], kp.get(KP_VIS)
    out = {"keypoint_nan": 0, "keypoint_other_label": 0}
    if vis is not None:
        out["keypoint_nan"] = sum(
            1 for j in range(len(xs)) if vis[j] > 0 and (math.isnan(xs[j]) or math.isnan(ys[j]))
        )
    k = len(xs) // n if n else 0
    if layout is not None and layout.total == k and len(labels) == n:
        for i in range(n):
            own = set(layout.slots.get(labels[i], ()))
            out["keypoint_other_label"] += sum(
                1
                for j in range(k)
                if j not in own
                and (vis[i * k + j] if vis is not None else 0) > 0
                and not math.isnan(xs[i * k + j])
            )
    return {key: v for key, v in out.items() if v}


def _name(raw: bytes, obj: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ExampleError("keypoint name is not UTF-8 text", key=KP_TEXT, obj=obj) from None

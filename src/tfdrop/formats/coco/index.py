"""The compact per-image index and the category table of a COCO file, and where files live.

The index keeps what the join of annotations to images needs, in flat arrays (about 40 bytes
and the file name's UTF-8 bytes per image, no Python object per image): the image ``id``, its
``width``/``height`` and ``file_name``, in ``images`` order, plus the ids sorted for lookups by
binary search (a ``dict`` would cost about 100 bytes per image).

Layouts (checked against Datumaro's and Roboflow's assets): ``annotations/instances_<subset>.json``
with images in ``images/<subset>/`` (Datumaro, CVAT), ``images/`` (flat) or ``<subset>/``
(mmdetection), and Roboflow's ``<subset>/_annotations.coco.json`` beside its images.
"""

from __future__ import annotations

import math
import re
import struct
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tfdrop.codec.model import LabelMap, LabelMapItem
from tfdrop.errors import FormatError
from tfdrop.limits import DEFAULT_LIMITS, Limits

_INSTANCES: Final = re.compile(
    r"^(?P<root>(?:.*/)?)annotations/(?P<task>instances|person_keypoints)_(?P<subset>[^/]+)\.json$"
)
_ROBOFLOW: Final = re.compile(r"^(?P<root>(?:.*/)?)_annotations\.coco\.json$")


@dataclass(frozen=True, slots=True)
class AnnotationFile:
    """One instances file: its member name, subset and the folders its images may be in."""

    member: str
    subset: str
    image_dirs: tuple[str, ...]


def find_annotation_files(names: Sequence[str]) -> list[AnnotationFile]:
    """Every COCO instances file among the member names, ordered by member name.

    ``person_keypoints_<subset>.json`` (CVAT's "COCO Keypoints 1.0" export) is one too, unless
    an ``instances_<subset>.json`` sits beside it (COCO's own layout, where both list the same
    images): that one is read and the keypoints file is left out (the reader warns).
    """
    out: list[AnnotationFile] = []
    folded_names = {n.casefold() for n in names}
    for name in sorted(names):
        folded = name.casefold()
        m = _INSTANCES.match(folded)
        if m is not None and m.group("task") == "person_keypoints":
            twin = f"{m.group('root')}annotations/instances_{m.group('subset')}.json"
            if twin in folded_names:
                continue
        if m is not None:
            root = name[: len(m.group("root"))]
            subset = name[len(name) - len(m.group("subset")) - 5 : -5]
            dirs = (f"{root}images/{subset}/", f"{root}images/", f"{root}{subset}/", root)
            out.append(AnnotationFile(name, subset, dirs))
            continue
        m = _ROBOFLOW.match(folded)
        if m is not None:
            root = name[: len(m.group("root"))]
            subset = root.rstrip("/").rsplit("/", 1)[-1] or "default"
            out.append(AnnotationFile(name, subset, (root, f"{root}images/")))
    return out


_INT64 = 1 << 63
_MAX_SIZE = 2**31 - 1  # pixels; anything larger is not an image size
MAX_LABEL_ID = 2**31 - 1
"""A label map id is an int32 (``StringIntLabelMapItem.id``): larger COCO ids are renumbered."""


def utf8(text: str, what: str, limits: Limits, **where: Any) -> bytes:
    """The UTF-8 bytes of a name from the JSON, checked against ``max_text_bytes``.

    JSON escapes can spell a lone surrogate (``"\\ud800"``), which no UTF-8 file name or
    TFRecord string can hold: refused here, naming the key, before it reaches the codec.
    """
    try:
        data = text.encode()
    except UnicodeEncodeError as exc:
        raise FormatError(
            f"{what} holds {text[exc.start]!r}, a lone UTF-16 surrogate that is not a character",
            **where,
        ) from None
    limits.check("max_text_bytes", len(data), **where)
    return data


def _int(value: Any, what: str, path: str, member: str) -> int:
    if type(value) is not int:
        raise FormatError(f"{what} must be an integer, not {value!r}", member=member, key=path)
    if not -_INT64 <= value < _INT64:
        # ids are kept in int64 arrays: a larger one raised OverflowError (found by fuzzing)
        raise FormatError(f"{what} {value} is out of the 64-bit range", member=member, key=path)
    return value


_PARTS: Final = struct.Struct("<4Q")  # the byte lengths of a saved index's four arrays


class ImageIndex:
    """``images`` of one file: position -> (id, file name, width, height); id -> position."""

    def __init__(self, member: str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.member = member
        self.limits = limits
        self._ids = array("q")
        self._wh = array("l")
        self._names = bytearray()
        self._ends = array("Q")
        self._sorted = array("q")
        self._order = array("l")
        self._contiguous = False
        self.objects = array("l")
        """Annotations counted per image position (for ``max_objects_per_item``)."""

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, value: Any, path: str) -> None:
        """Index one element of ``images`` (checked: a dict with an int id and a file name)."""
        if not isinstance(value, dict):
            raise FormatError("an image must be a JSON object", member=self.member, key=path)
        image_id = _int(value.get("id"), "image id", f"{path}.id", self.member)
        name = value.get("file_name")
        if not isinstance(name, str) or not name:
            raise FormatError(
                f"image id {image_id} has no file_name", member=self.member, key=f"{path}.file_name"
            )
        sizes = []
        for key in ("width", "height"):
            v = value.get(key)
            if v is None:
                sizes.append(0)  # read from the image header later
            elif type(v) is int and 0 < v <= _MAX_SIZE:
                sizes.append(v)
            elif isinstance(v, float) and v.is_integer() and 0 < v <= _MAX_SIZE:
                sizes.append(int(v))
            else:
                raise FormatError(
                    f"image {name!r} has {key} {v!r}, not a positive integer",
                    member=self.member,
                    key=f"{path}.{key}",
                    item=name,
                )
        data = utf8(name, "file_name", self.limits, member=self.member, key=f"{path}.file_name")
        self._ids.append(image_id)
        self._wh.extend(sizes)
        self._names += data.replace(b"\\", b"/")
        self._ends.append(len(self._names))

    def finish(self) -> None:
        """Build the id lookup; :class:`FormatError` when an id repeats."""
        ids = self._ids
        n = len(ids)
        self.objects = array("l", bytes(self.objects.itemsize * n))
        self._contiguous = n > 0 and all(ids[i] == ids[0] + i for i in range(n))
        if self._contiguous:
            return
        order = sorted(range(n), key=ids.__getitem__)
        self._order = array("l", order)
        self._sorted = array("q", (ids[i] for i in order))
        for k in range(1, n):
            if self._sorted[k] == self._sorted[k - 1]:
                pos = self._order[k]
                raise FormatError(
                    f"image id {self._sorted[k]} appears twice in images",
                    member=self.member,
                    key=f"images[{pos}].id",
                    item=self.name(pos),
                )

    def position(self, image_id: int) -> int | None:
        """The position in ``images`` of the image with this id, or None."""
        if self._contiguous:
            k = image_id - self._ids[0]
            return k if 0 <= k < len(self._ids) else None
        k = bisect_left(self._sorted, image_id)
        if k < len(self._sorted) and self._sorted[k] == image_id:
            return int(self._order[k])
        return None

    def image_id(self, pos: int) -> int:
        return int(self._ids[pos])

    def name(self, pos: int) -> str:
        start = self._ends[pos - 1] if pos else 0
        return self._names[start : self._ends[pos]].decode()

    def size(self, pos: int) -> tuple[int, int]:
        """``(width, height)``; 0 where the file does not say."""
        return int(self._wh[2 * pos]), int(self._wh[2 * pos + 1])

    def save(self, path: Path) -> None:
        """What a work unit needs (ids, sizes, names by position) in a file of the work
        folder, for :meth:`load` in a worker process (the id lookup is not kept)."""
        parts = (self._ids.tobytes(), self._wh.tobytes(), bytes(self._names), self._ends.tobytes())
        path.write_bytes(_PARTS.pack(*map(len, parts)) + b"".join(parts))

    @classmethod
    def load(cls, path: Path, member: str, limits: Limits = DEFAULT_LIMITS) -> ImageIndex:
        """An index :meth:`save` wrote (positions, ids, names and sizes; no id lookup)."""
        data = path.read_bytes()
        at = _PARTS.size
        parts: list[bytes] = []
        for n in _PARTS.unpack_from(data):
            parts.append(data[at : at + n])
            at += n
        ids, wh, names, ends = parts
        index = cls(member, limits)
        index._ids.frombytes(ids)
        index._wh.frombytes(wh)
        index._names += names
        index._ends.frombytes(ends)
        return index


class Categories:
    """``categories`` of every file, merged: COCO id -> name, in first-seen order."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self.by_id: dict[int, str] = {}
        self.names_seen: set[str] = set()
        self.supers: set[str] = set()

    def add(self, value: Any, path: str, member: str) -> None:
        if not isinstance(value, dict):
            raise FormatError("a category must be a JSON object", member=member, key=path)
        cat_id = _int(value.get("id"), "category id", f"{path}.id", member)
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise FormatError(
                f"category id {cat_id} has no name", member=member, key=f"{path}.name"
            )
        utf8(name, "category name", self.limits, member=member, key=f"{path}.name")
        known = self.by_id.get(cat_id)
        if known is not None and known != name:
            raise FormatError(
                f"category id {cat_id} is {known!r} in one file and {name!r} here",
                member=member,
                key=path,
            )
        if known is None and name in self.names_seen:
            raise FormatError(
                f"category name {name!r} is used by two ids; labels are matched by name",
                member=member,
                key=path,
            )
        if known is None:
            self.limits.check("max_labels", len(self.by_id) + 1, member=member, key=path)
        self.by_id[cat_id] = name
        self.names_seen.add(name)
        sup = value.get("supercategory")
        if isinstance(sup, str) and sup:
            utf8(sup, "supercategory", self.limits, member=member, key=f"{path}.supercategory")
            self.supers.add(sup)

    def label_map(self) -> LabelMap | None:
        """The COCO ids as label ids (TF's create_coco_tf_record keeps them) when all are >= 1
        and fit a label map's int32 (else None: convert numbers the labels 1..n in order).

        Roboflow writes its dataset's name as category 0, the supercategory of all the others,
        and never uses it: that one is left out, so the real classes keep their ids.
        """
        items = [(i, n) for i, n in self.by_id.items() if not self.is_roboflow_root(i)]
        if not items or min(i for i, _ in items) < 1 or max(i for i, _ in items) > MAX_LABEL_ID:
            return None
        return LabelMap(tuple(LabelMapItem(id=i, name=n) for i, n in items))

    def is_roboflow_root(self, cat_id: int) -> bool:
        return cat_id == 0 and len(self.by_id) > 1 and self.by_id[0] in self.supers

    def names(self) -> list[str]:
        """Category names in file order (without Roboflow's unused root category)."""
        return [n for i, n in self.by_id.items() if not self.is_roboflow_root(i)]


def finite(values: Any, n: int | None = None) -> bool:
    """Whether ``values`` is a list of finite numbers (of ``n`` of them, if given).

    ``sum`` runs in C: it raises TypeError for anything that is not a number (a string, a
    list, None) and gives NaN or an infinity when any value is one (JSON ``NaN``/``Infinity``
    parse as floats).
    """
    if type(values) is not list or (n is not None and len(values) != n):
        return False
    try:
        return math.isfinite(sum(values))
    except (TypeError, OverflowError):
        return False

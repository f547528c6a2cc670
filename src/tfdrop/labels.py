"""Label-id assignment for one conversion (SPEC.md "Conversions": label ids).

A pinned label map is exact: a label it does not have fails the archive. Otherwise the source's
own map keeps its ids (COCO's non-contiguous category ids, a TFRecord archive's label_map.pbtxt)
and new labels get the next free id; with neither, ids are 1..N in order of the source's label
list, then of first appearance.

Each distinct label is resolved once (dict lookups per object, no map rebuilt per label: 20,000
distinct labels used to take minutes), and checked once against the budget: ``max_labels``,
``max_text_bytes`` and text that UTF-8 cannot encode (a JSON ``"\\ud800"`` escape decodes to a lone
surrogate, which no TFRecord, XML or JSON writer can store).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, Protocol

from tfdrop.codec.keypoints import KP_X, Skeleton
from tfdrop.codec.labelmap import parse_label_map
from tfdrop.codec.model import Annotation, Item, Keypoint, LabelMap, LabelMapItem, Point
from tfdrop.errors import FormatError, LabelMapError, UnknownLabelError
from tfdrop.limits import DEFAULT_LIMITS, Limits

_BREAKS: Final = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def check_plain_label(label: str, **where: Any) -> None:
    """Raise if a label cannot be a line or an attribute of a text format (VOC labelmap.txt,
    YOLO obj.names, CVAT XML): a line break of any kind, a control character, or spaces at
    either end (which those formats strip) would read back as another label or shift ids."""
    bad = next((c for c in label if c in _BREAKS or unicodedata.category(c) == "Cc"), None)
    if bad is not None or label != label.strip() or not label:
        what = f"holds {bad!r}" if bad is not None else "is empty or has spaces at an end"
        raise FormatError(
            f"label {label[:40]!r} {what}: the target's label list cannot carry it",
            hint="rename the label in the source (or convert to tfrecord, which keeps any text)",
            **where,
        )


def load_label_map(path: Path) -> LabelMap:
    """Read and parse a pinned ``label_map.pbtxt`` (``--label-map``, a pipeline's ``label_map``).

    Every failure is a :class:`~tfdrop.errors.LabelMapError` naming the file: unreadable, over
    ``max_file_bytes`` (read no further than that), or not a valid label map.
    """
    try:
        with path.open("rb") as f:
            data = f.read(DEFAULT_LIMITS.max_file_bytes + 1)
    except OSError as exc:
        raise LabelMapError(f"cannot read: {exc.strerror or exc}", file=str(path)) from None
    if len(data) > DEFAULT_LIMITS.max_file_bytes:
        raise LabelMapError(
            f"over {DEFAULT_LIMITS.max_file_bytes} bytes; not a label map", file=str(path)
        )
    return parse_label_map(data, file=str(path))


def check_label_text(label: str, limits: Limits, **where: Any) -> None:
    """Raise if a label cannot be stored: not encodable as UTF-8, or over max_text_bytes."""
    try:
        size = len(label.encode("utf-8"))
    except UnicodeEncodeError as exc:
        bad = label[exc.start : exc.end].encode("unicode_escape").decode("ascii")
        raise FormatError(
            f"label {label[: exc.start][:40]!r}... holds {bad}, which is not a Unicode "
            "character (a lone surrogate, e.g. from a JSON '\\ud800' escape)",
            hint="fix the label's text in the source",
            **where,
        ) from None
    limits.check("max_text_bytes", size, **where)


class _Warns(Protocol):
    def warn(self, code: str, message: str, **where: Any) -> None: ...


def warn_renumbered(notes: _Warns, renumbered: int) -> None:
    """The report's ``label_ids_renumbered`` warning for :attr:`LabelResolver.renumbered`."""
    notes.warn(
        "label_ids_renumbered",
        f"{renumbered} objects carried class ids that contradict other objects' "
        "(one id for two class texts, or two ids for one); ids were given by text (pin a "
        "label map to choose them)",
    )


class LabelResolver:
    """Assigns label ids to the objects of each item, and builds the archive's label map."""

    def __init__(
        self,
        pinned: LabelMap | None,
        source_labels: Iterable[str],
        source_map: LabelMap | None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        plain_text: bool = False,
        skeletons: Mapping[str, Skeleton] | None = None,
        tfrecord_layout: bool = False,
    ) -> None:
        self.pinned = pinned is not None
        self._skeletons: dict[str, Skeleton] = dict(skeletons or {})
        """Label -> its keypoints: declared by the source, else seen on its objects."""
        self._slots: dict[str, tuple[int, ...]] = {}
        """Label -> its global keypoint ids (the dataset's keypoint layout)."""
        self._written = False  # an item with objects was assigned: the layout is fixed
        self._strict = tfrecord_layout  # records carry the layout: it cannot grow once written
        self._fixed_map = False  # the pinned map's keypoints are the layout
        self._limits = limits
        self._plain = plain_text
        self.renumbered = 0
        """Objects whose source class id contradicts another object's (one id for two texts,
        or two ids for one text) with no pinned map: ids were given by text."""
        self._text_of: dict[int, str] = {}
        self._id_of: dict[str, int] = {}
        base = pinned if pinned is not None else source_map
        self._base = base if base is not None else LabelMap()
        self._added: list[LabelMapItem] = []
        self._next_id = max((it.id for it in self._base.items), default=0) + 1
        self._ids: dict[str, int] = {}
        self._map: LabelMap | None = None
        limits.check("max_labels", len(self._base))
        if plain_text:
            for it in self._base.items:
                if it.id != 0:
                    check_plain_label(self._base.label_of(it))
        if base is None:
            for name in source_labels:
                self._add(name)
        self._init_layout(source_map)

    @property
    def map(self) -> LabelMap:
        """The label map so far: the base map plus every label added, in order of adding,
        each label with keypoints carrying their names and edges (``keypoints { id label }``)."""
        if self._map is None:
            items = (*self._base.items, *self._added)
            if self._skeletons:
                base = self._base
                items = (
                    *(self._with_keypoints(it, base.label_of(it)) for it in base.items),
                    *(self._with_keypoints(it, it.name) for it in self._added),
                )
            self._map = LabelMap(items)
        return self._map

    def _with_keypoints(self, it: LabelMapItem, name: str) -> LabelMapItem:
        if self._fixed_map and it.keypoints:
            return it  # a pinned map's own keypoints are the layout
        sk, slots = self._skeletons.get(name), self._slots.get(name)
        if sk is None or slots is None:
            return replace(it, keypoints=(), keypoint_edges=()) if it.keypoints else it
        return replace(
            it,
            keypoints=tuple(Keypoint(s, n) for s, n in zip(slots, sk.names, strict=True)),
            keypoint_edges=tuple((slots[a], slots[b]) for a, b in sk.edges),
        )

    def _init_layout(self, source_map: LabelMap | None) -> None:
        """The keypoint layout known before the first item: a pinned map's keypoints (its ids
        are the slots; the source's skeletons must name the same keypoints), else the source
        map's, else the declared skeletons in label-map order."""
        if self.pinned and any(it.keypoints for it in self._base.items):
            self._pin_layout()
            return
        layout = source_map.keypoint_layout if source_map is not None else None
        if source_map is not None:
            for it in source_map.items:
                sk = Skeleton.of_item(it)
                if sk is None:
                    continue
                name = source_map.label_of(it)
                self._skeletons.setdefault(name, sk)
                if layout is not None and source_map is self._base:
                    self._slots[name] = layout.slots[name]  # the source's own ids stay
        for name in dict.fromkeys([*self.map_names(), *self._skeletons]):
            sk = self._skeletons.get(name)
            if sk is not None and sk.names and name not in self._slots:
                self._give_slots(name)

    def _pin_layout(self) -> None:
        base = self._base
        layout = base.keypoint_layout
        if layout is None:
            raise LabelMapError(
                "the pinned label map's keypoint ids repeat (every keypoint of every label "
                "needs its own id: one num_keypoints axis for the dataset, as the OD API "
                "reads it)"
            )
        self._fixed_map = True
        for it in base.items:
            sk = Skeleton.of_item(it)
            if sk is not None:
                self._pin_skeleton(base.label_of(it), sk, layout.slots[base.label_of(it)])
        for name, sk in self._skeletons.items():
            if name not in self._slots and sk.names:
                raise LabelMapError(
                    f"label {name!r} has keypoints ({_names(sk.names)}) but the pinned "
                    "label map gives it none"
                )

    def map_names(self) -> list[str]:
        return [*self._base.names, *(it.name for it in self._added)]

    def _pin_skeleton(self, name: str, pinned: Skeleton, slots: tuple[int, ...]) -> None:
        own = self._skeletons.get(name)
        if own is not None and own.names and sorted(own.names) != sorted(pinned.names):
            raise LabelMapError(
                f"label {name!r}: the source's keypoints ({_names(own.names)}) are not the "
                f"pinned label map's ({_names(pinned.names)})"
            )
        edges = pinned.edges or (_edges_by_name(own, pinned.names) if own else ())
        self._skeletons[name] = Skeleton(pinned.names, edges)
        self._slots[name] = slots

    def _give_slots(self, name: str) -> None:
        first = max((max(s) + 1 for s in self._slots.values() if s), default=0)
        self._slots[name] = tuple(range(first, first + len(self._skeletons[name].names)))
        self._map = None

    @property
    def layout_fixed(self) -> bool:
        """A pinned map's keypoints are the layout (nothing to learn from the source)."""
        return self._fixed_map

    @property
    def keypoint_total(self) -> int:
        """num_keypoints: the slots of the dataset's keypoint layout (0 without keypoints)."""
        return max((max(s) + 1 for s in self._slots.values() if s), default=0)

    def keypoint_slots(self) -> dict[str, tuple[int, ...]]:
        """Label -> its global keypoint ids (the report's ``keypoints`` offsets)."""
        return dict(self._slots)

    def skeletons(self) -> dict[str, Skeleton]:
        """Label -> its keypoints (the report's ``keypoints`` section), in label map order."""
        out: dict[str, Skeleton] = {}
        for name in self.map_names():
            sk = self._skeletons.get(name)
            if sk is not None and name in self._slots:
                out[name] = sk
        return out

    def learn(self, item: Item) -> None:
        """See an item's keypoints before any is assigned (a scan of a source that declares
        none, so the layout is fixed before the first record). Its labels are added as
        :meth:`assign` would add them (in order of first appearance), so the label map, and
        with it the keypoint layout the records are written in, holds them from the start."""
        for i, obj in enumerate(item.objects):
            if obj.label and not self.pinned:
                self._resolve(obj.label, item, i)
            if obj.keypoints and obj.label:
                self._fit(obj, item, i)

    def _fit(self, obj: Annotation, item: Item, index: int) -> Annotation:
        """``obj`` with its keypoints in its label's order (learned from it when the label
        has none yet): reordered by name, missing ones unlabelled (0, 0, visibility 0)."""
        sk = self._skeletons.get(obj.label)
        if sk is None or obj.label not in self._slots:
            self._learn(obj, sk, item, index)
            return obj
        names = tuple(p.name for p in obj.keypoints)
        if names == sk.names:
            return obj
        where: dict[str, Any] = {"item": item.name, "obj": index}
        return replace(obj, keypoints=fit_points(obj.label, obj.keypoints, sk.names, where))

    def _learn(self, obj: Annotation, sk: Skeleton | None, item: Item, index: int) -> None:
        where: dict[str, Any] = {"item": item.name, "obj": index}
        if self._fixed_map:
            raise LabelMapError(
                f"label {obj.label!r} has keypoints but the pinned label map gives it none",
                **where,
            )
        if self._written and self._strict:
            raise FormatError(
                f"label {obj.label!r}'s keypoints first appear here, after records were "
                f"written with num_keypoints {self.keypoint_total}: the dataset's keypoint "
                "layout must be known before the first record",
                hint="pin a label map with this label's keypoints (--label-map)",
                **where,
            )
        names = tuple(p.name for p in obj.keypoints)
        self._limits.check("max_keypoints", len(names), **where)
        self._skeletons[obj.label] = Skeleton(names, sk.edges if sk is not None else ())
        self._give_slots(obj.label)

    def _add(self, name: str, **where: Any) -> int:
        label_id = self._base.id_of(name)
        if label_id is None:
            label_id = self._ids.get(name)
        if label_id is None:
            check_label_text(name, self._limits, **where)
            if self._plain:
                check_plain_label(name, **where)
            self._limits.check("max_labels", len(self._base) + len(self._added) + 1, **where)
            label_id = self._next_id
            self._next_id += 1
            self._added.append(LabelMapItem(id=label_id, name=name))
            self._map = None
        self._ids[name] = label_id
        return label_id

    def _resolve(self, name: str, item: Item, index: int) -> int:
        label_id = self._ids.get(name)
        if label_id is not None:
            return label_id
        if not self.pinned:
            return self._add(name, item=item.name, obj=index)
        label_id = self._base.id_of(name)
        if label_id is None:
            raise UnknownLabelError(
                f"label {name!r} is not in the pinned label map "
                f"(it has: {', '.join(n[:40] for n in self._base.names[:20])})",
                item=item.name,
                obj=index,
            )
        self._ids[name] = label_id
        return label_id

    def _unnamed(self, obj: Annotation, item: Item, index: int) -> Annotation:
        # a TFRecord object with a class id but no class/text: only a pinned map can name it;
        # an empty name would make an unreadable label_map.pbtxt
        named = self._base.name_of(obj.label_id) if self.pinned else None
        if named is None:
            raise UnknownLabelError(
                f"object has no label name (class id {obj.label_id}, no class text)",
                item=item.name,
                obj=index,
                hint="pin a label map that names the class ids (--label-map / "
                "label_map = ...), or write class/text into the records",
            )
        return replace(obj, label=named)

    def _note_source_id(self, text: str, source_id: int) -> None:
        known_text = self._text_of.setdefault(source_id, text)
        known_id = self._id_of.setdefault(text, source_id)
        if known_text != text or known_id != source_id:
            self.renumbered += 1

    def assign(self, item: Item) -> Item:
        """``item`` with every object's ``label_id`` set (the same object when nothing changes)."""
        changed = False
        objects = list(item.objects)
        for i, obj in enumerate(objects):
            if not obj.label:
                obj = objects[i] = self._unnamed(obj, item, i)
                changed = True
            label_id = self._resolve(obj.label, item, i)
            if obj.keypoints:
                fitted = self._fit(obj, item, i)
                if fitted is not obj:
                    obj = objects[i] = fitted
                    changed = True
            if obj.label_id and not self.pinned:
                self._note_source_id(obj.label, obj.label_id)
            if label_id != obj.label_id:
                objects[i] = replace(obj, label_id=label_id)
                changed = True
        if objects and self._strict:
            self._check_budget(item)
            self._written = True
        return replace(item, objects=tuple(objects)) if changed else item

    def _check_budget(self, item: Item) -> None:
        total = self.keypoint_total
        if total:
            self._limits.check(
                "max_values_per_feature", total * len(item.objects), item=item.name, key=KP_X
            )


def _names(names: tuple[str, ...]) -> str:
    shown = ", ".join(repr(n[:40]) for n in names[:20])
    return shown + (", ..." if len(names) > 20 else "")


def _edges_by_name(own: Skeleton, names: tuple[str, ...]) -> tuple[tuple[int, int], ...]:
    index = {n: i for i, n in enumerate(names)}
    return tuple((index[own.names[a]], index[own.names[b]]) for a, b in own.edges)


def fit_points(
    label: str, points: tuple[Point, ...], names: tuple[str, ...], where: dict[str, Any]
) -> tuple[Point, ...]:
    """``points`` in the order of ``names`` (by name; unnamed ones by position, padded),
    the missing ones unlabelled; a FormatError for a name the label does not have."""
    if not any(names) and not any(p.name for p in points):
        if len(points) > len(names):
            raise FormatError(
                f"object of label {label!r} has {len(points)} keypoints, but its label has "
                f"{len(names)} (from the first object seen)",
                **where,
            )
        return points + tuple(Point(0.0, 0.0, 0, "") for _ in names[len(points) :])
    by_name = {p.name: p for p in points}
    bad = next((p.name for p in points if p.name not in names), None)
    if bad is not None or len(by_name) != len(points) or len(set(names)) != len(names):
        what = f"keypoint {bad!r}" if bad is not None else "keypoint names that repeat"
        raise FormatError(
            f"object of label {label!r} has {what}; its label's keypoints are {_names(names)}",
            **where,
        )
    return tuple(by_name.get(n) or Point(0.0, 0.0, 0, n) for n in names)

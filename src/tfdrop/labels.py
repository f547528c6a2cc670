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

from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.labelmap import parse_label_map
from tfdrop.codec.model import Annotation, Item, LabelMap, LabelMapItem
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
    ) -> None:
        self.pinned = pinned is not None
        self._skeletons: dict[str, Skeleton] = dict(skeletons or {})
        """Label -> its keypoints: declared by the source, else seen on its objects."""
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
        self._map: LabelMap | None = None if self._skeletons else self._base
        limits.check("max_labels", len(self._base))
        if plain_text:
            for it in self._base.items:
                if it.id != 0:
                    check_plain_label(self._base.label_of(it))
        if base is None:
            for name in source_labels:
                self._add(name)

    @property
    def map(self) -> LabelMap:
        """The label map so far: the base map plus every label added, in order of adding,
        each label with keypoints carrying their names and edges (``keypoints { id label }``)."""
        if self._map is None:
            items = (*self._base.items, *self._added)
            if self._skeletons:
                items = tuple(self._with_keypoints(it) for it in items)
            self._map = LabelMap(items)
        return self._map

    def _with_keypoints(self, it: LabelMapItem) -> LabelMapItem:
        if it.keypoints:
            return it  # a pinned or source map's own keypoints win
        sk = self._skeletons.get(it.name) or self._skeletons.get(it.display_name)
        if sk is None or not sk.names:
            return it
        return replace(it, **sk.label_map_fields())

    def skeletons(self) -> dict[str, Skeleton]:
        """Label -> its keypoints (the report's ``keypoints`` section), in label map order."""
        out: dict[str, Skeleton] = {}
        lm = self.map
        for it in lm.items:
            name = lm.label_of(it)
            sk = Skeleton.of_item(it) or self._skeletons.get(name)
            if sk is not None:
                out[name] = sk
        return out

    def _see_keypoints(self, obj: Annotation) -> None:
        """Learn a label's keypoints from its objects when the source declared none."""
        known = self._skeletons.get(obj.label)
        if known is None or len(known.names) < len(obj.keypoints):
            names = tuple(p.name for p in obj.keypoints)
            edges = known.edges if known is not None else ()
            self._skeletons[obj.label] = Skeleton(names, edges)
            self._map = None

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
                self._see_keypoints(obj)
            if obj.label_id and not self.pinned:
                self._note_source_id(obj.label, obj.label_id)
            if label_id != obj.label_id:
                objects[i] = replace(obj, label_id=label_id)
                changed = True
        return replace(item, objects=tuple(objects)) if changed else item

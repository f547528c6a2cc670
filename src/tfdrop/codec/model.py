"""The one item model every format reads into and writes from.

A dataset is a label list plus a stream of :class:`Item` (one image each). Boxes are kept
normalised to [0, 1] as the TF Object Detection API stores them; pixel formats divide by the
image size on read and multiply back on write (SPEC.md "Conversions": no 1-based shift), so the
TFRecord, the hub format, round-trips without any conversion at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from tfdrop.errors import LabelMapError


class Shape(StrEnum):
    """What the source held for an annotation (the report counts them)."""

    BOX = "box"
    POLYGON = "polygon"
    MASK = "mask"
    POLYLINE = "polyline"
    POINTS = "points"


@dataclass(frozen=True, slots=True)
class Box:
    """A box normalised by the image width (x) and height (y)."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float

    @classmethod
    def from_pixels(
        cls, xmin: float, ymin: float, xmax: float, ymax: float, width: int, height: int
    ) -> Box:
        """Divide pixel coordinates by the image size, as TF models' pascal script does."""
        return cls(xmin / width, ymin / height, xmax / width, ymax / height)

    def to_pixels(self, width: int, height: int) -> tuple[float, float, float, float]:
        """Multiply back by the image size: (xmin, ymin, xmax, ymax) in pixels."""
        return (self.xmin * width, self.ymin * height, self.xmax * width, self.ymax * height)


@dataclass(frozen=True, slots=True)
class Point:
    """One keypoint of an object, normalised like :class:`Box`.

    ``visibility`` follows COCO and the OD API: 0 not labelled (x = y = 0 then), 1 labelled but
    not visible, 2 labelled and visible. ``name`` is the keypoint's name in its label's skeleton
    (``image/object/keypoint/text``).
    """

    x: float
    y: float
    visibility: int = 2
    name: str = ""


@dataclass(frozen=True, slots=True)
class Annotation:
    """One object in an image.

    ``label`` is the label's name (``image/object/class/text``); ``label_id`` its 1-based id
    (``image/object/class/label``), 0 while not yet assigned by a label map.
    ``mask`` is a full-image PNG with pixel values 0/1 (TF's PNG_MASKS), when masks are on.
    ``polygon`` keeps a polygon's pixel points ``(x0, y0, x1, y1, ...)`` when the source had one,
    so a writer that can hold polygons writes them back.
    ``keypoints`` are the object's keypoints in its label's skeleton order (the same K for
    every object of a label, the missing ones with visibility 0).
    """

    label: str
    box: Box
    label_id: int = 0
    difficult: bool = False
    truncated: bool = False
    occluded: bool = False
    view: str = ""
    mask: bytes | None = None
    is_crowd: bool = False
    area: float | None = None
    shape: Shape = Shape.BOX
    polygon: tuple[float, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()
    track_id: int | None = None
    z_order: int = 0
    group: int = 0
    keypoints: tuple[Point, ...] = ()


@dataclass(frozen=True, slots=True)
class Item:
    """One image and its objects.

    ``name`` is the image file name as the source spells it (a relative path, ``/`` separated);
    ``image`` the encoded file bytes, unchanged, or ``None`` when images are not embedded.
    ``extra`` keeps Example features tfdrop does not know, serialized, so a record that passes
    through keeps them (SPEC.md: readers keep unknown keys). ``image_member`` names the source
    member ``image`` was read from, byte for byte ("" when it was not): a work unit's spooled
    record then names those bytes in the source instead of copying them (tfdrop.units); it
    takes no part in comparing items.
    """

    name: str
    subset: str = "default"
    width: int = 0
    height: int = 0
    image: bytes | None = None
    image_format: str = ""
    source_id: str = ""
    sha256: str = ""
    objects: tuple[Annotation, ...] = ()
    tags: tuple[str, ...] = ()
    extra: tuple[tuple[str, bytes], ...] = ()
    frame: int | None = None
    image_member: str = field(default="", compare=False, repr=False)

    @property
    def stem(self) -> str:
        """The item id: the file name without folders or extension (Datumaro's convention)."""
        base = self.name.rsplit("/", 1)[-1]
        return base.rsplit(".", 1)[0] if "." in base else base


@dataclass(frozen=True, slots=True)
class Keypoint:
    """A keypoint entry of a label map item (``keypoints { id label }``)."""

    id: int
    label: str


@dataclass(frozen=True, slots=True)
class LabelMapItem:
    """One ``item { ... }`` of a ``StringIntLabelMap``."""

    id: int
    name: str
    display_name: str = ""
    keypoints: tuple[Keypoint, ...] = ()
    ancestor_ids: tuple[int, ...] = ()
    descendant_ids: tuple[int, ...] = ()
    frequency: int = 0
    instance_count: int | None = None
    keypoint_edges: tuple[tuple[int, int], ...] = ()
    """The skeleton's edges as pairs of keypoint ids (not a StringIntLabelMap field: written
    as a ``# keypoint_edges:`` comment in the item, which TF's parser skips)."""


@dataclass(frozen=True, slots=True)
class KeypointLayout:
    """The keypoint slots of a dataset, as the OD API reads them: ONE ``num_keypoints`` axis
    (``total``) for every object of every record, each label's keypoints at its GLOBAL ids
    (TF models' ``face_person_with_keypoints_label_map.pbtxt``: face 0-5, person 6-22).

    ``slots``: label -> the slot ids of its keypoints, in its skeleton's order; ``names``: the
    name of every slot (``""`` for a slot no label uses).
    """

    slots: dict[str, tuple[int, ...]]
    names: tuple[str, ...]

    @property
    def total(self) -> int:
        return len(self.names)

    @classmethod
    def of_items(cls, items: tuple[LabelMapItem, ...], label_of: Callable[[LabelMapItem], str]
                 ) -> KeypointLayout | None:  # fmt: skip
        """The layout a label map's ``keypoints { id label }`` give, None when none has any or
        two keypoints share an id (older tfdrop archives numbered every label from 0: their
        records are read by each record's own K)."""
        slots: dict[str, tuple[int, ...]] = {}
        names: dict[int, str] = {}
        for it in items:
            if not it.keypoints:
                continue
            kps = sorted(it.keypoints, key=lambda k: k.id)
            for k in kps:
                if k.id < 0 or k.id in names:
                    return None
                names[k.id] = k.label
            slots[label_of(it)] = tuple(k.id for k in kps)
        if not slots:
            return None
        total = max(names) + 1
        return cls(slots, tuple(names.get(i, "") for i in range(total)))


def _utf8(name: str) -> bytes:
    try:
        return name.encode()
    except UnicodeEncodeError as exc:
        bad = name[exc.start : exc.end].encode("unicode_escape").decode("ascii")
        raise LabelMapError(
            f"label {name[: exc.start][:40]!r}... holds {bad}, which is not a Unicode "
            "character (a lone surrogate, e.g. from a JSON '\\ud800' escape)"
        ) from None


@dataclass(frozen=True, slots=True)
class LabelMap:
    """An ordered label map with lookups by id, name and display name."""

    items: tuple[LabelMapItem, ...] = ()
    _by_id: dict[int, LabelMapItem] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, LabelMapItem] = field(init=False, repr=False, compare=False)
    _pairs: frozenset[tuple[bytes, int]] = field(init=False, repr=False, compare=False)
    _text_ids: dict[bytes, int] = field(init=False, repr=False, compare=False)
    _layout: KeypointLayout | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {it.id: it for it in self.items}
        # TF's own mscoco_label_map.pbtxt repeats name "NA" with distinct display names, so a
        # repeated name is not indexed; display names answer where no item has that name.
        counts: dict[str, int] = {}
        for it in self.items:
            counts[it.name] = counts.get(it.name, 0) + 1
        by_name: dict[str, LabelMapItem] = {}
        for it in self.items:
            if it.display_name:
                by_name.setdefault(it.display_name, it)
        for it in self.items:
            if counts[it.name] == 1:
                by_name[it.name] = it
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_by_name", by_name)
        text_ids = {_utf8(name): it.id for name, it in by_name.items()}
        object.__setattr__(self, "_text_ids", text_ids)
        object.__setattr__(self, "_pairs", frozenset(text_ids.items()))
        layout = None
        if any(it.keypoints for it in self.items):
            layout = KeypointLayout.of_items(self.items, self.label_of)
        object.__setattr__(self, "_layout", layout)

    @property
    def keypoint_layout(self) -> KeypointLayout | None:
        """The dataset's keypoint slots (:class:`KeypointLayout`), None without keypoints."""
        return self._layout

    @property
    def text_ids(self) -> dict[bytes, int]:
        """{class text as UTF-8: id} for every text the map accepts (do not modify)."""
        return self._text_ids

    @property
    def text_id_pairs(self) -> frozenset[tuple[bytes, int]]:
        """Every (class text as UTF-8, id) the map accepts: a fast all-clear set check."""
        return self._pairs

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self._by_id)

    def label_of(self, it: LabelMapItem) -> str:
        """The text that names ``it``: its name, or its display name where the name repeats."""
        if it.display_name and self._by_name.get(it.name) is not it:
            return it.display_name
        return it.name

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...]) -> LabelMap:
        """Ids 1..N in the given order (0 is reserved for background)."""
        return cls(tuple(LabelMapItem(id=i, name=n) for i, n in enumerate(names, start=1)))

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> list[str]:
        return [self.label_of(it) for it in self.items]

    def id_of(self, name: str) -> int | None:
        it = self._by_name.get(name)
        return None if it is None else it.id

    def name_of(self, label_id: int) -> str | None:
        it = self._by_id.get(label_id)
        return None if it is None else self.label_of(it)

    def get(self, label_id: int) -> LabelMapItem | None:
        return self._by_id.get(label_id)

"""Streaming Pascal VOC writer: CVAT's "Pascal VOC 1.1" layout (SPEC.md "Conversions").

Per item, ``Annotations/<id>.xml`` then ``JPEGImages/<name>`` (bytes unchanged; none when the
item carries no image, e.g. ``--no-images``); at the end ``ImageSets/Main/<subset>.txt`` and
CVAT's ``labelmap.txt``. Each object gets ``name``, ``pose`` (only when the object has a view,
as Datumaro/CVAT write it: inventing ``Unspecified`` would change the value a TFRecord ->
VOC -> TFRecord round trip gives back), ``truncated``, ``difficult``, ``occluded`` and a
``bndbox`` whose coordinates read back to the same float32 (:mod:`tfdrop.formats.common.pixels`).
Other attributes go to CVAT's ``<attributes>``. VOC cannot hold instance masks, polygons,
crowd flags, areas or tags here: each is counted in the report as lost.
"""

from __future__ import annotations

from tfdrop.archive import ZipSink
from tfdrop.codec.model import Annotation, Item, LabelMap, LabelMapItem, Shape
from tfdrop.errors import FormatError
from tfdrop.formats.base import Notes, WriteOptions
from tfdrop.formats.common.losses import note_item_losses
from tfdrop.formats.common.pixels import pixel_str
from tfdrop.formats.common.xmltext import XML_UNSAFE, Cleaner, escape
from tfdrop.formats.voc.layout import (
    ANNOTATIONS,
    IMAGES,
    LABELMAP,
    SUBSETS,
    format_labelmap,
    labelmap_problem,
)


def item_id(name: str) -> str:
    """The VOC id of an item: its name without the extension (folders kept)."""
    slash = name.rfind("/")
    dot = name.rfind(".")
    return name[:dot] if dot > slash + 1 else name


def _xml_problem(text: str) -> str | None:
    if XML_UNSAFE.search(text):
        return "holds characters XML 1.0 cannot carry"
    return None


def _object_xml(obj: Annotation, width: int, height: int, clean: Cleaner) -> str:
    b = obj.box
    parts = [
        "  <object>",
        f"    <name>{escape(obj.label)}</name>",
        *([f"    <pose>{escape(clean(obj.view))}</pose>"] if obj.view else []),
        f"    <truncated>{int(obj.truncated)}</truncated>",
        f"    <difficult>{int(obj.difficult)}</difficult>",
        f"    <occluded>{int(obj.occluded)}</occluded>",
        "    <bndbox>",
        f"      <xmin>{pixel_str(b.xmin, width)}</xmin>",
        f"      <ymin>{pixel_str(b.ymin, height)}</ymin>",
        f"      <xmax>{pixel_str(b.xmax, width)}</xmax>",
        f"      <ymax>{pixel_str(b.ymax, height)}</ymax>",
        "    </bndbox>",
    ]
    if obj.attributes:
        parts.append("    <attributes>")
        for key, value in obj.attributes:
            parts.append(
                f"      <attribute><name>{escape(clean(key))}</name>"
                f"<value>{escape(clean(value))}</value></attribute>"
            )
        parts.append("    </attributes>")
    parts.append("  </object>")
    return "\n".join(parts)


def annotation_xml(item: Item, clean: Cleaner) -> str:
    """The ``Annotations/<id>.xml`` text of one item; ``clean`` takes what XML cannot carry
    out of its free text (the attributes and poses)."""
    head = [
        "<?xml version='1.0' encoding='utf-8'?>",
        "<annotation>",
        "  <folder></folder>",
        f"  <filename>{escape(item.name)}</filename>",
        "  <source>",
        "    <database>Unknown</database>",
        "    <annotation>Unknown</annotation>",
        "    <image>Unknown</image>",
        "  </source>",
        "  <size>",
        f"    <width>{item.width}</width>",
        f"    <height>{item.height}</height>",
        "    <depth>3</depth>",
        "  </size>",
        "  <segmented>0</segmented>",
    ]
    body = [_object_xml(o, item.width, item.height, clean) for o in item.objects]
    return "\n".join([*head, *body, "</annotation>"]) + "\n"


class VocWriter:
    """Writes items as they come; subset lists and the label map at :meth:`close`."""

    def __init__(self, sink: ZipSink, options: WriteOptions, notes: Notes) -> None:
        self.sink = sink
        self.options = options
        self.notes = notes
        self._subsets: dict[str, list[str]] = {}
        self._ids: set[str] = set()
        self._labels: set[str] = set()
        self._clean = Cleaner()

    def write(self, item: Item) -> None:
        vid = item_id(item.name)
        if vid in self._ids:
            raise FormatError(
                f"two items map to the same VOC id {vid!r}; VOC needs unique file stems",
                item=item.name,
            )
        if item.objects and (item.width <= 0 or item.height <= 0):
            raise FormatError("item has objects but no image size", item=item.name)
        if (problem := _xml_problem(item.name)) is not None:  # found by an outside attack
            raise FormatError(
                f"the item's file name {item.name!r} {problem}; rename it before converting to VOC",
                item=item.name,
            )
        self._check_labels(item)
        self._ids.add(vid)
        self._note_losses(item)
        self.sink.write_member(
            f"{ANNOTATIONS}{vid}.xml",
            annotation_xml(item, self._clean).encode("utf-8"),
            compress=True,
        )
        if item.image is not None and self.options.images:
            self.sink.write_member(f"{IMAGES}{item.name}", item.image, compress=False)
        self._subsets.setdefault(item.subset or "default", []).append(vid)

    def _check_labels(self, item: Item) -> None:
        """Refuse, before anything is written, a label ``labelmap.txt`` would change."""
        for index, obj in enumerate(item.objects):
            if obj.label in self._labels:
                continue
            problem = labelmap_problem(obj.label) or _xml_problem(obj.label)
            if problem is not None:
                raise FormatError(
                    f"label {obj.label!r} {problem}; rename it before converting to VOC",
                    item=item.name,
                    obj=index,
                )
            self._labels.add(obj.label)

    def _note_losses(self, item: Item) -> None:
        note_item_losses(item, self.notes)  # features, source_id, area
        if item.tags:
            self.notes.lose("tag", len(item.tags))
        for obj in item.objects:
            if obj.mask is not None:
                self.notes.lose("mask")
            if obj.shape is Shape.POLYGON or obj.polygon:
                self.notes.lose("polygon")
            if obj.is_crowd:
                self.notes.lose("is_crowd")
            if obj.track_id is not None:
                self.notes.lose("track_id")

    def close(self, label_map: LabelMap) -> None:
        for subset in sorted(self._subsets):
            text = "".join(f"{vid}\n" for vid in self._subsets[subset])
            self.sink.write_member(f"{SUBSETS}{subset}.txt", text.encode("utf-8"), compress=True)
        items = sorted(label_map.items, key=lambda it: it.id)
        names = [self._text_of(label_map, it) for it in items]
        self.sink.write_member(LABELMAP, format_labelmap(names).encode("utf-8"), compress=True)
        self._clean.warn(self.notes)

    def abort(self) -> None:
        """Nothing to remove: every member goes straight into the zip."""

    def _text_of(self, label_map: LabelMap, it: LabelMapItem) -> str:
        """The text the objects of ``it`` carry in their ``<name>``: its display name when the
        records named it so (``n01440764`` shown as ``tench``), else the map's own text."""
        if it.display_name in self._labels and it.name not in self._labels:
            return it.display_name
        return label_map.label_of(it)


def open_writer(sink: ZipSink, options: WriteOptions, notes: Notes) -> VocWriter:
    return VocWriter(sink, options, notes)

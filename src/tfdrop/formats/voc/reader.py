"""Streaming Pascal VOC reader (SPEC.md "Conversions").

One item per ``Annotations/<id>.xml`` (each a small file, read whole and parsed with the safe
parser), plus ids listed in a subset file that have an image but no annotation (Datumaro reads
those as images without objects). Boxes are divided by the image size with no 1-based shift,
as TF models' ``create_pascal_tf_record.py`` does. Sizes come from ``<size>``, else from the
image header. Images are looked up as ``JPEGImages/<filename>``, else by the item id with any
extension, case-insensitively. Segmentation PNGs are not read: counted as lost.

Boxes: a min above its max, or a box with nothing inside the image, is a FormatError naming
the item and object. Within :data:`TOLERANCE` pixels outside (VOC's own 1-based boxes reach
``width``; some tools write ``width + 1``) the box is clamped into the image with a
``box_clamped`` warning; further out it is clipped to the image with a ``box_clipped`` warning
(as the YOLO and COCO readers do), because a TFRecord box must lie in [0, 1].

Every size comes from the job's budget (``ReadOptions.limits``): the XML and list files read
whole (``max_file_bytes``), images (``max_image_bytes``), list lines over all files
(``max_list_lines``), labels (``max_labels``), objects per item (``max_objects_per_item``),
text (``max_text_bytes``, in the XML parser) and numbers (``max_number_length``).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from typing import Final

from tfdrop.archive import Source
from tfdrop.codec.imagehead import image_kind
from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats.base import Notes, ReadOptions, plan_ranges
from tfdrop.formats.common.imageinfo import format_from_name, probe_member
from tfdrop.formats.common.masks import check_mask_size
from tfdrop.formats.common.pixels import clip_box
from tfdrop.formats.common.prefetch import prefetched
from tfdrop.formats.common.xmlsafe import element_lines, parse_small
from tfdrop.formats.voc.fields import Where as _Where
from tfdrop.formats.voc.fields import box_coords, child_text, twice
from tfdrop.formats.voc.fields import flag as _flag
from tfdrop.formats.voc.fields import image_size as _size
from tfdrop.formats.voc.fields import number as _number
from tfdrop.formats.voc.layout import (
    DEFAULT_SUBSET,
    IMAGES,
    LineBudget,
    VocRoot,
    find_roots,
    image_index,
    parse_labelmap,
    read_subsets,
)

TOLERANCE: Final = 1.0
"""Pixels a box may reach outside the image before it is an error (then it is clamped)."""
_FIELDS: Final = frozenset({"name", "pose", "truncated", "difficult", "occluded"})


def sniff_format(data: bytes, name: str) -> str:
    """``image/format`` from the first bytes (JPEG/PNG magic), else from the file name."""
    return image_kind(data) or format_from_name(name)


@dataclass(frozen=True, slots=True)
class _Fetched:
    """What the read-ahead thread brings for one annotation."""

    xml: bytes
    image_member: str | None
    image: bytes | None


@dataclass(frozen=True, slots=True)
class _Unit:
    """A work unit: annotation members ``start:stop`` of root ``root``; ``start`` -1 for the
    root's ids listed in a subset file without an annotation."""

    root: int
    start: int
    stop: int


class VocReader:
    """Reads every VOC root of a source, one item at a time."""

    def __init__(self, source: Source, options: ReadOptions, notes: Notes) -> None:
        self.source = source
        self.options = options
        self.notes = notes
        self.roots: list[VocRoot] = find_roots(source.names())
        if not self.roots:
            raise FormatError("no Annotations/*.xml found: not a Pascal VOC archive")
        self._image_index: dict[str, dict[str, str]] = {}
        limits = options.limits
        budget = LineBudget(limits.max_list_lines)
        labels: dict[str, None] = {}
        self._subsets: list[dict[str, str]] = []
        for root in self.roots:
            if root.labelmap is not None:
                names = parse_labelmap(
                    self._read_text(root.labelmap),
                    root.labelmap,
                    budget,
                    max_labels=limits.max_labels,
                    max_text=limits.max_text_bytes,
                )
                labels.update(dict.fromkeys(names))
                limits.check("max_labels", len(labels), member=root.labelmap)
            self._subsets.append(self._read_subsets(root, budget))
        self._labels = list(labels)
        self._label_ids = {name: i for i, name in enumerate(self._labels, start=1)}
        self._seen = set(self._labels)

    def _read_text(self, member: str) -> bytes:
        cap = self.options.limits.max_file_bytes
        self.options.limits.check("max_file_bytes", self.source.size(member), member=member)
        return self.source.read_bytes(member, max_size=cap)

    def _read_subsets(self, root: VocRoot, budget: LineBudget) -> dict[str, str]:
        if not root.subset_files:
            return {}
        ids = {root.item_id(m) for m in root.annotations}
        images = self._index(root)

        def known(item_id: str) -> bool:
            return item_id in ids or item_id.casefold() in images

        def warn(code: str, message: str, item_id: str) -> None:
            self.notes.warn(code, message, item=item_id)

        return read_subsets(root.subset_files, self._read_text, known, budget, warn)

    def labels(self) -> Sequence[str]:
        return self._labels

    def label_map(self) -> LabelMap | None:
        # labelmap.txt's order is its ids (1..N, background aside), as CVAT's own TFRecord
        # export numbers them; objects carry these ids already, so none needs relabelling.
        return LabelMap.from_names(self._labels) if self._labels else None

    def items(self) -> Iterator[Item]:
        for unit in self.units(max_items=sys.maxsize, max_bytes=sys.maxsize):
            yield from self.unit_items(unit)

    def total(self) -> int:
        """Annotation members, plus ids listed in a subset file without one (at most: a listed
        id without an image yields nothing)."""
        n = 0
        for root, subsets in zip(self.roots, self._subsets, strict=True):
            n += len(root.annotations)
            n += len(set(subsets).difference(map(root.item_id, root.annotations)))
        return n

    def units(self, *, max_items: int, max_bytes: int, portable: bool = False) -> list[_Unit]:
        """Per root: runs of annotation members (bounded by count and by the declared bytes
        of the annotation and its likely image), then the ids listed without an annotation."""
        out: list[_Unit] = []
        for r, root in enumerate(self.roots):
            costs = (self._cost(root, member) for member in root.annotations)
            ranges = plan_ranges(costs, max_items=max_items, max_bytes=max_bytes)
            out.extend(_Unit(r, start, stop) for start, stop in ranges)
            out.append(_Unit(r, -1, -1))
        return out

    def _cost(self, root: VocRoot, member: str) -> int:
        guess = f"{root.prefix}{IMAGES}{root.item_id(member)}.jpg"
        image = self.source.size(guess) if self.source.exists(guess) else 0
        return self.source.size(member) + image

    def unit_items(self, unit: object) -> Iterator[Item]:
        assert isinstance(unit, _Unit)
        root, subsets = self.roots[unit.root], self._subsets[unit.root]
        if unit.start < 0:
            # Ids listed in a subset with an image but no annotation: images without objects.
            annotated = map(root.item_id, root.annotations)
            for item_id in sorted(set(subsets).difference(annotated)):
                yield from self._listed_only(root, item_id, subsets[item_id])
            return
        members = root.annotations[unit.start : unit.stop]
        fetch = partial(self._fetch, root)
        if self.options.read_ahead:
            ahead = prefetched(members, fetch)
        else:
            ahead = (fetch(m) for m in members)
        with closing(ahead) as fetches:
            for member in members:
                item_id = root.item_id(member)
                try:
                    item = self._item(root, item_id, member, subsets, next(fetches))
                except TfdropError as exc:
                    raise exc.at(member=member, item=item_id) from None
                yield item

    def _listed_only(self, root: VocRoot, item_id: str, subset: str) -> Iterator[Item]:
        image = self._indexed_image(root, item_id)
        if image is None:
            self.notes.warn(
                "listed_without_files",
                f"{item_id} is listed in {subset}.txt but has neither an annotation nor an image",
                item=item_id,
            )
            return
        name = root.image_name(image)
        yield self._finish(Item(name=name, subset=subset, source_id=name), image, None)

    def _fetch(self, root: VocRoot, member: str) -> _Fetched:
        """The annotation's bytes and, when wanted, its likely image's (on the read-ahead
        thread: touches nothing but the source; the caller checks the guess)."""
        limits = self.options.limits
        limits.check("max_file_bytes", self.source.size(member), member=member)
        xml = self.source.read_bytes(member, max_size=limits.max_file_bytes)
        path = f"{root.prefix}{IMAGES}{root.item_id(member)}.jpg"
        guess = path if self.source.exists(path) else None
        data = None
        if guess is not None and self.options.images:
            data = self._read_image(guess)
        return _Fetched(xml, guess, data)

    def _item(
        self, root: VocRoot, item_id: str, member: str, subsets: dict[str, str], got: _Fetched
    ) -> Item:
        data = got.xml
        try:
            return self._parse_item(root, item_id, member, subsets, got)
        except FormatError as exc:
            if exc.obj is not None and exc.line is None:
                # Lines cost a second, slower parse: only taken when reporting an error.
                lines = element_lines(data, "object", member=member, limits=self.options.limits)
                exc.at(line=lines[exc.obj] if exc.obj < len(lines) else None)
            raise

    def _parse_item(
        self, root: VocRoot, item_id: str, member: str, subsets: dict[str, str], got: _Fetched
    ) -> Item:
        limits = self.options.limits
        root_el = parse_small(got.xml, member=member, limits=limits)
        filename = child_text(root_el, "filename", _Where(member, item_id, limits)) or ""
        image = self._find_image(root, item_id, filename)
        if not filename:
            filename = root.image_name(image) if image is not None else item_id + ".jpg"
        where = _Where(member, filename, limits)
        width, height = _size(root_el, where)
        if image is None:
            self._no_image(root.prefix + IMAGES + filename, width, height, where)
        item = Item(
            name=filename,
            subset=subsets.get(item_id, DEFAULT_SUBSET),
            width=width,
            height=height,
            source_id=filename,
        )
        raw = root_el.findall("object")
        limits.check("max_objects_per_item", len(raw), member=member, item=filename)
        self._note_segmentation(root, item_id, len(raw))
        preloaded = got.image if image is not None and image == got.image_member else None
        # The size may come from the image header, so boxes are read after _finish.
        item = self._finish(item, image, preloaded)
        if not raw:
            return item
        if self.options.masks:  # every object gets a full-image mask: refuse it here, named
            try:
                check_mask_size(item.width, item.height, limits.max_mask_pixels)
            except TfdropError as exc:
                raise exc.at(member=member, item=filename) from None
        objects = tuple(
            self._object(obj, i, item.width, item.height, where) for i, obj in enumerate(raw)
        )
        return Item(
            name=item.name,
            subset=item.subset,
            width=item.width,
            height=item.height,
            image=item.image,
            image_format=item.image_format,
            source_id=item.source_id,
            objects=objects,
            image_member=item.image_member,
        )

    def _no_image(self, expected: str, width: int, height: int, where: _Where) -> None:
        """An annotation whose image is not in the archive (CVAT's export with images off):
        kept without bytes when ``<size>`` gives the size, as CVAT, COCO and YOLO do."""
        if not (width and height):
            raise where.error(
                f"image not found: expected member {expected} (the annotation has no <size>)"
            )
        if self.options.images:
            self.notes.warn(
                "missing_image",
                f"image {expected} is not in the archive; the item has no image bytes",
                member=where.member,
                item=where.item,
            )

    def _note_segmentation(self, root: VocRoot, item_id: str, objects: int) -> None:
        """VOC's segmentation PNGs are not read (objects become boxes, or box masks with
        ``--masks``): each object of a ``SegmentationObject`` mask, and each
        ``SegmentationClass`` mask, is counted as lost."""
        for folder, what, n in (("SegmentationObject", "segmentation_object", objects),
                                ("SegmentationClass", "segmentation_class", 1)):  # fmt: skip
            if n and self.source.find(f"{root.prefix}{folder}/{item_id}.png") is not None:
                self.notes.lose(what, n)

    def _find_image(self, root: VocRoot, item_id: str, filename: str) -> str | None:
        if filename:
            hit = self.source.find(root.prefix + IMAGES + filename)
            if hit is not None:
                return hit
        return self._indexed_image(root, item_id)

    def _indexed_image(self, root: VocRoot, item_id: str) -> str | None:
        """The image of an id by stem, any extension and case."""
        return self._index(root).get(item_id.casefold())

    def _index(self, root: VocRoot) -> dict[str, str]:
        """Casefolded stem -> image member of a root (built on first need)."""
        index = self._image_index.get(root.prefix)
        if index is None:
            index = self._image_index[root.prefix] = image_index(self.source.names(), root.prefix)
        return index

    def _read_image(self, member: str) -> bytes:
        limits = self.options.limits
        limits.check("max_image_bytes", self.source.size(member), member=member)
        return self.source.read_bytes(member, max_size=limits.max_image_bytes)

    def _finish(self, item: Item, image: str | None, preloaded: bytes | None) -> Item:
        """Fill image bytes, format and (when the annotation lacks it) the size."""
        data: bytes | None = None
        fmt = format_from_name(image or item.name)
        width, height = item.width, item.height
        if image is not None and self.options.images:
            data = preloaded
            if data is None:
                data = self._read_image(image)
            fmt = sniff_format(data, image)
        if image is not None and not (width and height):
            info = probe_member(self.source, image, data)
            width, height, fmt = info.width, info.height, info.format
        return Item(
            name=item.name,
            subset=item.subset,
            width=width,
            height=height,
            image=data,
            image_format=fmt,
            source_id=item.source_id,
            image_member=image if data is not None and image is not None else "",
        )

    def _label(self, label: str | None, index: int, where: _Where) -> str:
        """The object's ``<name>``, counted against ``max_labels`` when it is new."""
        if not label:
            raise where.error("object has no <name>", obj=index)
        if label not in self._seen:
            self._seen.add(label)
            where.limits.check("max_labels", len(self._seen), member=where.member, item=where.item)
        return label

    def _object(
        self, obj: ET.Element, index: int, width: int, height: int, where: _Where
    ) -> Annotation:
        where.limits.check(
            "max_values_per_feature", len(obj), member=where.member, item=where.item, obj=index
        )
        # One pass over the children (find() per field costs a scan each).
        fields: dict[str, str] = {}
        box: ET.Element | None = None
        attributes: list[tuple[str, str]] = []
        for child in obj:
            tag = child.tag
            if (tag == "bndbox" and box is not None) or tag in fields:
                raise twice(where, tag, index)  # never the first taken, the second ignored
            if tag == "bndbox":
                box = child
            elif tag in _FIELDS:
                fields[tag] = (child.text or "").strip()
            elif tag == "attributes":
                for attr in child.iter("attribute"):
                    name = child_text(attr, "name", where, index)
                    if name:
                        attributes.append((name, child_text(attr, "value", where, index) or ""))
            elif tag == "actions":
                attributes.extend((a.tag, (a.text or "").strip()) for a in child)
            elif tag == "part":
                self.notes.skip(
                    "part",
                    f"object {index} has a body part (VOC layout); parts are not converted",
                    member=where.member,
                    item=where.item,
                )
            elif len(child) == 0:
                attributes.append((tag, (child.text or "").strip()))
        label = self._label(fields.get("name"), index, where)
        if box is None:
            raise where.error("object has no <bndbox>", obj=index)
        coords = box_coords(box, where, index)
        xmin, ymin, xmax, ymax = self._check_box(
            [_number(coords.get(k), k, where, index) for k in _BOX_KEYS],
            width,
            height,
            where,
            index,
        )
        return Annotation(
            label=label,
            label_id=self._label_ids.get(label, 0),
            box=Box.from_pixels(xmin, ymin, xmax, ymax, width, height),
            difficult=_flag(fields.get("difficult"), "difficult", where, index),
            truncated=_flag(fields.get("truncated"), "truncated", where, index),
            occluded=_flag(fields.get("occluded"), "occluded", where, index),
            view=fields.get("pose", ""),
            attributes=tuple(attributes),
        )

    def _check_box(
        self, c: list[float], width: int, height: int, where: _Where, index: int
    ) -> tuple[float, float, float, float]:
        xmin, ymin, xmax, ymax = c
        if xmin > xmax or ymin > ymax:
            raise where.error(
                f"min above max (xmin {xmin:g}, xmax {xmax:g}, ymin {ymin:g}, ymax {ymax:g})",
                obj=index,
            )
        coords, state = clip_box(xmin, ymin, xmax, ymax, width, height, TOLERANCE)
        if state == "outside":
            raise where.error(
                f"box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside the "
                f"{width}x{height} image",
                obj=index,
            )
        if state == "clamped":
            self.notes.warn(
                "box_clamped",
                f"object {index} reached up to {TOLERANCE:g} px outside the image; clamped",
                member=where.member,
                item=where.item,
            )
        elif state == "clipped":
            self.notes.warn(
                "box_clipped",
                f"object {index}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) sticks out of "
                f"the {width}x{height} image; clipped to its edges",
                member=where.member,
                item=where.item,
            )
        return coords


_BOX_KEYS: Final = ("xmin", "ymin", "xmax", "ymax")


def open_reader(source: Source, options: ReadOptions, notes: Notes) -> VocReader:
    return VocReader(source, options, notes)

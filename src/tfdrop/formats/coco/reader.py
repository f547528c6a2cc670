"""COCO 1.0 instances reader, streaming (SPEC.md "Conversions", issue 4).

Per instances file (see :mod:`tfdrop.formats.coco.index` for the layouts):

1. At open, ``categories`` of every file are read (the walk stops at the end of that array,
   which CVAT, Datumaro and Roboflow write first), so :meth:`CocoReader.labels` and
   :meth:`CocoReader.label_map` answer before any item is read.
2. :meth:`CocoReader.items` walks each file once (:mod:`.scan`): ``images`` go into the compact
   :class:`~.index.ImageIndex`; each annotation is checked and spilled, tagged with its image's
   position, to :class:`~.spill.Spill` in the work folder. A file that lists ``annotations``
   before ``images`` is walked a second time for its annotations.
3. Items are yielded in ``images`` order, each with its annotations in file order; images
   without annotations are empty items.

Boxes come from ``bbox`` ``[x, y, w, h]`` as ``Box.from_pixels(x, y, x + w, y + h, W, H)``, as
TF's ``create_coco_tf_record.py`` does (also for polygons and masks; the shape's bounds only
when ``bbox`` is absent). Polygons (``segmentation`` list of lists) and RLE (uncompressed
``counts`` lists and compressed strings) become PNG masks with ``ReadOptions.masks``.

Errors (:class:`FormatError` with ``member``, the JSON path in ``key``, ``item``, and the
annotation id in the message): invalid or truncated JSON, wrong JSON types, an annotation for
an image id not in ``images``, a category id not in ``categories``, a NaN/infinite ``bbox`` or
one with negative width or height, an RLE whose size is not the image's. Warnings counted in
the report (``Notes.warn``): ``box_clipped`` (a box reaching outside its image is clipped, as
the TFRecord needs [0, 1]), ``missing_image`` (an image file not in the archive: the item is
kept without image bytes), ``ignored_member`` (other COCO tasks, e.g. ``person_keypoints_*``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from tfdrop.codec.model import Annotation, Box, Item, LabelMap, Shape
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats.base import Notes, ReadOptions
from tfdrop.formats.coco.index import (
    AnnotationFile,
    Categories,
    ImageIndex,
    find_annotation_files,
    finite,
)
from tfdrop.formats.coco.rle import (
    check_counts,
    counts_bbox,
    counts_to_bits,
    decode_counts_string,
)
from tfdrop.formats.coco.scan import walk
from tfdrop.formats.coco.spill import Spill
from tfdrop.formats.imageinfo import format_from_name, probe
from tfdrop.formats.masks import bitmap_mask_png, polygons_mask_png

if TYPE_CHECKING:
    from tfdrop.archive import Source

MAX_IMAGE: Final = 256 << 20
_OTHER_TASKS: Final = ("person_keypoints_", "captions_", "panoptic_", "stuff_", "image_info_")

# a spilled annotation: (array index, id, category id, bbox or None, iscrowd, area,
# segmentation, attributes)
_Record = tuple[int, Any, int, Any, bool, Any, Any, Any]


@dataclass(slots=True)
class CocoReader:
    source: Source
    options: ReadOptions
    notes: Notes
    files: list[AnnotationFile] = field(default_factory=list)
    categories: Categories = field(default_factory=Categories)
    _ids_kept: bool = False

    def __post_init__(self) -> None:
        names = self.source.names()
        self.files = find_annotation_files(names)
        if not self.files:
            raise FormatError(
                "no COCO instances file (annotations/instances_<subset>.json or "
                "_annotations.coco.json) in the archive"
            )
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if name.endswith(".json") and base.startswith(_OTHER_TASKS):
                self.notes.warn(
                    "ignored_member", "only COCO instances files are converted", member=name
                )
        for f in self.files:
            self._read_categories(f.member)
        self._ids_kept = self.categories.label_map() is not None

    def _read_categories(self, member: str) -> None:
        with self.source.open(member) as stream:
            wanted = frozenset({"categories"})
            for el in walk(stream, member, wanted=wanted, until="categories"):
                if el.key == "categories":
                    if el.idx < 0:
                        raise FormatError("categories must be a list", member=member, key=el.key)
                    self.categories.add(el.value, el.path, member)

    def labels(self) -> Sequence[str]:
        return self.categories.names()

    def label_map(self) -> LabelMap | None:
        return self.categories.label_map()

    def items(self) -> Iterator[Item]:
        for f in self.files:
            spill = Spill(self.options.workdir)
            try:
                index = self._index(f, spill)
                yield from self._join(f, index, spill)
            except TfdropError as exc:
                raise exc.at(member=f.member) from None
            finally:
                spill.close()

    # -- pass: images and annotations ------------------------------------------------------

    def _index(self, f: AnnotationFile, spill: Spill) -> ImageIndex:
        index = ImageIndex(f.member)
        finished = deferred = False
        with self.source.open(f.member) as stream:
            for el in walk(stream, f.member, wanted=frozenset({"images", "annotations"})):
                if el.key == "images":
                    if el.idx < 0:
                        raise FormatError("images must be a list", key=el.key)
                    if finished:
                        raise FormatError("a second images array after annotations", key=el.path)
                    index.add(el.value, el.path)
                elif el.key == "annotations":
                    if el.idx < 0:
                        raise FormatError("annotations must be a list", key=el.key)
                    if not finished and not deferred:
                        if len(index) == 0:
                            deferred = True  # images may still come after annotations
                        else:
                            index.finish()
                            finished = True
                    if finished:
                        self._spill(el.idx, el.value, index, spill)
        if not finished:
            index.finish()
            if deferred:
                # annotations came before images: walk the file again for them
                with self.source.open(f.member) as stream:
                    for el in walk(stream, f.member, wanted=frozenset({"annotations"})):
                        if el.key == "annotations" and el.idx >= 0:
                            self._spill(el.idx, el.value, index, spill)
        return index

    def _spill(self, i: int, value: Any, index: ImageIndex, spill: Spill) -> None:
        """Check one annotation and spill it; the checks run as one fast expression, and only
        a failing annotation goes through :meth:`_refuse` to say precisely what is wrong."""
        if type(value) is dict:
            get = value.get
            image_id, cat, bbox, area = (
                get("image_id"),
                get("category_id"),
                get("bbox"),
                get("area"),
            )
            crowd = get("iscrowd", 0)
            if (
                type(image_id) is int
                and type(cat) is int
                and (bbox is None or (finite(bbox, 4) and bbox[2] >= 0 and bbox[3] >= 0))
                and (area is None or finite([area], 1))
                and crowd in (0, 1, None)
            ):
                pos = index.position(image_id)
                if pos is not None:
                    attrs = get("attributes")
                    spill.add(
                        pos,
                        (i, get("id"), cat, bbox, bool(crowd), area, get("segmentation"),
                         attrs if type(attrs) is dict else None),
                    )  # fmt: skip
                    return
        self._refuse(i, value, index)
        raise FormatError("invalid annotation", key=f"annotations[{i}]")  # not reached

    def _refuse(self, i: int, value: Any, index: ImageIndex) -> None:
        """Raise the :class:`FormatError` that says what is wrong with an annotation."""
        path = f"annotations[{i}]"
        if not isinstance(value, dict):
            raise FormatError("an annotation must be a JSON object", key=path)
        ann_id = value.get("id")
        image_id = value.get("image_id")
        if type(image_id) is not int:
            raise FormatError(
                f"annotation {ann_id}: image_id must be an integer, not {image_id!r}",
                key=f"{path}.image_id",
            )
        pos = index.position(image_id)
        if pos is None:
            raise FormatError(
                f"annotation {ann_id} refers to image id {image_id}, which is not in images",
                key=f"{path}.image_id",
            )
        cat = value.get("category_id")
        if type(cat) is not int:
            raise FormatError(
                f"annotation {ann_id}: category_id must be an integer, not {cat!r}",
                key=f"{path}.category_id",
                item=index.name(pos),
            )
        bbox = value.get("bbox")
        if bbox is not None:
            if not finite(bbox, 4):
                raise FormatError(
                    f"annotation {ann_id}: bbox must be 4 finite numbers [x, y, w, h], "
                    f"not {bbox!r}",
                    key=f"{path}.bbox",
                    item=index.name(pos),
                )
            if bbox[2] < 0 or bbox[3] < 0:
                raise FormatError(
                    f"annotation {ann_id}: bbox {bbox!r} has a negative width or height",
                    key=f"{path}.bbox",
                    item=index.name(pos),
                )
        area = value.get("area")
        if area is not None and not finite([area], 1):
            raise FormatError(
                f"annotation {ann_id}: area {area!r} is not a finite number",
                key=f"{path}.area",
                item=index.name(pos),
            )
        crowd = value.get("iscrowd", 0)
        if crowd not in (0, 1, None):
            raise FormatError(
                f"annotation {ann_id}: iscrowd must be 0 or 1, not {crowd!r}",
                key=f"{path}.iscrowd",
                item=index.name(pos),
            )

    # -- pass: items ------------------------------------------------------------------------

    def _join(self, f: AnnotationFile, index: ImageIndex, spill: Spill) -> Iterator[Item]:
        groups = spill.groups()
        nxt = next(groups, None)
        for pos in range(len(index)):
            records: list[_Record] = []
            if nxt is not None and nxt[0] == pos:
                records = nxt[1]
                nxt = next(groups, None)
            yield self._item(f, index, pos, records)

    def _find_image(self, f: AnnotationFile, name: str) -> str | None:
        base = name.rsplit("/", 1)[-1]
        for d in f.image_dirs:
            hit = self.source.find(d + name)
            if hit is None and base != name:
                hit = self.source.find(d + base)
            if hit is not None:
                return hit
        return None

    def _item(self, f: AnnotationFile, index: ImageIndex, pos: int, records: list[_Record]) -> Item:
        name = index.name(pos)
        width, height = index.size(pos)
        member = None
        if self.options.images or width <= 0 or height <= 0:
            member = self._find_image(f, name)
        image: bytes | None = None
        fmt = format_from_name(name)
        if member is None:
            if self.options.images:
                self.notes.warn(
                    "missing_image",
                    f"image {name!r} is not in the archive; the item has no image bytes",
                    member=f.member,
                    item=name,
                )
        elif self.options.images:
            image = self.source.read_bytes(member, max_size=MAX_IMAGE)
        if width <= 0 or height <= 0:
            if image is None and member is None:
                raise FormatError(
                    f"image {name!r} has no width/height and its file is not in the archive",
                    key=f"images[{pos}]",
                    item=name,
                )
            assert member is not None
            if image is not None:
                info = probe(image, name=member)
            else:
                with self.source.open(member) as s:
                    info = probe(s, name=member)
            width, height, fmt = info.width, info.height, info.format
        objects = tuple(self._annotation(r, name, width, height) for r in records)
        return Item(
            name=name,
            subset=f.subset,
            width=width,
            height=height,
            image=image,
            image_format=fmt,
            source_id=str(index.image_id(pos)),
            objects=objects,
        )

    def _annotation(self, r: _Record, item: str, width: int, height: int) -> Annotation:
        # the hot loop of a conversion (once per object): no work for what is absent
        i, ann_id, cat, bbox, crowd, area, seg, attrs = r
        label = self.categories.by_id.get(cat)
        if label is None:
            raise FormatError(
                f"annotation {ann_id} has category id {cat}, which is not in categories",
                key=f"annotations[{i}].category_id",
                item=item,
            )
        shape: Shape = Shape.BOX
        polygon: tuple[float, ...] = ()
        mask: bytes | None = None
        bounds: tuple[float, float, float, float] | None = None
        if seg:
            try:
                shape, polygon, mask, bounds = self._segmentation(seg, width, height, bbox is None)
            except FormatError as exc:
                exc.message = f"annotation {ann_id}: {exc.message}"
                raise exc.at(key=f"annotations[{i}].segmentation", item=item) from None
        if bbox is not None:
            x0, y0, w, h = bbox
            x1, y1 = x0 + w, y0 + h
        elif bounds is not None:
            x0, y0, x1, y1 = bounds
        else:
            raise FormatError(
                f"annotation {ann_id} has neither a bbox nor a segmentation",
                key=f"annotations[{i}]",
                item=item,
            )
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            self.notes.warn(
                "box_clipped",
                f"annotation {ann_id}: box {(x0, y0, x1, y1)} reaches outside the "
                f"{width}x{height} image; clipped",
                item=item,
            )
            x0, x1 = min(max(x0, 0), width), min(max(x1, 0), width)
            y0, y1 = min(max(y0, 0), height), min(max(y1, 0), height)
        occluded = difficult = truncated = False
        view = ""
        attributes: tuple[tuple[str, str], ...] = ()
        if attrs:
            # the writer keeps these model fields as attributes (COCO has no keys for them)
            rest = []
            for k, v in attrs.items():
                if k == "occluded":
                    occluded = _truthy(v)
                elif k == "difficult":
                    difficult = _truthy(v)
                elif k == "truncated":
                    truncated = _truthy(v)
                elif k == "view":
                    view = str(v)
                else:
                    rest.append((str(k), _attr_text(v)))
            attributes = tuple(rest)
        return Annotation(
            label=label,
            # the COCO id is the label id when the map keeps COCO ids: the resolver then has
            # nothing to replace (dataclasses.replace per object was a quarter of the run)
            label_id=cat if self._ids_kept else 0,
            box=Box.from_pixels(x0, y0, x1, y1, width, height),
            mask=mask,
            is_crowd=crowd,
            area=float(area) if area is not None else None,
            shape=shape,
            polygon=polygon,
            occluded=occluded,
            difficult=difficult,
            truncated=truncated,
            view=view,
            attributes=attributes,
        )

    def _segmentation(
        self, seg: Any, width: int, height: int, need_bounds: bool
    ) -> tuple[Shape, tuple[float, ...], bytes | None, tuple[float, float, float, float] | None]:
        """(shape, kept polygon, mask PNG if masks are on, bounds if asked for)."""
        if not seg:
            return Shape.BOX, (), None, None
        if isinstance(seg, list):
            parts: list[list[float]] = []
            for part in seg:
                if not finite(part) or len(part) % 2:
                    raise FormatError("a polygon must be a list of x, y numbers")
                if len(part) >= 6:
                    parts.append(part)
            if not parts:
                return Shape.BOX, (), None, None
            bounds = None
            if need_bounds:
                bounds = (
                    min(min(p[0::2]) for p in parts),
                    min(min(p[1::2]) for p in parts),
                    max(max(p[0::2]) for p in parts),
                    max(max(p[1::2]) for p in parts),
                )
            polygon: tuple[float, ...] = ()
            if len(parts) == 1:
                polygon = tuple(map(float, parts[0]))
            else:
                self.notes.lose("polygon_parts")  # the item model keeps one polygon per object
            mask = polygons_mask_png(parts, width, height) if self.options.masks else None
            return Shape.POLYGON, polygon, mask, bounds
        if isinstance(seg, dict):
            size = seg.get("size")
            counts = seg.get("counts")
            if not (isinstance(size, list) and len(size) == 2):
                raise FormatError(f"RLE size must be [height, width], not {size!r}")
            if size != [height, width]:
                raise FormatError(f"RLE size {size} is not the image's [{height}, {width}]")
            if isinstance(counts, str):
                counts = decode_counts_string(counts)
            elif not isinstance(counts, list):
                raise FormatError("RLE counts must be a list or a compressed string")
            mask = None
            if self.options.masks:
                bits = counts_to_bits(counts, height, width)  # also checks the counts
                mask = bitmap_mask_png(bits, width, height)
            else:
                check_counts(counts, height, width)
            box = counts_bbox(counts, height) if need_bounds else None
            return Shape.MASK, (), mask, box
        raise FormatError(f"segmentation must be a list or an RLE object, not {seg!r}")


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _attr_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def open_reader(source: Source, options: ReadOptions, notes: Notes) -> CocoReader:
    return CocoReader(source, options, notes)

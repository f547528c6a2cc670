"""COCO 1.0 instances reader, streaming (SPEC.md "Conversions").

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

Work units (:meth:`CocoReader.units`, for :mod:`tfdrop.units`): the parent makes pass 2 for
every file, saves each file's index and its annotations sorted by image position in a folder
of the work folder, and cuts the image index into ranges (:class:`~.plan.CocoUnit`: a range of
positions and the byte range of their annotations); a worker reads back only its range.
:meth:`CocoReader.overlapped_units` gives the first units out while pass 2 runs
(:mod:`.plan`).

Objects are built by :mod:`.objects`: boxes from ``bbox`` ``[x, y, w, h]`` as TF's
``create_coco_tf_record.py`` reads them; polygons and RLE (counts lists and compressed strings)
become PNG masks with ``ReadOptions.masks``.

Errors (:class:`FormatError` with ``member``, the JSON path in ``key``, ``item``, and the
annotation id in the message): invalid or truncated JSON, wrong JSON types, an annotation for
an image id not in ``images``, a category id not in ``categories``, a NaN/infinite ``bbox`` or
one with negative width or height, an RLE whose size is not the image's. Warnings counted in
the report (``Notes.warn``): ``box_clipped`` (a box reaching outside its image is clipped, as
the TFRecord needs [0, 1]), ``missing_image`` (an image file not in the archive: the item is
kept without image bytes), ``ignored_member`` (other COCO tasks, and a
``person_keypoints_<subset>.json`` beside its ``instances_<subset>.json``, whose keypoints are
not merged in). Keypoints (:mod:`.keypoints`): an annotation's ``keypoints`` become the
object's, named and counted by its category's ``keypoints``; the category's ``skeleton``
goes to the label map and the report. Counted as lost (``Notes.lose``): a category's
``supercategory`` (``category_supercategory``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Item, LabelMap
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats.base import Notes, ReadOptions
from tfdrop.formats.coco.index import (
    AnnotationFile,
    Categories,
    ImageIndex,
    find_annotation_files,
    finite,
)
from tfdrop.formats.coco.keypoints import KeypointCategories, keypoints_ok
from tfdrop.formats.coco.objects import ObjectBuilder, Record, refuse
from tfdrop.formats.coco.plan import CocoUnit, UnitPlan, plan_early, plan_units
from tfdrop.formats.coco.scan import Element, walk
from tfdrop.formats.coco.spill import Spill, by_position, iter_groups
from tfdrop.formats.common.imageinfo import format_from_name, probe_member
from tfdrop.limits import exceeded

if TYPE_CHECKING:
    from tfdrop.archive import Source

_OTHER_TASKS: Final = ("person_keypoints_", "captions_", "panoptic_", "stuff_", "image_info_")


__all__ = ["CocoReader", "CocoUnit", "open_reader"]


@dataclass(slots=True)
class CocoReader:
    source: Source
    options: ReadOptions
    notes: Notes
    files: list[AnnotationFile] = field(default_factory=list)
    categories: Categories = field(init=False)
    keypoint_categories: KeypointCategories = field(init=False)
    _objects: ObjectBuilder = field(init=False)
    _units_dir: tempfile.TemporaryDirectory[str] | None = None
    _loaded: dict[tuple[str, int], ImageIndex] = field(default_factory=dict)
    _planned: list[CocoUnit] | None = None
    _pass_notes: Notes | None = None  # where pass 2 notes go (a UnitPlan's, while it runs)
    _kp_seen: bool = False  # an annotation with keypoints was spilled

    def __post_init__(self) -> None:
        self.categories = Categories(self.options.limits)
        self.keypoint_categories = KeypointCategories(self.options.limits)
        names = self.source.names()
        self.files = find_annotation_files(names)
        if not self.files:
            raise FormatError(
                "no COCO instances file (annotations/instances_<subset>.json or "
                "_annotations.coco.json) in the archive"
            )
        read = {f.member for f in self.files}
        for name in names:
            base = name.rsplit("/", 1)[-1]
            if name.endswith(".json") and base.startswith(_OTHER_TASKS) and name not in read:
                self.notes.warn(
                    "ignored_member", "only COCO instances files are converted", member=name
                )
        for f in self.files:
            self._read_categories(f.member)
        self._objects = ObjectBuilder(
            self.categories, self.options, self.notes, self.keypoint_categories
        )

    def _read_categories(self, member: str) -> None:
        with self.source.open(member) as stream:
            wanted = frozenset({"categories"})
            for el in self._walk(stream, member, wanted, until="categories"):
                if el.key == "categories":
                    if el.idx < 0:
                        raise FormatError("categories must be a list", member=member, key=el.key)
                    self.categories.add(el.value, el.path, member)
                    self.keypoint_categories.add(el.value, el.path, member)
                    if el.value.get("supercategory"):  # the label map has no room for it
                        self.notes.lose("category_supercategory")

    def _walk(
        self, stream: IO[bytes], member: str, wanted: frozenset[str], until: str | None = None
    ) -> Iterator[Element]:
        limits = self.options.limits
        return walk(
            stream,
            member,
            wanted=wanted,
            until=until,
            max_depth=limits.max_depth,
            max_number_length=limits.max_number_length,
        )

    def labels(self) -> Sequence[str]:
        return self.categories.names()

    def label_map(self) -> LabelMap | None:
        return self.categories.label_map()

    def _check_count(self, kp: list[Any], count: Any, i: int, item: str) -> None:
        """COCO's ``num_keypoints`` is the labelled count: a disagreeing one is warned about
        (tfdrop counts the visibilities itself)."""
        labelled = sum(1 for v in kp[2::3] if v)
        if count is not None and count != labelled:
            notes = self.notes if self._pass_notes is None else self._pass_notes
            notes.warn(
                "num_keypoints_mismatch",
                f"num_keypoints is {count!r} but {labelled} keypoints are labelled; "
                f"{labelled} kept",
                key=f"annotations[{i}].num_keypoints",
                item=item,
            )

    def skeletons(self) -> dict[str, Skeleton]:
        return self.keypoint_categories.skeletons(self.categories.by_id)

    def keypoints_declared(self) -> bool:
        """Every category with a skeleton names its keypoints (Datumaro's ``"keypoints": []``
        takes K from the annotations)."""
        return all(sk.names for sk in self.keypoint_categories.by_id.values())

    def items(self) -> Iterator[Item]:
        if self._planned is not None:  # units() made pass 2 already (and noted what it saw)
            for unit in self._planned:
                yield from self.unit_items(unit)
            return
        for f in self.files:
            spill = Spill(self.options.workdir)
            try:
                index = self._index(f, spill)
                yield from self._join(f, index, spill)
            except TfdropError as exc:
                raise exc.at(member=f.member) from None
            finally:
                spill.close()

    # -- work units -------------------------------------------------------------------------

    def units(
        self, *, max_items: int, max_bytes: int, portable: bool = False
    ) -> list[CocoUnit] | None:
        """Pass 2 of every file here, saved for the workers; ranges of each file's images
        (bounded by count and by the declared bytes of their image files). None when a file
        is bad: the sequential read then meets the errors in their order; None when asked
        for ``portable`` units (these name the folder saved here)."""
        if portable:
            return None
        if self._planned is None:
            self._planned = plan_units(self, self._folder(), max_items, max_bytes)
        return self._planned

    def overlapped_units(
        self, *, max_items: int, max_bytes: int, early: int, early_bytes: int
    ) -> UnitPlan | None:
        """Units like :meth:`units`, the first ``early`` (up to ``early_bytes`` each) while
        pass 2 still runs (:mod:`.plan`). None (use :meth:`units`) for one small file, for
        keypoints or a Roboflow root category (a worker would send back an item whose label
        the parent resolves whole, images and all)."""
        if self._planned is not None or self.keypoint_categories.by_id:
            return None
        if len(self.categories.names()) != len(self.categories.by_id):
            return None
        return plan_early(
            self, self._folder(), max_items=max_items, max_bytes=max_bytes, early=early,
            early_bytes=early_bytes,
        )  # fmt: skip

    def _folder(self) -> Path:
        if self._units_dir is None:
            self._units_dir = tempfile.TemporaryDirectory(
                prefix=".tfdrop-coco-units-", dir=self.options.workdir
            )
        return Path(self._units_dir.name)

    @contextmanager
    def noting(self, notes: Notes) -> Iterator[None]:
        """Pass 2 notes into ``notes`` meanwhile."""
        old, self._pass_notes = self._pass_notes, notes
        try:
            yield
        finally:
            self._pass_notes = old

    def _image_cost(self, f: AnnotationFile, name: str) -> int:
        member = self._find_image(f, name) if self.options.images else None
        return self.source.size(member) if member is not None else 0

    def unit_items(self, unit: object) -> Iterator[Item]:
        assert isinstance(unit, CocoUnit)
        f = self.files[unit.file]
        try:
            index = self._loaded.get((unit.folder, unit.file))
            if index is None:
                path = Path(unit.folder) / f"{unit.file}.index"
                index = ImageIndex.load(path, f.member, self.options.limits)
                self._loaded = {(unit.folder, unit.file): index}  # one file's at a time
            groups = iter_groups(Path(unit.folder) / unit.spill, unit.lo, unit.hi)
            for pos, records in by_position(groups, unit.start, unit.stop):
                yield self._item(f, index, pos, records)
        except TfdropError as exc:
            raise exc.at(member=f.member) from None

    def close(self) -> None:
        """Remove what :meth:`units` saved (also done when the reader is collected)."""
        if self._units_dir is not None:
            self._units_dir.cleanup()
            self._units_dir = None

    # -- pass: images and annotations ------------------------------------------------------

    def _index(self, f: AnnotationFile, spill: Spill) -> ImageIndex:
        index = ImageIndex(f.member, self.options.limits)
        for _ in self._pass(f, index, spill):
            pass
        return index

    def _pass(
        self, f: AnnotationFile, index: ImageIndex, spill: Spill
    ) -> Generator[int, None, None]:
        """Index ``images`` and spill the annotations, step by step: at the first annotation
        -1 (the images are indexed) or -2 (no images yet: the annotations are spilled in a
        second walk), then each annotation's image position when it differs from the one
        before (so a caller can give out finished images early)."""
        finished = deferred = False
        last = -1
        with self.source.open(f.member) as stream:
            for el in self._walk(stream, f.member, frozenset({"images", "annotations"})):
                if el.key not in ("images", "annotations"):
                    continue
                if el.idx < 0:
                    raise FormatError(f"{el.key} must be a list", key=el.key)
                if el.key == "images":
                    if finished:
                        raise FormatError("a second images array after annotations", key=el.path)
                    index.add(el.value, el.path)
                    continue
                if not finished and not deferred:
                    deferred = len(index) == 0  # images may still come after annotations
                    finished = not deferred
                    if finished:
                        index.finish()
                    yield -1 if finished else -2
                if finished:
                    pos = self._spill(el.idx, el.value, index, spill)
                    if pos != last:
                        last = pos
                        yield pos
        if not finished:
            index.finish()
            if deferred:
                self._spill_second_pass(f, index, spill)

    def _spill_second_pass(self, f: AnnotationFile, index: ImageIndex, spill: Spill) -> None:
        """Annotations came before images: walk the file again for them."""
        with self.source.open(f.member) as stream:
            for el in self._walk(stream, f.member, frozenset({"annotations"})):
                if el.key == "annotations" and el.idx >= 0:
                    self._spill(el.idx, el.value, index, spill)

    def _spill(self, i: int, value: Any, index: ImageIndex, spill: Spill) -> int:
        """Check one annotation and spill it (its image's position); the checks run as one
        fast expression, and only a failing one goes through :func:`~.objects.refuse` to say
        precisely what is wrong."""
        if type(value) is dict:
            get = value.get
            image_id, cat, bbox, area = (
                get("image_id"),
                get("category_id"),
                get("bbox"),
                get("area"),
            )
            crowd = get("iscrowd", 0)
            kp = get("keypoints")
            if (
                type(image_id) is int
                and type(cat) is int
                and (bbox is None or (finite(bbox, 4) and bbox[2] >= 0 and bbox[3] >= 0))
                and (area is None or finite([area], 1))
                and crowd in (0, 1, None)
                and (kp is None or keypoints_ok(kp))
            ):
                pos = index.position(image_id)
                if pos is not None:
                    n = index.objects[pos] + 1
                    index.objects[pos] = n
                    if n > self.options.limits.max_objects_per_item:
                        raise exceeded(
                            "max_objects_per_item",
                            n,
                            self.options.limits.max_objects_per_item,
                            key=f"annotations[{i}]",
                            item=index.name(pos),
                        )
                    attrs = get("attributes")
                    if kp:
                        self._kp_seen = True
                        self.options.limits.check(
                            "max_keypoints", len(kp) // 3, key=f"annotations[{i}].keypoints",
                            item=index.name(pos),
                        )  # fmt: skip
                        self._check_count(kp, get("num_keypoints"), i, index.name(pos))
                    spill.add(
                        pos,
                        (i, get("id"), cat, bbox, bool(crowd), area, get("segmentation"),
                         attrs if type(attrs) is dict else None, kp),
                    )  # fmt: skip
                    return pos
        refuse(i, value, index)
        raise FormatError("invalid annotation", key=f"annotations[{i}]")  # not reached

    # -- pass: items ------------------------------------------------------------------------

    def _join(self, f: AnnotationFile, index: ImageIndex, spill: Spill) -> Iterator[Item]:
        for pos, records in by_position(spill.groups(), 0, len(index)):
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

    def _item(self, f: AnnotationFile, index: ImageIndex, pos: int, records: list[Record]) -> Item:
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
            cap = self.options.limits.max_image_bytes
            self.options.limits.check("max_image_bytes", self.source.size(member), member=member)
            image = self.source.read_bytes(member, max_size=cap)
        if width <= 0 or height <= 0:
            if image is None and member is None:
                raise FormatError(
                    f"image {name!r} has no width/height and its file is not in the archive",
                    key=f"images[{pos}]",
                    item=name,
                )
            assert member is not None
            info = probe_member(self.source, member, image)
            width, height, fmt = info.width, info.height, info.format
        build = self._objects.annotation
        objects = tuple(build(r, name, width, height) for r in records)
        return Item(
            name=name,
            subset=f.subset,
            width=width,
            height=height,
            image=image,
            image_format=fmt,
            source_id=str(index.image_id(pos)),
            objects=objects,
            image_member=member if image is not None and member is not None else "",
        )


def open_reader(source: Source, options: ReadOptions, notes: Notes) -> CocoReader:
    return CocoReader(source, options, notes)

"""Streaming reader of CVAT for images 1.1 and CVAT for video 1.1 archives.

Layout (CVAT's export, and Datumaro's ``cvat`` format): ``annotations.xml`` (or ``<subset>.xml``
files with root ``<annotations>``) and ``images/`` holding the images, in ``images/<subset>/``
for a project export. The XML is parsed incrementally with :mod:`tfdrop.formats.common.xmlsafe` (no
DTDs, no entities), and each top-level ``<image>``/``<track>`` is dropped from the tree once
used, so memory stays flat however large the file.

CVAT for video 1.1 tracks are expanded to per-frame items by :mod:`.video` (spilled to disk,
yielded in frame order at the end of the file); a frame's size is the task's ``original_size``.
Work units (:meth:`CvatReader.units`): runs of ``<image>`` elements, see :mod:`.split`.
"""

from __future__ import annotations

import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Annotation, Item, LabelMap
from tfdrop.errors import FormatError, MemberNotFoundError, TfdropError
from tfdrop.formats.base import Notes, ReadOptions
from tfdrop.formats.common import xmlsafe
from tfdrop.formats.common.imageinfo import format_from_name, is_image_name, probe_member
from tfdrop.formats.common.masks import check_mask_size
from tfdrop.formats.cvat.held import Held
from tfdrop.formats.cvat.meta import LabelSpec, Meta, parse_meta
from tfdrop.formats.cvat.shapes import LINE_ATTR, SHAPES, Where, parse_shape
from tfdrop.formats.cvat.skeleton import skeletons_of
from tfdrop.formats.cvat.split import CvatUnit, plan, unit_events
from tfdrop.formats.cvat.video import (
    Frames,
    attach_points,
    frame_images,
    nested_rows,
    parse_id,
    shape_element,
    track_row,
)
from tfdrop.limits import Limits

if TYPE_CHECKING:
    from tfdrop.archive import Source

LONG_ATTRIBUTES: Final = frozenset({"points", "rle"})
"""XML attributes holding coordinate data, bounded by the token cap, not by max_text_bytes."""


def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _dir(name: str) -> str:
    return name[: len(name) - len(_base(name))]


def _under_images(name: str) -> bool:
    """In an ``images/`` folder at the top, or one level down (a zip with one top folder)."""
    folders = name.lower().split("/")[:-1]
    return "images" in folders[:2]


def candidate_files(names: Sequence[str]) -> list[str]:
    """The XML members that may be CVAT annotation files, shallowest first.

    ``annotations.xml`` wins where present (CVAT's name); otherwise every ``*.xml`` at the
    shallowest depth outside ``images/`` (Datumaro's ``<subset>.xml``).
    """
    xmls = [n for n in names if n.lower().endswith(".xml") and not _under_images(n)]
    primary = [n for n in xmls if _base(n).lower() == "annotations.xml"]
    pool = primary or xmls
    if not pool:
        return []
    depth = min(n.count("/") for n in pool)
    return sorted(n for n in pool if n.count("/") == depth)


def _events(source: Source, member: str, limits: Limits) -> Iterator[xmlsafe.XmlEvent]:
    with source.open(member) as f:
        yield from xmlsafe.iterparse(
            f, member=member, limits=limits, long_attributes=LONG_ATTRIBUTES
        )


def _root_tag(source: Source, member: str, limits: Limits) -> str:
    for event in _events(source, member, limits):
        return str(event.element.tag)
    return ""


def _read_meta(source: Source, member: str, limits: Limits) -> Meta:
    """Parse up to the end of ``<meta>`` (or the first image/track) and stop reading.

    The meta subtree is held whole, so it is counted as it comes: ``<label>`` elements
    against ``max_labels``, all its elements against ``max_values_per_feature``.
    """
    depth = labels = inner = 0
    for kind, el, line in _events(source, member, limits):
        if kind == "start":
            depth += 1
            if depth == 2 and el.tag in ("image", "track"):
                break
            if depth > 2:
                inner += 1
                labels += el.tag == "label"
                limits.check("max_labels", labels, member=member, line=line)
                limits.check("max_values_per_feature", inner, member=member, line=line)
            continue
        depth -= 1
        if depth == 1 and el.tag == "meta":
            return parse_meta(el, member=member)
    return Meta()


def _track_shape(
    track: ET.Element,
    el: ET.Element,
    member: str,
    rows: list[tuple[int, bytes | None]],
    frames: Frames,
) -> list[tuple[int, bytes | None]]:
    """Take one finished shape out of its ``<track>`` into ``rows``, handing full batches of
    rows to ``frames``; the rows still to hand over."""
    if el.tag == "track":  # a skeleton track's point track
        rows.extend(nested_rows(track, el, member))
    elif (row := track_row(track, el, member)) is not None:
        rows.append(row)
    track.remove(el)
    if len(rows) >= 1024:
        frames.add_many(rows)
        return []
    return rows


class CvatReader:
    """A CVAT for images/video 1.1 source: labels from ``<meta>``, items one at a time."""

    def __init__(self, source: Source, options: ReadOptions, notes: Notes) -> None:
        self.source = source
        self.options = options
        self.notes = notes
        names = source.names()
        limits = options.limits
        self.files = [
            n for n in candidate_files(names) if _root_tag(source, n, limits) == "annotations"
        ]
        if not self.files:
            raise FormatError(
                "no CVAT annotation file: expected annotations.xml (or <subset>.xml) with a "
                "root <annotations> element"
            )
        self.metas = {n: _read_meta(source, n, limits) for n in self.files}
        self._skeletons: dict[str, Skeleton] = {}
        for member, meta in self.metas.items():
            try:
                declared = skeletons_of(meta.labels)
            except FormatError as exc:
                raise exc.at(member=member) from None
            for name, sk in declared.items():
                self._skeletons.setdefault(name, sk)
        self._seen: set[str] = {spec.name for spec in self.label_specs()}
        self._images = [n for n in names if _under_images(n) and is_image_name(n)]
        self._warned_no_images = False
        self._units_dir: tempfile.TemporaryDirectory[str] | None = None

    def label_specs(self) -> tuple[LabelSpec, ...]:
        """The labels of every file's meta with their attributes (skeleton parts left out)."""
        seen: dict[str, LabelSpec] = {}
        for meta in self.metas.values():
            for spec in meta.labels:
                if not spec.parent:
                    seen.setdefault(spec.name, spec)
        return tuple(seen.values())

    def labels(self) -> Sequence[str]:
        return [spec.name for spec in self.label_specs()]

    def skeletons(self) -> dict[str, Skeleton]:
        """Skeleton label -> its keypoint names and edges, from the meta blocks."""
        return dict(self._skeletons)

    def keypoints_declared(self) -> bool:
        """Every file has a meta whose labels all have a type, none ``points`` or ``any``
        (a ``<points>`` shape's count is its own) and every skeleton names its points."""
        for meta in self.metas.values():
            tops = [spec for spec in meta.labels if not spec.parent]
            if not tops or any(spec.type in ("", "points", "any") for spec in tops):
                return False
        return all(sk.names for sk in self._skeletons.values())

    def label_map(self) -> LabelMap | None:
        return None

    def items(self) -> Iterator[Item]:
        for member in self.files:
            yield from self._items_of(member)

    # -- work units -------------------------------------------------------------------------

    def units(
        self, *, max_items: int, max_bytes: int, portable: bool = False
    ) -> list[CvatUnit] | None:
        """Runs of each file's ``<image>`` elements (:func:`.split.plan`); None when asked
        for ``portable`` units (these name the copies saved here)."""
        if portable:
            return None
        if self._units_dir is None:
            self._units_dir = tempfile.TemporaryDirectory(
                prefix=".tfdrop-cvat-units-", dir=self.options.workdir
            )
        return plan(
            self.source,
            {m: self._default_subset(m) for m in self.files},
            self._find_image,
            Path(self._units_dir.name),
            self.options.limits,
            max_items=max_items,
            max_bytes=max_bytes,
        )

    def unit_items(self, unit: object) -> Iterator[Item]:
        assert isinstance(unit, CvatUnit)
        member = self.files[unit.file]
        self._warned_no_images = not unit.first  # said once, at the source's first image
        events = unit_events(unit, member, self.options.limits, LONG_ATTRIBUTES)
        frames = Frames()
        try:
            yield from self._stream(member, self._default_subset(member), frames, events)
        finally:
            frames.db.close()

    def close(self) -> None:
        """Remove what :meth:`units` saved (also done when the reader is collected)."""
        if self._units_dir is not None:
            self._units_dir.cleanup()
            self._units_dir = None

    # -- one file ---------------------------------------------------------------------------

    def _default_subset(self, member: str) -> str:
        meta = self.metas[member]
        if meta.subset:
            return meta.subset
        stem = _base(member).rsplit(".", 1)[0]
        return "default" if stem.lower() == "annotations" else stem

    def _items_of(self, member: str) -> Iterator[Item]:
        subset = self._default_subset(member)
        frames = Frames()  # SQLite creates its temp file only once the cache spills
        try:
            yield from self._stream(member, subset, frames)
            if frames.seq:
                yield from self._video_items(member, subset, frames)
        finally:
            frames.db.close()

    def _stream(
        self,
        member: str,
        subset: str,
        frames: Frames,
        events: Iterator[xmlsafe.XmlEvent] | None = None,
    ) -> Iterator[Item]:
        """Items of ``<image>`` elements as they come; ``<track>`` shapes go to ``frames``
        one by one as they end (a track may list thousands of frames). ``events``: a work
        unit's fragment (else the whole file's)."""
        depth = 0
        seen_images = False
        track: ET.Element | None = None
        rows: list[tuple[int, bytes | None]] = []
        held = Held(self.options.limits, member)
        root: ET.Element | None = None
        if events is None:
            events = _events(self.source, member, self.options.limits)
        for kind, el, line in events:
            if kind == "start":
                depth += 1
                root = el if root is None else root
                held.start(depth, el, line)
                if depth == 2 and el.tag == "track":
                    track = el
                elif depth == 3:  # a shape: errors about it name its own line
                    el.set(LINE_ATTR, str(line))
                continue
            depth -= 1
            if depth == 2 and track is not None:  # one shape of a track is complete
                rows = _track_shape(track, el, member, rows, frames)
                continue
            if depth != 1 or root is None:
                continue
            if el.tag == "image":
                seen_images = True
                yield self._image(el, member, subset, line)
            elif el.tag == "track":
                frames.add_many(rows)
                rows, track = [], None
            elif el.tag == "tag":
                self.notes.skip("tag", "a <tag> outside an <image>", member=member)
            if seen_images and frames.seq:
                raise FormatError(
                    "the file mixes <image> (CVAT for images) and <track> (CVAT for video)",
                    member=member,
                    line=line,
                )
            root.clear()  # drop what was used: memory stays flat

    # -- CVAT for images --------------------------------------------------------------------

    def _image(self, el: ET.Element, member: str, subset: str, line: int) -> Item:
        name = el.get("name")
        if not name:
            raise FormatError("<image> has no name attribute", member=member, line=line)
        subset = el.get("subset") or subset
        image_member = self._find_image(member, name, subset)
        if image_member is not None and not is_image_name(name) and is_image_name(image_member):
            # a video task exported as "CVAT for images": name="frame_000010", file
            # images/frame_000010.PNG; the item takes the file's extension
            name += image_member[image_member.rfind(".") :]
        limits = self.options.limits
        where = Where(0, 0, member, name, self.options.masks, line, limits)
        width = _int_attr(el, "width", where)
        height = _int_attr(el, "height", where)
        if width <= 0 or height <= 0:
            width, height = self._probe(image_member, member, name)
        where = Where(
            width, height, member, name, self.options.masks, line, limits, self._skeletons
        )
        try:
            frame = parse_id(el.get("id"), "<image> id", member=member, line=line)
        except FormatError as exc:
            raise exc.at(item=name) from None
        objects: list[Annotation] = []
        tags: list[str] = []
        kp_values = 0
        for child in el:
            if child.tag in SHAPES:
                ann = parse_shape(child, where, self.notes, index=len(objects))
                if ann is not None:
                    self._see(ann.label, where)
                    objects.append(ann)
                    kp_values = _keypoint_budget(kp_values, ann, where)
            elif child.tag == "tag":
                self._tag(child, where, tags)
            else:
                self.notes.skip(
                    child.tag, f"unknown element <{child.tag}>", member=member, item=name
                )
        return self._item(
            name,
            subset,
            width,
            height,
            objects,
            tags,
            image_member,
            member,
            frame,
        )

    def _see(self, label: str, where: Where) -> None:
        """Count a label the first time it is met (``max_labels``: labels of the archive)."""
        if label not in self._seen:
            self._seen.add(label)
            self.options.limits.check(
                "max_labels", len(self._seen), member=where.member, item=where.item
            )

    def _tag(self, el: ET.Element, where: Where, tags: list[str]) -> None:
        label = el.get("label")
        if not label:
            self.notes.skip("unlabeled", "<tag> has no label", member=where.member, item=where.item)
            return
        self._see(label, where)
        tags.append(label)
        for a in el.findall("attribute"):
            self.notes.lose(f"tag_attribute:{a.get('name') or ''}")

    def _find_image(self, member: str, name: str, subset: str) -> str | None:
        base = _dir(member)
        # CVAT omits the extension of video frames: try the usual ones (find ignores case)
        exts = ("",) if is_image_name(name) else ("", ".png", ".jpg", ".jpeg")
        for candidate in (f"{base}images/{subset}/{name}", f"{base}images/{name}", base + name):
            for ext in exts:
                found = self.source.find(candidate + ext)
                if found is not None:
                    return found
        return None

    # -- CVAT for video ---------------------------------------------------------------------

    def _video_items(self, member: str, subset: str, frames: Frames) -> Iterator[Item]:
        prefix = (_dir(member) + "images/").lower()
        images = frame_images([n for n in self._images if n.lower().startswith(prefix)])
        size = self.metas[member].frame_size
        # frames without any track shape are items too
        frames.add_many([(frame, None) for frame in sorted(images.keys() - frames.known())])
        limits = self.options.limits
        for frame, shapes in frames.frames(limits.max_objects_per_item):
            image_member = images.get(frame)
            name = _base(image_member) if image_member else f"frame_{frame:06d}.png"
            width, height = size or self._probe(image_member, member, name)
            where = Where(
                width, height, member, name, self.options.masks, None, limits, self._skeletons
            )
            objects: list[Annotation] = []
            kp_values = 0
            elements, lost = attach_points([shape_element(data) for data in shapes])
            if lost:
                self.notes.lose("keypoint_without_skeleton", lost)
            for el in elements:
                ann = parse_shape(
                    el,
                    where,
                    self.notes,
                    # checked by track_row when the row was made
                    track_id=parse_id(el.get("track_id"), "track id", member=member, line=None),
                    index=len(objects),
                )
                if ann is not None:
                    self._see(ann.label, where)
                    objects.append(ann)
                    kp_values = _keypoint_budget(kp_values, ann, where)
            yield self._item(
                name, subset, width, height, objects, [], image_member, member, frame, video=True
            )

    # -- shared -----------------------------------------------------------------------------

    def _probe(self, image_member: str | None, member: str, name: str) -> tuple[int, int]:
        if image_member is None:
            raise FormatError(
                "the image size is not in the annotations and the image is not in the archive",
                member=member,
                item=name,
            )
        info = probe_member(self.source, image_member)
        return info.width, info.height

    def _item(
        self,
        name: str,
        subset: str,
        width: int,
        height: int,
        objects: list[Annotation],
        tags: list[str],
        image_member: str | None,
        member: str,
        frame: int | None,
        *,
        video: bool = False,
    ) -> Item:
        if self.options.masks and objects:  # each object gets a full-image mask: refuse it here
            try:
                check_mask_size(width, height, self.options.limits.max_mask_pixels)
            except TfdropError as exc:
                raise exc.at(member=member, item=name) from None
        image: bytes | None = None
        if self.options.images:
            if image_member is not None:
                cap = self.options.limits.max_image_bytes
                self.options.limits.check(
                    "max_image_bytes", self.source.size(image_member), member=image_member
                )
                image = self.source.read_bytes(image_member, max_size=cap)
            elif self._images and video:
                # a video frame CVAT lists in a track but whose image the export lacks (Datumaro's
                # own test asset does this): the frame is kept without bytes, and said so
                self.notes.warn(
                    "missing_frame_image",
                    f"video frame {name!r} has no image in images/",
                    member=member,
                    item=name,
                )
            elif self._images:
                raise MemberNotFoundError(
                    f"image {name!r} named by the annotations is not in the archive "
                    f"(looked in images/{subset}/ and images/)",
                    member=member,
                    item=name,
                )
            elif not self._warned_no_images:
                self._warned_no_images = True
                self.notes.warn(
                    "no_images",
                    "the archive holds annotations only (no images/ folder): records carry "
                    "no image bytes",
                    member=member,
                )
        return Item(
            name=name,
            subset=subset,
            width=width,
            height=height,
            image=image,
            image_format=format_from_name(image_member or name),
            source_id=name,
            objects=tuple(objects),
            tags=tuple(tags),
            frame=frame,
            image_member=image_member if image is not None and image_member is not None else "",
        )


_MAX_SIZE = 2**31 - 1  # pixels; anything larger is not an image size


def _keypoint_budget(so_far: int, ann: Annotation, where: Where) -> int:
    """The keypoints an image's objects hold so far: over ``max_values_per_feature`` (the
    record's keypoint lists) is refused while reading, before more are built."""
    total = so_far + len(ann.keypoints)
    if ann.keypoints:
        where.limits.check(
            "max_values_per_feature", total, member=where.member, item=where.item,
            key="image/object/keypoint/x",
        )  # fmt: skip
    return total


def _int_attr(el: ET.Element, key: str, where: Where) -> int:
    raw = el.get(key)
    if raw is None:
        return 0
    try:
        value = int(float(raw))
    except (ValueError, OverflowError):  # "inf" overflows (found by fuzzing), "nan" is a ValueError
        raise where.error(f"<{el.tag}> {key}={raw[:40]!r} is not a number") from None
    if not 0 <= value <= _MAX_SIZE:
        # found by fuzzing: 1e23 passed here and failed later as a bare ValueError in the
        # record encoder (int64 range)
        raise where.error(f"<{el.tag}> {key}={raw[:40]!r} is not a pixel size")
    return value


def open_reader(source: Source, options: ReadOptions, notes: Notes) -> CvatReader:
    return CvatReader(source, options, notes)


__all__ = ["CvatReader", "candidate_files", "open_reader"]

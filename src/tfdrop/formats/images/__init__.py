"""A zip of plain camera images, no annotations (SPEC.md "Conversions").

One item per image member at any folder depth, in archive order, subset ``default``, no
objects; size and format from the image header (Pillow reads the header only; the bytes are
embedded unchanged). Members that are not images are listed as warnings. Read only; the
detection score is low so that any annotation format in the same zip wins.

Detection never falls back to this format when the archive also holds files that look like
annotations (:func:`annotation_members`: JSON, XML, TXT, YAML, CSV, label maps) that no reader
claimed: publishing those images with no objects would drop every annotation silently (a CVAT
"COCO Keypoints 1.0" export was published with 0 objects). Reading as ``images`` is then only
on request (``--from images``), which does not detect.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final

from tfdrop.archive import Source
from tfdrop.archive.limits import shown
from tfdrop.codec.model import Item, LabelMap
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats.base import FormatSpec, Notes, ReadOptions, plan_ranges
from tfdrop.formats.common.imageinfo import is_image_name, probe_member

SCORE: Final = 10
ANNOTATION_SUFFIXES: Final = (".json", ".xml", ".txt", ".yaml", ".yml", ".csv", ".pbtxt")
_NOT_ANNOTATIONS: Final = ("readme", "license", "licence", "changelog")
"""Base-name prefixes of text files that datasets ship beside images and are not annotations
(Roboflow's ``README.roboflow.txt``, a ``LICENSE.txt``)."""


def is_camera_image(name: str) -> bool:
    """An image member, not macOS zip litter (``__MACOSX/``, ``._x.jpg`` resource forks)."""
    base = name.rsplit("/", 1)[-1]
    if name.startswith("__MACOSX/") or base.startswith("._"):
        return False
    return is_image_name(name)


def annotation_members(names: Sequence[str]) -> list[str]:
    """Members that look like annotation files (by suffix), macOS litter and readmes left out."""
    out = []
    for name in names:
        base = name.rsplit("/", 1)[-1].lower()
        if name.startswith("__MACOSX/") or base.startswith(("._", *_NOT_ANNOTATIONS)):
            continue
        if base.endswith(ANNOTATION_SUFFIXES):
            out.append(name)
    return out


def detect(names: Sequence[str]) -> int:
    """A low score when any member looks like an image."""
    return SCORE if any(is_camera_image(n) for n in names) else 0


class ImagesReader:
    """Every image member as an item without objects."""

    def __init__(self, source: Source, options: ReadOptions, notes: Notes) -> None:
        self.source = source
        self.options = options
        self.notes = notes
        names = source.names()
        self.images = [n for n in names if is_camera_image(n)]
        if not self.images:
            listed = ", ".join(shown(n) for n in names[:5]) or "nothing"
            raise FormatError(f"no image files found (members: {listed})")
        for name in names:
            if not is_camera_image(name):
                notes.warn("not_an_image", "member is not an image; ignored", member=name)

    def labels(self) -> Sequence[str]:
        return ()

    def label_map(self) -> LabelMap | None:
        return None

    def total(self) -> int:
        return len(self.images)

    def items(self) -> Iterator[Item]:
        yield from self.unit_items((0, len(self.images)))

    def units(
        self, *, max_items: int, max_bytes: int, portable: bool = False
    ) -> list[tuple[int, int]]:
        """Runs ``(start, stop)`` of the image members, bounded by count and declared bytes
        (they name only the source: portable)."""
        costs = (self.source.size(name) for name in self.images)
        return plan_ranges(costs, max_items=max_items, max_bytes=max_bytes)

    def unit_items(self, unit: object) -> Iterator[Item]:
        assert isinstance(unit, tuple)
        start, stop = unit
        for name in self.images[start:stop]:
            try:
                yield self._item(name)
            except TfdropError as exc:
                raise exc.at(member=name, item=name) from None

    def _item(self, name: str) -> Item:
        data = None
        if self.options.images:
            limits = self.options.limits
            limits.check("max_image_bytes", self.source.size(name), member=name)
            data = self.source.read_bytes(name, max_size=limits.max_image_bytes)
        info = probe_member(self.source, name, data)
        return Item(
            name=name,
            width=info.width,
            height=info.height,
            image=data,
            image_format=info.format,
            source_id=name,
            image_member=name if data is not None else "",
        )


def open_reader(source: Source, options: ReadOptions, notes: Notes) -> ImagesReader:
    return ImagesReader(source, options, notes)


SPEC = FormatSpec(
    name="images",
    description="a zip of plain images (camera capture): one item per image, no objects",
    detect=detect,
    open_reader=open_reader,
    open_writer=None,
)

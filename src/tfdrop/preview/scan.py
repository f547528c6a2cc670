"""One streamed pass over an archive for the preview: every item in order, with the problems
validate and the reader find on it.

The archive is opened and read as a conversion reads it (:func:`tfdrop.inputs.open_input`,
:func:`~tfdrop.formats.detect_format`, the format's reader), with two differences a preview
needs. A TFRecord's records are checked with validate's own check
(:func:`~tfdrop.codec.schema.check_parsed`) instead of refused at the first bad one, so a box
outside the image is a problem marked on its item, an unparseable record an entry without an
item, and a broken frame ends that file only (as ``tfdrop validate`` does). Another format's
reader warnings that name an item become that item's problems, with the checks of its image
header validate makes (:func:`~tfdrop.codec.schema.image_problems`) and the box checks of the
schema. A reader that fails part way ends the pass; what failed is kept in :attr:`Scan.stops` (one
that cannot start raises).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from tfdrop.archive import Source
from tfdrop.codec.example import parse_example, to_item
from tfdrop.codec.model import Annotation, Item, LabelMap
from tfdrop.codec.schema import check_parsed, image_problems
from tfdrop.errors import DataError
from tfdrop.formats import FORMATS, Notes, Reader, ReadOptions
from tfdrop.formats.base import FormatName
from tfdrop.formats.tfrecord import TfrecordReader, subset_of
from tfdrop.stream import iter_records, stream_caps

MAX_ARCHIVE_WARNINGS = 50
"""Reader warnings that name no shown item, kept word for word (the rest only counted)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One item of the archive, or a record that is not one (``item`` None: ``problems`` say
    why, ``where`` names it)."""

    index: int
    item: Item | None
    where: str
    problems: tuple[str, ...]


def _box_problems(i: int, obj: Annotation) -> list[str]:
    b = obj.box
    out = [
        f"object {i} ({obj.label}): {name} {v!r} is not a normalised coordinate in [0, 1]"
        for name, v in (("xmin", b.xmin), ("ymin", b.ymin), ("xmax", b.xmax), ("ymax", b.ymax))
        if not 0.0 <= v <= 1.0
    ]
    for lo, hi, a, z in (("xmin", "xmax", b.xmin, b.xmax), ("ymin", "ymax", b.ymin, b.ymax)):
        if a > z:
            out.append(f"object {i} ({obj.label}): {lo} {a!r} > {hi} {z!r}")
    return out


def item_problems(item: Item) -> list[str]:
    """What validate would say of this item once it is a record: its boxes, its image header
    against the declared size and format."""
    out = [p for i, obj in enumerate(item.objects) for p in _box_problems(i, obj)]
    for p in image_problems(item.image_format, item.image, item.height, item.width):
        out.append(f"{p.key}: {p.message}")
    return out


def _where(w: dict[str, Any]) -> str:
    return ", ".join(f"{k} {w[k]}" for k in ("member", "item", "line") if k in w)


@dataclass(slots=True)
class Scan:
    """One pass over an opened source in format ``fmt`` (see the module docstring)."""

    source: Source
    fmt: FormatName
    read: ReadOptions
    notes: Notes = field(default_factory=Notes)
    stops: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    label_map: LabelMap | None = None

    def entries(self) -> Generator[Entry, None, None]:
        """Every entry in the archive's order (a reader's first error ends it: see stops).

        Raises:
            DataError: the reader cannot even start (``--from voc`` on an archive that is not
                VOC): there is nothing to show, so no page either.
        """
        spec = FORMATS[self.fmt]
        if spec.open_reader is None:
            raise ValueError(f"cannot read format {self.fmt!r}")
        reader = spec.open_reader(self.source, self.read, self.notes)
        self.label_map = reader.label_map()
        if isinstance(reader, TfrecordReader):
            yield from self._records(reader)
        else:
            yield from self._items(reader)

    def _items(self, reader: Reader) -> Iterator[Entry]:
        index = 0
        try:
            for item in reader.items():
                problems = self._noted(item) + item_problems(item)
                yield Entry(index, item, item.name, tuple(problems))
                index += 1
        except DataError as exc:
            self.stops.append(str(exc))

    def _noted(self, item: Item) -> list[str]:
        """The reader's warnings since the last item: those naming this item are its problems,
        the others the archive's (kept up to :data:`MAX_ARCHIVE_WARNINGS`)."""
        mine = []
        names = {item.name, item.stem, item.source_id}
        for w in self.notes.warnings:
            text = f"{w.get('code', 'warning')}: {w.get('message', '')}"
            if w.get("item") in names:
                mine.append(text)
            elif len(self.warnings) < MAX_ARCHIVE_WARNINGS:
                where = _where(w)
                self.warnings.append(f"{where}: {text}" if where else text)
        self.notes.warnings.clear()  # the counts by code stay in notes.warning_counts
        return mine

    def _records(self, reader: TfrecordReader) -> Iterator[Entry]:
        caps = stream_caps(self.read.limits)
        index = 0
        for name in reader.files:
            subset = subset_of(name)
            number = 0  # the record being read
            try:
                with self.source.open(name) as f:
                    for record in iter_records(f, **caps):
                        yield self._record(index, record, subset, name, number)
                        index += 1
                        number += 1
            except DataError as exc:
                # no way to resynchronise on a TFRecord: the rest of this file is lost
                self.stops.append(f"{name}: stops at record {number}: {exc.message}")

    def _record(self, index: int, record: bytes, subset: str, member: str, number: int) -> Entry:
        where = f"{member}, record {number}"
        limits = self.read.limits
        try:
            parsed = parse_example(record, max_values_per_feature=limits.max_values_per_feature)
            limits.check("max_objects_per_item", parsed.num_objects)
            found = check_parsed(
                parsed, self.label_map, verify_sha256=self.read.images, need_both=False
            )
            item = to_item(parsed, subset=subset, label_map=self.label_map)
        except DataError as exc:
            return Entry(index, None, where, (f"the record cannot be read: {exc}",))
        if not self.read.images:
            item = replace(item, image=None)
        problems = tuple(
            (f"object {p.obj}, " if p.obj is not None else "") + f"{p.key}: {p.message}"
            for p in found
        )
        return Entry(index, item, item.name or where, problems)

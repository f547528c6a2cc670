"""``ReadDataset``: sources -> work units -> items, read by as many workers as the runner has.

A first step opens each source once (on a worker) and plans its work units from the source's
own index (:class:`~tfdrop.formats.base.Splittable` readers: one reader unit per item, batched
:data:`~tfdrop.units.UNIT_ITEMS` to a work unit); a reader that cannot split yields one unit,
the whole source. The units are reshuffled across workers, and each worker opens the sources it
needs once and turns units into items. Items stream one at a time into the fused steps after
this one (encoding, writing), so a worker holds one item, not a unit.

``ReadDataset.label_map`` (when ``scan_labels``) is a singleton PCollection of the label map
``tfdrop convert`` would build: the sources' own maps and label lists, then every other label
in order of first appearance, found by a scan of the annotations (images not loaded) and put
in source order, whatever order the workers finish in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from tfdrop.archive import Source
from tfdrop.beam.elements import WHOLE, BadItem, ItemAt, Noted, SourceInfo, SourceRef, WorkUnit
from tfdrop.beam.failure import carried, carrying
from tfdrop.beam.labelscan import Resolved, Scanner, UnitScan, resolve_labels
from tfdrop.beam.sources import Stage, expand_sources, open_ref
from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Item
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats import FORMATS, Notes, Reader, ReadOptions, WriteOptions, detect_format
from tfdrop.formats.base import FormatName, HasSkeletons, SourceFormat, Splittable
from tfdrop.labels import warn_renumbered
from tfdrop.units import UNIT_ITEMS

NAMESPACE = "tfdrop"
"""The namespace of every Beam metric tfdrop reports."""
INFO = "info"


@dataclass(slots=True)
class _Open:
    source: Source
    reader: Reader
    notes: Notes


class _Readers:
    """The sources a worker has opened, each once (remote ones copied once)."""

    def __init__(self, read: ReadOptions) -> None:
        self.read = read
        self.stage = Stage()
        self._open: dict[int, _Open] = {}

    def get(self, ref: SourceRef, fmt: SourceFormat) -> tuple[_Open, FormatName]:
        opened = self._open.get(ref.index)
        source = opened.source if opened else open_ref(ref, self.stage, self.read.limits)
        try:
            name = fmt if fmt != "auto" else detect_format(source.names(), archive=ref.path)
            if opened is None:
                spec = FORMATS[name]
                if spec.open_reader is None:
                    raise FormatError(f"tfdrop cannot read {name}", archive=ref.path)
                notes = Notes()
                opened = _Open(source, spec.open_reader(source, self.read, notes), notes)
                self._open[ref.index] = opened
        except TfdropError:
            source.close()
            raise
        return opened, name

    def close(self) -> None:
        for opened in self._open.values():
            opened.source.close()
        self._open.clear()
        self.stage.close()


def _skeletons(reader: Reader) -> tuple[tuple[str, Skeleton], ...]:
    return tuple(reader.skeletons().items()) if isinstance(reader, HasSkeletons) else ()


def _plan(reader: Reader) -> list[tuple[object, ...]]:
    if isinstance(reader, Splittable):
        parts = reader.units(max_items=1, max_bytes=1, portable=True)
        if parts is not None:
            return [tuple(parts[i : i + UNIT_ITEMS]) for i in range(0, len(parts), UNIT_ITEMS)]
    return [(WHOLE,)]


class _PlanUnits(beam.DoFn):  # type: ignore[misc]
    """A source -> its work units, and (tagged ``info``) what opening it said."""

    def __init__(self, fmt: SourceFormat, read: ReadOptions) -> None:
        self.fmt = fmt
        self.read = read

    def process(self, ref: SourceRef) -> Iterator[Any]:
        with carried():
            yield from self._plan(ref)

    def _plan(self, ref: SourceRef) -> Iterator[Any]:
        readers = _Readers(self.read)
        try:
            opened, fmt = readers.get(ref, self.fmt)
            runs = _plan(opened.reader)
            for dup in ref.duplicates:
                opened.notes.warn(
                    "duplicate_source",
                    f"{dup} names an input already given; it is read once",
                    archive=dup,
                )
            yield beam.pvalue.TaggedOutput(
                INFO,
                SourceInfo(
                    ref.index,
                    ref.path,
                    fmt,
                    tuple(opened.reader.labels()),
                    opened.reader.label_map(),
                    opened.notes.copy(),
                    len(runs),
                    _skeletons(opened.reader),
                ),
            )
            for i, parts in enumerate(runs):
                yield WorkUnit(ref, fmt, i, parts)
        except TfdropError as exc:
            raise exc.at(archive=ref.path) from None
        finally:
            readers.close()


def _part_items(reader: Reader, part: object) -> Iterator[Item]:
    """The items of one part of a work unit (``WHOLE``: the reader's every item)."""
    return reader.items() if part is WHOLE else reader.unit_items(part)  # type: ignore[attr-defined]


class _UnitDoFn(beam.DoFn):  # type: ignore[misc]
    """A step that reads work units: one cache of open sources per worker (``setup``)."""

    def __init__(self, read: ReadOptions) -> None:
        self.read = read
        self._readers: _Readers | None = None

    def setup(self) -> None:
        self._readers = _Readers(self.read)

    def teardown(self) -> None:
        if self._readers is not None:
            self._readers.close()


class _ReadUnits(_UnitDoFn):
    """A work unit -> its items (``ItemAt``), bad items (``BadItem``) and notes (``Noted``)."""

    def __init__(self, read: ReadOptions) -> None:
        super().__init__(read)
        self.bad = Metrics.counter(NAMESPACE, "bad_items")

    def process(self, unit: WorkUnit) -> Iterator[ItemAt | BadItem | Noted]:
        with carried():
            yield from self._read(unit)

    def _read(self, unit: WorkUnit) -> Iterator[ItemAt | BadItem | Noted]:
        assert self._readers is not None
        try:
            opened, _ = self._readers.get(unit.source, unit.fmt)
        except TfdropError as exc:
            raise exc.at(archive=unit.source.path) from None
        opened.notes.clear()
        src, n = unit.source.index, 0
        for part in unit.parts:
            items = _part_items(opened.reader, part)
            read = 0
            try:
                for item in items:
                    yield ItemAt((src, unit.index, n), item, unit.source.path)
                    n += 1
                    read += 1
            except TfdropError as exc:
                self.bad.inc()
                error = exc.at(archive=unit.source.path).to_dict()
                yield BadItem((src, unit.index, n), error, cut_short=part is WHOLE or read > 0)
                n += 1
        yield Noted((src, unit.index, -1), opened.notes.copy())
        opened.notes.clear()


class _ScanLabels(_UnitDoFn):
    """A work unit -> ``(unit key, UnitScan)``: the labels of the items that will be written,
    in order of first appearance (errors are the main read's to report)."""

    def __init__(self, read: ReadOptions, write: WriteOptions, box_masks: bool) -> None:
        super().__init__(read)
        self.write = write
        self.box_masks = box_masks

    def process(self, unit: WorkUnit) -> Iterator[tuple[tuple[int, int], UnitScan]]:
        assert self._readers is not None
        with carried():
            opened, _ = self._readers.get(unit.source, unit.fmt)
            scanner = Scanner(self.read, self.write, self.box_masks)
            src, n = unit.source.index, 0
            for part in unit.parts:
                items = _part_items(opened.reader, part)
                try:
                    for item in items:
                        scanner.see(item, (src, unit.index, n))
                        n += 1
                except TfdropError:
                    n += 1
            opened.notes.clear()
            yield (src, unit.index), scanner.result()


@carrying
def _resolve(
    found: list[tuple[tuple[int, int], UnitScan]],
    infos: list[SourceInfo],
    read: ReadOptions,
    plain: bool,
) -> Resolved:
    return resolve_labels(infos, found, read, plain_text=plain)


def _renumbered_notes(resolved: Resolved, after: int) -> Iterator[Noted]:
    """The ``label_ids_renumbered`` warning, after every source's notes (as convert warns)."""
    if resolved.renumbered:
        notes = Notes()
        warn_renumbered(notes, resolved.renumbered)
        yield Noted((after, 0, 0), notes)


class ReadDataset(beam.PTransform):  # type: ignore[misc]
    """``pipeline | ReadDataset(patterns)`` -> a PCollection of :class:`ItemAt` (and the
    ``SourceInfo``, ``BadItem`` and ``Noted`` elements that ride along to the report).

    Args:
        patterns: zips, folders, globs of zips, TFRecord files or globs of shards (a string or
            a list of them), local or on any file system Beam has.
        format: the source format, or ``auto`` (detected per source from its member names).
        read: how to read (masks, images, the job budget).
        scan_labels: also compute :attr:`label_map` (skip it when a map is pinned).
        plain_text: the target keeps labels as text lines (VOC, YOLO, CVAT): check them.
        write: how the examples will be encoded (the scan checks each item as the encode
            step will, so a dead-lettered item's labels take no id).
    """

    def __init__(
        self,
        patterns: str | Sequence[str],
        format: SourceFormat = "auto",  # the name for it
        *,
        read: ReadOptions | None = None,
        scan_labels: bool = True,
        plain_text: bool = False,
        write: WriteOptions | None = None,
    ) -> None:
        super().__init__()
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        self.format = format
        self.read = read or ReadOptions()
        self.scan_labels = scan_labels
        self.plain_text = plain_text
        self.write = write or WriteOptions(masks=self.read.masks, images=self.read.images)
        self.box_masks = self.write.masks
        self.sources: list[SourceRef] = []
        self.label_map: beam.PCollection | None = None

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        self.sources = expand_sources(self.patterns)
        planned = (
            pbegin
            | "Sources" >> beam.Create(self.sources)
            | "Plan" >> beam.ParDo(_PlanUnits(self.format, self.read)).with_outputs(INFO, main="u")
        )
        units = planned.u | "Spread" >> beam.Reshuffle()
        items = units | "Read" >> beam.ParDo(_ReadUnits(self.read))
        infos = planned[INFO]
        if not self.scan_labels:
            return (items, infos) | "WithInfos" >> beam.Flatten()
        scan = _ScanLabels(self.read, self.write, self.box_masks)
        resolved = (
            units
            | "Scan" >> beam.ParDo(scan)
            | "AllScans" >> beam.combiners.ToList()
            | "Resolve"
            >> beam.Map(_resolve, beam.pvalue.AsList(infos), read=self.read, plain=self.plain_text)
        )
        self.label_map = resolved | "LabelMap" >> beam.Map(lambda r: r.label_map)
        renumbered = resolved | "Renumbered" >> beam.FlatMap(
            _renumbered_notes, after=len(self.sources)
        )
        return (items, infos, renumbered) | "WithInfos" >> beam.Flatten()

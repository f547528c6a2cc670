"""What every format module provides, and the notes a conversion collects.

Each format (Datumaro's habit: one small module set per format over one shared item model) is a
:class:`FormatSpec` in the explicit table ``tfdrop.formats.FORMATS``: a detector over member
names, a streaming reader (source -> labels + iterator of items) and a streaming writer (items ->
zip members). Readers and writers never log; what they could not convert goes into
:class:`Notes`, which ends up in the conversion report (SPEC.md: never drop an annotation
without saying so).
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from tfdrop.codec.compression import Compression
from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Item, KeypointLayout, LabelMap
from tfdrop.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    from tfdrop.archive import Source, ZipSink

MAX_WARNINGS = 200
"""Warnings kept word for word in a report; the rest are only counted by code."""


FormatName = Literal["tfrecord", "voc", "cvat", "coco", "yolo", "images"]
"""A key of the format table (:data:`tfdrop.formats.FORMATS`); a new format adds its name here."""
SourceFormat = FormatName | Literal["auto"]
"""What to read: a format, or ``auto`` (detected from the member names)."""


@dataclass(slots=True)
class Notes:
    """Warnings, skipped annotations and lossy conversions, collected for the report."""

    warnings: list[dict[str, Any]] = field(default_factory=list)
    warning_counts: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    lossy: dict[str, int] = field(default_factory=dict)

    def warn(self, code: str, message: str, **where: Any) -> None:
        """Something a user should know that does not fail the archive."""
        self.warning_counts[code] += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(
                {"code": code, "message": message}
                | {k: v for k, v in where.items() if v is not None}
            )

    def skip(self, what: str, message: str, **where: Any) -> None:
        """An annotation that is not converted (counted by kind, e.g. ``"polyline"``)."""
        self.skipped[what] += 1
        self.warn(f"skipped_{what}", message, **where)

    def lose(self, what: str, n: int = 1) -> None:
        """Information the target format has no room for (e.g. ``"attribute:color"``)."""
        self.lossy[what] = self.lossy.get(what, 0) + n

    def merge(self, other: Notes) -> None:
        """Add what ``other`` noted after what this one has (a work unit's notes, in order)."""
        room = MAX_WARNINGS - len(self.warnings)
        if room > 0:
            self.warnings.extend(other.warnings[:room])
        self.warning_counts.update(other.warning_counts)
        self.skipped.update(other.skipped)
        for what, n in other.lossy.items():
            self.lose(what, n)

    def copy(self) -> Notes:
        """An independent copy (a worker hands one back per unit)."""
        return Notes(
            list(self.warnings),
            Counter(self.warning_counts),
            Counter(self.skipped),
            dict(self.lossy),
        )

    def clear(self) -> None:
        """Forget everything noted so far."""
        self.warnings.clear()
        self.warning_counts.clear()
        self.skipped.clear()
        self.lossy.clear()


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How to read. ``masks``: turn polygons and masks into PNG instance masks.
    ``images``: load image bytes (else only sizes, from the annotation or the image header).
    ``workdir`` holds temp files a reader may spill to (COCO groups annotations there).
    ``limits`` is the job's budget: every reader checks what it allocates against it.
    ``read_ahead``: a reader may fetch members on a second thread (off in work-unit workers
    that already keep every core busy: the thread then only costs CPU).
    """

    masks: bool = False
    images: bool = True
    workdir: Path | None = None
    limits: Limits = DEFAULT_LIMITS
    read_ahead: bool = True


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """How to write. ``workdir`` holds temp files a writer may spill to."""

    masks: bool = False
    shards: int = 1
    compression: Compression = "none"
    images: bool = True
    workdir: Path | None = None
    keypoints: KeypointLayout | None = None
    """The dataset's keypoint layout (from the label map, fixed before the first record)."""


class Reader(Protocol):
    """A format's streaming reader, opened on a source."""

    def labels(self) -> Sequence[str]:
        """The source's own label list in its order, if it has one up front (else empty)."""
        ...

    def label_map(self) -> LabelMap | None:
        """A label map the source carries with ids (a TFRecord archive's label_map.pbtxt)."""
        ...

    def items(self) -> Iterator[Item]:
        """Every item, one at a time; errors carry the member and item."""
        ...


@runtime_checkable
class HasSkeletons(Protocol):
    """A reader whose source declares labels' keypoints (COCO categories, CVAT skeletons)."""

    def skeletons(self) -> dict[str, Skeleton]:
        """Label -> its keypoint names (in order) and edges, as the source declares them."""
        ...


@runtime_checkable
class DeclaresKeypoints(Protocol):
    """A reader that can tell whether its source declares every label's keypoints up front
    (else a conversion to TFRecord scans the annotations first to fix the keypoint layout)."""

    def keypoints_declared(self) -> bool:
        """True when no object can carry keypoints its source did not declare."""
        ...


@runtime_checkable
class Splittable(Reader, Protocol):
    """A reader that can cut its source into work units (:mod:`tfdrop.units` runs them).

    The items of ``unit_items(u)`` for every ``u`` of ``units()``, in order, are exactly
    ``items()``. A unit is a small picklable value (member names, a range of an index); a
    worker process opens its own source and reader and reads units that the parent planned.
    """

    def units(
        self, *, max_items: int, max_bytes: int, portable: bool = False
    ) -> Sequence[object] | None:
        """The source's items as units of at most ``max_items`` items and about ``max_bytes``
        declared bytes (one item may exceed it alone), or None when this source cannot be
        split (then the conversion runs in one process). ``portable``: only units that name
        nothing but the source itself, valid on another host and after this reader is closed
        (Beam); a reader whose units point at files it saved for its workers (COCO, CVAT)
        then returns None."""
        ...

    def unit_items(self, unit: object) -> Iterator[Item]:
        """The items of one unit, in the source's order; errors carry the member and item."""
        ...


class UnitPlan(Protocol):
    """Work units that start coming while the reader still checks its source
    (:class:`Overlapping`): iterating gives them; nothing a unit gives may be used before
    :meth:`settle` is True."""

    notes: Notes
    """What checking the source noted (to put before what the units note)."""

    def __iter__(self) -> Iterator[object]: ...

    def __next__(self) -> object: ...

    def settle(self) -> bool:
        """Check the rest of the source (every unit is then planned); False when the source
        is bad or a unit given out so far was not exact: plan with ``units()`` instead."""
        ...


@runtime_checkable
class Overlapping(Splittable, Protocol):
    """A splittable reader that can give out its first units while it checks its source
    (COCO's pass 2 over the annotations: :mod:`tfdrop.formats.coco.plan`)."""

    def overlapped_units(
        self, *, max_items: int, max_bytes: int, early: int, early_bytes: int
    ) -> UnitPlan | None:
        """At most ``early`` units (of about ``early_bytes`` declared bytes each) before the
        source is checked, then units like ``units()``; None when this cannot help."""
        ...


@runtime_checkable
class Counted(Reader, Protocol):
    """A reader that knows from the source's index how many items it will yield (progress
    bars show a total and time left); readers that learn it only by reading do not offer it."""

    def total(self) -> int | None:
        """The items :meth:`items` will yield at most, or None when not known up front."""
        ...


def plan_ranges(costs: Iterable[int], *, max_items: int, max_bytes: int) -> list[tuple[int, int]]:
    """Cut a run of items (their declared bytes, in order) into ``(start, stop)`` ranges of at
    most ``max_items`` items and about ``max_bytes`` bytes (an item alone may exceed it)."""
    out: list[tuple[int, int]] = []
    start = size = 0
    i = -1
    for i, cost in enumerate(costs):
        if i > start and (i - start >= max_items or size + cost > max_bytes):
            out.append((start, i))
            start, size = i, 0
        size += cost
    if i >= start:
        out.append((start, i + 1))
    return out


class Writer(Protocol):
    """A format's streaming writer into a zip."""

    def write(self, item: Item) -> None:
        """Write one item; label ids are already assigned."""
        ...

    def close(self, label_map: LabelMap) -> None:
        """Finish the archive: the label list, index files, anything kept until the end."""
        ...

    def abort(self) -> None:
        """Give up after an error: close and remove the writer's temp files (never raises
        for them; the caller discards the archive)."""
        ...


OpenReader = Callable[["Source", ReadOptions, Notes], Reader]
OpenWriter = Callable[["ZipSink", WriteOptions, Notes], Writer]


def deferred_reader(module: str) -> OpenReader:
    """``module``'s ``open_reader``, imported on the first call. A format's row then costs
    only its detection: a conversion imports the one reader and writer it uses, not all six
    formats' (PIL drawing, YAML, ...), before its first item."""

    def open_reader(source: Source, options: ReadOptions, notes: Notes) -> Reader:
        opened: OpenReader = importlib.import_module(module).open_reader
        return opened(source, options, notes)

    return open_reader


def deferred_writer(module: str) -> OpenWriter:
    """``module``'s ``open_writer``, imported on the first call (as :func:`deferred_reader`)."""

    def open_writer(sink: ZipSink, options: WriteOptions, notes: Notes) -> Writer:
        opened: OpenWriter = importlib.import_module(module).open_writer
        return opened(sink, options, notes)

    return open_writer


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """One row of the format table.

    ``detect`` scores a source by its member names: 0 means "not this format", higher wins
    (100 for a format's own marker file, like CVAT's ``annotations.xml``).
    """

    name: FormatName
    description: str
    detect: Callable[[Sequence[str]], int]
    open_reader: OpenReader | None = None
    open_writer: OpenWriter | None = None

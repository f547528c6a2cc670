"""``tfdrop preview``: a self-contained HTML page (or annotated PNGs) of an archive's items,
drawn with Pillow, without TensorFlow.

Two streamed passes over the archive, each holding one item at a time. The first counts
every item (per subset, per label) without images or masks, so nothing is decoded; the page's
header is written from it. The second reads the first ``limit`` items that match the filters
with their images and masks, draws each (:mod:`tfdrop.preview.draw`) and writes its card, then
stops reading. The page is written to a temp name and renamed into place
(:func:`tfdrop.publish.atomic_write`): it appears only complete.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from tfdrop.archive import Source
from tfdrop.errors import TfdropError
from tfdrop.formats import FORMATS, ReadOptions, detect_format
from tfdrop.formats.base import FormatName, SourceFormat
from tfdrop.inputs import open_input
from tfdrop.limits import DEFAULT_LIMITS, Limits
from tfdrop.preview.draw import THUMB, Drawn, render
from tfdrop.preview.page import Counts, card, footer, header
from tfdrop.preview.scan import Entry, Scan
from tfdrop.publish import TEMP_MARK, atomic_write

__all__ = ["Counts", "PreviewOptions", "Summary", "preview_path_of", "write_pngs", "write_preview"]

DEFAULT_ITEMS: Final = 100
"""Items shown when no limit is given."""
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class PreviewOptions:
    """What to show: the first ``limit`` items of ``subset`` (all when None) that hold an
    object of one of ``labels`` (any when empty), read as ``source_format``."""

    limit: int = DEFAULT_ITEMS
    labels: frozenset[str] = frozenset()
    subset: str | None = None
    source_format: SourceFormat = "auto"
    limits: Limits = DEFAULT_LIMITS
    thumb: int = THUMB

    def selects(self, entry: Entry) -> bool:
        item = entry.item
        if item is None:  # an unreadable record: shown unless a filter asks for something
            return not self.labels and self.subset is None
        if self.subset is not None and item.subset != self.subset:
            return False
        return not self.labels or any(o.label in self.labels for o in item.objects)


@dataclass(frozen=True, slots=True)
class Summary:
    """What a preview found: the archive's counts, the items shown, those with problems."""

    format: FormatName
    counts: Counts
    shown: int
    with_problems: int
    problems: list[tuple[int, str, str]] = field(default_factory=list)
    drawn: int = 0  # PNGs written (``--png``)

    @property
    def stops(self) -> list[str]:
        return self.counts.stops

    def line(self, out: Path) -> str:
        """One line for a terminal."""
        c = self.counts
        bad = f", {self.with_problems} with problems" if self.with_problems else ""
        return (
            f"{self.format}: {c.items} items, {c.objects} objects; {self.shown} shown{bad} -> {out}"
        )


def preview_path_of(archive: Path) -> Path:
    """``x.zip`` -> ``x.preview.html`` beside it."""
    name = archive.name
    stem = name[: -len(".zip")] if name.lower().endswith(".zip") else archive.stem
    return archive.with_name(f"{stem}.preview.html")


def _format(source: Source, options: PreviewOptions, src: Path) -> FormatName:
    fmt = options.source_format
    if fmt == "auto":
        return detect_format(source.names(), archive=str(src))
    spec = FORMATS.get(fmt)
    if spec is None or spec.open_reader is None:
        raise ValueError(f"cannot read format {fmt!r}")
    return fmt


def _count(source: Source, fmt: FormatName, options: PreviewOptions) -> Counts:
    """The first pass. Raises LimitExceededError past ``max_labels`` or ``max_subsets`` (the
    counts grow with them, as a conversion's label list does)."""
    scan = Scan(source, fmt, ReadOptions(masks=False, images=False, limits=options.limits))
    counts = Counts()
    limits = options.limits
    for entry in scan.entries():
        if entry.item is None:
            counts.unreadable += 1
        else:
            counts.add(entry.item)
            limits.check("max_labels", len(counts.labels), item=entry.where)
            limits.check("max_subsets", len(counts.subsets), item=entry.where)
        if options.selects(entry):
            counts.matching += 1
    counts.stops = scan.stops
    counts.warnings = scan.warnings
    counts.warning_counts = dict(scan.notes.warning_counts)
    return counts


def _shown(
    source: Source, fmt: FormatName, options: PreviewOptions, wanted: int, stops: list[str]
) -> Iterator[Entry]:
    """The first ``wanted`` selected entries (``min(limit, matching)``: the count pass knows
    how many match), read with images and masks; reading stops right after the last of them.
    Where reading stopped early goes to ``stops``."""
    if wanted <= 0:
        return
    scan = Scan(source, fmt, ReadOptions(masks=True, images=True, limits=options.limits))
    shown = 0
    try:
        with contextlib.closing(scan.entries()) as entries:
            for entry in entries:
                if options.selects(entry):
                    shown += 1
                    yield entry
                    if shown >= wanted:
                        return
    finally:
        stops.extend(s for s in scan.stops if s not in stops)


def _note(counts: Counts, options: PreviewOptions, shown: int) -> str:
    filters = []
    if options.subset is not None:
        filters.append(f"subset {options.subset}")
    if options.labels:
        filters.append("labels " + ", ".join(sorted(options.labels)))
    of = f" of {counts.matching} matching {'; '.join(filters)}" if filters else ""
    return f"Showing the first {shown} items{of}."


def _drawn(entry: Entry, options: PreviewOptions, *, png: bool) -> tuple[Drawn | None, list[str]]:
    """An entry drawn (a thumbnail for the page, full size for ``png``) and all its problems."""
    drawn = None
    if entry.item is not None:
        drawn = render(
            entry.item,
            max_pixels=options.limits.max_mask_pixels,
            thumb=None if png else options.thumb,
            png=png,
        )
    return drawn, list(entry.problems) + list(drawn.problems if drawn else ())


def write_preview(
    src: Path, out: Path, options: PreviewOptions, *, title: str = "", mark: str = TEMP_MARK
) -> Summary:
    """Write the preview page of ``src`` (a zip, a folder or a TFRecord) to ``out``.

    Raises:
        DataError: the archive cannot be opened or its format not told (a reader that fails
            later ends the pass instead: the page says where, :attr:`Summary.stops`), or it
            holds more labels or subsets than the job's budget.
        OSError: ``out`` cannot be written.
    """
    src = Path(src)
    try:
        with open_input(src, options.limits) as source:
            fmt = _format(source, options, src)
            counts = _count(source, fmt, options)
            shown = min(options.limit, counts.matching)
            problems: list[tuple[int, str, str]] = []
            with atomic_write(out, mark=mark) as f:
                for piece in header(title or src.name, fmt, counts, _note(counts, options, shown)):
                    f.write(_utf8(piece))
                for entry in _shown(source, fmt, options, shown, []):
                    drawn, found = _drawn(entry, options, png=False)
                    if found:
                        problems.append((entry.index, entry.where, found[0]))
                    f.write(_utf8(card(entry, drawn, found)))
                f.write(_utf8(footer(problems)))
    except TfdropError as exc:
        raise exc.at(archive=str(src)) from None
    return Summary(fmt, counts, shown, len(problems), problems)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "backslashreplace")


def png_name(entry: Entry) -> str:
    """``<index>-<item stem>.png``: unique per entry and safe in any folder."""
    stem = entry.item.stem if entry.item is not None else "record"
    return f"{entry.index:06d}-{_UNSAFE.sub('_', stem)[:100]}.png"


def write_pngs(src: Path, folder: Path, options: PreviewOptions) -> Summary:
    """Write each shown item, drawn at full size, as ``folder/<index>-<stem>.png`` (a record
    that is not an item has no picture: it is a problem, counted in ``shown``, not in
    ``drawn``). The counts come from the same first pass as the page's.

    Raises:
        DataError, OSError: as :func:`write_preview`.
    """
    src = Path(src)
    problems: list[tuple[int, str, str]] = []
    drawn_count = 0
    try:
        with open_input(src, options.limits) as source:
            fmt = _format(source, options, src)
            counts = _count(source, fmt, options)
            shown = min(options.limit, counts.matching)
            for entry in _shown(source, fmt, options, shown, []):
                drawn, found = _drawn(entry, options, png=True)
                if found:
                    problems.append((entry.index, entry.where, found[0]))
                if drawn is None:
                    continue
                with atomic_write(folder / png_name(entry)) as f:
                    f.write(drawn.data)
                drawn_count += 1
    except TfdropError as exc:
        raise exc.at(archive=str(src)) from None
    return Summary(fmt, counts, shown, len(problems), problems, drawn=drawn_count)

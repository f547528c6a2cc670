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
from tfdrop.preview.draw import THUMB, render
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
    scan = Scan(source, fmt, ReadOptions(masks=False, images=False, limits=options.limits))
    counts = Counts()
    for entry in scan.entries():
        if entry.item is None:
            counts.unreadable += 1
        else:
            counts.add(entry.item)
        if options.selects(entry):
            counts.matching += 1
    counts.stops = scan.stops
    counts.warnings = scan.warnings
    counts.warning_counts = dict(scan.notes.warning_counts)
    return counts


def _shown(
    source: Source, fmt: FormatName, options: PreviewOptions, stops: list[str] | None = None
) -> Iterator[Entry]:
    """The first ``limit`` selected entries, read with images and masks; reading stops there.
    Where reading stopped early goes to ``stops``."""
    scan = Scan(source, fmt, ReadOptions(masks=True, images=True, limits=options.limits))
    shown = 0
    try:
        with contextlib.closing(scan.entries()) as entries:
            for entry in entries:
                if shown >= options.limit:
                    return
                if options.selects(entry):
                    shown += 1
                    yield entry
    finally:
        if stops is not None:
            stops.extend(scan.stops)


def _note(counts: Counts, options: PreviewOptions, shown: int) -> str:
    filters = []
    if options.subset is not None:
        filters.append(f"subset {options.subset}")
    if options.labels:
        filters.append("labels " + ", ".join(sorted(options.labels)))
    of = f" of {counts.matching} matching {'; '.join(filters)}" if filters else ""
    return f"Showing the first {shown} items{of}."


def write_preview(
    src: Path, out: Path, options: PreviewOptions, *, title: str = "", mark: str = TEMP_MARK
) -> Summary:
    """Write the preview page of ``src`` (a zip, a folder or a TFRecord) to ``out``.

    Raises:
        DataError: the archive cannot be opened or its format not told (a reader that fails
            later ends the pass instead: the page says where, :attr:`Summary.stops`).
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
                f.write(
                    _utf8(header(title or src.name, fmt, counts, _note(counts, options, shown)))
                )
                for entry in _shown(source, fmt, options):
                    drawn = None
                    if entry.item is not None:
                        drawn = render(
                            entry.item,
                            max_pixels=options.limits.max_mask_pixels,
                            thumb=options.thumb,
                        )
                    found = list(entry.problems) + list(drawn.problems if drawn else ())
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
    """Write each shown item, drawn at full size, as ``folder/<index>-<stem>.png``.

    Raises:
        DataError, OSError: as :func:`write_preview`.
    """
    src = Path(src)
    problems: list[tuple[int, str, str]] = []
    counts = Counts()
    shown = 0
    try:
        with open_input(src, options.limits) as source:
            fmt = _format(source, options, src)
            for entry in _shown(source, fmt, options, counts.stops):
                shown += 1
                if entry.item is None:
                    problems.append((entry.index, entry.where, entry.problems[0]))
                    continue
                drawn = render(
                    entry.item, max_pixels=options.limits.max_mask_pixels, thumb=None, png=True
                )
                found = list(entry.problems) + list(drawn.problems)
                if found:
                    problems.append((entry.index, entry.where, found[0]))
                with atomic_write(folder / png_name(entry)) as f:
                    f.write(drawn.data)
    except TfdropError as exc:
        raise exc.at(archive=str(src)) from None
    return Summary(fmt, counts, shown, len(problems), problems)

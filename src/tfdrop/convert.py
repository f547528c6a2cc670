"""The one conversion path: source archive -> items -> target archive -> validated report.

The CLI's ``tfdrop convert`` and every daemon job call :func:`convert`; there is no second
path. Items stream one at a time from the source reader through label-id assignment to the
target writer; the finished archive is read back through the target's own reader (for TFRecord:
the codec with both CRCs and the schema check) and its counts compared with what was written
before the archive is renamed into place (SPEC.md "validated").
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from tfdrop.archive import Source, ZipSink
from tfdrop.archive.limits import check_item_name
from tfdrop.archive.sink import DosTime, dos_time
from tfdrop.codec.compression import Compression
from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Item, LabelMap
from tfdrop.errors import TfdropError
from tfdrop.follow import Follower
from tfdrop.formats import (
    FORMATS,
    Notes,
    Reader,
    ReadOptions,
    WriteOptions,
    detect_format,
)
from tfdrop.formats.base import (
    Counted,
    DeclaresKeypoints,
    FormatName,
    HasSkeletons,
    Overlapping,
    SourceFormat,
    Splittable,
    Writer,
)
from tfdrop.formats.tfrecord import TfrecordWriter
from tfdrop.formats.tfrecord.spool import Span
from tfdrop.handoff import Tally, TrainingSummary, summarize
from tfdrop.inputs import open_input
from tfdrop.labels import LabelResolver, warn_renumbered
from tfdrop.leftovers import run_folder
from tfdrop.limits import DEFAULT_LIMITS, Limits
from tfdrop.publish import atomic_path, flushing
from tfdrop.readback import Followed, Written, validate_archive
from tfdrop.stream import is_tfrecord_name
from tfdrop.units import (
    UNIT_BYTES,
    UNIT_ITEMS,
    Encoded,
    JobSpec,
    early_bytes,
    parallel_items,
    prepare,
    settled_items,
    window,
)

Progress = Callable[[int, int | None], None]
"""A conversion's progress callback: ``(items done, items in all or None when unknown)``; the
total comes from the source's index (:class:`~tfdrop.formats.base.Counted` readers)."""


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """What to convert to, and how. Defaults: auto-detect -> TFRecord, images embedded."""

    source_format: SourceFormat = "auto"
    target_format: FormatName = "tfrecord"
    label_map: LabelMap | None = None
    masks: bool = False
    shards: int = 1
    compression: Compression = "none"
    images: bool = True
    limits: Limits = DEFAULT_LIMITS
    jobs: int = 1  # worker processes reading work units (tfdrop.units); 1: this process only


@dataclass(frozen=True, slots=True)
class Report:
    """What a conversion did: counts, label histogram, what it skipped or lost, warnings."""

    source: str
    output: str
    source_format: FormatName
    target_format: FormatName
    items: int
    objects: int
    subsets: dict[str, int]
    labels: dict[str, int]
    label_map: LabelMap
    skipped: dict[str, int]
    lossy: dict[str, int]
    warnings: list[dict[str, Any]]
    warning_counts: dict[str, int]
    validated_items: int
    output_bytes: int
    seconds: float
    training: TrainingSummary | None = None  # num_classes, counts per label, input_reader
    keypoints: dict[str, Skeleton] = field(default_factory=dict)
    """Label -> its keypoint names and skeleton edges (labels with keypoints only)."""
    keypoint_slots: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Label -> its global keypoint ids on the dataset's one num_keypoints axis."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``<stem>.report.json``)."""
        return (
            {
                "source": self.source,
                "output": self.output,
                "source_format": self.source_format,
                "target_format": self.target_format,
                "items": self.items,
                "objects": self.objects,
                "subsets": self.subsets,
                "labels": self.labels,
                "label_map": [
                    {"id": it.id, "name": it.name}
                    | ({"display_name": it.display_name} if it.display_name else {})
                    for it in self.label_map.items
                ],
                "skipped": self.skipped,
                "lossy": self.lossy,
                "warnings": self.warnings,
                "warning_counts": self.warning_counts,
                "validated_items": self.validated_items,
                "output_bytes": self.output_bytes,
                "seconds": round(self.seconds, 3),
            }
            | (self.training.to_dict() if self.training is not None else {})
            | self._keypoints_dict()
        )

    def _keypoints_dict(self) -> dict[str, Any]:
        """The report's ``keypoints`` section: per label with keypoints, their number, names
        and skeleton edges (keypoint indices), for pipeline.config's keypoint settings."""
        if not self.keypoints:
            return {}
        slots = self.keypoint_slots
        return {
            "keypoints": {
                label: sk.to_dict(slots.get(label, ())) for label, sk in self.keypoints.items()
            }
        }

    def summary(self) -> str:
        """One line for a terminal."""
        skipped = sum(self.skipped.values())
        extra = f", {skipped} annotations skipped" if skipped else ""
        warns = sum(self.warning_counts.values())
        extra += f", {warns} warnings" if warns else ""
        return (
            f"{self.source_format} -> {self.target_format}: {self.items} items, "
            f"{self.objects} objects, {len(self.label_map)} labels{extra} -> {self.output} "
            f"({self.seconds:.2f} s)"
        )


def _box_masks(options: ConvertOptions) -> bool:
    return options.masks and options.target_format == "tfrecord"


def _items(
    reader: Reader, spec: JobSpec, options: ConvertOptions, notes: Notes, source: Source
) -> Generator[Item | Encoded | Span, None, None]:
    """The reader's items, prepared (:func:`tfdrop.units.prepare`): by a pool of worker
    processes when the source splits into work units and more than one job is asked for, else
    here (the same items either way)."""
    if options.jobs > 1 and isinstance(reader, Overlapping) and _pool_pays(spec, options):
        big = early_bytes(spec, reader.labels())
        plan = None
        if big > UNIT_BYTES:  # else the early units would be too small to help
            plan = reader.overlapped_units(
                max_items=UNIT_ITEMS, max_bytes=UNIT_BYTES, early=window(options.jobs) - 1,
                early_bytes=big,
            )  # fmt: skip
        if plan is not None:
            again = partial(_planned_items, reader, spec, options, notes, source)
            return settled_items(spec, plan, options.jobs, notes, again, source=source)
    return _planned_items(reader, spec, options, notes, source)


def _planned_items(
    reader: Reader, spec: JobSpec, options: ConvertOptions, notes: Notes, source: Source
) -> Generator[Item | Encoded | Span, None, None]:
    if options.jobs > 1 and isinstance(reader, Splittable) and _pool_pays(spec, options):
        units = reader.units(max_items=UNIT_ITEMS, max_bytes=UNIT_BYTES)
        if units is not None and len(units) > 1:
            jobs = min(options.jobs, len(units))
            return parallel_items(spec, units, jobs, notes, source=source)
    return (prepare(item, spec, notes) for item in reader.items())


def _pool_pays(spec: JobSpec, options: ConvertOptions) -> bool:
    """Whether workers save more than shipping their items to this process costs. Not for
    TFRecord records written as another format: parsing a record is cheap next to pickling
    its image back here (20,000 records to VOC: 12.6 s with two workers, 9.4 s with one)."""
    return not (spec.source_format == "tfrecord" and options.target_format != "tfrecord")


def convert(
    src: Path,
    out: Path,
    options: ConvertOptions,
    *,
    progress: Progress | None = None,
    workdir: Path | None = None,
    keep: Sequence[Path] = (),
) -> Report:
    """Convert ``src`` (zip, folder or bare TFRecord) into the archive ``out`` (a zip).

    ``out`` appears only complete and validated (temp name, fsync, rename). ``progress`` gets
    the number of items done and the total (None when the source's index does not tell); an
    exception it raises aborts the conversion (no output). Temp files go in a working folder
    of the run's own in ``workdir`` (the temp folder when None), removed after it; those of
    killed runs are removed when the next run starts (:mod:`tfdrop.leftovers`), never one
    holding ``src``, ``out`` or any of ``keep`` (the label map read).

    Raises:
        DataError: the input is malformed (its fields say where); nothing is written.
        OSError: the disk is full, a folder is not writable, ...: transient for the daemon.
    """
    started = time.monotonic()
    src, out = Path(src), Path(out)
    if options.target_format not in FORMATS or FORMATS[options.target_format].open_writer is None:
        raise ValueError(f"cannot write format {options.target_format!r}")
    notes = Notes()
    keep = [src, out, *keep]  # never swept as a killed run's leftovers (an attack's finding)
    with open_input(src, options.limits) as source, run_folder(workdir, keep=keep) as work:
        fmt = options.source_format
        if fmt == "auto":
            fmt = detect_format(source.names(), archive=str(src))
        spec = FORMATS.get(fmt)
        if spec is None or spec.open_reader is None:
            raise ValueError(f"cannot read format {fmt!r}")
        try:
            read = ReadOptions(
                masks=options.masks,
                images=options.images,
                workdir=work,
                limits=options.limits,
            )
            reader = spec.open_reader(source, read, notes)
            resolver = LabelResolver(
                options.label_map,
                reader.labels(),
                reader.label_map(),
                limits=options.limits,
                plain_text=options.target_format != "tfrecord",
                skeletons=reader.skeletons() if isinstance(reader, HasSkeletons) else None,
                tfrecord_layout=options.target_format == "tfrecord",
            )
            encode = options.target_format == "tfrecord"
            if encode and _needs_scan(reader, resolver):
                _scan_keypoints(spec.open_reader(source, replace(read, images=False), Notes()),
                                resolver)  # fmt: skip
            layout = resolver.map.keypoint_layout
            wopts = replace(_write_options(options, work), keypoints=layout)
            job = JobSpec(
                src, fmt, read, resolver.map, _box_masks(options), wopts if encode else None
            )
            stream = _items(reader, job, options, notes, source)
            tally = Tally()
            # closed here, not when collected: an error or a signal stops the pool and removes
            # the spool folder before it leaves this function
            with (
                closing(stream),
                atomic_path(out) as tmp,
                _follower(tmp, encode, resolver, options) as follower,
            ):
                tick = _ticker(progress, reader)
                when = _member_time(src)
                counts, members, wrote_direct = _write(
                    stream, resolver, tmp, wopts, options, notes, tick, tally, when, follower,
                    source=source,
                )  # fmt: skip
                with flushing(tmp):  # the disk write and the read-back at once
                    validated = validate_archive(
                        tmp,
                        options.target_format,
                        Written(*counts, direct=wrote_direct),
                        resolver.map,
                        masks=options.masks,
                        limits=options.limits.at_least(DEFAULT_LIMITS),
                        followed=_followed(follower, resolver),
                    )
        except TfdropError as exc:
            raise exc.at(archive=str(src)) from None
    items, objects, subsets, labels = counts
    return Report(
        source=str(src),
        output=str(out),
        source_format=fmt,
        target_format=options.target_format,
        items=items,
        objects=objects,
        subsets=dict(subsets),
        labels=dict(labels),
        label_map=resolver.map,
        skipped=dict(notes.skipped),
        lossy=dict(notes.lossy),
        warnings=list(notes.warnings),
        warning_counts=dict(notes.warning_counts),
        validated_items=validated,
        output_bytes=out.stat().st_size,
        seconds=time.monotonic() - started,
        training=training_summary(tally, resolver.map, members, options),
        keypoints=resolver.skeletons(),
        keypoint_slots=resolver.keypoint_slots(),
    )


def _follower(
    tmp: Path, encode: bool, resolver: LabelResolver, options: ConvertOptions
) -> AbstractContextManager[Follower | None]:
    """A read-back of the TFRecord member while it is written (:mod:`tfdrop.follow`), against
    the label map known now; none for other targets."""
    if not encode:
        return nullcontext()
    return closing(Follower(tmp, resolver.map, options.limits.at_least(DEFAULT_LIMITS)))


def _followed(follower: Follower | None, resolver: LabelResolver) -> Followed | None:
    """What the follower checked, if it checked against the label map written."""
    if follower is None or follower.label_map != resolver.map:
        return None
    return follower.verified()


def _member_time(src: Path) -> DosTime:
    """The members' timestamp: ``SOURCE_DATE_EPOCH`` when set, else the input's mtime, so
    converting the same input again gives the same bytes (the clock's time made every run's
    archive differ)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    return dos_time(int(epoch) if epoch.isdigit() else src.stat().st_mtime)


def _needs_scan(reader: Reader, resolver: LabelResolver) -> bool:
    """A TFRecord target needs the keypoint layout before its first record: scan a source
    that may hold keypoints it did not declare (unless a pinned map fixes the layout)."""
    if resolver.layout_fixed:
        return False
    return isinstance(reader, DeclaresKeypoints) and not reader.keypoints_declared()


def _scan_keypoints(reader: Reader, resolver: LabelResolver) -> None:
    """Learn every label's keypoints from the annotations (images not read)."""
    for item in reader.items():
        resolver.learn(item)


def training_summary(
    tally: Tally, label_map: LabelMap, members: list[str], options: ConvertOptions
) -> TrainingSummary:
    """The report's hand-off to training (:mod:`tfdrop.handoff`); input paths only for a
    TFRecord target."""
    if options.target_format != "tfrecord":
        return summarize(tally, label_map, None)
    notes = []
    if options.compression != "none":
        notes.append(
            f"the records are {options.compression}-compressed: the OD API reads them with "
            "tf.data.TFRecordDataset without a compression_type; convert with --compression none"
        )
    return summarize(tally, label_map, [m for m in members if is_tfrecord_name(m)], notes=notes)


_Counts = tuple[int, int, Counter[str], Counter[str]]


def _ticker(progress: Progress | None, reader: Reader) -> Callable[[int], None] | None:
    """``progress`` with the reader's total bound (None when no one listens)."""
    if progress is None:
        return None
    total = reader.total() if isinstance(reader, Counted) else None
    return lambda done: progress(done, total)


def _write_options(options: ConvertOptions, workdir: Path | None) -> WriteOptions:
    return WriteOptions(
        masks=options.masks,
        shards=options.shards,
        compression=options.compression,
        images=options.images,
        workdir=workdir,
    )


def _write(
    stream: Iterator[Item | Encoded | Span],
    resolver: LabelResolver,
    out: Path,
    wopts: WriteOptions,
    options: ConvertOptions,
    notes: Notes,
    progress: Callable[[int], None] | None,
    tally: Tally,
    date_time: DosTime,
    follower: Follower | None = None,
    *,
    source: Source | None = None,
) -> tuple[_Counts, list[str], bool]:
    """Write every item; the counts, the names of the members written, and whether their
    bulk went to the disk past the page cache (``ZipSink.wrote_direct``). ``source``: the
    open input, whose stored bytes a worker's spooled run may name."""
    spec = FORMATS[options.target_format]
    assert spec.open_writer is not None
    n_items = n_objects = 0
    subsets: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    names_files = options.target_format != "tfrecord"  # the item's name becomes a member's
    on_stored = follower.attach if follower is not None else None
    with ZipSink(out, date_time=date_time, on_stored=on_stored) as sink:
        writer = spec.open_writer(sink, wopts, notes)
        try:
            for entry in stream:
                written = _write_entry(
                    entry, writer, resolver, tally, names_files=names_files, source=source
                )
                if written is None:
                    continue
                subset, names = written
                n_items += 1
                n_objects += len(names)
                subsets[subset] += 1
                labels.update(names)
                if progress is not None:
                    progress(n_items)
            writer.close(resolver.map)
        except BaseException:
            writer.abort()
            raise
        members = sink.names
        wrote_direct = sink.wrote_direct
    if resolver.renumbered:
        warn_renumbered(notes, resolver.renumbered)
    return (n_items, n_objects, subsets, labels), members, wrote_direct


def _write_entry(
    entry: Item | Encoded | Span,
    writer: Writer,
    resolver: LabelResolver,
    tally: Tally,
    *,
    names_files: bool,
    source: Source | None = None,
) -> tuple[str, tuple[str, ...]] | None:
    """Write one entry of the stream; the item's subset and labels (None for a run of
    records a worker spooled: its items came before it, as ``Encoded`` without a record)."""
    if isinstance(entry, Span):
        assert isinstance(writer, TfrecordWriter)
        writer.write_span(entry, source)
        return None
    if isinstance(entry, Encoded):  # a worker encoded it: its label ids are final
        assert isinstance(writer, TfrecordWriter)
        if entry.record is not None:
            writer.write_record(entry.subset, entry.record)
        else:  # its record comes in a later Span: the member still opens in item order
            writer.open_subset(entry.subset)
        tally.add(entry.subset, entry.labels, masks=entry.masks, keypoints=entry.keypoints)
        return entry.subset, entry.labels
    if names_files:
        check_item_name(entry.name)
    item = resolver.assign(entry)
    try:
        writer.write(item)
    except TfdropError as exc:
        raise exc.at(item=item.name) from None
    tally.add_item(item)
    return item.subset, tuple(o.label for o in item.objects)

"""Work units: one conversion's items read by a pool of worker processes, in the source's order.

A reader that can split its source (:class:`~tfdrop.formats.base.Splittable`) cuts it into
units (ranges of items taken from the source's own index: the zip's annotation members, a
COCO image index, a TFRecord's record offsets), each bounded in items and in declared bytes.
Each worker process opens the source and the reader once, then turns unit after unit into
items with images read, label ids set from the map known before the first item, and box masks
made; the parent takes the results back in unit order, so everything downstream (label
resolution, writing, counting, notes) sees exactly the sequence a single process would: the
output is the same bytes whatever the number of workers.

Memory stays bounded: at most ``2 * jobs`` units are in flight, each of at most
:data:`UNIT_BYTES` declared bytes. A worker's error is raised when the parent reaches its unit,
so the first error is the one a sequential run meets.

A reader that checks its source while its first units are already out (COCO's pass 2:
:class:`~tfdrop.formats.base.Overlapping`) goes through :func:`settled_items`: the workers
start at once, and nothing reaches the caller before the check has ended, so its errors and
notes come as a sequential run has them.

For an uncompressed, unsharded TFRecord target the workers also frame their records and write
them to a spool file (:mod:`tfdrop.formats.tfrecord.spool`), one run per subset; the parent
gets :class:`~tfdrop.formats.tfrecord.spool.Span` descriptors and appends the runs to the
output through one reused buffer (an image that is a stored member of the input zip is
named there, not spooled: the parent copies it from the input). Unit k writes over the file
of slot k % (window + 1), whose last unit has been written out by then (see :func:`_pooled`),
so the spool folder (in the job's work folder) holds one file per slot, the same page-cache
pages again and again, and is removed when the pool ends.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, cast

from tfdrop.archive import Source
from tfdrop.codec.example import ENCODED
from tfdrop.codec.imagehead import image_size
from tfdrop.codec.keypoints import KP_X
from tfdrop.codec.model import Annotation, Item, KeypointLayout, LabelMap, Shape
from tfdrop.codec.wire import leading_value
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats import FORMATS, Notes, ReadOptions, WriteOptions
from tfdrop.formats.base import FormatName, Splittable, UnitPlan
from tfdrop.formats.common.masks import box_mask_png, check_mask_size
from tfdrop.formats.tfrecord import encode_record
from tfdrop.formats.tfrecord.spool import Span, UnitSpool, takes_spans
from tfdrop.inputs import open_input
from tfdrop.limits import Limits
from tfdrop.pool import default_jobs, inherited, ordered

ENCODED_KEY: Final = ENCODED.encode()
UNIT_ITEMS: Final = 64
"""Most items in one unit: small enough to keep both cores busy to the end of a run."""
UNIT_BYTES: Final = 16 << 20
"""Most declared bytes (annotations and images) in one unit: bounds the parent's memory."""
NAMED_BYTES: Final = 16 << 10
"""The smallest image a spooled record names in the source instead of holding: each named
image is one more read for the parent. 100,000 stored 4 KB JPEGs, --jobs 2, 4 alternating
runs: 3.81 s and 6.38 s of CPU when named from 4 KB, 3.39 s and 5.52 s from 16 KB, 3.28 s and
5.19 s before images were named (an outside attack saw the cost)."""
EARLY_BYTES: Final = 128 << 20
"""Most declared bytes of a unit given out before the reader has checked its source, when
the workers' results hold no images (:func:`early_bytes`): their records are spooled, in
runs of at most :data:`UNIT_BYTES` (:meth:`_Worker._run_spooled`). COCO's plan gives the
largest early unit this much, the others less (:func:`tfdrop.formats.coco.plan.early_cap`:
32, 128 and 96 MB with two workers, 256 MB in all). Bounded because a unit's records fill its
slot's spool file: unbounded, the early units of COCO 20k x 10 (half its images) wrote some
600 MB into new page-cache pages, 38% of a run's samples under ``perf``
(``copy_folio_from_iter_atomic``) and 2.8-4.1 s of kernel time. Three units of 64 MB each:
3.78 s; 48/96/48 MB: 3.55 s; 64/128/64 MB: 3.57 s (COCO 20k --jobs 2, medians of 6
alternating runs; --jobs 1 6.00 s); 24/96/72 MB: 3.76 s against 48/96/48 MB's 3.87 s in a
busier run (--jobs 1 7.00 s); 32/128/96 MB: 4.00 s against 24/96/72 MB's 4.30 s, faster in 6
of 8 pairs, 6.59 against 7.48 s of CPU (--jobs 1 6.68 s): the workers no longer run out of
early units before pass 2 ends."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What every worker needs to open the source once and prepare items like the parent."""

    src: Path
    source_format: FormatName
    read: ReadOptions
    known: LabelMap  # the ids fixed before the first item (pinned, source map or source list)
    box_masks: bool  # with masks on and a TFRecord target, boxes get a filled-rectangle mask
    encode: WriteOptions | None = None  # a TFRecord target: workers encode the Examples too
    spool: str | None = None  # the folder of the units' spool files (set by parallel_items)


@dataclass(frozen=True, slots=True)
class Encoded:
    """An item a worker already encoded as its Example (every label was in the known map)."""

    subset: str
    record: bytes | None  # None: spooled, written by the unit's Span of its subset
    labels: tuple[str, ...]  # one per object, for the report's counts
    masks: int = 0  # objects with a mask, for the report's input_reader block
    keypoints: tuple[int, ...] = ()  # keypoints per object, for the same


@dataclass(slots=True)
class UnitResult:
    """One unit's items (or their encoded records), in order, and what reading them noted."""

    items: list[Item | Encoded | Span]
    notes: Notes


def prepare(item: Item, spec: JobSpec, notes: Notes) -> Item:
    """What every item goes through between its reader and its writer, in a worker or here.

    A mask that was never rasterised (``--masks`` off) stays its bounding box: counted as
    ``lossy.mask_as_box``. With masks on and a TFRecord target, boxes get a filled rectangle
    (the OD API needs one mask per object): counted as ``lossy.box_as_mask``.
    """
    _check_image_size(item)
    layout = spec.known.keypoint_layout
    if layout is not None and item.objects:
        # every object carries the dataset's num_keypoints slots: bounded before encoding
        spec.read.limits.check(
            "max_values_per_feature", layout.total * len(item.objects), item=item.name, key=KP_X
        )
    for obj in item.objects:
        if obj.shape is Shape.MASK and obj.mask is None:
            notes.lose("mask_as_box")
    if spec.box_masks:
        return _with_box_masks(item, spec.read.limits, notes)
    return item


def _check_image_size(item: Item) -> None:
    """The size an annotation declares must be the embedded image's (from its header): boxes
    are normalised by it, and TensorFlow decodes the image at its own size (found by an
    outside attack: a 100x80 declaration over a 200x160 JPEG was written, and validated)."""
    if not item.image or not item.width:
        return
    size = image_size(item.image)
    if size is not None and size != (item.width, item.height):
        raise FormatError(
            f"the annotation declares a {item.width}x{item.height} image, but the image is "
            f"{size[0]}x{size[1]}",
            item=item.name,
            hint="fix the size in the annotation (boxes are in pixels of the real image)",
        )


def _with_box_masks(item: Item, limits: Limits, notes: Notes) -> Item:
    """Boxes get a filled rectangle (the image's size checked against ``max_mask_pixels``
    before any raster is made)."""
    if not item.objects or all(o.mask is not None for o in item.objects):
        return item
    if item.width <= 0 or item.height <= 0:
        return item
    try:
        check_mask_size(item.width, item.height, limits.max_mask_pixels)
    except TfdropError as exc:
        raise exc.at(item=item.name) from None
    objs: list[Annotation] = []
    for o in item.objects:
        if o.mask is None:
            notes.lose("box_as_mask")
            png = box_mask_png(o.box, item.width, item.height, max_pixels=limits.max_mask_pixels)
            o = replace(o, mask=png)
        objs.append(o)
    return replace(item, objects=tuple(objs))


def _preassign(item: Item, known: LabelMap) -> tuple[Item, bool]:
    """Set the ids of labels the known map has, so the parent's resolver changes nothing;
    the flag says whether every object's label was known (its ids are then final).

    Labels the map lacks keep the reader's id: the parent resolves them in order, exactly as
    a single process would (a new label's id depends on every item before it).
    """
    objects = list(item.objects)
    changed = False
    final = True
    layout = known.keypoint_layout
    for i, obj in enumerate(objects):
        label_id = known.id_of(obj.label) if obj.label else None
        if label_id is None or (obj.keypoints and not _fits(obj, layout)):
            final = False  # the parent's resolver puts its keypoints in the layout's order
        elif label_id != obj.label_id:
            objects[i] = replace(obj, label_id=label_id)
            changed = True
    return (replace(item, objects=tuple(objects)) if changed else item), final


def _fits(obj: Annotation, layout: KeypointLayout | None) -> bool:
    """The object's keypoints are its label's slots of ``layout``, in order, by name."""
    slots = layout.slots.get(obj.label) if layout is not None else None
    if slots is None or len(slots) != len(obj.keypoints):
        return False
    names = layout.names if layout is not None else ()
    return all(p.name == names[s] for p, s in zip(obj.keypoints, slots, strict=True))


class _Worker:
    """A worker process's state: the source and reader, opened once by the pool initializer."""

    def __init__(self, spec: JobSpec, source: Source | None = None) -> None:
        self.spec = spec
        # a forked worker reads through the parent's open source (its index already parsed:
        # a zip's central directory of 40,000 entries costs 0.3 s to read again)
        self.source = source if source is not None else open_input(spec.src, spec.read.limits)
        self.notes = Notes()
        fmt = FORMATS[spec.source_format]
        assert fmt.open_reader is not None
        reader = fmt.open_reader(self.source, spec.read, self.notes)
        assert isinstance(reader, Splittable)
        self.reader = reader
        self.notes.clear()  # the parent's reader already noted what opening says

    def run(self, unit: object, slot: int = 0) -> UnitResult:
        """The unit's items; with a spool folder, their records spooled into the file of
        ``slot`` (written over: see :func:`_pooled`)."""
        self.notes.clear()
        if self.spec.spool is not None and self.spec.encode is not None:
            return self._run_spooled(unit, self.spec.encode, self.spec.spool, slot)
        out: list[Item | Encoded | Span] = []
        encode = self.spec.encode
        for item in self.reader.unit_items(unit):
            item, final = _preassign(prepare(item, self.spec, self.notes), self.spec.known)
            if encode is not None and final:
                record = encode_record(item, encode, self.notes)
                out.append(_encoded(item, record))
            else:
                out.append(item)
        return UnitResult(out, self.notes.copy())

    def _run_spooled(
        self, unit: object, encode: WriteOptions, folder: str, slot: int
    ) -> UnitResult:
        """The unit's records framed into its spool file, a run per subset; an item whose
        labels the parent must still resolve ends its subset's run, so each subset's records
        keep the source's order. A run also ends at :data:`UNIT_BYTES`: the records wait in
        memory until written, and a unit given out early may be far larger."""
        spool = UnitSpool(os.path.join(folder, f"slot-{slot}"), reuse=True)
        out: list[Item | Encoded | Span] = []
        try:
            for item in self.reader.unit_items(unit):
                item, final = _preassign(prepare(item, self.spec, self.notes), self.spec.known)
                if final:
                    record = encode_record(item, encode, self.notes)
                    spool.add(item.subset, record, self._named(item, record))
                    out.append(_encoded(item, None))
                    if spool.pending(item.subset) >= UNIT_BYTES:  # a large unit's (early)
                        out.append(cast(Span, spool.flush(item.subset)))
                else:
                    span = spool.flush(item.subset)
                    if span is not None:
                        out.append(span)
                    out.append(item)
            out.extend(spool.flush_all())
        finally:  # the file stays for the slot's next unit (the folder goes with the pool)
            spool.close()
        return UnitResult(out, self.notes.copy())

    def _named(self, item: Item, record: bytes) -> tuple[int, int, int] | None:
        """Where ``record`` holds the item's image and where the source holds the same bytes
        (a stored member: ``Item.image_member``), for the spool to name them; None to spool
        the record whole."""
        image = item.image
        if not image or len(image) < NAMED_BYTES or not item.image_member:
            return None
        member = item.image_member
        at = self.source.stored_at(member)
        if at is None or self.source.size(member) != len(image):
            return None
        start = leading_value(record, ENCODED_KEY, len(image))
        return None if start is None else (start, len(image), at)


def _encoded(item: Item, record: bytes | None) -> Encoded:
    objs = item.objects
    return Encoded(
        item.subset,
        record,
        tuple(o.label for o in objs),
        sum(o.mask is not None for o in objs),
        tuple(len(o.keypoints) for o in objs),
    )


_STATE: list[_Worker] = []
"""The worker process's own state (one entry, set by the initializer; never used in the parent)."""


def _init(spec: JobSpec) -> None:
    # a forked worker reads through the parent's open source (every source reads with
    # ``pread`` or by path, so sharing the descriptor is safe); a spawned one opens its own
    _STATE.append(_Worker(spec, inherited()))


def _run(job: tuple[int, object]) -> UnitResult:
    slot, unit = job
    return _STATE[0].run(unit, slot)


def window(jobs: int) -> int:
    """Units in flight with ``jobs`` workers; the first result is taken once they are."""
    return 2 * jobs


def early_bytes(spec: JobSpec, labels: Sequence[str]) -> int:
    """How large a unit given out early (:func:`settled_items`) may be: about the results
    the parent may hold. Unbounded by images when the workers spool every record: a TFRecord
    target that takes spans, no keypoints (they may need the parent's layout), every label
    of the source in the known map (an item the parent must resolve comes back whole)."""
    encode = spec.encode
    if encode is None or not takes_spans(encode) or spec.known.keypoint_layout is not None:
        return UNIT_BYTES
    if not labels or any(spec.known.id_of(name) is None for name in labels):
        return UNIT_BYTES
    return EARLY_BYTES


def settled_items(
    spec: JobSpec,
    plan: UnitPlan,
    jobs: int,
    notes: Notes,
    fallback: Callable[[], Iterator[Item | Encoded | Span]],
    *,
    source: Source | None = None,
) -> Generator[Item | Encoded | Span, None, None]:
    """:func:`parallel_items` over a plan whose first units come before the reader has
    checked its source. The first entry waits for :meth:`UnitPlan.settle`; when it says the
    source is bad or a unit was not exact, nothing was yielded, and ``fallback()`` gives the
    entries instead. A worker's error found before is raised only once the check passed (a
    bad annotation anywhere in the file is what a sequential run reports first). What the
    check noted goes before what the units noted."""
    unit_notes = Notes()
    stream = parallel_items(spec, plan, jobs, unit_notes, source=source)
    try:
        error: TfdropError | None = None
        try:
            first = next(stream, None)
        except TfdropError as exc:
            first, error = None, exc
        if not plan.settle():
            stream.close()
            yield from fallback()
            return
        notes.merge(plan.notes)
        if error is not None:
            raise error
        if first is None:
            return
        _pass_on(unit_notes, notes)
        yield first
        for entry in stream:
            _pass_on(unit_notes, notes)
            yield entry
        _pass_on(unit_notes, notes)
    finally:
        stream.close()


def _pass_on(src: Notes, dst: Notes) -> None:
    if src.warning_counts or src.skipped or src.lossy:
        dst.merge(src)
        src.clear()


def parallel_items(
    spec: JobSpec,
    units: Iterable[object],
    jobs: int,
    notes: Notes,
    on_unit: Callable[[], None] | None = None,
    *,
    source: Source | None = None,
) -> Generator[Item | Encoded | Span, None, None]:
    """Every item of ``units``, read by ``jobs`` worker processes, yielded in unit order
    (with a TFRecord target that takes spooled runs, :class:`Span` entries carry the records).
    ``source``: the parent's open source of ``spec.src``, which forked workers read through.

    Each unit's notes are merged into ``notes`` when its items are yielded (so warnings keep
    the sequential order). Closing the iterator early cancels what has not started.
    """
    if jobs >= default_jobs():  # every core has a worker: a read-ahead thread only costs CPU
        spec = replace(spec, read=replace(spec.read, read_ahead=False))
    folder = None
    if spec.encode is not None and takes_spans(spec.encode):
        folder = tempfile.mkdtemp(prefix=".tfdrop-spool-", dir=spec.read.workdir)
        spec = replace(spec, spool=folder)
    try:
        # the units are iterated once (a plan's come while the pool runs)
        yield from _pooled(spec, units, jobs, window(jobs), notes, on_unit, source)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _pooled(
    spec: JobSpec,
    units: Iterable[object],
    jobs: int,
    window: int,
    notes: Notes,
    on_unit: Callable[[], None] | None,
    source: Source | None,
) -> Iterator[Item | Encoded | Span]:
    # Unit k spools into slot k % (window + 1): when unit k is given out, units k - window
    # and earlier have been taken back and their runs written (ordered() yields the oldest
    # before it submits more), so no two units in use share a slot. A slot's file is written
    # over in place: the same page-cache pages every time, where a new file per unit took
    # new ones (the workers' pwritev into new pages was 1.6 s of CPU of a VOC 20k run here).
    slots = window + 1
    numbered = ((i % slots, unit) for i, unit in enumerate(units))
    results = ordered(
        _run, numbered, jobs, window=window, initializer=_init, initargs=(spec,), inherit=source
    )
    for result in results:
        notes.merge(result.notes)
        yield from result.items
        if on_unit is not None:
            on_unit()

"""TFRecord archives: CVAT's "TFRecord 1.0" layout, TF OD API records (SPEC.md).

Read: every ``*.tfrecord`` / ``*.record`` / shard set ``<base>-0000i-of-0000N`` in the source
(Datumaro ignored ``*.record`` and shard names), GZIP/ZLIB detected from the bytes, plus the
``label_map.pbtxt`` beside them. The subset is the file's base name (``train.tfrecord`` ->
``train``). Write: ``<subset>.tfrecord`` (or ``<subset>.tfrecord-0000i-of-0000N`` with shards,
records assigned round-robin as TF models' ``tf_record_creation_util.py`` does) and
``label_map.pbtxt`` in CVAT's layout. Members are stored, not deflated: images are already
compressed.

Work units (:meth:`TfrecordReader.units`): runs of records found from the frame headers of an
uncompressed file that can be read at an offset (a folder, bare files, a stored zip member),
read back by a worker with :meth:`~tfdrop.archive.Source.read_range`; a compressed or
deflated file is one unit.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from tfdrop.archive.rawcopy import RangeCopier, crc32_combine
from tfdrop.archive.sink import MemberWriter
from tfdrop.codec import inflate
from tfdrop.codec.example import (
    ENCODED,
    FILENAME,
    LABEL,
    MASK,
    SOURCE_ID,
    TEXT,
    ParsedExample,
    encode_example,
    parse_example,
    to_item,
)
from tfdrop.codec.imagehead import image_complete, image_kind
from tfdrop.codec.keypoints import keypoint_losses
from tfdrop.codec.labelmap import format_label_map, parse_label_map
from tfdrop.codec.model import Item, LabelMap
from tfdrop.codec.schema import IMAGE_FORMATS, check_parsed
from tfdrop.errors import DataError, FormatError, SchemaError, TfdropError
from tfdrop.formats.base import FormatSpec, Notes, ReadOptions, WriteOptions, plan_ranges
from tfdrop.formats.tfrecord.spool import Span, takes_spans
from tfdrop.limits import Limits
from tfdrop.shards import role_of
from tfdrop.stream import (
    RecordWriter,
    is_tfrecord_name,
    iter_records,
    parse_shard_name,
    record_offsets,
    records_at,
    shard_gaps,
    shard_name,
    shard_set,
    stream_caps,
)

if TYPE_CHECKING:
    from tfdrop.archive import Source, ZipSink

LABEL_MAP_NAME = "label_map.pbtxt"
_SUFFIX = re.compile(r"\.(tfrecords?|record)(\.(gz|gzip|zlib|z))?$", re.IGNORECASE)


def bare_files(path: Path) -> dict[str, Path]:
    """The members of a bare TFRecord input (not a zip), by name: ``path`` or every existing
    file of its shard set, and the ``label_map.pbtxt`` beside them (as ``validate`` and
    ``inspect`` read them; a daemon job folder holds only the dropped file)."""
    paths = {p.name: p for p in shard_set(path)}
    label_map = path.with_name(LABEL_MAP_NAME)
    if label_map.is_file():
        paths[LABEL_MAP_NAME] = label_map
    return paths


def subset_of(name: str) -> str:
    """``train.tfrecord`` -> ``train``; ``val.record-00001-of-00004`` -> ``val``.

    A file whose own name is not a subset word, in a folder that is one, takes the folder's
    name: Roboflow exports ``train/cars.tfrecord``, ``valid/cars.tfrecord`` and
    ``test/cars.tfrecord`` (otherwise all three would be one subset ``cars``).
    """
    folder, _, base = name.replace("\\", "/").rpartition("/")
    shard = parse_shard_name(base)
    if shard is not None:
        base = shard[0]
    base = _SUFFIX.sub("", base)
    parent = folder.rpartition("/")[2]
    if parent and role_of(base) is None and role_of(parent) is not None:
        return parent
    return base or "default"


def _shard_key(name: str) -> tuple[str, int]:
    shard = parse_shard_name(os.path.basename(name))
    return (subset_of(name), shard[1] if shard else -1)


def detect(names: Sequence[str]) -> int:
    """A TFRecord archive has at least one record file."""
    return 90 if any(is_tfrecord_name(n) for n in names) else 0


def _find_label_maps(names: Sequence[str]) -> list[str]:
    return sorted(n for n in names if n.rsplit("/", 1)[-1].lower().endswith(".pbtxt"))


@dataclass(frozen=True, slots=True)
class TfrecordUnit:
    """Records ``first..`` of record file ``file``, at bytes ``offset:offset + size``; ``size``
    -1: the whole file, read as a stream."""

    file: int
    first: int
    offset: int
    size: int


@dataclass(slots=True)
class TfrecordReader:
    source: Source
    options: ReadOptions
    notes: Notes
    files: list[str] = field(default_factory=list)
    _label_map: LabelMap | None = None

    def __post_init__(self) -> None:
        names = self.source.names()
        self.files = sorted((n for n in names if is_tfrecord_name(n)), key=_shard_key)
        self._check_shard_sets()
        maps = _find_label_maps(names)
        merged: LabelMap | None = None
        for name in maps:
            lm = parse_label_map(
                self.source.read_bytes(name, max_size=self.options.limits.max_file_bytes),
                member=name,
                max_labels=self.options.limits.max_labels,
                max_text_bytes=self.options.limits.max_text_bytes,
            )
            if merged is None:
                merged = lm
            elif lm != merged:
                # Roboflow exports one map per subset folder; they must agree
                for it in lm.items:
                    other = merged.get(it.id)
                    if other is not None and other.name != it.name:
                        raise FormatError(
                            f"label maps disagree: id {it.id} is {other.name!r} in one and "
                            f"{it.name!r} here",
                            member=name,
                        )
                merged = LabelMap(
                    merged.items + tuple(i for i in lm.items if merged.get(i.id) is None)
                )
        self._label_map = merged

    def _check_shard_sets(self) -> None:
        for gap in shard_gaps(self.files):
            self.notes.warn(
                "incomplete_shard_set",
                f"shard set {gap.key} has {gap.seen} of {gap.count} files; "
                f"missing {gap.missing[0]}",
                member=gap.present,
            )

    def labels(self) -> Sequence[str]:
        return self._label_map.names if self._label_map else ()

    def label_map(self) -> LabelMap | None:
        return self._label_map

    def keypoints_declared(self) -> bool:
        """The archive's label map gives the keypoint layout (else the records are scanned)."""
        return self._label_map is not None and self._label_map.keypoint_layout is not None

    def items(self) -> Iterator[Item]:
        for k in range(len(self.files)):
            yield from self.unit_items(TfrecordUnit(k, 0, 0, -1))

    def units(
        self, *, max_items: int, max_bytes: int, portable: bool = False
    ) -> list[TfrecordUnit]:
        """Per file: runs of records (bounded by count and bytes) when the file is
        uncompressed and can be read at an offset, else the whole file."""
        out: list[TfrecordUnit] = []
        for k, name in enumerate(self.files):
            offsets = None
            if self.source.read_range(name, 0, 0) is not None:
                with self.source.open(name) as f:
                    try:
                        offsets = record_offsets(
                            f, max_record_size=self.options.limits.max_record_size
                        )
                    except TfdropError:
                        offsets = None  # the whole-file read says what is wrong, in order
            if offsets is None:
                out.append(TfrecordUnit(k, 0, 0, -1))
                continue
            sizes = (offsets[i + 1] - offsets[i] for i in range(len(offsets) - 1))
            for start, stop in plan_ranges(sizes, max_items=max_items, max_bytes=max_bytes):
                at = offsets[start]
                out.append(TfrecordUnit(k, start, at, offsets[stop] - at))
        return out

    def unit_items(self, unit: object) -> Iterator[Item]:
        assert isinstance(unit, TfrecordUnit)
        name = self.files[unit.file]
        subset = subset_of(name)
        try:
            if unit.size < 0:
                with self.source.open(name) as f:
                    records = iter_records(f, **stream_caps(self.options.limits))
                    for index, record in enumerate(records):
                        yield self._item(record, subset, name, index)
                return
            data = self.source.read_range(name, unit.offset, unit.size)
            assert data is not None  # units() checked the file can be read at an offset
            cap = self.options.limits.max_record_size
            records = records_at(data, first=unit.first, offset=unit.offset, max_record_size=cap)
            for index, record in enumerate(records, unit.first):
                yield self._item(record, subset, name, index)
        except TfdropError as exc:
            raise exc.at(member=name) from None

    def _item(self, record: bytes, subset: str, member: str, index: int) -> Item:
        try:
            parsed = parse_example(
                record, max_values_per_feature=self.options.limits.max_values_per_feature
            )
            _check_budget(parsed, self.options.limits, images=self.options.images)
        except DataError as exc:
            raise exc.at(member=member, record=index) from None
        lm = self._label_map
        texts = parsed.lists.get(TEXT)
        ids = parsed.lists.get(LABEL)
        # Datumaro writes a box without a label as id 0 and text "": keep the box out, say so
        unlabeled = {
            i
            for i in range(parsed.num_objects)
            if (not texts or not texts[i]) and (not ids or ids[i] == 0)
        }
        # images not kept (or our own output read back): the frame CRC covers the bytes
        checked = check_parsed(parsed, lm, verify_sha256=self.options.images, need_both=False)
        for problem in checked:
            if problem.obj in unlabeled:
                continue
            if problem.key == LABEL and texts is None and ids is None:
                continue  # boxes with neither class/label nor class/text (Datumaro crashed)
            raise SchemaError(
                problem.message,
                member=member,
                record=index,
                item=parsed.filename or None,
                key=problem.key,
                obj=problem.obj,
            )
        item = to_item(parsed, subset=subset, label_map=lm)
        if parsed.keypoints:
            layout = lm.keypoint_layout if lm is not None else None
            labels = [o.label for o in item.objects]
            for what, n in keypoint_losses(parsed.keypoints, parsed.num_objects, labels,
                                           layout).items():  # fmt: skip
                self.notes.lose(what, n)
        if unlabeled:
            for i in sorted(unlabeled):
                self.notes.skip(
                    "unlabeled",
                    f"object {i} has no class id or text",
                    member=member,
                    item=item.name,
                )
            item = replace(
                item, objects=tuple(o for i, o in enumerate(item.objects) if i not in unlabeled)
            )
        if not self.options.images and item.image is not None:
            item = replace(item, image=None)
        return item


def _check_budget(parsed: ParsedExample, limits: Limits, *, images: bool) -> None:
    """The job budget's per-item caps on one parsed record (its values are capped already);
    the image only when it is kept."""
    limits.check("max_objects_per_item", parsed.num_objects)
    if images and parsed.encoded is not None:
        limits.check("max_image_bytes", len(parsed.encoded), key=ENCODED)
    for key, text in ((FILENAME, parsed.filename), (SOURCE_ID, parsed.source_id)):
        limits.check("max_text_bytes", len(text.encode("utf-8", "surrogateescape")), key=key)
    texts = parsed.lists.get(TEXT)
    if texts:
        limits.check("max_text_bytes", max(map(len, texts)), key=TEXT)


def open_reader(source: Source, options: ReadOptions, notes: Notes) -> TfrecordReader:
    return TfrecordReader(source, options, notes)


def encode_record(item: Item, options: WriteOptions, notes: Notes) -> bytes:
    """``item`` as the Example the writer stores (label ids already assigned), its losses noted.

    Pure: the writer calls it, and so does a worker process that encodes a work unit's items
    for the parent to write (tfdrop.units).
    """
    if not options.images and item.image is not None:
        item = replace(item, image=None)
    kind = image_kind(item.image) if item.image else None
    if kind is not None and item.image_format != kind:
        # image/format says what the bytes are, whatever the file's name says (a PNG named
        # .jpg was published as 'jpeg', and validate refused it: found by an outside attack)
        item = replace(item, image_format=kind)
    elif not item.image and item.image_format and item.image_format not in IMAGE_FORMATS:
        # no bytes to tell: a name's 'webp' or 'bmp' describes nothing the record holds, and
        # validate refuses any word but 'jpeg' and 'png' (an outside attack, --no-images)
        item = replace(item, image_format="")
    if item.image and kind is None:
        # the OD API decodes JPEG and PNG only, and validate refuses anything else: an
        # archive tfdrop publishes must pass its own validate (found by an outside attack)
        raise SchemaError(
            "the image is neither a JPEG nor a PNG (what the OD API decodes)",
            item=item.name,
            key=ENCODED,
            hint="convert the image to JPEG or PNG, or leave it out of the dataset",
        )
    if item.image and not image_complete(item.image):
        # TF's decoder refuses a JPEG or PNG cut before its end marker: training would stop
        # at this record (found by an outside attack)
        raise SchemaError(
            f"the {kind} image is cut short (it has no end marker)",
            item=item.name,
            key=ENCODED,
            hint="the image file is incomplete: copy or export it again",
        )
    for i, obj in enumerate(item.objects):
        if obj.mask is not None and not image_complete(obj.mask):  # a mask read from a record
            raise SchemaError(
                "the instance mask is a PNG cut short (it has no IEND chunk)",
                item=item.name,
                key=MASK,
                obj=i,
                hint="the mask is incomplete: export the dataset again",
            )
    _count_losses(item, notes)
    return encode_example(item, options.keypoints)


def _count_losses(item: Item, notes: Notes) -> None:
    """What the OD API's keys have no room for goes into the report (SPEC.md)."""
    if item.tags:
        notes.lose("tag", len(item.tags))
    for obj in item.objects:
        if obj.polygon and obj.mask is None:
            notes.lose("polygon")  # kept as its bounding box; --masks keeps the shape
        for name, _value in obj.attributes:
            notes.lose(f"attribute:{name}")


class _CrcFile:
    """A spill file that keeps the CRC-32 and size of what it holds, so it is stored in the
    zip at :meth:`TfrecordWriter.close` by a plain copy, without hashing its bytes again."""

    def __init__(self, path: Path, copier: RangeCopier) -> None:
        self.path = path
        self._f = path.open("wb")
        self._copier = copier
        self.crc = 0
        self.size = 0

    def write(self, data: bytes) -> int:
        self.crc = inflate.crc32(data, self.crc)
        self.size += len(data)
        return self._f.write(data)

    def append_ranges(self, ranges: Iterable[tuple[int, int, int]], crc: int, /) -> None:
        length = self._copier.append(self._f, self.size, ranges)
        self.crc = crc32_combine(self.crc, crc, length)
        self.size += length

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()


@dataclass(slots=True)
class _Out:
    """One output record file: a zip member streamed directly, or a spilled temp file
    (a :class:`_CrcFile` handle)."""

    name: str
    writer: RecordWriter
    handle: MemberWriter


class TfrecordWriter:
    """Streams records into ``<subset>.tfrecord`` members of the output zip.

    A zip can only take one member at a time, so the first output file streams straight into
    the zip and any other (another subset, other shards) spills to a temp file in the work
    folder that is copied in at :meth:`close`.
    """

    def __init__(self, sink: ZipSink, options: WriteOptions, notes: Notes) -> None:
        self.sink = sink
        self.options = options
        self.notes = notes
        self._subsets: dict[str, list[_Out]] = {}
        self._rr: dict[str, int] = {}
        self._direct_open = False
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None

    def _open(self, name: str) -> _Out:
        compression = self.options.compression
        if not self._direct_open:
            self._direct_open = True
            member = self.sink.open_stored(name)
            return _Out(name, RecordWriter(cast(BinaryIO, member), compression=compression), member)
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(
                prefix=".tfdrop-spill-", dir=self.options.workdir
            )
        path = Path(self._tmpdir.name) / name.replace("/", "_")
        spill = _CrcFile(path, self.sink.copier)
        writer = RecordWriter(cast(BinaryIO, spill), compression=compression)
        return _Out(name, writer, spill)

    def _outputs(self, subset: str) -> list[_Out]:
        outs = self._subsets.get(subset)
        if outs is None:
            n = max(1, self.options.shards)
            base = f"{subset}.tfrecord"
            names = [base] if n == 1 else [shard_name(base, i, n) for i in range(n)]
            outs = [self._open(nm) for nm in names]
            self._subsets[subset] = outs
            self._rr[subset] = 0
        return outs

    def write(self, item: Item) -> None:
        self.write_record(item.subset, encode_record(item, self.options, self.notes))

    def write_record(self, subset: str, record: bytes) -> None:
        """Write one Example already encoded by :func:`encode_record` (in a worker process)."""
        outs = self._outputs(subset or "default")
        i = self._rr[subset or "default"]
        self._rr[subset or "default"] = i + 1
        outs[i % len(outs)].writer.write(record)

    def open_subset(self, subset: str) -> None:
        """Open the subset's output now, if it is not open yet (members are opened in the
        order their subsets first come, whoever writes the records)."""
        self._outputs(subset or "default")

    def write_span(self, span: Span, source: Source | None = None) -> None:
        """Append a run of framed records a worker process spooled (:mod:`.spool`), after
        every record written so far to its subset (copied without a Python object per record);
        ``source``: the conversion's open source, whose stored bytes the run may name."""
        if not takes_spans(self.options):
            raise ValueError("spooled runs need an uncompressed, unsharded output")
        subset = span.subset or "default"
        out = self._outputs(subset)[0]
        self._rr[subset] += span.records
        out.writer.flush()
        fd = os.open(span.path, os.O_RDONLY)
        try:
            if not span.pieces:
                out.handle.append_ranges(span.ranges(fd, -1), span.crc)
                return
            if source is None:
                raise ValueError("a run that names the source's bytes needs the source")
            try:
                out.handle.append_ranges(span.ranges(fd, source.stored_fd()), span.crc)
            except OSError:
                source.check_stored()  # a zip cut under us says so
                raise
            source.check_stored()
        finally:
            os.close(fd)

    def close(self, label_map: LabelMap) -> None:
        try:
            spilled: list[tuple[str, _CrcFile]] = []
            for outs in self._subsets.values():
                for out in outs:
                    out.writer.close()
                    out.handle.close()
                    if isinstance(out.handle, _CrcFile):
                        spilled.append((out.name, out.handle))
            for name, spill in spilled:
                self.sink.add_file_known(name, spill.path, crc=spill.crc, size=spill.size)
            self.sink.write_member(
                LABEL_MAP_NAME, format_label_map(label_map).encode(), compress=True
            )
        finally:
            self.abort()

    def abort(self) -> None:
        for outs in self._subsets.values():
            for out in outs:
                if isinstance(out.handle, _CrcFile):
                    out.handle.close()
        if self._tmpdir is not None:
            self._tmpdir.cleanup()


def open_writer(sink: ZipSink, options: WriteOptions, notes: Notes) -> TfrecordWriter:
    return TfrecordWriter(sink, options, notes)


SPEC = FormatSpec(
    name="tfrecord",
    description="TFRecord archive: <subset>.tfrecord + label_map.pbtxt (CVAT TFRecord 1.0)",
    detect=detect,
    open_reader=open_reader,
    open_writer=open_writer,
)

"""The TFRecord side of ``WriteDataset``: unit files, shards and their read-back, through
Beam's FileSystems (local, ``gs://``, ...).

Writing happens where the records are made, in the fused step after encoding: each work unit's
records of a subset go to one temporary file (one item in memory at a time; a retried bundle
writes new files, and only the files a successful bundle reported are used). Then each shard
``<subset>.tfrecord-SSSSS-of-NNNNN`` is the concatenation of a contiguous run of unit files in
source order (balanced by records), written by one worker; with one shard a subset's file holds
exactly ``tfdrop convert``'s records in its order. Every shard is then read back once, streamed:
both CRCs of every frame and every record's schema (the codec's all-clear check, the full one
only to name a problem), images not decoded again.
"""

from __future__ import annotations

import shutil
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from tfdrop.beam.elements import ExampleAt, Position
from tfdrop.beam.failure import carried
from tfdrop.beam.read import NAMESPACE
from tfdrop.beam.sources import size_of
from tfdrop.codec.compression import Compression
from tfdrop.codec.model import LabelMap
from tfdrop.errors import ValidationError
from tfdrop.handoff import Tally, label_text
from tfdrop.limits import Limits
from tfdrop.readback import check_records
from tfdrop.shards import shard_name
from tfdrop.stream import RecordWriter, iter_records, stream_caps

_RAW = CompressionTypes.UNCOMPRESSED


@dataclass(frozen=True, slots=True)
class UnitFile:
    """One temporary file: a work unit's records of one subset, in order."""

    subset: str
    first: Position
    path: str
    records: int
    objects: int
    labels: Counter[str]
    tally: Tally  # for the report's hand-off to training


@dataclass(frozen=True, slots=True)
class ShardJob:
    """One output shard and the unit files it concatenates, in order."""

    subset: str
    name: str
    files: tuple[str, ...]
    records: int
    objects: int


@dataclass(frozen=True, slots=True)
class ShardDone:
    """A shard written (``written``) or read back (``read``)."""

    subset: str
    name: str
    path: str
    records: int
    objects: int
    size: int = 0


@dataclass(slots=True)
class _Open:
    subset: str
    first: Position
    path: str
    handle: Any
    writer: RecordWriter
    objects: int = 0
    labels: Counter[str] = field(default_factory=Counter)
    tally: Tally = field(default_factory=Tally)


class WriteUnitFiles(beam.DoFn):  # type: ignore[misc]
    """``ExampleAt`` -> records in a temporary file per (work unit, subset) -> ``UnitFile``."""

    def __init__(self, tmpdir: str) -> None:
        self.tmpdir = tmpdir
        self.bytes = Metrics.counter(NAMESPACE, "bytes")
        self._open: dict[str, _Open] = {}
        self._unit: tuple[int, int] | None = None

    def start_bundle(self) -> None:
        self._open = {}
        self._unit = None

    def process(self, example: ExampleAt) -> Iterator[UnitFile]:
        with carried():
            yield from self._write(example)

    def _write(self, example: ExampleAt) -> Iterator[UnitFile]:
        unit = example.pos[:2]
        if unit != self._unit:
            yield from self._close_all()
            self._unit = (unit[0], unit[1])
        out = self._open.get(example.subset)
        if out is None:
            path = FileSystems.join(self.tmpdir, f"{uuid.uuid4().hex}.rec")
            handle = FileSystems.create(path, compression_type=_RAW)
            out = _Open(example.subset, example.pos, path, handle, RecordWriter(handle))
            self._open[example.subset] = out
        out.writer.write(example.record)
        out.objects += len(example.labels)
        out.labels.update(example.labels)
        out.tally.add(
            example.subset,
            [label_text(lb, i) for lb, i in zip(example.labels, example.ids, strict=False)],
            masks=example.masks,
            keypoints=example.keypoints,
            ids=example.ids,
        )
        self.bytes.inc(len(example.record))

    def _close_all(self) -> Iterator[UnitFile]:
        for out in self._open.values():
            out.writer.close()
            out.handle.close()
            yield UnitFile(
                out.subset,
                out.first,
                out.path,
                out.writer.records,
                out.objects,
                out.labels,
                out.tally,
            )
        self._open = {}

    def finish_bundle(self) -> Iterator[WindowedValue]:
        with carried():
            for done in self._close_all():
                yield WindowedValue(done, -1, [GlobalWindow()])


def plan_shards(files: Sequence[UnitFile], shards: int, output: str) -> list[ShardJob]:
    """Per subset (sorted), ``shards`` shards of contiguous unit files in source order, cut
    where the running record count passes each shard's share (a shard may be empty)."""
    by_subset: dict[str, list[UnitFile]] = {}
    for f in sorted(files, key=lambda f: (f.subset, f.first)):
        by_subset.setdefault(f.subset, []).append(f)
    jobs = []
    for subset, run in by_subset.items():
        total = sum(f.records for f in run)
        groups: list[list[UnitFile]] = [[] for _ in range(shards)]
        done = 0
        for f in run:
            index = min(shards - 1, done * shards // total) if total else 0
            groups[index].append(f)
            done += f.records
        for i, group in enumerate(groups):
            name = shard_name(f"{subset}.tfrecord", i, shards)
            jobs.append(
                ShardJob(
                    subset,
                    FileSystems.join(output, name),
                    tuple(f.path for f in group),
                    sum(f.records for f in group),
                    sum(f.objects for f in group),
                )
            )
    return jobs


class WriteShard(beam.DoFn):  # type: ignore[misc]
    """A ``ShardJob`` -> the shard file (unit files copied in order, compressed if asked)."""

    def __init__(self, compression: Compression, limits: Limits) -> None:
        self.compression = compression
        self.limits = limits

    def process(self, job: ShardJob) -> Iterator[ShardDone]:
        with carried():
            yield self._write(job)

    def _write(self, job: ShardJob) -> ShardDone:
        with FileSystems.create(job.name, compression_type=_RAW) as out:
            if self.compression == "none":
                for path in job.files:
                    with FileSystems.open(path, compression_type=_RAW) as f:
                        shutil.copyfileobj(f, out, 1 << 20)
            else:
                writer = RecordWriter(out, compression=self.compression)
                for path in job.files:
                    with FileSystems.open(path, compression_type=_RAW) as f:
                        for record in iter_records(f, **stream_caps(self.limits)):
                            writer.write(record)
                writer.close()
        size = size_of(job.name)
        return ShardDone(job.subset, job.name, job.name, job.records, job.objects, size)


class ValidateShard(beam.DoFn):  # type: ignore[misc]
    """A written shard -> what reading it back counts (both CRCs, every record's schema)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def process(self, shard: ShardDone, label_map: LabelMap) -> Iterator[ShardDone]:
        with carried():
            yield self._check(shard, label_map)

    def _check(self, shard: ShardDone, label_map: LabelMap) -> ShardDone:
        with FileSystems.open(shard.path, compression_type=_RAW) as f:
            records, objects = check_records(f, label_map, self.limits, shard.name)
        return ShardDone(shard.subset, shard.name, shard.path, records, objects, shard.size)


def compare(written: Sequence[ShardDone], read: Sequence[ShardDone]) -> int:
    """The records read back, if every shard reads back as written (else ValidationError)."""
    wrote = {s.name: (s.records, s.objects) for s in written}
    got = {s.name: (s.records, s.objects) for s in read}
    if wrote != got:
        bad = sorted(n for n in wrote.keys() | got.keys() if wrote.get(n) != got.get(n))
        raise ValidationError(
            f"the written shards read back differently (first: {bad[0]}: wrote "
            f"{wrote.get(bad[0])} records/objects, read {got.get(bad[0])})",
            member=bad[0],
        )
    return sum(s.records for s in read)

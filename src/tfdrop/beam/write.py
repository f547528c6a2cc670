"""``WriteDataset``: examples -> TFRecord shards, ``label_map.pbtxt``, ``report.json`` and the
dead-letter output ``bad_items.jsonl``, all under one output prefix (a folder; any file system
Beam has).

The report is combined from what every worker counted (records, objects and labels per unit
file, the notes of every unit and bundle, put back in source order), like ``tfdrop convert``'s
``report.json``, with ``bad_items`` added. Past ``max_bad_items`` bad items (or after an error
that cut a source short) the run fails before any shard is written; the dead-letter output is
written first, so it is there to read either way.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from tfdrop.beam.elements import BadItem, ExampleAt, Noted, SourceInfo
from tfdrop.beam.failure import carried, carrying
from tfdrop.beam.shardio import (
    ShardDone,
    UnitFile,
    ValidateShard,
    WriteShard,
    WriteUnitFiles,
    compare,
    plan_shards,
)
from tfdrop.beam.sources import remove
from tfdrop.codec.compression import Compression
from tfdrop.codec.labelmap import format_label_map
from tfdrop.codec.model import LabelMap
from tfdrop.convert import ConvertOptions, training_summary
from tfdrop.errors import DataError
from tfdrop.formats import Notes
from tfdrop.formats.tfrecord import LABEL_MAP_NAME
from tfdrop.handoff import Tally
from tfdrop.limits import DEFAULT_LIMITS, Limits
from tfdrop.readback import check_label_map

REPORT_NAME = "report.json"
DEAD_LETTER_NAME = "bad_items.jsonl"


class TooManyBadItemsError(DataError):
    """More items failed than ``--max-bad-items`` allows (they are in ``bad_items.jsonl``)."""

    kind = "too_many_bad_items"
    default_hint = "read bad_items.jsonl beside the output; fix them or raise --max-bad-items"


def check_bad(bad: int, cut_short: int, max_bad_items: int, dead_letter: str) -> None:
    """Raise when the run must fail for its bad items."""
    if cut_short:
        raise TooManyBadItemsError(
            f"{cut_short} error(s) ended a source that is read whole, so the items after them "
            f"were not read (see {dead_letter})"
        )
    if bad > max_bad_items:
        raise TooManyBadItemsError(
            f"{bad} bad items, more than --max-bad-items {max_bad_items} (see {dead_letter})"
        )


def combined_notes(infos: Sequence[SourceInfo], noted: Sequence[Noted]) -> Notes:
    """Every source's and unit's notes as one, in source order."""
    notes = Notes()
    for info in sorted(infos, key=lambda i: i.index):
        notes.merge(info.notes)
    for n in sorted(noted, key=lambda n: n.pos):
        notes.merge(n.notes)
    return notes


def build_report(
    output: str,
    infos: Sequence[SourceInfo],
    noted: Sequence[Noted],
    files: Sequence[UnitFile],
    shards: Sequence[ShardDone],
    validated: int,
    bad: int,
    label_map: LabelMap,
    compression: Compression = "none",
) -> dict[str, Any]:
    """``report.json``: the fields of ``tfdrop convert``'s report, from every worker's counts."""
    notes = combined_notes(infos, noted)
    subsets: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    for f in files:
        subsets[f.subset] += f.records
        labels.update(f.labels)
    formats = sorted({i.fmt for i in infos})
    names = sorted(s.name.rsplit("/", 1)[-1] for s in shards)
    tally = Tally()
    for f in sorted(files, key=lambda f: f.first):
        tally.merge(f.tally)
    options = ConvertOptions(compression=compression)
    training = training_summary(tally, label_map, names, options)
    return {
        "source": " ".join(i.path for i in sorted(infos, key=lambda i: i.index)),
        "output": output,
        "source_format": "+".join(formats),
        "target_format": "tfrecord",
        "items": sum(f.records for f in files),
        "objects": sum(f.objects for f in files),
        "subsets": dict(sorted(subsets.items())),
        "labels": dict(labels.most_common()),
        "label_map": [
            {"id": it.id, "name": it.name}
            | ({"display_name": it.display_name} if it.display_name else {})
            for it in label_map.items
        ],
        "skipped": dict(notes.skipped),
        "lossy": dict(notes.lossy),
        "warnings": list(notes.warnings),
        "warning_counts": dict(notes.warning_counts),
        "validated_items": validated,
        "output_bytes": sum(s.size for s in shards),
        "shards": names,
        "bad_items": bad,
    } | training.to_dict()


def _write_bytes(path: str, data: bytes) -> None:
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


@carrying
def _report(
    read: list[ShardDone],
    written: list[ShardDone],
    infos: list[SourceInfo],
    noted: list[Noted],
    files: list[UnitFile],
    bad: int,
    label_map: LabelMap,
    output: str,
    tmpdir: str,
    compression: Compression,
) -> dict[str, Any]:
    validated = compare(written, read)
    path = FileSystems.join(output, LABEL_MAP_NAME)
    _write_bytes(path, format_label_map(label_map).encode())
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        check_label_map(f.read(), label_map)
    report = build_report(
        output, infos, noted, files, written, validated, bad, label_map, compression
    )
    _write_bytes(FileSystems.join(output, REPORT_NAME), json.dumps(report, indent=2).encode())
    remove(tmpdir)
    return report


@carrying
def _plan(
    files: list[UnitFile],
    bad: int,
    cut: int,
    _dead: list[str],
    *,
    shards: int,
    output: str,
    max_bad_items: int,
) -> list[Any]:
    check_bad(bad, cut, max_bad_items, FileSystems.join(output, DEAD_LETTER_NAME))
    return plan_shards(files, shards, output)


def write_dead_letter(bad: list[BadItem], output: str) -> list[str]:
    """``bad_items.jsonl``, one JSON line per bad item in source order (none: no file)."""
    if not bad:
        return []
    with carried():
        lines = (
            json.dumps(b.to_json(), sort_keys=True) + "\n" for b in sorted(bad, key=lambda b: b.pos)
        )
        path = FileSystems.join(output, DEAD_LETTER_NAME)
        _write_bytes(path, "".join(lines).encode())
        return [path]


class WriteDataset(beam.PTransform):  # type: ignore[misc]
    """``examples | WriteDataset(output, label_map=...)`` -> a singleton PCollection of the
    report (a dict), once everything is written and read back.

    Args:
        output: the output folder (``<output>/<subset>.tfrecord-SSSSS-of-NNNNN``, and
            ``label_map.pbtxt``, ``report.json``, ``bad_items.jsonl`` beside them).
        label_map: the map the examples were encoded with (a LabelMap or the singleton
            PCollection ``ReadDataset.label_map``).
        to: the target format: only ``tfrecord`` is written by the workers.
        shards: shards per subset. compression: ``none``, ``gzip`` or ``zlib``.
        max_bad_items: fail the run when more items than this are bad.
    """

    def __init__(
        self,
        output: str,
        label_map: LabelMap | beam.PCollection,
        *,
        to: str = "tfrecord",
        shards: int = 1,
        compression: Compression = "none",
        max_bad_items: int = 0,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        super().__init__()
        if to != "tfrecord":
            raise ValueError(
                f"WriteDataset writes tfrecord, not {to!r}: convert its output with "
                f"'tfdrop convert <output>/<subset>.tfrecord-00000-of-N --to {to}'"
            )
        self.output = output.rstrip("/") or "/"
        self.label_map = label_map
        self.shards = max(1, shards)
        self.compression = compression
        self.max_bad_items = max_bad_items
        self.limits = limits
        self.tmpdir = FileSystems.join(self.output, f".tfdrop-tmp-{uuid.uuid4().hex}")
        """Unit files while the run lasts (removed at its end, and by convert_dataset when
        the run fails)."""

    def _side_map(self, pcoll: beam.PCollection) -> Any:
        if isinstance(self.label_map, LabelMap):
            return pcoll.pipeline | "PinnedMap" >> beam.Create([self.label_map])
        return self.label_map

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        tmpdir = self.tmpdir
        examples = pcoll | "Examples" >> beam.Filter(lambda e: isinstance(e, ExampleAt))
        bad = pcoll | "Bad" >> beam.Filter(lambda e: isinstance(e, BadItem))
        noted = pcoll | "Notes" >> beam.Filter(lambda e: isinstance(e, Noted))
        infos = pcoll | "Infos" >> beam.Filter(lambda e: isinstance(e, SourceInfo))
        label_map = beam.pvalue.AsSingleton(self._side_map(pcoll))
        dead = (
            bad
            | "AllBad" >> beam.combiners.ToList()
            | "DeadLetter" >> beam.FlatMap(write_dead_letter, output=self.output)
        )
        n_bad = bad | "CountBad" >> beam.combiners.Count.Globally()
        n_cut = (
            bad
            | "CutShort" >> beam.Filter(lambda b: b.cut_short)
            | "CountCut" >> beam.combiners.Count.Globally()
        )
        files = (
            examples
            | "UnitFiles" >> beam.ParDo(WriteUnitFiles(tmpdir))
            | "AllUnitFiles" >> beam.combiners.ToList()
        )
        written = (
            files
            | "PlanShards"
            >> beam.FlatMap(
                _plan,
                beam.pvalue.AsSingleton(n_bad),
                beam.pvalue.AsSingleton(n_cut),
                beam.pvalue.AsList(dead),
                shards=self.shards,
                output=self.output,
                max_bad_items=self.max_bad_items,
            )
            | "SpreadShards" >> beam.Reshuffle()
            | "WriteShards" >> beam.ParDo(WriteShard(self.compression, self.limits))
        )
        read = written | "ReadBack" >> beam.ParDo(ValidateShard(self.limits), label_map)
        return (
            read
            | "AllRead" >> beam.combiners.ToList()
            | "Finish"
            >> beam.Map(
                _report,
                beam.pvalue.AsList(written),
                beam.pvalue.AsList(infos),
                beam.pvalue.AsList(noted),
                beam.pvalue.AsSingleton(files),
                beam.pvalue.AsSingleton(n_bad),
                label_map,
                output=self.output,
                tmpdir=tmpdir,
                compression=self.compression,
            )
        )

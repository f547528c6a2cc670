"""The whole conversion as one Beam pipeline (what ``tfdrop beam`` runs), and its metrics."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult

from tfdrop.beam.encode import ToExamples
from tfdrop.beam.read import NAMESPACE, ReadDataset
from tfdrop.beam.sources import is_local
from tfdrop.beam.write import REPORT_NAME, WriteDataset
from tfdrop.codec.compression import Compression
from tfdrop.codec.model import LabelMap
from tfdrop.formats import ReadOptions
from tfdrop.formats.base import SourceFormat
from tfdrop.limits import DEFAULT_LIMITS, Limits

METRICS = ("items", "objects", "bad_items", "bytes")


@dataclass(frozen=True, slots=True)
class BeamOptions:
    """What ``tfdrop beam`` converts, and how (the flags of ``tfdrop convert`` that apply)."""

    source_format: SourceFormat = "auto"
    label_map: LabelMap | None = None
    masks: bool = False
    images: bool = True
    shards: int = 1
    compression: Compression = "none"
    max_bad_items: int = 0
    limits: Limits = DEFAULT_LIMITS


def build(
    pipeline: beam.Pipeline, sources: Sequence[str], output: str, opts: BeamOptions
) -> WriteDataset:
    """Add the conversion to ``pipeline``; its write step (whose output is the report)."""
    read_opts = ReadOptions(masks=opts.masks, images=opts.images, limits=opts.limits)
    read = ReadDataset(
        sources, opts.source_format, read=read_opts, scan_labels=opts.label_map is None
    )
    items = pipeline | "ReadDataset" >> read
    label_map = opts.label_map if opts.label_map is not None else read.label_map
    assert label_map is not None
    write = WriteDataset(
        output,
        label_map,
        shards=opts.shards,
        compression=opts.compression,
        max_bad_items=opts.max_bad_items,
        limits=opts.limits,
    )
    encode = ToExamples(label_map, masks=opts.masks, images=opts.images, read=read_opts)
    _ = items | "ToExamples" >> encode | "WriteDataset" >> write
    return write


def convert_dataset(
    sources: Sequence[str],
    output: str,
    opts: BeamOptions,
    pipeline_args: Sequence[str] = (),
) -> PipelineResult:
    """Run the conversion on the runner ``pipeline_args`` name (DirectRunner by default) and
    wait for it; the result's metrics are :func:`metric_totals`. The report is written as
    ``<output>/report.json``."""
    options = PipelineOptions(list(pipeline_args))
    pipeline = beam.Pipeline(options=options)
    write = build(pipeline, sources, output, opts)
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except BaseException:
        if FileSystems.exists(write.tmpdir):
            FileSystems.delete([write.tmpdir])
        raise
    return result


def output_in_use(output: str) -> bool:
    """Whether the output folder already holds files (a run never mixes with an old one)."""
    if is_local(output):
        path = Path(output.removeprefix("file://"))
        return path.exists() and (not path.is_dir() or any(path.iterdir()))
    return bool(FileSystems.match([FileSystems.join(output, "*")])[0].metadata_list)


def read_report(output: str) -> dict[str, Any]:
    """``<output>/report.json``, as the run wrote it."""
    path = FileSystems.join(output.rstrip("/") or "/", REPORT_NAME)
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        report: dict[str, Any] = json.loads(f.read())
    return report


def metric_totals(result: PipelineResult) -> dict[str, int]:
    """tfdrop's counters (items, objects, bad_items, bytes) over every worker."""
    totals = dict.fromkeys(METRICS, 0)
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    for counter in query["counters"]:
        name = counter.key.metric.name
        if name in totals:
            value = counter.committed if counter.committed is not None else counter.attempted
            totals[name] += int(value or 0)
    return totals

"""The whole conversion as one Beam pipeline (what ``tfdrop beam`` runs), and its metrics."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from tfdrop.beam.encode import ToExamples
from tfdrop.beam.failure import CarriedError, recover
from tfdrop.beam.options import pipeline_options
from tfdrop.beam.read import NAMESPACE, ReadDataset
from tfdrop.beam.sources import (
    OutputPathError,
    check_output,
    is_local,
    listing,
    local_path,
    remove,
)
from tfdrop.beam.watch import worker_watch
from tfdrop.beam.write import DEAD_LETTER_NAME, REPORT_NAME, WriteDataset
from tfdrop.codec.compression import Compression
from tfdrop.codec.model import LabelMap
from tfdrop.errors import TfdropError, WorkerDiedError
from tfdrop.formats import ReadOptions, WriteOptions
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
    write_opts = WriteOptions(masks=opts.masks, images=opts.images)
    read = ReadDataset(
        sources,
        opts.source_format,
        read=read_opts,
        scan_labels=opts.label_map is None,
        write=write_opts,
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
    ``<output>/report.json``.

    A failed run removes everything it wrote but the dead-letter output (the error says
    whether that was kept); a worker process that dies is a WorkerDiedError.

    Raises:
        TfdropError: the input is bad (the error raised in the pipeline, with its fields),
            an option is bad (PipelineOptionError), or the output cannot be used.
    """
    check_output(output)
    options = pipeline_options(pipeline_args)
    before = set(listing(output))
    pipeline = beam.Pipeline(options=options)
    write = build(pipeline, sources, output, opts)  # the sources are matched here
    if is_local(output):
        _make_folder(local_path(output))
    try:
        with worker_watch():
            result = pipeline.run()
            result.wait_until_finish()
    except (CarriedError, RuntimeError, WorkerDiedError) as exc:
        error = exc if isinstance(exc, WorkerDiedError) else recover(str(exc))
        if error is None:
            _clean(write, before)
            raise
        raise _cleaned(error, write, before) from None
    except BaseException:
        _clean(write, before)
        raise
    return result


def _make_folder(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(
            f"cannot create the output folder: {exc.strerror or exc}", file=path
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputPathError("the output folder is not writable", file=path)


def _clean(write: WriteDataset, before: set[str]) -> bool:
    """Remove what the run wrote but the dead letter; whether the dead letter was kept."""
    kept = False
    for path in listing(write.output):
        if path in before:
            continue
        if os.path.basename(path.rstrip("/")) == DEAD_LETTER_NAME:
            kept = True
            continue
        remove(path)
    if is_local(write.output) and not before and not kept:
        with contextlib.suppress(OSError):
            os.rmdir(local_path(write.output))
    return kept


def _cleaned(error: TfdropError, write: WriteDataset, before: set[str]) -> TfdropError:
    """``error``, once the output is cleaned, saying what was kept."""
    if _clean(write, before):  # else nothing was kept: the error reads as convert's
        dead = FileSystems.join(write.output, DEAD_LETTER_NAME)
        error.message += f" (the output keeps only the bad items: {dead})"
    return error


def output_in_use(output: str) -> bool:
    """Whether the output folder already holds files (a run never mixes with an old one)."""
    if is_local(output):
        path = local_path(output)
        return os.path.lexists(path) and (not os.path.isdir(path) or bool(os.listdir(path)))
    return bool(listing(output))


def read_report(output: str) -> dict[str, Any]:
    """``<output>/report.json``, as the run wrote it."""
    path = FileSystems.join(output.rstrip("/") or "/", REPORT_NAME)
    if is_local(path):
        with open(local_path(path), "rb") as f:
            data = f.read()
    else:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            data = f.read()
    report: dict[str, Any] = json.loads(data)
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

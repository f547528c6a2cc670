"""tfdrop on Apache Beam: one dataset bigger than a machine, converted by a cluster.

The only room that imports ``apache_beam`` (the optional extra ``tfdrop[beam]``). The
transforms compose the way Beam pipelines do::

    read = ReadDataset("gs://bucket/export-*.zip")
    with beam.Pipeline(options=options) as p:
        (p | read
           | ToExamples(label_map=read.label_map)
           | WriteDataset("gs://bucket/tfrecord", label_map=read.label_map, shards=64))

:func:`convert_dataset` builds exactly that pipeline (``tfdrop beam`` runs it).
"""

from __future__ import annotations

from tfdrop.beam.elements import BadItem, ExampleAt, ItemAt, Noted, SourceInfo
from tfdrop.beam.encode import ToExamples
from tfdrop.beam.options import PipelineOptionError
from tfdrop.beam.pipeline import (
    BeamOptions,
    convert_dataset,
    metric_totals,
    output_in_use,
    read_report,
)
from tfdrop.beam.read import ReadDataset
from tfdrop.beam.sources import OutputPathError, check_output
from tfdrop.beam.write import DEAD_LETTER_NAME, REPORT_NAME, TooManyBadItemsError, WriteDataset

__all__ = [
    "DEAD_LETTER_NAME",
    "REPORT_NAME",
    "BadItem",
    "BeamOptions",
    "ExampleAt",
    "ItemAt",
    "Noted",
    "OutputPathError",
    "PipelineOptionError",
    "ReadDataset",
    "SourceInfo",
    "ToExamples",
    "TooManyBadItemsError",
    "WriteDataset",
    "check_output",
    "convert_dataset",
    "metric_totals",
    "output_in_use",
    "read_report",
]

"""Pascal VOC: CVAT's "Pascal VOC 1.1" zip and the VOCdevkit/VOC2007 tree (SPEC.md).

The format row: detection (:func:`~tfdrop.formats.voc.layout.detect`), the streaming reader
(:mod:`~tfdrop.formats.voc.reader`) and writer (:mod:`~tfdrop.formats.voc.writer`).
"""

from __future__ import annotations

from tfdrop.formats.base import FormatSpec, deferred_reader, deferred_writer
from tfdrop.formats.voc.layout import detect

__all__ = ["SPEC"]

open_reader = deferred_reader("tfdrop.formats.voc.reader")
open_writer = deferred_writer("tfdrop.formats.voc.writer")

SPEC = FormatSpec(
    name="voc",
    description="Pascal VOC: Annotations/*.xml + JPEGImages/ + ImageSets/Main (CVAT VOC 1.1)",
    detect=detect,
    open_reader=open_reader,
    open_writer=open_writer,
)

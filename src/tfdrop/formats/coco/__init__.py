"""COCO 1.0 instances: ``annotations/instances_<subset>.json`` + ``images/<subset>/``.

The format as CVAT and Datumaro export it (also flat ``images/``, mmdetection's ``<subset>/``
image folders and Roboflow's ``<subset>/_annotations.coco.json``). Reading streams the JSON
(:mod:`.scan`), keeps a compact image index (:mod:`.index`) and groups annotations by image
through a spill file (:mod:`.spill`); RLE masks are decoded in pure Python (:mod:`.rle`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tfdrop.formats.base import FormatSpec, deferred_reader, deferred_writer
from tfdrop.formats.coco.index import find_annotation_files

__all__ = ["SPEC", "detect"]


def detect(names: Sequence[str]) -> int:
    """An instances file (or Roboflow's ``_annotations.coco.json``) marks a COCO archive."""
    return 100 if find_annotation_files(names) else 0


open_reader = deferred_reader("tfdrop.formats.coco.reader")
open_writer = deferred_writer("tfdrop.formats.coco.writer")

SPEC = FormatSpec(
    name="coco",
    description="COCO 1.0 instances: annotations/instances_<subset>.json + images/<subset>/",
    detect=detect,
    open_reader=open_reader,
    open_writer=open_writer,
)

"""CVAT for images 1.1 and CVAT for video 1.1 (SPEC.md "Conversions").

Read: ``annotations.xml`` (or Datumaro's ``<subset>.xml``) + ``images/``: boxes, polygons (as
their boxes, with masks on also PNG masks), CVAT RLE masks, tags, attributes; video tracks
expanded to per-frame boxes, ``outside`` frames skipped; polylines, points, ellipses, cuboids
and skeletons skipped and counted in the report. Write: CVAT for images 1.1 (``annotations.xml``
+ ``images/[<subset>/]<name>``), polygons and masks written back as such, so the archive
uploads to CVAT.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfdrop.formats.base import FormatSpec, deferred_reader, deferred_writer

__all__ = ["SPEC", "detect"]


def detect(names: Sequence[str]) -> int:
    """100 for CVAT's ``annotations.xml``; less for top-level ``*.xml`` beside ``images/``."""
    shallow = [n for n in names if n.count("/") <= 1]
    if any(n.rsplit("/", 1)[-1].lower() == "annotations.xml" for n in shallow):
        return 100
    xmls = [n for n in shallow if n.lower().endswith(".xml") and "/" not in n]
    if not xmls:
        return 0
    has_images = any(n.lower().startswith("images/") for n in names)
    return 60 if has_images else 20


open_reader = deferred_reader("tfdrop.formats.cvat.reader")
open_writer = deferred_writer("tfdrop.formats.cvat.writer")

SPEC = FormatSpec(
    name="cvat",
    description="CVAT for images/video 1.1: annotations.xml + images/",
    detect=detect,
    open_reader=open_reader,
    open_writer=open_writer,
)

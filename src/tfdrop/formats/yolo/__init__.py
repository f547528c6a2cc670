"""YOLO datasets: darknet / CVAT "YOLO 1.1" and Ultralytics layouts (SPEC.md "Conversions").

Read: ``obj.names`` + ``obj.data`` + ``obj_<subset>_data/`` (CVAT), ``data.yaml`` +
``images/<subset>/`` + ``labels/<subset>/`` (Ultralytics, incl. list-file and list-of-images
subsets), Datumaro's loose ``obj.names`` layouts and flat LabelImg / Roboflow "YOLO Darknet"
folders. Write: the darknet/CVAT layout. Modules:
``lines`` (label rows), ``config`` (side files), ``layout`` (which members make an item),
``reader``, ``writer``.
"""

from __future__ import annotations

from collections.abc import Sequence

from tfdrop.formats.base import FormatSpec, deferred_reader, deferred_writer
from tfdrop.formats.common.imageinfo import is_image_name
from tfdrop.formats.yolo.layout import FLAT_NAMES, has_flat_pairs


def detect(names: Sequence[str]) -> int:
    """Score a member list: 100 for ``obj.data`` (CVAT's marker; a missing ``obj.names`` is then
    the reader's clear error), 95 for ``data.yaml`` beside label files or images, 80 for a
    loose ``obj.names`` beside them, 60 for a flat ``classes.txt`` / ``_darknet.labels``
    beside image + ``.txt`` pairs; 0 without a YOLO config or label list."""
    bases = {n.rsplit("/", 1)[-1].lower() for n in names}
    content = any(n.lower().endswith(".txt") or is_image_name(n) for n in names)
    if "obj.data" in bases:
        return 100
    if bases & {"data.yaml", "data.yml", "dataset.yaml"} and content:
        return 95
    if "obj.names" in bases and content:
        return 80
    if bases & set(FLAT_NAMES) and has_flat_pairs(names):
        return 60
    return 0


open_reader = deferred_reader("tfdrop.formats.yolo.reader")
open_writer = deferred_writer("tfdrop.formats.yolo.writer")

SPEC = FormatSpec(
    name="yolo",
    description="YOLO: darknet/CVAT YOLO 1.1 (obj.names, obj.data, obj_<subset>_data/) "
    "or Ultralytics (data.yaml, images/, labels/); writes the darknet layout",
    detect=detect,
    open_reader=open_reader,
    open_writer=open_writer,
)

__all__ = ["SPEC", "detect", "open_reader", "open_writer"]

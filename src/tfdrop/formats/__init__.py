"""The format table and source-format detection.

Dispatch goes through the explicit table :data:`FORMATS` (STYLE.md habit 5), never plugin
discovery. Detection scores each format on the source's member names and names what it found
when nothing matches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from tfdrop.errors import DetectError
from tfdrop.formats import coco, cvat, images, tfrecord, voc, yolo
from tfdrop.formats.base import FormatSpec, Notes, Reader, ReadOptions, WriteOptions, Writer

FORMATS: Final[dict[str, FormatSpec]] = {
    "tfrecord": tfrecord.SPEC,
    "voc": voc.SPEC,
    "images": images.SPEC,
    "yolo": yolo.SPEC,
    "cvat": cvat.SPEC,
    "coco": coco.SPEC,
    # -- one row per format; add new rows above this line --
}

__all__ = [
    "FORMATS",
    "FormatSpec",
    "Notes",
    "ReadOptions",
    "Reader",
    "WriteOptions",
    "Writer",
    "detect_format",
]


def detect_format(names: Sequence[str], *, archive: str | None = None) -> str:
    """The best-scoring readable format for these member names, or :class:`DetectError`."""
    scores = {
        name: spec.detect(names) for name, spec in FORMATS.items() if spec.open_reader is not None
    }
    best = max(scores, key=lambda n: scores[n], default=None)
    if best is None or scores[best] <= 0:
        shown = ", ".join(sorted(names)[:8]) or "nothing"
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        raise DetectError(
            f"no known annotation format found (members: {shown}{more}); known formats: "
            + ", ".join(FORMATS),
            archive=archive,
        )
    return best

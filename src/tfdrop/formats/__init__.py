"""The format table and source-format detection.

Dispatch goes through the explicit table :data:`FORMATS` (STYLE.md habit 5), never plugin
discovery. Detection scores each format on the source's member names and names what it found
when nothing matches, and refuses a source in which two annotation formats match (one would be
read and the other dropped). It never settles for plain ``images`` while annotation-like files sit
beside them: nothing annotated is published as an empty archive.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Final

from tfdrop.archive.limits import shown
from tfdrop.errors import DetectError
from tfdrop.formats.base import (
    FormatName,
    FormatSpec,
    Notes,
    Reader,
    ReadOptions,
    SourceFormat,
    WriteOptions,
    Writer,
)

_MODULES: Final[dict[FormatName, str]] = {
    "tfrecord": "tfdrop.formats.tfrecord",
    "voc": "tfdrop.formats.voc",
    "images": "tfdrop.formats.images",
    "yolo": "tfdrop.formats.yolo",
    "cvat": "tfdrop.formats.cvat",
    "coco": "tfdrop.formats.coco",
    # -- one row per format (its module has SPEC); add new rows above this line --
}


class _FormatTable(Mapping[FormatName, FormatSpec]):
    """The explicit table, its modules imported on first use: a command that needs one format
    (``tfdrop validate`` of a small file) does not pay for importing all six."""

    def __init__(self) -> None:
        self._specs: dict[FormatName, FormatSpec] | None = None

    def _load(self) -> dict[FormatName, FormatSpec]:
        if self._specs is None:
            self._specs = {n: importlib.import_module(m).SPEC for n, m in _MODULES.items()}
        return self._specs

    def __getitem__(self, name: FormatName) -> FormatSpec:
        return self._load()[name]

    def __iter__(self) -> Iterator[FormatName]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)

    def __contains__(self, name: object) -> bool:
        return name in _MODULES


FORMATS: Final[Mapping[FormatName, FormatSpec]] = _FormatTable()

__all__ = [
    "FORMATS",
    "FormatName",
    "FormatSpec",
    "Notes",
    "ReadOptions",
    "Reader",
    "SourceFormat",
    "WriteOptions",
    "Writer",
    "detect_format",
]


def detect_format(names: Sequence[str], *, archive: str | None = None) -> FormatName:
    """The best-scoring readable format for these member names, or :class:`DetectError`."""
    scores = {
        name: spec.detect(names) for name, spec in FORMATS.items() if spec.open_reader is not None
    }
    best = max(scores, key=lambda n: scores[n], default=None)
    if best is None or scores[best] <= 0:
        # escaped here: the names are the drop's, and this message reaches terminals
        # (convert's error, tfdrop status's failed/ list)
        listed = ", ".join(shown(n) for n in sorted(names)[:8]) or "nothing"
        more = f" and {len(names) - 8} more" if len(names) > 8 else ""
        raise DetectError(
            f"no known annotation format found (members: {listed}{more}); known formats: "
            + ", ".join(FORMATS),
            archive=archive,
        )
    rivals = sorted(n for n, score in scores.items() if score > 0 and n != "images")
    if len(rivals) > 1:
        # two datasets in one zip (CVAT annotations.xml beside a COCO json): reading one would
        # drop the other without a word
        raise DetectError(
            f"the archive holds annotations of {len(rivals)} formats ({', '.join(rivals)}); "
            "reading one would leave the others out",
            archive=archive,
            hint=f"name the source format (--from {rivals[0]} / from = ...), or split the "
            "archive into one dataset per zip",
        )
    if best == "images":
        _refuse_unread_annotations(names, archive)
    return best


_COCO_TASKS: Final = {
    "person_keypoints_": "COCO Keypoints",
    "captions_": "COCO Captions",
    "panoptic_": "COCO Panoptic",
    "stuff_": "COCO Stuff",
    "image_info_": "COCO image info",
    "labels_": "COCO Labels",
}


def _refuse_unread_annotations(names: Sequence[str], archive: str | None) -> None:
    """:class:`DetectError` naming annotation-like members that no format reader claimed."""
    images = importlib.import_module(_MODULES["images"])  # loaded with the table by now
    found: list[str] = images.annotation_members(names)
    if not found:
        return
    for name in found:
        base = name.rsplit("/", 1)[-1].lower()
        task = next((t for p, t in _COCO_TASKS.items() if base.startswith(p)), None)
        if task is not None and base.endswith(".json"):
            raise DetectError(
                f"{name} is a {task} file; tfdrop reads COCO instances files "
                "(annotations/instances_<subset>.json) only, and will not publish these images "
                "without their annotations",
                archive=archive,
                member=name,
                hint="export as COCO 1.0 (instances), or convert with --from images to drop "
                "the annotations on purpose",
            )
    shown = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "")
    raise DetectError(
        f"images with annotation files in no format tfdrop knows ({shown}); "
        "refusing to publish the images without them; known formats: " + ", ".join(FORMATS),
        archive=archive,
        member=found[0],
        hint="name the source format (--from / from = ...), or --from images to convert the "
        "images alone on purpose",
    )

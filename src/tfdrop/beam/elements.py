"""The elements that flow between tfdrop's Beam transforms (small, picklable, frozen).

A position ``(source, unit, item)`` orders everything the way one ``tfdrop convert`` process
would meet it: sources sorted by path, a source's work units in its own order, a unit's items in
order. Every transform passes the elements it does not handle through unchanged, so
``ReadDataset | ToExamples | WriteDataset`` is one chain: items become examples, and the notes,
bad items and source descriptions ride along to the report and the dead-letter output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Item, LabelMap
from tfdrop.formats import Notes
from tfdrop.formats.base import FormatName

Position = tuple[int, int, int]
"""``(source index, unit index, item index)``: the order ``tfdrop convert`` reads in."""

WHOLE: Final = None
"""The part of a work unit that stands for a whole source whose reader cannot split."""


@dataclass(frozen=True, slots=True)
class SourceRef:
    """One input: a zip or a folder (``path``), or bare TFRecord files (``files``, with their
    folder as ``path`` and the ``.pbtxt`` label maps beside them in ``label_maps``);
    ``duplicates``: other spellings of inputs already named, read once (noted by source 0)."""

    index: int
    path: str
    files: tuple[str, ...] = ()
    label_maps: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkUnit:
    """A run of a source's items: reader units (``parts``) planned one item each where the
    reader splits (a bad item then costs only itself), else one :data:`WHOLE` part."""

    source: SourceRef
    fmt: FormatName
    index: int
    parts: tuple[object, ...]


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """What opening a source said: its format, label list, label map, notes and the
    skeletons it declares (label -> keypoint names and edges)."""

    index: int
    path: str
    fmt: FormatName
    labels: tuple[str, ...]
    label_map: LabelMap | None
    notes: Notes
    units: int
    skeletons: tuple[tuple[str, Skeleton], ...] = ()


@dataclass(frozen=True, slots=True)
class ItemAt:
    """One item read from a source (``archive``, its path), at its position."""

    pos: Position
    item: Item
    archive: str = ""


@dataclass(frozen=True, slots=True)
class ExampleAt:
    """One item as its serialized ``tf.train.Example``, label ids final."""

    pos: Position
    subset: str
    record: bytes
    labels: tuple[str, ...]  # one per object, for the report's counts
    ids: tuple[int, ...] = ()  # one per object, for the training hand-off
    masks: int = 0  # objects with a mask
    keypoints: tuple[int, ...] = ()  # keypoints per object


@dataclass(frozen=True, slots=True)
class Noted:
    """What reading or encoding a run of items noted (warnings, skipped, lossy)."""

    pos: Position
    notes: Notes


@dataclass(frozen=True, slots=True)
class BadItem:
    """An item that could not be converted: the error's fields (as in error.json).

    ``cut_short``: the error ended a part that may hold more items (a source read whole), so
    the items after it were not read: the run fails whatever ``--max-bad-items`` says.
    """

    pos: Position
    error: dict[str, Any]
    cut_short: bool

    def to_json(self) -> dict[str, Any]:
        """One line of the dead-letter output."""
        source, unit, item = self.pos
        out = dict(self.error)
        out["position"] = {"source": source, "unit": unit, "item": item}
        if self.cut_short:
            out["cut_short"] = True
        return out

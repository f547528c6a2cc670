"""CVAT for video 1.1 tracks, expanded to frames (SPEC.md: tracks become per-frame boxes,
frames where the track is ``outside`` are skipped).

CVAT's ``dump_as_cvat_interpolation`` lists each track's shape on every frame (interpolated
frames with ``keyframe="0"``), one track after the other: a frame's objects are only complete at
the end of the file. Each shape is turned into a row as soon as it ends and spilled to a
temporary on-disk SQLite table (:class:`Frames`), never held in memory; the frames are then read
back in order. Frame ``N`` is the image ``images/frame_00000N.<ext>`` (CVAT's frame names).
"""

from __future__ import annotations

import marshal
import re
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from tfdrop.errors import FormatError
from tfdrop.formats.cvat.shapes import LINE_ATTR, SHAPES
from tfdrop.limits import exceeded

FRAME_NAME: Final = re.compile(r"^frame_([0-9]{1,18})\.[A-Za-z0-9]+$")
MAX_ID_DIGITS: Final = 18
"""Digits of a frame or track id: anything up to 10^18 fits SQLite's and TFRecord's int64."""


def parse_id(raw: str | None, what: str, *, member: str, line: int | None) -> int | None:
    """A CVAT frame or track id: ASCII digits only (``"²"`` passes ``str.isdigit`` and fails
    ``int``), at most :data:`MAX_ID_DIGITS` of them; None when absent; else a FormatError."""
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_ID_DIGITS:
        raise FormatError(
            f"{what} {raw[:40]!r} is not a whole number of at most {MAX_ID_DIGITS} digits",
            member=member,
            line=line,
        )
    return int(raw)


Row = tuple[int, bytes | None]
"""(frame, shape as marshalled ``(tag, attributes, [(attribute name, text), ...])`` or None:
strings only, written and read back by this process; marshal is the fastest C codec for it)."""


@dataclass(slots=True)
class Frames:
    """Per-frame track shapes spilled to a temporary on-disk SQLite table (frame, seq, shape
    as a :data:`Row`'s bytes; NULL for an outside frame)."""

    db: sqlite3.Connection = field(default_factory=lambda: sqlite3.connect(""))
    seq: int = 0

    def __post_init__(self) -> None:
        self.db.execute("CREATE TABLE s (frame INTEGER, seq INTEGER, shape BLOB)")

    def add_many(self, rows: list[Row]) -> None:
        start = self.seq
        self.seq += len(rows)
        self.db.executemany(
            "INSERT INTO s VALUES (?, ?, ?)",
            ((frame, start + i, shape) for i, (frame, shape) in enumerate(rows, 1)),
        )

    def known(self) -> set[int]:
        return {int(row[0]) for row in self.db.execute("SELECT DISTINCT frame FROM s")}

    def frames(self, max_objects: int) -> Iterator[tuple[int, list[bytes]]]:
        """Each frame's shapes in order; a frame with more than ``max_objects`` is
        ``limit_exceeded`` before they are all held."""
        cur = self.db.execute("SELECT frame, shape FROM s ORDER BY frame, seq")
        current: int | None = None
        shapes: list[bytes] = []
        for frame, shape in cur:
            if frame != current:
                if current is not None:
                    yield current, shapes
                current, shapes = frame, []
            if shape is not None:
                shapes.append(shape)
                if len(shapes) > max_objects:
                    raise exceeded(
                        "max_objects_per_item", len(shapes), max_objects, item=f"frame {frame}"
                    )
        if current is not None:
            yield current, shapes


def track_row(track: ET.Element, shape: ET.Element, member: str) -> Row | None:
    """The row of one shape of a ``<track>`` (None for what is not a shape; a skeleton's
    nested tracks give their rows through :func:`nested_rows`)."""
    if shape.tag not in SHAPES:
        return None
    line = int(shape.get(LINE_ATTR) or 0) or None
    track_id = track.get("id") or ""
    parse_id(track_id, "track id", member=member, line=line)
    frame = parse_id(shape.get("frame"), f"<{shape.tag}> frame", member=member, line=line)
    if frame is None:
        raise FormatError(
            f"<{shape.tag}> in track {track_id} has no frame attribute", member=member, line=line
        )
    if shape.get("outside") == "1":
        return (frame, None)  # the frame exists, the object is not in it
    shape.set("label", track.get("label") or "")
    shape.set("track_id", track_id)
    group = track.get("group_id")
    if group and not shape.get("group_id"):
        shape.set("group_id", group)
    attrs = [(a.get("name") or "", a.text or "") for a in shape.findall("attribute")]
    return (frame, marshal.dumps((shape.tag, dict(shape.attrib), attrs)))


PARENT_ATTR: Final = "tfdrop-parent"
"""Set on a skeleton point's row: the id of the skeleton track it belongs to."""


def nested_rows(track: ET.Element, nested: ET.Element, member: str) -> list[Row]:
    """The rows of a skeleton track's nested ``<track label=point>``: one per frame of its
    ``<points>``, kept when ``outside`` (the keypoint is then not visible), tagged with the
    skeleton track's id so :func:`attach_points` puts each into its frame's skeleton."""
    out: list[Row] = []
    parent = track.get("id") or ""
    for el in nested.findall("points"):
        line = int(el.get(LINE_ATTR) or nested.get(LINE_ATTR) or 0) or None
        frame = parse_id(el.get("frame"), "<points> frame", member=member, line=line)
        if frame is None:
            raise FormatError(
                f"<points> in skeleton track {parent} has no frame attribute",
                member=member,
                line=line,
            )
        attrib = dict(el.attrib) | {"label": nested.get("label") or "", PARENT_ATTR: parent}
        attrs = [(a.get("name") or "", a.text or "") for a in el.findall("attribute")]
        out.append((frame, marshal.dumps(("points", attrib, attrs))))
    return out


def attach_points(elements: list[ET.Element]) -> tuple[list[ET.Element], int]:
    """A frame's shapes with each skeleton point moved into its skeleton (by track id), and
    the number of visible points whose skeleton has no element in this frame (the report's
    ``lossy.keypoint_without_skeleton``); a point whose skeleton is outside goes with it."""
    skeletons = {el.get("track_id"): el for el in elements if el.tag == "skeleton"}
    out = []
    lost = 0
    for el in elements:
        parent = el.get(PARENT_ATTR)
        if parent is None:
            out.append(el)
        elif parent in skeletons:
            skeletons[parent].append(el)
        elif el.get("outside") != "1":
            lost += 1
    return out, lost


def shape_element(data: bytes) -> ET.Element:
    """The shape element a row was made from (with its ``<attribute>`` children)."""
    # our own rows from our own private temp table, never input bytes
    tag, attrib, attrs = marshal.loads(data)  # noqa: S302
    el = ET.Element(tag, attrib)
    for name, text in attrs:
        ET.SubElement(el, "attribute", name=name).text = text
    return el


def frame_images(names: Sequence[str]) -> dict[int, str]:
    """Frame number -> member for image members named ``frame_NNNNNN.<ext>``."""
    out: dict[int, str] = {}
    for name in names:
        m = FRAME_NAME.match(name.rsplit("/", 1)[-1])
        if m:
            out.setdefault(int(m.group(1)), name)
    return out

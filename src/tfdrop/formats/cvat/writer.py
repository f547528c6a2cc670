"""Streaming writer of CVAT for images 1.1 archives that upload back to CVAT.

Layout as CVAT exports it: ``images/<name>`` (``images/<subset>/<name>`` for a subset other than
"default", as a project export) and ``annotations.xml`` with ``<version>1.1</version>``, a
``<meta>`` block (a task, or a project with ``<subsets>`` when there are several) declaring
every label and the attributes seen, then one ``<image id name width height [subset]>`` per
item holding ``<box>``, ``<polygon>`` (objects read from a polygon), ``<mask>`` (objects that
carry a PNG mask: CVAT RLE of the mask's pixel bounding box), ``<skeleton>`` (objects with
named keypoints: one ``<points label=name>`` each, ``outside="1"`` for visibility 0,
``occluded="1"`` for 1; the label declared as a skeleton with its points as sub-labels and its
edges in ``<svg>``), ``<points>`` (unnamed keypoints) and ``<tag>`` elements.

CVAT wants ``<meta>`` first, but labels and attributes are only all known at the end: image
elements are written to a temp file in the work folder while items stream, then meta and that
file are streamed together into the one ``annotations.xml`` member at :meth:`CvatWriter.close`.
Coordinates use :func:`tfdrop.formats.common.pixels.pixel_str`, so a box read back divides to the
same float32 (SPEC.md: boxes exact).
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Final

from PIL import Image

from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Annotation, Item, LabelMap, Point
from tfdrop.errors import FormatError
from tfdrop.formats.base import Notes, WriteOptions
from tfdrop.formats.common.imageinfo import probe
from tfdrop.formats.common.losses import note_item_losses
from tfdrop.formats.common.masks import decode_mask
from tfdrop.formats.common.pixels import pixel_str
from tfdrop.formats.common.xmltext import XML_UNSAFE, Cleaner, escape, quoteattr
from tfdrop.formats.cvat import rle

if TYPE_CHECKING:
    from tfdrop.archive import ZipSink

ANNOTATIONS: Final = "annotations.xml"
MAX_SELECT_VALUES: Final = 64
"""An attribute with more distinct values than this is declared as free text."""


def image_path(subset: str, name: str) -> str:
    """Where an item's image goes: ``images/<name>``, or ``images/<subset>/<name>``."""
    return f"images/{name}" if subset == "default" else f"images/{subset}/{name}"


def _checked(value: str, what: str) -> str:
    if XML_UNSAFE.search(value):
        raise FormatError(f"{what} {value!r} holds characters XML 1.0 cannot carry")
    return value


def _num(value: float) -> str:
    """A polygon coordinate: integers as integers, else the shortest text of the float."""
    return str(int(value)) if value == int(value) else repr(value)


@dataclass(slots=True)
class _Labels:
    """Attribute names and values seen per label, for the meta block."""

    attrs: dict[str, dict[str, dict[str, None]]] = field(default_factory=dict)
    tags: dict[str, None] = field(default_factory=dict)

    def see(self, label: str, name: str, value: str) -> None:
        values = self.attrs.setdefault(label, {}).setdefault(name, {})
        if len(values) <= MAX_SELECT_VALUES:
            values[value] = None


class CvatWriter:
    """Items -> ``images/...`` members now, ``annotations.xml`` at :meth:`close`."""

    def __init__(self, sink: ZipSink, options: WriteOptions, notes: Notes) -> None:
        self.sink = sink
        self.options = options
        self.notes = notes
        # lives until close(): the <image> elements wait here for the meta block
        self._body: IO[bytes] = tempfile.TemporaryFile(  # noqa: SIM115
            prefix=".tfdrop-cvat-", dir=options.workdir
        )
        self._count = 0
        self._subsets: dict[str, int] = {}
        self._labels = _Labels()
        self._text = Cleaner()
        self._skeletons: dict[str, Skeleton] = {}
        """Label -> the keypoint names its objects carried (when the label map has none)."""

    def _attr(self, value: str) -> str:
        return quoteattr(self._text(value))

    @staticmethod
    def _name(value: str, what: str) -> str:
        """A name as a quoted attribute value. Names are never altered (the read-back must
        match), so one XML 1.0 cannot carry is an error."""
        return quoteattr(_checked(value, what))

    def write(self, item: Item) -> None:
        subset = item.subset or "default"
        width, height = item.width, item.height
        if (width <= 0 or height <= 0) and item.image:
            info = probe(item.image, name=item.name)
            width, height = info.width, info.height
        if width <= 0 or height <= 0:
            raise FormatError("the item has no image size to write pixels with", item=item.name)
        if item.image and self.options.images:
            self.sink.write_member(image_path(subset, item.name), item.image, compress=False)
        self._subsets[subset] = self._subsets.get(subset, 0) + 1
        self._note_losses(item)
        head = f'  <image id="{self._count}" name={self._name(item.name, "image name")}'
        head += f' width="{width}" height="{height}"'
        if subset != "default":
            head += f" subset={self._name(subset, 'subset')}"
        lines = [head + ">"]
        for index, obj in enumerate(item.objects):
            try:
                lines += self._shape(obj, width, height)
            except FormatError as exc:
                raise exc.at(item=item.name, obj=index) from None
        for tag in item.tags:
            self._labels.tags[tag] = None
            lines.append(f'    <tag label={self._name(tag, "label")} source="file"></tag>')
        lines.append("  </image>\n")
        self._body.write("\n".join(lines).encode("utf-8"))
        self._count += 1

    def _note_losses(self, item: Item) -> None:
        """What CVAT XML has no room for (SPEC.md: listed in the report, never dropped quietly)."""
        note_item_losses(item, self.notes, keeps_keypoints=True)  # features, source_id, area
        for obj in item.objects:
            if obj.is_crowd:
                self.notes.lose("is_crowd")

    def _shape(self, obj: Annotation, width: int, height: int) -> list[str]:
        common = (
            f' label={self._name(obj.label, "label")} source="file" occluded="{int(obj.occluded)}"'
        )
        tail = f' z_order="{obj.z_order}"' + (f' group_id="{obj.group}"' if obj.group else "")
        if obj.track_id is not None:
            self.notes.lose("track_id")
        if obj.keypoints:
            open_tag, close, inner = self._keypoint_shape(obj, common, tail, width, height)
        elif obj.polygon and len(obj.polygon) >= 6:
            points = ";".join(
                f"{_num(obj.polygon[i])},{_num(obj.polygon[i + 1])}"
                for i in range(0, len(obj.polygon) - 1, 2)
            )
            open_tag = f'    <polygon{common} points="{points}"{tail}>'
            close = "    </polygon>"
        elif obj.mask is not None and (mask := self._mask(obj.mask, width, height)) is not None:
            open_tag = f"    <mask{common} {mask}{tail}>"
            close = "    </mask>"
        else:
            if obj.mask is not None:
                self.notes.lose("empty_mask")
            # a mask read without --masks is counted once for every target (units.prepare)
            b = obj.box
            coords = (
                f' xtl="{pixel_str(b.xmin, width)}" ytl="{pixel_str(b.ymin, height)}"'
                f' xbr="{pixel_str(b.xmax, width)}" ybr="{pixel_str(b.ymax, height)}"'
            )
            open_tag = f"    <box{common}{coords}{tail}>"
            close = "    </box>"
        if not obj.keypoints:
            inner = []
        attrs = list(obj.attributes)
        if obj.difficult:
            attrs.append(("difficult", "true"))
        if obj.truncated:
            attrs.append(("truncated", "true"))
        if obj.view:
            attrs.append(("pose", obj.view))
        lines = [open_tag]
        for name, value in attrs:
            self._labels.see(obj.label, name, value)
            lines.append(
                f"      <attribute name={self._attr(name)}>{escape(self._text(value))}</attribute>"
            )
        self._labels.attrs.setdefault(obj.label, {})
        lines += inner
        lines.append(close)
        return lines

    def _keypoint_shape(
        self, obj: Annotation, common: str, tail: str, width: int, height: int
    ) -> tuple[str, str, list[str]]:
        """A ``<skeleton>`` with one ``<points>`` per named keypoint, or one ``<points>``."""
        pts = obj.keypoints

        def xy(p: Point) -> str:
            return f"{pixel_str(p.x, width)},{pixel_str(p.y, height)}"

        if any(p.name for p in pts):
            names = [p.name for p in pts]
            twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
            if twice is not None:
                raise FormatError(
                    f"label {obj.label!r} names its keypoint {twice!r} twice: a CVAT skeleton's "
                    "points are sub-labels with distinct names",
                    hint="rename the keypoints in the source (or convert to coco or tfrecord)",
                )
            known = self._skeletons.get(obj.label)
            if known is None or len(known.names) < len(pts):
                self._skeletons[obj.label] = Skeleton(tuple(p.name for p in pts))
            inner = [
                f'      <points label={self._name(p.name, "keypoint name")} source="file"'
                f' outside="{int(p.visibility == 0)}" occluded="{int(p.visibility == 1)}"'
                f' points="{xy(p)}" z_order="0">\n      </points>'
                for p in pts
            ]
            return f"    <skeleton{common}{tail}>", "    </skeleton>", inner
        if len({p.visibility for p in pts}) > 1:
            self.notes.lose("keypoint_visibility")  # one <points> has one visibility
        points = ";".join(xy(p) for p in pts)
        v = pts[0].visibility
        occluded = common.replace(f'occluded="{int(obj.occluded)}"', f'occluded="{int(v == 1)}"')
        outside = ' outside="1"' if v == 0 else ""
        return f'    <points{occluded}{outside} points="{points}"{tail}>', "    </points>", []

    def _mask(self, png: bytes, width: int, height: int) -> str | None:
        """``rle left top width height`` attributes of a full-image mask (None: empty)."""
        mw, mh, bits = decode_mask(png)
        if (mw, mh) != (width, height):
            raise FormatError(f"instance mask is {mw}x{mh} but the image is {width}x{height}")
        bbox = Image.frombytes("L", (mw, mh), bits).getbbox()
        if bbox is None:
            return None
        left, top, right, bottom = bbox
        counts = rle.encode(rle.crop(bits, mw, left, top, right, bottom))
        return (
            f'rle="{rle.format_counts(counts)}" left="{left}" top="{top}"'
            f' width="{right - left}" height="{bottom - top}"'
        )

    # -- close: meta + body ----------------------------------------------------------------

    def _label_xml(self, name: str, sk: Skeleton | None = None) -> list[str]:
        out = ["      <label>", f"        <name>{escape(_checked(name, 'label'))}</name>"]
        if sk is not None:
            out.append("        <type>skeleton</type>")
            out.append(f"        <svg>{escape(_svg(sk))}</svg>")
        out.append("        <attributes>")
        for attr, values in self._labels.attrs.get(name, {}).items():
            seen = list(values)
            if set(seen) <= {"true", "false"}:
                kind, default, allowed = "checkbox", "false", ["false", "true"]
            elif len(seen) > MAX_SELECT_VALUES:
                kind, default, allowed = "text", seen[0], [seen[0]]
            else:
                kind, default, allowed = "select", seen[0], seen
            out += [
                "          <attribute>",
                f"            <name>{escape(self._text(attr))}</name>",
                "            <mutable>False</mutable>",
                f"            <input_type>{kind}</input_type>",
                f"            <default_value>{escape(self._text(default))}</default_value>",
                f"            <values>{escape(self._text(chr(10).join(allowed)))}</values>",
                "          </attribute>",
            ]
        out += ["        </attributes>", "      </label>"]
        return out

    def _meta(self, label_map: LabelMap) -> str:
        names = [*label_map.names]
        names += [t for t in self._labels.tags if t not in label_map]
        names += [n for n in self._labels.attrs if n not in names]
        subsets = list(self._subsets) or ["default"]
        project = len(subsets) > 1
        kind = "project" if project else "task"
        lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>"]
        lines += ["  <version>1.1</version>", "  <meta>", f"    <{kind}>"]
        lines += ["      <name>tfdrop</name>", f"      <size>{self._count}</size>"]
        lines.append("      <mode>annotation</mode>")
        if project:
            lines.append(f"      <subsets>{escape(self._text(chr(10).join(subsets)))}</subsets>")
        elif subsets[0] != "default":
            lines.append(f"      <subset>{escape(self._text(subsets[0]))}</subset>")
        lines.append("      <labels>")
        skeletons = self._label_skeletons(label_map)
        for name in names:
            sk = skeletons.get(name)
            lines += ["  " + line for line in self._label_xml(name, sk)]
            for point in sk.names if sk is not None else ():
                lines += [
                    "        <label>",
                    f"          <name>{escape(_checked(point, 'keypoint name'))}</name>",
                    "          <type>points</type>",
                    "          <attributes>",
                    "          </attributes>",
                    f"          <parent>{escape(name)}</parent>",
                    "        </label>",
                ]
        lines += ["      </labels>", f"    </{kind}>"]
        # the members' time (SOURCE_DATE_EPOCH or the input's mtime), not the clock's: the
        # same input converts to the same bytes (found by an outside attack)
        dumped = datetime(*self.sink.date_time).astimezone().isoformat(sep=" ")
        lines.append(f"    <dumped>{dumped}</dumped>")
        lines += ["  </meta>", ""]
        return "\n".join(lines)

    def _label_skeletons(self, label_map: LabelMap) -> dict[str, Skeleton]:
        """Label -> its skeleton: the label map's keypoints (with edges), else the names its
        objects carried."""
        out = dict(self._skeletons)
        for it in label_map.items:
            sk = Skeleton.of_item(it)
            name = label_map.label_of(it)
            if sk is not None and any(sk.names):
                out[name] = sk
        return out

    def abort(self) -> None:
        self._body.close()

    def close(self, label_map: LabelMap) -> None:
        try:
            with self.sink.open_member(ANNOTATIONS, compress=True) as out:
                out.write(self._meta(label_map).encode("utf-8"))
                self._body.seek(0)
                shutil.copyfileobj(self._body, out, 1 << 20)
                out.write(b"</annotations>\n")
        finally:
            self.abort()
        self._text.warn(self.notes)


def _attr(name: str) -> str:
    """A double-quoted svg attribute value (the svg reader html-unescapes it)."""
    return escape(name).replace('"', "&quot;")


def _svg(sk: Skeleton) -> str:
    """CVAT's drawing of a skeleton: its points on a circle, joined by its edges."""
    nodes = []
    at: list[tuple[float, float]] = []
    n = len(sk.names)
    for i, name in enumerate(sk.names):
        angle = 2 * math.pi * i / max(n, 1)
        x, y = 50 + 40 * math.cos(angle), 50 + 40 * math.sin(angle)
        at.append((x, y))
        nodes.append(
            f'<circle r="1.5" stroke="black" fill="#b3b3b3" cx="{x:.3f}" cy="{y:.3f}" '
            f'stroke-width="0.1" data-type="element node" data-element-id="{i + 1}" '
            f'data-node-id="{i + 1}" data-label-name="{_attr(name)}"></circle>'
        )
    lines = [
        f'<line x1="{at[a][0]:.3f}" y1="{at[a][1]:.3f}" x2="{at[b][0]:.3f}" y2="{at[b][1]:.3f}" '
        f'stroke="black" data-type="edge" data-node-from="{a + 1}" stroke-width="0.5" '
        f'data-node-to="{b + 1}"></line>'
        for a, b in sk.edges
        if a < n and b < n
    ]
    return "".join(lines + nodes)


def open_writer(sink: ZipSink, options: WriteOptions, notes: Notes) -> CvatWriter:
    return CvatWriter(sink, options, notes)

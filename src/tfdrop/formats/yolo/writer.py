"""The YOLO writer: the darknet / CVAT "YOLO 1.1" layout (``--to yolo``).

Writes ``obj_<subset>_data/<name>`` (the image bytes, unchanged) with ``<stem>.txt`` beside it,
``<subset>.txt`` listing ``data/obj_<subset>_data/<name>``, ``obj.names`` (the final label map
in its items order) and ``obj.data`` (``classes``, one ``<subset> = data/<subset>.txt`` line
per subset, ``names``, ``backup``), as CVAT and Datumaro's YOLO exporter do. Subset names are
kept as they are ("default" stays "default"; Datumaro renames it "train"), so reading back
gives the same subsets.

A class index is the label's position in the final label map, which is only known at
:meth:`YoloWriter.close` (a new label may still appear in the last item), so each item's rows
are spilled to a temp file as (label id, box) and the label files are written at the end.
Images written without their bytes get a Datumaro ``images.meta`` line (``<id> <h> <w>``) so
the archive still reads back (YOLO label files carry no image size).
"""

from __future__ import annotations

import json
import shlex
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING

from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.errors import FormatError
from tfdrop.formats.base import Notes, WriteOptions
from tfdrop.formats.common.imageinfo import is_image_name
from tfdrop.formats.common.losses import note_item_losses
from tfdrop.formats.yolo.config import RESERVED_KEYS
from tfdrop.formats.yolo.layout import stem_txt
from tfdrop.formats.yolo.lines import format_row

if TYPE_CHECKING:
    from tfdrop.archive import ZipSink

_EXT = {"jpeg": ".jpg", "png": ".png", "bmp": ".bmp", "gif": ".gif", "webp": ".webp"}


def _check_subset(subset: str) -> None:
    if not subset or subset in RESERVED_KEYS or not all(c.isalnum() or c in "-_." for c in subset):
        raise FormatError(
            f"subset name {subset!r} cannot be a key of obj.data "
            "(letters, digits, '-', '_', '.'; not classes/names/backup)",
        )


def _check_name(name: str) -> None:
    if not name or name != name.strip() or any(c in name for c in "\r\n"):
        raise FormatError(
            f"label {name!r} cannot be written to obj.names (one name per line, "
            "no leading or trailing spaces)"
        )


class YoloWriter:
    """Streams images into the zip and spills label rows until the label map is final."""

    def __init__(self, sink: ZipSink, options: WriteOptions, notes: Notes) -> None:
        self.sink = sink
        self.options = options
        self.notes = notes
        self._tmp = tempfile.TemporaryDirectory(prefix=".tfdrop-yolo-", dir=options.workdir)
        self._rows: IO[str] = (Path(self._tmp.name) / "rows.jsonl").open("w+", encoding="utf-8")
        self._lists: dict[str, IO[str]] = {}
        self._meta: IO[str] | None = None
        self._txt_names: set[str] = set()

    def _list(self, subset: str) -> IO[str]:
        out = self._lists.get(subset)
        if out is None:
            _check_subset(subset)
            path = Path(self._tmp.name) / f"list-{len(self._lists)}.txt"
            out = path.open("w+", encoding="utf-8")
            self._lists[subset] = out
        return out

    def _name(self, item: Item) -> str:
        name = item.name.replace("\\", "/").strip("/")
        if not name or any(c in name for c in "\r\n"):
            raise FormatError(
                "item file name is empty or has a line break (the subset list is one path "
                "per line)",
                item=item.name,
            )
        if not is_image_name(name):
            new = name + _EXT.get(item.image_format, ".jpg")
            self.notes.warn(
                "image_renamed",
                f"{name!r} has no image extension; written as {new!r}",
                item=item.name,
            )
            name = new
        return name

    def write(self, item: Item) -> None:
        subset = item.subset or "default"
        listing = self._list(subset)
        name = self._name(item)
        image_member = f"obj_{subset}_data/{name}"
        txt_member = stem_txt(image_member)
        if txt_member.casefold() in self._txt_names:
            raise FormatError(
                f"two images of subset {subset!r} share the label file {txt_member} "
                "(same name, different extension or case)",
                item=item.name,
            )
        self._txt_names.add(txt_member.casefold())
        if item.image is not None and self.options.images:
            self.sink.write_member(image_member, item.image, compress=False)
        else:
            if item.width <= 0 or item.height <= 0:
                raise FormatError("no image bytes and no image size to write", item=item.name)
            if self._meta is None:
                self._meta = (Path(self._tmp.name) / "images.meta").open("w+", encoding="utf-8")
            # Datumaro reads this file with shlex: quote names with spaces or quotes
            self._meta.write(f"{shlex.quote(stem_txt(name)[:-4])} {item.height} {item.width}\n")
        listing.write(f"data/{image_member}\n")
        rows = []
        note_item_losses(item, self.notes)  # features, source_id, area
        for obj in item.objects:
            self._note_losses(obj)
            b = self._in_image(obj.box, item.name)
            rows.append([obj.label_id, obj.label, b.xmin, b.ymin, b.xmax, b.ymax])
        self._rows.write(json.dumps([txt_member, item.name, rows]) + "\n")

    def _in_image(self, b: Box, item_name: str) -> Box:
        """YOLO readers reject w/h outside [0, 1]: clip a box that sticks out, and say so."""
        if 0.0 <= b.xmin <= b.xmax <= 1.0 and 0.0 <= b.ymin <= b.ymax <= 1.0:
            return b
        x0, x1 = sorted(min(max(v, 0.0), 1.0) for v in (b.xmin, b.xmax))
        y0, y1 = sorted(min(max(v, 0.0), 1.0) for v in (b.ymin, b.ymax))
        self.notes.warn(
            "box_clipped", f"box {b} is not inside the image; written clipped", item=item_name
        )
        return Box(x0, y0, x1, y1)

    def _note_losses(self, obj: Annotation) -> None:
        if obj.mask is not None:
            self.notes.lose("mask")
        if obj.polygon:
            self.notes.lose("polygon")
        for flag, what in (
            (obj.difficult, "difficult"),
            (obj.truncated, "truncated"),
            (obj.occluded, "occluded"),
            (obj.is_crowd, "is_crowd"),
            (bool(obj.view), "view"),
        ):
            if flag:
                self.notes.lose(what)
        for key, _ in obj.attributes:
            self.notes.lose(f"attribute:{key}")

    def close(self, label_map: LabelMap) -> None:
        try:
            self._finish(label_map)
        finally:
            self.abort()

    def abort(self) -> None:
        for f in (self._rows, self._meta, *self._lists.values()):
            if f is not None:
                f.close()
        self._tmp.cleanup()

    def _finish(self, label_map: LabelMap) -> None:
        names = label_map.names
        for n in names:
            _check_name(n)
        position = {it.id: i for i, it in enumerate(label_map.items)}
        ids = [it.id for it in label_map.items]
        if ids != list(range(1, len(ids) + 1)):
            self.notes.warn(
                "label_ids_renumbered",
                f"label ids {ids[:10]}{'...' if len(ids) > 10 else ''} are not 1..{len(ids)}; "
                "YOLO class indices are positions, so reading back gives ids 1..N",
            )
            self.notes.lose("label_id", len(ids))
        self._rows.seek(0)
        for raw in self._rows:
            txt_member, item_name, rows = json.loads(raw)
            lines = []
            for label_id, label, *box in rows:
                index = position.get(label_id)
                if index is None or names[index] != label:
                    found = label_map.id_of(label)
                    index = None if found is None else position.get(found)
                if index is None:
                    raise FormatError(f"label {label!r} is not in the label map", item=item_name)
                lines.append(format_row(index, Box(*box)) + "\n")
            self.sink.write_member(txt_member, "".join(lines).encode(), compress=True)
        self.sink.write_member(
            "obj.names", "".join(n + "\n" for n in names).encode(), compress=True
        )
        data = [f"classes = {len(names)}\n"]
        for subset, listing in self._lists.items():
            listing.flush()
            self.sink.add_file(f"{subset}.txt", listing.name, compress=True)
            data.append(f"{subset} = data/{subset}.txt\n")
        data += ["names = data/obj.names\n", "backup = backup/\n"]
        self.sink.write_member("obj.data", "".join(data).encode(), compress=True)
        if self._meta is not None:
            self._meta.flush()
            self.sink.add_file("images.meta", self._meta.name, compress=True)


def open_writer(sink: ZipSink, options: WriteOptions, notes: Notes) -> YoloWriter:
    return YoloWriter(sink, options, notes)

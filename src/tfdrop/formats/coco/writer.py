"""COCO 1.0 instances writer, streaming (SPEC.md "Conversions").

Writes ``annotations/instances_<subset>.json`` and ``images/<subset>/<name>`` (Datumaro's and
CVAT's layout). Images go into the zip as items arrive (stored, bytes unchanged); each subset's
``images`` and ``annotations`` entries go as JSON text to two temp files in the work folder,
and :meth:`CocoWriter.close` assembles each instances file from them, streaming, once the
final label map (the ``categories``) is known.

Values, chosen like Datumaro's exporter so Datumaro and pycocotools read the result:

- ``bbox`` ``[x, y, w, h]`` in pixels, written so that ``(x + w) / W`` reads back as the same
  float32 the TFRecord held (:mod:`tfdrop.formats.common.pixels`: whole numbers as integers, else
  the shortest decimal that round-trips);
- ``segmentation``: the polygon when the object has one, uncompressed RLE ``counts`` from the
  mask when it has a mask (always for crowd objects with a mask), else ``[]`` for a box;
- ``area``: the object's own area when it has one, else the polygon's, the mask's, or
  ``w * h``;
- image ``id``: the item's ``source_id`` when it is a positive integer not used yet in the
  subset (TF's coco script writes the COCO id there), else the next free id;
- occluded, difficult, truncated and view go into ``attributes`` (Datumaro's place for them),
  as do the item model's other attributes; the reader maps them back;
- keypoints: ``keypoints`` ``[x, y, v] * K`` in pixels (written to read back as the same
  float32) and ``num_keypoints`` (the labelled ones); a category's ``keypoints`` names and
  1-based ``skeleton`` from the label map (else the names its objects carried).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Annotation, Item, LabelMap, LabelMapItem, Shape
from tfdrop.errors import FormatError
from tfdrop.formats.base import Notes, WriteOptions
from tfdrop.formats.coco.rle import counts_area, counts_from_bits
from tfdrop.formats.common.losses import note_item_losses
from tfdrop.formats.common.masks import decode_mask
from tfdrop.formats.common.pixels import f32, pixel_str

if TYPE_CHECKING:
    from tfdrop.archive import ZipSink

_INFO = {"contributor": "", "date_created": "", "description": "", "url": "", "version": "",
         "year": ""}  # fmt: skip
_LICENSES = [{"name": "", "id": 0, "url": ""}]


def extent_str(start: str, norm_end: float, size: int) -> str:
    """Text ``t`` for a width/height so that ``f32((float(start) + float(t)) / size)`` is
    ``f32(norm_end)``: the shortest that round-trips, as :func:`pixel_str` does."""
    target = f32(norm_end)
    x = float(start)
    length = norm_end * size - x
    whole = round(length)
    if f32((x + whole) / size) == target:
        return str(int(whole))
    for places in range(1, 10):
        text = f"{length:.{places}f}"
        if f32((x + float(text)) / size) == target:
            return text.rstrip("0").rstrip(".")
    return repr(length)


def num_str(value: float) -> str:
    """A float32 value as the shortest text that reads back as the same float32."""
    if value == int(value) and abs(value) < 1 << 53:
        return str(int(value))
    target = f32(value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if f32(float(text)) == target:
            return text
    return repr(value)


def _exact(value: float) -> str:
    """A pixel coordinate as JSON: whole numbers as integers, else Python's shortest repr."""
    return str(int(value)) if value == int(value) else repr(float(value))


def polygon_area(points: tuple[float, ...]) -> float:
    """Shoelace area of a polygon ``(x0, y0, x1, y1, ...)``."""
    xs, ys = points[0::2], points[1::2]
    n = len(xs)
    return abs(sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))) / 2


@dataclass(slots=True)
class _Subset:
    images: IO[str]
    annotations: IO[str]
    n_images: int = 0
    n_annotations: int = 0
    used_ids: set[int] = field(default_factory=set)
    next_id: int = 1


class CocoWriter:
    """Streams items into a COCO instances archive."""

    def __init__(self, sink: ZipSink, options: WriteOptions, notes: Notes) -> None:
        self.sink = sink
        self.options = options
        self.notes = notes
        self._tmp = tempfile.TemporaryDirectory(prefix=".tfdrop-coco-", dir=options.workdir)
        self._subsets: dict[str, _Subset] = {}
        self._names: dict[int, tuple[str, ...]] = {}
        """Label id -> the keypoint names its objects carried (the longest seen)."""

    def _subset(self, name: str) -> _Subset:
        sub = self._subsets.get(name)
        if sub is None:
            base = Path(self._tmp.name) / str(len(self._subsets))
            sub = _Subset(
                images=open(f"{base}.images", "w", encoding="utf-8"),  # noqa: SIM115
                annotations=open(f"{base}.annotations", "w", encoding="utf-8"),  # noqa: SIM115
            )
            self._subsets[name] = sub
        return sub

    def _image_id(self, sub: _Subset, item: Item) -> int:
        sid = item.source_id
        if sid.isascii() and sid.isdigit() and int(sid) > 0 and int(sid) not in sub.used_ids:
            image_id = int(sid)
        else:
            while sub.next_id in sub.used_ids:
                sub.next_id += 1
            image_id = sub.next_id
            if sid and sid != item.name:
                self.notes.lose("source_id")  # the reader gives the image id back instead
        sub.used_ids.add(image_id)
        return image_id

    def write(self, item: Item) -> None:
        note_item_losses(
            item, self.notes, keeps_area=True, keeps_source_id=True, keeps_keypoints=True
        )
        subset = item.subset or "default"
        sub = self._subset(subset)
        if item.width <= 0 or item.height <= 0:
            raise FormatError("COCO needs the image width and height", item=item.name)
        if item.image is not None and self.options.images:
            self.sink.write_member(f"images/{subset}/{item.name}", item.image, compress=False)
        image_id = self._image_id(sub, item)
        entry = {
            "id": image_id,
            "width": item.width,
            "height": item.height,
            "file_name": item.name,
            "license": 0,
            "flickr_url": "",
            "coco_url": "",
            "date_captured": 0,
        }
        sub.images.write(("," if sub.n_images else "") + json.dumps(entry))
        sub.n_images += 1
        for i, obj in enumerate(item.objects):
            sub.n_annotations += 1
            text = self._annotation(obj, item, image_id, sub.n_annotations, i)
            sub.annotations.write(("," if sub.n_annotations > 1 else "") + text)

    def _annotation(self, obj: Annotation, item: Item, image_id: int, ann_id: int, i: int) -> str:
        w, h = item.width, item.height
        b = obj.box
        x, y = pixel_str(b.xmin, w), pixel_str(b.ymin, h)
        bw, bh = extent_str(x, b.xmax, w), extent_str(y, b.ymax, h)
        seg, area = self._segmentation(obj, item, i)
        if obj.area is not None:
            area = obj.area
        elif area is None:
            area = float(bw) * float(bh)
        attrs: dict[str, Any] = {"occluded": obj.occluded}
        if obj.difficult:
            attrs["difficult"] = True
        if obj.truncated:
            attrs["truncated"] = True
        if obj.view:
            attrs["view"] = obj.view
        attrs.update(obj.attributes)
        if obj.track_id is not None:
            self.notes.lose("track_id")
        if obj.shape in (Shape.POLYLINE, Shape.POINTS):
            self.notes.lose(f"shape:{obj.shape.value}")  # COCO instances keep its box only
        return (
            f'{{"id": {ann_id}, "image_id": {image_id}, "category_id": {obj.label_id}, '
            f'"segmentation": {seg}, "area": {num_str(area)}, '
            f'"bbox": [{x}, {y}, {bw}, {bh}], "iscrowd": {int(obj.is_crowd)}, '
            f'"attributes": {json.dumps(attrs)}{self._keypoints(obj, w, h)}}}'
        )

    def _keypoints(self, obj: Annotation, w: int, h: int) -> str:
        """``, "keypoints": [...], "num_keypoints": n`` for an object with keypoints."""
        pts = obj.keypoints
        if not pts:
            return ""
        if len(pts) > len(self._names.get(obj.label_id, ())):
            self._names[obj.label_id] = tuple(p.name for p in pts)
        values = ", ".join(f"{pixel_str(p.x, w)}, {pixel_str(p.y, h)}, {p.visibility}" for p in pts)
        labelled = sum(1 for p in pts if p.visibility > 0)
        return f', "keypoints": [{values}], "num_keypoints": {labelled}'

    def _category(self, label_map: LabelMap, it: LabelMapItem) -> dict[str, Any]:
        out: dict[str, Any] = {"id": it.id, "name": label_map.label_of(it), "supercategory": ""}
        sk = Skeleton.of_item(it)
        names = sk.names if sk is not None else self._names.get(it.id, ())
        if names:
            out["keypoints"] = list(names) if any(names) else []
            edges = sk.edges if sk is not None else ()
            out["skeleton"] = [[a + 1, b + 1] for a, b in edges]
        return out

    def _segmentation(self, obj: Annotation, item: Item, i: int) -> tuple[str, float | None]:
        """``segmentation`` JSON text and the shape's area (None for a box)."""
        use_mask = obj.mask is not None and (obj.is_crowd or not obj.polygon)
        if obj.polygon and not use_mask:
            points = ", ".join(_exact(v) for v in obj.polygon)
            return f"[[{points}]]", polygon_area(obj.polygon)
        if obj.mask is not None:
            width, height, bits = decode_mask(obj.mask)
            if (width, height) != (item.width, item.height):
                raise FormatError(
                    f"instance mask is {width}x{height}, the image {item.width}x{item.height}",
                    item=item.name,
                    obj=i,
                )
            counts = counts_from_bits(bits, width, height)
            return (
                f'{{"counts": [{", ".join(map(str, counts))}], "size": [{height}, {width}]}}',
                float(counts_area(counts)),
            )
        return "[]", None

    def close(self, label_map: LabelMap) -> None:
        try:
            if not self._subsets:
                self._subset("default")  # an empty dataset still reads back as one
            categories = [
                self._category(label_map, it)
                for it in sorted(label_map.items, key=lambda it: it.id)
            ]
            head = (
                f'{{"licenses": {json.dumps(_LICENSES)}, "info": {json.dumps(_INFO)}, '
                f'"categories": {json.dumps(categories)}, "images": ['
            )
            for name, sub in self._subsets.items():
                sub.images.close()
                sub.annotations.close()
                member = f"annotations/instances_{name}.json"
                with self.sink.open_member(member, compress=True) as out:
                    out.write(head.encode())
                    with open(sub.images.name, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                    out.write(b'], "annotations": [')
                    with open(sub.annotations.name, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 20)
                    out.write(b"]}")
        finally:
            self.abort()

    def abort(self) -> None:
        for sub in self._subsets.values():
            sub.images.close()
            sub.annotations.close()
        self._tmp.cleanup()


def open_writer(sink: ZipSink, options: WriteOptions, notes: Notes) -> CocoWriter:
    return CocoWriter(sink, options, notes)

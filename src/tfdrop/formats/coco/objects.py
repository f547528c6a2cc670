"""COCO annotations -> :class:`~tfdrop.codec.model.Annotation` (the reader's per-object work).

Checks an annotation when it is spilled (:func:`refuse` says precisely what is wrong with a
bad one) and builds the object from its spilled record when its image is yielded: ``bbox``
``[x, y, w, h]`` -> ``Box.from_pixels(x, y, x + w, y + h, W, H)`` as TF's
``create_coco_tf_record.py`` does (the shape's bounds only when there is no ``bbox``), a box
reaching outside its image clipped with a ``box_clipped`` warning, polygons kept (one part) and
rasterised with masks on, RLE (counts lists and compressed strings) decoded with masks on.
"""

from __future__ import annotations

from typing import Any, Final

from tfdrop.codec.model import Annotation, Box, Point, Shape
from tfdrop.errors import FormatError, LimitExceededError
from tfdrop.formats.base import Notes, ReadOptions
from tfdrop.formats.coco.index import Categories, ImageIndex, finite, utf8
from tfdrop.formats.coco.keypoints import (
    KeypointCategories,
    keypoints_ok,
    parse_keypoints,
    refuse_keypoints,
)
from tfdrop.formats.coco.rle import (
    check_counts,
    counts_bbox,
    counts_to_bits,
    decode_counts_string,
)
from tfdrop.formats.common.masks import bitmap_mask_png, polygons_mask_png

Record = tuple[int, Any, int, Any, bool, Any, Any, Any, Any]
"""A spilled annotation: (array index, id, category id, bbox or None, iscrowd, area,
segmentation, attributes, keypoints or None)."""


_NO_ATTRS: Final[tuple[tuple[bool, bool, bool], str, tuple[tuple[str, str], ...]]] = (
    (False, False, False),
    "",
    (),
)


def _corners(
    bbox: Any, bounds: tuple[float, float, float, float] | None, ann_id: Any, i: int, item: str
) -> tuple[float, float, float, float]:
    """The object's (x0, y0, x1, y1) in pixels: from its bbox, else its segmentation's bounds."""
    if bbox is not None:
        x0, y0, w, h = bbox
        return x0, y0, x0 + w, y0 + h
    if bounds is not None:
        return bounds
    raise FormatError(
        f"annotation {ann_id} has neither a bbox nor a segmentation",
        key=f"annotations[{i}]",
        item=item,
    )


def _unit(x: float, y: float) -> bool:
    return 0.0 <= x <= 1.0 and 0.0 <= y <= 1.0


class ObjectBuilder:
    """Builds objects from spilled records with the merged categories."""

    def __init__(
        self,
        categories: Categories,
        options: ReadOptions,
        notes: Notes,
        keypoints: KeypointCategories | None = None,
    ) -> None:
        self.categories = categories
        self.keypoints = keypoints if keypoints is not None else KeypointCategories(options.limits)
        self.options = options
        self.notes = notes
        # COCO ids are label ids when the map keeps them: the resolver then has nothing to
        # replace (dataclasses.replace per object was a quarter of the run)
        self.ids_kept = categories.label_map() is not None

    def _text(self, value: Any, key: str, item: str) -> str:
        """An attribute key or value as text, checked (lone surrogates, ``max_text_bytes``)."""
        text = _attr_text(value)
        utf8(text, "an attribute", self.options.limits, key=key, item=item)
        return text

    def annotation(self, r: Record, item: str, width: int, height: int) -> Annotation:
        """The object of one spilled annotation record, on an image of ``width x height``."""
        # the hot loop of a conversion (once per object): no work for what is absent
        i, ann_id, cat, bbox, crowd, area, seg, attrs, kp = r
        label = self.categories.by_id.get(cat)
        if label is None:
            raise FormatError(
                f"annotation {ann_id} has category id {cat}, which is not in categories",
                key=f"annotations[{i}].category_id",
                item=item,
            )
        shape: Shape = Shape.BOX
        polygon: tuple[float, ...] = ()
        mask: bytes | None = None
        bounds: tuple[float, float, float, float] | None = None
        if seg:
            try:
                shape, polygon, mask, bounds = self._segmentation(seg, width, height, bbox is None)
            except (FormatError, LimitExceededError) as exc:
                exc.message = f"annotation {ann_id}: {exc.message}"
                raise exc.at(key=f"annotations[{i}].segmentation", item=item) from None
        points = self._keypoints(kp, cat, ann_id, i, item, width, height) if kp else ()
        if bounds is None and bbox is None and points:
            bounds = _points_bounds(points, width, height)
        corners = _corners(bbox, bounds, ann_id, i, item)
        corners, polygon = self._inside_image(r, corners, bounds, polygon, item, width, height)
        flags, view, attributes = self._attributes(attrs, i, item) if attrs else _NO_ATTRS
        return Annotation(
            label=label,
            label_id=cat if self.ids_kept else 0,
            box=Box.from_pixels(*corners, width, height),
            mask=mask,
            is_crowd=crowd,
            area=float(area) if area is not None else None,
            shape=shape,
            polygon=polygon,
            occluded=flags[0],
            difficult=flags[1],
            truncated=flags[2],
            view=view,
            attributes=attributes,
            keypoints=points,
        )

    def _keypoints(
        self, kp: list[Any], cat: int, ann_id: Any, i: int, item: str, width: int, height: int
    ) -> tuple[Point, ...]:
        sk = self.keypoints.by_id.get(cat)
        try:
            points = parse_keypoints(kp, sk.names if sk else (), width, height)
        except FormatError as exc:
            exc.message = f"annotation {ann_id}: {exc.message}"
            raise exc.at(key=f"annotations[{i}].keypoints", item=item) from None
        out = [j for j, p in enumerate(points) if p.visibility and not _unit(p.x, p.y)]
        if out:
            self.notes.warn(
                "keypoint_outside_image",
                f"annotation {ann_id}: {len(out)} labelled keypoints (the first: keypoint "
                f"{out[0]}) lie outside the {width}x{height} image; kept",
                item=item,
                key=f"annotations[{i}].keypoints",
            )
        return points

    def _inside_image(
        self,
        r: Record,
        corners: tuple[float, float, float, float],
        bounds: tuple[float, float, float, float] | None,
        polygon: tuple[float, ...],
        item: str,
        width: int,
        height: int,
    ) -> tuple[tuple[float, float, float, float], tuple[float, ...]]:
        """The box and polygon clipped to the image, with a note when anything was clipped."""
        i, ann_id, bbox = r[0], r[1], r[3]
        x0, y0, x1, y1 = corners
        clipped = x0 < 0 or y0 < 0 or x1 > width or y1 > height
        if clipped:
            try:
                corners = self._clip(ann_id, corners, width, height)
            except FormatError as exc:
                raise exc.at(key=f"annotations[{i}]", item=item) from None
        if polygon and not _inside(polygon, width, height):
            polygon = _clip_points(polygon, width, height)
            clipped = True
        if clipped:
            self.notes.warn(
                "box_clipped",
                f"annotation {ann_id}: {_shown(bbox, bounds)} reaches outside the "
                f"{width}x{height} image; clipped",
                item=item,
                key=f"annotations[{i}]",
            )
        return corners, polygon

    def _attributes(
        self, attrs: dict[str, Any], i: int, item: str
    ) -> tuple[tuple[bool, bool, bool], str, tuple[tuple[str, str], ...]]:
        """(occluded, difficult, truncated), view, and the other attributes: the writer keeps
        these model fields as attributes (COCO has no keys for them)."""
        flags = {"occluded": False, "difficult": False, "truncated": False}
        view = ""
        rest = []
        for k, v in attrs.items():
            if k in flags:
                flags[k] = _truthy(v)
            elif k == "view":
                view = self._text(v, f"annotations[{i}].attributes.view", item)
            else:
                key = f"annotations[{i}].attributes"
                rest.append((self._text(k, key, item), self._text(v, f"{key}.{k}", item)))
        return (flags["occluded"], flags["difficult"], flags["truncated"]), view, tuple(rest)

    @staticmethod
    def _clip(
        ann_id: Any, box: tuple[float, float, float, float], width: int, height: int
    ) -> tuple[float, float, float, float]:
        """The box clipped to the image; :class:`FormatError` when none of it is inside
        (a box of zero width or height counts as inside when it lies on the image)."""
        x0, y0, x1, y1 = box
        cx0, cx1 = min(max(x0, 0), width), min(max(x1, 0), width)
        cy0, cy1 = min(max(y0, 0), height), min(max(y1, 0), height)
        if (
            x0 > width
            or y0 > height
            or x1 < 0
            or y1 < 0
            or (cx0 == cx1 and x1 > x0)
            or (cy0 == cy1 and y1 > y0)
        ):
            raise FormatError(
                f"annotation {ann_id}: the shape {tuple(box)} lies entirely outside the "
                f"{width}x{height} image"
            )
        return cx0, cy0, cx1, cy1

    def _segmentation(
        self, seg: Any, width: int, height: int, need_bounds: bool
    ) -> tuple[Shape, tuple[float, ...], bytes | None, tuple[float, float, float, float] | None]:
        """(shape, kept polygon, mask PNG if masks are on, bounds if asked for)."""
        if not seg:
            return Shape.BOX, (), None, None
        if isinstance(seg, list):
            return self._polygons(seg, width, height, need_bounds)
        if isinstance(seg, dict):
            return self._rle(seg, width, height, need_bounds)
        raise FormatError(f"segmentation must be a list or an RLE object, not {seg!r}")

    def _polygons(
        self, seg: list[Any], width: int, height: int, need_bounds: bool
    ) -> tuple[Shape, tuple[float, ...], bytes | None, tuple[float, float, float, float] | None]:
        parts: list[list[float]] = []
        values = 0
        for part in seg:
            values += len(part) if type(part) is list else 1
            self.options.limits.check("max_values_per_feature", values)
            if not finite(part) or len(part) % 2:
                raise FormatError("a polygon must be a list of x, y numbers")
            if len(part) >= 6:
                parts.append(part)
        if not parts:
            return Shape.BOX, (), None, None
        bounds = None
        if need_bounds:
            bounds = (
                min(min(p[0::2]) for p in parts),
                min(min(p[1::2]) for p in parts),
                max(max(p[0::2]) for p in parts),
                max(max(p[1::2]) for p in parts),
            )
        polygon: tuple[float, ...] = ()
        if len(parts) == 1:
            polygon = tuple(map(float, parts[0]))
        else:
            self.notes.lose("polygon_parts")  # the item model keeps one polygon per object
        mask = polygons_mask_png(parts, width, height) if self.options.masks else None
        return Shape.POLYGON, polygon, mask, bounds

    def _rle(
        self, seg: dict[str, Any], width: int, height: int, need_bounds: bool
    ) -> tuple[Shape, tuple[float, ...], bytes | None, tuple[float, float, float, float] | None]:
        limits = self.options.limits
        size = seg.get("size")
        counts = seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2):
            raise FormatError(f"RLE size must be [height, width], not {size!r}")
        if size != [height, width]:
            raise FormatError(f"RLE size {size} is not the image's [{height}, {width}]")
        cap = limits.max_values_per_feature
        if isinstance(counts, str):
            counts = decode_counts_string(counts, max_counts=cap)
        elif not isinstance(counts, list):
            raise FormatError("RLE counts must be a list or a compressed string")
        limits.check("max_values_per_feature", len(counts))
        mask = None
        if self.options.masks:
            # checked here, before counts_to_bits allocates height x width bytes
            limits.check("max_mask_pixels", height * width)
            bits = counts_to_bits(counts, height, width)  # also checks the counts
            mask = bitmap_mask_png(bits, width, height)
        else:
            check_counts(counts, height, width)
        box = counts_bbox(counts, height) if need_bounds else None
        return Shape.MASK, (), mask, box


def _points_bounds(
    points: tuple[Point, ...], width: int, height: int
) -> tuple[float, float, float, float] | None:
    """The pixel bounds of an object's labelled keypoints (its box when it has no other)."""
    xs = [p.x * width for p in points if p.visibility]
    ys = [p.y * height for p in points if p.visibility]
    return (min(xs), min(ys), max(xs), max(ys)) if xs else None


def _shown(bbox: Any, bounds: Any) -> str:
    """The shape's extent as the file gives it, for the box_clipped warning."""
    if bbox is not None:
        return f"box [x, y, w, h] = {list(bbox)}"
    if bounds is not None:
        return f"shape (xmin, ymin, xmax, ymax) = {tuple(bounds)}"
    return "polygon"


def _inside(points: tuple[float, ...], width: int, height: int) -> bool:
    xs, ys = points[0::2], points[1::2]
    return min(xs) >= 0 and min(ys) >= 0 and max(xs) <= width and max(ys) <= height


def _clip_points(points: tuple[float, ...], width: int, height: int) -> tuple[float, ...]:
    """A polygon's points clamped to the image, as its box is."""
    return tuple(
        min(max(v, 0.0), float(width if k % 2 == 0 else height)) for k, v in enumerate(points)
    )


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _attr_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def refuse(i: int, value: Any, index: ImageIndex) -> None:
    """Raise the :class:`FormatError` that says what is wrong with an annotation."""
    path = f"annotations[{i}]"
    if not isinstance(value, dict):
        raise FormatError("an annotation must be a JSON object", key=path)
    ann_id = value.get("id")
    image_id = value.get("image_id")
    if type(image_id) is not int:
        raise FormatError(
            f"annotation {ann_id}: image_id must be an integer, not {image_id!r}",
            key=f"{path}.image_id",
        )
    pos = index.position(image_id)
    if pos is None:
        raise FormatError(
            f"annotation {ann_id} refers to image id {image_id}, which is not in images",
            key=f"{path}.image_id",
        )
    cat = value.get("category_id")
    if type(cat) is not int:
        raise FormatError(
            f"annotation {ann_id}: category_id must be an integer, not {cat!r}",
            key=f"{path}.category_id",
            item=index.name(pos),
        )
    bbox = value.get("bbox")
    if bbox is not None:
        if not finite(bbox, 4):
            raise FormatError(
                f"annotation {ann_id}: bbox must be 4 finite numbers [x, y, w, h], not {bbox!r}",
                key=f"{path}.bbox",
                item=index.name(pos),
            )
        if bbox[2] < 0 or bbox[3] < 0:
            raise FormatError(
                f"annotation {ann_id}: bbox {bbox!r} has a negative width or height",
                key=f"{path}.bbox",
                item=index.name(pos),
            )
    area = value.get("area")
    if area is not None and not finite([area], 1):
        raise FormatError(
            f"annotation {ann_id}: area {area!r} is not a finite number",
            key=f"{path}.area",
            item=index.name(pos),
        )
    crowd = value.get("iscrowd", 0)
    if crowd not in (0, 1, None):
        raise FormatError(
            f"annotation {ann_id}: iscrowd must be 0 or 1, not {crowd!r}",
            key=f"{path}.iscrowd",
            item=index.name(pos),
        )
    kp = value.get("keypoints")
    if kp is not None and not keypoints_ok(kp):
        refuse_keypoints(kp, ann_id, path, index.name(pos))

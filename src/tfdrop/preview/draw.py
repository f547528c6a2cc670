"""One item drawn with Pillow: its image (decoded within the job's pixel budget) with every
object's mask, box, label and keypoints on top, encoded as a PNG or a JPEG.

Only what is shown is decoded. Before a raster exists its size is known and checked: the
image's header gives its size (:func:`~tfdrop.formats.common.imageinfo.probe`), a JPEG shown as
a thumbnail is decoded at a reduced scale (Pillow's draft mode: at most 1/8 of the pixels), and
the raster must fit the job's ``max_mask_pixels`` (the budget of one full-image raster, the
size of one instance mask). An image that does not decode, or would not fit, is drawn as a grey
canvas of its declared shape with the annotations on it, and the reason becomes a problem of
the item. Nothing here raises for bad data.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Final

from PIL import Image, ImageDraw, ImageFont

from tfdrop.codec.example import MASK
from tfdrop.codec.imagehead import image_kind, png_size
from tfdrop.codec.model import Annotation, Item
from tfdrop.errors import DataError
from tfdrop.formats.common.imageinfo import OPEN_FORMATS, probe
from tfdrop.formats.common.masks import decode_mask
from tfdrop.preview.palette import label_colour, text_colour

THUMB: Final = 320
"""The longest side of a thumbnail, in pixels (small images are scaled up to it)."""
_CANVAS: Final = (96, 96, 96)
_MASK_ALPHA: Final = 110
"""Opacity of a mask overlay (of 255)."""
_PILLOW_ERRORS: Final = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
"""What Pillow raises for bytes it cannot decode (a truncated file, a broken header...)."""

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True, slots=True)
class Drawn:
    """An item drawn: the encoded picture, its size, what went wrong while drawing it, and
    what is worth saying but is not wrong (``notes``: no image bytes, masks not drawn)."""

    data: bytes
    mime: str
    width: int
    height: int
    problems: tuple[str, ...]
    decoded: bool
    notes: tuple[str, ...] = ()


def _budget(width: int, height: int, max_pixels: int) -> str | None:
    if width * height > max_pixels:
        return (
            f"image not decoded: {width} x {height} pixels is over the job budget "
            f"(max_mask_pixels = {max_pixels}; raise it with --limit max_mask_pixels=N)"
        )
    return None


def _progressive_budget(img: Image.Image, max_pixels: int) -> str | None:
    """A progressive JPEG decodes its whole coefficient image whatever the draft scale (the
    scale only shrinks the output): its full size x components must fit."""
    if not (img.info.get("progressive") or img.info.get("progression")):
        return None
    width, height = img.size
    components = len(img.getbands())
    if width * height * components > max_pixels:
        return (
            f"image not decoded: a progressive JPEG of {width} x {height} pixels x "
            f"{components} components is decoded in full at any scale, over the job budget "
            f"(max_mask_pixels = {max_pixels}; raise it with --limit max_mask_pixels=N)"
        )
    return None


def _rgb(img: Image.Image) -> Image.Image:
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # Pillow warns when a palette's transparency goes to RGB
    return img.convert("RGB")


def _open(
    data: bytes, max_pixels: int, reduce_to: int | None
) -> tuple[Image.Image | None, str | None]:
    img = Image.open(io.BytesIO(data), formats=OPEN_FORMATS)
    if img.format in ("JPEG", "MPO"):
        over = _progressive_budget(img, max_pixels)
        if over:
            return None, over
        if reduce_to is not None:
            img.draft("RGB", (reduce_to, reduce_to))
    over = _budget(*img.size, max_pixels)
    if over:
        return None, over
    img.load()
    return _rgb(img), None


def decode(
    item: Item, *, max_pixels: int, reduce_to: int | None
) -> tuple[Image.Image | None, list[str]]:
    """The item's image as RGB, or None, and the problems met. ``reduce_to``: a JPEG may be
    decoded at a reduced scale while both sides stay at least this long (a thumbnail's size).
    Pillow's warnings are problems of the item, never printed."""
    data = item.image
    if not data:
        return None, []
    try:
        info = probe(data, name=item.name)
    except DataError as exc:
        return None, [f"image cannot be decoded: {exc.message}"]
    if info.format != "jpeg" or reduce_to is None:
        over = _budget(info.width, info.height, max_pixels)
        if over:
            return None, [over]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img, over = _open(data, max_pixels, reduce_to)
        except _PILLOW_ERRORS as exc:
            img, over = None, f"image cannot be decoded: {exc}"
    problems = [f"image decoder warning: {w.message}" for w in caught]
    if over:
        problems.append(over)
    return img, problems


def _fit(width: int, height: int, side: int) -> tuple[int, int]:
    """``width x height`` scaled so the longer side is ``side`` (each side at least 1)."""
    w, h = max(width, 1), max(height, 1)
    scale = side / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _canvas(item: Item, img: Image.Image | None, thumb: int | None, max_pixels: int) -> Image.Image:
    if img is not None:
        if thumb is None:
            return img
        size = _fit(*img.size, thumb)
        resample = Image.Resampling.LANCZOS if size[0] < img.width else Image.Resampling.NEAREST
        return img.resize(size, resample)
    w, h = item.width, item.height
    if thumb is not None or w <= 0 or h <= 0 or w * h > max_pixels:
        w, h = _fit(w, h, thumb or THUMB)
    return Image.new("RGB", (w, h), _CANVAS)


def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _overlay_mask(canvas: Image.Image, obj: Annotation, max_pixels: int) -> str:
    assert obj.mask is not None
    try:
        width, height, bits = decode_mask(obj.mask, max_pixels=max_pixels)
    except DataError as exc:
        return f"mask not drawn: {exc.message}"
    alpha = Image.frombytes("L", (width, height), bits).point(lambda v: _MASK_ALPHA if v else 0)
    alpha = alpha.resize(canvas.size, Image.Resampling.NEAREST)
    canvas.paste(Image.new("RGB", canvas.size, label_colour(obj.label)), (0, 0), alpha)
    return ""


def _draw_box(
    draw: ImageDraw.ImageDraw, obj: Annotation, size: tuple[int, int], font: Font
) -> None:
    w, h = size
    colour = label_colour(obj.label)
    line = max(3, round(min(w, h) / 160))
    x0, y0, x1, y1 = obj.box.to_pixels(w, h)
    if not all(abs(v) < 1e7 for v in (x0, y0, x1, y1)):  # NaN (False here) or absurd
        return
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    draw.rectangle((x0, y0, x1, y1), outline=colour, width=line)
    text = f"{obj.label} {obj.label_id}" if obj.label_id else obj.label
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    tw, th = right - left + 4, bottom - top + 4
    ty = y0 - th if y0 - th >= 0 else y0
    draw.rectangle((x0, ty, x0 + tw, ty + th), fill=colour)
    draw.text((x0 + 2 - left, ty + 2 - top), text, fill=text_colour(colour), font=font)


def _draw_keypoints(
    draw: ImageDraw.ImageDraw, obj: Annotation, size: tuple[int, int], font: Font
) -> None:
    w, h = size
    colour = label_colour(obj.label)
    r = max(2, round(min(w, h) / 90))
    for point in obj.keypoints:
        if point.visibility <= 0 or not (0.0 <= point.x <= 1.0 and 0.0 <= point.y <= 1.0):
            continue
        x, y = point.x * w, point.y * h
        fill = colour if point.visibility >= 2 else None
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill, outline=(255, 255, 255), width=1)
        if point.name:
            draw.text((x + r + 1, y - r), point.name, fill=colour, font=font)


def _drawable_masks(item: Item, max_pixels: int) -> tuple[list[tuple[int, Annotation]], list[str]]:
    """The masks worth decoding, and why the others are not drawn. Only a PNG of the image's
    size is decoded (one of another size is already a problem of the record), and only while
    the item's masks together fit ``max_pixels``: 100 masks of 8000 x 8000 on one item would
    decode 6.4 G pixels, one at a time but for minutes."""
    want = (item.width, item.height)
    fit: list[tuple[int, Annotation]] = []
    other = 0
    for i, obj in enumerate(item.objects):
        if obj.mask is None:
            continue
        size = png_size(obj.mask)
        if size is None or (want[0] > 0 and want[1] > 0 and size != want):
            other += 1
        else:
            fit.append((i, obj))
    problems = []
    if other:
        problems.append(
            f"{other} masks not drawn: not a PNG of the image's size ({want[0]} x {want[1]})"
        )
    sizes = [png_size(o.mask) or (0, 0) for _, o in fit if o.mask is not None]
    total = sum(w * h for w, h in sizes)
    if total > max_pixels:
        shapes = sorted(set(sizes))
        shape = f" of {shapes[0][0]} x {shapes[0][1]}" if len(shapes) == 1 else ""
        problems.append(
            f"masks not drawn: {len(fit)} masks{shape} ({total} pixels) exceed the budget of "
            f"one item's masks (max_mask_pixels = {max_pixels}; raise it with "
            "--limit max_mask_pixels=N)"
        )
        fit = []
    return fit, problems


def annotate(canvas: Image.Image, item: Item, max_pixels: int) -> list[str]:
    """Draw every object of ``item`` on ``canvas`` (masks first, then boxes and keypoints);
    the problems met (a mask that cannot be drawn)."""
    masks, problems = _drawable_masks(item, max_pixels)
    for i, obj in masks:
        why = _overlay_mask(canvas, obj, max_pixels)
        if why:
            problems.append(f"object {i}: {why}")
    draw = ImageDraw.Draw(canvas)
    font = _font(max(10, round(min(canvas.size) / 28)))
    small = _font(max(8, round(min(canvas.size) / 40)))
    for obj in item.objects:
        _draw_box(draw, obj, canvas.size, font)
        _draw_keypoints(draw, obj, canvas.size, small)
    return problems


def _notes(item: Item) -> list[str]:
    notes = []
    if not item.image:
        notes.append("no image bytes (written with --no-images?)")
    if any(key == MASK for key, _ in item.extra):
        notes.append("numerical masks (image/object/mask as floats): not drawn")
    return notes


def render(item: Item, *, max_pixels: int, thumb: int | None = THUMB, png: bool = False) -> Drawn:
    """The item drawn: a thumbnail (longer side ``thumb``) or, with ``thumb=None``, at full
    size. A JPEG stays a JPEG (quality 85, no chroma subsampling) unless ``png``; anything
    else is a PNG."""
    img, problems = decode(item, max_pixels=max_pixels, reduce_to=thumb)
    canvas = _canvas(item, img, thumb, max_pixels)
    problems += annotate(canvas, item, max_pixels)
    buf = io.BytesIO()
    if not png and img is not None and item.image and image_kind(item.image) == "jpeg":
        canvas.save(buf, format="JPEG", quality=85, subsampling=0)
        mime = "image/jpeg"
    else:
        canvas.save(buf, format="PNG")
        mime = "image/png"
    return Drawn(
        buf.getvalue(),
        mime,
        canvas.width,
        canvas.height,
        tuple(problems),
        img is not None,
        tuple(_notes(item)),
    )

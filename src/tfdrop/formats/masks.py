"""Instance masks as the TF OD API reads them: one full-image PNG per object, pixels 0/1.

TF's decoder (``instance_mask_type=PNG_MASKS``) decodes each PNG and treats non-zero as the
object. Polygons are rasterised with Pillow (the same even-odd fill CVAT and pycocotools use
for simple polygons); a mask's box is the bounding box of its non-zero pixels.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

from tfdrop.codec.model import Box
from tfdrop.errors import FormatError


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def polygons_mask_png(polygons: Sequence[Sequence[float]], width: int, height: int) -> bytes:
    """Rasterise polygons given in pixels ``(x0, y0, x1, y1, ...)`` into one 0/1 PNG."""
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(poly[i], poly[i + 1]) for i in range(0, len(poly) - 1, 2)], fill=1)
    return _png(img)


def box_mask_png(box: Box, width: int, height: int) -> bytes:
    """A box as a filled rectangle mask (for objects that have no shape of their own)."""
    xmin, ymin, xmax, ymax = box.to_pixels(width, height)
    img = Image.new("L", (width, height), 0)
    if xmax > xmin and ymax > ymin:
        ImageDraw.Draw(img).rectangle(
            (round(xmin), round(ymin), max(round(xmin), round(xmax) - 1), round(ymax) - 1),
            fill=1,
        )
    return _png(img)


def bitmap_mask_png(bits: bytes, width: int, height: int) -> bytes:
    """A row-major 0/1 (or 0/non-zero) byte buffer of ``width * height`` as a 0/1 PNG."""
    if len(bits) != width * height:
        raise FormatError(f"mask has {len(bits)} pixels, expected {width}x{height}")
    img = Image.frombytes("L", (width, height), bits)
    return _png(img.point(lambda v: 1 if v else 0))


def decode_mask(png: bytes) -> tuple[int, int, bytes]:
    """``(width, height, row-major 0/1 bytes)`` of a mask PNG."""
    try:
        with Image.open(io.BytesIO(png)) as img:
            gray = img.convert("L")
            width, height = gray.size
            data = gray.point(lambda v: 1 if v else 0).tobytes()
    except (OSError, ValueError) as exc:
        raise FormatError(f"instance mask is not a readable PNG: {exc}") from None
    return width, height, data


def mask_bbox(png: bytes) -> Box | None:
    """The normalised bounding box of a mask's non-zero pixels (``None`` if empty)."""
    try:
        with Image.open(io.BytesIO(png)) as img:
            width, height = img.size
            bbox = img.convert("L").getbbox()
    except (OSError, ValueError) as exc:
        raise FormatError(f"instance mask is not a readable PNG: {exc}") from None
    if bbox is None:
        return None
    left, top, right, bottom = bbox  # right/bottom exclusive: the box covers whole pixels
    return Box.from_pixels(left, top, right, bottom, width, height)

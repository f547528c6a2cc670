"""Instance masks as the TF OD API reads them: one full-image PNG per object, pixels 0/1.

TF's decoder (``instance_mask_type=PNG_MASKS``) decodes each PNG and treats non-zero as the
object. Polygons are rasterised with Pillow (the same even-odd fill CVAT and pycocotools use
for simple polygons); a mask's box is the bounding box of its non-zero pixels.

Every function that allocates a raster checks its declared size against ``max_mask_pixels``
first (:func:`check_mask_size`; the default is the built-in budget's, callers pass the job's),
so a 100000 x 100000 image with one polygon is a ``limit_exceeded`` error, not 10 GB.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tfdrop.codec.imagehead import png_size
from tfdrop.codec.model import Box
from tfdrop.errors import FormatError, LimitExceededError
from tfdrop.limits import DEFAULT_LIMITS, exceeded

if TYPE_CHECKING:
    from PIL import Image

MAX_PIXELS = DEFAULT_LIMITS.max_mask_pixels
# Pillow is imported by the functions that draw or decode (about 10 ms): a conversion
# without masks never needs it, and check_mask_size is imported by every reader.


def check_mask_size(width: int, height: int, max_pixels: int = MAX_PIXELS) -> None:
    """Raise ``limit_exceeded`` (``max_mask_pixels``) before a ``width x height`` raster exists."""
    if width <= 0 or height <= 0:
        raise FormatError(f"a mask needs a positive image size, not {width}x{height}")
    if width * height > max_pixels:
        raise exceeded("max_mask_pixels", width * height, max_pixels)


def _check_header(png: bytes, max_pixels: int) -> None:
    """The size a PNG's header declares, checked before Pillow opens (and checks) it."""
    size = png_size(png)
    if size is not None:
        check_mask_size(*size, max_pixels)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def polygons_mask_png(
    polygons: Sequence[Sequence[float]], width: int, height: int, *, max_pixels: int = MAX_PIXELS
) -> bytes:
    """Rasterise polygons given in pixels ``(x0, y0, x1, y1, ...)`` into one 0/1 PNG."""
    from PIL import Image, ImageDraw

    check_mask_size(width, height, max_pixels)
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    for poly in polygons:
        if len(poly) >= 6:
            draw.polygon([(poly[i], poly[i + 1]) for i in range(0, len(poly) - 1, 2)], fill=1)
    return _png(img)


def box_mask_png(box: Box, width: int, height: int, *, max_pixels: int = MAX_PIXELS) -> bytes:
    """A box as a filled rectangle mask (for objects that have no shape of their own)."""
    from PIL import Image, ImageDraw

    check_mask_size(width, height, max_pixels)
    xmin, ymin, xmax, ymax = box.to_pixels(width, height)
    img = Image.new("L", (width, height), 0)
    if xmax > xmin and ymax > ymin:
        ImageDraw.Draw(img).rectangle(
            (round(xmin), round(ymin), max(round(xmin), round(xmax) - 1), round(ymax) - 1),
            fill=1,
        )
    return _png(img)


def bitmap_mask_png(bits: bytes, width: int, height: int, *, max_pixels: int = MAX_PIXELS) -> bytes:
    """A row-major 0/1 (or 0/non-zero) byte buffer of ``width * height`` as a 0/1 PNG."""
    from PIL import Image

    check_mask_size(width, height, max_pixels)
    if len(bits) != width * height:
        raise FormatError(f"mask has {len(bits)} pixels, expected {width}x{height}")
    img = Image.frombytes("L", (width, height), bits)
    return _png(img.point(lambda v: 1 if v else 0))


def decode_mask(png: bytes, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int, bytes]:
    """``(width, height, row-major 0/1 bytes)`` of a mask PNG (its header's size checked
    against ``max_pixels`` before it is decoded)."""
    from PIL import Image

    _check_header(png, max_pixels)
    try:
        with Image.open(io.BytesIO(png), formats=("PNG",)) as img:
            check_mask_size(*img.size, max_pixels)
            gray = img.convert("L")
            width, height = gray.size
            data = gray.point(lambda v: 1 if v else 0).tobytes()
    except LimitExceededError:
        raise  # a ValueError too: not "unreadable"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FormatError(f"instance mask is not a readable PNG: {exc}") from None
    return width, height, data


def mask_bbox(png: bytes, *, max_pixels: int = MAX_PIXELS) -> Box | None:
    """The normalised bounding box of a mask's non-zero pixels (``None`` if empty)."""
    from PIL import Image

    _check_header(png, max_pixels)
    try:
        with Image.open(io.BytesIO(png), formats=("PNG",)) as img:
            width, height = img.size
            check_mask_size(width, height, max_pixels)
            bbox = img.convert("L").getbbox()
    except LimitExceededError:
        raise  # a ValueError too: not "unreadable"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise FormatError(f"instance mask is not a readable PNG: {exc}") from None
    if bbox is None:
        return None
    left, top, right, bottom = bbox  # right/bottom exclusive: the box covers whole pixels
    return Box.from_pixels(left, top, right, bottom, width, height)

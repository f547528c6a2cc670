"""Instance masks: CVAT polygons and RLE masks -> one full-image 0/1 PNG per
object that real TensorFlow decodes to the rasterised shape; TFRecord masks -> CVAT ``<mask>``
RLE and back; CVAT's RLE (``cvat-core`` mask2Rle/rle2Mask) checked against its own examples."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from conftest import require_corpus
from tfdrop.archive import open_source
from tfdrop.codec.model import Box, Item, Shape
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import FormatError, LimitExceededError
from tfdrop.formats import Notes, ReadOptions
from tfdrop.formats.common.masks import decode_mask
from tfdrop.formats.common.pixels import f32
from tfdrop.formats.cvat import rle
from tfdrop.formats.cvat.reader import CvatReader
from tfhelpers import tf_records

# --- CVAT's RLE ---------------------------------------------------------------------------------


def test_rle_decodes_cvats_own_examples_starting_with_background() -> None:
    # cvat-core's comments: 0,0,0,1 => [3,1]; 1,1,0,0 => [0,2,2]
    assert rle.decode([3, 1], 4, 1) == bytes([0, 0, 0, 1])
    assert rle.decode([0, 2, 2], 2, 2) == bytes([1, 1, 0, 0])
    assert rle.encode(bytes([0, 0, 0, 1])) == [3, 1]
    assert rle.encode(bytes([1, 1, 0, 0])) == [0, 2, 2]


def test_rle_runs_ending_early_leave_background_and_too_long_runs_are_refused() -> None:
    assert rle.decode([1, 2], 2, 2) == bytes([0, 1, 1, 0])
    assert rle.decode([], 2, 1) == bytes([0, 0])
    with pytest.raises(FormatError, match="covers 5 pixels"):
        rle.decode([1, 4], 2, 2)
    with pytest.raises(LimitExceededError, match="max_mask_pixels is 67108864") as err:
        rle.decode([1], 1 << 15, 1 << 15)
    assert (err.value.limit, err.value.value) == ("max_mask_pixels", 1 << 30)
    with pytest.raises(FormatError, match="negative"):
        rle.parse_counts("1, -2")
    assert rle.parse_counts("3, 1, 2") == [3, 1, 2]
    assert rle.format_counts([3, 1, 2]) == "3, 1, 2"


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=200).map(lambda b: bytes(x & 1 for x in b)))
def test_rle_encode_then_decode_gives_the_pixels_back(bits: bytes) -> None:
    counts = rle.encode(bits)
    assert sum(counts) == len(bits)
    assert all(c > 0 for c in counts[1:])  # only the first (background) run may be empty
    assert rle.decode(counts, len(bits), 1) == bits


def test_paste_and_crop_are_inverse_and_paste_refuses_the_outside() -> None:
    bits = bytes([1, 0, 1, 1, 0, 1])  # 3x2
    full = rle.paste(bits, 1, 2, 3, 2, 5, 4)
    assert full[2 * 5 + 1 : 2 * 5 + 4] == bytes([1, 0, 1])
    assert rle.crop(full, 5, 1, 2, 4, 4) == bits
    with pytest.raises(FormatError, match="outside the 5x4 image"):
        rle.paste(bits, 3, 2, 3, 2, 5, 4)


# --- CVAT -> TFRecord with masks, decoded by TensorFlow -----------------------------------------


def rasterise(points: tuple[float, ...], width: int, height: int) -> list[list[int]]:
    """The test's own Pillow rasterisation of a polygon as a 0/1 row list."""
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon(list(zip(points[0::2], points[1::2], strict=True)), fill=1)
    data = img.tobytes()
    return [list(data[r * width : (r + 1) * width]) for r in range(height)]


def rle_rows(
    counts: list[int], left: int, top: int, w: int, h: int, iw: int, ih: int
) -> list[list[int]]:
    """The test's own reading of CVAT's RLE, written pixel by pixel as rle2Mask does."""
    grid = [[0] * iw for _ in range(ih)]
    pos, value = 0, 0
    for count in counts:
        for _ in range(count):
            if value:
                grid[top + pos // w][left + pos % w] = 1
            pos += 1
        value ^= 1
    return grid


def jpeg(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


POLY = (3.5, 2.0, 20.0, 4.25, 12.0, 17.0, 2.0, 12.5)
MASK = ([5, 3, 2, 4, 1, 5, 6, 2], 6, 7, 6, 5)  # counts, left, top, width, height


def masked_cvat(tmp: Path) -> Path:
    counts, left, top, w, h = MASK
    xml = f"""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
<meta><task><labels><label><name>blob</name></label><label><name>car</name></label></labels>
</task></meta>
<image id="0" name="m.jpg" width="24" height="18">
  <polygon label="blob" points="{";".join(f"{POLY[i]},{POLY[i + 1]}" for i in range(0, 8, 2))}"/>
  <mask label="blob" rle="{rle.format_counts(counts)}" left="{left}" top="{top}" width="{w}"
        height="{h}"/>
  <box label="car" xtl="1" ytl="1" xbr="5" ybr="4"/>
</image>
</annotations>"""
    out = tmp / "masked.zip"
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("annotations.xml", xml)
        zf.writestr("images/m.jpg", jpeg(24, 18))
    return out


def tf_masks(tf: ModuleType, archive: Path, tmp: Path) -> list[dict[str, Any]]:
    out = []
    for rec in tf_records(tf, archive, tmp, masks=True):
        # TF's PNG_MASKS decoder: decode_png, one channel, non-zero is the object
        rec["masks"] = [tf.io.decode_png(p, channels=1)[:, :, 0].numpy().tolist()
                        for p in rec["image/object/mask"]]  # fmt: skip
        rec["size"] = (int(rec["image/width"]), int(rec["image/height"]))
        out.append(rec)
    return out


def test_polygons_and_rle_masks_become_pngs_tensorflow_decodes_to_the_shapes(
    tf: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "rec.zip"
    report = convert(masked_cvat(tmp_path), out, ConvertOptions(masks=True))
    assert (report.items, report.objects) == (1, 3)
    (rec,) = tf_masks(tf, out, tmp_path)
    assert rec["size"] == (24, 18)
    assert rec["image/object/class/text"] == [b"blob", b"blob", b"car"]
    poly_mask, rle_mask, box_mask = rec["masks"]
    assert poly_mask == rasterise(POLY, 24, 18)
    assert rle_mask == rle_rows(*MASK, 24, 18)
    # the box is the shape's bounding box: the polygon's points, the mask's pixels
    boxes = list(
        zip(*(rec[f"image/object/bbox/{k}"] for k in ("xmin", "ymin", "xmax", "ymax")), strict=True)
    )
    assert boxes[0] == (f32(2.0 / 24), f32(2.0 / 18), f32(20.0 / 24), f32(17.0 / 18))
    ys = [r for r, row in enumerate(rle_mask) if any(row)]
    xs = [c for row in rle_mask for c, v in enumerate(row) if v]
    assert boxes[1] == (
        f32(min(xs) / 24),
        f32(min(ys) / 18),
        f32((max(xs) + 1) / 24),
        f32((max(ys) + 1) / 18),
    )
    # a plain box gets a filled rectangle so every object has its mask (the OD API needs one)
    assert sum(map(sum, box_mask)) == 4 * 3
    assert box_mask[1][1:5] == [1, 1, 1, 1]


def test_tfrecord_masks_go_back_to_cvat_as_rle_masks_with_the_same_pixels(
    tf: ModuleType, tmp_path: Path
) -> None:
    rec_zip, cvat_zip, again = tmp_path / "rec.zip", tmp_path / "cvat.zip", tmp_path / "again.zip"
    convert(masked_cvat(tmp_path), rec_zip, ConvertOptions(masks=True))
    convert(rec_zip, cvat_zip, ConvertOptions(target_format="cvat", masks=True))
    with zipfile.ZipFile(cvat_zip) as zf:
        xml = zf.read("annotations.xml").decode()
    assert xml.count("<mask ") == 3  # a record's masks carry no polygon: all become CVAT masks
    assert "<polygon" not in xml
    notes = Notes()
    with open_source(cvat_zip) as src:
        items: list[Item] = list(CvatReader(src, ReadOptions(masks=True), notes).items())
    masks = [decode_mask(o.mask or b"")[2] for o in items[0].objects]
    assert [o.shape for o in items[0].objects] == [Shape.MASK] * 3
    # and through TFRecord again: TF decodes the very same pixels
    convert(cvat_zip, again, ConvertOptions(masks=True))
    (rec,) = tf_masks(tf, again, tmp_path)
    assert [bytes(v for row in m for v in row) for m in rec["masks"]] == masks
    assert rec["masks"][0] == rasterise(POLY, 24, 18)
    assert rec["masks"][1] == rle_rows(*MASK, 24, 18)


def test_corpus_polygons_with_masks_decode_in_tensorflow_to_pillows_rasterisation(
    tf: ModuleType, tmp_path: Path
) -> None:
    root = require_corpus(
        "openvinotoolkit__datumaro",
        "tests",
        "assets",
        "cvat_dataset",
        "for_images",
        "export_project",
    )
    out = tmp_path / "p.zip"
    convert(root, out, ConvertOptions(masks=True))
    records = tf_masks(tf, out, tmp_path)
    assert len(records) == 6
    for rec in records:
        mask = rec["masks"][0]
        if rec["size"] == (10, 10):  # img1.jpg
            assert mask == rasterise((1, 2, 3, 4, 6, 5), 10, 10)  # <polygon points="1,2;3,4;6,5">
            # <points points="1,2;3,4;5,6">: a keypoint object, its mask the points' box
            assert rec["masks"][1] == [
                [1 if 1 <= c < 5 and 2 <= r < 6 else 0 for c in range(10)] for r in range(10)
            ]
        else:  # the box 0,2,4,4 as a filled rectangle (the polyline is skipped)
            assert len(rec["masks"]) == 1
            assert mask == [
                [1 if 0 <= c < 4 and 2 <= r < 4 else 0 for c in range(8)] for r in range(8)
            ]


def test_masks_off_keep_polygon_points_and_no_png(tmp_path: Path) -> None:
    notes = Notes()
    with open_source(masked_cvat(tmp_path)) as src:
        (item,) = CvatReader(src, ReadOptions(masks=False), notes).items()
    poly, mask, box = item.objects
    assert (poly.mask, mask.mask, box.mask) == (None, None, None)
    assert poly.polygon == POLY
    assert poly.box == Box(2.0 / 24, 2.0 / 18, 20.0 / 24, 17.0 / 18)
    assert mask.shape == Shape.MASK


# --- max_mask_pixels, from the declared size, before any raster ------------------------


def _png_header_only(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_every_mask_function_refuses_a_size_over_max_mask_pixels_before_allocating() -> None:
    from tfdrop.formats.common.masks import (
        bitmap_mask_png,
        box_mask_png,
        mask_bbox,
        polygons_mask_png,
    )

    big = 100_000
    calls: list[Callable[[], object]] = [
        lambda: polygons_mask_png([[1, 1, 50, 1, 50, 50]], big, big),
        lambda: box_mask_png(Box(0, 0, 1, 1), big, big),
        lambda: bitmap_mask_png(b"", big, big),
        lambda: decode_mask(_png_header_only(big, big)),
        lambda: mask_bbox(_png_header_only(big, big)),
        lambda: rle.paste(b"\x01", 0, 0, 1, 1, big, big),
    ]
    for call in calls:
        with pytest.raises(LimitExceededError, match="max_mask_pixels is 67108864") as err:
            call()
        assert err.value.value == big * big
    with pytest.raises(LimitExceededError, match="max_mask_pixels is 99"):
        polygons_mask_png([[1, 1, 5, 1, 5, 5]], 10, 10, max_pixels=99)
    assert decode_mask(polygons_mask_png([[1, 1, 5, 1, 5, 5]], 10, 10, max_pixels=100))[:2] == (
        10,
        10,
    )

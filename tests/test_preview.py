"""``tfdrop preview``: the page opened in real headless Chromium (pixels of the drawn box, no
request leaving the page), items past ``--limit`` counted but never decoded, validate's
problems marked on their item, ``--png``, and a TFRecord written by real TensorFlow."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct
import subprocess
import warnings
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from PIL import Image

from conftest import numerical_mask_records, records_bytes, require_tool, tfdrop
from tfdrop.codec.model import Annotation, Box, Item, Point
from tfdrop.config import MAX_PREVIEW, parse_config
from tfdrop.errors import ConfigError, DataError
from tfdrop.formats.common.imageinfo import ImageInfo, probe
from tfdrop.inputs import open_input
from tfdrop.preview import PreviewOptions, _shown
from tfdrop.preview.draw import render
from tfdrop.preview.page import TABLE_LABELS, Counts, header
from tfdrop.preview.palette import label_colour
from tfdrop.preview.scan import item_problems

LABEL_MAP = "item {\n  id: 1\n  name: 'cat'\n}\nitem {\n  id: 2\n  name: 'dog'\n}\n"
PLAIN = (230, 120, 20)
"""The test images' one colour: nothing else on the page has it."""


def png(size: tuple[int, int] = (200, 100), colour: tuple[int, int, int] = PLAIN) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def item(
    name: str, *objects: Annotation, image: bytes | None = None, size: tuple[int, int] = (200, 100)
) -> Item:
    return Item(
        name=name,
        width=size[0],
        height=size[1],
        image=png(size) if image is None else image,
        image_format="png",
        objects=objects,
    )


CAT = Annotation("cat", Box(0.25, 0.25, 0.75, 0.75), label_id=1)


def tfrecord_zip(path: Path, items: list[Item], subset: str = "train") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{subset}.tfrecord", records_bytes(items))
        zf.writestr("label_map.pbtxt", LABEL_MAP)
    return path


class _Links(HTMLParser):
    """Every src/href of a page, and whether any script or stylesheet link is there."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.refs += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "action")]


def _external(page: Path) -> list[str]:
    """Whatever the page could load from outside itself: refs that are neither data: URIs
    nor in-page anchors, url(...) in its style, scripts, link elements."""
    text = page.read_text(encoding="utf-8")
    parser = _Links()
    parser.feed(text)
    out = [r for r in parser.refs if not r.startswith(("data:", "#"))]
    out += [f"<{t}>" for t in parser.tags & {"script", "link", "iframe", "object", "embed"}]
    out += re.findall(r"url\(|@import", text)
    return out


def _page_requests(netlog: Path) -> list[str]:
    """The URLs a page asked for, from Chromium's network log (the browser's own background
    requests carry the initiator "not an origin"; a file:// page's carry "null")."""
    log = json.loads(netlog.read_text(errors="replace"))
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start
        and "url" in e.get("params", {})
        and e["params"].get("initiator") != "not an origin"
    ]


def _chromium(
    page: Path, tmp: Path, size: tuple[int, int] = (1000, 900)
) -> tuple[Image.Image, list[str]]:
    """A real headless Chromium's screenshot of ``page`` and the URLs the page requested;
    names resolve nowhere, so nothing could be fetched anyway."""
    require_tool("chromium", "chromium")
    tmp.mkdir(exist_ok=True)
    shot, netlog = tmp / "shot.png", tmp / "net.json"
    proc = subprocess.run(
        [
            shutil.which("chromium") or "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--force-device-scale-factor=1",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--log-net-log={netlog}",
            f"--user-data-dir={tmp / 'profile'}",
            f"--screenshot={shot}",
            f"--window-size={size[0]},{size[1]}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert shot.exists(), proc.stderr.decode(errors="replace")[-2000:]
    with Image.open(shot) as img:
        return img.convert("RGB"), _page_requests(netlog)


def _bbox_of(img: Image.Image, colour: tuple[int, int, int], tol: int = 4) -> tuple[int, ...]:
    """The bounding box of the pixels of ``colour`` (within ``tol`` per channel)."""
    bands = [
        band.point(lambda v, c=c: 255 if abs(v - c) <= tol else 0)
        for band, c in zip(img.split(), colour, strict=True)
    ]
    mask = Image.merge("RGB", bands).convert("L").point(lambda v: 255 if v == 255 else 0)
    box = mask.getbbox()
    assert box is not None, f"no pixel of {colour} on the screenshot"
    return box


def _px(img: Image.Image, x: int, y: int) -> tuple[int, ...]:
    value = img.getpixel((x, y))
    assert isinstance(value, tuple)
    return value


def _near(got: tuple[int, ...], want: tuple[int, int, int], tol: int = 8) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(got, want, strict=True))


def test_the_page_in_chromium_shows_the_box_in_its_labels_colour_and_loads_nothing(
    tmp_path: Path,
) -> None:
    src = tfrecord_zip(tmp_path / "one.zip", [item("plain.png", CAT)])
    page = tmp_path / "one.preview.html"
    proc = tfdrop("preview", src, "-o", page)
    assert proc.returncode == 0, proc.stderr
    assert _external(page) == []

    shot, requests = _chromium(page, tmp_path / "page")
    left, top, right, bottom = _bbox_of(shot, PLAIN)
    assert (right - left, bottom - top) == (320, 160)  # the 200 x 100 image as a thumbnail
    cat = label_colour("cat")
    # the box (0.25..0.75 of 320 x 160: x 80..240, y 40..120), drawn 3 pixels wide inward
    for x, y in ((81, 80), (239, 80), (160, 41), (160, 119)):
        assert _near(_px(shot, left + x, top + y), cat), (x, y)
    for x, y in ((160, 80), (40, 80), (300, 140)):  # inside and outside: the image itself
        assert _near(_px(shot, left + x, top + y), PLAIN), (x, y)

    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    # the same check does see what a page fetches from outside
    control = tmp_path / "control.html"
    control.write_text('<img src="http://example.com/x.png">')
    assert _chromium(control, tmp_path / "control")[1] == ["http://example.com/x.png"]


def test_items_past_the_limit_are_counted_but_not_decoded(tmp_path: Path) -> None:
    broken = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG that does not decode
    items = [item(f"ok{i}.png", CAT) for i in range(3)]
    items.append(item("late.png", Annotation("dog", CAT.box, label_id=2), image=broken))
    src = tfrecord_zip(tmp_path / "four.zip", items)

    page = tmp_path / "limited.html"
    proc = tfdrop("preview", src, "-o", page, "--limit", "3")
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "4 items, 4 objects, 2 labels" in text
    assert "late.png" not in text  # counted in the header, never drawn or marked
    assert text.count("<figure") == 3
    assert 'class="bad"' not in text

    everything = tmp_path / "all.html"
    assert tfdrop("preview", src, "-o", everything).returncode == 0
    text = everything.read_text()
    card = text[text.index("late.png") - 2000 :]
    assert '<figure id="item-3" class="bad">' in text
    assert "cannot be decoded" in card


def test_validate_problems_are_marked_on_their_item(tmp_path: Path) -> None:
    outside = Annotation("cat", Box(-0.2, 0.1, 0.5, 1.3), label_id=1)
    wrong_size = Item(
        name="liar.png", width=300, height=100, image=png(), image_format="png", objects=(CAT,)
    )
    src = tfrecord_zip(tmp_path / "bad.zip", [item("out.png", outside), wrong_size])
    page = tmp_path / "bad.html"
    proc = tfdrop("preview", src, "-o", page)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    first, second = text.split('<figure id="item-1"')
    assert "-0.2" in first.split('<figure id="item-0"')[1]  # xmin outside [0, 1], on item 0
    assert "image/width: is 300 but the image is 200 pixels wide" in second
    assert text.count('class="bad"') == 2
    assert 'href="#item-0"' in text
    assert 'href="#item-1"' in text


def test_a_label_and_subset_filter_shows_only_matching_items_but_counts_all(
    tmp_path: Path,
) -> None:
    dog = Annotation("dog", Box(0.1, 0.1, 0.2, 0.2), label_id=2)
    src = tfrecord_zip(tmp_path / "mix.zip", [item("a.png", CAT), item("b.png", dog)])
    page = tmp_path / "dogs.html"
    assert tfdrop("preview", src, "-o", page, "--label", "dog").returncode == 0
    text = page.read_text()
    assert "b.png" in text
    assert "a.png" not in text
    assert "2 items, 2 objects" in text
    assert "of 1 matching labels dog" in text
    assert tfdrop("preview", src, "-o", page, "--subset", "val").returncode == 0
    assert page.read_text().count("<figure") == 0


def test_masks_are_translucent_overlays_and_keypoints_are_drawn() -> None:
    mask = io.BytesIO()
    bits = Image.new("L", (200, 100), 0)
    bits.paste(1, (0, 0, 100, 100))  # the left half
    bits.save(mask, format="PNG")
    obj = Annotation(
        "cat",
        Box(0.0, 0.0, 0.5, 1.0),
        label_id=1,
        mask=mask.getvalue(),
        keypoints=(Point(0.75, 0.5, 2, "nose"), Point(0.0, 0.0, 0, "tail")),
    )
    drawn = render(item("m.png", obj), max_pixels=1 << 26, thumb=None, png=True)
    assert drawn.problems == ()
    with Image.open(io.BytesIO(drawn.data)) as img:
        rgb = img.convert("RGB")
    cat = label_colour("cat")
    tinted = _px(rgb, 50, 60)
    assert tinted not in (PLAIN, cat)  # a blend of both: the mask is translucent
    assert all(min(p, c) <= t <= max(p, c) for t, p, c in zip(tinted, PLAIN, cat, strict=True))
    assert rgb.getpixel((150, 20)) == PLAIN
    assert rgb.getpixel((150, 50)) == cat  # the visible keypoint at (0.75, 0.5)


def test_png_writes_full_size_annotated_images_of_a_voc_archive(tmp_path: Path) -> None:
    xml = (
        "<annotation><filename>a.png</filename><size><width>200</width><height>100</height>"
        "</size><object><name>cat</name><difficult>1</difficult><bndbox><xmin>50</xmin>"
        "<ymin>25</ymin><xmax>150</xmax><ymax>75</ymax></bndbox></object></annotation>"
    )
    src = tmp_path / "voc.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("Annotations/a.xml", xml)
        zf.writestr("JPEGImages/a.png", png())
    out = tmp_path / "pngs"
    proc = tfdrop("preview", src, "--png", out)
    assert proc.returncode == 0, proc.stderr
    (written,) = sorted(out.iterdir())
    assert written.name == "000000-a.png"
    with Image.open(written) as img:
        assert img.format == "PNG"
        assert img.size == (200, 100)
        rgb = img.convert("RGB")
    cat = label_colour("cat")
    assert rgb.getpixel((51, 50)) == cat
    assert rgb.getpixel((148, 50)) == cat
    assert rgb.getpixel((100, 50)) == PLAIN
    assert rgb.getpixel((10, 90)) == PLAIN


def test_bad_input_is_a_clear_error_without_a_traceback(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    proc = tfdrop("preview", junk)
    assert proc.returncode == 1
    assert proc.stderr.startswith("tfdrop: error:")
    assert not (tmp_path / "junk.preview.html").exists()
    assert tfdrop("preview", tmp_path / "missing.zip").returncode == 1
    src = tfrecord_zip(tmp_path / "ok.zip", [item("a.png", CAT)])
    assert tfdrop("preview", src, "-o", tmp_path / "x.txt").returncode == 2
    assert tfdrop("preview", src, "--limit", "0").returncode == 2


def test_a_broken_frame_ends_its_file_and_the_page_says_so(tmp_path: Path) -> None:
    data = bytearray(records_bytes([item("a.png", CAT), item("b.png", CAT)]))
    data[-10] ^= 0xFF  # the second record's data CRC no longer matches
    src = tmp_path / "cut.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("train.tfrecord", bytes(data))
        zf.writestr("label_map.pbtxt", LABEL_MAP)
    page = tmp_path / "cut.html"
    proc = tfdrop("preview", src, "-o", page)
    assert proc.returncode == 1
    assert "reading stopped" in proc.stderr
    assert "record 1" in proc.stderr
    text = page.read_text()
    assert "a.png" in text
    assert "reading stopped" in text


@pytest.mark.interop
def test_a_tfrecord_written_by_tensorflow_previews(tf: ModuleType, tmp_path: Path) -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (200, 100), PLAIN).save(jpeg, format="JPEG", quality=95)

    def feature(values: list[bytes] | list[int] | list[float]) -> object:
        if isinstance(values[0], bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if isinstance(values[0], int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": feature([jpeg.getvalue()]),
                "image/format": feature([b"jpeg"]),
                "image/filename": feature([b"tf.jpg"]),
                "image/height": feature([100]),
                "image/width": feature([200]),
                "image/object/bbox/xmin": feature([0.25]),
                "image/object/bbox/xmax": feature([0.75]),
                "image/object/bbox/ymin": feature([0.25]),
                "image/object/bbox/ymax": feature([0.75]),
                "image/object/class/label": feature([1]),
                "image/object/class/text": feature([b"cat"]),
            }
        )
    )
    record = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(record)) as writer:
        writer.write(example.SerializeToString())
    page = tmp_path / "tf.html"
    proc = tfdrop("preview", record, "-o", page)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "1 items, 1 objects" in text
    assert "tf.jpg" in text
    assert 'class="bad"' not in text
    out = tmp_path / "pngs"
    assert tfdrop("preview", record, "--png", out).returncode == 0
    (written,) = out.iterdir()
    with Image.open(written) as img:
        rgb = img.convert("RGB")
    assert _near(_px(rgb, 51, 50), label_colour("cat"), tol=2)
    assert _near(_px(rgb, 100, 50), PLAIN, tol=6)  # the JPEG's own pixels


def test_config_preview_key_is_off_by_default_and_bounded(tmp_path: Path) -> None:
    base = f'[[pipeline]]\ndrop = "{tmp_path / "in"}"\noutput = "{tmp_path / "out"}"\n'
    assert parse_config(base, env={}).pipelines[0].preview == 0
    assert parse_config(base + "preview = 0\n", env={}).pipelines[0].preview == 0
    assert parse_config(base + "preview = 25\n", env={}).pipelines[0].preview == 25
    for bad in ("-1", "true", "1.5", '"10"', str(MAX_PREVIEW + 1)):
        with pytest.raises(ConfigError, match="preview"):
            parse_config(base + f"preview = {bad}\n", env={})


def test_an_image_over_the_pixel_budget_is_marked_not_decoded(tmp_path: Path) -> None:
    src = tfrecord_zip(tmp_path / "big.zip", [item("big.png", CAT)])  # 200 x 100 = 20000
    page = tmp_path / "big.html"
    proc = tfdrop("preview", src, "-o", page, "--limit", "max_mask_pixels=10000")
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert "image not decoded: 200 x 100 pixels is over the job budget" in text
    assert '<figure id="item-0" class="bad">' in text


# --- the attack on preview (findings 1-13) ------------------------------------------------


def zero_png(width: int, height: int, colour_type: int = 0) -> bytes:
    """A PNG of zeros at any size, built row by row (a few KB for 8000 x 8000)."""
    bpp = {0: 1, 2: 3, 6: 4}[colour_type]

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    z = zlib.compressobj(1)
    row = b"\0" * (1 + width * bpp)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def ico_around(png_bytes: bytes) -> bytes:
    """An ICO whose directory says 16 x 16 and whose one image is ``png_bytes``."""
    head = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png_bytes), 22)
    return head + entry + png_bytes


def progressive_jpeg_declaring(side: int) -> bytes:
    """A 64 x 48 progressive JPEG whose SOF2 is patched to declare ``side`` x ``side``."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 90, 90)).save(buf, "JPEG", progressive=True, subsampling=0)
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc2")
    struct.pack_into(">HH", data, sof + 5, side, side)
    return bytes(data)


def _one(image: bytes, fmt: str = "png", size: tuple[int, int] = (200, 100), **kw: Any) -> Item:
    return Item(name="x." + fmt, width=size[0], height=size[1], image=image, image_format=fmt, **kw)


def test_the_label_table_shows_200_labels_by_50_subsets_and_summarises_the_rest() -> None:
    counts = Counts()
    for s in range(60):
        objs = tuple(Annotation(f"L{k:03d}", CAT.box) for k in range(300))
        counts.add(Item(name=f"{s}.png", subset=f"s{s:02d}", objects=objs))
    pieces = list(header("t", "tfrecord", counts, ""))
    page = "".join(pieces)
    assert len(pieces) > 200  # written a row at a time, not as one string
    assert page.count("<tr>") == (1 + 60) + (1 + TABLE_LABELS + 1)  # subsets, then labels
    assert "... 100 more labels" in page
    assert "... 10 more subsets" in page
    assert "L299" not in page
    assert ">s49<" in page
    assert ">s50<" not in page.split("<table>")[2]  # the label table's columns stop at 50
    assert "<td>10</td><td>60</td></tr>" in page  # 10 objects past column 50, 60 in all


def test_more_labels_or_subsets_than_the_budget_is_refused_before_the_page(
    tmp_path: Path,
) -> None:
    many = [
        item(f"{i}.png", *(Annotation(f"l{i}_{k}", CAT.box) for k in range(10))) for i in range(3)
    ]
    src = tfrecord_zip(tmp_path / "labels.zip", many)
    page = tmp_path / "labels.html"
    proc = tfdrop("preview", src, "-o", page, "--limit", "max_labels=25")
    assert proc.returncode == 1
    assert "max_labels" in proc.stderr
    assert "labels.zip" in proc.stderr
    assert not page.exists()
    subsets = tmp_path / "subsets.zip"
    with zipfile.ZipFile(subsets, "w") as zf:
        for s in ("a", "b", "c"):
            zf.writestr(f"{s}.tfrecord", records_bytes([item("x.png", CAT)]))
    proc = tfdrop("preview", subsets, "-o", page, "--limit", "max_subsets=2")
    assert proc.returncode == 1
    assert "max_subsets" in proc.stderr
    assert not page.exists()


def test_an_ico_holding_a_huge_png_is_not_opened_and_no_warning_escapes() -> None:
    ico = ico_around(zero_png(3000, 3000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawn = render(_one(ico, size=(16, 16)), max_pixels=1 << 26)
    assert caught == []
    assert not drawn.decoded
    (problem,) = drawn.problems
    assert "not a readable image" in problem
    assert "JPEG, PNG, BMP, GIF, TIFF, WebP" in problem


def test_probe_opens_only_the_formats_tfdrop_reads() -> None:
    with pytest.raises(DataError, match="not a readable image"):
        probe(ico_around(zero_png(64, 64)), name="a.png")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 80 60\nshowpage\n"
    with pytest.raises(DataError, match="not a readable image"):
        probe(eps, name="a.jpg")
    for fmt, kind in (("BMP", "bmp"), ("GIF", "gif"), ("TIFF", "tiff"), ("WEBP", "webp")):
        buf = io.BytesIO()
        Image.new("RGB", (30, 20)).save(buf, fmt)
        assert probe(buf.getvalue(), name="a") == ImageInfo(kind, 30, 20)


def test_a_progressive_jpeg_is_budgeted_at_its_full_size_not_its_draft() -> None:
    jpeg = progressive_jpeg_declaring(13000)
    drawn = render(_one(jpeg, "jpeg", (13000, 13000)), max_pixels=1 << 26)
    assert not drawn.decoded
    assert any(
        "progressive JPEG of 13000 x 13000 pixels x 3 components" in p for p in drawn.problems
    )
    small = progressive_jpeg_declaring(64)  # patched to 64 x 64 but otherwise whole
    assert not any(
        "progressive" in p
        for p in render(_one(small, "jpeg", (64, 64)), max_pixels=1 << 26).problems
    )


def test_a_palette_png_with_transparency_draws_without_a_warning() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (80, 60), (30, 160, 220)).convert("P").save(buf, "PNG", transparency=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        drawn = render(_one(buf.getvalue(), size=(80, 60)), max_pixels=1 << 26)
    assert caught == []
    assert drawn.problems == ()


def _mask(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("L", size, 1).save(buf, "PNG")
    return buf.getvalue()


def test_masks_of_another_size_are_not_decoded() -> None:
    huge = zero_png(8000, 8000)
    objs = (
        Annotation("cat", CAT.box, mask=_mask((16, 12))),
        *(Annotation("cat", CAT.box, mask=huge) for _ in range(3)),
    )
    drawn = render(_one(png((80, 60)), size=(80, 60), objects=objs), max_pixels=1 << 26)
    assert drawn.problems == ("4 masks not drawn: not a PNG of the image's size (80 x 60)",)


def test_an_items_masks_together_must_fit_the_budget() -> None:
    objs = tuple(Annotation("cat", CAT.box, mask=_mask((80, 60))) for _ in range(5))
    one = _one(png((80, 60)), size=(80, 60), objects=objs)
    drawn = render(one, max_pixels=80 * 60 * 4)
    (problem,) = drawn.problems
    assert problem.startswith("masks not drawn: 5 masks of 80 x 60 (24000 pixels) exceed")
    assert render(one, max_pixels=80 * 60 * 5).problems == ()


def test_a_cut_short_image_is_a_problem_and_no_image_bytes_a_note() -> None:
    # said once, by what validate says of the image (codec.imagehead.image_complete)
    whole = png((80, 60))
    cut = _one(whole[:-12], size=(80, 60))
    assert item_problems(cut) == ["image/encoded: is a PNG image cut short (it has no end marker)"]
    assert not any("end marker" in p for p in render(cut, max_pixels=1 << 26).problems)
    buf = io.BytesIO()
    Image.new("RGB", (80, 60)).save(buf, "JPEG")
    cut = _one(buf.getvalue()[:-2], "jpeg", (80, 60))
    assert item_problems(cut) == ["image/encoded: is a JPEG image cut short (it has no end marker)"]
    assert item_problems(_one(buf.getvalue(), "jpeg", (80, 60))) == []
    assert render(_one(buf.getvalue(), "jpeg", (80, 60)), max_pixels=1 << 26).problems == ()
    empty = render(_one(b"", "jpeg", (80, 60)), max_pixels=1 << 26)
    assert empty.problems == ()
    assert empty.notes == ("no image bytes (written with --no-images?)",)


def test_numerical_masks_are_noted_not_drawn(tmp_path: Path) -> None:
    src = tmp_path / "num"
    src.mkdir()
    (src / "train.tfrecord").write_bytes(numerical_mask_records())
    page = tmp_path / "num.html"
    proc = tfdrop("preview", src, "-o", page)
    assert proc.returncode == 0, proc.stderr
    text = page.read_text()
    assert '<ul class="notes"><li>numerical masks (image/object/mask as floats): not drawn' in text
    assert 'class="bad"' not in text


def test_the_second_pass_stops_after_the_last_matching_item(tmp_path: Path) -> None:
    dog = Annotation("dog", CAT.box, label_id=2)
    folder = tmp_path / "two"
    folder.mkdir()
    (folder / "a.tfrecord").write_bytes(records_bytes([item("dog.png", dog)]))
    (folder / "b.tfrecord").write_bytes(records_bytes([item("cat.png", CAT)]))
    options = PreviewOptions(labels=frozenset({"dog"}))
    with open_input(folder, options.limits) as source:
        (folder / "b.tfrecord").unlink()  # listed, but reading it now would fail
        stops: list[str] = []
        shown = list(_shown(source, "tfrecord", options, 1, stops))
    assert [e.where for e in shown] == ["dog.png"]
    assert stops == []


def test_from_a_format_the_archive_is_not_is_an_error_naming_it(tmp_path: Path) -> None:
    src = tfrecord_zip(tmp_path / "records.zip", [item("a.png", CAT)])
    page = tmp_path / "voc.html"
    proc = tfdrop("preview", src, "--from", "voc", "-o", page)
    assert proc.returncode == 1
    assert proc.stderr.startswith("tfdrop: error:")
    assert "records.zip" in proc.stderr
    assert "not a Pascal VOC archive" in proc.stderr
    assert not page.exists()

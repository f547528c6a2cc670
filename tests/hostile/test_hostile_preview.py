"""The adversarial suite, ``tfdrop preview`` and the images it opens: labels x subsets, an ICO
holding a huge PNG (in a preview and in a conversion), ``--png`` and the paths it is given,
each a real CLI run under the harness's memory and time limits."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

from PIL import Image

from conftest import records_bytes
from hostile.harness import _check_common, digest, refused, run_cli
from tfdrop.codec.framing import encode_record
from tfdrop.codec.model import Annotation, Box, Item

BOX = Box(0.1, 0.1, 0.5, 0.5)


def _png(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 100, 50)).save(buf, "PNG")
    return buf.getvalue()


def _ico_of_zeros(side: int) -> bytes:
    """An ICO whose directory says 16 x 16 and holds a ``side`` x ``side`` RGB PNG of zeros
    (a few hundred KB that Pillow's ICO plugin decodes in full just to open it)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    z = zlib.compressobj(1)
    row = b"\0" * (1 + side * 3)
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    return (
        struct.pack("<HHH", 0, 1, 1)
        + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32, len(png), 22)
        + png
    )


def _item(
    name: str, *labels: str, image: bytes | None = None, size: tuple[int, int] = (64, 48)
) -> Item:
    return Item(
        name=name,
        width=size[0],
        height=size[1],
        image=_png(size) if image is None else image,
        image_format="png",
        objects=tuple(Annotation(lb, BOX) for lb in labels),
    )


def test_many_labels_in_many_subsets_make_a_small_page(tmp_path: Path) -> None:
    src = tmp_path / "wide"
    src.mkdir()
    for s in range(120):  # 120 subsets x 250 labels: a 30,000-row x 120-column table
        labels = [f"L{s}_{k}" for k in range(250)]
        (src / f"s{s:03d}.tfrecord").write_bytes(records_bytes([_item(f"{s}.png", *labels)]))
    page = tmp_path / "wide.html"
    run = run_cli(["preview", src, "-o", page, "--limit", "5"], cwd=tmp_path)
    _check_common(run, "tfdrop preview wide")
    assert run.returncode == 0, run.stderr
    text = page.read_text()
    assert "... 29800 more labels" in text
    assert "... 70 more subsets" in text
    assert page.stat().st_size < 1 << 20


def test_more_labels_than_max_labels_is_refused_naming_the_limit(tmp_path: Path) -> None:
    src = tmp_path / "many.tfrecord"
    src.write_bytes(records_bytes([_item("a.png", *(f"l{k}" for k in range(60)))]))
    refused(tmp_path, src, ("--limit", "max_labels=50"), command="preview", expect=("max_labels",))


def test_an_ico_with_a_huge_png_inside_is_not_decoded_by_preview(tmp_path: Path) -> None:
    src = tmp_path / "ico.tfrecord"
    src.write_bytes(
        records_bytes([_item("a.png", "cat", image=_ico_of_zeros(12000), size=(16, 16))])
    )
    page = tmp_path / "ico.html"
    run = run_cli(["preview", src, "-o", page], cwd=tmp_path)
    _check_common(run, "tfdrop preview ico")
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr
    assert "not a readable image" in page.read_text()


def test_an_ico_named_png_is_refused_by_a_conversion_without_decoding_it(tmp_path: Path) -> None:
    src = tmp_path / "images.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("a.png", _ico_of_zeros(12000))
        zf.writestr("b.png", _png())
    run = refused(tmp_path, src, expect=("not a readable image", "a.png"))
    assert "Warning" not in run.stderr


def _pngcase(folder: Path) -> Path:
    """A folder with one record file: a box outside the image, a JPEG cut short, a record
    that is not an Example."""
    folder.mkdir()
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48)).save(jpeg, "JPEG")
    outside = Item(
        name="outside.png",
        width=64,
        height=48,
        image=_png(),
        image_format="png",
        objects=(Annotation("cat", Box(0.1, 0.1, 1.5, 0.5), label_id=1),),
    )
    cut = Item(
        name="truncated.jpg",
        width=64,
        height=48,
        image=jpeg.getvalue()[:-200],
        image_format="jpeg",
        objects=(Annotation("cat", BOX, label_id=1),),
    )
    data = records_bytes([outside, cut]) + encode_record(b"\x0a\x03not an example")
    (folder / "train.tfrecord").write_bytes(data)
    return folder


def test_png_prints_each_problem_and_counts_what_it_drew(tmp_path: Path) -> None:
    src = _pngcase(tmp_path / "case")
    out = tmp_path / "pngs"
    run = run_cli(["preview", src, "--png", out], cwd=tmp_path)
    _check_common(run, "tfdrop preview --png")
    assert run.returncode == 0, run.stderr
    first, *problems = run.stdout.splitlines()
    assert "2 items, 2 objects, 1 unreadable records; 3 shown, 2 drawn, 3 with problems" in first
    assert len(problems) == 3
    assert problems[0].startswith("  outside.png: object 0, image/object/bbox/xmax: 1.5")
    assert problems[1].startswith("  truncated.jpg: image/encoded: is a JPEG image cut short")
    assert problems[2].startswith("  train.tfrecord, record 2: the record cannot be read")
    assert len(list(out.iterdir())) == 2


def test_png_into_the_input_folder_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    src = _pngcase(tmp_path / "case")
    before = digest(src)
    for target in (src, src / "pngs", tmp_path / "case" / ".." / "case"):
        run = run_cli(["preview", src, "--png", target], cwd=tmp_path)
        _check_common(run, "tfdrop preview --png into the input")
        assert run.returncode == 2, run.stdout + run.stderr
        assert "is inside the input" in run.stderr
        assert digest(src) == before


def test_preview_of_dot_and_dotdot_writes_beside_the_real_folder(tmp_path: Path) -> None:
    src = _pngcase(tmp_path / "case")
    run = run_cli(["preview", "."], cwd=src)
    _check_common(run, "tfdrop preview .")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "case.preview.html").is_file()
    inner = src / "inner"
    inner.mkdir()
    run = run_cli(["preview", ".."], cwd=inner)
    assert run.returncode == 0, run.stderr
    assert "case.preview.html" in run.stdout


def test_preview_of_the_root_asks_for_an_output(tmp_path: Path) -> None:
    run = run_cli(["preview", "/"], cwd=tmp_path, timeout=60)
    _check_common(run, "tfdrop preview /")
    assert run.returncode == 2
    assert "choose another -o" in run.stderr

"""Spooled runs that name the source's stored bytes (tfdrop.formats.tfrecord.spool): a record
whose image is a stored zip member is spooled without it, and the parent copies the image from
the input zip. The archive must be the one a single process writes, whatever the mix of stored,
deflated and small images; an input changed between a worker's read and the parent's copy is
refused as changed, never written."""

from __future__ import annotations

import io
import json
import os
import random
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from daemon_support import run_tfdrop, voc_xml
from tfdrop import units
from tfdrop.archive import Source, open_source
from tfdrop.codec import wire
from tfdrop.codec.example import decode_example, encode_example
from tfdrop.codec.framing import frame
from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.convert import ConvertOptions, convert
from tfdrop.errors import ArchiveError
from tfdrop.formats.tfrecord import TfrecordWriter
from tfdrop.formats.tfrecord.spool import Span, UnitSpool
from tfdrop.stream import iter_records

LABELS = ("cat", "dog", "bird")
ENCODED = b"image/encoded"


def jpeg(seed: int, side: int = 140) -> bytes:
    """A noisy JPEG (some 20 KB at 140 px: above the size a spooled record names; under 1 KB
    at 16 px)."""
    noise = random.Random(seed).randbytes(side * side * 3)
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), noise).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _coco_zip(path: Path, n: int, *, method: Any = zipfile.ZIP_STORED, tiny: int = 7) -> Path:
    """A COCO zip of ``n`` images (every ``tiny``-th a 16 px one, below the naming size),
    annotations grouped by image; images written with ``method`` (an int, or a function of
    the index giving one)."""
    sides = [16 if i % tiny == 0 else 140 for i in range(n)]
    images = [
        {"id": i + 1, "file_name": f"{i:04d}.jpg", "width": s, "height": s}
        for i, s in enumerate(sides)
    ]
    anns = [
        {"id": len(images) * 4 + i * 4 + k, "image_id": i + 1, "category_id": 1 + (i + k) % 3,
         "bbox": [1, 2, 6 + k, 8], "iscrowd": 0, "area": 48}
        for i in range(n) for k in range(1 + i % 3)
    ]  # fmt: skip
    cats = [{"id": i + 1, "name": name} for i, name in enumerate(LABELS)]
    doc = {"images": images, "annotations": anns, "categories": cats}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/instances_train.json", json.dumps(doc))
        for i, side in enumerate(sides):
            how = method(i) if callable(method) else method
            zf.writestr(f"images/train/{i:04d}.jpg", jpeg(i, side), compress_type=how)
    return path


def _spy_spans(monkeypatch: pytest.MonkeyPatch) -> list[Span]:
    seen: list[Span] = []
    write_span = TfrecordWriter.write_span

    def spy(self: TfrecordWriter, span: Span, source: Source | None = None) -> None:
        seen.append(span)
        write_span(self, span, source)

    monkeypatch.setattr(TfrecordWriter, "write_span", spy)
    return seen


# --- the codec: where an Example holds its image ---------------------------------------------


def _item(image: bytes | None, extra: tuple[tuple[str, bytes], ...] = ()) -> Item:
    objs = (Annotation(label="cat", box=Box(0.1, 0.2, 0.5, 0.6), label_id=1),)
    return Item(name="a.jpg", width=4, height=4, image=image, objects=objs, extra=extra)


_C_BUILDS = type(wire.new_builder()) is not wire.ExampleBuilder  # not with TFDROP_NO_C=1


@pytest.mark.parametrize("size", [1, 127, 128, 300, 16_383, 16_384, 2_100_000])
@pytest.mark.parametrize("builder", ["c", "python"] if _C_BUILDS else ["python"])
def test_leading_value_finds_the_image_in_what_either_builder_writes(
    size: int, builder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if builder == "python":
        monkeypatch.setattr(wire, "new_builder", wire.ExampleBuilder)
    image = os.urandom(size)
    record = encode_example(_item(image))
    start = wire.leading_value(record, ENCODED, size)
    assert start is not None
    assert record[start : start + size] == image
    assert wire.leading_value(record, ENCODED, size + 1) is None  # the length must be its own
    assert wire.leading_value(record, ENCODED, size - 1) is None


def test_leading_value_is_none_when_another_feature_comes_first() -> None:
    image = os.urandom(5000)
    # an unknown key that sorts before image/encoded (kept from a source record)
    before = encode_example(_item(image, extra=(("a/first", b"\x0a\x03\x0a\x01x"),)))
    assert b"a/first" in before
    assert wire.leading_value(before, ENCODED, len(image)) is None
    assert wire.leading_value(encode_example(_item(None)), ENCODED, 0) is not None  # empty


@given(st.binary(max_size=200), st.integers(0, 300))
def test_leading_value_never_raises_on_any_bytes(data: bytes, size: int) -> None:
    start = wire.leading_value(data, ENCODED, size)
    assert start is None or 0 < start <= len(data) - size


# --- the spool: runs that name bytes of the source --------------------------------------------


@given(
    st.lists(
        st.tuples(st.binary(min_size=0, max_size=300), st.booleans(), st.sampled_from("ab")),
        max_size=30,
    ),
    st.integers(0, 2),
)
def test_a_run_that_names_source_bytes_reads_back_as_its_framed_records(
    records: list[tuple[bytes, bool, str]], cut: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp, "source")
        # the "source": each named record's middle, at known offsets, between other bytes
        blob = io.BytesIO(b"zip bytes before")
        spool = UnitSpool(str(Path(tmp, "spool")))
        want: dict[str, bytes] = {"a": b"", "b": b""}
        spans: list[Span] = []
        for i, (record, named, subset) in enumerate(records):
            header, footer = frame(record)
            want[subset] += header + record + footer
            if named and len(record) > cut:
                start, length = cut, len(record) - cut - (len(record) - cut) // 3
                at = blob.tell()
                blob.write(record[start : start + length] + b"between")
                spool.add(subset, record, (start, length, at))
            else:
                spool.add(subset, record)
            if i % 7 == 6:
                spans += [s for s in (spool.flush("a"), spool.flush("b")) if s is not None]
        spans += spool.flush_all()
        spool.close()
        source.write_bytes(blob.getvalue())
        Path(tmp, "spool").touch()  # (not made when nothing was spooled)
        got = {"a": b"", "b": b""}
        with open(Path(tmp, "spool"), "rb") as sp, open(source, "rb") as src:
            for span in spans:
                data = b"".join(
                    os.pread(fd, n, off) for fd, off, n in span.ranges(sp.fileno(), src.fileno())
                )
                assert len(data) == span.length
                assert zlib.crc32(data) == span.crc
                got[span.subset] += data
        assert got == want
        assert sum(s.records for s in spans) == len(records)


def test_only_stored_members_of_a_zip_are_named(tmp_path: Path) -> None:
    src = tmp_path / "in.zip"
    data = jpeg(1)
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("stored.jpg", data, compress_type=zipfile.ZIP_STORED)
        zf.writestr("deflated.jpg", data, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("empty.jpg", b"", compress_type=zipfile.ZIP_STORED)
    with open_source(src) as source:
        at = source.stored_at("stored.jpg")
        assert at is not None
        assert os.pread(source.stored_fd(), len(data), at) == data
        assert source.read_bytes("stored.jpg", max_size=1 << 20) == data
        assert source.stored_at("stored.jpg") == at  # the one read's start, the same
        assert source.stored_at("deflated.jpg") is None
        assert source.stored_at("empty.jpg") is None
        source.check_stored()  # unchanged: nothing raised
    folder = tmp_path / "tree"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(data)
    with open_source(folder) as source:
        assert source.stored_at("a.jpg") is None


# --- whole conversions --------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    [zipfile.ZIP_STORED, lambda i: zipfile.ZIP_DEFLATED if i % 3 == 1 else zipfile.ZIP_STORED],
    ids=["stored", "mixed"],
)
def test_named_images_give_the_bytes_of_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: Any
) -> None:
    src = _coco_zip(tmp_path / "in.zip", 300, method=method)
    convert(src, tmp_path / "one.zip", ConvertOptions(jobs=1))
    spans = _spy_spans(monkeypatch)
    monkeypatch.setattr(units, "UNIT_BYTES", 200_000)  # many units and runs (workers fork)
    for jobs in (2, 3):
        convert(src, tmp_path / f"{jobs}.zip", ConvertOptions(jobs=jobs))
        assert (tmp_path / f"{jobs}.zip").read_bytes() == (tmp_path / "one.zip").read_bytes()
    named = sum(len(s.pieces[1::3]) for s in spans)
    stored = sum(1 for i in range(300) if i % 7 and (method == zipfile.ZIP_STORED or i % 3 != 1))
    assert named == 2 * stored  # every stored image of 4 KB or more, both runs, and no other
    with zipfile.ZipFile(tmp_path / "2.zip") as zf:
        assert zf.testzip() is None


def test_voc_items_with_objects_name_their_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only VOC items without objects kept ``image_member`` (an outside attack: 67 of 200
    named)."""
    src = tmp_path / "voc.zip"
    with zipfile.ZipFile(src, "w") as zf:
        for i in range(60):
            labels = [LABELS[k % 3] for k in range(i % 3)]  # some items with no objects
            xml = voc_xml(i, labels).replace(".png<", ".jpg<").replace(">16<", ">140<")
            zf.writestr(f"Annotations/{i:04d}.xml", xml)
            zf.writestr(f"JPEGImages/{i:04d}.jpg", jpeg(i))
    pinned = LabelMap.from_names(list(LABELS))  # every record final: all spooled
    convert(src, tmp_path / "one.zip", ConvertOptions(jobs=1, label_map=pinned))
    spans = _spy_spans(monkeypatch)
    monkeypatch.setattr(units, "UNIT_BYTES", 100_000)
    convert(src, tmp_path / "two.zip", ConvertOptions(jobs=2, label_map=pinned))
    assert sum(len(s.pieces[1::3]) for s in spans) == 60
    assert (tmp_path / "two.zip").read_bytes() == (tmp_path / "one.zip").read_bytes()


def test_a_folder_source_spools_its_records_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _coco_zip(tmp_path / "in.zip", 120)
    tree = tmp_path / "tree"
    with zipfile.ZipFile(src) as zf:
        zf.extractall(tree)
    convert(tree, tmp_path / "one.zip", ConvertOptions(jobs=1))
    spans = _spy_spans(monkeypatch)
    monkeypatch.setattr(units, "UNIT_BYTES", 200_000)
    convert(tree, tmp_path / "two.zip", ConvertOptions(jobs=2))
    assert spans
    assert not any(s.pieces for s in spans)
    assert (tmp_path / "two.zip").read_bytes() == (tmp_path / "one.zip").read_bytes()


def _forge_crc32(data: bytearray, pos: int, target: int) -> None:
    """Set ``data[pos:pos+4]`` so that the CRC-32 of ``data`` is ``target`` (CRC-32 is affine
    over GF(2): solve for the 32 bits)."""
    data[pos : pos + 4] = bytes(4)
    base = zlib.crc32(data)
    columns = []
    for bit in range(32):
        data[pos : pos + 4] = (1 << bit).to_bytes(4, "little")
        columns.append(zlib.crc32(data) ^ base)
    # rows: (mask of input bits, output bit value) for each of the 32 output bits
    rows = [(sum(((c >> o) & 1) << b for b, c in enumerate(columns)), (base ^ target) >> o & 1)
            for o in range(32)]  # fmt: skip
    solution = 0
    for col in range(32):
        pivot = next(i for i in range(col, 32) if rows[i][0] >> col & 1)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for i in range(32):
            if i != col and rows[i][0] >> col & 1:
                rows[i] = (rows[i][0] ^ rows[col][0], rows[i][1] ^ rows[col][1])
    for col in range(32):
        solution |= rows[col][1] << col
    data[pos : pos + 4] = solution.to_bytes(4, "little")
    assert zlib.crc32(data) == target


def _rewrite_before_first_named_span(
    monkeypatch: pytest.MonkeyPatch, src: Path, how: str
) -> list[int]:
    """Change the input zip in place once, just before the parent copies the first run that
    names its bytes (after the workers read them): 16 bytes of a named image rewritten, with
    its mtime kept (``flip``), kept and the member's CRC-32 kept too (``forged``), or moved
    (``touch``); or the file cut (``cut``); or only its mode changed (``chmod``)."""
    done: list[int] = []
    write_span = TfrecordWriter.write_span

    def spy(self: TfrecordWriter, span: Span, source: Source | None = None) -> None:
        if span.pieces and not done:
            at, length = span.pieces[1], span.pieces[2]
            done.append(at)
            st = src.stat()
            if how == "cut":
                os.truncate(src, at + 10)
            elif how == "chmod":
                os.chmod(src, 0o600)
            else:
                with open(src, "r+b") as f:
                    image = bytearray(os.pread(f.fileno(), length, at))
                    crc = zlib.crc32(image)
                    image[100:116] = bytes(16)
                    if how == "forged":
                        _forge_crc32(image, 200, crc)
                    os.pwrite(f.fileno(), bytes(image), at)
                if how != "touch":
                    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns))
        write_span(self, span, source)

    monkeypatch.setattr(TfrecordWriter, "write_span", spy)
    return done


@pytest.mark.parametrize("how", ["flip", "forged", "touch", "cut", "chmod"])
def test_an_input_changed_before_the_parent_copies_it_is_refused_as_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Any move of the input's stamp, its ctime alone included, refuses the named bytes: a
    rewrite with its mtime put back and its CRC-32 kept (``forged``) passed a proof by the
    member's CRC-32 and was published unchecked (an outside attack); a chmod cannot be told
    from it."""
    src = _coco_zip(tmp_path / "in.zip", 200)
    done = _rewrite_before_first_named_span(monkeypatch, src, how)
    out = tmp_path / "out.zip"
    with pytest.raises(ArchiveError) as info:
        convert(src, out, ConvertOptions(jobs=2))
    assert done
    assert "changed while it was read" in info.value.message
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name != "in.zip"] == []


def test_an_image_whose_name_lies_about_its_format_is_written_as_what_it_is(
    tmp_path: Path,
) -> None:
    """A PNG named .jpg was published with image/format 'jpeg', and validate refused the
    archive (an outside attack)."""
    src = tmp_path / "in.zip"
    buf = io.BytesIO()
    Image.frombytes("RGB", (40, 40), random.Random(3).randbytes(4800)).save(buf, format="PNG")
    images = [{"id": 1, "file_name": "x.jpg", "width": 40, "height": 40}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 6, 8], "iscrowd": 0,
             "area": 48}]  # fmt: skip
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("annotations/instances_train.json", json.dumps(doc))
        zf.writestr("images/train/x.jpg", buf.getvalue())
    for jobs in (1, 2):
        convert(src, tmp_path / f"{jobs}.zip", ConvertOptions(jobs=jobs))
        done = run_tfdrop("validate", tmp_path / f"{jobs}.zip", cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        with zipfile.ZipFile(tmp_path / f"{jobs}.zip") as zf:
            record = next(iter_records(io.BytesIO(zf.read("train.tfrecord"))))
        assert decode_example(record).image_format == "png"


@pytest.mark.parametrize("fmt", ["webp", "bmp", "tiff"])
def test_without_images_a_format_word_validate_refuses_is_left_out(
    tmp_path: Path, fmt: str
) -> None:
    """With --no-images, a COCO image named .webp was written with image/format 'webp', and
    validate refused the archive (an outside attack)."""
    src = tmp_path / "in.zip"
    images = [{"id": 1, "file_name": f"x.{fmt}", "width": 40, "height": 40}]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 6, 8], "iscrowd": 0,
             "area": 48}]  # fmt: skip
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "cat"}]}
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("annotations/instances_train.json", json.dumps(doc))
    out = tmp_path / "out.zip"
    convert(src, out, ConvertOptions(images=False))
    done = run_tfdrop("validate", out, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with zipfile.ZipFile(out) as zf:
        record = next(iter_records(io.BytesIO(zf.read("train.tfrecord"))))
    assert decode_example(record).image_format == ""

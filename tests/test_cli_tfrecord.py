"""``tfdrop validate``, ``inspect`` and ``convert`` on TFRecords, run as real subprocesses.

Good and bad files (a flipped CRC byte, a truncated file, GZIP/ZLIB files, a shard set, a bare
``.record``, a zip): exit codes 0 (valid), 1 (bad input), 2 (usage); messages name the file,
record index, byte offset and key; ``--json`` prints JSON lines; never a traceback. ``convert``
writes round-robin shards, GZIP members TensorFlow reads, empty ``image/encoded`` without
images, and pins ids to a label map (an unknown label fails naming it).
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, cast

import pytest
from PIL import Image

from conftest import records_bytes, tfdrop
from tfdrop.codec.example import decode_example, encode_example
from tfdrop.codec.labelmap import format_label_map
from tfdrop.codec.model import Annotation, Box, Item, LabelMap
from tfdrop.codec.proto import Example
from tfdrop.codec.wire import varint
from tfdrop.stream import iter_records

N = 5
ITEMS = [
    Item(
        name=f"img_{i}.jpg",
        width=32,
        height=24,
        image=b"\xff\xd8\xff\xda\x00\x02" + bytes([i]) * 40 + b"\xff\xd9",
        image_format="jpeg",
        objects=(
            Annotation(
                label=["cat", "dog"][i % 2], box=Box(0.125, 0.25, 0.5, 0.75), label_id=i % 2 + 1
            ),
        ),
    )
    for i in range(N)
]
RECORD = len(encode_example(ITEMS[0])) + 16  # every record frames to the same size


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    good = records_bytes(ITEMS)
    assert len(good) == N * RECORD
    (d / "good.tfrecord").write_bytes(good)
    (d / "good.gz.tfrecord").write_bytes(records_bytes(ITEMS, "gzip"))
    (d / "good.zlib.tfrecord").write_bytes(records_bytes(ITEMS, "zlib"))
    (d / "bare.record").write_bytes(good)
    crc = bytearray(good)
    crc[2 * RECORD + 30] ^= 0x40  # a byte inside record 2's data
    (d / "crc.tfrecord").write_bytes(bytes(crc))
    (d / "trunc.tfrecord").write_bytes(good[:-7])
    (d / "x.tfrecord-00000-of-00002").write_bytes(records_bytes(ITEMS[:2]))
    (d / "x.tfrecord-00001-of-00002").write_bytes(records_bytes(ITEMS[2:], "gzip"))
    (d / "garbage.tfrecord").write_bytes(b"this is not a TFRecord file\n" * 4)
    nan_box = Annotation(
        label="cat", box=Box(math.nan, 0.0, math.inf, 1.0), label_id=1, area=-math.inf
    )
    (d / "nan.tfrecord").write_bytes(records_bytes([Item(name="n.jpg", objects=(nan_box,))]))
    (d / "cat_only.pbtxt").write_text("item {\n  id: 1\n  name: 'cat'\n}\n")
    (d / "broken.pbtxt").write_text("item {\n  id: 1\n  name: 'cat'\n}\nitem {\n  id: one\n}\n")
    (d / "pin.pbtxt").write_text(format_label_map(LabelMap.from_names(["bird", "dog", "cat"])))
    with zipfile.ZipFile(d / "ok.zip", "w") as z:
        z.writestr("train.tfrecord", good)
        z.writestr("label_map.pbtxt", format_label_map(LabelMap.from_names(["cat", "dog"])))
    with zipfile.ZipFile(d / "bad.zip", "w") as z:
        z.writestr("train.tfrecord", good)
        z.writestr("val.tfrecord", bytes(crc))
    return d


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


# --- validate ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["good.gz.tfrecord", "good.zlib.tfrecord", "bare.record"])
def test_validate_a_good_file_in_any_compression_exits_0(d: Path, name: str) -> None:
    proc = tfdrop("validate", d / name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == f"{d / name}: {N} records in 1 files: valid"


def test_validate_a_flipped_crc_names_file_record_and_offset(d: Path) -> None:
    path = d / "crc.tfrecord"
    proc = tfdrop("validate", path)
    assert proc.returncode == 1
    first = proc.stdout.splitlines()[0]
    assert first == f"{path}, record 2, offset {2 * RECORD}: data CRC mismatch"
    assert "INVALID: 1 problems" in proc.stdout
    proc = tfdrop("validate", "--json", path)
    assert proc.returncode == 1
    problem, summary = json_lines(proc.stdout)
    assert problem == {
        "file": str(path),
        "message": "data CRC mismatch",
        "kind": "crc_mismatch",
        "record": 2,
        "offset": 2 * RECORD,
    }
    assert summary == {"summary": {"valid": False, "files": 1, "records": 2, "problems": 1}}


def test_validate_a_truncated_file_names_the_last_record(d: Path) -> None:
    proc = tfdrop("validate", "--json", d / "trunc.tfrecord")
    assert proc.returncode == 1
    problem = json_lines(proc.stdout)[0]
    assert (problem["kind"], problem["record"], problem["offset"]) == (
        "truncated_record",
        N - 1,
        (N - 1) * RECORD,
    )


def test_validate_one_shard_checks_the_whole_set(d: Path) -> None:
    proc = tfdrop("validate", d / "x.tfrecord-00000-of-00002")
    assert proc.returncode == 0
    assert f"{N} records in 2 files: valid" in proc.stdout


def test_validate_a_zip_names_the_member_and_checks_the_others(d: Path) -> None:
    assert tfdrop("validate", d / "ok.zip").returncode == 0
    proc = tfdrop("validate", d / "bad.zip")
    assert proc.returncode == 1
    assert f"{d / 'bad.zip'}:val.tfrecord, record 2, offset {2 * RECORD}: " in proc.stdout
    assert f"{N + 2} records in 2 files" in proc.stdout


def test_validate_garbage_and_missing_files_exit_1_with_a_message(d: Path) -> None:
    proc = tfdrop("validate", d / "garbage.tfrecord")
    assert proc.returncode == 1
    assert proc.stdout.startswith(f"{d / 'garbage.tfrecord'}, record 0, offset 0: ")
    proc = tfdrop("validate", d / "missing.tfrecord")
    assert proc.returncode == 1
    assert proc.stderr.startswith("tfdrop: error: ")
    assert "missing.tfrecord" in proc.stderr


def test_validate_against_a_label_map_names_key_and_object(d: Path) -> None:
    proc = tfdrop("validate", "--json", "--label-map", d / "cat_only.pbtxt", d / "good.tfrecord")
    assert proc.returncode == 1
    *problems, summary = json_lines(proc.stdout)
    assert [(p["record"], p["offset"], p["object"], p["key"]) for p in problems] == [
        (1, RECORD, 0, "image/object/class/text"),
        (3, 3 * RECORD, 0, "image/object/class/text"),
    ]
    assert "'dog'" in str(problems[0]["message"])
    assert summary["summary"] == {"valid": False, "files": 1, "records": N, "problems": 2}


def test_a_broken_label_map_is_named_with_its_line(d: Path) -> None:
    proc = tfdrop("validate", "--label-map", d / "broken.pbtxt", d / "good.tfrecord")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"tfdrop: error: {d / 'broken.pbtxt'}, line 6: ")


def test_usage_errors_exit_2(d: Path) -> None:
    assert tfdrop("validate").returncode == 2
    proc = tfdrop("convert", d / "good.tfrecord", "--to", "tfrecord", "--shards", "0")
    assert proc.returncode == 2
    assert "--shards" in proc.stderr


# --- inspect ----------------------------------------------------------------------------------


def test_inspect_prints_text_and_json_lines(d: Path) -> None:
    proc = tfdrop("inspect", "--limit", "2", d / "good.gz.tfrecord")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"[{d / 'good.gz.tfrecord'} #0] img_0.jpg  32x24 jpeg")
    assert lines[1] == "  0: cat (id 1) box [0.1250, 0.2500, 0.5000, 0.7500]"
    assert len([x for x in lines if x.startswith("[")]) == 2
    proc = tfdrop("inspect", "--json", d / "ok.zip")
    assert proc.returncode == 0
    rows = json_lines(proc.stdout)
    assert [r["filename"] for r in rows] == [f"img_{i}.jpg" for i in range(N)]
    assert rows[1]["subset"] == "train"
    assert rows[1]["objects"] == [{"label": "dog", "id": 2, "box": [0.125, 0.25, 0.5, 0.75]}]
    assert rows[0]["image_bytes"] == 48


def test_inspect_stops_at_a_bad_record_with_a_clear_error(d: Path) -> None:
    proc = tfdrop("inspect", "--json", d / "crc.tfrecord")
    assert proc.returncode == 1
    assert len(json_lines(proc.stdout)) == 2  # the two good records before it
    assert f"record 2, offset {2 * RECORD}: data CRC mismatch" in proc.stderr


# --- convert ----------------------------------------------------------------------------------


def member(z: zipfile.ZipFile, name: str) -> list[bytes]:
    with z.open(name) as f:
        return list(iter_records(cast(BinaryIO, f)))


@pytest.mark.interop
def test_convert_writes_round_robin_gzip_shards_tensorflow_reads(
    d: Path, tmp_path: Path, tf: ModuleType
) -> None:
    out = tmp_path / "sharded.zip"
    proc = tfdrop(
        "convert", d / "ok.zip", "--to", "tfrecord", "--shards", "3", "--compression", "gzip",
        "-o", out,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "sharded.report.json").is_file()
    names = [f"train.tfrecord-{i:05d}-of-00003" for i in range(3)]
    with zipfile.ZipFile(out) as z:
        assert sorted(z.namelist()) == sorted([*names, "label_map.pbtxt"])
        for i, name in enumerate(names):
            data = z.read(name)
            assert data[:2] == b"\x1f\x8b"
            (tmp_path / name).write_bytes(data)
            got = [decode_example(r).name for r in member(z, name)]
            assert got == [f"img_{k}.jpg" for k in range(i, N, 3)]
    desc = {
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    }
    ds = tf.data.TFRecordDataset([str(tmp_path / n) for n in names], compression_type="GZIP")
    seen = {}
    for raw in ds:
        ex = tf.io.parse_single_example(raw, desc)
        seen[ex["image/filename"].numpy().decode()] = (
            ex["image/encoded"].numpy(),
            tf.sparse.to_dense(ex["image/object/class/label"]).numpy().tolist(),
        )
    assert seen == {it.name: (it.image, [it.objects[0].label_id]) for it in ITEMS}


def test_convert_without_images_writes_empty_image_encoded(d: Path, tmp_path: Path) -> None:
    out = tmp_path / "noimg.zip"
    proc = tfdrop("convert", d / "good.tfrecord", "--to", "tfrecord", "--no-images", "-o", out)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as z:
        recs = member(z, "good.tfrecord")
    assert len(recs) == N
    for rec in recs:
        feats = Example.FromString(rec).features.feature  # type: ignore[attr-defined]
        assert list(feats["image/encoded"].bytes_list.value) == [b""]
        assert list(feats["image/object/bbox/xmax"].float_list.value) == [0.5]


def test_convert_pins_ids_to_a_label_map_and_fails_on_an_unknown_label(
    d: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pinned.zip"
    proc = tfdrop(
        "convert", d / "ok.zip", "--to", "tfrecord", "--label-map", d / "pin.pbtxt", "-o", out
    )
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as z:
        ids = {
            (o.label, o.label_id)
            for r in member(z, "train.tfrecord")
            for o in decode_example(r).objects
        }
        assert ids == {("dog", 2), ("cat", 3)}
        assert z.read("label_map.pbtxt").decode() == (d / "pin.pbtxt").read_text()
    bad = tmp_path / "unknown.zip"
    proc = tfdrop(
        "convert", d / "ok.zip", "--to", "tfrecord", "--label-map", d / "cat_only.pbtxt", "-o", bad
    )
    assert proc.returncode == 1
    assert "label 'dog' is not in the pinned label map" in proc.stderr
    assert "img_1.jpg" in proc.stderr
    assert not bad.exists()


def test_convert_a_corrupt_input_exits_1_and_writes_nothing(d: Path, tmp_path: Path) -> None:
    out = tmp_path / "never.zip"
    proc = tfdrop("convert", d / "bad.zip", "--to", "tfrecord", "-o", out)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"tfdrop: error: {d / 'bad.zip'}, member val.tfrecord, record 2")
    assert f"offset {2 * RECORD}" in proc.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_convert_a_file_name_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    # os.listdir gives "\udcff.png" for the bytes b"\xff.png"; encode_example crashed on it
    # with a UnicodeEncodeError traceback
    src = tmp_path / "camera"
    src.mkdir()
    buf = io.BytesIO()
    Image.new("RGB", (4, 3)).save(buf, "PNG")
    png = buf.getvalue()
    with open(os.path.join(os.fsencode(src), b"\xff.png"), "wb") as f:
        f.write(png)
    out = tmp_path / "out.zip"
    proc = tfdrop("convert", src, "--to", "tfrecord", "-o", out)
    assert proc.returncode == 1
    assert "image/filename" in proc.stderr
    assert "not valid Unicode" in proc.stderr
    assert not out.exists()


def _strict(token: str) -> object:
    raise AssertionError(f"not JSON: {token}")


def test_inspect_json_is_strict_json_even_for_nan_boxes(d: Path) -> None:
    # json.dumps wrote bare NaN / Infinity, which JSON parsers other than Python's refuse
    proc = tfdrop("inspect", "--json", d / "nan.tfrecord")
    assert proc.returncode == 0
    (row,) = [json.loads(x, parse_constant=_strict) for x in proc.stdout.splitlines()]
    assert row["objects"][0]["box"] == ["nan", 0.0, "inf", 1.0]
    assert row["objects"][0]["area"] == "-inf"
    proc = tfdrop("validate", "--json", d / "nan.tfrecord")
    assert proc.returncode == 1
    rows = [json.loads(x, parse_constant=_strict) for x in proc.stdout.splitlines()]
    assert {r.get("key") for r in rows[:-1]} >= {"image/object/bbox/xmin", "image/object/bbox/xmax"}


def test_validate_an_incomplete_shard_set_names_the_missing_shard(tmp_path: Path) -> None:
    # validate once called a set with a shard missing valid
    (tmp_path / "y.record-00000-of-00003").write_bytes(records_bytes(ITEMS[:2]))
    (tmp_path / "y.record-00002-of-00003").write_bytes(records_bytes(ITEMS[2:]))
    proc = tfdrop("validate", "--json", tmp_path / "y.record-00002-of-00003")
    assert proc.returncode == 1
    problem, summary = json_lines(proc.stdout)
    assert problem["message"] == "shard set incomplete: y.record-00001-of-00003 is missing"
    assert summary["summary"] == {"valid": False, "files": 2, "records": N, "problems": 1}


def test_validate_fails_a_record_with_two_heights_and_two_filenames(tmp_path: Path) -> None:
    # regression: the C all-clear read only the first value of single-value keys: exit 0
    ex = Example.FromString(encode_example(ITEMS[0]))
    feats = ex.features.feature  # type: ignore[attr-defined]
    feats["image/height"].int64_list.value.append(99)
    feats["image/filename"].bytes_list.value.append(b"other.jpg")
    path = tmp_path / "two.tfrecord"
    path.write_bytes(records_bytes([]) + _framed(bytes(ex.SerializeToString())))
    proc = tfdrop("validate", path)
    assert proc.returncode == 1, proc.stdout
    assert "exactly one" in proc.stdout
    assert "INVALID" in proc.stdout
    assert proc.stderr.startswith(f"tfdrop: error: {path}: not valid (")
    proc = tfdrop("validate", "--json", path)
    problems = json_lines(proc.stdout)[:-1]
    assert {p["key"] for p in problems} <= {"image/height", "image/filename"}
    assert problems
    assert proc.returncode == 1


def _framed(record: bytes) -> bytes:
    from tfdrop.codec.framing import encode_record

    return encode_record(record)


# --- found by the outside attack ------------------------------------------------------------


def _one_box(label: str, label_id: int, **fields: object) -> Item:
    base: dict[str, object] = {
        "name": "a.jpg",
        "width": 32,
        "height": 24,
        "image": b"\xff\xd8\xff\xda\x00\x02" + bytes(40) + b"\xff\xd9",
        "image_format": "jpeg",
        "objects": (Annotation(label=label, box=Box(0.1, 0.2, 0.5, 0.6), label_id=label_id),),
    }
    return Item(**(base | fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("second", "key", "says"),
    [
        (("dog", 1), "image/object/class/text", "id 1 is 'dog' here but 'cat' in record 0"),
        (("cat", 2), "image/object/class/label", "'cat' has id 2 here but id 1 in record 0"),
    ],
)
def test_validate_names_class_ids_and_texts_that_disagree_across_records(
    tmp_path: Path, second: tuple[str, int], key: str, says: str
) -> None:
    path = tmp_path / "mixed.tfrecord"
    path.write_bytes(records_bytes([_one_box("cat", 1), _one_box(*second)]))
    proc = tfdrop("validate", "--json", path)
    assert proc.returncode == 1, proc.stdout
    (problem,) = json_lines(proc.stdout)[:-1]
    assert (problem["record"], problem["key"], problem["object"]) == (1, key, 0)
    assert says in problem["message"]
    # with a label map the map decides (and names the record that disagrees with it)
    lm = tmp_path / "label_map.pbtxt"
    lm.write_text(format_label_map(LabelMap.from_names(["cat", "dog"])))
    proc = tfdrop("validate", "--label-map", lm, path)
    assert proc.returncode == (0 if second == ("dog", 2) else 1)
    assert "record 1" in proc.stdout


def test_validate_refuses_an_image_the_keys_describe_wrongly(tmp_path: Path) -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (32).to_bytes(4, "big") * 2 + bytes(9)
    png += b"\x00\x00\x00\x00IEND\xaeB`\x82"
    scan = b"\xff\xd8\xff\xda\x00\x02" + bytes(30)  # a JPEG's start of scan, then its data
    items = [
        _one_box("cat", 1, image=png, image_format="png"),  # 32x32 but declared 32x24
        _one_box("cat", 1, image=png, image_format="jpeg", height=32),
        _one_box("cat", 1, image=b"GIF89a", image_format="gif"),
        # cut before its end marker (TensorFlow's decoder refuses it), and cut after it
        _one_box("cat", 1, image=scan, image_format="jpeg"),
        _one_box("cat", 1, image=scan + b"\xff\xd9" + bytes(7), image_format="jpeg"),
        _one_box("cat", 1, image=png[:-12], image_format="png", height=32),
    ]
    path = tmp_path / "images.tfrecord"
    path.write_bytes(records_bytes(items))
    proc = tfdrop("validate", "--json", path)
    assert proc.returncode == 1, proc.stdout
    got = {(p["record"], p["key"]) for p in json_lines(proc.stdout)[:-1]}
    assert got == {
        (0, "image/height"),
        (1, "image/format"),
        (2, "image/format"),
        (2, "image/encoded"),
        (3, "image/encoded"),
        (5, "image/encoded"),
    }
    said = {p["record"]: p["message"] for p in json_lines(proc.stdout)[:-1]}
    assert "cut short (it has no end marker)" in said[3]


def test_validate_refuses_a_key_without_a_value_and_boxes_with_only_class_text(
    tmp_path: Path,
) -> None:
    good = encode_example(_one_box("cat", 1))
    entry = b"\x0a\x04\x0a\x02zz"  # a map entry holding only the key "zz"
    body = good[3:]  # after the Features tag and its two-byte length
    no_value = b"\x0a" + varint(len(body) + len(entry)) + body + entry
    ex = Example.FromString(good)
    del ex.features.feature["image/object/class/label"]  # type: ignore[attr-defined]
    path = tmp_path / "bad.tfrecord"
    path.write_bytes(_framed(no_value) + _framed(bytes(ex.SerializeToString())))
    proc = tfdrop("validate", "--json", path)
    assert proc.returncode == 1, proc.stdout
    problems = json_lines(proc.stdout)[:-1]
    assert [(p["record"], p["key"]) for p in problems] == [
        (0, "zz"),
        (1, "image/object/class/label"),
    ]
    assert "a key but no Feature value" in problems[0]["message"]
    assert "missing while image/object/class/text is present" in problems[1]["message"]

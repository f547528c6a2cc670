"""``tfdrop beam`` (tfdrop.beam on DirectRunner) writes what ``tfdrop convert`` writes: the same
set of serialized Examples per subset and the same label map, for every source format, one zip
or a glob of several, in one process or two worker processes; bad items land in the dead-letter
output and the counters, and the run fails past ``--max-bad-items``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from beam_support import converted, dataset, folder_records, voc_zip, zip_records
from conftest import tfdrop
from tfdrop.beam import BeamOptions, convert_dataset, metric_totals
from tfdrop.cli import main
from tfdrop.convert import ConvertOptions, convert
from tfdrop.formats import FormatName
from tfdrop.labels import load_label_map

FORMATS: list[FormatName] = ["voc", "cvat", "coco", "yolo", "tfrecord"]


def beam(*args: str | Path) -> int:
    return main(["beam", "--to", "tfrecord", "-q", *map(str, args)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_beam_on_one_zip_writes_what_convert_writes(tmp_path: Path, fmt: FormatName) -> None:
    src = dataset(tmp_path, fmt)
    want = converted(src, tmp_path / "want.zip")
    assert beam("-o", tmp_path / "out", src, "--shards", "2") == 0
    got = folder_records(tmp_path / "out")
    assert got == want
    assert sum(map(len, got[0].values())) == 60
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["items"] == report["validated_items"] == 60
    assert report["bad_items"] == 0
    assert len(report["shards"]) == 2 * len(got[0])


def test_a_glob_of_zips_is_the_dataset_they_split(tmp_path: Path) -> None:
    whole = voc_zip(tmp_path / "whole.zip", range(90))
    parts = tmp_path / "parts"
    parts.mkdir()
    for k, start in enumerate(range(0, 90, 30)):
        voc_zip(parts / f"part-{k}.zip", range(start, start + 30))
    want = converted(whole, tmp_path / "want.zip")
    assert beam("-o", tmp_path / "out", parts / "part-*.zip") == 0
    assert folder_records(tmp_path / "out") == want
    assert b"owl" in want[1]  # the last label first appears in the last part


def test_a_glob_of_tfrecord_shards_reads_as_its_shard_set(tmp_path: Path) -> None:
    voc = voc_zip(tmp_path / "voc.zip", range(45))
    sharded = tmp_path / "sharded.zip"
    want = converted(voc, sharded, shards=3)
    shards = tmp_path / "shards"
    with zipfile.ZipFile(sharded) as zf:
        zf.extractall(shards)
    assert beam("-o", tmp_path / "out", shards / "*.tfrecord-*") == 0
    assert folder_records(tmp_path / "out") == want


def test_two_worker_processes_write_the_same_records(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(150))
    report = convert(src, tmp_path / "want.zip", ConvertOptions())
    want = zip_records(tmp_path / "want.zip")
    result = convert_dataset(
        [str(src)],
        str(tmp_path / "out"),
        BeamOptions(shards=3),
        ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
    )
    assert folder_records(tmp_path / "out") == want
    totals = metric_totals(result)
    assert (totals["items"], totals["objects"]) == (150, report.objects)
    assert totals["bad_items"] == 0
    assert totals["bytes"] == sum(len(r) for v in want[0].values() for r in v)


def test_a_pinned_label_map_gives_its_ids(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(60))
    pinned = tmp_path / "pinned.pbtxt"
    items = "".join(
        f"item {{ id: {i} name: '{n}' }}\n"
        for i, n in ((7, "owl"), (3, "fox"), (5, "bird"), (1, "dog"), (2, "cat"))
    )
    pinned.write_text(items)
    assert beam("-o", tmp_path / "out", src, "--label-map", pinned) == 0
    from_convert = converted(src, tmp_path / "want.zip", label_map=load_label_map(pinned))
    got = folder_records(tmp_path / "out")
    assert got == from_convert
    assert b"id: 7" in got[1]


def test_bad_items_land_in_the_dead_letter_output_and_the_counters(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(60), bad=frozenset({4, 33}))
    result = convert_dataset(
        [str(src)], str(tmp_path / "out"), BeamOptions(max_bad_items=2, shards=2)
    )
    totals = metric_totals(result)
    assert (totals["items"], totals["bad_items"]) == (58, 2)
    lines = (tmp_path / "out" / "bad_items.jsonl").read_text().splitlines()
    bad = sorted((json.loads(line) for line in lines), key=lambda b: b["item"])
    assert [(b["item"], b["member"], b["kind"]) for b in bad] == [
        ("0004", "Annotations/0004.xml", "bad_annotation"),
        ("0033", "Annotations/0033.xml", "bad_annotation"),
    ]
    assert all(b["archive"] == str(src) and "malformed XML" in b["message"] for b in bad)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert (report["items"], report["bad_items"]) == (58, 2)


def test_the_run_fails_past_max_bad_items_with_the_dead_letter_written(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(30), bad=frozenset({4, 20}))
    out = tmp_path / "out"
    proc = tfdrop("beam", "--to", "tfrecord", "-o", out, src, "--max-bad-items", "1")
    assert proc.returncode == 1
    assert "2 bad items, more than --max-bad-items 1" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bad_items.jsonl"]  # no shards, no tmp
    assert len((out / "bad_items.jsonl").read_text().splitlines()) == 2


def test_other_targets_and_a_used_output_are_refused_in_words(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(3))
    proc = tfdrop("beam", "--to", "voc", "-o", tmp_path / "out", src)
    assert proc.returncode == 2
    assert "tfdrop beam writes tfrecord" in proc.stderr
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    proc = tfdrop("beam", "--to", "tfrecord", "-o", tmp_path / "used", src)
    assert (proc.returncode, "holds files" in proc.stderr) == (2, True)
    proc = tfdrop("beam", "--to", "tfrecord", "-o", tmp_path / "o", tmp_path / "none-*.zip")
    assert (proc.returncode, "matches no file" in proc.stderr) == (1, True)


def test_gzip_shards_read_back_as_the_same_records(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(40))
    want = converted(src, tmp_path / "want.zip")
    assert beam("-o", tmp_path / "out", src, "--compression", "gzip", "--shards", "2") == 0
    first = next((tmp_path / "out").glob("train.tfrecord-*"))
    assert first.read_bytes()[:2] == b"\x1f\x8b"
    assert folder_records(tmp_path / "out") == want


def test_tfdrop_runs_without_apache_beam_and_says_how_to_get_it(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(3))
    block = "import sys; sys.modules['apache_beam'] = None; from tfdrop.cli import main; "
    code = block + "sys.exit(main(sys.argv[1:]))"
    run = [sys.executable, "-c", code]
    helped = subprocess.run([*run, "--help"], capture_output=True, text=True, check=False)
    assert (helped.returncode, "beam" in helped.stdout) == (0, True)
    conv = subprocess.run(
        [*run, "convert", str(src), "--to", "tfrecord", "-o", str(tmp_path / "c.zip"), "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert conv.returncode == 0, conv.stderr
    proc = subprocess.run(
        [*run, "beam", "--to", "tfrecord", "-o", str(tmp_path / "o"), str(src)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "pip install 'tfdrop[beam]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    shutil.rmtree(tmp_path / "o", ignore_errors=True)

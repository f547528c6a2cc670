"""``tfdrop beam`` (tfdrop.beam on DirectRunner) writes what ``tfdrop convert`` writes: the same
set of serialized Examples per subset and the same label map, for every source format, one zip
or a glob of several, in one process or two worker processes; bad items land in the dead-letter
output and the counters, and the run fails past ``--max-bad-items``."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from beam_support import (
    coco_zip,
    converted,
    dataset,
    folder_records,
    voc_zip,
    zip_records,
)
from conftest import tfdrop
from daemon_support import png, voc_xml
from test_keypoints_formats import _cvat_no_meta, coco_keypoints_export, cvat_skeletons
from tfdrop.beam import BeamOptions, convert_dataset, metric_totals
from tfdrop.cli import main
from tfdrop.convert import ConvertOptions, convert
from tfdrop.formats import FormatName
from tfdrop.labels import load_label_map
from tfdrop.stream import RecordWriter

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


def test_sources_that_number_one_label_differently_merge_with_a_warning(tmp_path: Path) -> None:
    # cat is 1 in the first source and 2 in the second: it keeps the first id, the second's
    # objects are counted as renumbered (convert's warning); the first zip named twice is
    # read once; the report carries the training hand-off; Beam says nothing on stderr
    first = coco_zip(tmp_path / "a.zip", {1: "cat"}, [[1], [1]])
    coco_zip(tmp_path / "b.zip", {2: "cat", 3: "dog"}, [[2, 3], [3]])
    out = tmp_path / "out"
    proc = tfdrop(
        "beam", "--to", "tfrecord", "-o", out, tmp_path / "*.zip", f"./{first.name}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "2 warnings" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["label_map"] == [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]
    assert report["warning_counts"] == {"duplicate_source": 1, "label_ids_renumbered": 1}
    assert (report["items"], report["labels"]) == (4, {"cat": 3, "dog": 2})
    assert report["num_classes"] == 3
    assert report["input_paths"] == {"default": ["default.tfrecord-?????-of-00001"]}
    assert "label_map_path" in report["input_reader"]


def test_a_dead_lettered_item_gives_no_label_an_id(tmp_path: Path) -> None:
    # item 0003 declares 40x40 over a 16x16 image (an error of the encode step) and is the
    # only one with "zebra"; glob characters in both paths are plain characters
    good = voc_zip(tmp_path / "good.zip", range(30))
    src = tmp_path / "voc[1].zip"
    shutil.copy(good, src)
    with zipfile.ZipFile(src, "a") as zf:
        xml = voc_xml(3, ["zebra"]).replace(">16<", ">40<")
        zf.writestr("Annotations/0100.xml", xml.replace("0003.png", "0100.png"))
        zf.writestr("JPEGImages/0100.png", png(100))
    want = converted(good, tmp_path / "want.zip")
    out = tmp_path / "out[1]"
    convert_dataset([str(src)], str(out), BeamOptions(max_bad_items=1))
    assert folder_records(out) == want
    (line,) = (out / "bad_items.jsonl").read_text().splitlines()
    bad = json.loads(line)
    assert (bad["archive"], bad["item"], bad["kind"]) == (str(src), "0100.png", "bad_annotation")


def test_an_error_in_the_pipeline_prints_as_convert_prints_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"hello world" * 10)
    conv = tfdrop("convert", junk, "--to", "tfrecord", "-o", tmp_path / "c.zip")
    assert (conv.returncode, "hint" in conv.stderr) == (1, True)
    for mode in ("in_memory", "multi_processing"):
        out = tmp_path / mode
        args = ["--", f"--direct_running_mode={mode}", "--direct_num_workers=2"]
        proc = tfdrop("beam", "--to", "tfrecord", "-o", out, junk, *args)
        assert (proc.returncode, proc.stderr) == (1, conv.stderr)
        assert not out.exists()  # nothing written, no beam-temp folder


def test_bad_options_and_paths_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(3))
    cases = [
        (["--", "--runner=NopeRunner"], 2, "--runner=NopeRunner"),
        (["--", "--bogus_option=1"], 2, "unknown Beam pipeline option '--bogus_option'"),
        (["--", "positional"], 2, "unknown Beam pipeline option 'positional'"),
        (["--", "--direct_num_workers=abc"], 2, "--direct_num_workers: invalid int value"),
        (["--", "--direct_num_workers=-3"], 2, "--direct_num_workers=-3: must be 0"),
        (["--", "--runner=DataflowRunner"], 2, "--runner=DataflowRunner needs --project"),
    ]
    for extra, code, text in cases:
        assert beam("-o", tmp_path / "o", src, *extra) == code
        err = capsys.readouterr().err
        assert text in err.splitlines()[0], err
    for path in ("ftp://host/a.zip", "gs://no-bucket-tfdrop/a.zip"):
        assert beam("-o", tmp_path / "o", path) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"tfdrop: error: {path}: cannot read"), err
    assert beam("-o", "ftp://host/out", src) == 1
    assert capsys.readouterr().err.startswith("tfdrop: error: ftp://host/out: cannot write")
    assert beam("-o", "", src) == 2
    assert "--output is empty" in capsys.readouterr().err
    assert beam("-o", tmp_path / "o", f"file://{tmp_path}/none.zip") == 1
    assert "matches no file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_glob_of_roboflow_folders_keeps_their_subsets_and_label_maps(tmp_path: Path) -> None:
    voc = voc_zip(tmp_path / "voc.zip", range(30))
    records, label_map = converted(voc, tmp_path / "tf.zip")
    rf = tmp_path / "rf"
    for folder, subset in (("train", "train"), ("valid", "val")):
        (rf / folder).mkdir(parents=True)
        (rf / folder / "cars_label_map.pbtxt").write_bytes(label_map)
        with (rf / folder / "cars.tfrecord").open("wb") as f:
            writer = RecordWriter(f)
            for record in records[subset]:
                writer.write(record)
            writer.close()
    want = zip_records(_convert_folder(rf, tmp_path / "want.zip"))
    assert sorted(want[0]) == ["train", "valid"]
    assert beam("-o", tmp_path / "out", rf / "*" / "cars.tfrecord") == 0
    assert folder_records(tmp_path / "out") == want


def _convert_folder(src: Path, out: Path) -> Path:
    convert(src, out, ConvertOptions())
    return out


def test_a_killed_worker_ends_the_run_with_worker_died(tmp_path: Path) -> None:
    src = voc_zip(tmp_path / "voc.zip", range(1500))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tfdrop", "beam", "--to", "tfrecord", "-o", str(out), str(src)]
    mode = ["--", "--direct_num_workers=2", "--direct_running_mode=multi_processing"]
    with subprocess.Popen([*cmd, *mode], stderr=subprocess.PIPE, text=True) as proc:
        victim = _wait_for_worker(psutil.Process(proc.pid))
        os.kill(victim, signal.SIGKILL)
        _, err = proc.communicate(timeout=90)
    assert proc.returncode == 1
    assert "tfdrop: error: a Beam worker process died (signal 9 (SIGKILL))" in err
    assert "Traceback" not in err
    assert not out.exists()


def _wait_for_worker(parent: psutil.Process) -> int:
    for _ in range(600):
        for child in parent.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                cmdline = child.cmdline()
                if "sdk_worker_main" in " ".join(cmdline) and cmdline[0] != "/bin/sh":
                    return child.pid
        time.sleep(0.05)
    raise AssertionError("no Beam worker process started")


def test_keypoint_datasets_get_convert_s_keypoint_layout(tmp_path: Path) -> None:
    """Declared skeletons (COCO categories, CVAT meta) and undeclared ones (CVAT without meta,
    learned from the objects) give the label map's keypoints and the records' slots exactly
    as ``tfdrop convert`` does."""
    for sub in ("coco", "cvat", "nometa"):
        (tmp_path / sub).mkdir()
    made = {
        "coco": coco_keypoints_export(tmp_path / "coco"),
        "cvat": cvat_skeletons(tmp_path / "cvat"),
        "cvat-no-meta": _cvat_no_meta(tmp_path / "nometa"),
    }
    for name, src in made.items():
        want = converted(src, tmp_path / f"{name}-want.zip")
        assert b"keypoints {" in want[1], name
        assert beam("-o", tmp_path / f"{name}-out", src) == 0, name
        assert folder_records(tmp_path / f"{name}-out") == want, name

"""The CLI shell: the job budget flag, bounded numbers, outputs that would destroy an
input, a report path that is a folder, and a reader of stdout that goes away. Real
subprocesses; never a traceback."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import records_bytes, tfdrop
from tfdrop.cli.common import UsageError, add_limit_argument, bare_limit, limits_from_args
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.limits import Limits

EXIT_STDOUT_CLOSED = 141


def _item(i: int) -> Item:
    return Item(
        name=f"img_{i:05d}.jpg",
        width=32,
        height=24,
        image=b"\xff\xd8\xff\xda\x00\x02" + bytes([i % 256]) * 20 + b"\xff\xd9",
        image_format="jpeg",
        objects=(Annotation("cat", Box(0.1, 0.2, 0.5, 0.7), label_id=1),),
    )


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("shell")
    (d / "small.tfrecord").write_bytes(records_bytes([_item(i) for i in range(3)]))
    (d / "many.tfrecord").write_bytes(records_bytes([_item(i) for i in range(3000)]))
    return d


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_limit_argument(parser)
    return parser.parse_args(argv)


# --- --limit NAME=N ---------------------------------------------------------------------------


def test_limit_flags_build_the_budget_and_the_last_one_wins() -> None:
    args = _parse("--limit", "max_depth=5", "--limit", "max_labels=9", "--limit", "max_depth=7")
    assert limits_from_args(args) == Limits(max_depth=7, max_labels=9)
    assert limits_from_args(_parse()) == Limits()


def test_a_bare_limit_is_only_inspects_record_count() -> None:
    args = _parse("--limit", "3", "--limit", "max_depth=5")
    assert bare_limit(args) == 3
    assert limits_from_args(args, bare=True) == Limits(max_depth=5)
    with pytest.raises(UsageError, match="NAME=N"):
        limits_from_args(args)


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("max_dpeth=3", "NAME one of: max_entries"),
        ("max_depth=0", "at least 1"),
        ("max_depth=-1", "at least 1"),
        ("max_depth=1e3", "positive integer"),
        ("max_depth=", "positive integer"),
        ("max_depth", "NAME one of"),
    ],
)
def test_a_bad_limit_flag_is_a_usage_error_listing_the_names(
    d: Path, tmp_path: Path, flag: str, says: str
) -> None:
    commands: tuple[list[str | Path], ...] = (
        ["convert", d / "small.tfrecord", "--to", "tfrecord", "-o", tmp_path / "o.zip"],
        ["inspect", d / "small.tfrecord"],
    )
    for command in commands:
        proc = tfdrop(*command, "--limit", flag)
        assert proc.returncode == 2, proc.stderr
        assert says in proc.stderr
        assert not (tmp_path / "o.zip").exists()


def test_convert_refuses_a_bare_limit(d: Path, tmp_path: Path) -> None:
    proc = tfdrop(
        "convert", d / "small.tfrecord", "--to", "voc", "-o", tmp_path / "o.zip", "--limit", "3"
    )
    assert proc.returncode == 2
    assert "NAME=N" in proc.stderr


def test_a_lowered_limit_is_enforced_and_named(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(5):
            zf.writestr(f"Annotations/{i}.xml", "<annotation/>")
    src = tmp_path / "voc.zip"
    src.write_bytes(buf.getvalue())
    proc = tfdrop(
        "convert", src, "--to", "tfrecord", "-o", tmp_path / "o.zip", "--limit", "max_entries=2"
    )
    assert proc.returncode == 1
    assert "max_entries" in proc.stderr
    assert not (tmp_path / "o.zip").exists()


@pytest.mark.parametrize("limit", ["max_member_size", "max_total_uncompressed", "max_name_length"])
def test_a_limit_lowered_to_what_the_input_meets_does_not_fail_the_read_back(
    tmp_path: Path, limit: str
) -> None:
    # found by an outside attack: the input's caps were applied to the read-back of tfdrop's
    # own (larger) output, and the run failed with "this is a bug in tfdrop"
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 12)).save(buf, "JPEG")
    src = tmp_path / "ab.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("a.jpg", buf.getvalue())
        zf.writestr("b.jpg", buf.getvalue())
    size = len(buf.getvalue())
    caps = {"max_member_size": size, "max_total_uncompressed": 2 * size, "max_name_length": 5}
    out = tmp_path / "o.zip"
    proc = tfdrop("convert", src, "--to", "tfrecord", "-o", out,
                  "--limit", f"{limit}={caps[limit]}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert zipfile.ZipFile(out).namelist() == ["default.tfrecord", "label_map.pbtxt"]
    over = tfdrop("convert", src, "--to", "tfrecord", "-o", tmp_path / "p.zip",
                  "--limit", f"{limit}={caps[limit] - 1}")  # fmt: skip
    assert over.returncode == 1  # the input's cap still holds
    assert "bug" not in over.stderr


def test_inspect_counts_records_with_max_records_and_the_older_bare_limit(d: Path) -> None:
    for flags in (["-n", "2"], ["--max-records", "2"], ["--limit", "2"]):
        proc = tfdrop("inspect", d / "small.tfrecord", *flags)
        assert proc.returncode == 0, proc.stderr
        assert len([x for x in proc.stdout.splitlines() if x.startswith("[")]) == 2


# --- bounded numbers --------------------------------------------------------------------------


@pytest.mark.parametrize("shards", ["1000000000", "100000", "257", "0", "-3", "two"])
def test_shards_out_of_range_is_a_usage_error_before_any_work(
    d: Path, tmp_path: Path, shards: str
) -> None:
    proc = tfdrop(
        "convert",
        d / "small.tfrecord",
        "--to",
        "tfrecord",
        "-o",
        tmp_path / "o.zip",
        "--shards",
        shards,
    )
    assert proc.returncode == 2
    assert "--shards" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_largest_shard_count_converts(d: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.zip"
    proc = tfdrop(
        "convert", d / "small.tfrecord", "--to", "tfrecord", "-o", out, "--shards", "256", "-q"
    )
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(out) as zf:
        assert len([n for n in zf.namelist() if "-of-00256" in n]) == 256


# --- outputs that would destroy an input ------------------------------------------------------


def _digest(path: Path) -> bytes:
    return path.read_bytes()


def test_o_naming_the_input_is_refused_and_the_input_kept(tmp_path: Path) -> None:
    src = tmp_path / "a.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("default.tfrecord", records_bytes([_item(0)]))
    before = _digest(src)
    (tmp_path / "link.zip").symlink_to(src)
    os.link(src, tmp_path / "hard.zip")
    for out in (src, tmp_path / "." / "a.zip", tmp_path / "link.zip", tmp_path / "hard.zip"):
        proc = tfdrop("convert", src, "--to", "tfrecord", "-o", out)
        assert proc.returncode == 2, proc.stderr
        assert "is the input" in proc.stderr
        assert _digest(src) == before
    assert not (tmp_path / "a.report.json").exists()


def test_o_inside_an_input_folder_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "ds"
    src.mkdir()
    (src / "default.tfrecord").write_bytes(records_bytes([_item(0)]))
    proc = tfdrop("convert", src, "--to", "tfrecord", "-o", src / "out.zip")
    assert proc.returncode == 2
    assert "inside the input folder" in proc.stderr
    assert sorted(p.name for p in src.iterdir()) == ["default.tfrecord"]


def test_a_report_that_would_overwrite_the_input_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "x.report.json"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("default.tfrecord", records_bytes([_item(0)]))
    proc = tfdrop("convert", src, "--to", "tfrecord", "-o", tmp_path / "x.zip")
    assert proc.returncode == 2
    assert "is the input" in proc.stderr
    assert not (tmp_path / "x.zip").exists()


def test_a_report_path_that_is_a_folder_is_a_clear_error_before_any_work(
    d: Path, tmp_path: Path
) -> None:
    (tmp_path / "out.report.json").mkdir()
    proc = tfdrop("convert", d / "small.tfrecord", "--to", "tfrecord", "-o", tmp_path / "out.zip")
    assert proc.returncode == 2
    assert "out.report.json" in proc.stderr
    assert "is a folder" in proc.stderr
    assert not (tmp_path / "out.zip").exists()


def test_a_report_name_held_by_a_dangling_link_gets_the_report(d: Path, tmp_path: Path) -> None:
    """The report is written under a temp name and renamed into place (a full disk left a
    0-byte report): a symlink loop at its name is replaced, not written through. A report
    that cannot be written is tests/test_leftovers.py's (a real full tmpfs)."""
    report = tmp_path / "out.report.json"
    report.symlink_to(report)
    proc = tfdrop("convert", d / "small.tfrecord", "--to", "tfrecord", "-o", tmp_path / "out.zip")
    assert proc.returncode == 0, proc.stderr
    assert not report.is_symlink()
    assert report.read_text().startswith("{")
    assert (tmp_path / "out.zip").is_file()


# --- a reader of stdout that goes away ------------------------------------------------------


def _cut_short(args: list[str | Path], lines: int) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfdrop", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    for _ in range(lines):
        proc.stdout.readline()
    proc.stdout.close()  # like `| head -1` exiting
    err = proc.stderr.read().decode(errors="replace")
    return proc.wait(timeout=120), err


@pytest.mark.parametrize(
    ("args", "lines"),
    [(["inspect"], 1), (["inspect", "--json"], 1), (["validate", "--json"], 0)],
)
def test_a_closed_stdout_ends_quietly_with_141(d: Path, args: list[str], lines: int) -> None:
    code, err = _cut_short([*args, d / "many.tfrecord"], lines=lines)
    assert code == EXIT_STDOUT_CLOSED
    assert err == ""


def test_a_closed_stdout_before_convert_prints_its_summary(d: Path, tmp_path: Path) -> None:
    out = tmp_path / "o.zip"
    code, err = _cut_short(
        ["convert", d / "small.tfrecord", "--to", "tfrecord", "-o", out],
        lines=0,
    )
    assert code == EXIT_STDOUT_CLOSED
    assert err == ""
    assert out.is_file()  # the work was done; only the summary had nowhere to go


def test_an_output_whose_report_name_cannot_fit_is_refused_before_any_work(
    d: Path, tmp_path: Path
) -> None:
    out = tmp_path / ("y" * 248 + ".zip")  # fits; "<stem>.report.json" does not
    proc = tfdrop("convert", d / "small.tfrecord", "--to", "tfrecord", "-o", out)
    assert proc.returncode == 2
    assert "255-byte name limit" in proc.stderr
    assert list(tmp_path.iterdir()) == []

"""The adversarial suite, CLI shell side: numbers that would exhaust memory or file
descriptors, outputs that would destroy the input, names at the file system's limit and
configs with unusable values, each under the harness's memory and time limits."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from daemon_support import LABEL_MAP, tfrecord_bytes
from hostile.harness import accepted, digest, refused, run_cli


def _tfrecord_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("default.tfrecord", tfrecord_bytes(2))
        zf.writestr("label_map.pbtxt", LABEL_MAP)
    return path


@pytest.mark.parametrize("shards", ["1000000000", "100000", "2000"])
def test_huge_shard_counts_are_usage_errors_at_once(tmp_path: Path, shards: str) -> None:
    src = _tfrecord_zip(tmp_path / "a.zip")
    run = run_cli(
        ["convert", src, "--to", "tfrecord", "--shards", shards, "-o", tmp_path / "o.zip"],
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "--shards" in run.stderr
    assert not (tmp_path / "o.zip").exists()


def test_o_onto_the_input_never_destroys_it(tmp_path: Path) -> None:
    src = _tfrecord_zip(tmp_path / "a.zip")
    before = digest(src)
    run = run_cli(["convert", src, "--to", "tfrecord", "-o", src], cwd=tmp_path, timeout=60)
    assert run.returncode == 2
    assert "is the input" in run.stderr
    assert digest(src) == before


def test_a_drop_named_at_the_name_limit_converts(tmp_path: Path) -> None:
    src = _tfrecord_zip(tmp_path / ("x" * 251 + ".zip"))
    accepted(tmp_path, src)


def test_a_lowered_limit_on_the_command_line_refuses_naming_it(tmp_path: Path) -> None:
    src = _tfrecord_zip(tmp_path / "a.zip")
    refused(tmp_path, src, ("--to", "voc", "--limit", "max_entries=1"), expect=("max_entries",))


@pytest.mark.parametrize(
    "text",
    [
        '[[pipeline]]\ndrop = "in\\u0000"\noutput = "out"\n',
        '[daemon]\nmax_jobs = 1e8\n[[pipeline]]\ndrop = "in"\noutput = "out"\n',
        '[daemon]\nstale_seconds = nan\n[[pipeline]]\ndrop = "in"\noutput = "out"\n',
        '[limits]\nmax_depth = 0\n[[pipeline]]\ndrop = "in"\noutput = "out"\n',
        '[[pipeline]]\ndrop = "in"\noutput = "out"\nlabel_map = "m.pbtxt"\n',
    ],
)
def test_configs_with_unusable_values_are_refused_cleanly(tmp_path: Path, text: str) -> None:
    (tmp_path / "m.pbtxt").write_bytes(b"\xc3\x28 not utf-8")
    config = tmp_path / "tfdrop.toml"
    config.write_text(text)
    run = run_cli(["check-config", config], cwd=tmp_path, timeout=60)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert "tfdrop.toml" in run.stderr

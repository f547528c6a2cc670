"""The daemon end to end, as a real process: drops in, archives out, inputs routed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import (
    Daemon,
    copy_slowly,
    files,
    tfrecord_bytes,
    tfrecord_zip,
    wait_until,
    write_config,
)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "in", tmp_path / "out"


def _start(tmp_path: Path, **pipeline: object) -> Daemon:
    p: dict[str, object] = {"name": "main", "drop": "in", "output": "out"}
    p.update(pipeline)
    config = write_config(tmp_path / "tfdrop.toml", [p])
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.wait_event("daemon_ready")
    return daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = _start(tmp_path)
    yield d
    assert d.stop() == 0


def _outputs_whole(out: Path) -> None:
    """Whenever an archive is visible its sidecars are already there (publish order)."""
    for name in files(out):
        if name.endswith(".zip") and not name.startswith("."):
            stem = name[: -len(".zip")]
            assert (out / f"{stem}.label_map.pbtxt").exists(), name
            assert (out / f"{stem}.report.json").exists(), name


def _wait_published(daemon: Daemon, out: Path, count: int) -> None:
    def check() -> bool:
        _outputs_whole(out)
        return len(daemon.named("archive_published")) >= count

    wait_until(check, timeout=30, step=0.005)


def _items(archive: Path) -> int:
    with zipfile.ZipFile(archive) as zf:
        assert "label_map.pbtxt" in zf.namelist()
    report = json.loads(archive.with_name(archive.stem + ".report.json").read_text())
    return int(report["items"])


def test_drops_copied_slowly_renamed_in_or_written_in_place_are_published_once(
    daemon: Daemon, folders: tuple[Path, Path]
) -> None:
    drop, out = folders
    (drop / "notes.txt").write_text("not a drop\n")
    copy_slowly(tfrecord_zip(3, tag="a"), drop / "slow.zip", chunks=6, pause=0.1)
    # a bare TFRecord has no end marker: only the settle time protects it while it grows
    copy_slowly(tfrecord_bytes(4, tag="b"), drop / "bare.tfrecord", chunks=4, pause=0.1)
    (drop / "renamed.zip.part").write_bytes(tfrecord_zip(5, tag="c"))
    os.rename(drop / "renamed.zip.part", drop / "renamed.zip")
    (drop / "inplace.zip").write_bytes(tfrecord_zip(2, tag="d"))
    _wait_published(daemon, out, 4)
    daemon.wait_event("job_done", 4)

    assert _items(out / "slow.zip") == 3
    assert _items(out / "bare.zip") == 4
    assert _items(out / "renamed.zip") == 5
    assert _items(out / "inplace.zip") == 2
    assert "item {\n\tid: 1\n\tname: 'cat'\n}" in (out / "slow.label_map.pbtxt").read_text()
    report = json.loads((out / "slow.report.json").read_text())
    assert report["pipeline"] == "main"
    assert report["source"] == "slow.zip"
    assert len(report["input"]["sha256"]) == 64
    assert files(drop / "done") == ["bare.tfrecord", "inplace.zip", "renamed.zip", "slow.zip"]
    assert files(drop) == ["notes.txt"]  # ignored, left where it was
    assert len([e for e in daemon.named("drop_ignored") if e["source"] == "notes.txt"]) == 1
    assert not [n for n in os.listdir(out) if n.startswith(".")]  # no temp files
    assert len(daemon.named("archive_published")) == 4
    for event in daemon.named("job_done"):
        assert {"job", "pipeline", "source", "timestamp", "level"} <= event.keys()


def _error(failed: Path, name: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((failed / f"{name}.error.json").read_text())
    return data


def test_bad_inputs_go_to_failed_with_an_error_file_and_the_daemon_keeps_running(
    daemon: Daemon, folders: tuple[Path, Path]
) -> None:
    drop, out = folders
    good = tfrecord_zip(3, tag="g")
    (drop / "garbage.zip").write_bytes(os.urandom(5000))  # no end record: taken when stale
    (drop / "cut.zip").write_bytes(good[: len(good) // 2])
    empty_zip = drop / "nothing.zip"
    with zipfile.ZipFile(empty_zip, "w") as zf:
        zf.writestr("readme.txt", "no annotations here")
    data = bytearray(tfrecord_bytes(2, tag="x"))
    data[40] ^= 0xFF  # inside the first record's payload: a data CRC mismatch
    (drop / "corrupt.tfrecord").write_bytes(bytes(data))
    daemon.wait_event("job_failed", 4, timeout=30)

    failed = drop / "failed"
    assert sorted(n for n in files(failed) if not n.endswith(".error.json")) == [
        "corrupt.tfrecord",
        "cut.zip",
        "garbage.zip",
        "nothing.zip",
    ]
    for name in ("garbage.zip", "cut.zip", "nothing.zip", "corrupt.tfrecord"):
        err = _error(failed, name)
        assert err["pipeline"] == "main"
        assert err["source"] == name
        assert err["message"]
        assert str(err["time"]).endswith("Z")
        assert err["archive"] == name  # the dropped name, not the work folder path
    crc = _error(failed, "corrupt.tfrecord")
    assert crc["kind"] == "crc_mismatch"
    assert crc["record"] == 0
    assert "offset" in crc
    assert crc["hint"]
    assert _error(failed, "nothing.zip")["kind"] == "unknown_format"
    assert files(out) == []
    assert daemon.named("drop_incomplete_taken")

    # still running: a good drop after the bad ones is published
    (drop / "good.zip").write_bytes(good)
    _wait_published(daemon, out, 1)
    assert _items(out / "good.zip") == 3
    assert daemon.proc.poll() is None


def test_same_bytes_again_is_a_duplicate_and_a_new_file_of_the_same_name_gets_a_new_name(
    daemon: Daemon, folders: tuple[Path, Path]
) -> None:
    drop, out = folders
    first = tfrecord_zip(2, tag="one")
    (drop / "task.zip").write_bytes(first)
    _wait_published(daemon, out, 1)
    wait_until(lambda: files(drop / "done") == ["task.zip"])

    (drop / "task.zip").write_bytes(first)  # the very same export, dropped again
    dup = daemon.wait_event("duplicate_input")[0]
    assert dup["published_as"] == "task.zip"
    wait_until(lambda: files(drop / "done") == ["task-1.zip", "task.zip"])
    assert files(out) == ["task.label_map.pbtxt", "task.report.json", "task.zip"]

    (drop / "task.zip").write_bytes(tfrecord_zip(7, tag="two"))  # new content, same name
    _wait_published(daemon, out, 2)
    assert _items(out / "task.zip") == 2  # never overwritten
    assert _items(out / "task-1.zip") == 7
    assert len(daemon.named("archive_published")) == 2


def test_on_success_delete_removes_the_input(tmp_path: Path) -> None:
    daemon = _start(tmp_path, on_success="delete")
    try:
        (tmp_path / "in" / "x.zip").write_bytes(tfrecord_zip(1, tag="del"))
        _wait_published(daemon, tmp_path / "out", 1)
        daemon.wait_event("job_done")
        assert files(tmp_path / "in" / "done") == []
        assert files(tmp_path / "in") == []
    finally:
        assert daemon.stop() == 0


def test_no_config_runs_the_built_in_inbox_to_outbox_pipeline(tmp_path: Path) -> None:
    log = (tmp_path / "log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfdrop", "run"],
        cwd=tmp_path,
        stdout=log,
        stderr=log,
        env={k: v for k, v in os.environ.items() if not k.startswith("TFDROP_")}
        | {"TFDROP_SETTLE_SECONDS": "0.2", "TFDROP_LOG_FORMAT": "json"},
    )
    try:
        inbox, outbox = tmp_path / "tfdrop" / "inbox", tmp_path / "tfdrop" / "outbox"
        wait_until(lambda: '"daemon_ready"' in (tmp_path / "log").read_text())
        first = json.loads((tmp_path / "log").read_text().splitlines()[0])
        assert first["event"] == "daemon_started"
        assert "built-in default" in first["config"]
        assert first["drop"] == str(inbox)
        (inbox / "cam.zip").write_bytes(tfrecord_zip(2, tag="cam"))
        wait_until((outbox / "cam.zip").exists)
    finally:
        proc.terminate()
        assert proc.wait(20) == 0
        log.close()


def test_a_corrupt_record_deep_in_the_stream_fails_as_crc_mismatch(
    daemon: Daemon, folders: tuple[Path, Path]
) -> None:
    drop, _ = folders
    data = bytearray(tfrecord_bytes(5, tag="deep"))
    data[-10] ^= 0xFF  # inside the last record's payload
    (drop / "deep.tfrecord").write_bytes(bytes(data))
    daemon.wait_event("job_failed", timeout=30)
    err = _error(drop / "failed", "deep.tfrecord")
    assert err["kind"] == "crc_mismatch"
    assert err["record"] == 4


def test_polling_mode_for_network_shares_finds_drops(tmp_path: Path) -> None:
    p = {"name": "main", "drop": "in", "output": "out"}
    config = write_config(
        tmp_path / "tfdrop.toml", [p], poll=True, poll_interval_seconds=0.1, rescan_seconds=60
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        (tmp_path / "in" / "polled.zip").write_bytes(tfrecord_zip(1, tag="poll"))
        _wait_published(daemon, tmp_path / "out", 1)
        assert files(tmp_path / "out") == [
            "polled.label_map.pbtxt",
            "polled.report.json",
            "polled.zip",
        ]
    finally:
        assert daemon.stop() == 0


def test_run_with_a_bad_config_exits_1_naming_the_key_without_a_traceback(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[daemon]\nlog_format = "xml"\n[[pipeline]]\ndrop = "in"\noutput = "out"\n')
    result = subprocess.run(
        [sys.executable, "-m", "tfdrop", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "daemon.log_format" in result.stderr
    assert "auto, json, console" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "in").exists()  # nothing was started

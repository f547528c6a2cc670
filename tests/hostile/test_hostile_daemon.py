"""The adversarial suite, daemon side: the real daemon in a subprocess
(tests/daemon_support.py) against long names, its drop folder removed and made again, broken
configs on SIGHUP, huge config values, and a slow copy of a zip holding a zip."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from daemon_support import (
    LABEL_MAP,
    Daemon,
    files,
    tfrecord_bytes,
    tfrecord_zip,
    wait_until,
    write_config,
)


def _daemon(tmp_path: Path, **daemon: object) -> tuple[Daemon, Path]:
    config = write_config(
        tmp_path / "tfdrop.toml", [{"name": "p", "drop": "in", "output": "out"}], **daemon
    )
    d = Daemon(config, tmp_path / "daemon.log")
    d.wait_event("daemon_ready")
    return d, config


def _jobs_of(d: Daemon, source: str) -> list[dict[str, object]]:
    return [e for e in d.named("job_started") if e.get("source") == source]


def test_long_drop_names_publish_or_fail_once_never_retried(tmp_path: Path) -> None:
    d, _ = _daemon(tmp_path)
    try:
        fits = "x" * 236 + ".zip"  # every output and temp name fits now
        too_long = "y" * 250 + ".zip"  # "<stem>.label_map.pbtxt" cannot fit in 255 bytes
        (tmp_path / "in" / fits).write_bytes(tfrecord_zip(1, tag="fits"))
        (tmp_path / "in" / too_long).write_bytes(tfrecord_zip(1, tag="long"))
        wait_until((tmp_path / "out" / fits).exists)
        assert files(tmp_path / "out") == sorted(
            [fits, "x" * 236 + ".label_map.pbtxt", "x" * 236 + ".report.json"]
        )
        errors = wait_until(lambda: list((tmp_path / "in" / "failed").glob("*.error.json")))
        (error,) = errors
        assert len(error.name.encode()) <= 255
        doc = json.loads(error.read_text())
        assert doc["kind"] == "name_too_long"
        assert doc["source"] == too_long
        assert "rename" in doc["hint"]
        time.sleep(1.0)  # time for retries, if there were any
        assert len(_jobs_of(d, too_long)) == 1
        assert len(_jobs_of(d, fits)) == 1
        assert not d.named("job_retry_scheduled")
    finally:
        assert d.stop() == 0


def test_the_drop_folder_removed_and_made_again_is_watched_again(tmp_path: Path) -> None:
    d, _ = _daemon(tmp_path)
    try:
        drop = tmp_path / "in"
        while drop.exists():  # the daemon may be touching its state folder meanwhile
            shutil.rmtree(drop, ignore_errors=True)
        d.wait_event("drop_folder_missing")
        drop.mkdir()
        d.wait_event("drop_folder_back")
        shutil.rmtree(tmp_path / "out")  # create = true (the default): made again by the job
        (drop / "after.zip").write_bytes(tfrecord_zip(1, tag="after"))
        wait_until((tmp_path / "out" / "after.zip").exists)
        wait_until((drop / "done" / "after.zip").exists)
        assert d.named("output_folder_recreated")
    finally:
        assert d.stop() == 0


def test_a_missing_output_folder_without_create_is_a_logged_retried_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "tfdrop.toml",
        [{"name": "p", "drop": "in", "output": "out", "create": False}],
    )
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    d = Daemon(config, tmp_path / "daemon.log")
    try:
        d.wait_event("daemon_ready")
        (tmp_path / "out").rmdir()
        (tmp_path / "in" / "a.zip").write_bytes(tfrecord_zip(1))
        retry = d.wait_event("job_retry_scheduled", count=2)[0]
        assert "output folder is missing" in str(retry["error"])
        (tmp_path / "out").mkdir()
        wait_until((tmp_path / "out" / "a.zip").exists)
    finally:
        assert d.stop() == 0


def _recv_until(sock: socket.socket, key: str, timeout: float = 15.0) -> list[str]:
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            break
        got.append(msg)
        if f"{key}=1" in msg.split("\n"):
            return got
    raise AssertionError(f"no {key}=1 within {timeout} s; got {got}")


BROKEN_CONFIGS = {
    "nul_in_a_path": '[[pipeline]]\nname = "p"\ndrop = "in"\noutput = "o\\u0000ut"\n',
    "label_map_not_utf8": '[[pipeline]]\nname = "p"\ndrop = "in"\noutput = "out"\n'
    'label_map = "bad.pbtxt"\n',
    "max_jobs_float": '[daemon]\nmax_jobs = 1e8\n[[pipeline]]\ndrop = "in"\noutput = "out"\n',
    "retry_nan": '[daemon]\nretry_base_seconds = nan\n[[pipeline]]\ndrop = "in"\noutput = "o"\n',
    "shards_huge": '[[pipeline]]\nname = "p"\ndrop = "in"\noutput = "out"\nshards = 2000\n',
    "not_toml": "[[pipeline]\n",
}


def test_broken_configs_on_sighup_are_refused_logged_and_ready_follows(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    config = write_config(tmp_path / "tfdrop.toml", [{"name": "p", "drop": "in", "output": "out"}])
    good = config.read_text()
    (tmp_path / "bad.pbtxt").write_bytes(b"item {\n id: 1\n name: '\xff'\n}\n")
    d = Daemon(config, tmp_path / "daemon.log", env={"NOTIFY_SOCKET": address})
    try:
        _recv_until(sock, "READY")
        for n, (case, text) in enumerate(BROKEN_CONFIGS.items(), start=1):
            config.write_text(text)
            d.signal(signal.SIGHUP)
            _recv_until(sock, "RELOADING")
            _recv_until(sock, "READY")
            refused = d.wait_event("config_reload_refused", count=n)[-1]
            assert refused.get("message"), case
            assert refused["kind"] == "config", (case, refused)
        config.write_text(good)
        (tmp_path / "in" / "still.zip").write_bytes(tfrecord_zip(1, tag="still"))
        wait_until((tmp_path / "out" / "still.zip").exists)  # the old config kept working
        assert "Traceback" not in d.text()
    finally:
        assert d.stop() == 0
        sock.close()


@pytest.mark.parametrize(
    ("daemon", "pipeline", "key"),
    [
        ("max_jobs = 1e8", "", "daemon.max_jobs"),
        ("max_jobs = 100000000", "", "daemon.max_jobs"),
        ("retry_base_seconds = nan", "", "daemon.retry_base_seconds"),
        ("settle_seconds = inf", "", "daemon.settle_seconds"),
        ("", "shards = 2000", ".shards"),
        ("", "shards = 1000000000", ".shards"),
    ],
)
def test_huge_config_values_stop_the_start_at_once_naming_the_key(
    tmp_path: Path, daemon: str, pipeline: str, key: str
) -> None:
    config = tmp_path / "tfdrop.toml"
    pipeline_table = f'[[pipeline]]\ndrop = "in"\noutput = "out"\n{pipeline}\n'
    config.write_text(f"[daemon]\n{daemon}\n{pipeline_table}")
    proc = subprocess.run(
        [sys.executable, "-m", "tfdrop", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert key in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "in").exists()  # refused before any folder was made


def test_a_slow_copy_of_a_zip_holding_a_zip_is_not_published_from_the_inner_one(
    tmp_path: Path,
) -> None:
    inner = tfrecord_zip(4, tag="inner")
    outer_path = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer_path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("inner.zip", inner)  # first member: a whole zip, end record included
        zf.writestr("default.tfrecord", tfrecord_bytes(2, tag="outer"))
        zf.writestr("label_map.pbtxt", LABEL_MAP)
    outer = outer_path.read_bytes()
    outer_path.unlink()
    cut = outer.index(inner) + len(inner)
    d, _ = _daemon(tmp_path, stale_seconds=30.0)
    try:
        dst = tmp_path / "in" / "nested.zip"
        with dst.open("wb") as f:
            f.write(outer[:cut])  # paused right after the inner zip's end record
            f.flush()
            time.sleep(2.0)  # ten settle times: a zip with an end record would be taken
            assert not d.named("job_started")
            assert files(tmp_path / "out") == []
            f.write(outer[cut:])
        wait_until((tmp_path / "out" / "nested.zip").exists)
        report = json.loads((tmp_path / "out" / "nested.report.json").read_text())
        assert report["input"]["size"] == len(outer)
    finally:
        assert d.stop() == 0


def test_an_input_published_but_not_routed_ends_as_published_once_done_is_back(
    tmp_path: Path,
) -> None:
    # found by the outside attack: with done/ replaced by a file, each retry of the routing
    # logged duplicate_input of the job's own archive and the job ended as a duplicate
    d, _ = _daemon(tmp_path)
    done = tmp_path / "in" / "done"
    try:
        done.rmdir()
        done.write_bytes(b"not a folder")
        (tmp_path / "in" / "a.zip").write_bytes(tfrecord_zip(1, tag="a"))
        d.wait_event("archive_published")
        d.wait_event("job_retry_scheduled", count=2)
        done.unlink()
        (job_done,) = d.wait_event("job_done", timeout=30)
        assert job_done["status"] == "published"
        assert job_done["output"] == "a.zip"
        assert files(done) == ["a.zip"]
        assert files(tmp_path / "out") == ["a.label_map.pbtxt", "a.report.json", "a.zip"]
        assert not d.named("duplicate_input")
    finally:
        assert d.stop() == 0
    (stopped,) = d.named("daemon_stopped")
    assert "duplicate" not in stopped["counts"]
    assert stopped["counts"]["published"] == 1


def test_a_drop_named_only_by_its_suffix_is_reported_as_ignored_once(tmp_path: Path) -> None:
    # found by the outside attack: ".zip" (hidden, so taken for a temp file) sat silently
    d, _ = _daemon(tmp_path)
    try:
        (tmp_path / "in" / ".zip").write_bytes(tfrecord_zip(1, tag="dot"))
        (tmp_path / "in" / "seen.zip").write_bytes(tfrecord_zip(1, tag="seen"))
        wait_until(lambda: "seen.zip" in files(tmp_path / "in" / "done"))
        (ignored,) = d.wait_event("drop_ignored")
        assert ignored["source"] == ".zip"
        assert "rename" in ignored["reason"]
        assert files(tmp_path / "in") == [".zip"]
    finally:
        assert d.stop() == 0
    assert len(d.named("drop_ignored")) == 1

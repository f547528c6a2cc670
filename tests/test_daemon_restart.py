"""Restart safety: kill -9 mid-conversion, a crash after publishing, graceful abort, retries."""

from __future__ import annotations

import json
import shutil
import signal
from functools import cache
from pathlib import Path

from daemon_support import Daemon, all_files, files, tfrecord_zip, write_config


@cache
def _big() -> bytes:
    """Big enough that a conversion takes several seconds: progress events meanwhile, and time
    for a stop request to reach it while its process still converts."""
    return tfrecord_zip(10000, tag="big")


def _config(tmp_path: Path, **daemon: object) -> Path:
    return write_config(
        tmp_path / "tfdrop.toml", [{"name": "p", "drop": "in", "output": "out"}], **daemon
    )


def _leftovers(tmp_path: Path) -> list[str]:
    """Temp or partial files anywhere (output folder, work folders, ledger)."""
    return [
        str(p.relative_to(tmp_path))
        for p in all_files(tmp_path)
        if p.name.endswith(".tmp") or ("/work/" in str(p) and not p.name.endswith(".lock"))
    ]


def test_kill_9_mid_conversion_then_restart_converts_exactly_once(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = Daemon(config, tmp_path / "first.log")
    first.wait_event("daemon_ready")
    (tmp_path / "in" / "big.zip").write_bytes(_big())
    first.wait_event("job_progress", timeout=30)
    first.kill()
    out = tmp_path / "out"
    assert files(out) == []
    assert files(tmp_path / "in") == []  # claimed: in the work folder, not lost
    assert any(p.name == "big.zip" for p in all_files(tmp_path / "in" / ".tfdrop" / "work"))

    second = Daemon(config, tmp_path / "second.log")
    try:
        recovered = second.wait_event("claim_recovered")[0]
        assert recovered["source"] == "big.zip"
        second.wait_event("job_done", timeout=60)
        assert files(out) == ["big.label_map.pbtxt", "big.report.json", "big.zip"]
        assert json.loads((out / "big.report.json").read_text())["items"] == 10000
        assert files(tmp_path / "in" / "done") == ["big.zip"]
        assert _leftovers(tmp_path) == []
        assert len(first.named("archive_published") + second.named("archive_published")) == 1
    finally:
        assert second.stop() == 0


def test_crash_after_publishing_before_bookkeeping_does_not_publish_twice(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    daemon = Daemon(config, tmp_path / "first.log")
    daemon.wait_event("daemon_ready")
    (tmp_path / "in" / "x.zip").write_bytes(tfrecord_zip(2, tag="x"))
    daemon.wait_event("job_done")
    instance = daemon.named("pipeline_opened")[0]["instance"]
    assert daemon.stop() == 0

    # recreate the state a kill -9 leaves between the archive's rename and the ledger update:
    # input still claimed, ledger entry pending with its stem, archive already published
    state = tmp_path / "in" / ".tfdrop"
    (entry_file,) = (state / "ledger" / "sha256").glob("*.json")
    entry = json.loads(entry_file.read_text())
    entry.update(state="pending", output=None)
    entry_file.write_text(json.dumps(entry))
    job = state / "work" / instance / "0000job"
    job.mkdir()
    shutil.move(tmp_path / "in" / "done" / "x.zip", job / "x.zip")

    again = Daemon(config, tmp_path / "second.log")
    try:
        again.wait_event("publish_recovered")
        again.wait_event("job_done")
        assert files(tmp_path / "out") == ["x.label_map.pbtxt", "x.report.json", "x.zip"]
        assert files(tmp_path / "in" / "done") == ["x.zip"]
        assert again.named("archive_published") == []
        assert json.loads(entry_file.read_text())["state"] == "published"
    finally:
        assert again.stop() == 0


def test_sigterm_past_the_grace_period_aborts_the_job_keeps_the_input_and_exits_0(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, grace_seconds=0.0)
    daemon = Daemon(config, tmp_path / "first.log")
    daemon.wait_event("daemon_ready")
    (tmp_path / "in" / "big.zip").write_bytes(_big())
    daemon.wait_event("job_progress", timeout=30)
    daemon.signal(signal.SIGTERM)
    assert daemon.stop() == 0
    assert daemon.named("job_aborted")
    assert daemon.named("daemon_stopped")[0]["clean"] is True
    assert files(tmp_path / "out") == []
    assert _leftovers(tmp_path) == [
        str(p.relative_to(tmp_path))
        for p in all_files(tmp_path / "in" / ".tfdrop" / "work")
        if p.name == "big.zip"
    ]

    again = Daemon(config, tmp_path / "second.log")
    try:
        again.wait_event("job_done", timeout=60)
        assert files(tmp_path / "out") == ["big.label_map.pbtxt", "big.report.json", "big.zip"]
    finally:
        assert again.stop() == 0


def test_transient_errors_are_retried_with_backoff_and_the_input_never_fails(
    tmp_path: Path,
) -> None:
    daemon = Daemon(_config(tmp_path), tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        out = tmp_path / "out"
        out.rename(tmp_path / "out.away")
        out.write_text("a file where the output folder should be")  # ENOTDIR on publish
        (tmp_path / "in" / "t.zip").write_bytes(tfrecord_zip(1, tag="t"))
        retries = daemon.wait_event("job_retry_scheduled", 3)
        assert [r["attempt"] for r in retries[:3]] == [1, 2, 3]
        assert retries[1]["delay_s"] == 2 * retries[0]["delay_s"]
        assert files(tmp_path / "in" / "failed") == []
        out.unlink()
        (tmp_path / "out.away").rename(out)
        daemon.wait_event("job_done", timeout=30)
        assert files(out) == ["t.label_map.pbtxt", "t.report.json", "t.zip"]
        assert files(tmp_path / "in" / "done") == ["t.zip"]
    finally:
        assert daemon.stop() == 0

"""Retention that cannot be turned against the user: ages from the routing (ctime), never
through a linked ``done/``/``failed/``, never stopped (nor stopping the daemon) by one file.

A test cannot set a ctime back, so the ages are tested by calling the sweep with a ``now``
days ahead (:func:`apply_retention` takes it); the daemon tests run the real daemon
(:mod:`daemon_support`), the ones switching users as ``nobody`` (root and setpriv, as in
``test_reliability_permissions``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from conftest import require_root
from daemon_support import Daemon, files, tfrecord_zip, write_config
from tfdrop.config import PipelineConfig
from tfdrop.daemon.retention import ORPHAN_GRACE_SECONDS, Reported, apply_retention

DAY = 86400.0
NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _pipeline(tmp_path: Path, done_days: float, failed_days: float) -> PipelineConfig:
    return PipelineConfig(
        name="p",
        drop=tmp_path / "in",
        output=tmp_path / "out",
        keep_done_days=done_days,
        keep_failed_days=failed_days,
    )


def _old_mtime(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t), follow_symlinks=False)


def _write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _events(logs: list[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [e for e in logs if e["event"] == event]


# -- the age is the routing time ------------------------------------------------------------


def test_a_file_with_an_old_mtime_is_aged_from_its_ctime_and_its_times_are_left_alone(
    tmp_path: Path,
) -> None:
    cfg = _pipeline(tmp_path, 7, 7)
    copied = _write(cfg.done / "copied-with-old-times.zip")
    _old_mtime(copied, 30)
    future = _write(cfg.done / "future.zip")
    far = time.time() + 3650 * DAY
    os.utime(future, (far, far))  # a bogus mtime ten years ahead: aged by its ctime
    failed = _write(cfg.failed / "bad.zip")
    _write(cfg.failed / "bad.zip.error.json", b"{}")
    _old_mtime(failed, 30)
    mtime = copied.stat().st_mtime

    now = time.time()
    assert apply_retention(cfg, now=now) == []  # 30 days by mtime, routed just now
    assert copied.stat().st_mtime == mtime  # the user's times are never changed
    assert apply_retention(cfg, now=now + 6 * DAY) == []

    removed = apply_retention(cfg, now=now + 8 * DAY)
    assert sorted(r.name for r in removed) == ["bad.zip", "copied-with-old-times.zip", "future.zip"]
    assert files(cfg.done) == files(cfg.failed) == []
    assert {r.error_file for r in removed if r.folder == "failed"} == {"bad.zip.error.json"}


def test_the_sweep_keeps_temp_names_folders_and_a_young_orphan_error_file(tmp_path: Path) -> None:
    cfg = _pipeline(tmp_path, 0, 0)
    _write(cfg.done / ".x.zip.vm-0.abc.tmp")  # being written by a daemon
    (cfg.done / "a-folder.zip").mkdir(parents=True)
    _write(cfg.done / "old.zip")
    _write(cfg.failed / "lone.zip.error.json", b"{}")  # its input may be on its way in
    now = time.time() + 1.0
    assert [r.name for r in apply_retention(cfg, now=now)] == ["old.zip"]
    assert files(cfg.done) == [".x.zip.vm-0.abc.tmp"]
    assert (cfg.done / "a-folder.zip").is_dir()
    assert files(cfg.failed) == ["lone.zip.error.json"]
    later = apply_retention(cfg, now=now + ORPHAN_GRACE_SECONDS + 1)
    assert [(r.folder, r.name) for r in later] == [("failed", "lone.zip.error.json")]


# -- a linked done/ or failed/ is never swept -----------------------------------------------


def test_retention_refuses_a_done_or_failed_folder_that_is_a_link_and_says_so_once(
    tmp_path: Path,
) -> None:
    precious = tmp_path / "precious"
    for name in ("thesis.tex", "data.zip", "data.zip.error.json"):
        _write(precious / name)
    cfg = _pipeline(tmp_path, 0, 0)
    cfg.drop.mkdir()
    cfg.done.symlink_to(precious)
    cfg.failed.symlink_to(precious)
    reported = Reported()
    with capture_logs() as logs:
        for _ in range(3):  # three rescans
            assert apply_retention(cfg, now=time.time() + 100 * DAY, reported=reported) == []
    assert files(precious) == ["data.zip", "data.zip.error.json", "thesis.tex"]
    refused = _events(logs, "retention_refused")
    assert sorted(e["folder"] for e in refused) == ["done", "failed"]  # once each
    assert all("is a symbolic link" in e["reason"] for e in refused)

    cfg.done.unlink()
    _write(cfg.done)  # a file where the folder should be
    with capture_logs() as logs:
        apply_retention(cfg, now=time.time() + 100 * DAY, reported=Reported())
    reasons = [e["reason"] for e in _events(logs, "retention_refused") if e["folder"] == "done"]
    assert reasons == [f"{cfg.done} is not a folder"]


def test_a_daemon_never_deletes_through_a_linked_done_folder(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    _write(precious / "thesis.tex")
    _write(precious / "notes.txt")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "done").symlink_to(precious)
    config = write_config(
        tmp_path / "tfdrop.toml",
        [
            {
                "name": "main",
                "drop": "in",
                "output": "out",
                "keep_done_days": 0,  # anything in a real done/ goes at the next rescan
                "keep_failed_days": 0,
            }
        ],
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("retention_refused", timeout=30)
        (tmp_path / "in" / "a.zip").write_bytes(tfrecord_zip(2))
        daemon.wait_event("job_done", timeout=30)  # routed through the link (as before)
        _write(tmp_path / "in" / "broken.zip", b"PK\x03\x04 not a zip" + b"\0" * 40)
        daemon.wait_event("job_failed", timeout=30)
        # its removal from the real failed/ proves a later rescan swept (and refused done/)
        removed = daemon.wait_event("retention_removed", timeout=30)
    finally:
        assert daemon.stop() == 0
    assert [(e["folder"], e["name"]) for e in removed] == [("failed", "broken.zip")]
    assert files(precious) == ["a.zip", "notes.txt", "thesis.tex"]
    refused = daemon.named("retention_refused")
    assert len(refused) == 1  # once while it lasts, not at every rescan
    assert refused[0]["folder"] == "done"
    assert refused[0]["reason"].endswith("is a symbolic link")


# -- the daemon routes and keeps a fresh file --------------------------------------------------


def test_a_drop_copied_with_old_times_and_a_file_put_in_done_are_kept_after_routing(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "tfdrop.toml",
        [
            {
                "name": "main",
                "drop": "in",
                "output": "out",
                "keep_done_days": 7,
                "keep_failed_days": 0,  # a failed drop is removed at the next rescan
            }
        ],
    )
    done = tmp_path / "in" / "done"
    by_hand = _write(done / "by-hand.zip")
    _old_mtime(by_hand, 30)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        staged = _write(tmp_path / "old.zip", tfrecord_zip(2))
        _old_mtime(staged, 30)  # cp -p of a month-old export
        staged.rename(tmp_path / "in" / "old.zip")
        daemon.wait_event("job_done", timeout=30)
        assert done.joinpath("old.zip").stat().st_mtime < time.time() - 29 * DAY  # untouched
        # a failed drop after it: its removal proves a rescan with retention ran since
        _write(tmp_path / "in" / "broken.zip", b"PK\x03\x04 not a zip" + b"\0" * 40)
        daemon.wait_event("job_failed", timeout=30)
        removed = daemon.wait_event("retention_removed", timeout=30)
    finally:
        assert daemon.stop() == 0
    assert [(e["folder"], e["name"]) for e in removed] == [("failed", "broken.zip")]
    assert files(done) == ["by-hand.zip", "old.zip"]


# -- a file retention cannot remove -----------------------------------------------------------


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder outside pytest's 0700 temp tree, so that nobody can reach it."""
    require_root("setpriv to nobody")
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv is missing (util-linux)")
    root = Path(tempfile.mkdtemp(prefix="tfdrop-ret-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _nobodys(path: Path, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)
    return path


def _orphan_claim(drop: Path, data: bytes) -> None:
    """The work folder of a dead instance (its lock free) holding a claimed drop, put in
    place whole (renamed in, the lock file last) so no rescan sees half of it."""
    staging = _nobodys(drop.parent / "staging")
    instance = _nobodys(staging / "dead-9")
    job = _nobodys(instance / "0000dead-job")
    os.chown(_write(job / "orphan.zip", data), NOBODY, NOBODY)
    os.chown(_write(staging / "dead-9.lock", b""), NOBODY, NOBODY)
    work = drop / ".tfdrop" / "work"
    instance.rename(work / "dead-9")
    (staging / "dead-9.lock").rename(work / "dead-9.lock")


@pytest.mark.root
def test_a_file_retention_cannot_remove_is_logged_once_and_skipped(shared: Path) -> None:
    drop, out = _nobodys(shared / "in"), _nobodys(shared / "out")
    done = drop / "done"
    done.mkdir()
    done.chmod(0o1777)  # root's, shared and sticky: nobody cannot remove root's file in it
    failed = _nobodys(drop / "failed")
    _write(done / "someone-elses.zip")  # root's: nobody may not remove it
    for name in ("x.zip", "x.zip.error.json"):
        os.chown(_write(failed / name), NOBODY, NOBODY)
    config = write_config(
        shared / "t.toml",
        [
            {
                "name": "p",
                "drop": str(drop),
                "output": str(out),
                "keep_done_days": 0,
                "keep_failed_days": 0,
            }
        ],
    )
    daemon = Daemon(config, shared / "daemon.log", prefix=AS_NOBODY)
    try:
        daemon.wait_event("daemon_ready")  # the start-up scan's retention did not stop it
        assert os.stat(drop / ".tfdrop").st_uid == NOBODY
        failures = daemon.wait_event("retention_failed")
        assert failures[0]["name"] == "someone-elses.zip"
        assert failures[0]["folder"] == "done"
        assert "Operation not permitted" in failures[0]["error"]
        # the same rescan went on: failed/ swept, and a dead instance's claim adopted
        removed = daemon.wait_event("retention_removed")
        assert [(e["folder"], e["name"]) for e in removed] == [("failed", "x.zip")]
        _orphan_claim(drop, tfrecord_zip(2, tag="orphan"))
        daemon.wait_event("claim_adopted", timeout=30)
        daemon.wait_event("job_done", timeout=30)
        _write(drop / "later.zip", tfrecord_zip(2, tag="later")).chmod(0o644)
        daemon.wait_event("job_done", 2, timeout=30)
        assert daemon.proc.poll() is None
    finally:
        assert daemon.stop() == 0
    assert "someone-elses.zip" in files(done)
    assert len(daemon.named("retention_failed")) == 1  # once, not at every rescan
    assert daemon.named("scan_failed") == []
    assert sorted(n for n in files(out) if n.endswith(".zip")) == ["later.zip", "orphan.zip"]


@pytest.mark.root
def test_drops_owned_by_another_user_are_routed_without_touching_their_times(
    shared: Path,
) -> None:
    drop, out = _nobodys(shared / "in", 0o777), _nobodys(shared / "out")
    for sub in ("done", "failed"):
        _nobodys(drop / sub, 0o777)
    config = write_config(shared / "t.toml", [{"name": "p", "drop": str(drop), "output": str(out)}])
    daemon = Daemon(config, shared / "daemon.log", prefix=AS_NOBODY)
    try:
        daemon.wait_event("daemon_ready")
        # root's files, 0644: nobody may read and move them, but not change their times
        for name, data in (("good.zip", tfrecord_zip(2)), ("bad.zip", b"PK\x03\x04 no" * 8)):
            path = _write(drop / f".{name}.part", data)
            path.chmod(0o644)
            _old_mtime(path, 30)
            path.rename(drop / name)
        daemon.wait_event("job_done", timeout=30)
        daemon.wait_event("job_failed", timeout=30)
    finally:
        assert daemon.stop() == 0
    assert daemon.named("job_retry_scheduled") == []
    assert daemon.named("error_file_not_written") == []
    assert files(drop / "done") == ["good.zip"]
    assert files(drop / "failed") == ["bad.zip", "bad.zip.error.json"]
    for routed in (drop / "done" / "good.zip", drop / "failed" / "bad.zip"):
        assert routed.stat().st_uid == 0
        assert routed.stat().st_mtime < time.time() - 29 * DAY  # the user's time, kept

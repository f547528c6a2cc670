"""Permissions: the daemon as an unprivileged user (``setpriv`` to nobody).

The test (root) takes permissions away under a running daemon, one fault at a time: an
input it cannot read, an output folder, a ``failed/`` folder and a ``done/`` folder it cannot
write. Each time the daemon must log a clear error naming the path and errno, keep the input
claimed (nothing in the wrong folder, nothing lost), retry with a growing backoff (not a hot
loop), keep running, and finish the job once the permission is given back. Needs root to
switch users (CI runs as root); skipped otherwise, failed under ``CI=true``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_support import Daemon, files, tfrecord_zip, wait_until, write_config

NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder outside pytest's 0700 temp tree, so that nobody can reach it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true: the permission tests need root and setpriv")
        pytest.skip("needs root and setpriv")
    root = Path(tempfile.mkdtemp(prefix="tfdrop-perm-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        if (root / "daemon.log").exists():
            shutil.copy(root / "daemon.log", Path(tempfile.gettempdir()) / "tfdrop-perm-last.log")
        shutil.rmtree(root, ignore_errors=True)


def _own(path: Path, uid: int) -> None:
    os.chown(path, uid, uid)


def _retries(daemon: Daemon, source: str) -> list[dict[str, object]]:
    return [
        e
        for e in daemon.named("job_retry_scheduled")
        if e.get("source") == source and e.get("errno") == errno.EACCES
    ]


def _retried_with_backoff(daemon: Daemon, source: str) -> dict[str, object]:
    hits: list[dict[str, object]] = wait_until(
        lambda: len(_retries(daemon, source)) >= 3 and _retries(daemon, source), 30
    )
    delays = [float(str(e["delay_s"])) for e in hits]
    assert delays[0] < delays[1] <= delays[2]  # backoff, not a hot loop
    assert "Permission denied" in str(hits[0]["error"])
    assert daemon.proc.poll() is None
    return hits[0]


def _claimed(drop: Path, name: str) -> bool:
    return bool(list((drop / ".tfdrop" / "work").rglob(name)))


def test_unprivileged_daemon_retries_permission_faults_and_loses_nothing(base: Path) -> None:
    drop, out = base / "in", base / "out"
    for folder in (drop, out, drop / "done", drop / "failed"):
        folder.mkdir(parents=True)
        _own(folder, NOBODY)
    config = write_config(
        base / "t.toml",
        [{"name": "p", "drop": str(drop), "output": str(out)}],
        retry_base_seconds=0.2,
        retry_max_seconds=1.0,
    )
    daemon = Daemon(config, base / "daemon.log", prefix=AS_NOBODY)
    try:
        daemon.wait_event("daemon_ready")
        assert os.stat(drop / ".tfdrop").st_uid == NOBODY  # really running as nobody

        # 1. an input nobody may read (root's, mode 0600): claimed, retried, then converted
        unreadable = drop / "secret.zip"
        unreadable.write_bytes(tfrecord_zip(1, tag="secret"))
        unreadable.chmod(0o600)
        # it must not block the folder: a readable drop beside it goes through
        (drop / "other.zip").write_bytes(tfrecord_zip(1, tag="other"))
        wait_until(lambda: files(drop / "done") == ["other.zip"], 30)
        _retried_with_backoff(daemon, "secret.zip")
        assert _claimed(drop, "secret.zip")
        assert not [n for n in files(out) if n.startswith("secret.")]
        next(iter((drop / ".tfdrop" / "work").rglob("secret.zip"))).chmod(0o644)
        wait_until(lambda: "secret.zip" in files(drop / "done"), 30)
        assert "secret.zip" in files(out)

        # 2. an output folder it cannot write: nothing partial appears, published once allowed
        _own(out, 0)
        (drop / "a.zip").write_bytes(tfrecord_zip(1, tag="a"))
        _retried_with_backoff(daemon, "a.zip")
        assert _claimed(drop, "a.zip")
        assert not [n for n in files(out) if n.startswith("a.")]
        _own(out, NOBODY)
        wait_until(lambda: "a.zip" in files(drop / "done"), 30)
        assert [n for n in files(out) if n.startswith("a.")] == [
            "a.label_map.pbtxt",
            "a.report.json",
            "a.zip",
        ]

        # 3. a failed/ folder it cannot write: a broken input stays claimed until it can
        _own(drop / "failed", 0)
        (drop / "broken.zip").write_bytes(b"not a zip at all, but named like one" * 4)
        _retried_with_backoff(daemon, "broken.zip")
        assert _claimed(drop, "broken.zip")
        _own(drop / "failed", NOBODY)
        wait_until(lambda: files(drop / "failed") == ["broken.zip", "broken.zip.error.json"], 30)

        # 4. a done/ folder it cannot write: published once, the input kept until it can move
        _own(drop / "done", 0)
        (drop / "d.zip").write_bytes(tfrecord_zip(1, tag="d"))
        _retried_with_backoff(daemon, "d.zip")
        assert _claimed(drop, "d.zip")
        _own(drop / "done", NOBODY)
        wait_until(lambda: "d.zip" in files(drop / "done"), 30)
        assert [n for n in files(out) if n.endswith(".zip")] == [
            "a.zip",
            "d.zip",
            "other.zip",
            "secret.zip",
        ]

        assert daemon.proc.poll() is None
        assert [p.name for p in drop.iterdir() if p.is_file()] == []
    finally:
        code = daemon.stop()
    assert code == 0
    assert not stat.S_ISDIR(os.lstat(base / "t.toml").st_mode)

"""The state folder (``<drop>/.tfdrop``) removed or replaced under a running daemon
(found by the outside attack): claims failed with ENOENT forever, and a second instance
started then took the same slot, as its lock file had gone with the folder."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from daemon_support import Daemon, files, tfrecord_zip, wait_until, write_config


def _config(tmp_path: Path) -> Path:
    return write_config(tmp_path / "tfdrop.toml", [{"name": "p", "drop": "in", "output": "out"}])


def _published(tmp_path: Path, name: str) -> None:
    (tmp_path / "in" / name).write_bytes(tfrecord_zip(1, tag=name))
    wait_until(lambda: name in files(tmp_path / "in" / "done"), timeout=30)
    assert name in files(tmp_path / "out")


def _remove_tree(folder: Path) -> int:
    """``rm -rf`` of a folder the daemon writes to (its status file, see daemon/status.py):
    a file made between rmtree's listing and its rmdir fails it with ENOTEMPTY; again then.
    The number of tries (the daemon may make the folder again between two of them)."""
    tries = 0
    while folder.exists():
        tries += 1
        with contextlib.suppress(OSError):
            shutil.rmtree(folder)
    return tries


def test_a_removed_state_folder_is_made_again_and_its_slot_locked_again(tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = Daemon(config, tmp_path / "first.log")
    second: Daemon | None = None
    try:
        first.wait_event("daemon_ready")
        _published(tmp_path, "before.zip")
        tries = _remove_tree(tmp_path / "in" / ".tfdrop")
        recreated = first.wait_event("state_folder_recreated")[0]
        assert recreated["missing"] == "work_folder"
        _published(tmp_path, "after.zip")
        assert not first.named("claim_failed")
        second = Daemon(config, tmp_path / "second.log")
        second.wait_event("daemon_ready")
        (opened_first,) = first.named("pipeline_opened")
        (opened_second,) = second.named("pipeline_opened")
        assert opened_second["instance"] != opened_first["instance"]
    finally:
        if second is not None:
            assert second.stop() == 0
        assert first.stop() == 0
    # once per removal that the daemon saw, never more (no loop of its own making)
    assert 1 <= len(first.named("state_folder_recreated")) <= tries


def test_a_state_folder_replaced_by_a_file_stops_claims_until_it_is_a_folder_again(
    tmp_path: Path,
) -> None:
    d = Daemon(_config(tmp_path), tmp_path / "daemon.log")
    try:
        d.wait_event("daemon_ready")
        state = tmp_path / "in" / ".tfdrop"
        while not state.is_file():  # the daemon may make it again meanwhile
            shutil.rmtree(state, ignore_errors=True)
            with contextlib.suppress(IsADirectoryError):
                state.write_bytes(b"not a folder")
        (tmp_path / "in" / "waiting.zip").write_bytes(tfrecord_zip(1, tag="waiting"))
        d.wait_event("scan_failed")
        assert files(tmp_path / "in") == [".tfdrop", "waiting.zip"]  # waiting, not lost
        state.unlink()
        wait_until(lambda: "waiting.zip" in files(tmp_path / "in" / "done"), timeout=30)
        d.wait_event("state_folder_recreated")
    finally:
        assert d.stop() == 0

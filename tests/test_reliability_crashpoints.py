"""Crash points the torture run found: a kill between two steps of routing an input.

Each test builds the exact state a SIGKILL leaves at one point (found by tests/stress/torture.py)
and checks that taking the job up again ends with one input and its error file, never a lost
error file or a second copy.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon_support import Daemon, files, tfrecord_zip, write_config
from tfdrop.daemon.claim import WorkArea
from tfdrop.daemon.fsops import move_unique, move_with_error


def _error(job: str) -> bytes:
    return json.dumps({"kind": "bad_archive", "job": job}).encode()


def test_move_unique_after_a_kill_between_link_and_unlink_keeps_one_copy(tmp_path: Path) -> None:
    (tmp_path / "done").mkdir()
    src = tmp_path / "a.zip"
    src.write_bytes(b"x")
    os.link(src, tmp_path / "done" / "a.zip")  # the link made it, the unlink did not
    dst = move_unique(src, tmp_path / "done", "a.zip")
    assert dst == tmp_path / "done" / "a.zip"
    assert not src.exists()
    assert files(tmp_path / "done") == ["a.zip"]


def test_move_with_error_writes_the_error_file_before_the_input_arrives(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()
    src = tmp_path / "a.zip"
    src.write_bytes(b"x")
    dst = move_with_error(src, failed, "a.zip", _error("j1"), job="j1", instance="vm-0")
    assert dst == failed / "a.zip"
    assert files(failed) == ["a.zip", "a.zip.error.json"]
    assert json.loads((failed / "a.zip.error.json").read_text())["job"] == "j1"


def test_move_with_error_reuses_its_own_error_file_left_by_a_kill(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "a.zip.error.json").write_bytes(_error("j1"))  # killed before the input moved
    src = tmp_path / "a.zip"
    src.write_bytes(b"x")
    dst = move_with_error(src, failed, "a.zip", _error("j1"), job="j1", instance="vm-0")
    assert dst == failed / "a.zip"
    assert files(failed) == ["a.zip", "a.zip.error.json"]


def test_move_with_error_leaves_another_inputs_error_file_alone(tmp_path: Path) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / "a.zip.error.json").write_bytes(_error("other"))  # its input is on its way
    src = tmp_path / "a.zip"
    src.write_bytes(b"x")
    dst = move_with_error(src, failed, "a.zip", _error("j1"), job="j1", instance="vm-0")
    assert dst == failed / "a-1.zip"
    assert json.loads((failed / "a.zip.error.json").read_text())["job"] == "other"
    assert json.loads((failed / "a-1.zip.error.json").read_text())["job"] == "j1"


def test_move_with_error_after_a_kill_between_link_and_unlink_keeps_one_copy(
    tmp_path: Path,
) -> None:
    failed = tmp_path / "failed"
    failed.mkdir()
    src = tmp_path / "a.zip"
    src.write_bytes(b"x")
    (failed / "a.zip.error.json").write_bytes(_error("j1"))
    os.link(src, failed / "a.zip")
    dst = move_with_error(src, failed, "a.zip", _error("j1"), job="j1", instance="vm-0")
    assert dst == failed / "a.zip"
    assert not src.exists()
    assert files(failed) == ["a.zip", "a.zip.error.json"]


def test_restart_removes_an_error_file_temp_cut_short_by_a_kill(tmp_path: Path) -> None:
    """The torture run found ``failed/.x.zip.error.json.<instance>.<rand>.tmp`` left behind."""
    config = write_config(tmp_path / "t.toml", [{"name": "p", "drop": "in", "output": "out"}])
    failed = tmp_path / "in" / "failed"
    failed.mkdir(parents=True)
    first = Daemon(config, tmp_path / "first.log")
    instance = first.wait_event("pipeline_opened")[0]["instance"]
    first.kill()
    leftover = failed / f".x.zip.error.json.{instance}.abc123.tmp"
    leftover.write_bytes(b"{")
    (tmp_path / "in" / "ok.zip").write_bytes(tfrecord_zip(1))
    second = Daemon(config, tmp_path / "second.log")
    try:
        second.wait_event("job_done")
        assert not leftover.exists()
    finally:
        assert second.stop() == 0


def test_adopting_a_dead_instances_emptied_job_folder_removes_it(tmp_path: Path) -> None:
    """The three-instance torture run found an adopted job folder whose input had already
    been routed (killed before the folder was removed) left in the work folder for good."""
    state = tmp_path / "state"
    dead = WorkArea(state, host="dead")
    claimed = dead.claim(_dropped(tmp_path / "a.zip"))
    assert claimed is not None
    claimed.input.unlink()  # routed to done/, then killed before finish_job_folder
    dead.close()  # the kill: its slot lock is free
    live = WorkArea(state, host="live")
    adopted = live.adopt_orphans()
    assert adopted == [claimed.job_id]
    assert live.job(claimed.job_id) is None
    assert list(live.folder.iterdir()) == []


def _dropped(path: Path) -> Path:
    path.write_bytes(b"x")
    return path

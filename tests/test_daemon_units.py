"""The daemon's pieces on real files: settling rules, claiming, the ledger."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from tfdrop.config import DEFAULT_PATTERNS
from tfdrop.daemon.claim import WorkArea
from tfdrop.daemon.fsops import move_unique, remove_own_temps, temp_name
from tfdrop.daemon.ledger import BEING_WRITTEN, Ledger
from tfdrop.archive.zipdir import has_end_record
from tfdrop.daemon.watch import DropTracker, is_temp_name, matches


def _zip(path: Path) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.txt", "x")
    return path.read_bytes()


@pytest.mark.parametrize(
    "name", [".x.AbC123", "a.zip.part", "a.zip.partial", "a.tmp", "a.zip.crdownload", "a~"]
)
def test_temp_names_are_never_taken(name: str) -> None:
    assert is_temp_name(name)


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        ("task.zip", True),
        ("TASK.ZIP", True),
        ("train.tfrecord", True),
        ("val.record", True),
        ("train-00000-of-00004", True),
        ("task.label_map.pbtxt", False),
        ("task.report.json", False),
        ("notes.txt", False),
    ],
)
def test_only_input_patterns_are_taken_so_sidecars_stay(name: str, taken: bool) -> None:
    assert matches(name, DEFAULT_PATTERNS) is taken


def test_zip_end_record_tells_a_whole_zip_from_a_partial_copy(tmp_path: Path) -> None:
    data = _zip(tmp_path / "whole.zip")
    assert has_end_record(tmp_path / "whole.zip")
    (tmp_path / "half.zip").write_bytes(data[: len(data) - 10])
    assert not has_end_record(tmp_path / "half.zip")
    (tmp_path / "tiny.zip").write_bytes(b"PK")
    assert not has_end_record(tmp_path / "tiny.zip")


def test_a_drop_settles_only_after_no_change_for_the_settle_time(tmp_path: Path) -> None:
    tracker = DropTracker(tmp_path, DEFAULT_PATTERNS, settle=1.0, stale=5.0)
    f = tmp_path / "a.tfrecord"
    f.write_bytes(b"1234")
    tracker.scan(0.0)
    assert tracker.settled(0.0) == []  # first look records size and mtime
    assert tracker.settled(0.9) == []
    with f.open("ab") as out:
        out.write(b"more")  # still growing: the clock restarts
    assert tracker.settled(1.5) == []
    assert tracker.settled(2.4) == []
    (settled,) = tracker.settled(2.6)
    assert settled.path == f
    assert settled.size == 8
    assert settled.complete
    assert tracker.settled(10.0) == []  # handed out once


def test_a_zip_without_end_record_waits_until_stale_then_is_taken_as_incomplete(
    tmp_path: Path,
) -> None:
    tracker = DropTracker(tmp_path, DEFAULT_PATTERNS, settle=0.5, stale=3.0)
    (tmp_path / "broken.zip").write_bytes(os.urandom(100))
    tracker.note("broken.zip", 0.0)
    assert tracker.settled(0.0) == []
    assert tracker.settled(1.0) == []
    assert tracker.settled(2.9) == []
    (settled,) = tracker.settled(3.1)
    assert not settled.complete


def test_ignored_names_are_reported_once_and_own_folders_never(tmp_path: Path) -> None:
    tracker = DropTracker(tmp_path, DEFAULT_PATTERNS, settle=0.1, stale=1.0)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "done").mkdir()
    (tmp_path / "sub.zip").mkdir()  # a folder with a matching name: never taken
    tracker.scan(0.0)
    tracker.scan(1.0)
    assert tracker.settled(0.0) == []
    assert sorted(tracker.newly_ignored) == ["notes.txt", "sub.zip"]


def test_one_claim_wins_and_the_other_sees_the_file_gone(tmp_path: Path) -> None:
    drop = tmp_path / "in"
    drop.mkdir()
    (drop / "a.zip").write_bytes(b"data")
    first = WorkArea(drop / ".tfdrop", host="h1")
    second = WorkArea(drop / ".tfdrop", host="h2")
    try:
        claimed = first.claim(drop / "a.zip")
        assert claimed is not None
        assert claimed.input.read_bytes() == b"data"
        assert claimed.input.parent.parent == drop / ".tfdrop" / "work" / "h1-0"
        assert second.claim(drop / "a.zip") is None
        assert list((drop / ".tfdrop" / "work" / "h2-0").iterdir()) == []
    finally:
        first.close()
        second.close()


def test_a_restarted_instance_recovers_its_claims_and_drops_empty_job_folders(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "in"
    drop.mkdir()
    (drop / "a.zip").write_bytes(b"data")
    area = WorkArea(drop / ".tfdrop", host="h")
    claimed = area.claim(drop / "a.zip")
    assert claimed is not None
    (area.folder / "emptyjob").mkdir()
    area.close()
    again = WorkArea(drop / ".tfdrop", host="h")
    try:
        assert again.instance == "h-0"  # the same slot, so the same work folder
        (found,) = again.recover()
        assert found.input == claimed.input
        assert not (again.folder / "emptyjob").exists()
    finally:
        again.close()


def test_ledger_entries_are_exclusive_and_stems_are_never_reused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    ledger = Ledger(tmp_path / "state", "h-0")
    entry = ledger.begin("a" * 64, "task.zip")
    assert entry is not None
    assert ledger.begin("a" * 64, "task.zip") is None  # one converter per content
    entry = ledger.reserve_stem(entry, "task", out, ".zip")
    assert entry.stem == "task"
    other = ledger.begin("b" * 64, "task.zip")
    assert other is not None
    assert ledger.reserve_stem(other, "task", out, ".zip").stem == "task-1"
    (out / "task-2.zip").write_bytes(b"someone else's")
    third = ledger.begin("c" * 64, "task.zip")
    assert third is not None
    assert ledger.reserve_stem(third, "task", out, ".zip").stem == "task-3"
    done = ledger.published(entry, "task.zip")
    got = ledger.get("a" * 64)
    assert got is not None
    assert (got.state, got.output) == ("published", "task.zip")
    ledger.forget(done)
    assert ledger.get("a" * 64) is None


def test_move_unique_never_overwrites(tmp_path: Path) -> None:
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "a.zip").write_bytes(b"old")
    (tmp_path / "a.zip").write_bytes(b"new")
    dst = move_unique(tmp_path / "a.zip", tmp_path / "done", "a.zip")
    assert dst.name == "a-1.zip"
    assert (tmp_path / "done" / "a.zip").read_bytes() == b"old"


def test_a_restart_removes_only_its_own_temp_files(tmp_path: Path) -> None:
    mine = temp_name(tmp_path / "x.zip", "h-0")
    theirs = temp_name(tmp_path / "x.zip", "h-1")
    mine.write_bytes(b"")
    theirs.write_bytes(b"")
    assert remove_own_temps(tmp_path, "h-0") == [mine.name]
    assert theirs.exists()


def test_a_torn_ledger_entry_is_waited_for_while_fresh_and_taken_over_when_old(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "state", "h-0")
    path = ledger.hashes / f"{'d' * 64}.json"
    path.write_text("")  # another instance between its O_EXCL create and its write
    entry = ledger.get("d" * 64)
    assert entry is not None
    assert (entry.state, entry.instance) == ("pending", BEING_WRITTEN)
    os.utime(path, (1, 1))  # left so by a crash long ago
    entry = ledger.get("d" * 64)
    assert entry is not None
    assert entry.instance == ""
    taken = ledger.take_over(entry)
    assert ledger.get("d" * 64) == taken

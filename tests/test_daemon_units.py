"""The daemon's pieces on real files: settling rules, claiming, the ledger."""

from __future__ import annotations

import asyncio
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from tfdrop.archive.zipdir import has_end_record
from tfdrop.config import DEFAULT_PATTERNS, DaemonConfig
from tfdrop.daemon import jobs as jobs_module
from tfdrop.daemon.claim import WorkArea
from tfdrop.daemon.fsops import (
    NameTooLongError,
    move_unique,
    move_with_error,
    numbered,
    remove_own_temps,
    split_name,
    temp_name,
)
from tfdrop.daemon.jobs import workers_for
from tfdrop.daemon.ledger import BEING_WRITTEN, Ledger
from tfdrop.daemon.service import retry_delay
from tfdrop.daemon.watch import DropTracker, Settled, has_end_record_async, matches
from tfdrop.publish import NAME_MAX, is_temp_name, name_bytes


def _settled(tracker: DropTracker, now: float) -> list[Settled]:
    return asyncio.run(tracker.settled(now))


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


def test_the_loop_checks_the_end_record_through_aiofiles_as_the_sync_check_does(
    tmp_path: Path,
) -> None:
    data = _zip(tmp_path / "whole.zip")
    with zipfile.ZipFile(tmp_path / "comment.zip", "w") as zf:
        zf.writestr("a.txt", "x")
        zf.comment = b"c" * 300
    with zipfile.ZipFile(tmp_path / "empty.zip", "w"):
        pass
    variants = {
        "half.zip": data[: len(data) - 10],
        "prefixed.zip": b"#!/bin/sh\n" + data,  # a self-extractor's stub before the zip
        "inner.zip": data + b"\0" * 40,  # bytes after the end record
        "tiny.zip": b"PK",
        "nothing.zip": b"",
    }
    for name, raw in variants.items():
        (tmp_path / name).write_bytes(raw)
    names = ["whole.zip", "comment.zip", "empty.zip", *variants]
    got = {n: asyncio.run(has_end_record_async(tmp_path / n)) for n in names}
    assert got == {n: has_end_record(tmp_path / n) for n in names}
    complete = {n for n, ok in got.items() if ok}
    assert complete == {"whole.zip", "comment.zip", "empty.zip", "prefixed.zip"}


def test_a_drop_settles_only_after_no_change_for_the_settle_time(tmp_path: Path) -> None:
    tracker = DropTracker(tmp_path, DEFAULT_PATTERNS, settle=1.0, stale=5.0)
    f = tmp_path / "a.tfrecord"
    f.write_bytes(b"1234")
    tracker.scan(0.0)
    assert _settled(tracker, 0.0) == []  # first look records size and mtime
    assert _settled(tracker, 0.9) == []
    with f.open("ab") as out:
        out.write(b"more")  # still growing: the clock restarts
    assert _settled(tracker, 1.5) == []
    assert _settled(tracker, 2.4) == []
    (settled,) = _settled(tracker, 2.6)
    assert settled.path == f
    assert settled.size == 8
    assert settled.complete
    assert _settled(tracker, 10.0) == []  # handed out once


def test_a_zip_without_end_record_waits_until_stale_then_is_taken_as_incomplete(
    tmp_path: Path,
) -> None:
    tracker = DropTracker(tmp_path, DEFAULT_PATTERNS, settle=0.5, stale=3.0)
    (tmp_path / "broken.zip").write_bytes(os.urandom(100))
    tracker.note("broken.zip", 0.0)
    assert _settled(tracker, 0.0) == []
    assert _settled(tracker, 1.0) == []
    assert _settled(tracker, 2.9) == []
    (settled,) = _settled(tracker, 3.1)
    assert not settled.complete


def test_ignored_names_are_reported_once_and_own_folders_never(tmp_path: Path) -> None:
    tracker = DropTracker(tmp_path, DEFAULT_PATTERNS, settle=0.1, stale=1.0)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "done").mkdir()
    (tmp_path / "sub.zip").mkdir()  # a folder with a matching name: never taken
    tracker.scan(0.0)
    tracker.scan(1.0)
    assert _settled(tracker, 0.0) == []
    assert sorted(name for name, _ in tracker.newly_ignored) == ["notes.txt", "sub.zip"]


def test_an_input_name_with_an_empty_stem_is_reported_as_ignored_once(tmp_path: Path) -> None:
    # found by the outside attack: ".zip" (hidden, so taken for a temp file) sat there silently
    tracker = DropTracker(tmp_path, DEFAULT_PATTERNS, settle=0.1, stale=1.0)
    for name in (".zip", ".x.AbC123", ".data.zip.XyZ", ".tfdrop"):
        (tmp_path / name).write_text("x")
    tracker.scan(0.0)
    tracker.scan(1.0)
    assert _settled(tracker, 2.0) == []
    ((name, why),) = tracker.newly_ignored
    assert name == ".zip"
    assert "rename" in why


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


def test_a_slot_this_process_holds_is_never_taken_adopted_or_reopened_by_it(
    tmp_path: Path,
) -> None:
    # found by the outside attack: a pipeline removed by a reload while its job ran, then
    # brought back, locked the same slot again (POSIX locks belong to the process) and
    # "recovered" the job it was still converting
    drop = tmp_path / "in"
    drop.mkdir()
    (drop / "a.zip").write_bytes(b"data")
    first = WorkArea(drop / ".tfdrop", host="h")
    claimed = first.claim(drop / "a.zip")
    assert claimed is not None
    second = WorkArea(drop / ".tfdrop", host="h")
    try:
        assert (first.instance, second.instance) == ("h-0", "h-1")
        assert second.recover() == []
        assert second.adopt_orphans() == []
        assert second.is_alive("h-0")
        assert claimed.input.read_bytes() == b"data"
    finally:
        second.close()
    third = WorkArea(drop / ".tfdrop", host="h")  # first still holds h-0 (the lock is kept)
    try:
        assert third.instance == "h-1"
    finally:
        third.close()
        first.close()


def test_a_removed_work_folder_and_slot_lock_are_made_again_under_the_same_slot(
    tmp_path: Path,
) -> None:
    state = tmp_path / "in" / ".tfdrop"
    area = WorkArea(state, host="h")
    try:
        assert area.ensure() is None
        for p in sorted(state.rglob("*"), key=lambda q: len(q.parts), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        state.rmdir()
        assert area.ensure() == "work_folder"
        assert area.folder.is_dir()
        assert area.ensure() is None
        other = WorkArea(state, host="h")  # the new lock file is held: the next one moves on
        assert other.instance == "h-1"
        other.close()
    finally:
        area.close()


def test_the_state_folder_is_not_made_again_in_a_drop_folder_that_is_gone(
    tmp_path: Path,
) -> None:
    """A drop folder removed while the daemon made its work folder whole again came back,
    with the state folder in it (a flaky test: ``rm -rf`` of the drop folder, then mkdir
    raced it)."""
    drop = tmp_path / "in"
    area = WorkArea(drop / ".tfdrop", host="h")
    try:
        shutil.rmtree(drop)
        with pytest.raises(FileNotFoundError):
            area.ensure()
        assert not drop.exists()
    finally:
        area.close()


def test_the_ledger_is_not_made_again_in_a_state_folder_that_is_gone(tmp_path: Path) -> None:
    """The ledger's folders come back inside the state folder, never the state folder or the
    drop folder holding it: ``Ledger.ensure`` runs right after ``WorkArea.ensure``, and a
    drop folder removed between the two came back with ``mkdir(parents=True)``."""
    drop = tmp_path / "in"
    ledger = Ledger(drop / ".tfdrop", "h-0")
    shutil.rmtree(drop / ".tfdrop" / "ledger")
    ledger.ensure()
    assert ledger.hashes.is_dir()
    assert ledger.names.is_dir()
    shutil.rmtree(drop)
    with pytest.raises(FileNotFoundError):
        ledger.ensure()
    assert not drop.exists()


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


# --- names that fit, retries that stay finite ---------------------------------------

LONG = "x" * 236 + ".zip"


@pytest.mark.parametrize("name", [LONG, "é" * 125 + ".zip", "y" * 255, "a." + "b" * 253])
def test_every_temp_and_routed_name_fits_name_max(tmp_path: Path, name: str) -> None:
    stem, suffix = split_name(name)
    for final in (name, f"{stem}.label_map.pbtxt"[:255], f"{name}.error.json"):
        assert name_bytes(temp_name(tmp_path / final, "host-0").name) <= NAME_MAX
    for n in (0, 1, 9999):
        plain = numbered(tmp_path, stem, suffix, n)
        assert name_bytes(plain.name) <= NAME_MAX
        failed = numbered(tmp_path, stem, suffix, n, reserve=len(".error.json"))
        assert name_bytes(failed.name + ".error.json") <= NAME_MAX
    assert numbered(tmp_path, "a", ".zip", 2).name == "a-2.zip"  # short names unchanged


def test_two_long_names_cut_alike_keep_apart(tmp_path: Path) -> None:
    a = numbered(tmp_path, "x" * 250 + "a", ".zip", 0, reserve=11).name
    b = numbered(tmp_path, "x" * 250 + "b", ".zip", 0, reserve=11).name
    assert a != b


def test_a_long_drop_name_lands_in_failed_with_an_error_file_that_fits(tmp_path: Path) -> None:
    src = tmp_path / ("z" * 250 + ".zip")
    src.write_bytes(b"data")
    failed = tmp_path / "failed"
    failed.mkdir()
    dst = move_with_error(src, failed, src.name, b"{}", job="j", instance="host-0")
    assert dst.read_bytes() == b"data"
    assert (failed / f"{dst.name}.error.json").read_bytes() == b"{}"
    assert not src.exists()


def test_a_stem_whose_sidecars_cannot_fit_is_refused_by_the_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state", "host-0")
    entry = ledger.begin("ab" * 32, "x")
    assert entry is not None
    with pytest.raises(NameTooLongError):
        ledger.reserve_stem(entry, "x" * 245, tmp_path, ".zip", ".label_map.pbtxt")


def test_the_retry_delay_stays_finite_after_thousands_of_attempts() -> None:
    d = DaemonConfig(retry_base_seconds=5.0, retry_max_seconds=300.0)
    assert retry_delay(d, 0) == 5.0
    assert retry_delay(d, 5000) == 300.0


# --- what counts as a finished zip ---------------------------------------------------


def test_a_tfrecord_holding_an_end_record_pattern_is_not_a_zip(tmp_path: Path) -> None:
    from tfdrop.codec.framing import encode_record

    body = encode_record(b"\x00" * 100 + b"PK\x05\x06" + b"\x00" * 18)
    for tail in (b"", b"PK\x05\x06" + b"\x00" * 18):  # inside a record, and the very end
        path = tmp_path / "a.tfrecord"
        path.write_bytes(encode_record(b"x" * 5000) + body + tail)
        assert not has_end_record(path)


def _stored_zip_of_a_zip(tmp_path: Path) -> tuple[bytes, int]:
    """A stored outer zip whose first member is a zip; where the inner zip's bytes end."""
    inner = tmp_path / "inner.zip"
    _zip(inner)
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as zf:
        zf.write(inner, "inner.zip")
        zf.writestr("more.txt", "y" * 1000)
    data = outer.read_bytes()
    inner_bytes = inner.read_bytes()
    return data, data.index(inner_bytes) + len(inner_bytes)


def test_a_copy_cut_after_an_inner_zips_end_record_is_not_finished(tmp_path: Path) -> None:
    data, cut = _stored_zip_of_a_zip(tmp_path)
    path = tmp_path / "copying.zip"
    path.write_bytes(data[:cut])
    assert not has_end_record(path)
    path.write_bytes(data)
    assert has_end_record(path)


def test_a_self_extractor_style_prefix_is_still_a_zip(tmp_path: Path) -> None:
    data = _zip(tmp_path / "a.zip")
    path = tmp_path / "sfx.zip"
    path.write_bytes(b"MZ" + b"\x00" * 500 + data)
    assert has_end_record(path)


def test_the_settle_check_waits_for_the_outer_end_record(tmp_path: Path) -> None:
    data, cut = _stored_zip_of_a_zip(tmp_path)
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.zip").write_bytes(data[:cut])
    tracker = DropTracker(drop, DEFAULT_PATTERNS, settle=0.0, stale=100.0)
    tracker.note("a.zip", 0.0)
    assert _settled(tracker, 1.0) == []
    with (drop / "a.zip").open("ab") as f:
        f.write(data[cut:])
    assert _settled(tracker, 2.0) == []  # the size changed: the settle clock starts again
    assert [s.complete for s in _settled(tracker, 3.0)] == [True]


def test_a_jobs_workers_spread_the_cores_over_the_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for cores, max_jobs, set_to, want in [
        (2, 2, None, 1),
        (2, 1, None, 2),
        (8, 2, None, 4),
        (8, 3, None, 2),
        (1, 4, None, 1),
        (2, 2, 4, 2),  # never more than the cores
        (8, 2, 1, 1),
    ]:
        monkeypatch.setattr(jobs_module, "default_jobs", lambda c=cores: c)
        assert workers_for(DaemonConfig(max_jobs=max_jobs, job_workers=set_to)) == want


def test_a_lone_job_gets_every_core(monkeypatch: pytest.MonkeyPatch) -> None:
    """The share counts the jobs as this one starts (running, it, queued), at most max_jobs."""
    for cores, max_jobs, sharing, set_to, want in [
        (2, 2, 1, None, 2),  # a lone drop: both cores
        (2, 2, 2, None, 1),
        (2, 2, 9, None, 1),  # a burst: never below cores // max_jobs
        (8, 4, 2, None, 4),
        (8, 4, 3, None, 2),
        (8, 2, 0, None, 8),  # counted as 1
        (2, 2, 1, 1, 1),  # job_workers set: as set
        (1, 2, 1, None, 1),
    ]:
        monkeypatch.setattr(jobs_module, "default_jobs", lambda c=cores: c)
        config = DaemonConfig(max_jobs=max_jobs, job_workers=set_to)
        assert workers_for(config, sharing) == want, (cores, max_jobs, sharing, set_to)

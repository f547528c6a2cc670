"""Hostile drops into a running daemon.

Every case of tests/stress/hostile_inputs.py (the archive catalogue plus record, Example, XML,
JSON and name cases) and a symlink pointing out of the drop folder are dropped into one
running daemon between good drops. Each must end in ``failed/`` with an error file naming
the cause (its kind, the archive, a message), the good drops around them must still be
published, the daemon's RSS must stay under :data:`RSS_BOUND` (sampled with psutil every
50 ms; a 200 MiB ratio bomb and 250,000 members are in the set), and nothing may be written
outside the pipeline's folders (the zip-slip targets, a decoy folder and the symlink's
target are checked).
"""

from __future__ import annotations

import json
import os
import threading
import time
from functools import cache
from pathlib import Path

import psutil

from daemon_support import Daemon, files, tfrecord_zip, wait_until, write_config
from stress.hostile_inputs import DROPS

MiB = 1 << 20
RSS_BOUND = 128 * MiB  # measured peak ~57 MiB (idle ~45 MiB); reads go in 4 MiB chunks


@cache
def _payloads() -> dict[str, tuple[str, bytes, frozenset[str]]]:
    return {case: (name, build(), kinds) for case, (name, build, kinds) in DROPS.items()}


def _tree(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[int, int]]:
    out = {}
    for p in root.rglob("*"):
        if any(p == s or s in p.parents for s in skip):
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


class _Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
            except psutil.Error:
                return
            for proc in procs:  # the daemon and each job's conversion process
                try:
                    self.peak = max(self.peak, proc.memory_info().rss)
                except psutil.Error:
                    continue
            time.sleep(0.05)


def _drop(folder: Path, name: str, data: bytes) -> None:
    tmp = folder / ".incoming.part"
    tmp.write_bytes(data)
    os.rename(tmp, folder / name)


def test_every_hostile_drop_fails_with_its_cause_in_bounded_memory_and_nothing_escapes(
    tmp_path: Path,
) -> None:
    payloads = _payloads()
    config = write_config(
        tmp_path / "tfdrop.toml",
        [{"name": "p", "drop": "in", "output": "out"}],
        max_jobs=2,
        stats_seconds=0.5,
        log_level="info",
    )
    drop, out = tmp_path / "in", tmp_path / "out"
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = tfrecord_zip(1, tag="secret")
    (outside / "secret.zip").write_bytes(secret)
    daemon = Daemon(config, tmp_path / "daemon.log")
    sampler = _Sampler(daemon.proc.pid)
    sampler.start()
    try:
        daemon.wait_event("daemon_ready")
        before = _tree(tmp_path, (drop, out, tmp_path / "daemon.log"))
        etc_before = set(os.listdir("/etc"))
        _drop(drop, "good-first.zip", tfrecord_zip(2, tag="first"))
        (drop / "link.zip").symlink_to(outside / "secret.zip")
        os.mkfifo(drop / "fifo.zip")  # opening it would block a reader forever
        (drop / "folder.zip").mkdir()
        for i, (name, data, _) in enumerate(payloads.values()):
            _drop(drop, name, data)
            if i == len(payloads) // 2:
                _drop(drop, "good-middle.zip", tfrecord_zip(2, tag="middle"))
        _drop(drop, "good-last.zip", tfrecord_zip(2, tag="last"))
        # a good drop whose name is not UTF-8: its report and the watcher must cope
        _drop(drop, "good-\udce9.zip", tfrecord_zip(1, tag="latin1"))

        expected_failed = sorted([n for n, _, _ in payloads.values()] + ["link.zip"])
        failed = drop / "failed"

        def routed() -> bool:
            have = files(failed)
            return all(n in have and f"{n}.error.json" in have for n in expected_failed) and (
                len(files(drop / "done")) == 4
            )

        wait_until(routed, timeout=180, step=0.2)
        assert daemon.proc.poll() is None
        table = {}
        for case, (name, _, kinds) in payloads.items():
            doc = json.loads((failed / f"{name}.error.json").read_text(encoding="utf-8"))
            table[case] = doc["kind"]
            assert doc["kind"] in kinds, (case, doc)
            assert doc["message"]
            assert doc["archive"] == name, (case, doc)
        link = json.loads((failed / "link.zip.error.json").read_text(encoding="utf-8"))
        assert link["kind"] == "unsafe_archive"
        assert "link" in link["message"]
        assert (failed / "link.zip").is_symlink()  # moved as a link, never followed
        print(json.dumps(table, indent=1))
        # a FIFO and a folder are not drops: left alone (never opened), said once in the log
        ignored = {e["source"] for e in daemon.named("drop_ignored")}
        assert {"fifo.zip", "folder.zip"} <= ignored
        assert (drop / "fifo.zip").exists()

        assert sorted(p.name for p in out.glob("*.zip")) == [
            "good-first.zip",
            "good-last.zip",
            "good-middle.zip",
            "good-\udce9.zip",
        ]
        report = json.loads((out / "good-\udce9.report.json").read_text(encoding="utf-8"))
        assert report["source"] == "good-\udce9.zip"
        # the daemon's own figures settle back: no job left running or queued
        wait_until(
            lambda: any(
                e["running"] == 0 and e["queued"] == 0 for e in daemon.named("daemon_stats")[-1:]
            ),
            timeout=10,
        )
        # psutil samples miss short peaks; the kernel's high-water mark (ru_maxrss, which
        # daemon_stats reports) does not
        peak = daemon.named("daemon_stats")[-1]["peak_rss_mib"] * MiB
        print(f"peak RSS {peak / MiB:.0f} MiB (sampled {sampler.peak / MiB:.0f} MiB)")
        assert max(peak, sampler.peak) < RSS_BOUND
        # nothing outside the pipeline's folders changed
        assert _tree(tmp_path, (drop, out, tmp_path / "daemon.log")) == before
        assert (outside / "secret.zip").read_bytes() == secret
        assert set(os.listdir("/etc")) == etc_before
        for folder in (tmp_path, tmp_path.parent, tmp_path.parent.parent, Path.cwd()):
            assert not list(folder.glob("evil*")), folder
        assert not list(out.rglob("evil*"))
    finally:
        sampler.halt.set()
        code = daemon.stop()
    assert code == 0

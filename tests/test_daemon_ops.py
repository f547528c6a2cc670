"""Operating a real daemon: ``tfdrop retry``, retention of done/ and failed/, and the hooks.

The daemon runs as a real process (:mod:`daemon_support`); ``tfdrop retry`` runs as the real
CLI; hooks are real programs that write what they got to a file.
"""

from __future__ import annotations

import io
import json
import signal
import sys
import zipfile
from pathlib import Path
from typing import Any

from daemon_support import LABEL_MAP, Daemon, files, png, run_tfdrop, tfrecord_zip, write_config
from tfdrop.daemon.jobs import ETA_MIN_SECONDS, EtaClock, eta_seconds, os_error_text

CAT_ONLY = "item {\n\tid: 1\n\tname: 'cat'\n}\n"


def _config(tmp_path: Path, **pipeline: Any) -> Path:
    p: dict[str, Any] = {"name": "main", "drop": "in", "output": "out"}
    p.update(pipeline)
    return write_config(tmp_path / "tfdrop.toml", [p])


def _inputs(folder: Path) -> list[str]:
    return [n for n in files(folder) if not n.endswith(".error.json")]


# -- retry --------------------------------------------------------------------------------


def test_retry_reruns_a_failed_input_once_the_label_map_is_fixed_while_the_daemon_runs(
    tmp_path: Path,
) -> None:
    label_map = tmp_path / "labels.pbtxt"
    label_map.write_text(CAT_ONLY)  # the drop has dogs too: it fails
    config = _config(tmp_path, label_map=str(label_map))
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        drop, failed = tmp_path / "in", tmp_path / "in" / "failed"
        (drop / "task.zip").write_bytes(tfrecord_zip(3))
        daemon.wait_event("job_failed", timeout=30)
        assert _inputs(failed) == ["task.zip"]
        assert json.loads((failed / "task.zip.error.json").read_text())["kind"] == "unknown_label"

        label_map.write_text(LABEL_MAP)
        daemon.signal(signal.SIGHUP)
        daemon.wait_event("config_reloaded")
        result = run_tfdrop("retry", "--config", config, "task.zip", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        retried = [json.loads(line) for line in result.stderr.splitlines() if "{" in line]
        assert [e["event"] for e in retried] == ["drop_retried"]
        assert retried[0]["source"] == "task.zip"
        assert retried[0]["error_file_removed"] is True

        done = daemon.wait_event("job_done", timeout=30)
        assert done[0]["status"] == "published"  # not a duplicate of its failed self
        assert files(tmp_path / "out") == ["task.label_map.pbtxt", "task.report.json", "task.zip"]
        assert "name: 'dog'" in (tmp_path / "out" / "task.label_map.pbtxt").read_text()
        assert files(failed) == []
        assert _inputs(drop / "done") == ["task.zip"]
    finally:
        assert daemon.stop() == 0


def test_retry_all_with_the_daemon_stopped_is_taken_up_at_start_without_clobbering(
    tmp_path: Path,
) -> None:
    label_map = tmp_path / "labels.pbtxt"
    label_map.write_text(CAT_ONLY)
    config = _config(tmp_path, label_map=str(label_map))
    daemon = Daemon(config, tmp_path / "daemon.log")
    drop, failed = tmp_path / "in", tmp_path / "in" / "failed"
    try:
        daemon.wait_event("daemon_ready")
        (drop / "a.zip").write_bytes(tfrecord_zip(2, tag="a"))
        (drop / "b.zip").write_bytes(tfrecord_zip(2, tag="b"))
        daemon.wait_event("job_failed", 2, timeout=30)
    finally:
        assert daemon.stop() == 0
    assert _inputs(failed) == ["a.zip", "b.zip"]
    # a different a.zip waits in the drop folder: the retried one must not replace it
    (drop / "a.zip").write_bytes(tfrecord_zip(4, tag="c"))
    label_map.write_text(LABEL_MAP)

    result = run_tfdrop("retry", "--config", config, "--pipeline", "main", "--all", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert files(failed) == []
    assert sorted(_inputs(drop)) == ["a-1.zip", "a.zip", "b.zip"]

    daemon = Daemon(config, tmp_path / "daemon2.log")
    try:
        daemon.wait_event("job_done", 3, timeout=60)
        statuses = [e["status"] for e in daemon.named("job_done")]
        assert statuses == ["published"] * 3
    finally:
        assert daemon.stop() == 0


def test_retry_names_an_unknown_input_or_pipeline_clearly(tmp_path: Path) -> None:
    config = _config(tmp_path)
    (tmp_path / "in" / "failed").mkdir(parents=True)
    (tmp_path / "in" / "failed" / "x.zip").write_bytes(b"not a zip")

    missing = run_tfdrop("retry", "--config", config, "nope.zip", cwd=tmp_path)
    assert missing.returncode == 1
    assert "no failed input named 'nope.zip'" in missing.stderr
    assert "Traceback" not in missing.stderr

    bad_pipeline = run_tfdrop(
        "retry", "--config", config, "--pipeline", "other", "x.zip", cwd=tmp_path
    )
    assert bad_pipeline.returncode == 1
    assert "no pipeline named 'other'" in bad_pipeline.stderr
    assert "the pipelines: main" in bad_pipeline.stderr

    neither = run_tfdrop("retry", "--config", config, cwd=tmp_path)
    assert neither.returncode == 2  # NAME or --all is required
    assert (tmp_path / "in" / "failed" / "x.zip").exists()


def test_retry_of_an_error_file_whose_input_was_taken_away_removes_it_and_says_so(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    failed = tmp_path / "in" / "failed"
    failed.mkdir(parents=True)
    (failed / "gone.zip.error.json").write_text('{"kind": "bad_archive"}')

    result = run_tfdrop("retry", "--config", config, "gone.zip.error.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{failed / 'gone.zip'} is not there" in result.stderr
    assert f"removed its error file {failed / 'gone.zip.error.json'}" in result.stderr
    assert files(failed) == []
    assert files(tmp_path / "in") == []  # nothing was put into the drop folder


# -- retention ----------------------------------------------------------------------------


# the ages (from the routing: ctime) are in test_ops_retention.py: a test cannot set a ctime
# back, so the sweep is called there with a `now` days ahead


# -- hooks --------------------------------------------------------------------------------

HOOK = """
import json, sys
doc = {"argv": sys.argv[1:], "stdin": json.load(sys.stdin)}
with open(sys.argv[1], "a") as f:
    f.write(json.dumps(doc) + "\\n")
"""


def _hook_script(tmp_path: Path, body: str, name: str) -> Path:
    script = tmp_path / name
    script.write_text(body)
    return script


def _calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_hooks_get_the_output_paths_or_the_failed_input_and_the_json_on_stdin(
    tmp_path: Path,
) -> None:
    script = _hook_script(tmp_path, HOOK, "hook.py")
    record = tmp_path / "calls.jsonl"
    hook = [sys.executable, str(script), str(record)]
    config = _config(tmp_path, on_published=hook, on_failed=hook)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        drop, out = tmp_path / "in", tmp_path / "out"
        (drop / "good.zip").write_bytes(tfrecord_zip(3))
        daemon.wait_event("hook_done", timeout=30)
        with zipfile.ZipFile(drop / "bad.zip", "w") as zf:
            zf.writestr("readme.txt", "no annotations here")  # no format: it fails
        daemon.wait_event("hook_done", 2, timeout=30)
    finally:
        assert daemon.stop() == 0
    published, failed = _calls(record)
    assert published["argv"][1:] == [
        str(out / "good.zip"),
        str(out / "good.report.json"),
        str(out / "good.label_map.pbtxt"),
    ]
    assert published["stdin"] == json.loads((out / "good.report.json").read_text())
    assert published["stdin"]["items"] == 3
    failed_input = drop / "failed" / "bad.zip"
    assert failed["argv"][1:] == [str(failed_input), f"{failed_input}.error.json"]
    assert failed["stdin"]["kind"] == "unknown_format"
    assert failed["stdin"]["source"] == "bad.zip"
    hooks = daemon.named("hook_done")
    assert [h["hook"] for h in hooks] == ["on_published", "on_failed"]


def test_a_failing_or_hanging_hook_is_logged_and_never_fails_the_drop(tmp_path: Path) -> None:
    failing = _hook_script(
        tmp_path, "import sys\nsys.stderr.write('no GPU\\n')\nsys.exit(3)\n", "f.py"
    )
    hanging = _hook_script(tmp_path, "import time\ntime.sleep(60)\n", "h.py")
    config = write_config(
        tmp_path / "tfdrop.toml",
        [
            {
                "name": "fails",
                "drop": "in1",
                "output": "out1",
                "on_published": [sys.executable, str(failing)],
            },
            {
                "name": "hangs",
                "drop": "in2",
                "output": "out2",
                "on_published": [sys.executable, str(hanging)],
                "hook_timeout_s": 1.0,
            },
        ],
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        (tmp_path / "in1" / "a.zip").write_bytes(tfrecord_zip(2, tag="a"))
        (tmp_path / "in2" / "b.zip").write_bytes(tfrecord_zip(2, tag="b"))
        failures = daemon.wait_event("hook_failed", 2, timeout=30)
        # the daemon goes on taking drops after both
        (tmp_path / "in1" / "c.zip").write_bytes(tfrecord_zip(2, tag="c"))
        daemon.wait_event("job_done", 3, timeout=30)
    finally:
        assert daemon.stop() == 0
    by_pipeline = {e["pipeline"]: e for e in failures}
    assert by_pipeline["fails"]["reason"] == "exit"
    assert by_pipeline["fails"]["exit_code"] == 3
    assert "no GPU" in by_pipeline["fails"]["stderr"]
    assert by_pipeline["hangs"]["reason"] == "timeout"
    assert all(e["status"] == "published" for e in daemon.named("job_done"))
    assert files(tmp_path / "in1" / "done") == ["a.zip", "c.zip"]
    assert files(tmp_path / "in2" / "done") == ["b.zip"]
    assert not daemon.named("job_failed")


# -- progress -----------------------------------------------------------------------------


def test_job_progress_events_carry_the_total_from_the_index_and_the_time_left(
    tmp_path: Path,
) -> None:
    n = 8000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"img/{i:05d}.png", png(i))
    config = _config(tmp_path)
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        (tmp_path / "in" / "shots.zip").write_bytes(buf.getvalue())
        daemon.wait_event("job_done", timeout=60)
    finally:
        assert daemon.stop() == 0
    progress = daemon.named("job_progress")
    assert progress, "no job_progress event during a conversion of 8000 items"
    assert all(e["total"] == n for e in progress)
    etas = [e for e in progress if e["eta_s"] is not None]
    assert all(isinstance(e["eta_s"], float) and e["eta_s"] >= 0 for e in etas)
    # never told in the first second of converting (the job's elapsed_s is longer still)
    assert all(e["elapsed_s"] >= ETA_MIN_SECONDS for e in etas)
    assert all(0 < e["items"] <= n for e in progress)


def test_eta_is_unknown_without_a_total_and_shrinks_as_items_are_done() -> None:
    assert eta_seconds(10, None, 5.0) is None
    assert eta_seconds(0, 100, 5.0) is None
    assert eta_seconds(25, 100, 5.0) == 15.0
    assert eta_seconds(100, 100, 9.0) == 0.0


def test_eta_counts_from_the_conversions_first_progress_and_waits_for_a_rate() -> None:
    # the drop was hashed for a minute before converting: that time is no part of the rate
    clock = EtaClock()
    assert clock.eta(1, 4000, now=60.0) is None  # the first call starts the clock
    assert clock.eta(2, 4000, now=60.5) is None  # half a second, one item: no rate yet
    assert clock.eta(3, 4000, now=61.5) is None  # a second and a half, two items: not yet
    assert clock.eta(201, 4000, now=62.0) == 38.0  # 200 items in 2 s: 100 items/s, 3799 left
    assert clock.eta(4000, 4000, now=100.0) == 0.0
    assert EtaClock().eta(5, None, now=1.0) is None


def test_an_os_error_without_a_file_name_names_the_drop_it_worked_on() -> None:
    assert os_error_text(PermissionError(13, "Permission denied"), "cam7.zip") == (
        "[Errno 13] Permission denied (working on cam7.zip)"
    )
    named = FileNotFoundError(2, "No such file or directory", "/srv/out")
    assert os_error_text(named, "cam7.zip") == str(named)  # its own name already

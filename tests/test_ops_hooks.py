"""Hooks that cannot hurt the daemon: bounded (``max_hooks`` and a bounded queue, counted in
the open-file budget), done when their process exits (a background job they start lives on),
their program found beside the config, and killed (logged) within the one stop grace period.

The daemon runs as a real process (:mod:`daemon_support`); hooks are real programs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import sys
from pathlib import Path

from structlog.testing import capture_logs

from daemon_support import (
    Daemon,
    conversion_process,
    files,
    run_tfdrop,
    tfrecord_zip,
    wait_until,
    write_config,
)
from tfdrop.config import FILES_PER_HOOK, PipelineConfig, open_files_needed, parse_config
from tfdrop.daemon.hooks import MAX_QUEUED_HOOKS, Hooks

BAD_ZIP = b"PK\x03\x04 this is not a zip at all" + b"\0" * 30

COUNTING_HOOK = """
import fcntl, sys, time
def step(delta):
    with open(sys.argv[1], "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        running, most = map(int, (f.read().split() or ["0", "0"]))
        running += delta
        f.seek(0)
        f.truncate()
        f.write(f"{running} {max(most, running)}")
step(+1)
time.sleep(1.0)
step(-1)
"""


def _script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def test_at_most_max_hooks_run_at_once_and_the_rest_wait_their_turn(tmp_path: Path) -> None:
    hook = _script(tmp_path / "count.py", COUNTING_HOOK)
    counter = tmp_path / "running.txt"
    config = write_config(
        tmp_path / "tfdrop.toml",
        [
            {
                "name": "main",
                "drop": "in",
                "output": "out",
                "on_failed": [sys.executable, str(hook), str(counter)],
            }
        ],
        max_hooks=2,
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    n = 8
    try:
        daemon.wait_event("daemon_ready")
        for i in range(n):
            (tmp_path / "in" / f"bad{i}.zip").write_bytes(BAD_ZIP)
        daemon.wait_event("hook_done", n, timeout=60)
    finally:
        assert daemon.stop() == 0
    running, most = map(int, counter.read_text().split())
    assert running == 0
    assert most <= 2  # eight drops failed within a second, each hook runs a second
    assert len(daemon.named("job_failed")) == n
    assert daemon.named("hook_failed") == []


def test_a_hook_past_the_full_queue_is_dropped_and_logged_and_the_rest_at_shutdown(
    tmp_path: Path,
) -> None:
    cfg = PipelineConfig(
        name="p",
        drop=tmp_path / "in",
        output=tmp_path / "out",
        on_failed=("sh", "-c", "exec sleep 30"),
    )
    detail = {"moved_to": str(tmp_path / "in" / "failed" / "x.zip")}

    async def burst() -> None:
        hooks = Hooks(lambda: 1)
        for _ in range(1 + MAX_QUEUED_HOOKS + 2):  # one running, a full queue, two more
            hooks.after(cfg, "failed", detail)
        await asyncio.sleep(0.5)  # the running one is a real process now
        await hooks.drain(0.0)
        hooks.after(cfg, "failed", detail)  # after the drain: never started

    with capture_logs() as logs:
        asyncio.run(burst())
    reasons = [e["reason"] for e in logs if e["event"] == "hook_failed"]
    assert reasons.count("queue_full") == 2
    assert reasons.count("shutdown") == 1 + MAX_QUEUED_HOOKS + 1
    assert not [e for e in logs if e["event"] == "hook_done"]


def test_the_open_file_budget_counts_the_hooks(tmp_path: Path) -> None:
    text = '[[pipeline]]\ndrop = "in"\noutput = "out"\n'
    base = parse_config(text, env={})
    more = parse_config("[daemon]\nmax_hooks = 10\n" + text, env={})
    assert base.daemon.max_hooks == 4
    assert open_files_needed(more) - open_files_needed(base) == 6 * FILES_PER_HOOK

    need = open_files_needed(base)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))

    ok = tmp_path / "ok.toml"
    ok.write_text(text)
    assert run_tfdrop("check-config", ok, cwd=tmp_path, preexec_fn=limited).returncode == 0
    many = tmp_path / "many.toml"
    many.write_text("[daemon]\nmax_hooks = 10\n" + text)
    refused = run_tfdrop("check-config", many, cwd=tmp_path, preexec_fn=limited)
    assert refused.returncode == 1
    assert "max_hooks = 10" in refused.stderr
    assert f"over the open-file limit of {need}" in refused.stderr


def test_a_hook_that_starts_a_background_job_is_done_at_its_exit_and_the_job_lives_on(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "trained.txt"
    pidfile = tmp_path / "bg.pid"
    ok = _script(
        tmp_path / "start-training",
        f"#!/bin/sh\n(sleep 2; echo trained > {marker}) &\necho started >&2\nexit 0\n",
    )
    failing = _script(
        tmp_path / "tell",
        f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\necho 'no GPU' >&2\nexit 3\n",
    )
    config = write_config(
        tmp_path / "tfdrop.toml",
        [
            {
                "name": "main",
                "drop": "in",
                "output": "out",
                "on_published": [str(ok)],
                "on_failed": [str(failing)],
                "hook_timeout_s": 1.0,  # the background jobs run past it: no matter
            }
        ],
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        (tmp_path / "in" / "a.zip").write_bytes(tfrecord_zip(2))
        done = daemon.wait_event("hook_done", timeout=30)
        (tmp_path / "in" / "bad.zip").write_bytes(BAD_ZIP)
        failed = daemon.wait_event("hook_failed", timeout=30)
        wait_until(marker.exists, timeout=30)  # not killed with the hook's end
    finally:
        assert daemon.stop() == 0
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert done[0]["hook"] == "on_published"
    assert failed[0]["reason"] == "exit"  # not "timeout": the hook itself ended at once
    assert failed[0]["exit_code"] == 3
    assert "no GPU" in failed[0]["stderr"]
    assert marker.read_text() == "trained\n"


def test_a_hook_program_given_as_a_relative_path_is_found_beside_the_config(
    tmp_path: Path,
) -> None:
    etc = tmp_path / "etc"
    marker = tmp_path / "hook-ran"
    _script(etc / "hooks" / "notify.sh", f"#!/bin/sh\ntouch {marker}\n")
    config = write_config(
        etc / "tfdrop.toml",
        [{"name": "main", "drop": "in", "output": "out", "on_published": ["hooks/notify.sh"]}],
    )
    assert run_tfdrop("check-config", config, cwd=Path("/")).returncode == 0
    daemon = Daemon(config, tmp_path / "daemon.log", cwd=Path("/"))  # systemd starts it in /
    try:
        daemon.wait_event("daemon_ready")
        (etc / "in" / "a.zip").write_bytes(tfrecord_zip(2))
        done = daemon.wait_event("hook_done", timeout=30)
    finally:
        assert daemon.stop() == 0
    assert done[0]["argv"][0] == str(etc / "hooks" / "notify.sh")
    assert marker.exists()


def test_a_hook_still_running_at_stop_is_killed_within_the_one_grace_period_and_logged(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "hang.pid"
    hang = _script(tmp_path / "hang", f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 120\n")
    config = write_config(
        tmp_path / "tfdrop.toml",
        [
            {
                "name": "main",
                "drop": "in",
                "output": "out",
                "on_failed": [str(hang)],
                "hook_timeout_s": 600,
            }
        ],
        grace_seconds=1.0,
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    try:
        daemon.wait_event("daemon_ready")
        (tmp_path / "in" / "bad.zip").write_bytes(BAD_ZIP)
        daemon.wait_event("job_failed", timeout=30)
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
        # a conversion held stopped (SIGSTOP): it takes the whole grace period and is aborted
        (tmp_path / "in" / "big.zip").write_bytes(tfrecord_zip(10000, tag="big"))
        converting = wait_until(lambda: conversion_process(daemon), timeout=60, step=0.005)
        converting.suspend()
    finally:
        assert daemon.stop() == 0
    assert daemon.named("jobs_aborting")
    (draining,) = daemon.named("hooks_draining")
    assert draining["seconds"] == 0.0  # the jobs used the grace period up: none left
    assert draining["running"] == 1
    (killed,) = daemon.named("hook_failed")
    assert killed["reason"] == "shutdown"
    assert killed["source"] == "bad.zip"
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        os.kill(pid, signal.SIGKILL)
        raise AssertionError(f"the hook's process {pid} outlived the daemon")
    assert files(tmp_path / "out") == []

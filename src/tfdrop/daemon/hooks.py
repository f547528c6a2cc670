"""Notification hooks: a pipeline's ``on_published`` / ``on_failed`` command after a job ends.

The command is an argv list run without a shell (``asyncio.create_subprocess_exec``, from the
daemon's event loop, never in a job thread), after the drop was published and routed, so it
can neither fail nor hold up the drop. Extra arguments: for ``on_published`` the archive, its
report and its label map (absolute paths); for ``on_failed`` the input in ``failed/`` and its
``<name>.error.json``. Its stdin is the report (or the error file) as JSON. It gets
``hook_timeout_s``; past that its whole process group (it runs in a session of its own) is
killed. A hook that cannot start, exits non-zero or times out is logged as ``hook_failed``
(with the end of its stderr); one that succeeds as ``hook_done``. Its stdout is discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from tfdrop.config import PipelineConfig
from tfdrop.daemon.fsops import ERROR_SUFFIX

log = structlog.get_logger("tfdrop.daemon")

STDERR_TAIL = 2000
"""Bytes of a failed hook's stderr kept for the log (the end of it)."""
_ARCHIVE_SUFFIX = ".zip"


@dataclass(frozen=True, slots=True)
class HookCall:
    hook: str  # "on_published" | "on_failed"
    argv: tuple[str, ...]
    stdin_file: Path  # the report or error file, sent on stdin
    fallback: bytes  # sent instead when that file cannot be read
    timeout: float


def hook_call(cfg: PipelineConfig, status: str, detail: Mapping[str, object]) -> HookCall | None:
    """The hook to run for a job that ended ``status`` with ``detail``, or None."""
    fallback = json.dumps(dict(detail), default=str).encode()
    output, moved = detail.get("output"), detail.get("moved_to")
    if status == "published" and cfg.on_published and isinstance(output, str):
        stem = output[: -len(_ARCHIVE_SUFFIX)] if output.endswith(_ARCHIVE_SUFFIX) else output
        report = cfg.output / f"{stem}.report.json"
        paths = (cfg.output / output, report, cfg.output / f"{stem}.label_map.pbtxt")
        argv = (*cfg.on_published, *map(str, paths))
        return HookCall("on_published", argv, report, fallback, cfg.hook_timeout_s)
    if status == "failed" and cfg.on_failed and isinstance(moved, str):
        error = Path(f"{moved}{ERROR_SUFFIX}")
        argv = (*cfg.on_failed, moved, str(error))
        return HookCall("on_failed", argv, error, fallback, cfg.hook_timeout_s)
    return None


def _stdin_bytes(call: HookCall) -> bytes:
    try:
        return call.stdin_file.read_bytes()
    except OSError:
        return call.fallback


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data)
        await proc.stdin.drain()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.close()


async def _tail(proc: asyncio.subprocess.Process) -> bytes:
    assert proc.stderr is not None
    kept = b""
    while chunk := await proc.stderr.read(65536):
        kept = (kept + chunk)[-STDERR_TAIL:]
    return kept


async def _talk(proc: asyncio.subprocess.Process, data: bytes) -> tuple[int, bytes]:
    _, tail = await asyncio.gather(_feed(proc, data), _tail(proc))
    return await proc.wait(), tail


async def run_hook(call: HookCall) -> None:
    """Run one hook to its end or its time limit; every way it ends is logged."""
    started = time.monotonic()
    fields = {"hook": call.hook, "argv": list(call.argv)}
    try:
        data = await asyncio.to_thread(_stdin_bytes, call)
        proc = await asyncio.create_subprocess_exec(
            *call.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        log.warning("hook_failed", **fields, reason="not_started", error=str(exc))
        return
    try:
        code, tail = await asyncio.wait_for(_talk(proc, data), call.timeout)
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        log.warning("hook_failed", **fields, reason="timeout", timeout_s=call.timeout)
        return
    except asyncio.CancelledError:  # the daemon is stopping and the hook ran on too long
        _kill(proc)
        raise
    elapsed = round(time.monotonic() - started, 3)
    stderr = tail.decode("utf-8", "replace")
    if code != 0:
        log.warning("hook_failed", **fields, reason="exit", exit_code=code, stderr=stderr)
    else:
        log.info("hook_done", **fields, elapsed_s=elapsed)


class Hooks:
    """The hooks running in the background of the event loop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def after(self, cfg: PipelineConfig, status: str, detail: Mapping[str, object]) -> None:
        """Start the pipeline's hook for a job that ended ``status`` (if it has one)."""
        call = hook_call(cfg, status, detail)
        if call is None:
            return
        task = asyncio.get_running_loop().create_task(run_hook(call), name=f"hook-{cfg.name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hook_failed", reason="internal_error", exc_info=task.exception())

    async def drain(self, seconds: float) -> None:
        """At shutdown: let running hooks end for ``seconds``, then kill the rest."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)

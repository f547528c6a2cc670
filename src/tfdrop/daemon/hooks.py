"""Notification hooks: a pipeline's ``on_published`` / ``on_failed`` command after a job ends.

The command is an argv list run without a shell (``asyncio.create_subprocess_exec``, from the
daemon's event loop, never in a job thread), after the drop was published and routed, so it
can neither fail nor hold up the drop. Extra arguments: for ``on_published`` the archive, its
report and its label map (absolute paths); for ``on_failed`` the input in ``failed/`` and its
``<name>.error.json``. Its stdin is the report (or the error file) itself, opened read-only.
At most ``max_hooks`` ([daemon]) run at once; more wait in a queue of at most
:data:`MAX_QUEUED_HOOKS` (past that one is dropped, logged ``hook_failed reason=queue_full``),
so a burst of drops cannot start a process (and open pipes) per drop.

A hook is done when its process exits: its stderr is read while it runs (only the last
:data:`STDERR_TAIL` bytes kept) and what is in the pipe when it exits, never up to an end of
file that a background child holding the pipe would delay. Such a child (``start-training &``)
lives on after a hook that exited: it is in the hook's session. Only a hook that runs past
``hook_timeout_s`` has its whole process group (its session) killed, and one still running when
the daemon stops (after the stop's grace period, shared with the jobs). A hook that cannot
start, exits non-zero, times out or is killed at shutdown is logged as ``hook_failed`` (with
the reason and the end of its stderr); one that succeeds as ``hook_done``. Its stdout is
discarded.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from tfdrop.config import Config, PipelineConfig
from tfdrop.daemon.fsops import ERROR_SUFFIX
from tfdrop.errors import ConfigError

log = structlog.get_logger("tfdrop.daemon")

STDERR_TAIL = 2000
"""Bytes of a failed hook's stderr kept for the log (the end of it)."""
MAX_QUEUED_HOOKS = 1000
"""Hooks waiting for one of the ``max_hooks`` slots; past that a new one is dropped (logged)."""
_READ = 65536
_READS_AT_EXIT = 16  # reads of what is left in the stderr pipe once the hook exited
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


def program_problem(program: str) -> str | None:
    """Why a hook's program could not run (missing, not executable, not on PATH), or None."""
    if "/" not in program:
        return None if shutil.which(program) else f"{json.dumps(program)} is not found on PATH"
    if not os.path.isfile(program):
        return (
            f"{program} is not there"
            if not os.path.lexists(program)
            else f"{program} is not a file"
        )
    return None if os.access(program, os.X_OK) else f"{program} is not executable"


def check_hooks(config: Config) -> None:
    """``tfdrop check-config``: every hook's program can be run (by this user, on this PATH).

    Raises:
        ConfigError: A hook's program is missing or not executable.
    """
    for p in config.pipelines:
        for key, argv in (("on_published", p.on_published), ("on_failed", p.on_failed)):
            problem = program_problem(argv[0]) if argv else None
            if problem is not None:
                raise ConfigError(
                    f"the hook cannot run: {problem}",
                    file=str(config.source) if config.source else None,
                    key=f"pipeline ({p.name}).{key}",
                    hint="give the program's path (relative paths are relative to the config "
                    "file) and make it executable (chmod +x)",
                )


def _stdin_file(call: HookCall) -> IO[bytes]:
    """The report (or error file) opened for the hook's stdin, else the fallback in a temp
    file (run in a thread: the output folder may be a slow share)."""
    try:
        return call.stdin_file.open("rb")
    except OSError:
        f = tempfile.TemporaryFile()  # noqa: SIM115 - the hook's stdin, closed by _start
        f.write(call.fallback)
        f.seek(0)
        return f


def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Tail:
    """The end of a hook's stderr, read from a non-blocking pipe as it comes."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.kept = b""
        self.eof = False
        os.set_blocking(fd, False)
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(fd, self.read, 1)

    def read(self, reads: int) -> None:
        for _ in range(reads):
            try:
                chunk = os.read(self.fd, _READ)
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                if not self.eof:
                    self.eof = True
                    self.loop.remove_reader(self.fd)
                return
            self.kept = (self.kept + chunk)[-STDERR_TAIL:]

    def close(self) -> str:
        """What the hook wrote before it exited (not waiting for its children's end of file)."""
        if not self.eof:
            self.loop.remove_reader(self.fd)
            self.eof = True
            self.read(_READS_AT_EXIT)
        os.close(self.fd)
        return self.kept.decode("utf-8", "replace")


async def _start(call: HookCall) -> tuple[asyncio.subprocess.Process, _Tail]:
    stdin = await asyncio.to_thread(_stdin_file, call)
    try:
        r, w = os.pipe()
    except OSError:
        stdin.close()
        raise
    try:
        proc = await asyncio.create_subprocess_exec(
            *call.argv,
            stdin=stdin,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=w,
            start_new_session=True,
        )
    except OSError:
        os.close(r)
        raise
    finally:
        os.close(w)
        stdin.close()
    return proc, _Tail(r)


async def run_hook(call: HookCall) -> None:
    """Run one hook to its exit or its time limit; every way it ends is logged."""
    started = time.monotonic()
    fields = {"hook": call.hook, "argv": list(call.argv)}
    try:
        proc, tail = await _start(call)
    except OSError as exc:
        log.warning("hook_failed", **fields, reason="not_started", error=str(exc))
        return
    except asyncio.CancelledError:
        log.warning("hook_failed", **fields, reason="shutdown")
        raise
    try:
        code = await asyncio.wait_for(proc.wait(), call.timeout)
    except TimeoutError:
        _kill(proc)
        await proc.wait()
        log.warning(
            "hook_failed", **fields, reason="timeout", timeout_s=call.timeout, stderr=tail.close()
        )
        return
    except asyncio.CancelledError:  # the daemon is stopping and the hook ran on too long
        _kill(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5.0)
        log.warning("hook_failed", **fields, reason="shutdown", stderr=tail.close())
        raise
    stderr = tail.close()
    elapsed = round(time.monotonic() - started, 3)
    if code != 0:
        log.warning("hook_failed", **fields, reason="exit", exit_code=code, stderr=stderr)
    else:
        log.info("hook_done", **fields, elapsed_s=elapsed)


_Queued = tuple[str, HookCall, contextvars.Context]


class Hooks:
    """The hooks of the event loop: at most ``limit()`` running, the rest queued (bounded)."""

    def __init__(self, limit: Callable[[], int] = lambda: 4) -> None:
        self._limit = limit
        self._running: set[asyncio.Task[None]] = set()
        self._waiting: deque[_Queued] = deque()
        self._closed = False

    def after(self, cfg: PipelineConfig, status: str, detail: Mapping[str, object]) -> None:
        """Start (or queue) the pipeline's hook for a job that ended ``status``, if it has one."""
        call = hook_call(cfg, status, detail)
        if call is None:
            return
        if self._closed or len(self._waiting) >= MAX_QUEUED_HOOKS:
            reason = "shutdown" if self._closed else "queue_full"
            log.warning(
                "hook_failed", hook=call.hook, argv=list(call.argv), reason=reason, queued=True
            )
            return
        # the job's log fields (bound by the service) go with the hook when it starts later
        self._waiting.append((cfg.name, call, contextvars.copy_context()))
        self._pump()

    def _pump(self) -> None:
        while self._waiting and len(self._running) < self._limit():
            name, call, context = self._waiting.popleft()
            loop = asyncio.get_running_loop()
            task = loop.create_task(run_hook(call), name=f"hook-{name}", context=context)
            self._running.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hook_failed", reason="internal_error", exc_info=task.exception())
        if not self._closed:
            self._pump()

    async def drain(self, seconds: float) -> None:
        """At shutdown: let hooks (queued ones too) end for ``seconds``, then kill the rest."""
        if self._running or self._waiting:
            log.info(
                "hooks_draining",
                running=len(self._running),
                queued=len(self._waiting),
                seconds=round(seconds, 3),
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self._running and (left := deadline - loop.time()) > 0:
            await asyncio.wait(
                set(self._running), timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
        self._closed = True
        while self._waiting:
            _, call, context = self._waiting.popleft()
            fields = {"hook": call.hook, "argv": list(call.argv), "reason": "shutdown"}
            context.run(log.warning, "hook_failed", **fields, queued=True)
        pending = set(self._running)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10.0)

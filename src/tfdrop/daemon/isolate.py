"""One job's conversion in a worker process of its own.

The daemon's jobs used to convert in threads of the service process: one GIL for all of them,
and a crash, a leak or a runaway allocation in one conversion would take every job and the
service down. Each conversion now runs in a child process started from a fork server (the
service is multi-threaded, so it never forks itself; the server has tfdrop imported, so a
child starts in milliseconds). The child runs :func:`tfdrop.convert.convert` under an address
space limit and sends back progress, then the :class:`~tfdrop.convert.Report` or the error
(tfdrop's errors pickle whole). The parent thread relays progress (which may raise to abort:
then the child is killed) and turns a child that died into a :class:`WorkerDiedError`, so the
job fails with a clear error file and the service stays up.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import structlog

from tfdrop.convert import ConvertOptions, Progress, Report, convert
from tfdrop.errors import TfdropError, WorkerDiedError
from tfdrop.preview import PreviewOptions, preview_path_of, write_preview

log = structlog.get_logger("tfdrop.daemon")

PROGRESS_SECONDS: Final = 0.5
"""How often the child reports progress (the parent's own throttle decides what is logged)."""
_POLL: Final = 0.2


class WorkerCrashedError(TfdropError):
    """The conversion raised something that is not one of tfdrop's errors (a bug)."""

    kind = "internal_error"
    default_hint = "this is a bug in tfdrop; please report it with this file"


def _context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["tfdrop.convert"])
        return ctx
    return multiprocessing.get_context("spawn")  # pragma: no cover - not Linux


_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    """Ask the kernel to kill this process when its parent (the fork server, which exits
    with the service) dies: a SIGKILLed service leaves no conversion running on behind it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _convert(
    src: Path,
    out: Path,
    options: ConvertOptions,
    progress: Progress,
    workdir: Path | None,
    preview: int,
) -> Report:
    """The conversion, then (``preview`` > 0) the page of the first ``preview`` items of its
    output beside it (:func:`tfdrop.preview.preview_path_of`), read back as the output's
    format: what TensorFlow will be given, drawn."""
    report = convert(src, out, options, progress=progress, workdir=workdir)
    if preview:
        page = PreviewOptions(limit=preview, source_format=options.target_format)
        page = replace(page, limits=options.limits)
        write_preview(
            out, preview_path_of(out), page, title=f"{src.name} ({options.target_format})"
        )
    return report


def _child(
    conn: Connection,
    src: Path,
    out: Path,
    options: ConvertOptions,
    workdir: Path | None,
    memory: int | None,
    preview: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service decides when a job stops
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    # started as a daemonic process (the service never waits for it at exit), it may still
    # start the conversion's worker processes (options.jobs > 1); they die with it
    multiprocessing.current_process().daemon = False
    if memory is not None:
        with contextlib.suppress(OSError, ValueError):  # a sandbox may forbid it: run uncapped
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    last = 0.0

    def progress(items: int, total: int | None) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_SECONDS:
            last = now
            try:
                conn.send(("progress", (items, total)))
            except OSError:
                os._exit(1)  # the service is gone (a SIGKILL): stop quietly

    message: tuple[str, Any]
    try:
        message = ("done", _convert(src, out, options, progress, workdir, preview))
    except (TfdropError, OSError) as exc:
        message = ("error", exc)
    except MemoryError:
        message = ("error", _out_of_memory(memory))
    except Exception as exc:  # a bug: reported as one, with its type, never silently
        message = ("crash", f"{type(exc).__name__}: {exc}")
    with contextlib.suppress(OSError):  # the service is gone: nobody to tell, nothing to log
        conn.send(message)
        conn.close()


def _out_of_memory(memory: int | None) -> WorkerDiedError:
    limit = f" (its limit: {memory >> 20} MiB)" if memory else ""
    return WorkerDiedError(f"the conversion ran out of memory{limit}")


_unavailable_said: list[bool] = []


def _say_unavailable(exc: BaseException) -> None:
    if not _unavailable_said:
        _unavailable_said.append(True)
        log.warning("job_isolation_unavailable", error=f"{type(exc).__name__}: {exc}")


def convert_isolated(
    src: Path,
    out: Path,
    options: ConvertOptions,
    *,
    progress: Progress,
    check: Callable[[], None],
    workdir: Path | None = None,
    memory: int | None = None,
    preview: int = 0,
) -> Report:
    """:func:`~tfdrop.convert.convert` in a child process (and, with ``preview`` > 0, the
    output's preview page of that many items, ``<out stem>.preview.html`` beside it).

    ``progress`` gets the items done (and the total, when known) now and then; ``check`` is
    called a few times a second and may raise to abort (the child is killed, its output never
    published). ``memory`` caps the child's address space in bytes.

    Raises:
        TfdropError or OSError: what the conversion raised, as it raised it.
        WorkerDiedError: the child died before it answered.
    """
    ctx = _context()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(  # type: ignore[attr-defined]
        target=_child,
        args=(send, src, out, options, workdir, memory, preview),
        name="tfdrop-job",
        daemon=True,
    )
    try:
        proc.start()
    except (OSError, EOFError) as exc:
        # no child process can be started here (a sandbox without a usable interpreter for
        # this user, say): convert in this process rather than never
        _say_unavailable(exc)
        send.close()
        receive.close()
        # and in one process: the service has threads, so it never forks workers either
        return _convert(src, out, replace(options, jobs=1), progress, workdir, preview)
    send.close()
    try:
        return _wait(proc, receive, progress, check, memory)
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join()
        receive.close()


def _wait(
    proc: Any,
    receive: Connection,
    progress: Progress,
    check: Callable[[], None],
    memory: int | None,
) -> Report:
    while True:
        check()
        if receive.poll(_POLL):
            try:
                kind, value = receive.recv()
            except EOFError:
                break  # it died between two messages
            if kind == "progress":
                progress(*value)
                continue
            if kind == "done":
                assert isinstance(value, Report)
                return value
            if kind == "crash":
                raise WorkerCrashedError(f"the conversion failed: {value}")
            raise value
        if not proc.is_alive() and not receive.poll(0):
            break
    proc.join()
    code = proc.exitcode
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        if -code == signal.SIGKILL:
            raise WorkerDiedError(f"the conversion's process was killed ({name}): out of memory?")
        raise WorkerDiedError(f"the conversion's process died of {name}")
    raise WorkerDiedError(f"the conversion's process exited ({code}) without an answer")

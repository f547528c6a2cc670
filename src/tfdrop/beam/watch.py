"""A watchdog for DirectRunner's worker processes.

With ``--direct_running_mode=multi_processing`` each worker is a subprocess that Beam starts
from a thread (``run_worker``) and waits for; when one is killed (SIGKILL, the OOM killer) that
thread ends with ``RuntimeError('Worker subprocess exited with return code N')`` and the
runner itself waits forever for the bundle the worker had (Beam 2.77). :func:`worker_watch`
hears that thread's end (``threading.excepthook``) and interrupts the waiting main thread
(a signal), which then raises :class:`~tfdrop.errors.WorkerDiedError`. Other runners report a
lost worker themselves (their error reaches the caller); this only ever fires for Beam's own
worker thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Final

from tfdrop.errors import WorkerDiedError

_EXITED: Final = re.compile(r"Worker subprocess exited with return code (-?\d+)")
_SIGNAL: Final = signal.SIGUSR1
_WORKER: Final = b"sdk_worker_main"


def _died(code: int) -> WorkerDiedError:
    number = -code if code < 0 else code - 128 if code > 128 else 0
    how = f"signal {number}" if number > 0 else f"exit code {code}"
    try:
        name = f" ({signal.Signals(number).name})" if number > 0 else ""
    except ValueError:
        name = ""
    return WorkerDiedError(f"a Beam worker process died ({how}{name}); the run was stopped")


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for task in tasks:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
            out.extend(int(p) for p in f.read().split())
    return out


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return _WORKER in f.read()
    except OSError:
        return False


def _stop_workers() -> None:
    """End this run's other Beam worker processes (the shells Beam started and the workers
    under them), so they do not print their lost connection after the error (Linux /proc;
    elsewhere they end when this process does)."""
    for child in _children(os.getpid()):
        for pid in [child, *_children(child)]:  # the shell first: it cannot say "Killed"
            if _is_worker(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


@contextmanager
def worker_watch() -> Iterator[None]:
    """Within the block, a DirectRunner worker that dies raises WorkerDiedError here (in the
    main thread only: elsewhere nothing is watched)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    died: list[WorkerDiedError] = []
    previous_hook = threading.excepthook
    main = threading.main_thread().ident

    def hook(args: threading.ExceptHookArgs) -> None:
        found = _EXITED.search(str(args.exc_value)) if args.exc_value is not None else None
        if found is None:
            previous_hook(args)
            return
        if died:
            return  # the workers stopped after the first death end the same way
        died.append(_died(int(found.group(1))))
        if main is not None:
            signal.pthread_kill(main, _SIGNAL)

    def interrupted(_signum: int, _frame: FrameType | None) -> None:
        if died:
            _stop_workers()
            raise died[0]

    previous_handler = signal.signal(_SIGNAL, interrupted)
    threading.excepthook = hook
    try:
        yield
    finally:
        # after a death, the stopped workers' threads still end: keep hearing them quietly
        threading.excepthook = hook if died else previous_hook
        signal.signal(_SIGNAL, previous_handler)

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


def _died(code: int) -> WorkerDiedError:
    number = -code if code < 0 else code - 128 if code > 128 else 0
    how = f"signal {number}" if number > 0 else f"exit code {code}"
    try:
        name = f" ({signal.Signals(number).name})" if number > 0 else ""
    except ValueError:
        name = ""
    return WorkerDiedError(f"a Beam worker process died ({how}{name}); the run was stopped")


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
        if found is None or died:
            previous_hook(args)
            return
        died.append(_died(int(found.group(1))))
        if main is not None:
            signal.pthread_kill(main, _SIGNAL)

    def interrupted(_signum: int, _frame: FrameType | None) -> None:
        if died:
            raise died[0]

    previous_handler = signal.signal(_SIGNAL, interrupted)
    threading.excepthook = hook
    try:
        yield
    finally:
        threading.excepthook = previous_hook
        signal.signal(_SIGNAL, previous_handler)

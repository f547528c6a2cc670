"""An ordered pool of worker processes: units in, results back in unit order.

Both parallel paths use it: a conversion's work units (:mod:`tfdrop.units`) and ``validate``'s
ranges of records (:mod:`tfdrop.cli.checkunits`). Workers are forked where the platform can
(they start with tfdrop already imported: spawning costs ~0.3 s of imports per worker; the
CLI's process has no other threads when the pool starts), and a forked worker inherits one
object of the parent's (an open source, a file descriptor) through :func:`inherited`.

Workers run at a lower priority than the parent (:data:`WORKER_NICE`): the parent's work is the
serial part. At most ``window`` units are in flight. A worker's exception is raised when the
parent reaches its unit, so the first error is the one a sequential run meets; a worker that
dies (killed, out of memory) is one :class:`~tfdrop.errors.WorkerDiedError`. Ctrl-C reaches the
whole process group: workers ignore it and the parent stops the pool and says so once; SIGTERM
ends a worker at once; a worker whose parent is gone ends itself. An error, an interrupt or
closing the iterator early ends the workers at once instead of waiting for their units.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, TypeVar

from tfdrop.errors import WorkerDiedError

if TYPE_CHECKING:  # imported when a pool starts: 14 ms of start-up for every validate
    import multiprocessing
    import multiprocessing.context
    from concurrent.futures import Future, ProcessPoolExecutor

U = TypeVar("U")
R = TypeVar("R")

MAX_WORKERS: Final = 256
"""The most ``--jobs`` accepts (the pools take at most the cores this process may use)."""
ORPHAN_POLL_S: Final = 0.5
"""How often a worker looks whether its parent still lives."""

WORKER_NICE: Final = 5
"""How much lower a worker's scheduling priority is than its parent's. The parent is the one
serial stage (COCO's pass 2 of every annotation, then writing every record in order); with
all at one priority, three processes on two cores gave it two thirds of a core, and the
workers stood idle waiting for its units. COCO 20k x 10, --jobs 2, medians of 8 alternating
runs: 4.67 s against 5.04 s; VOC 20k unchanged (5.69 against 5.75 s)."""
RESULT_POLL_S: Final = 0.25
"""How often the parent, waiting for a result, looks whether a worker died."""
_DIED: Final = "a worker process reading the source died (out of memory, or killed)"
_STOPS: Final = frozenset({signal.SIGINT, signal.SIGTERM})
_PR_SET_PDEATHSIG: Final = 1

_INHERITED: list[Any] = []
"""What a forked worker inherits from its parent (set only across the first submit)."""


def inherited() -> Any:
    """In a worker's initializer: the object the parent passed as ``inherit``, or None (not
    given, or the worker was spawned and must open its own)."""
    return _INHERITED[0] if _INHERITED else None


def default_jobs() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether workers are forked here (what :func:`inherited` needs)."""
    return hasattr(os, "fork")


def _context() -> multiprocessing.context.BaseContext:
    import multiprocessing

    return multiprocessing.get_context("fork" if can_fork() else "spawn")


def _init(parent: int, initializer: Callable[..., None], initargs: tuple[Any, ...]) -> None:
    # Both signals were blocked across the fork (a Ctrl-C landing before this line would
    # break the pool instead of interrupting it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICE)
    _die_with_parent()
    if os.getppid() != parent:
        # the parent (its pid taken before the fork) died before the line above: the kernel
        # will not kill this worker for it, and the watch below would wait on the new parent
        # (a worker outlived a parent killed just after forking it, under load)
        os._exit(1)
    threading.Thread(target=_orphaned, args=(parent,), daemon=True).start()
    initializer(*initargs)


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when its parent dies, even a stopped worker, whose
    own watch (:func:`_orphaned`) cannot run (an outside attack left one behind so)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # only here: a worker's first use

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _orphaned(parent: int) -> None:
    """End this worker once its parent is gone (killed: nobody reads its results any more;
    its pipes stay open between the workers, so it would otherwise wait forever)."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_POLL_S)
    os._exit(1)


def ordered(
    run: Callable[[U], R],
    units: Iterable[U],
    jobs: int,
    *,
    window: int,
    initializer: Callable[..., None],
    initargs: tuple[Any, ...] = (),
    inherit: Any = None,
) -> Iterator[R]:
    """``run(unit)`` of every unit in ``jobs`` worker processes (each set up once with
    ``initializer(*initargs)``), yielded in unit order. ``run`` and ``initializer`` are
    module-level functions (a spawned worker imports them)."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    context = _context()
    pending: deque[Future[R]] = deque()
    try:
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=context,
            initializer=_init,
            initargs=(os.getpid(), initializer, initargs),
        ) as pool:
            try:
                for unit in units:
                    if not pending:  # the first submit starts the workers (fork: all of them)
                        pending.append(_first_submit(pool, run, unit, inherit, context))
                        continue
                    pending.append(pool.submit(run, unit))
                    if len(pending) >= window:
                        yield _result(pool, pending.popleft())
                while pending:
                    yield _result(pool, pending.popleft())
            except BaseException:  # an error, Ctrl-C, or the consumer closed us early
                _stop_now(pool)  # before the pool's exit waits for them
                raise
    except BrokenProcessPool:  # found when submitting, not only when taking a result
        raise WorkerDiedError(_DIED) from None


def _result(pool: ProcessPoolExecutor, future: Future[R]) -> R:
    """The unit's result, watching the workers meanwhile: a worker killed in the middle of
    sending a result leaves the pool's manager thread in recv() for the rest of it while
    another worker holds the pipe open, so the pool never learns of the death itself (an
    outside attack: kill -9 of a worker hung --jobs 2 in 3 runs of 37)."""
    while True:
        try:
            return future.result(timeout=RESULT_POLL_S)
        except TimeoutError:
            if any(p.exitcode is not None for p in _workers(pool)):
                raise WorkerDiedError(_DIED) from None


def _workers(pool: ProcessPoolExecutor) -> list[multiprocessing.Process]:
    """The pool's worker processes now (no public way to them before Python 3.14)."""
    return list((getattr(pool, "_processes", None) or {}).values())


def _stop_now(pool: ProcessPoolExecutor) -> None:
    """End the workers now rather than wait for the units they have taken (nobody reads
    their results; a worker holds nothing its parent does not clean up). The pool then fails
    the futures still pending itself: cancelling them too would race it (Python 3.11 raises
    in its manager thread for a future cancelled under it)."""
    # no public way before Python 3.14 (kill_workers); SIGKILL, as SIGTERM waits forever on a
    # stopped worker (SIGSTOP: an outside attack hung Ctrl-C of validate and convert so)
    for process in _workers(pool):
        process.kill()
    # A worker killed in the middle of sending a result (one larger than a pipe's atomic
    # write) leaves the pool's manager thread in recv() for the rest of that message, and the
    # parent's own copy of the results pipe's write end means it never sees the end of the
    # file: the pool's exit then waited on that thread forever (an outside attack: disk full
    # with --jobs 2 hung 2 runs in 3 after printing the error). With the parent's copy closed
    # the recv() ends once the workers are gone, and the pool takes itself for broken. The
    # units' queue's feeder is not waited for either: nobody will read what it still holds.
    result_queue = getattr(pool, "_result_queue", None)
    writer = getattr(result_queue, "_writer", None)
    if writer is not None:
        with contextlib.suppress(OSError):
            writer.close()
    call_queue = getattr(pool, "_call_queue", None)
    if call_queue is not None and hasattr(call_queue, "cancel_join_thread"):
        call_queue.cancel_join_thread()


def _first_submit(
    pool: ProcessPoolExecutor,
    run: Callable[[U], R],
    unit: U,
    inherit: Any,
    context: multiprocessing.context.BaseContext,
) -> Future[R]:
    """Submit the first unit, which starts the workers: with ``inherit`` for forked ones, and
    with SIGINT and SIGTERM blocked until each worker has set its own handling (:func:`_init`);
    a signal that came meanwhile reaches the parent after."""
    if inherit is not None and context.get_start_method() == "fork":
        _INHERITED.append(inherit)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        return pool.submit(run, unit)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        _INHERITED.clear()

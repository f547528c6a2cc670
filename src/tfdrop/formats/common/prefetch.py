"""Read ahead on a second thread: a reader's member bytes arrive while the caller encodes.

A conversion is a pipeline of inflate (zlib, which releases the GIL) -> parse -> encode ->
hash and CRC (which also release it) -> write. Fetching the next members' bytes on one
background thread overlaps the inflate with the encoding on the caller's thread, so both of a
machine's two cores work (bench/bench_voc.py). Only the fetch runs on the thread; parsing,
notes and everything stateful stay on the caller's, so nothing else needs to be thread-safe
(the archive layer reads members with ``os.pread`` precisely so they may be opened from
several threads). The queue is bounded: memory stays a few items deep whatever the dataset.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Final, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")

DEPTH: Final = 8
_POLL: Final = 0.1


def prefetched(
    jobs: Sequence[T], fetch: Callable[[T], R], *, depth: int = DEPTH
) -> Generator[R, None, None]:
    """``fetch(job)`` for every job, computed ahead on a thread, yielded in order.

    An exception ``fetch`` raises is raised here at that job's turn (and the thread stops).
    Closing the iterator early stops the thread after its current fetch.
    """
    results: queue.Queue[tuple[R | None, BaseException | None]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run() -> None:
        for job in jobs:
            if stop.is_set():
                return
            try:
                out: tuple[R | None, BaseException | None] = (fetch(job), None)
            except BaseException as exc:  # handed to the consumer, who raises it
                out = (None, exc)
            while not stop.is_set():
                try:
                    results.put(out, timeout=_POLL)
                    break
                except queue.Full:
                    continue
            if out[1] is not None:
                return

    thread = threading.Thread(target=run, name="tfdrop-prefetch", daemon=True)
    thread.start()
    try:
        for _ in range(len(jobs)):
            value, exc = results.get()
            if exc is not None:
                raise exc
            yield cast(R, value)  # None only travels with an exception
    finally:
        stop.set()
        thread.join()

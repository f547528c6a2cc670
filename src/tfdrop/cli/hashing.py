"""``validate``'s second core: the SHA-256 of each embedded image, hashed in threads while the
main thread frames and checks the next records (hashlib lets go of the GIL while it hashes;
hashing was two fifths of validating a 1.2 GB file). Results come back in record order, a
bounded number of records ahead, and an error of the record stream is raised only after the
records before it have been handed on.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from queue import SimpleQueue

from tfdrop.codec.schema import Fast, sha_matches

Scanned = tuple[int, int, bytes, Fast | None]
"""(index, offset, record, what the all-clear check found, or None when it did not pass)."""

AHEAD_RECORDS = 32
AHEAD_BYTES = 32 << 20
"""At most this many records, and bytes of them, wait for their hash (a record past the bytes
bound still goes, alone)."""


HASH_THREADS = 2
"""Threads hashing: one could not keep up with the main thread (each hash ends by taking the
GIL back from it); two did (20,000 records, 1.2 GB: 1.1 s instead of 1.2-1.4 s)."""


class _Worker:
    """One thread hashing the records given to it, in that order; one result per record."""

    def __init__(self) -> None:
        self.jobs: SimpleQueue[tuple[bytes, Fast] | None] = SimpleQueue()
        self.done: SimpleQueue[bool] = SimpleQueue()
        threading.Thread(target=self._run, name="tfdrop-sha256", daemon=True).start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                ok = sha_matches(*job)
            except Exception:  # never a verdict of valid: the full check names the problem
                ok = False
            # let go of the record before waiting for the next: a 60 MB record was kept alive
            # through the next one's read (an outside attack measured 60 MB more than without)
            job = None
            self.done.put(ok)


class _Hasher:
    """Records hashed by :data:`HASH_THREADS` threads in turn, results taken in that turn."""

    def __init__(self) -> None:
        self._workers = [_Worker() for _ in range(HASH_THREADS)]
        self._put = 0
        self._taken = 0

    def put(self, record: bytes, fast: Fast) -> None:
        self._workers[self._put % len(self._workers)].jobs.put((record, fast))
        self._put += 1

    def result(self) -> bool:
        ok = self._workers[self._taken % len(self._workers)].done.get()
        self._taken += 1
        return ok

    def stop(self) -> None:
        for worker in self._workers:
            worker.jobs.put(None)


def hashed_in_order(scanned: Iterator[Scanned]) -> Iterator[Scanned]:
    """``scanned`` in order, each record's ``Fast`` kept only when its image's SHA-256
    matches ``image/key/sha256`` (None tells the caller to run the full check)."""
    hasher: _Hasher | None = None
    pending: deque[Scanned] = deque()
    held = 0
    error: BaseException | None = None
    try:
        while True:
            try:
                item = next(scanned)
            except StopIteration:
                break
            except Exception as exc:  # the records read before it are still checked first
                error = exc
                break
            if item[3] is not None:
                if hasher is None:
                    hasher = _Hasher()
                hasher.put(item[2], item[3])
            pending.append(item)
            held += len(item[2])
            while pending and (len(pending) > AHEAD_RECORDS or held > AHEAD_BYTES):
                held -= len(pending[0][2])
                yield _settled(pending.popleft(), hasher)
        while pending:
            yield _settled(pending.popleft(), hasher)
    finally:
        if hasher is not None:
            hasher.stop()
    if error is not None:
        raise error


def _settled(item: Scanned, hasher: _Hasher | None) -> Scanned:
    index, offset, record, fast = item
    if fast is None or hasher is None:
        return item
    return (index, offset, record, fast if hasher.result() else None)

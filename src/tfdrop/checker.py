"""Checking a stream of TFRecord records in order, the images' SHA-256 on a second core.

The validate path's cost on an image TFRecord is mostly hashing every embedded image to compare
it with ``image/key/sha256``. hashlib releases the GIL, so a worker thread hashes record N while
the caller frames and checks record N+1; results still come out in record order. Records the C
all-clear check cannot clear take the full path (parse + check), which names the problems.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from tfdrop.codec.example import parse_example
from tfdrop.codec.model import LabelMap
from tfdrop.codec.schema import check_parsed, fast_spans, sha256_matches
from tfdrop.errors import DataError

_WINDOW_BYTES = 64 << 20  # records kept while their hash is pending


@dataclass(frozen=True, slots=True)
class Finding:
    """The problems of one record (``key``/``message``/``object`` dicts)."""

    index: int
    offset: int
    problems: list[dict[str, Any]]


def full_check(data: bytes, label_map: LabelMap | None) -> list[dict[str, Any]]:
    """Parse and check one record; every problem as a dict (a parse error is one problem)."""
    try:
        return [p.to_dict() for p in check_parsed(parse_example(data), label_map)]
    except DataError as exc:
        return [{"key": exc.key or "", "message": exc.message}]


class RecordChecker:
    """Feed records with :meth:`check`; it yields the findings of records that are done."""

    def __init__(self, label_map: LabelMap | None = None, *, hash_threads: int = 1) -> None:
        self.label_map = label_map
        self._pool = ThreadPoolExecutor(hash_threads, thread_name_prefix="tfdrop-sha256")
        self._pending: deque[tuple[int, int, bytes, Future[bool]]] = deque()
        self._pending_bytes = 0

    def check(self, index: int, offset: int, data: bytes) -> Iterator[Finding]:
        """Check one record; yields findings (this record's or earlier ones') in order."""
        spans = fast_spans(data, self.label_map)
        if spans is None:
            problems = full_check(data, self.label_map)
            if problems:
                yield from self._drain(everything=True)  # earlier records report first
                yield Finding(index, offset, problems)
            return
        if spans[2] > spans[1] and spans[4] > spans[3]:
            future = self._pool.submit(sha256_matches, data, spans)
            self._pending.append((index, offset, data, future))
            self._pending_bytes += len(data)
            yield from self._drain(everything=False)
        # else: clear, and there is nothing to hash

    def _drain(self, *, everything: bool) -> Iterator[Finding]:
        while self._pending:
            index, offset, data, future = self._pending[0]
            if not everything and not future.done() and self._pending_bytes < _WINDOW_BYTES:
                return
            ok = future.result()
            self._pending.popleft()
            self._pending_bytes -= len(data)
            if not ok:
                yield Finding(index, offset, full_check(data, self.label_map))

    def flush(self) -> Iterator[Finding]:
        """The findings of every record still pending (call at the end of a file)."""
        yield from self._drain(everything=True)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""The progress bar of the CLI's long commands (``convert``, ``validate``; ``preview`` next).

A :class:`ProgressBar` is a :data:`tfdrop.convert.Progress` callback: called with the items
done and the total (None when unknown), it draws a tqdm bar on stderr: a percentage, rate and
time left when the total is known, a counter with a rate otherwise. It draws only on a terminal
(stderr and stdout both ttys, so nothing lands in a pipe or a file) and never with ``--quiet``
or ``--json``; the daemon has no bar (its ``job_progress`` events say the same).

tqdm is imported when a bar is first drawn (``importlib``, as ``cli/beam.py`` loads Beam): its
import costs 25 ms, a sixth of a small ``validate``, and a pipe never draws.
"""

from __future__ import annotations

import importlib
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Never, Self

if TYPE_CHECKING:
    from tqdm import tqdm


def on_terminal() -> bool:
    """Whether both stderr (the bar) and stdout (the report) are terminals."""
    streams = (sys.stderr, sys.stdout)
    return all(s is not None and s.isatty() for s in streams)


class ProgressBar:
    """A tqdm bar drawn on the first call, cleared by :meth:`close` (the summary follows)."""

    def __init__(self, *, unit: str = "item", enabled: bool | None = None) -> None:
        self.enabled = on_terminal() if enabled is None else enabled
        self.unit = unit
        self._bar: tqdm[Never] | None = None

    def __call__(self, done: int, total: int | None = None) -> None:
        if not self.enabled:
            return
        bar = self._bar
        if bar is None:
            bar = importlib.import_module("tqdm").tqdm(
                total=total,
                unit=self.unit,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                mininterval=0.1,
            )
            self._bar = bar
        elif total is not None and total != bar.total:
            bar.total = total
        bar.update(done - bar.n)

    def clear(self) -> None:
        """Take the bar off the screen before printing a line (the next call draws it again)."""
        if self._bar is not None:
            self._bar.clear()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

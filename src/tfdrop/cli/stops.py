"""Stop signals during ``tfdrop convert`` and ``validate``: Ctrl-C, SIGTERM and a terminal's
SIGHUP.

The first one unwinds the command (:class:`Terminated`), so the temp archive, the spool
folder and the worker pool are all cleaned up, then the command says so in one line and exits
128 + the signal's number. Any later one is ignored: a second signal used to break the
cleanup it landed in (SIGTERM then Ctrl-C hung in the pool's shutdown; a second SIGTERM
killed the process before the spool folder was removed). Cleanup is bounded (a unit in
flight, a folder to remove), and SIGKILL still ends it at once.

Once the archive is published (renamed into place) the run is done: a signal then is noted
but not raised, so the report is written and the command exits 0, instead of saying
"terminated" with the new archive in place and no report (all found by outside attacks).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Final, Self

from tfdrop.publish import published_here

STOPS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SAID: Final = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}


class Terminated(BaseException):
    """A stop signal ended the conversion; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def message(self) -> str:
        return SAID.get(signal.Signals(self.signum), "stopped")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Stops:
    """While the block runs, the first stop signal raises :class:`Terminated`, unless this
    run has published ``out`` meanwhile (:func:`tfdrop.publish.published_here`: its own
    rename, not another run's archive of the same name, which an attack had this run take
    for its own and overwrite, deaf to every signal)."""

    def __init__(self, out: Path | None = None) -> None:
        self._out = out  # None: the command publishes nothing
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def published(self) -> bool:
        return self._out is not None and published_here(self._out)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            return
        self.signum = signum
        if not self.published():
            raise Terminated(signum)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._stop) for sig in STOPS}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            # once stopped, the process only says so and exits: later signals change nothing
            signal.signal(sig, signal.SIG_IGN if self.signum is not None else handler)  # type: ignore[arg-type]


def ignore() -> None:
    """Ignore every stop signal from now on (the process is about to exit)."""
    if threading.current_thread() is threading.main_thread():
        for sig in STOPS:
            signal.signal(sig, signal.SIG_IGN)

"""Finding drops that are complete: name rules, settling, and the zip end-record check.

Follows SPEC.md "The daemon": a drop is *seen* (a file event or a rescan of the folder's top
level), then *settled* once its size and mtime have not changed for the settle time and, for a
zip, its end-of-central-directory record is present and agrees with the file
(:func:`tfdrop.archive.zipdir.has_end_record`; a copy still in progress has none).
Temp names (:func:`tfdrop.publish.is_temp_name`: ``.x.XXXXXX``, ``*.part``, ``*.tmp`` ...) are
never taken, and only the pipeline's input patterns are, so sidecars in a chained folder stay
put. A zip that stays unchanged for the stale time without an end record is taken anyway and
fails as a broken zip, so nothing waits forever. The stat calls are synchronous and cheap; the
end-record check reads the file, so it goes through aiofiles (:func:`has_end_record_async`: one
64 KiB read of the tail, then a few small ones) and the event loop never blocks on a file.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final

import aiofiles

from tfdrop.archive.zipdir import complete_end_steps
from tfdrop.publish import is_temp_name

OWN_FOLDERS: Final = frozenset({"done", "failed"})
_HIDDEN: Final = (
    "a name starting with '.' is taken for a temp file and never converted; "
    "rename it (data.zip, say) to have it converted"
)


async def has_end_record_async(path: Path) -> bool:
    """:func:`tfdrop.archive.zipdir.has_end_record` without blocking the event loop: the
    sans-IO steps of :func:`~tfdrop.archive.zipdir.complete_end_steps` driven by aiofiles.

    Raises:
        OSError: The file cannot be read.
    """
    async with aiofiles.open(path, "rb") as f:
        steps = complete_end_steps(await f.seek(0, os.SEEK_END))
        try:
            offset, size = next(steps)
            while True:
                await f.seek(offset)
                offset, size = steps.send(await f.read(size))
        except StopIteration as done:
            return done.value is not None


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Case-insensitive glob match (cameras write ``.ZIP``)."""
    low = name.lower()
    return any(fnmatchcase(low, p.lower()) for p in patterns)


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float  # monotonic time of the last change seen


@dataclass(frozen=True, slots=True)
class Settled:
    """A drop ready to claim; ``complete`` is False for a stale zip without an end record."""

    path: Path
    size: int
    complete: bool


class DropTracker:
    """Tracks candidate files of one drop folder until they settle.

    Feed it names (:meth:`note`, from events) or whole listings (:meth:`scan`), and ask
    :meth:`settled` on each tick. A name is handed out once; :meth:`forget` re-arms it
    (when a claim lost a race or a file came back).
    """

    def __init__(
        self, folder: Path, patterns: tuple[str, ...], *, settle: float, stale: float
    ) -> None:
        self.folder = folder
        self.patterns = patterns
        self.settle = settle
        self.stale = max(stale, settle)
        self._seen: dict[str, _Seen] = {}
        self._handed: set[str] = set()
        self._ignored: set[str] = set()
        self.newly_ignored: list[tuple[str, str]] = []  # (name, why), each name once
        self.check_failed: list[tuple[str, OSError]] = []  # end-record checks that failed,
        self._failing: set[str] = set()  # each name once until a check of it succeeds

    def _ignore(self, name: str, why: str) -> None:
        if name not in self._ignored:
            self._ignored.add(name)
            self.newly_ignored.append((name, why))

    def wanted(self, name: str) -> bool:
        if name in OWN_FOLDERS:
            return False
        if is_temp_name(name):
            if name.startswith(".") and "." not in name[1:] and matches(name, self.patterns):
                # ".zip": an input name with an empty stem, never a temp name's shape, so
                # say why it stays (found by the outside attack: it sat there silently)
                self._ignore(name, _HIDDEN)
            return False
        if not matches(name, self.patterns):
            self._ignore(name, "not an input name (see patterns)")
            return False
        return True

    def note(self, name: str, now: float) -> None:
        if name in self._seen or name in self._handed or not self.wanted(name):
            return
        try:
            st = (self.folder / name).lstat()
        except FileNotFoundError:
            return
        # the settle clock starts at the first sight, not at the next tick
        self._seen[name] = _Seen(st.st_size, st.st_mtime_ns, now)

    def scan(self, now: float) -> None:
        """Note every top-level entry (a rescan; catches anything events missed)."""
        present = set()
        with os.scandir(self.folder) as it:
            for entry in it:
                present.add(entry.name)
                self.note(entry.name, now)
        # names gone from the folder may come back later as new drops
        self._handed &= present
        self._ignored &= present

    def forget(self, name: str) -> None:
        self._handed.discard(name)
        self._failing.discard(name)
        self._seen.pop(name, None)

    def pending(self) -> int:
        return len(self._seen)

    async def settled(self, now: float) -> list[Settled]:
        out: list[Settled] = []
        for name, seen in list(self._seen.items()):
            path = self.folder / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                del self._seen[name]
                continue
            if stat.S_ISLNK(st.st_mode):
                # taken (the link itself, never its target) so that it ends in failed/ with
                # an error file instead of waiting forever
                del self._seen[name]
                self._handed.add(name)
                out.append(Settled(path, 0, True))
                continue
            if not stat.S_ISREG(st.st_mode):
                del self._seen[name]  # folders, fifos, sockets: never taken
                self._ignore(name, "not a regular file")
                continue
            if (st.st_size, st.st_mtime_ns) != (seen.size, seen.mtime_ns):
                seen.size, seen.mtime_ns, seen.since = st.st_size, st.st_mtime_ns, now
                continue
            quiet = now - seen.since
            if quiet < self.settle:
                continue
            complete = await self._zip_complete(name, path, quiet)
            if complete is None:
                continue
            del self._seen[name]
            self._handed.add(name)
            out.append(Settled(path, st.st_size, complete))
        return out

    async def _zip_complete(self, name: str, path: Path, quiet: float) -> bool | None:
        """Whether a settled drop is whole (a zip with its end record; any other file is);
        None when it is not to be taken now: gone, not yet stale without an end record, or
        not checked at all."""
        if not name.lower().endswith(".zip"):
            return True
        try:
            complete = await has_end_record_async(path)
        except FileNotFoundError:
            del self._seen[name]
            self._failing.discard(name)
            return None
        except PermissionError:
            # unreadable (EACCES): one such file must not stop the whole folder's scan (the
            # permission test found it did); once stale it is taken, and the job retries
            # with a clear error until it can be read
            return True if quiet >= self.stale else None
        except OSError as exc:
            # EMFILE, ENFILE, EIO ...: the check did not happen, which says nothing about
            # the drop; asked again on the next tick, never taken as a zip without an end
            # record (it was, when the daemon ran out of files)
            if name not in self._failing:
                self._failing.add(name)
                self.check_failed.append((name, exc))
            return None
        self._failing.discard(name)
        if not complete and quiet < self.stale:
            return None
        return complete

"""Instances and work folders: claiming a drop so that exactly one daemon converts it.

Follows SPEC.md "claimed (atomic rename into a work folder, so two instances never take the
same file)" and "On restart, claimed work is taken up again". Each pipeline's state folder
(``<drop>/.tfdrop`` by default, on the drop's file system so the claim is a rename) holds
``work/<host>-<slot>/`` per instance. An instance takes the lowest slot whose lock file
``work/<host>-<slot>.lock`` it can lock (a POSIX lock, which NFS also honours, holding its pid),
so two live instances never share a work folder while a restarted one gets its old slot back
and finds the inputs its killed predecessor had claimed. Work folders of instances whose lock
is free (a host that died) are adopted by a live instance, so nothing waits forever.

Each claim is ``work/<instance>/<job id>/<original name>``: the rename of the drop into it
either succeeds for exactly one instance or fails with ENOENT for the others.

POSIX locks belong to the process: this process could lock a slot it holds already (a
pipeline removed by a reload while its job runs, then brought back), and closing any fd of a
lock file it holds drops its lock. So the slots this process holds are also kept in-process
(:data:`_HELD`, by the lock file's device and inode) and never taken, adopted or opened again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from tfdrop.publish import fsync_dir

log = structlog.get_logger("tfdrop.daemon")

_MAX_SLOTS = 64
_HELD: set[tuple[int, int]] = set()
"""(st_dev, st_ino) of every slot lock file this process holds."""


def _default_host() -> str:
    host = socket.gethostname().split(".", 1)[0] or "host"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in host)


def new_job_id() -> str:
    """Sortable by claim time, unique across hosts (time + random)."""
    return f"{time.time_ns() // 1_000_000:x}{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class Claimed:
    """A drop in this instance's work folder."""

    job_id: str
    folder: Path  # work/<instance>/<job id>
    input: Path  # folder / original name

    @property
    def name(self) -> str:
        return self.input.name


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino)


def held_here(lock: Path) -> bool:
    """Whether this process holds the slot lock ``lock`` (found without opening it)."""
    ident = _file_id(lock)
    return ident is not None and ident in _HELD


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None when another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EACCES, errno.EAGAIN):
            return None
        raise
    return fd


class WorkArea:
    """This instance's work folder in one pipeline's state folder (holds the slot lock)."""

    def __init__(self, state: Path, *, host: str | None = None) -> None:
        self.state = state
        self.root = state / "work"
        self.root.mkdir(parents=True, exist_ok=True)
        host = host or _default_host()
        for slot in range(_MAX_SLOTS):
            name = f"{host}-{slot}"
            lock = self.root / f"{name}.lock"
            if held_here(lock):
                continue  # ours already (another runtime of this process still uses it)
            fd = _try_lock(lock)
            if fd is not None:
                break
        else:
            raise OSError(errno.EBUSY, f"all {_MAX_SLOTS} instance slots are taken", str(state))
        self.instance = name
        self.lock = self.root / f"{name}.lock"
        self._fd: int | None = None
        self._id = (0, 0)
        self._hold(fd)
        self.folder = self.root / name
        self.folder.mkdir(exist_ok=True)

    def _hold(self, fd: int) -> None:
        self.close()
        st = os.fstat(fd)
        self._fd, self._id = fd, (st.st_dev, st.st_ino)
        _HELD.add(self._id)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)

    def close(self) -> None:
        if self._fd is not None:
            _HELD.discard(self._id)
            os.close(self._fd)  # releases the lock
            self._fd = None

    def ensure(self) -> str | None:
        """Make the work folder and the slot lock whole again if someone removed them.

        Returns what was missing (``"work_folder"``, ``"lock_file"``) or None when all is
        there. The slot keeps its name: a lock file removed and made again by another
        instance first raises OSError (EBUSY), as that instance now holds the slot.
        """
        missing = None
        if _file_id(self.lock) != self._id:
            missing = "lock_file"
        if not self.folder.is_dir():
            missing = "work_folder"
        if missing is None:
            return None
        # the state folder and its work folder, not what holds them: a drop folder removed
        # while this ran was made again, with the state folder in it (found by a flaky test)
        for folder in (self.state, self.root, self.folder):
            folder.mkdir(exist_ok=True)
        if _file_id(self.lock) != self._id:
            fd = _try_lock(self.lock)
            if fd is None:
                raise OSError(
                    errno.EBUSY,
                    f"slot {self.instance} was taken by another instance",
                    str(self.lock),
                )
            self._hold(fd)
        return missing

    def claim(self, src: Path) -> Claimed | None:
        """Rename ``src`` into a new job folder; None when another instance took it first."""
        job_id = new_job_id()
        folder = self.folder / job_id
        folder.mkdir()
        dst = folder / src.name
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            folder.rmdir()
            return None
        except BaseException:
            folder.rmdir()
            raise
        try:
            fsync_dir(src.parent)
        except OSError as exc:
            # the rename is done: the claim stands (raising here left the drop in a job
            # folder no job ran until a restart). Only its durability over a power cut is
            # in doubt, and a claim lost that way is a drop back in the drop folder.
            log.warning(
                "claim_fsync_failed",
                source=dst.name,
                job=job_id,
                folder=str(src.parent),
                error=exc.strerror or str(exc),
                errno=exc.errno,
            )
        return Claimed(job_id, folder, dst)

    def job(self, job_id: str) -> Claimed | None:
        """The claim in one of our job folders (one just adopted), if it holds an input."""
        folder = self.folder / job_id
        inputs = [p for p in folder.iterdir() if _is_input(p)]
        if not inputs:
            # its input was routed, then the instance was killed before removing the folder:
            # nothing to do, and left here it would sit until this slot restarts (found by
            # the torture run with three instances)
            _remove_tree(folder)
            return None
        return Claimed(job_id, folder, inputs[0]) if len(inputs) == 1 else None

    def recover(self) -> list[Claimed]:
        """Claims left by a killed run of this slot (oldest first); empty job folders go."""
        found = []
        for entry in sorted(os.scandir(self.folder), key=lambda e: e.name):
            if not entry.is_dir(follow_symlinks=False):
                continue
            folder = Path(entry.path)
            inputs = [p for p in folder.iterdir() if _is_input(p)]
            if len(inputs) != 1:
                # crash between mkdir and rename (empty), or leftovers only
                if not inputs:
                    _remove_tree(folder)
                continue
            found.append(Claimed(entry.name, folder, inputs[0]))
        return found

    def adopt_orphans(self) -> list[str]:
        """Move job folders of dead instances (free lock) into ours; their names."""
        adopted = []
        for lock in sorted(self.root.glob("*.lock")):
            name = lock.name.removesuffix(".lock")
            if name == self.instance or held_here(lock):
                continue  # never open our own lock file: closing it would drop our lock
            other = self.root / name
            if not other.is_dir() or not any(other.iterdir()):
                continue
            fd = _try_lock(lock)
            if fd is None:
                continue  # alive
            try:
                for job in other.iterdir():
                    if job.is_dir():
                        os.rename(job, self.folder / job.name)
                        adopted.append(job.name)
            finally:
                os.close(fd)
        return adopted

    def is_alive(self, instance: str) -> bool:
        """Whether the instance holding ``instance``'s slot is running (we are)."""
        if instance == self.instance:
            return True
        if not instance:
            return False  # unknown (a torn ledger entry left by a crash)
        lock = self.root / f"{instance}.lock"
        if not lock.exists():
            return False
        if held_here(lock):
            return True  # another runtime of this process
        fd = _try_lock(lock)
        if fd is None:
            return True
        os.close(fd)
        return False


def _is_input(p: Path) -> bool:
    """A claimed drop in a job folder: a file, or a symlink (dropped as one, never followed;
    a dangling one too, or recovery would delete it)."""
    return not p.name.startswith(".") and (p.is_symlink() or p.is_file())


def _remove_tree(folder: Path) -> None:
    for p in sorted(folder.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            p.rmdir()
        else:
            p.unlink(missing_ok=True)
    folder.rmdir()


def clean_job_folder(claimed: Claimed) -> None:
    """Remove everything in a job folder but the input (temp outputs of an aborted run)."""
    for p in claimed.folder.iterdir():
        if p == claimed.input:
            continue
        if p.is_dir() and not p.is_symlink():
            _remove_tree(p)
        else:
            p.unlink(missing_ok=True)


def finish_job_folder(claimed: Claimed) -> None:
    """Remove a job folder once its input has been routed."""
    if claimed.folder.exists():
        _remove_tree(claimed.folder)

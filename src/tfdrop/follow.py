"""The read-back of a TFRecord archive's first member while it is still being written.

:func:`tfdrop.readback.validate_archive` reads the whole archive back from the disk after it
is written: 1.2 GB of records took 0.8-1.1 s at the end of a 5.5 s VOC 20k conversion, with
the disk busy and the cores idle. A :class:`Follower` reads the member's bytes back in a
thread of its own as they reach the disk, behind the writer
(:class:`~tfdrop.archive.stored.StoredWriter` tells it how far the member is written: only
ever forwards, so no byte it has read is written again), and gives them the same check
(:func:`tfdrop.readback.check_records`: both CRCs of every frame, every record's schema), with
the zip CRC-32 of what it read. The end check then takes the member's figures from it, once
the central directory, the local header and the label map agree.

It checks against the label map known when the conversion starts. Any doubt (a label added
later, an error, a map that changed, a member it did not reach the end of) makes it give up,
and the member is read back whole at the end as before.

What it cannot see: a byte of the member changed after the follower read it, by anything but
the writer, before the archive is published (an outside attack wrote one through its own
``os.pwrite`` on the temp file: the end's whole read refused that archive, the follower passed
it). Nothing in tfdrop writes there: the member's bytes come only through its
:class:`~tfdrop.archive.stored.StoredWriter`, which only goes forward (tests/test_follow.py
checks every write's offset), zipfile's own writes land before the member's data (its local
header) or after its end (later members, the directory: the directory entry and local header
are checked to agree with what was read), and the temp file has a temp name of this run's.
The whole read at the end shortened that window but did not close it either (a write after
it and before the rename was not seen).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
from pathlib import Path
from typing import BinaryIO, Final, cast

from tfdrop.archive import direct
from tfdrop.archive.direct import ALIGN
from tfdrop.archive.stored import StoredWriter
from tfdrop.codec import inflate
from tfdrop.codec.model import LabelMap
from tfdrop.limits import Limits
from tfdrop.readback import Followed, check_records, own_output
from tfdrop.stream import is_tfrecord_name

_READ: Final = 4 << 20
"""The most bytes one read of the follower takes (a direct read's aligned buffer)."""


class _Stopped(Exception):
    """The member will not be finished: stop reading."""


class Follower:
    """Follows the first TFRecord member written into ``path`` (pass :meth:`attach` as the
    sink's ``on_stored``); checked against ``label_map``. :meth:`close` stops the thread
    (use it in ``contextlib.closing``)."""

    def __init__(self, path: Path, label_map: LabelMap, limits: Limits) -> None:
        self._path = path
        self.label_map = label_map
        self._limits = own_output(limits)  # the caps the end's read-back reads with
        self._cond = threading.Condition()
        self._limit = 0  # bytes before this offset are written
        self._end: int | None = None
        self._dropped = False
        self._thread: threading.Thread | None = None
        self._result: Followed | None = None
        self._name = ""
        self._start = 0

    def attach(self, name: str, writer: StoredWriter) -> None:
        """Follow ``writer`` if it is the first TFRecord member."""
        if self._thread is not None or not is_tfrecord_name(name):
            return
        self._name, self._start, self._limit = name, writer.start, writer.start
        fd = os.open(self._path, os.O_RDONLY)
        try:
            fast = (
                direct.open_read(os.fspath(self._path), fd) if writer.direct is not None else None
            )
        except BaseException:
            os.close(fd)
            raise
        writer.watch = self
        self._thread = threading.Thread(target=self._run, args=(fd, fast), daemon=True)
        self._thread.start()

    # --- the writer's side (CommitWatch) -------------------------------------------------

    def committed(self, end: int) -> None:
        with self._cond:
            self._limit = end
            self._cond.notify_all()

    def ended(self, end: int) -> None:
        with self._cond:
            self._limit = self._end = end
            self._cond.notify_all()

    def dropped(self) -> None:
        with self._cond:
            self._dropped = True
            self._cond.notify_all()

    # --- the reading side ----------------------------------------------------------------

    def _run(self, fd: int, fast: int | None) -> None:
        tail = _Tail(self, fd, fast, self._start)
        try:
            records, objects = check_records(
                cast(BinaryIO, tail), self.label_map, self._limits, self._name
            )
            if tail.at_end():
                size = tail.pos - self._start
                self._result = Followed(self._name, self._start, size, tail.crc, records, objects)
        except Exception:  # noqa: S110 - any doubt: the end check reads the member whole
            pass
        finally:
            tail.close()

    def wait_available(self, pos: int) -> int:
        """Bytes written at ``pos`` and after, once there are any or the member ended (0)."""
        with self._cond:
            while pos >= self._limit and self._end is None and not self._dropped:
                self._cond.wait()
            if self._dropped:
                raise _Stopped
            return self._limit - pos

    def verified(self) -> Followed | None:
        """The member's figures, once it was read back to its end and checked; None if it
        was not (no member followed, or the follower gave up)."""
        if self._thread is None:
            return None
        self._thread.join()
        return self._result

    def close(self) -> None:
        self.dropped()
        if self._thread is not None:
            self._thread.join()


class _Tail:
    """A file-like view of the member as far as it is written: ``read`` waits for bytes."""

    def __init__(self, follower: Follower, fd: int, fast: int | None, start: int) -> None:
        self._follower = follower
        self._fd = fd
        self._fast = fast
        self._buf = mmap.mmap(-1, _READ) if fast is not None else None
        self.pos = start
        self.crc = 0
        self._ended = False

    def read(self, n: int = -1) -> bytes:
        avail = self._follower.wait_available(self.pos)
        if avail <= 0:
            self._ended = True
            return b""
        # at most _READ with the partial blocks around it (a direct read is whole blocks)
        want = min(avail, _READ - 2 * ALIGN, n if n > 0 else _READ)
        data = self._pread(want)
        self.crc = inflate.crc32(data, self.crc)
        self.pos += len(data)
        return data

    def _pread(self, n: int) -> bytes:
        if self._fast is None or self._buf is None:
            data = os.pread(self._fd, n, self.pos)
        else:
            # the aligned blocks around the bytes (past the page cache, as they were written)
            lo = self.pos - self.pos % ALIGN
            hi = -(-(self.pos + n) // ALIGN) * ALIGN
            got = os.preadv(self._fast, [memoryview(self._buf)[: hi - lo]], lo)
            data = self._buf[self.pos - lo : min(self.pos - lo + n, got)]
        if len(data) != n:
            raise OSError(f"the archive being written ends early at {self.pos + len(data)}")
        return data

    def at_end(self) -> bool:
        """The member was read to its end."""
        return self._ended

    def close(self) -> None:
        os.close(self._fd)
        if self._fast is not None:
            os.close(self._fast)
        if self._buf is not None:
            with contextlib.suppress(BufferError):
                self._buf.close()

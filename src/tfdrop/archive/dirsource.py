"""A :class:`~tfdrop.archive.source.Source` over a folder tree (an unzipped drop).

The same rules as for zips (SPEC.md "Bad input"): names are normalised, entry count and total
size are capped, and no path may leave the root. Symbolic links are followed only when they
stay inside the root and point at files; a link that leaves the root makes the whole tree
unsafe, links to folders are not descended (no cycles, no duplicates), and anything that is
not a file or a folder (pipes, devices, sockets) is refused because opening it could block.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tfdrop.archive.limits import normalize_name
from tfdrop.archive.plainfile import FileReader, pread_exact
from tfdrop.archive.source import BaseSource, CheckedReader, Stamp, stamp
from tfdrop.errors import ArchiveError, UnsafeArchiveError
from tfdrop.limits import Limits


class DirSource(BaseSource):
    """The files under a folder, checked against :class:`Limits` when opened.

    Args:
        root: The folder.
        limits: Safety caps; defaults apply when omitted.

    Raises:
        UnsafeArchiveError: A link leaves the root, a special file, or a cap is exceeded.
        ArchiveError: ``root`` is not a folder.
    """

    def __init__(self, root: str | os.PathLike[str], *, limits: Limits | None = None):
        lim = limits if limits is not None else Limits()
        label = str(root)
        self.root = Path(root)
        if not self.root.is_dir():
            raise ArchiveError("not a folder", archive=label)
        self._real_root = os.path.realpath(self.root)
        self._paths: dict[str, str] = {}
        self._stamps: dict[str, Stamp] = {}
        sizes: dict[str, int] = {}
        total = 0
        for rel, st in self._walk(label, lim):
            size = st.st_size
            name, _ = normalize_name(rel, archive=label, limits=lim)
            if name in sizes:
                raise UnsafeArchiveError("duplicate member name", archive=label, member=name)
            lim.check_count(len(sizes) + 1, label)
            lim.check_member(name, size, None, label)
            total += size
            lim.check_total(total, label, name)
            sizes[name] = size
            self._paths[name] = rel
            self._stamps[name] = stamp(st)
        super().__init__(label, sizes, lim)

    def _inside(self, real: str) -> bool:
        return real == self._real_root or real.startswith(self._real_root + os.sep)

    def _walk(self, label: str, lim: Limits) -> list[tuple[str, os.stat_result]]:
        out: list[tuple[str, os.stat_result]] = []
        stack = [""]
        seen = 0  # files and folders, as a zip's entry count includes folder entries
        while stack:
            rel_dir = stack.pop()
            entries = []
            with os.scandir(os.path.join(self.root, rel_dir)) as it:
                for e in it:
                    # Counted as listed: a folder of ten million files stops at the cap.
                    seen += 1
                    lim.check_count(seen, label)
                    entries.append(e)
            entries.sort(key=lambda e: e.name)
            subdirs = []
            for e in entries:
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                if e.is_symlink():
                    real = os.path.realpath(e.path)
                    if not self._inside(real):
                        raise UnsafeArchiveError(
                            "symbolic link leads outside the folder", archive=label, member=rel
                        )
                    if os.path.isdir(real):
                        continue
                try:
                    st = os.stat(e.path)
                except FileNotFoundError:
                    continue  # a dangling link, or a file removed while listing
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append(rel)
                elif stat.S_ISREG(st.st_mode):
                    out.append((rel, st))
                else:
                    raise UnsafeArchiveError(
                        "not a regular file (pipe, device or socket)", archive=label, member=rel
                    )
            stack.extend(reversed(subdirs))
        out.sort(key=lambda pair: pair[0])
        return out

    def path_of(self, name: str) -> Path:
        """The on-disk path of a member (for tools that need a real file)."""
        self.size(name)
        return self.root / self._paths[name]

    def _open_raw(self, name: str, size: int) -> CheckedReader:
        return FileReader(self._open_fd(name), self._label, name, size, self._stamps[name])

    def _pread(self, name: str, offset: int, size: int) -> bytes | None:
        fd = self._open_fd(name)
        try:
            return pread_exact(
                fd, offset, size, self._stamps[name], archive=self._label, member=name
            )
        finally:
            os.close(fd)

    def _open_fd(self, name: str) -> int:
        path = os.path.join(self.root, self._paths[name])
        real = os.path.realpath(path)
        # Checked again at open time: a link may have been swapped since listing.
        if not self._inside(real):
            raise UnsafeArchiveError(
                "symbolic link leads outside the folder", archive=self._label, member=name
            )
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise ArchiveError(
                "file vanished while the folder was read", archive=self._label, member=name
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeArchiveError("not a regular file", archive=self._label, member=name)
        return fd

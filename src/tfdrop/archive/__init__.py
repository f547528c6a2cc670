"""The safe archive layer: reading untrusted zips and folder trees, writing zips.

Format readers open a drop with :func:`open_source` and read members by name through the
:class:`Source` API; writers stream members into a :class:`ZipSink`. The archive caps of
:class:`tfdrop.limits.Limits` are enforced here, so no format module handles raw zip bytes.
:class:`FileSource` serves plain files named by the caller (bare TFRecords beside each other).
The modules import downwards only: ``source`` (the API and its checked reader) <- ``dirsource``
and ``zipsource`` <- this package, which picks one of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from tfdrop.archive.dirsource import DirSource
from tfdrop.archive.filesource import FileSource
from tfdrop.archive.limits import normalize_name
from tfdrop.archive.sink import ZipSink
from tfdrop.archive.source import BaseSource, Source, sorted_names
from tfdrop.archive.zipdir import has_end_record
from tfdrop.archive.zipsource import ZipSource
from tfdrop.limits import Limits

__all__ = [
    "BaseSource",
    "DirSource",
    "FileSource",
    "Source",
    "ZipSink",
    "ZipSource",
    "has_end_record",
    "normalize_name",
    "open_source",
    "sorted_names",
]


def open_source(
    path: str | os.PathLike[str], *, limits: Limits | None = None, direct: bool = False
) -> Source:
    """Open a drop as a :class:`Source`: a folder tree, or a zip (whatever its suffix).

    Args:
        path: A folder or a zip file.
        limits: Safety caps; the defaults of :class:`Limits` when omitted.
        direct: Read a zip's stored members past the page cache where the file system is
            one that direct writes go to (:mod:`tfdrop.archive.direct`): the read-back of
            an archive just written that way.

    Raises:
        ArchiveError: The path is neither a folder nor a readable zip.

    Example:
        >>> with open_source("voc.zip") as src:  # doctest: +SKIP
        ...     xml = src.read_bytes("Annotations/a.xml", max_size=16 << 20)
    """
    lim = limits if limits is not None else Limits()
    if Path(path).is_dir():
        return DirSource(path, limits=lim)
    return ZipSource(path, limits=lim, direct=direct)

"""The safe archive layer: reading untrusted zips and folder trees, writing zips.

Format readers open a drop with :func:`open_source` and read members by name through the
:class:`Source` API; writers stream members into a :class:`ZipSink`. The archive caps of
:class:`tfdrop.limits.Limits` are enforced here, so no format module handles raw zip bytes.
"""

from __future__ import annotations

from tfdrop.archive.dirsource import DirSource
from tfdrop.archive.limits import normalize_name
from tfdrop.archive.sink import ZipSink
from tfdrop.archive.source import BaseSource, Source, open_source, sorted_names
from tfdrop.archive.zipdir import has_end_record
from tfdrop.archive.zipsource import ZipSource

__all__ = [
    "BaseSource",
    "DirSource",
    "Source",
    "ZipSink",
    "ZipSource",
    "has_end_record",
    "normalize_name",
    "open_source",
    "sorted_names",
]

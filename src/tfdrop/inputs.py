"""How a drop is opened as a :class:`~tfdrop.archive.Source`: the one way, for the parent
process (:func:`tfdrop.convert.convert`) and for every worker (:mod:`tfdrop.units`) alike."""

from __future__ import annotations

from pathlib import Path

from tfdrop.archive import FileSource, Source, has_end_record, open_source
from tfdrop.formats.tfrecord import bare_files
from tfdrop.limits import Limits
from tfdrop.stream import is_tfrecord_name


def open_input(path: Path, limits: Limits | None = None) -> Source:
    """A drop as a source: a folder, a zip, or a bare TFRecord file (with its shard set)."""
    if path.is_file() and is_tfrecord_name(path.name) and not has_end_record(path):
        return FileSource(bare_files(path), label=str(path))
    return open_source(path, limits=limits)

"""Names of TFRecord files and shard sets (the shell room, beside :mod:`tfdrop.stream`).

Shard names follow TF models' ``tf_record_creation_util.py``: ``<base>-00000-of-00004``
(zero-based, five digits). Many exporters put the suffix after the numbers
(``<base>-00000-of-00004.tfrecord``, ``.record``); both are shards of one set. Import accepts
``*.tfrecord``, ``*.record`` and shard names (SPEC.md).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from tfdrop.errors import FormatError

__all__ = [
    "Role",
    "Shard",
    "ShardGap",
    "is_tfrecord_name",
    "parse_shard_name",
    "role_of",
    "shard_gaps",
    "shard_name",
    "shard_set",
    "split_shard_name",
    "subset_word",
]

Role = Literal["train", "eval"]

_TRAIN: Final = frozenset({"train", "training"})
_EVAL: Final = frozenset(
    {"val", "valid", "validation", "eval", "evaluation", "dev", "test", "testing"}
)
_TRAILER: Final = re.compile(r"[-_. ]*\d*$")


def subset_word(subset: str) -> str:
    """A subset name as a word: lower case, a year or number after it dropped (``train2017``,
    ``val_2014`` -> ``train``, ``val``)."""
    return _TRAILER.sub("", subset.lower())


def role_of(subset: str) -> Role | None:
    """``train`` (``train``, ``training``) or ``eval`` (``val``, ``valid``, ``validation``,
    ``eval``, ``evaluation``, ``dev``, ``test``, ``testing``) by the subset's name, a year or
    number after it ignored; ``None`` for any other name."""
    key = subset_word(subset)
    if key in _TRAIN:
        return "train"
    if key in _EVAL:
        return "eval"
    return None


_SHARD = re.compile(
    r"^(?P<base>.+)-(?P<index>\d{5,})-of-(?P<count>\d{5,})"
    r"(?P<ext>\.(?:tfrecords?|record)(?:\.(?:gz|gzip|zz|zlib))?)?$",
    re.IGNORECASE,
)
_TFRECORD_SUFFIX = re.compile(r"\.(tfrecords?|record)(\.(gz|gzip|zz|zlib))?$", re.IGNORECASE)
_COMPRESSED_SUFFIX = re.compile(r"\.(gz|gzip|zz|zlib)$", re.IGNORECASE)
_TFRECORD_ENDINGS: Final = tuple(
    f".{kind}{packed}"
    for kind in ("tfrecord", "tfrecords", "record")
    for packed in ("", ".gz", ".gzip", ".zz", ".zlib")
)
"""What :data:`_TFRECORD_SUFFIX` matches in an ASCII name, lower case, for ``str.endswith``."""


@dataclass(frozen=True, slots=True)
class Shard:
    """One shard name split up: ``x.tfrecord-00001-of-00003`` or ``x-00001-of-00003.tfrecord``
    (the suffix after the numbers, as many exporters write them); ``index`` may be out of
    range here (:func:`shard_gaps` refuses it)."""

    folder: str
    base: str
    index: int
    count: int
    ext: str
    width: int

    def sibling(self, index: int) -> str:
        """The name of shard ``index`` of this set (same folder, digits and suffix)."""
        w = self.width
        return f"{self.folder}{self.base}-{index:0{w}d}-of-{self.count:0{w}d}{self.ext}"

    @property
    def key(self) -> str:
        """The set this shard belongs to, whatever its count says."""
        return f"{self.folder}{self.base}-*{self.ext.lower()}"


@dataclass(frozen=True, slots=True)
class ShardGap:
    """An incomplete shard set: one shard that is there and the names that are not."""

    key: str
    present: str
    seen: int
    count: int
    missing: tuple[str, ...]


def split_shard_name(name: str) -> Shard | None:
    """The parts of a shard name (a ``/`` path keeps its folder), else ``None``."""
    folder, _, base = name.rpartition("/")
    m = _SHARD.match(base)
    if m is None:
        return None
    width = min(len(m["index"]), len(m["count"]))
    ext = m["ext"] or ""
    return Shard(
        folder + "/" if folder else "", m["base"], int(m["index"]), int(m["count"]), ext, width
    )


def shard_name(base: str, index: int, count: int) -> str:
    """``<base>-<index>-of-<count>``, zero-based, five digits (TF models' sharding helper)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} is outside 0..{count - 1}")
    return f"{base}-{index:05d}-of-{count:05d}"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """``(base, index, count)`` for a shard name, else ``None`` (index must be < count).

    ``x.tfrecord-00001-of-00003`` has base ``x.tfrecord``; ``x-00001-of-00003.tfrecord`` (and
    ``.record``) has base ``x``.
    """
    shard = split_shard_name(os.path.basename(name))
    if shard is None or shard.index >= shard.count:
        return None
    return shard.base, shard.index, shard.count


def shard_set(path: Path) -> list[Path]:
    """``x.tfrecord-00001-of-00003`` -> the files of its set that exist (``path`` alone for a
    name that is not a shard name); ``path`` itself is always in the list."""
    shard = split_shard_name(path.name)
    if shard is None or shard.index >= shard.count:
        return [path]
    siblings = [path.with_name(shard.sibling(i)) for i in range(shard.count)]
    return [p for p in siblings if p == path or p.is_file()]


def shard_gaps(names: Iterable[str]) -> list[ShardGap]:
    """The incomplete shard sets among ``names``, in order of first appearance.

    A shard whose index is not below its count (``x-00005-of-00002``), or a set whose files
    disagree on the count (``-of-00002`` beside ``-of-00003``), is a :class:`FormatError`
    naming the member: its records would be read as a set they do not belong to.
    """
    sets: dict[str, tuple[Shard, str, set[int]]] = {}
    for name in names:
        shard = split_shard_name(name)
        if shard is None:
            continue
        if shard.index >= shard.count:
            raise FormatError(
                f"shard {shard.index} of a set of {shard.count}: the index must be below the count",
                member=name,
            )
        first, first_name, seen = sets.setdefault(shard.key, (shard, name, set()))
        if first.count != shard.count:
            raise FormatError(
                f"shard set {shard.key} mixes counts {first.count} ({first_name}) and "
                f"{shard.count}: one set has one count",
                member=name,
            )
        seen.add(shard.index)
    gaps = []
    for key, (first, first_name, seen) in sets.items():
        missing = tuple(first.sibling(i) for i in range(first.count) if i not in seen)
        if missing:
            gaps.append(ShardGap(key, first_name, len(seen), first.count, missing))
    return gaps


def is_tfrecord_name(name: str) -> bool:
    """Whether import reads this file: ``*.tfrecord``, ``*.record``, or a shard name.

    ``*.tfrecords`` (TF's tutorials) and a ``.gz``/``.zlib`` suffix after any of these are read
    too; compression is detected from the bytes anyway.
    """
    base = os.path.basename(name)
    if not base or base.startswith("."):
        return False  # hidden and temporary names (".x.XXXXXX") are never inputs
    if base.isascii():  # a zip of 40,000 images asks this of every name: no regex for most
        low = base.lower()
        if low.endswith(_TFRECORD_ENDINGS):
            return True
        if "-of-" not in low:  # every shard name has it
            return False
    elif _TFRECORD_SUFFIX.search(base):  # IGNORECASE folds more than str.lower()
        return True
    return split_shard_name(_COMPRESSED_SUFFIX.sub("", base)) is not None

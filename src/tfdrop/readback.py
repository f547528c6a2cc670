"""Read-back validation: the written archive is read again and checked before it is published
(SPEC.md "validated").

Every target is read back through its own reader and compared with what was written: items,
objects, items per subset, objects per label, and the label list. A TFRecord archive, the
product's main output, is checked at the cost of one streamed read instead: every frame and
both CRCs, every record's schema through the codec's all-clear check (the full check only where
that cannot say yes, to name the problem), records per subset, objects, and the label map; the
embedded images are not decoded or hashed again (the data CRC covers their bytes). Nothing here
is the input's fault: a failure is a :class:`~tfdrop.errors.ValidationError`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from tfdrop.archive import Source, ZipSource, open_source
from tfdrop.archive.zipdir import STORED
from tfdrop.codec.example import parse_example
from tfdrop.codec.labelmap import parse_label_map
from tfdrop.codec.model import LabelMap
from tfdrop.codec.schema import check_parsed, fast_check
from tfdrop.errors import TfdropError, ValidationError
from tfdrop.formats import FORMATS, FormatName, Notes, ReadOptions
from tfdrop.formats.tfrecord import LABEL_MAP_NAME, subset_of
from tfdrop.limits import Limits
from tfdrop.stream import is_tfrecord_name, iter_records, stream_caps


@dataclass(frozen=True, slots=True)
class Written:
    """What a conversion wrote: the figures the archive must read back to."""

    items: int
    objects: int
    subsets: Counter[str]
    labels: Counter[str]
    direct: bool = False
    """The bulk of it went to the disk past the page cache (:mod:`tfdrop.archive.direct`):
    read it back from there the same way, not through new page-cache pages."""


@dataclass(frozen=True, slots=True)
class Followed:
    """A TFRecord member read back and checked while it was written (:mod:`tfdrop.follow`):
    where its data starts, its size and CRC-32 as read from the disk, and the records and
    objects the check found."""

    name: str
    start: int
    size: int
    crc: int
    records: int
    objects: int


def validate_archive(
    out: Path,
    target: FormatName,
    written: Written,
    label_map: LabelMap,
    *,
    masks: bool,
    limits: Limits,
    followed: Followed | None = None,
) -> int:
    """Check the archive ``out`` against ``written``; the number of items read back.
    ``followed``: a member already read back as it was written, not read again if its local
    header, central directory entry and CRC-32 agree with what was read."""
    limits = own_output(limits)
    try:
        with open_source(out, limits=limits, direct=written.direct) as src:
            if target == "tfrecord":
                return _check_tfrecord(src, written, label_map, limits, followed)
            if written.items == 0:
                return 0  # an empty dataset: no reader recognises an archive of nothing
            return _check_by_reader(src, target, written, label_map, limits)
    except TfdropError as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(f"the written archive does not read back: {exc}") from exc


def own_output(limits: Limits) -> Limits:
    """The caps for reading back tfdrop's own output: compressible by nature (10,000 equal
    boxes deflate 250:1), so the compression-ratio cap is lifted."""
    return replace(limits, max_ratio=max(limits.max_ratio, 1 << 20))


def _compare(written: Written, items: int, objects: int, subsets: Counter[str]) -> None:
    if (written.items, written.objects, dict(written.subsets)) != (items, objects, dict(subsets)):
        raise ValidationError(
            f"the written archive reads back differently: wrote {written.items} items / "
            f"{written.objects} objects, read {items} / {objects}",
        )


def _compare_labels(label_map: LabelMap, read: list[str]) -> None:
    """Every label written reads back (by its name or its display name) and nothing else does.

    Compared as sets: a target lists labels in its own order (VOC's labelmap.txt, COCO's
    categories by id) and may leave out the background entry (id 0).
    """
    got = set(read) - {"background"}
    known = {
        n for it in label_map.items for n in (it.name, it.display_name, label_map.label_of(it))
    }
    missing = [
        label_map.label_of(it)
        for it in label_map.items
        if it.id != 0 and label_map.label_of(it) not in got and it.name not in got
    ]
    if missing or not got <= known:
        raise ValidationError(
            f"the written label list reads back differently: {len(label_map)} labels written, "
            f"{len(read)} read (first missing: {missing[:5]}, unexpected: "
            f"{sorted(got - known)[:5]})"
        )


def _check_by_reader(
    src: Source,
    target: FormatName,
    written: Written,
    label_map: LabelMap,
    limits: Limits,
) -> int:
    spec = FORMATS[target]
    assert spec.open_reader is not None
    reader = spec.open_reader(src, ReadOptions(masks=False, images=False, limits=limits), Notes())
    items = objects = 0
    subsets: Counter[str] = Counter()
    labels: Counter[str] = Counter()
    for item in reader.items():
        items += 1
        objects += len(item.objects)
        subsets[item.subset] += 1
        labels.update(o.label for o in item.objects)
    _compare(written, items, objects, subsets)
    if dict(labels) != dict(written.labels):
        raise ValidationError("the written archive's objects per label read back differently")
    _compare_labels(label_map, list(reader.labels()))
    return items


def _check_tfrecord(
    src: Source, written: Written, label_map: LabelMap, limits: Limits, followed: Followed | None
) -> int:
    items = objects = 0
    subsets: Counter[str] = Counter()
    for name in src.names():
        if not is_tfrecord_name(name):
            continue
        if followed is not None and followed.name == name and _agrees(src, followed):
            records, found = followed.records, followed.objects
        else:
            # with the zip CRC-32: records in the wrong order or place pass their own CRC32Cs
            with src.open(name) as f:
                records, found = check_records(f, label_map, limits, name)
        items += records
        objects += found
        subsets[subset_of(name)] += records
    _compare(written, items, objects, subsets)
    check_label_map(src.read_bytes(LABEL_MAP_NAME, max_size=limits.max_file_bytes), label_map)
    return items


def _agrees(src: Source, followed: Followed) -> bool:
    """The zip says of the member what its follower read: stored, where it starts (its local
    header checked), its size and CRC-32."""
    if not isinstance(src, ZipSource):
        return False
    entry = src.entry(followed.name)
    return (
        entry.method == STORED
        and entry.crc == followed.crc
        and entry.size == entry.compressed_size == followed.size
        and src.data_start(followed.name) == followed.start
    )


def check_label_map(text: bytes, label_map: LabelMap) -> None:
    """The written ``label_map.pbtxt`` (``text``) holds ``label_map``'s ids and names in order.

    Raises:
        ValidationError: It reads back differently.
    """
    read_map = parse_label_map(text, member=LABEL_MAP_NAME)
    if [(it.id, it.name) for it in read_map.items] != [(it.id, it.name) for it in label_map.items]:
        raise ValidationError("the written label_map.pbtxt reads back differently")


def check_records(f: BinaryIO, label_map: LabelMap, limits: Limits, member: str) -> tuple[int, int]:
    """Stream one TFRecord file ``member`` and check it: both CRCs of every frame and every
    record's schema (the codec's all-clear check, the full one only to name a problem); the
    (records, objects) it holds. Beam's read-back of a shard is this same check.

    Raises:
        ValidationError: A record is not a valid detection example.
    """
    cap = limits.max_values_per_feature
    records = objects = 0
    for index, record in enumerate(iter_records(f, **stream_caps(limits))):
        n = fast_check(record, label_map, max_values_per_feature=cap, verify_sha256=False)
        if n is None:
            n = _full_check(record, label_map, cap, member, index)
        records += 1
        objects += n
    return records, objects


def _full_check(record: bytes, label_map: LabelMap, cap: int, member: str, index: int) -> int:
    parsed = parse_example(record, max_values_per_feature=cap)
    problems = check_parsed(parsed, label_map, verify_sha256=False)
    if problems:
        raise ValidationError(
            f"record {index} of {member} was written invalid: {problems[0].message}",
            member=member,
            record=index,
            key=problems[0].key,
        )
    return parsed.num_objects

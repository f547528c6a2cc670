"""Label ids for a Beam run, whatever the runner: what the label scan collects per work unit
and how the scans become one label map (and the ``label_ids_renumbered`` count).

The scan puts every item through what the encode step will do to it (:func:`encode_item`:
:func:`tfdrop.units.prepare`, the label checks, :func:`encode_record`), so only items that will
be written give labels ids: a dead-lettered item's label never takes an id (the map equals
``tfdrop convert``'s on the good items).

Several sources' own maps and label lists merge in source order (:func:`merge_maps`; ``tfdrop
convert`` reads one source, so this is tfdrop beam's rule): a label keeps the id the first
source gave it; a later source's label whose id is taken by another label gets the next free
id; objects whose class ids contradict others' are counted as convert counts them
(:func:`count_renumbered`), and the report warns ``label_ids_renumbered``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tfdrop.beam.elements import Position, SourceInfo
from tfdrop.codec.keypoints import Skeleton
from tfdrop.codec.model import Annotation, Box, Item, LabelMap, LabelMapItem, Point
from tfdrop.errors import TfdropError
from tfdrop.formats import Notes, ReadOptions, WriteOptions
from tfdrop.formats.tfrecord import encode_record
from tfdrop.labels import LabelResolver, check_label_text
from tfdrop.units import JobSpec, prepare

Pair = tuple[str, int, Position, int]
"""``(label, source class id, first position, objects)``: one label/id pair of a unit."""


@dataclass(frozen=True, slots=True)
class UnitScan:
    """What the scan found in one work unit's items that will be written."""

    first: tuple[tuple[str, str], ...]  # (label, item name), in order of first appearance
    pairs: tuple[Pair, ...]
    keypoints: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    """(label, item name, keypoint names) of each label's first object with keypoints: what
    convert's keypoint scan learns from a source that declares no skeletons."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """The run's label map and the objects whose source class ids were contradicted."""

    label_map: LabelMap
    renumbered: int


def encode_item(
    item: Item, spec: JobSpec, resolver: LabelResolver, notes: Notes
) -> tuple[Item, bytes]:
    """What the encode step does to an item: prepared, ids assigned, encoded."""
    assigned = resolver.assign(prepare(item, spec, notes))
    wopts = replace(spec.encode or WriteOptions(), keypoints=resolver.map.keypoint_layout)
    return assigned, encode_record(assigned, wopts, notes)


class Scanner:
    """Collects a unit's :class:`UnitScan` from its items (bad ones are skipped)."""

    def __init__(self, read: ReadOptions, write: WriteOptions, box_masks: bool) -> None:
        self.spec = JobSpec(Path(), "tfrecord", read, LabelMap(), box_masks, write)
        self._first: dict[str, str] = {}
        self._at: dict[tuple[str, int], Position] = {}
        self._count: Counter[tuple[str, int]] = Counter()
        self._kp: dict[str, tuple[str, tuple[str, ...]]] = {}

    def see(self, item: Item, pos: Position) -> None:
        """Count ``item``'s labels, if the encode step will write it."""
        try:
            resolver = LabelResolver(None, (), None, limits=self.spec.read.limits)
            encode_item(item, self.spec, resolver, Notes())
        except TfdropError:
            return  # the encode step dead-letters it
        for obj in item.objects:
            self._first.setdefault(obj.label, item.name)
            self._at.setdefault((obj.label, obj.label_id), pos)
            self._count[obj.label, obj.label_id] += 1
            if obj.keypoints and obj.label not in self._kp:
                self._kp[obj.label] = (item.name, tuple(p.name for p in obj.keypoints))

    def result(self) -> UnitScan:
        pairs = tuple((lb, i, at, self._count[lb, i]) for (lb, i), at in self._at.items())
        kp = tuple((lb, name, names) for lb, (name, names) in self._kp.items())
        return UnitScan(tuple(self._first.items()), pairs, kp)


def count_renumbered(pairs: Iterable[Pair]) -> int:
    """The objects :class:`~tfdrop.labels.LabelResolver` counts as ``renumbered`` when it
    meets them in order: a class id already seen with another text, or a text with another
    id (a function of each pair's first position and count, so per-unit counts combine)."""
    text_of: dict[int, str] = {}
    id_of: dict[str, int] = {}
    renumbered = 0
    for label, label_id, _at, n in sorted(pairs, key=lambda p: p[2]):
        if not label_id:
            continue
        known_text = text_of.setdefault(label_id, label)
        known_id = id_of.setdefault(label, label_id)
        if known_text != label or known_id != label_id:
            renumbered += n
    return renumbered


def merge_maps(infos: Sequence[SourceInfo], read: ReadOptions) -> LabelMap | None:
    """The sources' own label maps and label lists as one, in source order: the first
    source's map as it is; then a label already there keeps its id, a new one its own id when
    free, else the next free id (a label list's labels: the next free ids, as convert gives)."""
    ordered = sorted(infos, key=lambda i: i.index)
    if all(i.label_map is None and not i.labels for i in ordered):
        return None
    items: list[LabelMapItem] = []
    merged = LabelMap()
    for info in ordered:
        if info.label_map is not None and not items:
            items = list(info.label_map.items)
        elif info.label_map is not None:
            items.extend(_new_items(merged, info.label_map.items))
        else:
            for name in info.labels:
                check_label_text(name, read.limits, archive=info.path)
            new = (LabelMapItem(id=0, name=n) for n in info.labels)
            items.extend(_new_items(merged, tuple(new)))
        merged = LabelMap(tuple(items))
    return merged


def _new_items(merged: LabelMap, items: Sequence[LabelMapItem]) -> list[LabelMapItem]:
    out: list[LabelMapItem] = []
    used = {it.id for it in merged.items}
    names = set(merged.names)
    for it in items:
        if it.name in names:
            continue
        label_id = it.id
        if not label_id or label_id in used:
            label_id = max(used, default=0) + 1
        used.add(label_id)
        names.add(it.name)
        out.append(replace(it, id=label_id))
    return out


def resolve_labels(
    infos: Sequence[SourceInfo],
    scans: Sequence[tuple[tuple[int, int], UnitScan]],
    read: ReadOptions,
    *,
    plain_text: bool,
) -> Resolved:
    """The label map ``tfdrop convert`` builds (:class:`~tfdrop.labels.LabelResolver`), fed the
    labels in source order: the sources' maps or label lists, then first appearances."""
    skeletons: dict[str, Skeleton] = {}
    for info in sorted(infos, key=lambda i: i.index):
        for label, sk in info.skeletons:
            skeletons.setdefault(label, sk)
    resolver = LabelResolver(
        None,
        (),
        merge_maps(infos, read),
        limits=read.limits,
        plain_text=plain_text,
        skeletons=skeletons,
        tfrecord_layout=not plain_text,
    )
    ordered = sorted(scans, key=lambda s: s[0])
    # convert's keypoint scan meets the labels in order of first appearance, then their
    # keypoints: the ids first, the slots after, as it gives them
    for _key, scan in ordered:
        for label, item_name in scan.first:
            resolver.learn(Item(item_name, objects=(Annotation(label, Box(0, 0, 0, 0)),)))
    for _key, scan in ordered:
        for label, item_name, names in scan.keypoints:
            points = tuple(Point(0.0, 0.0, 0, n) for n in names)
            resolver.learn(
                Item(item_name, objects=(Annotation(label, Box(0, 0, 0, 0), keypoints=points),))
            )
    for _key, scan in ordered:
        for label, item_name in scan.first:
            resolver.assign(Item(item_name, objects=(Annotation(label, Box(0, 0, 0, 0)),)))
    renumbered = count_renumbered(p for _key, scan in ordered for p in scan.pairs)
    return Resolved(resolver.map, renumbered)

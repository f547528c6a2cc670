"""The hand-off to training: what the OD API's pipeline.config needs to read a dataset.

:class:`Tally` counts a stream of items (objects and images per label per subset, objects with
masks, keypoints per object); :func:`summarize` turns it, with the label map and the record
files' names, into a :class:`TrainingSummary`: ``num_classes``, the counts, the
``tf_record_input_reader`` glob of each subset, and a ready ``train_input_reader`` /
``eval_input_reader`` text block. The conversion's report (``tfdrop convert`` and the daemon)
and ``tfdrop inspect --summary`` both come here.

Which subset feeds which reader (:func:`role_of`): ``train`` / ``training`` train; ``val``,
``valid``, ``validation``, ``eval``, ``evaluation``, ``dev``, ``test``, ``testing`` evaluate
(one ``eval_input_reader`` each, test last; named after the subset when there are several, as
TF models' model_lib_v2 evaluates every one and writes its summaries to ``eval<name>``); a year
or number after the name is ignored (``train2017``, ``val_2014``); a lone subset trains, whatever
its name; any other subset is left out and the block says so in a comment. Paths are relative
to the unpacked archive.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Final

from tfdrop.codec.example import MASK
from tfdrop.codec.model import Item, LabelMap
from tfdrop.formats.tfrecord import LABEL_MAP_NAME, subset_of
from tfdrop.shards import Role, Shard, role_of, split_shard_name, subset_word

_GLOB_CHARS: Final = re.compile(r"([*?\[\\])")
MAX_CLASS_ID: Final = 2**31 - 1
"""The largest class id the OD API can hold: num_classes and label map ids are int32."""
BOXES_DEFAULT: Final = 100
"""The OD API's ``max_number_of_boxes`` default: boxes past it in one image are dropped."""


def _eval_rank(subset: str) -> tuple[int, str]:
    """Validation subsets before test subsets (model_main_tf2 evaluates the first reader)."""
    return (subset_word(subset).startswith("test"), subset)


def label_text(label: str, label_id: int) -> str:
    """An object's label for the counts: its text, else its id (a record with ids only)."""
    return label or f"id {label_id}"


@dataclass(slots=True)
class Tally:
    """Counts of a stream of items, per subset (an empty subset name counts as ``default``)."""

    items: Counter[str] = field(default_factory=Counter)
    objects: dict[str, Counter[str]] = field(default_factory=dict)
    images: dict[str, Counter[str]] = field(default_factory=dict)
    masks: int = 0
    keypoints: Counter[int] = field(default_factory=Counter)  # keypoints per object -> objects
    max_id: int = 0
    max_objects: int = 0  # in one item
    labels: set[str] = field(default_factory=set)  # every label seen
    numerical_masks: int = 0  # objects with a float-list mask (TF's NUMERICAL_MASKS)

    def add(
        self,
        subset: str,
        labels: Sequence[str],
        *,
        masks: int = 0,
        keypoints: Sequence[int] = (),
        ids: Sequence[int] = (),
    ) -> None:
        """One item: its subset, one label per object, and what its objects carry."""
        subset = subset or "default"
        self.items[subset] += 1
        self.objects.setdefault(subset, Counter()).update(labels)
        self.images.setdefault(subset, Counter()).update(set(labels))
        self.masks += masks
        self.keypoints.update(keypoints)
        self.max_id = max(self.max_id, *ids) if ids else self.max_id
        self.max_objects = max(self.max_objects, len(labels))
        self.labels.update(labels)

    def add_item(self, item: Item) -> None:
        objs = item.objects
        if any(key == MASK for key, _ in item.extra):  # kept unchanged by the reader
            self.numerical_masks += len(objs)
        self.add(
            item.subset,
            [label_text(o.label, o.label_id) for o in objs],
            masks=sum(o.mask is not None for o in objs),
            keypoints=[len(o.keypoints) for o in objs],
            ids=[o.label_id for o in objs],
        )

    def merge(self, other: Tally) -> None:
        """Add ``other``'s counts (a worker's share of one dataset)."""
        self.items.update(other.items)
        for subset, counts in other.objects.items():
            self.objects.setdefault(subset, Counter()).update(counts)
        for subset, counts in other.images.items():
            self.images.setdefault(subset, Counter()).update(counts)
        self.masks += other.masks
        self.keypoints.update(other.keypoints)
        self.max_id = max(self.max_id, other.max_id)
        self.max_objects = max(self.max_objects, other.max_objects)
        self.labels.update(other.labels)

    def by_subset(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{subset: {label: {"objects": n, "images": m}}}``, labels sorted."""
        return {
            subset: {
                label: {"objects": n, "images": self.images[subset][label]}
                for label, n in sorted(self.objects[subset].items())
            }
            for subset in self.items
        }


def _escape(name: str) -> str:
    """A name as a glob that matches only itself (``[*]``: fnmatch and TF's glob alike; a
    backslash as ``[\\]``, as TF's glob escapes even inside brackets and fnmatch does not)."""
    return _GLOB_CHARS.sub(lambda m: "[\\\\]" if m[1] == "\\" else f"[{m[1]}]", name)


def class_id_problem(label_id: int) -> str | None:
    """Why a class id cannot be trained on, if it cannot: over int32 (:data:`MAX_CLASS_ID`)."""
    if label_id > MAX_CLASS_ID:
        return (
            f"class id {label_id} is over {MAX_CLASS_ID}: the OD API's num_classes and label "
            "map ids are int32"
        )
    return None


def _set_glob(shard: Shard) -> str:
    digits = "?" * shard.width
    return (
        f"{_escape(shard.folder + shard.base)}-{digits}-of-{shard.count:0{shard.width}d}"
        f"{_escape(shard.ext)}"
    )


def _globs(names: list[str], every: Sequence[str]) -> list[str]:
    """The input paths of one subset's files: one glob per complete shard set, else names.

    A glob is kept only if it matches exactly its set among ``every`` record name.
    """
    sets: dict[tuple[str, str, int, str, int], tuple[Shard, list[str]]] = {}
    out: list[str] = []
    for name in names:
        shard = split_shard_name(name)
        if shard is None or shard.index >= shard.count:
            out.append(_escape(name))
            continue
        key = (shard.folder, shard.base, shard.count, shard.ext, shard.width)
        sets.setdefault(key, (shard, []))[1].append(name)
    for shard, members in sets.values():
        pattern = _set_glob(shard)
        matched = {n for n in every if fnmatchcase(n, pattern)}
        whole = len(set(members)) == shard.count and matched == set(members)
        out.extend([pattern] if whole else [_escape(n) for n in members])
    return out


def record_globs(names: Iterable[str]) -> dict[str, list[str]]:
    """``{subset: [input_path, ...]}`` for record file names (``train.tfrecord``,
    ``val.tfrecord-00000-of-00004`` ...): what ``tf_record_input_reader`` takes."""
    every = sorted(set(names))
    by_subset: dict[str, list[str]] = {}
    for name in every:
        by_subset.setdefault(subset_of(name), []).append(name)
    return {subset: _globs(members, every) for subset, members in by_subset.items()}


def _quote(s: str) -> str:
    """A protobuf text-format string literal."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        elif 0xDC80 <= ord(ch) <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\{ord(ch) - 0xDC00:03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


@dataclass(frozen=True, slots=True)
class ReaderOptions:
    """What every reader of the block says besides its paths."""

    label_map_path: str = LABEL_MAP_NAME
    masks: bool = False
    numerical_masks: bool = False  # float-list masks (only when there are no PNG masks)
    num_keypoints: int = 0
    max_boxes: int = 0  # set only above the OD API's default (BOXES_DEFAULT)


def _reader(kind: Role, paths: Sequence[str], opts: ReaderOptions, name: str = "") -> list[str]:
    lines = [f"{kind}_input_reader {{"]
    if name:
        lines.append(f"  name: {_quote(name)}")
    lines.append(f"  label_map_path: {_quote(opts.label_map_path)}")
    if kind == "eval":
        lines += ["  shuffle: false", "  num_epochs: 1"]
    if opts.masks:
        lines += ["  load_instance_masks: true", "  mask_type: PNG_MASKS"]
    elif opts.numerical_masks:
        lines += ["  load_instance_masks: true", "  mask_type: NUMERICAL_MASKS"]
    if opts.num_keypoints:
        lines.append(f"  num_keypoints: {opts.num_keypoints}")
    if opts.max_boxes:
        lines.append(f"  max_number_of_boxes: {opts.max_boxes}")
    lines.append("  tf_record_input_reader {")
    lines += [f"    input_path: {_quote(p)}" for p in paths]
    lines += ["  }", "}"]
    return lines


def assign(subsets: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``(train, eval, left out)`` subsets, eval in reader order (see the module docstring)."""
    if len(subsets) == 1:
        return list(subsets), [], []
    train = [s for s in subsets if role_of(s) == "train"]
    evals = sorted((s for s in subsets if role_of(s) == "eval"), key=_eval_rank)
    rest = [s for s in subsets if role_of(s) is None]
    return train, evals, rest


def input_reader_block(
    paths: dict[str, list[str]], opts: ReaderOptions, notes: Sequence[str] = ()
) -> str:
    """The ``train_input_reader`` / ``eval_input_reader`` text for pipeline.config."""
    lines = ["# tfdrop: paths are relative to the unpacked archive", *(f"# {n}" for n in notes)]
    if not paths:
        return "\n".join([*lines, "# no TFRecord files: nothing to read"]) + "\n"
    train, evals, rest = assign(list(paths))
    if train:
        lines += _reader("train", [p for s in train for p in paths[s]], opts)
    for subset in evals:
        name = subset if len(evals) > 1 else ""
        lines += [f"# subset {subset}", *_reader("eval", paths[subset], opts, name)]
    lines += [
        f"# subset {s} is in no reader (name it train, val or test to place it)" for s in rest
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class TrainingSummary:
    """What the report and ``inspect --summary`` tell a training setup."""

    num_classes: int
    labels_by_subset: dict[str, dict[str, dict[str, int]]]
    input_paths: dict[str, list[str]]
    input_reader: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "labels_by_subset": self.labels_by_subset,
            "input_paths": self.input_paths,
            "input_reader": self.input_reader,
        }


def num_classes(label_map: LabelMap | None, tally: Tally) -> int:
    """The OD API's ``num_classes``: the largest class id (ids are 1-based; a map with gaps
    still needs room for its largest), else the number of labels seen."""
    ids = [it.id for it in label_map.items] if label_map is not None else []
    top = max([tally.max_id, *ids])
    if top > 0:
        return top
    return len(tally.labels)


def _keypoint_notes(tally: Tally) -> list[str]:
    counts = sorted(tally.keypoints)
    if len(counts) > 1 and counts[-1] > 0:
        shown = ", ".join(map(str, counts))
        return [
            f"objects carry {shown} keypoints: num_keypoints is the largest, and the OD API's "
            "decoder expects that many on every object"
        ]
    return []


def _mask_notes(tally: Tally) -> list[str]:
    if tally.masks and tally.numerical_masks:
        return [
            f"{tally.masks} objects carry PNG masks and {tally.numerical_masks} numerical "
            "(float) masks: one mask_type reads only one kind (PNG_MASKS here)"
        ]
    return []


def summarize(
    tally: Tally,
    label_map: LabelMap | None,
    record_names: Sequence[str] | None,
    *,
    notes: Sequence[str] = (),
    label_map_path: str | None = LABEL_MAP_NAME,
) -> TrainingSummary:
    """The summary of a tallied dataset; ``record_names`` ``None``: not TFRecords (no reader).
    ``label_map_path``: the label map member the readers name; ``None`` when the archive has
    none (the block then names ``label_map.pbtxt`` and says it is to be written)."""
    layout = label_map.keypoint_layout if label_map is not None else None
    kp = layout.total if layout is not None else max(tally.keypoints, default=0)
    boxes = tally.max_objects if tally.max_objects > BOXES_DEFAULT else 0
    opts = ReaderOptions(
        label_map_path=label_map_path or LABEL_MAP_NAME,
        masks=tally.masks > 0,
        numerical_masks=tally.numerical_masks > 0,
        num_keypoints=kp,
        max_boxes=boxes,
    )
    paths = record_globs(record_names) if record_names is not None else {}
    block = None
    if record_names is not None:
        missing = (
            [f"the archive holds no label map: write {LABEL_MAP_NAME} beside the records"]
            if label_map_path is None
            else []
        )
        kp_notes = _keypoint_notes(tally) if layout is None else []
        more = [*missing, *notes, *kp_notes, *_mask_notes(tally)]
        block = input_reader_block(paths, opts, more)
    return TrainingSummary(num_classes(label_map, tally), tally.by_subset(), paths, block)

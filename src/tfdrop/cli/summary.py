"""``tfdrop inspect --summary PATH``: what training on PATH needs, for any archive tfdrop reads.

num_classes, objects and images per label per subset, the input path (glob) of each subset and
the ``train_input_reader`` / ``eval_input_reader`` block for pipeline.config
(:mod:`tfdrop.handoff`, the same as the conversion's report). A TFRecord archive, a bare file or
a shard set is summarised as it is; any other format as ``tfdrop convert --to tfrecord`` would
write it (one ``<subset>.tfrecord`` each).
"""

from __future__ import annotations

import json
from pathlib import Path

from tfdrop.archive import Source
from tfdrop.codec.compression import detect
from tfdrop.codec.framing import HEADER_SIZE
from tfdrop.codec.model import Item, LabelMap
from tfdrop.errors import LabelMapError, SchemaError, TfdropError
from tfdrop.formats import FORMATS, Notes, ReadOptions, detect_format
from tfdrop.formats.tfrecord import LABEL_MAP_NAME, subset_of
from tfdrop.handoff import Tally, TrainingSummary, class_id_problem, summarize
from tfdrop.inputs import open_input
from tfdrop.limits import Limits
from tfdrop.shards import role_of
from tfdrop.stream import is_tfrecord_name


def _compression_notes(source: Source, names: list[str]) -> list[str]:
    """A comment for the block naming each compressed record file (the OD API's reader takes
    no compression_type). Only each file's first bytes are read."""
    compressed = []
    for name in names:
        with source.open(name) as f:
            head = f.read(HEADER_SIZE)
        kind = detect(head, at_eof=True)
        if kind not in (None, "none"):
            compressed.append(f"{name} ({kind})")
    if not compressed:
        return []
    return [
        f"compressed record files: {', '.join(compressed)}: the OD API reads records with "
        "tf.data.TFRecordDataset without a compression_type; convert with --compression none"
    ]


def _label_map_member(names: list[str]) -> str | None:
    """The label map the readers should name: the shallowest ``.pbtxt``, one in a training
    folder first (Roboflow's ``train/cars_label_map.pbtxt``); None when there is none."""
    maps = [n for n in names if n.rsplit("/", 1)[-1].lower().endswith(".pbtxt")]
    if not maps:
        return None
    return min(maps, key=lambda n: (n.count("/"), role_of(subset_of(n)) != "train", n))


def _disk_names(path: Path, names: list[str]) -> list[str]:
    """Record names as a folder really spells them: a file named ``val\\x.tfrecord`` is listed
    as ``val/x.tfrecord`` (a backslash is a separator in archives), but TF's glob needs the
    name on disk."""
    if not path.is_dir():
        return names
    out = []
    for name in names:
        spelt = name.replace("/", "\\")
        on_disk = not (path / name).exists() and (path / spelt).is_file()
        out.append(spelt if on_disk else name)
    return out


def _check_ids(item: Item) -> None:
    for i, obj in enumerate(item.objects):
        why = class_id_problem(obj.label_id)
        if why:
            raise SchemaError(why, item=item.name, obj=i, key="image/object/class/label")


def summarize_path(path: Path, limits: Limits) -> tuple[Tally, TrainingSummary]:
    """Read every item of ``path`` (images not loaded) and summarise it."""
    try:
        return _summarize(path, limits)
    except TfdropError as exc:
        raise exc.at(archive=str(path)) from None


def _summarize(path: Path, limits: Limits) -> tuple[Tally, TrainingSummary]:
    notes = Notes()
    with open_input(path, limits) as source:
        fmt = detect_format(source.names(), archive=str(path))
        spec = FORMATS[fmt]
        assert spec.open_reader is not None
        reader = spec.open_reader(source, ReadOptions(images=False, limits=limits), notes)
        tally = Tally()
        for item in reader.items():
            _check_ids(item)
            tally.add_item(item)
            # the counts grow with the labels: bounded like a conversion's label list
            limits.check("max_labels", len(tally.labels), item=item.name)
        label_map = reader.label_map() or LabelMap.from_names(list(reader.labels()))
        for it in label_map.items:
            if why := class_id_problem(it.id):
                raise LabelMapError(why)
        map_path: str | None = LABEL_MAP_NAME  # what tfdrop convert writes
        if fmt == "tfrecord":
            names = sorted(n for n in source.names() if is_tfrecord_name(n))
            extra = _compression_notes(source, names)
            names = _disk_names(path, names)
            map_path = _label_map_member(source.names()) if reader.label_map() else None
        else:
            names = [f"{subset}.tfrecord" for subset in tally.items]
            extra = [f"as tfdrop convert --to tfrecord writes this {fmt} archive"]
    return tally, summarize(tally, label_map, names, notes=extra, label_map_path=map_path)


def summary_json(tally: Tally, summary: TrainingSummary) -> str:
    return json.dumps(
        {
            "items": sum(tally.items.values()),
            "objects": sum(sum(c.values()) for c in tally.objects.values()),
            "subsets": dict(tally.items),
        }
        | summary.to_dict()
    )


def summary_text(tally: Tally, summary: TrainingSummary) -> str:
    lines = [f"num_classes: {summary.num_classes}"]
    for subset, labels in summary.labels_by_subset.items():
        n = sum(c["objects"] for c in labels.values())
        lines.append(f"subset {subset}: {tally.items[subset]} images, {n} objects")
        lines += [
            f"  {label}: {c['objects']} objects in {c['images']} images"
            for label, c in labels.items()
        ]
        paths = summary.input_paths.get(subset)
        if paths:
            lines.append(f"  input_path: {' '.join(paths)}")
    lines += ["", "pipeline.config input readers:", (summary.input_reader or "").rstrip()]
    return "\n".join(lines)

"""The YOLO reader: darknet/CVAT "YOLO 1.1", Ultralytics and Datumaro's loose layouts.

Which members make an item is worked out from the member names once (``layout``); items then
stream one at a time. YOLO label files carry no image size, so each image's header is read
(the bytes once when images are embedded, else only the header); an image missing from the
archive needs a Datumaro ``images.meta`` line, else it is an error (a size cannot be guessed).
Class index i names ``names[i]`` and gets label id i + 1 (:meth:`YoloReader.label_map`; a
``data.yaml`` names mapping with gaps keeps them). A label named twice is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tfdrop.codec.model import Annotation, Item, LabelMap, Shape
from tfdrop.errors import FormatError, TfdropError
from tfdrop.formats.base import Notes, ReadOptions, plan_ranges
from tfdrop.formats.common.imageinfo import format_from_name, is_image_name, probe_member
from tfdrop.formats.common.masks import polygons_mask_png
from tfdrop.formats.yolo import config as cfg
from tfdrop.formats.yolo.layout import (
    Entry,
    Members,
    darknet_dirs,
    dirname,
    entry_for_image,
    find_flat_names,
    find_marker,
    find_yaml,
    flat_entries,
    folder_entries,
    join,
    localize,
    stem_txt,
    ultralytics_dirs,
    under,
)
from tfdrop.formats.yolo.lines import Row, parse_label_text
from tfdrop.limits import Limits

if TYPE_CHECKING:
    from tfdrop.archive import Source


def _subset_name(rel: str) -> str:
    """An Ultralytics item's name: its path inside ``images/<subset>/`` (else as listed)."""
    parts = rel.split("/")
    if len(parts) >= 3 and parts[0].lower() == "images":
        return "/".join(parts[2:])
    return rel


@dataclass(slots=True)
class YoloReader:
    source: Source
    options: ReadOptions
    notes: Notes
    kind: str = ""
    names: dict[int, str] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    kpt_values: int | None = None
    _meta: dict[str, tuple[int, int]] = field(default_factory=dict)
    _lines: int = 0  # list-file lines read so far (max_list_lines is for all of them)
    _members: Members = field(init=False)

    def __post_init__(self) -> None:
        names = self.source.names()
        self._members = Members(names)
        obj_data = find_marker(names, "obj.data")
        data_yaml = find_yaml(names)
        obj_names = find_marker(names, "obj.names")
        if obj_data is not None and (
            data_yaml is None or obj_data.count("/") <= data_yaml.count("/")
        ):
            self.kind = "darknet"
            root = dirname(obj_data)
            self._darknet(obj_data, root)
        elif data_yaml is not None:
            self.kind = "ultralytics"
            root = dirname(data_yaml)
            self._ultralytics(data_yaml, root)
        elif obj_names is not None:
            self.kind = "loose"
            root = dirname(obj_names)
            self._loose(obj_names, root)
        elif flat := find_flat_names(names):
            self.kind = "flat"
            root = ""
            self._flat(flat)
        else:
            raise FormatError(
                "no YOLO label list found: expected obj.names (darknet/CVAT YOLO 1.1), "
                "data.yaml (Ultralytics) or classes.txt (LabelImg)",
                hint="YOLO class indices mean nothing without the label list; export it too",
            )
        meta = self._members.find(join(root, "images.meta"))
        if meta is not None:
            self._meta = cfg.parse_image_meta(self._text(meta), meta, self._limits, self._lines)
            self._lines += len(self._meta)
        self._dedupe()

    # -- layout discovery --------------------------------------------------------------------

    @property
    def _limits(self) -> Limits:
        return self.options.limits

    def _read(self, member: str, limit: str) -> bytes:
        cap: int = getattr(self._limits, limit)
        self._limits.check(limit, self.source.size(member), member=member)
        return self.source.read_bytes(member, max_size=cap)

    def _text(self, member: str) -> str:
        return cfg.decode_text(self._read(member, "max_file_bytes"), member)

    def _names_file(self, member: str) -> None:
        self.names = dict(enumerate(cfg.parse_names(self._text(member), member, self._limits)))

    def _darknet(self, obj_data: str, root: str) -> None:
        config = cfg.parse_obj_data(self._text(obj_data), obj_data, self._limits)
        wanted = join(root, localize(config.get("names", "obj.names")))
        names_member = self._members.find(wanted) or self._members.find(join(root, "obj.names"))
        if names_member is None:
            raise FormatError(
                f"the label list {wanted} named in obj.data is not in the archive",
                member=obj_data,
                key="names",
                hint="YOLO class indices mean nothing without obj.names; export it too",
            )
        self._names_file(names_member)
        classes = config.get("classes", "")
        declared = cfg.whole_number(classes)
        if declared is not None and declared != len(self.names):
            self.notes.warn(
                "classes_mismatch",
                f"obj.data says classes = {classes} but obj.names has {len(self.names)} names",
                member=obj_data,
            )
        dirs = darknet_dirs(self._members, root)
        for subset, list_path in cfg.obj_data_subsets(config).items():
            list_member = self._members.find(join(root, localize(list_path)))
            folder = dirs.pop(subset, None)
            if list_member is None:
                if folder is None:
                    raise FormatError(
                        f"subset {subset!r}: its list {list_path} is not in the archive",
                        member=obj_data,
                        key=subset,
                    )
                self.notes.warn(
                    "subset_list_missing",
                    f"subset {subset!r}: {list_path} is missing; reading {folder}/ instead",
                    member=obj_data,
                )
                self.entries += folder_entries(self._members, subset, folder, darknet=True)
                continue
            self._list_file(subset, list_member, root, root, darknet=True)
            if folder is not None:
                self._unlisted(subset, folder, list_member)
        for subset, folder in dirs.items():
            self.notes.warn(
                "subset_not_listed",
                f"{folder}/ is not named in obj.data; read as subset {subset!r}",
                member=obj_data,
            )
            self.entries += folder_entries(self._members, subset, folder, darknet=True)

    def _list_file(self, subset: str, member: str, root: str, base: str, *, darknet: bool) -> None:
        list_dir = dirname(member)
        lines = cfg.split_lines(
            self._text(member), "max_list_lines", self._limits, member=member, used=self._lines
        )
        self._lines += len(lines)
        for raw in lines:
            rel = localize(raw)
            if not rel:
                continue
            # Ultralytics: "./x" is relative to the list file's folder; else try the yaml's
            # path, the dataset root, then the path's tail (absolute paths from elsewhere)
            tries = [join(base, rel), join(root, rel)]
            if raw.strip().startswith("./") and list_dir != root:
                tries.insert(0, join(list_dir, rel))
            image = next((t for t in tries if self._members.find(t) is not None), "")
            if not image:
                image = join(root, self._suffix_match(rel, root))
            rel = under(base, image) or under(root, image) or image
            # darknet: Datumaro's name_from_path, the path inside obj_<subset>_data/
            darknet_name = rel.split("/", 1)[1] if "/" in rel else rel
            name = darknet_name if darknet else _subset_name(rel)
            self.entries.append(
                entry_for_image(self._members, subset, image, name, darknet=darknet)
            )

    def _suffix_match(self, rel: str, root: str) -> str:
        """A listed path that is not in the archive as written, matched by its tail.

        darknet users' lists often hold absolute paths from their machine
        (``/home/me/data/obj_train_data/x.jpg``): drop leading folders until a member matches.
        """
        parts = rel.split("/")
        for i in range(1, len(parts)):
            tail = "/".join(parts[i:])
            if self._members.find(join(root, tail)) is not None:
                return tail
        return rel

    def _unlisted(self, subset: str, folder: str, list_member: str) -> None:
        listed = {e.image for e in self.entries if e.subset == subset}
        for e in folder_entries(self._members, subset, folder, darknet=True):
            if e.image is not None and e.image not in listed:
                self.notes.warn(
                    "unlisted_image",
                    f"{e.image} is not in {list_member}; read anyway",
                    member=e.image,
                )
                self.entries.append(e)

    def _ultralytics(self, data_yaml: str, root: str) -> None:
        conf = cfg.parse_data_yaml(self._text(data_yaml), data_yaml, self._limits)
        self.names = conf.names
        self.kpt_values = conf.kpt_values
        base = root
        if conf.path and not conf.path.startswith(("/", "~")) and ":" not in conf.path:
            candidate = join(root, localize(conf.path))
            if candidate == root or next(self._members.under(candidate), None) is not None:
                base = candidate
        if not conf.subsets:
            for subset, folder in ultralytics_dirs(self._members, root).items():
                self.entries += folder_entries(self._members, subset, folder, darknet=False)
            return
        for subset, paths in conf.subsets.items():
            for p in paths:
                self._ultralytics_path(subset, p, root, base, data_yaml)

    def _ultralytics_path(self, subset: str, p: str, root: str, base: str, data_yaml: str) -> None:
        rel = localize(p)
        for folder in dict.fromkeys((join(base, rel), join(root, rel))):
            exact = self._members.find(folder)
            if exact is not None and exact.lower().endswith(".txt"):
                self._list_file(subset, exact, root, base, darknet=False)
                return
            if exact is not None and is_image_name(exact):
                name = _subset_name(exact[len(root) + 1 :] if root else exact)
                self.entries.append(
                    entry_for_image(self._members, subset, exact, name, darknet=False)
                )
                return
            if next(self._members.under(folder), None) is not None:
                self.entries += folder_entries(self._members, subset, folder, darknet=False)
                return
        raise FormatError(
            f"{subset}: {p!r} is neither a folder, a list file nor an image in the archive",
            member=data_yaml,
            key=subset,
        )

    def _loose(self, obj_names: str, root: str) -> None:
        self._names_file(obj_names)
        dirs = darknet_dirs(self._members, root)
        darknet = bool(dirs)
        if not dirs:
            dirs = ultralytics_dirs(self._members, root)
        if not dirs and any(is_image_name(n) for n in self._members.under(join(root, "Images"))):
            dirs = {"default": join(root, "Images")}
        if not dirs:
            raise FormatError(
                "obj.names found, but no obj_<subset>_data/, images/<subset>/ or Images/ folder",
                member=obj_names,
            )
        for subset, folder in dirs.items():
            self.entries += folder_entries(self._members, subset, folder, darknet=darknet)

    def _flat(self, lists: list[str]) -> None:
        # Roboflow writes one _darknet.labels per subset folder: they must agree
        first = cfg.parse_names(self._text(lists[0]), lists[0], self._limits)
        for other in lists[1:]:
            if cfg.parse_names(self._text(other), other, self._limits) != first:
                raise FormatError(
                    f"label list differs from {lists[0]}; class indices would be ambiguous",
                    member=other,
                )
        self.names = dict(enumerate(first))
        self.entries = flat_entries(self._members, set(lists), dirname(lists[0]))

    def _dedupe(self) -> None:
        seen: set[tuple[str, str]] = set()
        kept: list[Entry] = []
        for e in self.entries:
            key = (e.subset, e.name)
            if key in seen:
                self.notes.warn(
                    "duplicate_item", f"{e.name} is listed twice in {e.subset}", item=e.name
                )
                continue
            seen.add(key)
            kept.append(e)
        self.entries = kept

    # -- Reader protocol ---------------------------------------------------------------------

    def labels(self) -> Sequence[str]:
        return list(self.names.values())

    def label_map(self) -> LabelMap | None:
        lm = cfg.names_label_map(self.names)
        if lm is None and self.names:
            self.notes.warn(
                "label_ids_renumbered",
                f"class index {max(self.names)} is too large for a label id (index + 1); "
                "ids go 1..N in index order",
            )
        return lm

    def items(self) -> Iterator[Item]:
        yield from self.unit_items((0, len(self.entries)))

    def total(self) -> int:
        return len(self.entries)

    def units(
        self, *, max_items: int, max_bytes: int, portable: bool = False
    ) -> list[tuple[int, int]]:
        """Ranges of the item list, bounded by count and by the declared bytes of each item's
        image and label file."""
        size = self.source.size
        costs = (
            (size(e.image) if e.image else 0) + (size(e.label) if e.label else 0)
            for e in self.entries
        )
        return plan_ranges(costs, max_items=max_items, max_bytes=max_bytes)

    def unit_items(self, unit: object) -> Iterator[Item]:
        assert isinstance(unit, tuple)
        start, stop = unit
        for entry in self.entries[start:stop]:
            try:
                yield self._item(entry)
            except TfdropError as exc:
                raise exc.at(member=entry.label or entry.image, item=entry.name) from None

    def _image(self, entry: Entry) -> tuple[bytes | None, str, int, int]:
        if entry.image is not None:
            data = None
            if self.options.images:
                data = self._read(entry.image, "max_image_bytes")
            info = probe_member(self.source, entry.image, data)
            return data, info.format, info.width, info.height
        stem = stem_txt(entry.name)[:-4]
        size = self._meta.get(stem) or self._meta.get(entry.name)
        if size is None:
            raise FormatError(
                "the image is not in the archive and images.meta gives no size; YOLO label "
                "files carry no image size",
                hint="export the dataset with its images",
            )
        return None, format_from_name(entry.name), size[0], size[1]

    def _item(self, entry: Entry) -> Item:
        data, fmt, width, height = self._image(entry)
        if width <= 0 or height <= 0:
            raise FormatError(f"image size {width}x{height} is not positive")
        objects: list[Annotation] = []
        if entry.label is not None:
            text = cfg.decode_text(self._read(entry.label, "max_file_bytes"), entry.label)
            rows = parse_label_text(
                text,
                num_classes=max(self.names, default=-1) + 1,
                member=entry.label,
                kpt_values=self.kpt_values,
                limits=self._limits,
            )
            for row in rows:
                label = self.names.get(row.cls)
                if label is None:
                    raise FormatError(
                        f"class index {row.cls} has no name in data.yaml names",
                        member=entry.label,
                        line=row.line,
                    )
                objects.append(self._annotation(row, label, entry, width, height))
        return Item(
            name=entry.name,
            subset=entry.subset,
            width=width,
            height=height,
            image=data,
            image_format=fmt,
            objects=tuple(objects),
            image_member=entry.image if data is not None and entry.image is not None else "",
        )

    def _annotation(
        self, row: Row, label: str, entry: Entry, width: int, height: int
    ) -> Annotation:
        if row.clipped:
            self.notes.warn(
                "box_clipped",
                "box sticks out of the image; clipped to its edges",
                member=entry.label,
                item=entry.name,
                line=row.line,
            )
        if row.keypoints:
            self.notes.lose("keypoints")
        if not row.polygon:
            return Annotation(label=label, box=row.box)
        points = tuple(v * (width if i % 2 == 0 else height) for i, v in enumerate(row.polygon))
        mask = None
        if self.options.masks:
            mask = polygons_mask_png([points], width, height)
        else:
            self.notes.lose("polygon_as_box")
        return Annotation(label=label, box=row.box, shape=Shape.POLYGON, polygon=points, mask=mask)


def open_reader(source: Source, options: ReadOptions, notes: Notes) -> YoloReader:
    return YoloReader(source, options, notes)

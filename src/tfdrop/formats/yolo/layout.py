"""Where a YOLO dataset's items are: subsets, image members and label members, from names only.

Layouts recognised (the marker file decides; the shallowest marker is the dataset root, so a
zip with one wrapping folder works):

- darknet / CVAT "YOLO 1.1" (marker ``obj.data``, or ``obj.names`` beside ``obj_*_data/``):
  ``obj_<subset>_data/<name>.jpg`` with ``<name>.txt`` beside it, ``<subset>.txt`` listing
  ``data/obj_<subset>_data/<name>.jpg`` (``data/`` is darknet's working folder: stripped, as
  Datumaro's ``localize_path`` does). The list file gives the order; images in the folder that
  the list misses are still read, with a warning.
- Ultralytics (marker ``data.yaml``): ``images/<subset>/<name>.jpg`` and
  ``labels/<subset>/<name>.txt`` (Ultralytics' ``img2label_paths``: the last ``images/``
  becomes ``labels/``); subsets from the yaml's ``train``/``val``/``test`` entries (a folder,
  a ``.txt`` list of images, or a list of either), else every ``images/<subset>/`` folder.
- Datumaro's loose layouts (marker ``obj.names`` without ``obj.data``): ``images/<subset>/`` +
  ``labels/<subset>/`` as above, or a flat ``Images/`` + ``Annotations/`` (subset "default").
- flat folders (marker ``classes.txt`` as LabelImg writes it, or Roboflow "YOLO Darknet"'s
  ``<subset>/_darknet.labels``): images with ``<stem>.txt`` beside them; the subset is the
  image's folder when it is named train/valid/val/test, else "default".
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from tfdrop.formats.common.imageinfo import is_image_name

Kind = Literal["darknet", "ultralytics", "loose", "flat"]
FLAT_NAMES = ("classes.txt", "_darknet.labels", "classes.names")
FLAT_SUBSETS = frozenset({"train", "valid", "val", "test"})


@dataclass(frozen=True, slots=True)
class Entry:
    """One item: its subset and name, and the members holding its image and labels."""

    subset: str
    name: str
    image: str | None
    label: str | None


def _base(name: str) -> str:
    return name.rsplit("/", 1)[-1].lower()


def _depth(name: str) -> int:
    return name.count("/")


def find_marker(names: Sequence[str], base: str) -> str | None:
    """The shallowest member whose base name is ``base`` (case-insensitive)."""
    hits = [n for n in names if _base(n) == base]
    return min(hits, key=lambda n: (_depth(n), n)) if hits else None


def find_yaml(names: Sequence[str]) -> str | None:
    """The Ultralytics config: the shallowest ``data.yaml`` (or ``data.yml``, ``dataset.yaml``)."""
    for base in ("data.yaml", "data.yml", "dataset.yaml"):
        hit = find_marker(names, base)
        if hit is not None:
            return hit
    return None


def dirname(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def join(root: str, rel: str) -> str:
    return f"{root}/{rel}" if root else rel


def under(root: str, name: str) -> str | None:
    """``name`` relative to folder ``root`` (``""`` is the top), or None when outside it."""
    if not root:
        return name
    return name[len(root) + 1 :] if name.startswith(root + "/") else None


def stem_txt(name: str) -> str:
    dot = name.rfind(".")
    return (name[:dot] if dot > name.rfind("/") else name) + ".txt"


def localize(path: str) -> str:
    """A path from a list or config file as a relative member path.

    Strips ``./``, leading ``../`` (Roboflow writes ``../train/images``) and darknet's
    ``data/`` working-folder prefix; backslashes count as separators.
    """
    p = posixpath.normpath(path.strip().replace("\\", "/"))
    while p.startswith("../"):
        p = p[3:]
    if p.startswith("data/"):
        p = p[5:]
    return "" if p in (".", "..") else p.lstrip("/")


def label_for_image(image: str) -> str:
    """Ultralytics' rule: the last ``images/`` folder becomes ``labels/``, extension ``.txt``."""
    padded = "/" + image
    for a, b in (("/images/", "/labels/"), ("/Images/", "/Annotations/")):
        if a in padded:
            head, tail = padded.rsplit(a, 1)
            return (head + b + stem_txt(tail))[1:]
    return stem_txt(image)


class Members:
    """Name lookups over a source's member list (exact, then case-insensitive)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self._exact = set(self.names)
        self._folded: dict[str, str | None] = {}
        for n in self.names:
            key = n.casefold()
            self._folded[key] = None if key in self._folded else n

    def find(self, name: str) -> str | None:
        if name in self._exact:
            return name
        return self._folded.get(name.casefold())

    def under(self, folder: str) -> Iterator[str]:
        """Members inside ``folder`` (any depth), in sorted order."""
        prefix = folder + "/" if folder else ""
        return iter(sorted(n for n in self.names if n.startswith(prefix)))


def darknet_dirs(members: Members, root: str) -> dict[str, str]:
    """``{subset: folder}`` for every ``obj_<subset>_data/`` folder directly under ``root``."""
    out: dict[str, str] = {}
    for n in members.names:
        rel = under(root, n)
        if rel is None or "/" not in rel:
            continue
        top = rel.split("/", 1)[0]
        if top.lower().startswith("obj_") and top.lower().endswith("_data") and len(top) > 9:
            out.setdefault(top[4:-5], join(root, top))
    return out


def ultralytics_dirs(members: Members, root: str) -> dict[str, str]:
    """``{subset: folder}`` for every ``images/<subset>/`` folder directly under ``root``."""
    out: dict[str, str] = {}
    for n in members.names:
        rel = under(root, n)
        if rel is None or not is_image_name(rel):
            continue
        parts = rel.split("/")
        if len(parts) >= 3 and parts[0].lower() == "images":
            out.setdefault(parts[1], join(root, f"{parts[0]}/{parts[1]}"))
    return dict(sorted(out.items()))


def folder_entries(members: Members, subset: str, folder: str, *, darknet: bool) -> list[Entry]:
    """Every image in ``folder`` (sorted), then every label file without an image (named by
    its stem: its size must come from ``images.meta``)."""
    entries: list[Entry] = []
    claimed: set[str] = set()
    for n in members.under(folder):
        if is_image_name(n):
            label = members.find(stem_txt(n) if darknet else label_for_image(n))
            if label is not None:
                claimed.add(label)
            entries.append(Entry(subset, n[len(folder) + 1 :], n, label))
    labels_folder = folder if darknet else label_for_image(folder + "/x.jpg")[: -len("/x.txt")]
    for n in members.under(labels_folder):
        if n.lower().endswith(".txt") and n not in claimed:
            entries.append(Entry(subset, n[len(labels_folder) + 1 : -4], None, n))
    return entries


def entry_for_image(
    members: Members, subset: str, image: str, name: str, *, darknet: bool
) -> Entry:
    """An item named ``name`` whose image member is ``image`` (which may be absent); its label
    file is beside it (darknet) or in the matching ``labels/`` folder (Ultralytics)."""
    found = members.find(image)
    rules = (stem_txt, label_for_image) if darknet else (label_for_image, stem_txt)
    label = None
    for rule in rules:
        label = label or members.find(rule(found or image))
    return Entry(subset, name, found, label)


def find_flat_names(names: Sequence[str]) -> list[str]:
    """Every flat-layout label list (``classes.txt``, ``_darknet.labels``), shallowest first."""
    hits = [n for n in names if _base(n) in FLAT_NAMES]
    return sorted(hits, key=lambda n: (_depth(n), n))


def flat_entries(members: Members, skip: set[str], root: str) -> list[Entry]:
    """Every image with a ``<stem>.txt`` beside it (or none), the subset from its folder;
    a "default" item is named by its path inside ``root`` (the label list's folder)."""
    entries: list[Entry] = []
    for n in sorted(members.names):
        if not is_image_name(n):
            continue
        folder = dirname(n)
        top = folder.rsplit("/", 1)[-1]
        subset = top if top.lower() in FLAT_SUBSETS else "default"
        label = members.find(stem_txt(n))
        if label in skip:
            label = None
        name = n[len(folder) + 1 :] if subset != "default" else (under(root, n) or n)
        entries.append(Entry(subset, name, n, label))
    return entries


def has_flat_pairs(names: Sequence[str]) -> bool:
    """Whether some image has a ``.txt`` with the same stem beside it."""
    txts = {n.lower() for n in names if n.lower().endswith(".txt")}
    return any(is_image_name(n) and stem_txt(n).lower() in txts for n in names)

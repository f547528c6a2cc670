"""Where things are in a Pascal VOC tree: roots, subset lists, CVAT's ``labelmap.txt``.

A VOC drop is CVAT's "Pascal VOC 1.1" zip (``Annotations/``, ``JPEGImages/``,
``ImageSets/Main/<subset>.txt``, ``labelmap.txt`` at the top) or a VOCdevkit tree
(``VOCdevkit/VOC2007/Annotations/...``): the root is whatever precedes ``Annotations/``.
``ImageSets/Main`` also holds per-class lists (``aeroplane_train.txt``, lines ``name  1``/``-1``);
those are not subsets. ``labelmap.txt`` is Datumaro/CVAT's ``name:r,g,b:parts:actions`` list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from tfdrop.errors import FormatError

ANNOTATIONS: Final = "Annotations/"
IMAGES: Final = "JPEGImages/"
SUBSETS: Final = "ImageSets/Main/"
LABELMAP: Final = "labelmap.txt"
BACKGROUND: Final = "background"
DEFAULT_SUBSET: Final = "default"
MAX_TEXT_FILE: Final = 64 << 20
LABELMAP_HEADER: Final = "# label:color_rgb:parts:actions"

# The first "Annotations/" component splits the root from the item id (which may have folders).
_ANN = re.compile(r"^(?P<root>(?:[^/]+/)*?)annotations/(?P<id>.+)\.xml$", re.IGNORECASE)
_CLASS_FLAG = re.compile(r"^\S+\s+(-1|0|1)\s*$")


@dataclass(slots=True)
class VocRoot:
    """One VOC tree inside a source: its prefix and its annotation members.

    Only member names the source already holds are kept (no per-item index of images): a
    20,000-image drop must not cost more memory than a 2,000-image one beyond the listing.
    """

    prefix: str
    annotations: list[str] = field(default_factory=list)  # members, sorted by item id
    subset_files: list[str] = field(default_factory=list)
    labelmap: str | None = None

    def item_id(self, member: str) -> str:
        """``<prefix>Annotations/a/b.xml`` -> ``a/b``."""
        return member[len(self.prefix) + len(ANNOTATIONS) : -len(".xml")]

    def image_name(self, member: str) -> str:
        """``<prefix>JPEGImages/a/b.jpg`` -> ``a/b.jpg`` (the item's name)."""
        return member[len(self.prefix) + len(IMAGES) :]


def image_index(names: Sequence[str], prefix: str) -> dict[str, str]:
    """Casefolded item id -> ``JPEGImages`` member under ``prefix`` (first one per id wins).

    Built only when an image is not where its annotation says (``x.xml`` with ``x.png``).
    """
    out: dict[str, str] = {}
    start = (prefix + IMAGES).casefold()
    for name in names:
        if name.casefold().startswith(start):
            stem = name[len(start) :]
            dot = stem.rfind(".")
            if dot > stem.rfind("/"):
                stem = stem[:dot]
            out.setdefault(stem.casefold(), name)
    return out


def annotation_id(name: str) -> tuple[str, str] | None:
    """``(root prefix, item id)`` for a VOC annotation member, else None."""
    m = _ANN.match(name)
    if m is None:
        return None
    return m.group("root"), m.group("id")


def detect(names: Sequence[str]) -> int:
    """80 when there is an ``Annotations/*.xml`` (CVAT's root ``annotations.xml`` is not one)."""
    return 80 if any(annotation_id(n) is not None for n in names) else 0


def find_roots(names: Sequence[str]) -> list[VocRoot]:
    """Every VOC root in the source, in prefix order, with its members found."""
    roots: dict[str, VocRoot] = {}
    for name in names:
        hit = annotation_id(name)
        if hit is not None:
            roots.setdefault(hit[0], VocRoot(hit[0])).annotations.append(name)
    for root in roots.values():
        root.annotations.sort(key=root.item_id)
    folded = {p.casefold(): r for p, r in roots.items()}
    main, labelmap = SUBSETS.casefold(), LABELMAP.casefold()
    for name in names:
        low = name.casefold()
        if low.endswith(labelmap):
            owner = folded.get(low[: -len(labelmap)])
            if owner is not None:
                owner.labelmap = name
        elif low.endswith(".txt") and main in low:
            cut = low.rfind(main)
            owner = folded.get(low[:cut])
            if owner is not None and "/" not in low[cut + len(main) :]:
                owner.subset_files.append(name)
    return [roots[p] for p in sorted(roots)]


def _lines(data: bytes, member: str) -> list[str]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FormatError(f"not UTF-8 text ({exc.reason})", member=member) from None
    return text.splitlines()


def subset_name(member: str) -> str:
    """``.../ImageSets/Main/train.txt`` -> ``train``."""
    return member.rsplit("/", 1)[-1][: -len(".txt")]


def is_class_list(member: str, lines: list[str], all_subsets: set[str]) -> bool:
    """Whether a Main list is a per-class file (``<class>_<subset>.txt``), not a subset.

    It is one when its name has a ``_`` and either the part after the last ``_`` is also a
    list in the folder, or its lines read ``name  1`` / ``name -1`` as VOC's class lists do.
    """
    name = subset_name(member)
    if "_" not in name:
        return False
    if name.rsplit("_", 1)[1] in all_subsets:
        return True
    first = next((ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")), "")
    return bool(_CLASS_FLAG.match(first))


def parse_subset_list(lines: list[str]) -> list[str]:
    """Item ids of a subset list: the first token of each line (``#`` comments skipped, as
    Datumaro's own exports carry them)."""
    return [ln.split()[0] for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def read_subsets(
    files: dict[str, bytes],
) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """Item id -> subset from a root's ``ImageSets/Main`` lists, and the conflicts seen.

    VOC2007's ``trainval.txt`` is the union of ``train.txt`` and ``val.txt``: an id that is in a
    more specific list keeps that one. Any other id in two lists keeps the first list in name
    order; each such conflict is returned ``(id, kept, other)`` for the caller to warn about.
    """
    names = {subset_name(m) for m in files}
    lists: dict[str, list[str]] = {}
    for member in sorted(files):
        lines = _lines(files[member], member)
        if not is_class_list(member, lines, names):
            lists[subset_name(member)] = parse_subset_list(lines)
    order = sorted(lists, key=lambda s: (s == "trainval", s))
    out: dict[str, str] = {}
    conflicts: list[tuple[str, str, str]] = []
    for subset in order:
        for item_id in lists[subset]:
            kept = out.setdefault(item_id, subset)
            if kept != subset and not (subset == "trainval" and kept in ("train", "val")):
                conflicts.append((item_id, kept, subset))
    return out, conflicts


def parse_labelmap(data: bytes, member: str) -> list[str]:
    """Label names of a CVAT/Datumaro ``labelmap.txt`` in order, without ``background``.

    ``background`` is VOC's class 0 (TF label maps reserve id 0 for it), so it is not a
    label; an object that is really labelled ``background`` still gets an id when seen.
    """
    out: list[str] = []
    for number, line in enumerate(_lines(data, member), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name = text.split(":", 1)[0].strip()
        if not name:
            raise FormatError("label map line has no label name", member=member, line=number)
        if name != BACKGROUND and name not in out:
            out.append(name)
    return out


def voc_color(index: int) -> tuple[int, int, int]:
    """VOC's palette colour for class ``index`` (0 is background), as Datumaro generates it."""
    r = g = b = 0
    for bit in range(7, -1, -1):
        r |= (index & 1) << bit
        g |= ((index >> 1) & 1) << bit
        b |= ((index >> 2) & 1) << bit
        index >>= 3
    return r, g, b


def format_labelmap(names: Sequence[str]) -> str:
    """CVAT's ``labelmap.txt``: the header, ``background`` first, then each label in order."""
    lines = [LABELMAP_HEADER, f"{BACKGROUND}:0,0,0::"]
    for index, name in enumerate((n for n in names if n != BACKGROUND), start=1):
        r, g, b = voc_color(index)
        lines.append(f"{name}:{r},{g},{b}::")
    return "\n".join(lines) + "\n"

"""Where things are in a Pascal VOC tree: roots, subset lists, CVAT's ``labelmap.txt``.

A VOC drop is CVAT's "Pascal VOC 1.1" zip (``Annotations/``, ``JPEGImages/``,
``ImageSets/Main/<subset>.txt``, ``labelmap.txt`` at the top) or a VOCdevkit tree
(``VOCdevkit/VOC2007/Annotations/...``): the root is whatever precedes ``Annotations/``.
``ImageSets/Main`` also holds per-class lists (``aeroplane_train.txt``, lines ``name  1``/``-1``);
those are not subsets. ``labelmap.txt`` is Datumaro/CVAT's ``name:r,g,b:parts:actions`` list.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

from tfdrop.errors import FormatError
from tfdrop.limits import DEFAULT_LIMITS, exceeded

ANNOTATIONS: Final = "Annotations/"
IMAGES: Final = "JPEGImages/"
SUBSETS: Final = "ImageSets/Main/"
LABELMAP: Final = "labelmap.txt"
BACKGROUND: Final = "background"
DEFAULT_SUBSET: Final = "default"
LABELMAP_HEADER: Final = "# label:color_rgb:parts:actions"

# The first "Annotations/" component splits the root from the item id (which may have folders).
_ANN = re.compile(r"^(?P<root>(?:[^/]+/)*?)annotations/(?P<id>.+)\.xml$", re.IGNORECASE)
_CLASS_FLAG = re.compile(r"^\S+\s+(-1|0|1)\s*$")
_LABELMAP_UNSAFE = re.compile("[:\n\r\x00]")


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


@dataclass(slots=True)
class LineBudget:
    """``max_list_lines`` over every list file of an archive (subset lists, ``labelmap.txt``):
    a file's newlines are counted before it is split, and each line as it is taken."""

    cap: int
    used: int = 0

    def lines(self, data: bytes, member: str) -> Iterator[tuple[int, str]]:
        """``(line number, text)`` of each line, one at a time (never a list of them all)."""
        if self.used + data.count(b"\n") > self.cap:
            raise exceeded("max_list_lines", self.used + data.count(b"\n"), self.cap, member=member)
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise FormatError(f"not UTF-8 text ({exc.reason})", member=member) from None
        # universal newlines, as Datumaro and CVAT read these files (``for line in f``)
        for number, line in enumerate(io.StringIO(text, newline=None), start=1):
            self.used += 1
            if self.used > self.cap:
                raise exceeded("max_list_lines", self.used, self.cap, member=member, line=number)
            yield number, line.rstrip("\n")


def subset_name(member: str) -> str:
    """``.../ImageSets/Main/train.txt`` -> ``train``."""
    return member.rsplit("/", 1)[-1][: -len(".txt")]


def _listed(line: str) -> str | None:
    """The item id of a list line (its first token), None for blanks and ``#`` comments
    (Datumaro's own exports carry them)."""
    text = line.strip()
    return None if not text or text.startswith("#") else text.split()[0]


def is_class_list(member: str, first: str, all_subsets: set[str]) -> bool:
    """Whether a Main list is a per-class file (``<class>_<subset>.txt``), not a subset.

    It is one when its name has a ``_`` and either the part after the last ``_`` is also a
    list in the folder, or its first entry line (``first``) reads ``name  1`` / ``name -1`` as
    VOC's class lists do.
    """
    name = subset_name(member)
    if "_" not in name:
        return False
    if name.rsplit("_", 1)[1] in all_subsets:
        return True
    return bool(_CLASS_FLAG.match(first))


Warn = Callable[[str, str, str], None]
"""``warn(code, message, item id)``: how :func:`read_subsets` reports what it passes over."""


def read_subsets(
    members: Sequence[str],
    read: Callable[[str], bytes],
    known: Callable[[str], bool],
    budget: LineBudget,
    warn: Warn,
) -> dict[str, str]:
    """Item id -> subset from a root's ``ImageSets/Main`` lists, read one file at a time.

    VOC2007's ``trainval.txt`` is the union of ``train.txt`` and ``val.txt``: an id that is in a
    more specific list keeps that one. Any other id in two lists keeps the first list in name
    order (warned ``item_in_two_subsets``). Only ids ``known`` to the root (an annotation or an
    image) are kept, so memory follows the items, not the lines; the others are warned
    ``listed_without_files`` (Notes counts warnings, it does not keep them all).
    """
    names = {subset_name(m) for m in members}
    out: dict[str, str] = {}
    for member in sorted(members, key=lambda m: (subset_name(m) == "trainval", subset_name(m), m)):
        subset = subset_name(member)
        entries = (
            (line, i) for _, line in budget.lines(read(member), member) if (i := _listed(line))
        )
        first = next(entries, None)
        if first is None or is_class_list(member, first[0], names):
            continue
        for item_id in itertools.chain((first[1],), (i for _, i in entries)):
            if not known(item_id):
                warn(
                    "listed_without_files",
                    f"{item_id} is listed in {subset}.txt but has neither an annotation "
                    "nor an image",
                    item_id,
                )
                continue
            kept = out.setdefault(item_id, subset)
            if kept != subset and not (subset == "trainval" and kept in ("train", "val")):
                warn(
                    "item_in_two_subsets",
                    f"{item_id} is listed in {kept}.txt and {subset}.txt; kept in {kept}",
                    item_id,
                )
    return out


def parse_labelmap(
    data: bytes,
    member: str,
    budget: LineBudget | None = None,
    *,
    max_labels: int = DEFAULT_LIMITS.max_labels,
    max_text: int = DEFAULT_LIMITS.max_text_bytes,
) -> list[str]:
    """Label names of a CVAT/Datumaro ``labelmap.txt`` in order, without ``background``.

    ``background`` is VOC's class 0 (TF label maps reserve id 0 for it), so it is not a
    label; an object that is really labelled ``background`` still gets an id when seen.
    """
    out: dict[str, None] = {}
    budget = budget or LineBudget(DEFAULT_LIMITS.max_list_lines)
    for number, line in budget.lines(data, member):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name = text.split(":", 1)[0].strip()
        if not name:
            raise FormatError("label map line has no label name", member=member, line=number)
        if len(name.encode("utf-8", "surrogatepass")) > max_text:
            raise exceeded(
                "max_text_bytes", len(name.encode()), max_text, member=member, line=number
            )
        if name != BACKGROUND and name not in out:
            if len(out) >= max_labels:
                raise exceeded("max_labels", len(out) + 1, max_labels, member=member, line=number)
            out[name] = None
    return list(out)


def labelmap_problem(name: str) -> str | None:
    """Why a label cannot be written to ``labelmap.txt`` and read back the same, else None.

    The file has no escapes (Datumaro and CVAT split each line on ``:`` and strip it): a ``:``,
    a line break, a leading ``#`` (a comment), surrounding spaces or an empty name would
    change the label or shift the ids after it.
    """
    if not name:
        return "is empty"
    if _LABELMAP_UNSAFE.search(name):
        return "holds a ':', a line break or a NUL, which labelmap.txt cannot carry"
    if name != name.strip():
        return "starts or ends with white space, which labelmap.txt strips"
    if name.startswith("#"):
        return "starts with '#', which makes it a comment in labelmap.txt"
    return None


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
        problem = labelmap_problem(name)
        if problem is not None:
            raise FormatError(f"label {name!r} {problem}; rename it before converting to VOC")
        r, g, b = voc_color(index)
        lines.append(f"{name}:{r},{g},{b}::")
    return "\n".join(lines) + "\n"

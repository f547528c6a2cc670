"""Work units of a CVAT for images file: runs of its top-level elements, cut at byte offsets.

The parent streams each annotation file once through :class:`~tfdrop.formats.common.xmlsafe.
TopScanner` (no tree is built), copying its bytes into the work folder, and cuts it before an
``<image>`` every ``max_items`` images (or about ``max_bytes`` of XML and image files). A
worker parses its fragment wrapped in a fresh ``<annotations>`` root with the lines of the
file, through the reader's own streaming code, so items, warnings and errors are the ones a
single pass gives. The last unit of a file runs to its end (the real end tag and whatever
follows it, as the single pass reads them). Files with ``<track>`` (CVAT for video, whose
frames come at the end of the file) or in an encoding other than UTF-8 are not split.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from tfdrop.errors import TfdropError
from tfdrop.formats.base import plan_ranges
from tfdrop.formats.common.xmlsafe import CHUNK, TopScanner, XmlEvent, iterparse
from tfdrop.limits import Limits

if TYPE_CHECKING:
    from tfdrop.archive import Source

ROOT: Final = b"<annotations>"
END: Final = b"</annotations>"


@dataclass(frozen=True, slots=True)
class CvatUnit:
    """Bytes ``lo:hi`` (``hi`` -1: to the end) of the copy of annotation file ``file`` saved
    in ``folder``, starting on line ``line``; ``first`` for the unit holding the source's
    first ``<image>`` (the warnings given once per source are given there)."""

    folder: str
    file: int
    lo: int
    hi: int
    line: int
    first: bool


def scan_copy(stream: IO[bytes], copy: Path, member: str, limits: Limits) -> TopScanner:
    """Scan one annotation file for its top-level elements, saving its bytes to ``copy``."""
    scanner = TopScanner(member=member, limits=limits)
    with copy.open("wb") as out:
        while chunk := stream.read(CHUNK * 16):
            out.write(chunk)
            scanner.feed(chunk)
    scanner.close()
    return scanner


def cut(
    scanner: TopScanner,
    image_cost: Callable[[dict[str, str]], int],
    *,
    folder: str,
    file: int,
    max_items: int,
    max_bytes: int,
) -> list[CvatUnit]:
    """The file's units (none for a file without top-level elements)."""
    tops = scanner.tops
    if not tops:
        return []
    images = [i for i, top in enumerate(tops) if top[2] == "image"]
    ends = [top[0] for top in tops[1:]] + [scanner.end]
    costs = (ends[i] - tops[i][0] + image_cost(tops[i][3]) for i in images)
    ranges = plan_ranges(costs, max_items=max_items, max_bytes=max_bytes) or [(0, 0)]
    out: list[CvatUnit] = []
    for r, (start, _stop) in enumerate(ranges):
        first_top = 0 if r == 0 else images[start]
        last = r == len(ranges) - 1
        hi = -1 if last else tops[images[ranges[r + 1][0]]][0]
        lo, line = tops[first_top][0], tops[first_top][1]
        out.append(CvatUnit(folder, file, lo, hi, line, first=False))
    return out


def fragment(unit: CvatUnit) -> IO[bytes]:
    """A unit's bytes as a document of their own: a root, the elements, the end."""
    with (Path(unit.folder) / f"{unit.file}.xml").open("rb") as f:
        f.seek(unit.lo)
        data = f.read() if unit.hi < 0 else f.read(unit.hi - unit.lo)
    return io.BytesIO(ROOT + data + (END if unit.hi >= 0 else b""))


def unit_events(
    unit: CvatUnit, member: str, limits: Limits, long_attributes: frozenset[str]
) -> Iterator[XmlEvent]:
    """The parse events of a unit's fragment, with the file's lines."""
    return iterparse(
        fragment(unit),
        member=member,
        limits=limits,
        long_attributes=long_attributes,
        first_line=unit.line,
    )


FindImage = Callable[[str, str, str], "str | None"]
"""The reader's image lookup: (annotation member, image name, subset) -> image member."""


def plan(
    source: Source,
    subsets: Mapping[str, str],
    find_image: FindImage,
    folder: Path,
    limits: Limits,
    *,
    max_items: int,
    max_bytes: int,
) -> list[CvatUnit] | None:
    """The units of every annotation file (``subsets``: file -> its default subset), in order;
    None for a source with video tracks, in another encoding than UTF-8, or that does not
    scan (the single pass then reports it in order)."""
    out: list[CvatUnit] = []
    first = True
    for k, (member, subset) in enumerate(subsets.items()):
        try:
            with source.open(member) as stream:
                scanner = scan_copy(stream, folder / f"{k}.xml", member, limits)
        except TfdropError:
            return None
        if not scanner.native or any(top[2] == "track" for top in scanner.tops):
            return None

        def cost(attrs: dict[str, str], member: str = member, subset: str = subset) -> int:
            found = find_image(member, attrs.get("name", ""), attrs.get("subset") or subset)
            return source.size(found) if found is not None else 0

        units = cut(scanner, cost, folder=str(folder), file=k, max_items=max_items,
                    max_bytes=max_bytes)  # fmt: skip
        if first and units and any(top[2] == "image" for top in scanner.tops):
            units[0] = replace(units[0], first=True)
            first = False
        out += units
    return out

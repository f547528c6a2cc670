"""Work units of a COCO source, planned while pass 2 runs (tfdrop issue 11).

Pass 2 (:meth:`CocoReader._pass`: every annotation checked and spilled, tagged with its
image's position) has to end before the first item may leave: a bad annotation late in the
file is the first error a sequential read meets, and an annotation listed late may belong to
any image. It is mostly the C JSON decoder's time (1.0 s of 1.35 s for 200,000 annotations),
so it cannot be made much cheaper; instead :class:`UnitPlan` gives the pool its first units
*while* it runs. When the annotations come grouped by image in the images' order (what CVAT,
Datumaro and Roboflow write), the spill is one sorted run read from the file as it grows
(:meth:`~.spill.Spill.start_of`), and a range of images is complete once an annotation of a
later image has been spilled; up to ``early`` such ranges are given out (large ones: each up
to its share of the first half of the first file's images, cut at the early bytes, and given
out as soon as that many bytes of images are complete), then pass 2 of every file ends, here,
before any later unit, so nothing is taken from the pool before it ended
(:func:`tfdrop.units.settled_items` holds the first entry until :meth:`UnitPlan.settle`,
whatever the pool's window).

An early unit turns out wrong only when a later annotation belongs to one of its images
(disorder found after it was given out): :meth:`UnitPlan.settle` then says so and the caller
plans again the way it always did (:meth:`CocoReader.units`), as it does for a bad file. What
pass 2 notes goes to :attr:`UnitPlan.notes`, for the caller to put before the units' notes.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from tfdrop.errors import TfdropError
from tfdrop.formats.base import Notes, plan_ranges
from tfdrop.formats.coco.index import AnnotationFile, ImageIndex
from tfdrop.formats.coco.spill import Spill

if TYPE_CHECKING:
    from tfdrop.formats.coco.reader import CocoReader

EARLY_SHARE: Final = 2
"""The early units cover the first ``1/EARLY_SHARE`` of the first file's images. Measured on
20,000 images x 10 annotations with two workers (alone, a worker takes about 4.7 times as
long per image as pass 2; all three slow down together): with a third of the images both
workers stood idle 0.3-0.6 s before pass 2 ended, with half they were busy to its end."""
IN_ORDER: Final = 64
"""Annotations in order before a unit goes out early: one annotation far into a shuffled file
(COCO's own are ordered by id, not by image) would pass for order and cost a second pass 2;
64 in a row come in order by chance once in 64! shuffles."""
DECAY: Final = 0.7
"""After the early units, each unit holds this share of the one before, down to the usual
size: the parent copies a large unit's records while the workers run the units queued
behind it, which must last as long (with units of 64 items at once, both workers stood
idle 0.3-0.4 s behind each early unit)."""


@dataclass(frozen=True, slots=True)
class CocoUnit:
    """A work unit: image positions ``start:stop`` of instances file ``file``, whose
    annotations lie at bytes ``lo:hi`` of the grouped spill ``spill`` in ``folder`` (its
    index is ``<file>.index`` there)."""

    folder: str
    file: int
    start: int
    stop: int
    lo: int
    hi: int
    spill: str


class _FilePass:
    """Pass 2 of one instances file into ``folder``, advanced step by step."""

    def __init__(self, reader: CocoReader, k: int, f: AnnotationFile, folder: Path) -> None:
        self.reader = reader
        self.k = k
        self.f = f
        self.folder = folder
        self.index = ImageIndex(f.member, reader.options.limits)
        self.spill = Spill(None, path=folder / f"{k}.spill")
        self.steps = reader._pass(f, self.index, self.spill)
        self.indexed = False  # images done, annotations coming: saved for the workers
        self.deferred = False  # annotations before images: none can go out early
        self.ended = False
        self.pos = -1  # the position of the last annotation spilled
        self.given = 0  # positions 0:given went out in early units
        self.exact = True  # no annotation came for a position already given out

    def _step(self) -> bool:
        """One step of the pass (False at its end)."""
        try:
            pos = next(self.steps)
        except StopIteration:
            self.ended = True
            return False
        except TfdropError as exc:
            raise exc.at(member=self.f.member) from None
        if pos == -2:
            self.deferred = True
        elif pos == -1:
            self.indexed = True
            self.index.save(self.folder / f"{self.k}.index")
        else:
            if pos < self.given:
                self.exact = False
            self.pos = pos
        return True

    def start(self) -> bool:
        """Index the images (up to the first annotation); True when the annotations follow
        them (early units can come)."""
        while not self.indexed and not self.deferred and self._step():
            pass
        return self.indexed

    def reach(self, target: int, max_bytes: int) -> bool:
        """Spill until the images ``given:target`` have all their annotations, or enough of
        them to fill ``max_bytes`` (an early unit is cut there anyway: waiting for the rest
        only keeps the workers idle), if the rest stays in order, and :data:`IN_ORDER` of
        them came in order; False when that cannot be told (out of order, keypoints, the
        end)."""
        ready, cost = self.given, 0  # images given:ready are complete, ``cost`` bytes
        while self.pos < target or self.spill.count < IN_ORDER:
            if not self._step() or not self.spill.sorted or self.reader._kp_seen:
                return False
            while ready < self.pos and cost <= max_bytes:
                cost += self._cost(ready)
                ready += 1
            if cost > max_bytes and self.spill.count >= IN_ORDER:
                break
        return True

    def _cost(self, pos: int) -> int:
        """Image ``pos``'s declared bytes: its file and its spilled annotations (complete)."""
        spill = self.spill
        cost = self.reader._image_cost(self.f, self.index.name(pos))
        return cost + spill.start_of(pos + 1) - spill.start_of(pos)

    def early_unit(self, stop: int, max_bytes: int) -> CocoUnit:
        """The images ``given:stop`` (or fewer: the complete ones, up to ``max_bytes``),
        readable by a worker now."""
        stop = min(stop, self.pos)
        start, spill, cost = self.given, self.spill, 0
        end = start
        while end < stop:
            nxt = self._cost(end)
            if end > start and cost + nxt > max_bytes:
                break
            cost += nxt
            end += 1
        spill.sync()
        self.given = end
        return CocoUnit(
            str(self.folder), self.k, start, end, spill.start_of(start), spill.start_of(end),
            spill.path.name,
        )  # fmt: skip

    def rest(
        self, max_items: int, max_bytes: int, lead: int = 0, lead_bytes: int = 0
    ) -> list[CocoUnit]:
        """The rest of the pass, then units of the images not given out yet (the first of
        ``lead`` images and up to ``lead_bytes``, the next ones smaller: :data:`DECAY`)."""
        try:
            while self._step():
                pass
            n = len(self.index)
            if self.spill.sorted:
                offsets, name = self.spill.offsets(n), self.spill.path.name
            else:
                name = f"{self.k}.sorted"
                offsets = self.spill.save_sorted(self.folder / name, n)
        finally:
            self.spill.close()
        if not self.indexed:
            self.index.save(self.folder / f"{self.k}.index")
        if name != self.spill.path.name and not self.given:
            self.spill.path.unlink()  # only early units read the unsorted run
        # an image's cost: its file and its annotations' spilled bytes (a unit's decoded
        # annotations are bounded too, with or without images)
        costs = (
            self.reader._image_cost(self.f, self.index.name(pos)) + offsets[pos + 1] - offsets[pos]
            for pos in range(self.given, n)
        )
        out = []
        ranges = _ranges(costs, lead, lead_bytes, max_items=max_items, max_bytes=max_bytes)
        for start, stop in ranges:
            a, b = self.given + start, self.given + stop
            out.append(CocoUnit(str(self.folder), self.k, a, b, offsets[a], offsets[b], name))
        return out

    def close(self) -> None:
        self.steps.close()
        self.spill.close()


def _ranges(
    costs: Iterable[int], lead: int, lead_bytes: int, *, max_items: int, max_bytes: int
) -> Iterator[tuple[int, int]]:
    """:func:`~tfdrop.formats.base.plan_ranges`, but the first range may hold ``lead``
    items and ``lead_bytes``, and each next one :data:`DECAY` of the one before, down to
    ``max_items`` and ``max_bytes``."""
    if lead <= max_items:
        yield from plan_ranges(costs, max_items=max_items, max_bytes=max_bytes)
        return
    items, limit = lead, lead_bytes
    start = size = 0
    i = -1
    for i, cost in enumerate(costs):
        if i > start and (i - start >= items or size + cost > limit):
            yield start, i
            start, size = i, 0
            items = max(max_items, int(items * DECAY))
            if items == max_items:
                limit = max_bytes
        size += cost
    if i >= start:
        yield start, i + 1


class UnitPlan:
    """The units of every instances file, the first ones while pass 2 still runs.

    Iterate for the units; :meth:`settle` ends pass 2 and says whether every unit given out
    is exact. A :class:`~tfdrop.errors.TfdropError` of pass 2 is raised by the iteration (and
    kept in :attr:`failed`).
    """

    def __init__(
        self,
        reader: CocoReader,
        folder: Path,
        *,
        max_items: int,
        max_bytes: int,
        early: int = 0,
        early_bytes: int = 0,
    ) -> None:
        self.reader = reader
        self.folder = Path(tempfile.mkdtemp(prefix="plan-", dir=folder))
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.early = early
        self.early_bytes = early_bytes
        self.notes = Notes()
        self.failed: TfdropError | None = None
        self.early_given = 0
        self._first: _FilePass | None = None
        self._queue: deque[CocoUnit] = deque()
        self._gen = self._units()

    def start(self) -> int:
        """Index the first file's images (pass 2 stops at its first annotation); their count.

        Raises:
            TfdropError: the images are bad.
        """
        first = self._first = _FilePass(self.reader, 0, self.reader.files[0], self.folder)
        with self.reader.noting(self.notes):
            first.start()
        return len(first.index)

    def __iter__(self) -> Iterator[CocoUnit]:
        return self

    def close(self) -> None:
        """Give up on the plan (its files stay until the reader's folder goes)."""
        self._gen.close()
        if self._first is not None:
            self._first.close()

    def __next__(self) -> CocoUnit:
        if self._queue:
            return self._queue.popleft()
        try:
            with self.reader.noting(self.notes):
                return next(self._gen)
        except TfdropError as exc:
            self.failed = exc
            raise

    def settle(self) -> bool:
        """End pass 2 of every file (the units stay queued); True when the source is good and
        every unit given out so far holds all its images' annotations."""
        if self.failed is None:
            try:
                with self.reader.noting(self.notes):
                    self._queue.extend(self._gen)
            except TfdropError as exc:
                self.failed = exc
        return self.failed is None and self._exact

    @property
    def _exact(self) -> bool:
        return self._first is None or self._first.exact

    def _units(self) -> Generator[CocoUnit, None, None]:
        files = self.reader.files
        first = self._first
        if first is None:
            first = self._first = _FilePass(self.reader, 0, files[0], self.folder)
        passes = [first]
        try:
            yield from self._early_units(first)
            lead = 0
            if self.early_given:  # as large as the early ones, then smaller
                lead = int(first.given / self.early_given * DECAY)
            out = first.rest(self.max_items, self.max_bytes, lead, self.early_bytes)
            # every file's pass 2 before any later unit: nothing is taken from the pool
            # before the whole source is checked (the sequential errors come first)
            for k in range(1, len(files)):
                passes.append(_FilePass(self.reader, k, files[k], self.folder))
                out.extend(passes[-1].rest(self.max_items, self.max_bytes))
        finally:
            for p in passes:
                p.close()
        yield from out

    def _early_units(self, first: _FilePass) -> Iterator[CocoUnit]:
        if self.early <= 0 or not first.start():
            return
        n = len(first.index)
        for i in range(self.early):
            stop = n * (i + 1) // (EARLY_SHARE * self.early)
            if stop <= first.given:
                continue
            cap = early_cap(i, self.early, self.early_bytes)
            if not first.reach(stop, cap):
                return
            self.early_given += 1
            yield first.early_unit(stop, cap)


def early_cap(i: int, early: int, largest: int) -> int:
    """The most bytes of early unit ``i`` of ``early`` (``2 * workers - 1``): the first
    ``workers`` grow to ``largest`` (the first small, so a worker starts soon), and each later
    one tops up the worker that took the matching first one to ``largest`` (worker ``k``
    finishes its first unit ``k``-th, so it takes unit ``workers + k``), so every worker holds
    as much work until pass 2 ends. Two workers: a quarter, a whole, three quarters."""
    workers = (early + 1) // 2
    if i < workers:
        return largest // (2 * workers) if i == 0 else largest * (i + 1) // workers
    return largest - early_cap(i - workers, early, largest)


def plan_units(
    reader: CocoReader, folder: Path, max_items: int, max_bytes: int
) -> list[CocoUnit] | None:
    """Every unit, pass 2 ended (:meth:`CocoReader.units`); None for a bad file."""
    plan = UnitPlan(reader, folder, max_items=max_items, max_bytes=max_bytes)
    try:
        return list(plan)
    except TfdropError:
        return None


def plan_early(
    reader: CocoReader,
    folder: Path,
    *,
    max_items: int,
    max_bytes: int,
    early: int,
    early_bytes: int,
) -> UnitPlan | None:
    """A plan with the first file's images indexed (:meth:`CocoReader.overlapped_units`);
    None for one small file or bad images (:meth:`CocoReader.units` meets them again)."""
    plan = UnitPlan(
        reader,
        folder,
        max_items=max_items,
        max_bytes=max_bytes,
        early=early,
        early_bytes=early_bytes,
    )
    try:
        images = plan.start()
    except TfdropError:
        images = -1
    if images < 0 or (len(reader.files) == 1 and images <= max_items):
        plan.close()
        return None
    return plan

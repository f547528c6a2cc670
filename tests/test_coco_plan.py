"""COCO's pass 2 overlapping the workers (``formats/coco/plan.py``, ``units.settled_items``):
early units while the annotations are still spilled, the fall-back when an annotation comes
late for an image already given out, errors found late reported as one process reports them,
and the same bytes for one, two and three jobs."""

from __future__ import annotations

import json
import random
import zipfile
from pathlib import Path
from typing import Any

import pytest

from daemon_support import png
from tfdrop import units
from tfdrop.archive import Source, open_source
from tfdrop.convert import ConvertOptions, Report, convert
from tfdrop.errors import FormatError
from tfdrop.formats import Notes, ReadOptions
from tfdrop.formats.coco.plan import EARLY_SHARE, CocoUnit, UnitPlan, early_cap
from tfdrop.formats.coco.reader import CocoReader
from tfdrop.formats.coco.spill import Spill, iter_groups, read_groups
from tfdrop.formats.tfrecord import TfrecordWriter
from tfdrop.formats.tfrecord.spool import Span

LABELS = ("cat", "dog", "bird")
N = 300


def _annotations(n: int) -> list[dict[str, Any]]:
    """Grouped by image in the images' order (as CVAT and Datumaro write), 0-3 per image;
    every fifth image has a box reaching outside it (a ``box_clipped`` warning)."""
    anns: list[dict[str, Any]] = []
    for i in range(n):
        for k in range(i % 4):
            h = 20 if i % 5 == 0 else 8
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1 + (i + k) % 3,
                         "bbox": [1, 2, 4 + k, h], "iscrowd": 0, "area": 9})  # fmt: skip
    return anns


def _zip(
    path: Path,
    anns: list[dict[str, Any]],
    *,
    n: int = N,
    unsized: int = -1,
    missing: int = -1,
    val: bool = False,
) -> Path:
    """``unsized``: that image has no width/height; ``missing``: its file is not there."""
    images: list[dict[str, Any]] = [
        {"id": i + 1, "file_name": f"{i:04d}.png", "width": 16, "height": 16} for i in range(n)
    ]
    if 0 <= unsized < n:
        del images[unsized]["width"], images[unsized]["height"]
    cats = [{"id": i + 1, "name": name} for i, name in enumerate(LABELS)]
    doc = {"images": images, "annotations": anns, "categories": cats}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/instances_train.json", json.dumps(doc))
        if val:
            small = [a for a in anns if a["image_id"] <= 40]
            zf.writestr("annotations/instances_val.json", json.dumps(
                doc | {"images": images[:40], "annotations": small}))  # fmt: skip
        for i in range(n):
            if i != missing:
                zf.writestr(f"images/train/{i:04d}.png", png(i))
                if val and i < 40:
                    zf.writestr(f"images/val/{i:04d}.png", png(i))
    return path


def _records(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _same(tmp_path: Path, src: Path, jobs: tuple[int, ...] = (1, 2, 3)) -> Report:
    """Convert with each number of jobs; archives, counts and warnings must all be equal."""
    reports = [convert(src, tmp_path / f"j{j}.zip", ConvertOptions(jobs=j)) for j in jobs]
    first = _records(tmp_path / f"j{jobs[0]}.zip")
    for j, report in zip(jobs[1:], reports[1:], strict=True):
        assert _records(tmp_path / f"j{j}.zip") == first, j
        for field in ("items", "objects", "labels", "lossy", "warnings", "warning_counts"):
            assert getattr(report, field) == getattr(reports[0], field), (j, field)
    return reports[0]


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """(early units given out, what settle said) of every plan a conversion settled."""
    out: list[tuple[int, bool]] = []
    settle = UnitPlan.settle

    def spied(self: UnitPlan) -> bool:
        ok = settle(self)
        out.append((self.early_given, ok))
        return ok

    monkeypatch.setattr(UnitPlan, "settle", spied)
    return out


def _plan(reader: CocoReader) -> UnitPlan:
    plan = reader.overlapped_units(max_items=64, max_bytes=1 << 30, early=3, early_bytes=1 << 40)
    assert plan is not None
    return plan


def _items(reader: CocoReader, plan_units: list[CocoUnit]) -> list[Any]:
    return [(it.name, it.objects) for u in plan_units for it in reader.unit_items(u)]


def test_sorted_annotations_give_units_before_pass_2_ends_and_they_hold_every_item(
    tmp_path: Path,
) -> None:
    src = _zip(tmp_path / "in.zip", _annotations(N))
    with open_source(src) as source:
        plain = [(it.name, it.objects) for it in
                 CocoReader(source, ReadOptions(images=False), Notes()).items()]  # fmt: skip
        reader = CocoReader(source, ReadOptions(images=False), Notes())
        plan = _plan(reader)
        worker = CocoReader(source, ReadOptions(images=False), Notes())  # as a worker opens it
        first = next(plan)
        assert plan._first is not None
        assert not plan._first.ended  # pass 2 still runs
        assert _items(worker, [first]) == plain[: first.stop]  # readable already
        rest = list(plan)
        assert plan.early_given == 3
        assert plan.settle()
        assert (first.start, first.stop) == (0, N // (EARLY_SHARE * 3))
        assert _items(worker, [first, *rest]) == plain
        reader.close()


def test_an_early_unit_goes_out_once_its_bytes_are_complete_not_at_its_share(
    tmp_path: Path,
) -> None:
    """An early unit is cut at ``early_bytes``: it goes out as soon as that many bytes of
    complete images are spilled, not when pass 2 reaches its share of the file (the workers
    stood idle meanwhile: COCO 20k's first unit of 64 MB waited for a sixth of pass 2)."""
    src = _zip(tmp_path / "in.zip", _annotations(N))
    with open_source(src) as source:
        plain = [(it.name, it.objects) for it in
                 CocoReader(source, ReadOptions(images=False), Notes()).items()]  # fmt: skip
        reader = CocoReader(source, ReadOptions(images=False), Notes())
        plan = reader.overlapped_units(max_items=64, max_bytes=1 << 30, early=1, early_bytes=2000)
        assert plan is not None
        first = next(plan)
        assert plan._first is not None
        assert plan._first.pos < N // EARLY_SHARE  # before pass 2 reached the unit's share
        assert 0 < first.stop <= plan._first.pos  # complete images only
        worker = CocoReader(source, ReadOptions(images=False), Notes())
        assert _items(worker, [first]) == plain[: first.stop]
        rest = list(plan)
        assert plan.settle()
        assert _items(worker, [first, *rest]) == plain
        reader.close()


@pytest.mark.parametrize("workers", [2, 3, 4, 8])
def test_early_units_give_every_worker_as_much_work_and_the_first_unit_is_small(
    workers: int,
) -> None:
    """Worker k takes early unit k, then unit workers + k (the smaller first units end
    first): each holds ``largest`` bytes until pass 2 ends (with three units of one size, one
    of two workers stood idle 0.2-0.5 s before it ended)."""
    early, largest = 2 * workers - 1, 96 << 20
    caps = [early_cap(i, early, largest) for i in range(early)]
    loads = [caps[k] + (caps[workers + k] if workers + k < early else 0) for k in range(workers)]
    assert all(abs(load - largest) <= 1 for load in loads), loads
    assert caps[0] == min(caps[:workers])
    assert caps[0] <= largest // 2
    assert all(0 < c <= largest for c in caps)


def test_an_annotation_for_an_image_already_given_out_fails_the_plan(
    tmp_path: Path, settled: list[tuple[int, bool]]
) -> None:
    anns = _annotations(N)
    anns.append(anns[0] | {"id": len(anns) + 1, "bbox": [3, 3, 2, 2]})  # image 1's, at the end
    src = _zip(tmp_path / "in.zip", anns)
    with open_source(src) as source:
        reader = CocoReader(source, ReadOptions(images=False), Notes())
        plan = _plan(reader)
        list(plan)
        assert plan.early_given > 0
        assert not plan.settle()
        reader.close()
    settled.clear()
    one = _same(tmp_path, src)
    assert one.objects == len(anns)  # the late annotation is in its item
    assert settled == [(3, False), (5, False)]  # jobs 2 and 3 planned again


def test_shuffled_annotations_give_no_early_unit_and_the_same_archive(tmp_path: Path) -> None:
    anns = _annotations(N)
    random.Random(3).shuffle(anns)
    src = _zip(tmp_path / "in.zip", anns, val=True)
    with open_source(src) as source:
        reader = CocoReader(source, ReadOptions(images=False), Notes())
        plan = _plan(reader)
        assert len(list(plan)) > 1
        assert plan.early_given == 0
        assert plan.settle()
        reader.close()
    assert _same(tmp_path, src).items == N + 40


def test_one_two_and_three_jobs_write_the_same_bytes_with_early_units(
    tmp_path: Path, settled: list[tuple[int, bool]]
) -> None:
    src = _zip(tmp_path / "in.zip", _annotations(N), val=True, missing=7)
    one = _same(tmp_path, src)
    assert settled == [(3, True), (5, True)]  # window - 1 early units: 2 * jobs - 1
    assert one.items == N + 40
    assert one.warning_counts["box_clipped"] > 0
    assert one.warning_counts["missing_image"] == 2  # in train and in val


def test_a_bad_annotation_at_the_end_is_the_error_of_one_process_over_an_item_error(
    tmp_path: Path, settled: list[tuple[int, bool]]
) -> None:
    anns = _annotations(N)
    anns.append(anns[-1] | {"id": len(anns) + 1, "category_id": "x"})
    # image 0 has no size and no file: an error of the first early unit, in a worker
    src = _zip(tmp_path / "in.zip", anns, unsized=0, missing=0)
    errors = []
    for jobs in (1, 2, 3):
        with pytest.raises(FormatError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(info.value.to_dict())
    assert errors[0]["key"] == f"annotations[{len(anns) - 1}].category_id"
    assert errors[1] == errors[0] == errors[2]
    assert settled == [(3, False), (5, False)]
    assert not list(tmp_path.glob("out*.zip"))


def test_an_error_in_an_early_unit_is_the_error_of_one_process(
    tmp_path: Path, settled: list[tuple[int, bool]]
) -> None:
    src = _zip(tmp_path / "in.zip", _annotations(N), unsized=120, missing=120)
    errors = []
    for jobs in (1, 2):
        with pytest.raises(FormatError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(info.value.to_dict())
    assert errors[0]["item"] == "0120.png"
    assert errors[1] == errors[0]
    assert settled == [(3, True)]  # the worker's error, raised once pass 2 passed


def test_an_unknown_image_late_in_the_file_is_the_error_of_one_process(tmp_path: Path) -> None:
    anns = _annotations(N)
    anns.append(anns[-1] | {"id": len(anns) + 1, "image_id": 10_000})
    src = _zip(tmp_path / "in.zip", anns)
    errors = []
    for jobs in (1, 2):
        with pytest.raises(FormatError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(info.value.to_dict())
    assert "10000" in errors[0]["message"]
    assert errors[1] == errors[0]


def test_large_units_spool_their_records_in_runs_with_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _zip(tmp_path / "in.zip", _annotations(N))
    convert(src, tmp_path / "one.zip", ConvertOptions(jobs=1))
    spans: list[int] = []
    write_span = TfrecordWriter.write_span

    def counted(self: TfrecordWriter, span: Span, source: Source | None = None) -> None:
        spans.append(span.records)
        write_span(self, span, source)

    monkeypatch.setattr(TfrecordWriter, "write_span", counted)
    convert(src, tmp_path / "two.zip", ConvertOptions(jobs=2))
    whole = len(spans)
    spans.clear()
    monkeypatch.setattr(units, "UNIT_BYTES", 4000)  # the forked workers see it too
    convert(src, tmp_path / "three.zip", ConvertOptions(jobs=2))
    assert len(spans) > 2 * whole  # runs cut at 4,000 bytes
    assert sum(spans) == N
    assert _records(tmp_path / "one.zip") == _records(tmp_path / "two.zip")
    assert _records(tmp_path / "one.zip") == _records(tmp_path / "three.zip")


def test_a_sorted_spill_is_read_as_it_grows_and_saved_without_a_copy(tmp_path: Path) -> None:
    spill = Spill(None, path=tmp_path / "a.spill", sorted_flush=40)
    order = [0, 0, 2, 2, 2, 3, 5, 5, 6]
    for k, pos in enumerate(order[:5]):
        spill.add(pos, (k, "x" * k))
    assert spill.sorted
    spill.sync()
    lo, hi = spill.start_of(0), spill.start_of(2)  # positions 0 and 1 are complete
    assert dict(iter_groups(spill.path, lo, hi)) == {0: [(0, ""), (1, "x")]}
    for k, pos in enumerate(order[5:], start=5):
        spill.add(pos, (k, "x" * k))
    offsets = spill.offsets(8)
    spill.close()
    assert spill.path.exists()  # the caller's file
    grouped = read_groups(spill.path, offsets[0], offsets[8])
    assert grouped == {p: [(k, "x" * k) for k, q in enumerate(order) if q == p] for p in grouped}
    assert offsets[4] == offsets[5]  # no records there
    assert offsets[7] == offsets[8]
    for chunk in (1, 7, 1 << 20):
        assert dict(iter_groups(spill.path, offsets[2], offsets[5], chunk=chunk)) == {
            p: grouped[p] for p in (2, 3)
        }


def test_a_spill_that_goes_out_of_order_says_so(tmp_path: Path) -> None:
    spill = Spill(tmp_path)
    spill.add(3, (0,))
    spill.add(1, (1,))
    assert not spill.sorted
    spill.close()


def test_pass_2_warnings_go_to_the_plan_and_keypoints_stop_the_early_units(
    tmp_path: Path,
) -> None:
    anns = _annotations(N)
    for a in anns:
        if a["image_id"] > 80:  # within the second early unit's images
            a |= {"keypoints": [2, 2, 2, 3, 3, 0], "num_keypoints": 2}  # one is labelled
    src = _zip(tmp_path / "in.zip", anns)
    with open_source(src) as source:
        notes = Notes()
        reader = CocoReader(source, ReadOptions(images=False), notes)
        plan = _plan(reader)
        list(plan)
        assert plan.settle()
        assert plan.early_given == 1  # images 0-49; the next one would hold keypoints
        assert plan.notes.warning_counts["num_keypoints_mismatch"] > 0
        assert not notes.warning_counts  # put before the units' notes by settled_items
        reader.close()


def test_annotations_before_images_give_no_early_unit_and_the_same_archive(
    tmp_path: Path, settled: list[tuple[int, bool]]
) -> None:
    anns = _annotations(N)
    src = _zip(tmp_path / "in.zip", anns, val=True)
    with zipfile.ZipFile(src) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    doc = json.loads(files["annotations/instances_train.json"])
    files["annotations/instances_train.json"] = json.dumps(
        {"annotations": doc["annotations"], "categories": doc["categories"],
         "images": doc["images"]}).encode()  # fmt: skip
    moved = tmp_path / "moved.zip"
    with zipfile.ZipFile(moved, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    assert _same(tmp_path, moved, (1, 2)).items == N + 40
    assert settled == [(0, True)]


def test_one_small_file_is_not_planned_early(tmp_path: Path) -> None:
    src = _zip(tmp_path / "in.zip", _annotations(60), n=60)
    with open_source(src) as source:
        reader = CocoReader(source, ReadOptions(images=False), Notes())
        early = reader.overlapped_units(
            max_items=64, max_bytes=1 << 30, early=3, early_bytes=1 << 40
        )
        assert early is None
        assert reader.units(max_items=64, max_bytes=1 << 30) is not None
        reader.close()


_GOOD_KP = [2, 2, 2, 4, 4, 2, 6, 6, 1]
_BAD_KP = {
    "a count other than the category's": [2, 2, 2, 4, 4, 2],
    "a visibility of 5": [2, 2, 5, 4, 4, 2, 6, 6, 1],
    "an infinite coordinate": [2, 2, 2, 1e999, 4, 2, 6, 6, 1],
    "a string": [2, "x", 2, 4, 4, 2, 6, 6, 1],
    "4 values": [1, 2, 3, 4],
}


@pytest.mark.parametrize("where", [3, N - 40])
@pytest.mark.parametrize("fault", list(_BAD_KP))
def test_a_bad_keypoint_is_the_same_error_for_every_number_of_jobs(
    tmp_path: Path, fault: str, where: int
) -> None:
    """A keypoint fault found in pass 2 (not a list of numbers, 3 a keypoint) or by the
    reader of its item (a worker's, with two jobs or more) names the same member, item, key
    and problem, word for word (an outside attack once saw the wording differ by --jobs)."""
    anns = [
        {"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [1, 1, 8, 8], "area": 64,
         "iscrowd": 0, "keypoints": _GOOD_KP, "num_keypoints": 3}
        for i in range(N)
    ]  # fmt: skip
    anns[where]["keypoints"] = _BAD_KP[fault]
    doc = {
        "images": [{"id": i + 1, "file_name": f"{i:04d}.png", "width": 16, "height": 16}
                   for i in range(N)],
        "annotations": anns,
        "categories": [{"id": 1, "name": "cat", "keypoints": ["a", "b", "c"],
                        "skeleton": [[1, 2], [2, 3]]}],
    }  # fmt: skip
    src = tmp_path / "in.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("annotations/instances_train.json", json.dumps(doc))
        for i in range(N):
            zf.writestr(f"images/train/{i:04d}.png", png(i))
    errors = []
    for jobs in (1, 2, 3):
        with pytest.raises(FormatError) as info:
            convert(src, tmp_path / f"out{jobs}.zip", ConvertOptions(jobs=jobs))
        errors.append(str(info.value))
    assert f"annotations[{where}].keypoints" in errors[0]
    assert errors[1] == errors[0]
    assert errors[2] == errors[0]
    assert not list(tmp_path.glob("out*.zip"))

"""Torture run: drops across several pipelines while the daemon is SIGKILLed and restarted.

One command (from the repo root)::

    .venv/bin/python -m tests.stress.torture --drops 500 --kills 100

A dropper thread writes ``--drops`` inputs (most good, some broken, a few large so that kills
land mid-conversion) into the drop folders of three pipelines (TFRecord -> TFRecord, -> VOC,
-> COCO), in bursts, each by an atomic rename as a careful uploader would, and some by a slow
in-place copy as a careless one would. Meanwhile the daemon is killed with SIGKILL at random
moments (during start-up, while idle, right after a conversion starts or a publish) ``--kills``
times and restarted each time. At the end one last daemon drains the queue and stops with
SIGTERM, and the folders are checked against the invariants of SPEC.md "The daemon":

- every input is in ``done/`` (good) or ``failed/`` (broken, with an error file) exactly once;
  none is lost, none is left in the drop or work folders;
- every good input has exactly one published archive (plus its two sidecars) that reads back
  with the item count of the input, and the report names the input's SHA-256;
- no temp, hidden or numbered duplicate file is visible in any output folder;
- the ledger agrees with the folders: one ``published`` entry per good input naming its
  archive, a name marker per published stem, no entry for a failed input, no temp file.

``--instances 2`` runs two daemons on the same folders at once (as two hosts on one share
would: claims, slot locks, adoption of a dead instance's work, the shared ledger) and each
kill hits one of them. Prints a JSON summary; exits 1 when an invariant is broken (the summary
lists each breach).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
if str(_TESTS) not in sys.path:  # run as ``python -m tests.stress.torture``
    sys.path.insert(0, str(_TESTS))

from daemon_support import Daemon, tfrecord_zip, write_config  # noqa: E402
from tfdrop.convert import ConvertOptions, convert  # noqa: E402
from tfdrop.formats import FormatName, SourceFormat  # noqa: E402

# name, source format, target format
PIPELINES: tuple[tuple[str, SourceFormat, FormatName], ...] = (
    ("tf", "tfrecord", "tfrecord"),
    ("voc", "tfrecord", "voc"),
    ("coco", "auto", "coco"),
)
STATE = ".tfdrop"


@dataclass(frozen=True, slots=True)
class Drop:
    pipeline: str
    name: str
    data: bytes
    items: int  # items a good drop holds; -1 for a broken one

    @property
    def good(self) -> bool:
        return self.items >= 0


@dataclass(slots=True)
class Result:
    drops: int = 0
    good: int = 0
    bad: int = 0
    kills: int = 0
    kills_at: dict[str, int] = field(default_factory=dict)
    restarts: int = 0
    published: int = 0
    failed: int = 0
    lost: int = 0
    duplicates: int = 0
    unexpected_exits: int = 0
    elapsed_s: float = 0.0
    breaches: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaches


def make_drops(count: int, rng: random.Random) -> list[Drop]:
    """Unique inputs: ~85 % good (1-6 items, 1 in 25 large), ~15 % broken in two ways."""
    drops = []
    for i in range(count):
        pipeline = PIPELINES[i % len(PIPELINES)][0]
        name = f"d{i:05d}.zip"
        roll = rng.random()
        if roll < 0.08:  # cut short: no end record, taken once stale, fails as a bad zip
            data = tfrecord_zip(2, tag=f"t{i}")
            drops.append(Drop(pipeline, name, data[: len(data) // 2], -1))
        elif roll < 0.15:  # a flipped byte inside a stored member: the zip CRC catches it
            flipped = bytearray(tfrecord_zip(2, tag=f"c{i}"))
            flipped[len(flipped) // 3] ^= 0xFF
            drops.append(Drop(pipeline, name, bytes(flipped), -1))
        else:
            items = 300 if rng.random() < 0.04 else rng.randint(1, 6)
            drops.append(Drop(pipeline, name, tfrecord_zip(items, tag=f"g{i}"), items))
    return drops


def _put(drop: Drop, folder: Path, rng: random.Random) -> None:
    dst = folder / drop.name
    if rng.random() < 0.2:  # in place, in pieces: the settle logic must wait for the end
        with dst.open("wb") as f:
            step = max(1, len(drop.data) // 3)
            for i in range(0, len(drop.data), step):
                f.write(drop.data[i : i + step])
                f.flush()
                time.sleep(0.02)
        return
    tmp = folder / f".{drop.name}.part"
    tmp.write_bytes(drop.data)
    os.rename(tmp, dst)


def _dropper(
    drops: list[Drop], root: Path, seconds: float, seed: int, done: threading.Event
) -> None:
    """Drop everything over about ``seconds``, in bursts of 1-20."""
    rng = random.Random(seed)
    i = 0
    bursts = max(1, len(drops) // 10)
    pause = seconds / bursts
    while i < len(drops):
        n = rng.randint(1, 20)
        for drop in drops[i : i + n]:
            _put(drop, root / drop.pipeline / "in", rng)
        i += n
        time.sleep(rng.uniform(0, 2 * pause))
    done.set()


def _config(root: Path, max_jobs: int) -> Path:
    pipelines = [
        {"name": n, "drop": f"{n}/in", "output": f"{n}/out", "from": src, "to": dst}
        for n, src, dst in PIPELINES
    ]
    return write_config(root / "tfdrop.toml", pipelines, max_jobs=max_jobs, log_level="info")


def _event_count(daemon: Daemon, names: tuple[str, ...]) -> int:
    return sum(1 for e in daemon.events() if e.get("event") in names)


def _kill_somewhere(daemon: Daemon, rng: random.Random, gap: float) -> str:
    """Wait for a random kind of moment, then SIGKILL; the moment's name."""
    moment = rng.choice(("startup", "ready", "convert", "publish", "idle"))
    deadline = time.monotonic() + max(gap, 0.5) * 4
    if moment != "startup":
        targets = {
            "ready": ("daemon_ready",),
            "convert": ("convert_started",),
            "publish": ("archive_published",),
            "idle": ("daemon_ready",),
        }[moment]
        before = 0 if moment in ("ready", "idle") else _event_count(daemon, targets)
        while time.monotonic() < deadline and daemon.proc.poll() is None:
            if _event_count(daemon, targets) > before:
                break
            time.sleep(0.02)
        else:
            moment += "_timeout"
    time.sleep(rng.uniform(0, gap if moment.startswith("idle") else min(gap, 0.3)))
    daemon.kill()
    return moment


def _drained(root: Path, drops: list[Drop]) -> bool:
    for name, _, _ in PIPELINES:
        drop = root / name / "in"
        waiting = [p for p in drop.iterdir() if p.is_file()]
        routed = len([p for p in (drop / "done").iterdir()]) if (drop / "done").exists() else 0
        routed += len(
            [
                p
                for p in (drop / "failed").iterdir()
                if not p.name.endswith(".error.json") and not p.name.startswith(".")
            ]
            if (drop / "failed").exists()
            else []
        )
        jobs = [p for p in (drop / STATE / "work").glob("*/*")]
        expected = sum(1 for d in drops if d.pipeline == name)
        if waiting or jobs or routed < expected:
            return False
    return True


def _check(root: Path, drops: list[Drop], result: Result) -> None:
    br = result.breaches
    for name, _, target in PIPELINES:
        mine = [d for d in drops if d.pipeline == name]
        drop_dir, out = root / name / "in", root / name / "out"
        done = sorted(p.name for p in (drop_dir / "done").iterdir())
        failed_dir = drop_dir / "failed"
        failed_all = sorted(p.name for p in failed_dir.iterdir()) if failed_dir.exists() else []
        failed = [n for n in failed_all if not n.endswith(".error.json")]
        good = {d.name: d for d in mine if d.good}
        bad = {d.name for d in mine if not d.good}
        for n in done:
            if n not in good:
                br.append(f"{name}: done/{n} is not a good input (duplicate or misrouted)")
        for n in failed:
            if n not in bad:
                br.append(f"{name}: failed/{n} is not a broken input")
        for d in mine:
            where = (d.name in done) + (d.name in failed)
            if where == 0:
                result.lost += 1
                br.append(f"{name}: {d.name} lost (neither in done/ nor in failed/)")
            elif (d.name in done) != d.good:
                br.append(f"{name}: {d.name} routed to the wrong folder")
        result.duplicates += max(0, len(done) + len(failed) - len(set(done) | set(failed)))
        result.duplicates += len([n for n in done + failed if n not in good and n not in bad])
        _check_error_files(name, failed_dir, failed, br)
        leftover = [p.name for p in drop_dir.iterdir() if p.name not in ("done", "failed", STATE)]
        if leftover:
            br.append(f"{name}: left in the drop folder: {leftover}")
        jobs = [str(p) for p in (drop_dir / STATE / "work").glob("*/*")]
        if jobs:
            br.append(f"{name}: job folders left: {jobs}")
        _check_outputs(name, target, out, good, result)
        _check_ledger(name, drop_dir / STATE / "ledger", out, good, result)


def _check_error_files(name: str, failed_dir: Path, failed: list[str], br: list[str]) -> None:
    """Every routed input has its error file, naming its kind and the archive."""
    for n in failed:
        err = failed_dir / f"{n}.error.json"
        if not err.exists():
            br.append(f"{name}: failed/{n} has no error file")
            continue
        doc = json.loads(err.read_text(encoding="utf-8"))
        if not doc.get("kind") or doc.get("archive") != n:
            br.append(f"{name}: {err.name} does not name its kind and archive: {doc}")


def _check_outputs(
    name: str, target: FormatName, out: Path, good: dict[str, Drop], result: Result
) -> None:
    br = result.breaches
    names = sorted(p.name for p in out.iterdir())
    expected = sorted(
        f"{Path(n).stem}{suffix}"
        for n in good
        for suffix in (".zip", ".label_map.pbtxt", ".report.json")
    )
    extra = sorted(set(names) - set(expected))
    missing = sorted(set(expected) - set(names))
    if extra:
        br.append(f"{name}: unexpected files in the output folder: {extra[:20]}")
        result.duplicates += len([n for n in extra if n.endswith(".zip")])
    if missing:
        br.append(f"{name}: missing outputs: {missing[:20]}")
    with tempfile.TemporaryDirectory() as tmp:
        for n, d in sorted(good.items()):
            archive = out / f"{Path(n).stem}.zip"
            if not archive.exists():
                continue
            result.published += 1
            report = convert(
                archive,
                Path(tmp) / "back.zip",
                ConvertOptions(source_format=target, target_format="tfrecord", images=False),
            )
            if report.items != d.items:
                br.append(f"{name}: {archive.name} reads back {report.items} items, not {d.items}")
            doc = json.loads((out / f"{Path(n).stem}.report.json").read_text(encoding="utf-8"))
            if doc["input"]["sha256"] != hashlib.sha256(d.data).hexdigest():
                br.append(f"{name}: {archive.name} report names other input bytes")


def _check_ledger(
    name: str, ledger: Path, out: Path, good: dict[str, Drop], result: Result
) -> None:
    br = result.breaches
    want = {hashlib.sha256(d.data).hexdigest(): f"{Path(n).stem}.zip" for n, d in good.items()}
    seen = {}
    for p in (ledger / "sha256").iterdir():
        if not p.name.endswith(".json") or p.name.startswith("."):
            br.append(f"{name}: stray file in the ledger: {p.name}")
            continue
        doc = json.loads(p.read_text(encoding="utf-8"))
        seen[p.name.removesuffix(".json")] = doc
    for digest, archive in want.items():
        doc = seen.pop(digest, None)
        if doc is None:
            br.append(f"{name}: no ledger entry for {archive}")
        elif doc["state"] != "published" or doc["output"] != archive:
            br.append(f"{name}: ledger entry for {archive} says {doc['state']} {doc['output']}")
    for digest, doc in seen.items():
        br.append(f"{name}: ledger entry {digest[:12]} matches no good input: {doc}")
    stems = sorted(p.name for p in (ledger / "names").iterdir())
    if stems != sorted(a.removesuffix(".zip") for a in want.values()):
        br.append(f"{name}: ledger name markers disagree with the outputs")
    del out


def run(
    root: Path,
    *,
    drops: int,
    kills: int,
    seed: int = 1,
    max_jobs: int = 2,
    seconds: float = 0,
    instances: int = 1,
) -> Result:
    """One torture run in ``root`` (must be empty or absent); the result with any breaches.

    With ``instances`` > 1 that many daemons serve the same folders at once (as several hosts
    on one share would) and each kill hits one of them at random.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    config = _config(root, max_jobs)
    for name, _, _ in PIPELINES:
        (root / name / "in").mkdir(parents=True)
    all_drops = make_drops(drops, rng)
    result = Result(
        drops=drops, good=sum(d.good for d in all_drops), bad=sum(not d.good for d in all_drops)
    )
    # spread the drops over the kills: a restart costs about a second of start-up
    seconds = seconds or max(5.0, kills * 1.5)
    gap = seconds / max(kills, 1)
    started = time.monotonic()
    dropped = threading.Event()
    dropper = threading.Thread(
        target=_dropper, args=(all_drops, root, seconds, seed, dropped), daemon=True
    )
    dropper.start()
    logs = root / "logs"
    logs.mkdir()
    others: list[Daemon] = []  # the instances not being killed right now
    for k in range(kills):
        while len(others) < instances - 1:
            others.append(Daemon(config, logs / f"run-{k:04d}-other{len(others)}.log"))
            result.restarts += 1
        daemon = Daemon(config, logs / f"run-{k:04d}.log")
        result.restarts += 1
        if others and rng.random() < 0.5:  # kill one of the others instead, this one lives on
            victim = others.pop(rng.randrange(len(others)))
            others.append(daemon)
            daemon = victim
        moment = _kill_somewhere(daemon, rng, gap)
        if daemon.proc.returncode != -signal.SIGKILL:
            result.unexpected_exits += 1
            result.breaches.append(f"run {k}: daemon exited by itself ({daemon.proc.returncode})")
        else:
            result.kills += 1
            key = moment.removesuffix("_timeout")
            result.kills_at[key] = result.kills_at.get(key, 0) + 1
    dropper.join()
    last = [*others, Daemon(config, logs / "final.log")]
    result.restarts += 1
    for d in last:
        d.wait_event("daemon_ready", timeout=60)  # a SIGTERM before that is the default action
    deadline = time.monotonic() + 120 + drops * 0.5
    while not _drained(root, all_drops):
        if any(d.proc.poll() is not None for d in last):
            result.breaches.append("a final daemon exited by itself")
            break
        if time.monotonic() > deadline:
            result.breaches.append("not drained before the deadline")
            break
        time.sleep(0.2)
    for d in last:
        code = d.stop(60)
        if code != 0:
            result.breaches.append(f"a final daemon stopped with exit code {code}")
    result.elapsed_s = round(time.monotonic() - started, 1)
    _check(root, all_drops, result)
    result.failed = sum(
        1
        for name, _, _ in PIPELINES
        if (root / name / "in" / "failed").exists()
        for p in (root / name / "in" / "failed").iterdir()
        if not p.name.endswith(".error.json")
    )
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drops", type=int, default=60)
    ap.add_argument("--kills", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--max-jobs", type=int, default=2)
    ap.add_argument("--instances", type=int, default=1, help="daemons serving at once")
    ap.add_argument("--seconds", type=float, default=0, help="drop period (default: kills*1.5)")
    ap.add_argument("--root", type=Path, help="work here (default: a new temp folder, kept)")
    args = ap.parse_args(argv)
    root = args.root or Path(tempfile.mkdtemp(prefix="tfdrop-torture-"))
    result = run(
        root,
        drops=args.drops,
        kills=args.kills,
        seed=args.seed,
        max_jobs=args.max_jobs,
        seconds=args.seconds,
        instances=args.instances,
    )
    print(json.dumps({"root": str(root), **asdict(result), "ok": result.ok}, indent=2))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())

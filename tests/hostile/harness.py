"""The adversarial suite's harness: run the real CLI on a hostile input in a
subprocess under a hard memory limit (RLIMIT_AS) and a time limit, and check the promise.

A case builds its input inside the test's temp folder (no binary fixtures) and calls
:func:`refused` (the input must be rejected) or :func:`accepted` (the input is strange but
valid and must convert). Both assert what SPEC.md "Bad input" promises: no traceback, never
"bug" for bad data, the input unchanged (hashed before and after), nothing written outside the
temp folder, and, for a refusal, exit 1 with a message that names the input.
"""

from __future__ import annotations

import hashlib
import io
import os
import resource
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

MiB = 1 << 20
GiB = 1 << 30
MEMORY_LIMIT = 1 * GiB
"""Address-space cap of each CLI run. The promise is "a few hundred MB" of RSS; RLIMIT_AS also
counts mapped-but-untouched memory, so it sits above that with room for the interpreter."""
TIME_LIMIT = 120.0
"""Wall seconds before a run is killed and the case fails as a hang (not a timing assertion:
nothing here is fast or slow, only finished or not)."""


@dataclass(frozen=True, slots=True)
class Run:
    """What one CLI run did."""

    returncode: int
    stdout: str
    stderr: str
    peak_rss: int  # bytes (ru_maxrss of this child alone, via wait4)
    timed_out: bool


def _limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_cli(
    args: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path,
    memory: int = MEMORY_LIMIT,
    timeout: float = TIME_LIMIT,
    env: dict[str, str] | None = None,
) -> Run:
    """``python -m tfdrop ARGS`` in ``cwd`` under ``memory`` bytes of address space."""
    full_env = {
        **os.environ,
        "HOME": str(cwd),
        "TMPDIR": str(cwd),
        "MALLOC_ARENA_MAX": "2",  # glibc reserves 64 MiB of address space per thread arena
        **(env or {}),
    }
    out, err = cwd / ".cli.stdout", cwd / ".cli.stderr"
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tfdrop", *map(str, args)],
            cwd=cwd,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=fo,
            stderr=fe,
            preexec_fn=lambda: _limit_memory(memory),  # noqa: PLW1509 - no threads in the child yet
        )
        deadline = time.monotonic() + timeout
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                timed_out = True
                proc.send_signal(signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        proc.returncode = os.waitstatus_to_exitcode(status)
    run = Run(
        returncode=proc.returncode,
        stdout=out.read_text(errors="replace"),
        stderr=err.read_text(errors="replace"),
        peak_rss=usage.ru_maxrss * 1024,
        timed_out=timed_out,
    )
    out.unlink()
    err.unlink()
    return run


def digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder tree (names and contents)."""
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            h.update(str(p.relative_to(path)).encode("utf-8", "surrogateescape") + b"\0")
            if p.is_file() and not p.is_symlink():
                h.update(p.read_bytes())
    else:
        h.update(path.read_bytes())
    return h.hexdigest()


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _check_common(run: Run, what: str) -> None:
    assert not run.timed_out, f"{what}: still running after {TIME_LIMIT} s (a hang)"
    assert run.returncode >= 0, f"{what}: killed by signal {-run.returncode}\n{run.stderr}"
    assert "Traceback" not in run.stderr, f"{what}: traceback\n{run.stderr}"
    assert "MemoryError" not in run.stderr, f"{what}: ran out of memory\n{run.stderr}"
    assert "bug" not in run.stderr.lower(), f"{what}: bad data called a bug\n{run.stderr}"


def refused(
    tmp_path: Path,
    src: Path,
    args: Sequence[str] = ("--to", "tfrecord"),
    *,
    expect: Sequence[str] = (),
    command: str = "convert",
    memory: int = MEMORY_LIMIT,
) -> Run:
    """Run ``tfdrop COMMAND SRC ARGS -o <tmp>/out/out.zip`` and assert a clean refusal.

    ``expect``: substrings the error output must contain (an error kind, a limit's name, a
    member). The input must be named, unchanged, and nothing but the CLI's own outputs may
    appear in ``tmp_path`` (for ``convert``, none at all: a refused input writes nothing).
    """
    before, files_before = digest(src), _tree(tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    extra: list[str] = ["-o", str(out_dir / "out.zip")] if command == "convert" else []
    run = run_cli([command, src, *args, *extra], cwd=tmp_path, memory=memory)
    what = f"tfdrop {command} {src.name}"
    _check_common(run, what)
    assert run.returncode == 1, f"{what}: exit {run.returncode}, not 1\n{run.stdout}{run.stderr}"
    assert src.name in run.stderr, f"{what}: the error does not name the input\n{run.stderr}"
    for needle in expect:
        assert needle in run.stderr, f"{what}: {needle!r} not in the error\n{run.stderr}"
    assert digest(src) == before, f"{what}: the input was changed"
    assert list(out_dir.iterdir()) == [], f"{what}: wrote {list(out_dir.iterdir())}"
    out_dir.rmdir()
    assert _tree(tmp_path) == files_before, f"{what}: left {_tree(tmp_path) - files_before}"
    return run


def accepted(
    tmp_path: Path,
    src: Path,
    args: Sequence[str] = ("--to", "tfrecord"),
    *,
    memory: int = MEMORY_LIMIT,
) -> Run:
    """Run ``tfdrop convert SRC ARGS -o <tmp>/out/out.zip`` and assert it converts cleanly.

    Strange but valid input: exit 0, the archive and its report written, the input unchanged.
    """
    before = digest(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir(exist_ok=True)
    run = run_cli(["convert", src, *args, "-o", out_dir / "out.zip"], cwd=tmp_path, memory=memory)
    what = f"tfdrop convert {src.name}"
    _check_common(run, what)
    assert run.returncode == 0, f"{what}: exit {run.returncode}\n{run.stdout}{run.stderr}"
    assert (out_dir / "out.zip").is_file(), f"{what}: no output archive"
    assert digest(src) == before, f"{what}: the input was changed"
    return run


def png(width: int = 8, height: int = 8) -> bytes:
    """A black PNG of ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def zip_of(path: Path, members: dict[str, str | bytes]) -> Path:
    """A deflated zip of ``members`` (name -> text or bytes) at ``path``."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data.encode() if isinstance(data, str) else data)
    return path

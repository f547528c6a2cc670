"""Signals during a parallel conversion (real processes, real signals): the CLI cleans up
after SIGTERM as after Ctrl-C, Ctrl-C prints one line, and workers never outlive a killed
parent (all found by an outside attack: orphans stayed alive forever, holding the input)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from daemon_support import png, voc_xml


@pytest.fixture(scope="module")
def big_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VOC zip that takes a few seconds to convert with two workers."""
    path = tmp_path_factory.mktemp("sig") / "voc.zip"
    image = png(3, size=256)
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(8000):
            xml = voc_xml(i, ["cat", "dog"]).replace(">16<", ">256<")  # the image's size
            zf.writestr(f"Annotations/{i:04d}.xml", xml)
            zf.writestr(f"JPEGImages/{i:04d}.png", image)
    return path


def _start(src: Path, tmp: Path, *, group: bool = False) -> tuple[subprocess.Popen[bytes], Path]:
    work = tmp / "tmpdir"
    work.mkdir()
    env = dict(os.environ, TMPDIR=str(work))
    cmd = [sys.executable, "-m", "tfdrop", "convert", str(src), "--to", "tfrecord",
           "-o", str(tmp / "out" / "out.zip"), "--jobs", "2", "--quiet"]  # fmt: skip
    (tmp / "out").mkdir()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=group
    )
    return proc, work


def _workers_running(proc: subprocess.Popen[bytes], work: Path) -> list[psutil.Process]:
    """Wait until the spool folder is made and both workers forked; the workers."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        spools = list(work.glob(".tfdrop-run-*/.tfdrop-spool-*"))
        if spools:
            kids = psutil.Process(proc.pid).children()
            if len(kids) >= 2:
                return kids
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the pool never started")


def _gone(procs: list[psutil.Process], within: float = 10.0) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=within)
    for p in alive:
        p.kill()
    return not alive


def test_sigterm_cleans_up_like_ctrl_c(big_voc: Path, tmp_path: Path) -> None:
    proc, work = _start(big_voc, tmp_path)
    workers = _workers_running(proc, work)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.decode().strip() == "tfdrop: terminated"
    assert _gone(workers)
    assert list((tmp_path / "out").iterdir()) == []  # no temp archive
    assert list(work.iterdir()) == []  # no spool folder


def test_ctrl_c_to_the_group_prints_one_line_and_leaves_nothing(
    big_voc: Path, tmp_path: Path
) -> None:
    proc, work = _start(big_voc, tmp_path, group=True)
    workers = _workers_running(proc, work)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.decode().strip() == "tfdrop: interrupted"  # no worker tracebacks
    assert _gone(workers)
    assert list((tmp_path / "out").iterdir()) == []
    assert list(work.iterdir()) == []


def test_workers_end_when_their_parent_is_killed(big_voc: Path, tmp_path: Path) -> None:
    proc, work = _start(big_voc, tmp_path)
    workers = _workers_running(proc, work)
    proc.kill()
    proc.communicate(timeout=60)
    assert _gone(workers), "a worker outlived its killed parent"


# --- found by the second outside attack -------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "then", "code", "said"),
    [
        (signal.SIGTERM, signal.SIGINT, 143, "tfdrop: terminated"),
        (signal.SIGTERM, signal.SIGTERM, 143, "tfdrop: terminated"),
        (signal.SIGINT, signal.SIGTERM, 130, "tfdrop: interrupted"),
    ],
    ids=["term-then-int", "term-twice", "int-then-term"],
)
def test_a_second_signal_during_cleanup_lets_it_finish(
    big_voc: Path, tmp_path: Path, first: int, then: int, code: int, said: str
) -> None:
    """SIGTERM then Ctrl-C 10 ms later hung until killed, workers waiting; a second SIGTERM
    killed the process (-15) before the spool folder was removed."""
    proc, work = _start(big_voc, tmp_path)
    workers = _workers_running(proc, work)
    proc.send_signal(first)
    for _ in range(20):  # the second signal lands wherever the cleanup is by then
        time.sleep(0.01)
        if proc.poll() is not None:
            break
        proc.send_signal(then)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert err.decode().strip() == said
    assert _gone(workers)
    assert list((tmp_path / "out").iterdir()) == []
    assert list(work.iterdir()) == []


def _with_hooks(folder: Path) -> str:
    """PYTHONPATH with ``folder`` (its sitecustomize) first, the rest kept."""
    return os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])


_INTERRUPT_ON_IMPORT = """
import os, signal, sys

class _CtrlC:
    # a Ctrl-C that lands exactly while tfdrop imports {module}
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, _CtrlC())
"""


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["--version"], "tfdrop.cli"),
        (["validate", "x.zip"], "tfdrop.cli.validate"),
        (["convert", "x.zip", "--to", "voc"], "tfdrop.convert"),
        (["convert", "x.zip", "--to", "voc"], "tfdrop.formats"),
    ],
)
def test_ctrl_c_while_the_cli_imports_is_one_line(
    tmp_path: Path, argv: list[str], module: str
) -> None:
    """A Ctrl-C during the start-up imports printed a KeyboardInterrupt traceback. The
    interrupt is raised by an import hook (``sitecustomize``) as the named module is
    imported, through the real console script, so it lands there every time."""
    (tmp_path / "sitecustomize.py").write_text(_INTERRUPT_ON_IMPORT.format(module=module))
    script = Path(sys.executable).with_name("tfdrop")
    env = dict(os.environ, PYTHONPATH=_with_hooks(tmp_path))
    for cmd in ([str(script), *argv], [sys.executable, "-m", "tfdrop", *argv]):
        proc = subprocess.run(
            cmd, env=env, capture_output=True, timeout=60, cwd=tmp_path, check=False
        )
        assert proc.returncode == 130, proc.stderr
        assert proc.stderr.decode() == "tfdrop: interrupted\n"


def _age(paths: list[Path], seconds: float = 3600) -> None:
    """Set back the mtimes (leftovers are taken only once a few seconds old)."""
    for p in paths:
        t = time.time() - seconds
        os.utime(p, (t, t), follow_symlinks=False)


def _leftovers(tmp: Path, work: Path) -> list[Path]:
    return sorted([*(tmp / "out").iterdir(), *work.iterdir()])


def _another_run(tmp: Path, work: Path, name: str) -> Path:
    """A small conversion into the same output and temp folders; its output."""
    src = tmp / f"{name}.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr("Annotations/a.xml", voc_xml(0, ["cat"]))
        zf.writestr("JPEGImages/0000.png", png(0))
    out = tmp / "out" / f"{name}.zip"
    cmd = [sys.executable, "-m", "tfdrop", "convert", str(src), "--to", "tfrecord", "-o", str(out)]
    env = dict(os.environ, TMPDIR=str(work))
    subprocess.run([*cmd, "--quiet"], env=env, check=True, timeout=120)
    return out


def test_what_a_killed_run_leaves_the_next_run_removes(big_voc: Path, tmp_path: Path) -> None:
    """SIGKILL left the temp archive and the spool folder for good (second outside attack)."""
    proc, work = _start(big_voc, tmp_path)
    workers = _workers_running(proc, work)
    proc.kill()
    proc.communicate(timeout=60)
    assert _gone(workers)
    left = _leftovers(tmp_path, work)
    assert any(p.name.endswith(".tmp") for p in left)  # the temp archive
    assert any(p.name.startswith(".tfdrop-run-") for p in left)  # the spool lives in here
    _age(left)
    out = _another_run(tmp_path, work, "small")
    assert _leftovers(tmp_path, work) == sorted([out, out.with_name("small.report.json")])


def test_a_live_run_keeps_its_temps_whatever_their_age(big_voc: Path, tmp_path: Path) -> None:
    """The next run removes only what no live process holds, however old it looks."""
    proc, work = _start(big_voc, tmp_path)
    _workers_running(proc, work)
    live = _leftovers(tmp_path, work)
    _age(live)
    _another_run(tmp_path, work, "other")
    assert all(p.exists() for p in live)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["other.report.json", "other.zip", "out.report.json", "out.zip"]
    assert list(work.iterdir()) == []


# --- found by the third outside attack ---------------------------------------------------------

_SIGNAL_AT_PUBLISH = """
import os, signal
_replace = os.replace

def replace(src, dst, *args, **kwargs):
    if str(dst).endswith("out.zip") and {before}:
        os.kill(os.getpid(), signal.{sig})
    _replace(src, dst, *args, **kwargs)
    if str(dst).endswith("out.zip") and not {before}:
        os.kill(os.getpid(), signal.{sig})

os.replace = replace
"""


def _small_voc(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(30):
            zf.writestr(f"Annotations/{i:04d}.xml", voc_xml(i, ["cat"]))
            zf.writestr(f"JPEGImages/{i:04d}.png", png(i))
    return path


def _run_hooked(tmp: Path, hook: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    hooks = tmp / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(hook)
    (tmp / "work").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=_with_hooks(hooks), TMPDIR=str(tmp / "work"))
    src = _small_voc(tmp / "in.zip")
    cmd = [sys.executable, "-m", "tfdrop", "convert", str(src), "--to", "tfrecord", "-o",
           str(tmp / "out" / "out.zip"), "--quiet", *args]  # fmt: skip
    (tmp / "out").mkdir(exist_ok=True)
    return subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT", "SIGHUP"])
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_signal_once_the_archive_is_published_lets_the_run_finish(
    tmp_path: Path, sig: str, jobs: str
) -> None:
    """It said "terminated" and exited 143 with the new archive in place and no report."""
    proc = _run_hooked(tmp_path, _SIGNAL_AT_PUBLISH.format(before=False, sig=sig), "-j", jobs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["out.report.json", "out.zip"]
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_a_signal_just_before_publishing_keeps_the_old_archive(tmp_path: Path, sig: str) -> None:
    (tmp_path / "out").mkdir()
    old = tmp_path / "out" / "out.zip"
    old.write_bytes(b"the archive of an earlier run")
    proc = _run_hooked(tmp_path, _SIGNAL_AT_PUBLISH.format(before=True, sig=sig))
    assert proc.returncode == 128 + getattr(signal, sig), proc.stderr
    said = {"SIGTERM": "terminated", "SIGHUP": "hung up"}[sig]
    assert proc.stderr.decode() == f"tfdrop: {said}\n"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["out.zip"]
    assert old.read_bytes() == b"the archive of an earlier run"
    assert list((tmp_path / "work").iterdir()) == []


def test_a_signal_while_the_interpreter_exits_keeps_the_exit_code(tmp_path: Path) -> None:
    """After a finished run, a SIGTERM during shutdown gave 143 and no word."""
    hook = "import atexit, os, signal\natexit.register(os.kill, os.getpid(), signal.SIGTERM)\n"
    proc = _run_hooked(tmp_path, hook)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out" / "out.report.json").exists()


def test_a_killed_worker_is_one_line_not_a_traceback(big_voc: Path, tmp_path: Path) -> None:
    proc, work = _start(big_voc, tmp_path)
    workers = _workers_running(proc, work)
    workers[0].kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    lines = err.decode().strip().splitlines()
    assert "Traceback" not in err.decode()
    assert "a worker process reading the source died" in lines[0]
    assert _gone(workers)
    assert list((tmp_path / "out").iterdir()) == []
    assert list(work.iterdir()) == []


_ANOTHER_RUN_PUBLISHES = """
import os, signal
import tfdrop.readback as readback
_validate = readback.validate_archive

def validate_archive(tmp, *args, **kwargs):
    out = tmp.parent / "out.zip"
    (tmp.parent / "other").write_bytes(b"another run's archive")
    os.replace(tmp.parent / "other", out)  # another run published the same name first
    os.kill(os.getpid(), signal.SIGTERM)
    return _validate(tmp, *args, **kwargs)

readback.validate_archive = validate_archive
"""


def test_another_runs_archive_of_the_same_name_is_not_taken_for_this_ones(
    tmp_path: Path,
) -> None:
    """A run took another run's archive of its name for its own publication, ignored every
    signal from then on and overwrote it (the fifth outside attack)."""
    proc = _run_hooked(tmp_path, _ANOTHER_RUN_PUBLISHES)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.decode() == "tfdrop: terminated\n"
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir()] == ["out.zip"]
    assert (out / "out.zip").read_bytes() == b"another run's archive"

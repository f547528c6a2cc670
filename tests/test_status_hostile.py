"""``tfdrop status`` against hostile folders and files, and the daemon's own edges found with it.

Anyone who may write to a shared drop folder may put anything in its state folder and in
``failed/``: status and error files nested 100000 deep, with NaN, wrong types, a gigabyte,
FIFOs, links to devices and to files outside the share, names with terminal escapes or bytes
that are not UTF-8, folders nobody may read. Every case here was an outside attacker's
finding (a traceback, a hang, a forged table line, invalid JSON, "never started" for a live
daemon); each must now give a clean answer with exit 0, the unreadable piece said in its
place. The files are real (FIFOs with ``os.mkfifo``, a sparse gigabyte, ``setpriv`` to nobody
for folders it may not read); the survey is called in-process for the shapes and the CLI in a
subprocess for what a terminal gets. Also here: the config checks of ``metrics_file`` and
``metrics_listen``, and the claim and end-record check under a real EMFILE (a subprocess with
its file limit filled).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_support import write_config
from tfdrop.config import PipelineConfig, load_config, parse_config
from tfdrop.daemon.metrics import DaemonMetrics
from tfdrop.daemon.survey import STATUS_MAX_BYTES, survey
from tfdrop.errors import ConfigError, DetectError
from tfdrop.formats import detect_format

SRC = Path(__file__).resolve().parents[1] / "src"
EVIL = "\x1b[2J\x1b[H\x1b]0;pwned\x07\x1b[31mRED\x9b\x7f\u202e\n  daemon:   running (fake)\r"
_TFDROP = (sys.executable, "-m", "tfdrop")
AS_NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def _setup(root: Path) -> tuple[Path, PipelineConfig]:
    config = write_config(root / "t.toml", [{"name": "p", "drop": "in", "output": "out"}])
    for name in ("in", "out", "in/done", "in/failed", "in/.tfdrop/status", "in/.tfdrop/work"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return config, load_config(config, env={}).pipelines[0]


@pytest.fixture
def pipeline(tmp_path: Path) -> tuple[Path, PipelineConfig]:
    return _setup(tmp_path)


def _status(
    config: Path, *args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "tfdrop", "status", "--config", str(config), *args],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})},
    )


def _status_file(cfg: PipelineConfig, text: str | bytes, name: str = "vm-1") -> Path:
    path = cfg.state / "status" / f"{name}.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# -- status files -------------------------------------------------------------------------


HOSTILE_STATUS: dict[str, tuple[str | bytes, str]] = {
    "nested_deep": ("[" * 200000 + "]" * 200000, "nested too deeply"),
    "nested_deep_inside": ('{"running": ' + "[" * 100000 + "]" * 100000 + "}", "too deeply"),
    "running_not_a_list": ('{"state": "running", "running": 5}', "status.running: expected a"),
    "counts_a_string": ('{"state": "stopped", "counts": "abc"}', "status.counts: expected"),
    "count_a_string": ('{"state": "stopped", "counts": {"seen": "abc"}}', "status.counts.seen"),
    "count_a_float": ('{"state": "stopped", "counts": {"seen": 1e308}}', "whole number"),
    "count_infinity": ('{"state": "stopped", "counts": {"seen": Infinity}}', "Infinity"),
    "count_over_int64": ('{"counts": {"seen": ' + "9" * 30 + "}}", "out of range"),
    "waiting_a_list": ('{"state": "running", "host": "x", "waiting": []}', "status.waiting"),
    "instance_a_list": ('{"state": "stopped", "instance": [1]}', "status.instance"),
    "updated_past_9999": ('{"state": "stopped", "updated_at": 1e300}', "between 1970 and 9999"),
    "updated_far_future": ('{"state": "running", "updated_at": 1e18}', "between 1970 and 9999"),
    "updated_nan": ('{"state": "stopped", "updated_at": NaN}', "NaN"),
    "started_past_9999": ('{"state": "stopped", "started_at": 1e300}', "status.started_at"),
    "done_time_a_string": ('{"recent_done": [{"time": "x", "job": "j"}]}', "recent_done[0].time"),
    "moved_to_a_number": ('{"recent_done": [{"moved_to": 5}]}', "moved_to: expected a string"),
    "recent_done_a_string": ('{"recent_done": "abc"}', "status.recent_done: expected a list"),
    "pid_a_string": ('{"state": "running", "pid": "1"}', "status.pid"),
    "heartbeat_nan": ('{"state": "running", "heartbeat_s": NaN}', "NaN"),
    "heartbeat_negative": ('{"state": "running", "heartbeat_s": -1}', "heartbeat"),
    "state_unknown": ('{"state": "dancing"}', "running or stopped"),
    "a_list": ("[1, 2]", "status: expected an object, got a list"),
    "not_json": ("{", "not JSON"),
    "not_utf8": (b'{"host": "caf\xe9"}', "not JSON"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_STATUS))
def test_a_hostile_status_file_is_an_unreadable_instance_never_a_crash(
    pipeline: tuple[Path, PipelineConfig], case: str
) -> None:
    _, cfg = pipeline
    text, what = HOSTILE_STATUS[case]
    path = _status_file(cfg, text)
    found = survey(cfg)
    (instance,) = found["instances"]
    assert instance["state"] == "unreadable"
    assert instance["why"].startswith(f"unreadable status file ({path}: ")
    assert what in instance["why"]
    assert found["daemon"] == "unknown"  # not "never started": the file may be a live daemon's


def test_the_cli_answers_every_hostile_status_file_with_exit_0(
    pipeline: tuple[Path, PipelineConfig],
) -> None:
    config, cfg = pipeline
    for i, (text, _) in enumerate(HOSTILE_STATUS.values()):
        _status_file(cfg, text, f"vm-{i}")
    table, as_json = _status(config), _status(config, "--json")
    assert (table.returncode, as_json.returncode) == (0, 0), table.stderr + as_json.stderr
    assert table.stdout.count(b"unreadable status file") == len(HOSTILE_STATUS)
    doc = json.loads(as_json.stdout)
    states = {i["state"] for i in doc["pipelines"][0]["instances"]}
    assert states == {"unreadable"}


def test_an_oversize_status_file_is_reported_as_such_not_as_never_started(
    pipeline: tuple[Path, PipelineConfig],
) -> None:
    config, cfg = pipeline
    path = cfg.state / "status" / "vm-0.json"
    with path.open("wb") as f:
        f.truncate(STATUS_MAX_BYTES + 1)  # sparse: nothing of it is read
    table = _status(config)
    assert table.returncode == 0
    line = table.stdout.decode().splitlines()[1]
    assert line.startswith("  daemon:   unknown (vm-0: unreadable status file (")
    assert f"{STATUS_MAX_BYTES + 1} bytes, over the {STATUS_MAX_BYTES}-byte cap" in line


@pytest.mark.parametrize("kind", ["fifo", "link_to_dev_zero", "link_to_a_file_outside"])
def test_a_status_file_that_is_no_regular_file_is_never_opened_or_followed(
    pipeline: tuple[Path, PipelineConfig], tmp_path: Path, kind: str
) -> None:
    config, cfg = pipeline
    path = cfg.state / "status" / "vm-1.json"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever: the attacker's hang
        why = "not a regular file"
    else:
        outside = tmp_path / "outside.json"
        outside.write_text('{"state": "running", "host": "SECRET"}')
        path.symlink_to("/dev/zero" if kind == "link_to_dev_zero" else outside)
        why = "a symbolic link (never followed)"
    result = _status(config, "--json")
    assert result.returncode == 0, result.stderr
    (instance,) = json.loads(result.stdout)["pipelines"][0]["instances"]
    assert instance["state"] == "unreadable"
    assert instance["why"].endswith(f"{why})")
    assert b"SECRET" not in result.stdout


def test_the_reader_judges_a_daemon_by_the_heartbeat_its_file_names(
    pipeline: tuple[Path, PipelineConfig],
) -> None:
    _, cfg = pipeline
    now = time.time()
    doc = {"state": "running", "host": "elsewhere", "heartbeat_s": 15.0, "updated_at": now - 40}
    _status_file(cfg, json.dumps(doc))
    assert survey(cfg, now=now)["daemon"] == "running"  # under three heartbeats (+5 s)
    assert survey(cfg, now=now + 20)["daemon"] == "stale"


# -- error files and folders --------------------------------------------------------------


def _failed_with_error(cfg: PipelineConfig, error: str | bytes | None) -> Path:
    (cfg.failed / "x.zip").write_bytes(b"x")
    path = cfg.failed / "x.zip.error.json"
    if isinstance(error, str):
        path.write_text(error)
    elif isinstance(error, bytes):
        path.write_bytes(error)
    return path


@pytest.mark.parametrize(
    ("case", "error", "what"),
    [
        ("deep", "[" * 100000 + "]" * 100000, "nested too deeply"),
        ("deep_message", '{"message": ' + "[" * 100000 + "]" * 100000 + "}", "too deeply"),
        ("types", '{"kind": {"a": 1}, "message": [1], "hint": 5}', "error.kind: expected"),
        ("list", "[1]", "error: expected an object, got a list"),
        ("nan", '{"kind": NaN}', "NaN"),
    ],
)
def test_a_hostile_error_file_is_said_in_place_of_the_error(
    pipeline: tuple[Path, PipelineConfig], case: str, error: str, what: str
) -> None:
    _, cfg = pipeline
    path = _failed_with_error(cfg, error)
    (item,) = survey(cfg)["failed"]["recent"]
    assert item["message"].startswith(f"unreadable error file ({path}: ")
    assert what in item["message"]
    assert "kind" not in item


def test_a_gigabyte_error_file_is_refused_by_its_size_unread(
    pipeline: tuple[Path, PipelineConfig],
) -> None:
    _, cfg = pipeline
    path = _failed_with_error(cfg, None)
    with path.open("wb") as f:
        f.truncate(1 << 30)
    (item,) = survey(cfg)["failed"]["recent"]
    assert "1073741824 bytes, over the 1048576-byte cap" in item["message"]


@pytest.mark.parametrize("kind", ["fifo", "link_to_dev_zero", "link_to_a_file_outside"])
def test_an_error_file_that_is_no_regular_file_is_never_opened_or_followed(
    pipeline: tuple[Path, PipelineConfig], tmp_path: Path, kind: str
) -> None:
    config, cfg = pipeline
    path = _failed_with_error(cfg, None)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        outside = tmp_path / "secret.json"
        outside.write_text('{"kind": "SECRET", "message": "outside the share"}')
        path.symlink_to("/dev/zero" if kind == "link_to_dev_zero" else outside)
    result = _status(config)
    assert result.returncode == 0, result.stderr
    assert b"unreadable error file (" in result.stdout
    assert b"SECRET" not in result.stdout


def test_a_link_loop_as_done_is_said_in_its_place_and_the_rest_is_shown(
    pipeline: tuple[Path, PipelineConfig],
) -> None:
    config, cfg = pipeline
    cfg.done.rmdir()
    cfg.done.symlink_to("done")
    (cfg.failed / "b.zip").write_bytes(b"x")
    result = _status(config)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert f"  done:     unreadable: {cfg.done}: a symbolic link" in out
    assert "  failed:   1 in failed/" in out


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder outside pytest's 0700 temp tree, so that nobody can reach it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true: the permission tests need root and setpriv")
        pytest.skip("needs root and setpriv")
    root = Path(tempfile.mkdtemp(prefix="tfdrop-status-perm-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize(
    ("folder", "line"),
    [
        ("in/done", "  done:     unreadable: "),
        ("in/failed", "  failed:   unreadable: "),
        ("in/.tfdrop/status", "  daemon:   unknown (?: status folder unreadable ("),
        ("in/.tfdrop/work", "            unreadable: "),
        ("in", "  waiting:  unreadable: "),
        ("in/failed/b.zip.error.json", "b.zip  unreadable error file ("),
        ("in/.tfdrop/status/vm-1.json", "  daemon:   unknown (vm-1: unreadable status file ("),
    ],
)
def test_what_the_user_may_not_read_is_said_in_its_place_with_exit_0(
    shared: Path, folder: str, line: str
) -> None:
    config, cfg = _setup(shared)
    (cfg.done / "a.zip").write_bytes(b"x")
    (cfg.failed / "b.zip").write_bytes(b"x")
    (cfg.failed / "b.zip.error.json").write_text('{"kind": "k", "message": "m"}')
    (cfg.state / "status" / "vm-1.json").write_text('{"state": "stopped", "updated_at": 1}')
    subprocess.run(["chmod", "-R", "a+rX", str(shared)], check=True)
    (shared / folder).chmod(0o700 if (shared / folder).is_dir() else 0o600)
    result = _status(config, prefix=AS_NOBODY)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert line in out
    assert "Permission denied" in out
    assert not result.stderr


# -- what reaches the terminal ------------------------------------------------------------


def test_names_messages_and_hints_cannot_drive_the_terminal_or_forge_lines(
    pipeline: tuple[Path, PipelineConfig],
) -> None:
    config, cfg = pipeline
    (cfg.drop / f"{EVIL}.zip").write_bytes(b"PK junk")
    (cfg.done / f"d{EVIL}.zip").write_bytes(b"x")
    (cfg.failed / f"f{EVIL}.zip").write_bytes(b"x")
    error = {"kind": f"bad{EVIL}", "message": f"m{EVIL}", "hint": f"h{EVIL}"}
    (cfg.failed / f"f{EVIL}.zip.error.json").write_text(json.dumps(error))
    doc = {"state": "stopped", "instance": f"i{EVIL}", "updated_at": 1.0}
    _status_file(cfg, json.dumps(doc))
    result = _status(config)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    for raw in ("\x1b", "\x07", "\r", "\x9b", "\x7f", "\u202e"):
        assert raw not in out
    lines = out.splitlines()
    assert len(lines) == 11  # the 8 rows of the table, one drop each, and the hint
    assert sum(line.startswith("  daemon:") for line in lines) == 1
    escaped = "\\x1b[2J\\x1b[H\\x1b]0;pwned\\x07\\x1b[31mRED\\x9b\\x7f\\u202e\\n"
    assert f"  waiting:  1\n            {escaped}" in out
    assert f"hint: h{escaped}" in out


def test_a_non_utf8_name_is_valid_utf8_in_json_and_never_breaks_the_table(
    pipeline: tuple[Path, PipelineConfig],
) -> None:
    config, cfg = pipeline
    with open(os.path.join(os.fsencode(cfg.drop), b"caf\xe9.zip"), "wb") as f:
        f.write(b"x")
    (cfg.drop / "na\u00efve.zip").write_bytes(b"x")
    as_json = _status(config, "--json", env={"PYTHONIOENCODING": "utf-8"})
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout.decode("utf-8"))  # strict: valid UTF-8
    names = {d["name"] for d in doc["pipelines"][0]["waiting"]["drops"]}
    assert names == {"caf\\xe9.zip", "na\u00efve.zip"}
    for encoding in ("utf-8", "ascii", "latin-1"):
        table = _status(config, env={"PYTHONIOENCODING": encoding})
        assert table.returncode == 0, table.stderr
        assert b"caf\\xe9.zip" in table.stdout
    ascii_table = _status(config, env={"PYTHONIOENCODING": "ascii"}).stdout
    assert b"na\\xefve.zip" in ascii_table  # what ASCII cannot hold, backslash-escaped


def test_the_unknown_format_error_escapes_the_member_names_it_lists(tmp_path: Path) -> None:
    with pytest.raises(DetectError) as info:
        detect_format([f"notes{EVIL}.txt"])
    message = str(info.value)
    assert "\x1b" not in message
    assert "\n" not in message
    assert "notes\\x1b[2J" in message
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(f"{EVIL}notes.txt", b"hello")
    result = subprocess.run(
        [*_TFDROP, "convert", "--to", "tfrecord", str(archive), "-o", str(tmp_path / "o.zip")],
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 1
    assert b"no known annotation format found (members: \\x1b[2J" in result.stderr
    assert b"\x1b" not in result.stderr
    assert result.stderr.count(b"\n") == 2  # the error and its hint


# -- config: metrics_file and metrics_listen ----------------------------------------------


def _daemon_key(tmp_path: Path, key: str, value: str, name: str = "t.toml") -> ConfigError:
    path = tmp_path / name
    path.write_text(f'[daemon]\n{key} = "{value}"\n[[pipeline]]\ndrop = "in"\noutput = "out"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == f"daemon.{key}"
    return info.value


@pytest.mark.parametrize("value", ["in", "/", "m.txt", "tfdrop.toml", "m.PROM", "textfile/"])
def test_a_metrics_file_without_the_prom_suffix_is_a_config_error(
    tmp_path: Path, value: str
) -> None:
    assert "must end in .prom" in str(_daemon_key(tmp_path, "metrics_file", value))


@pytest.mark.parametrize("kind", ["folder", "fifo", "symlink", "socket"])
def test_a_metrics_file_that_exists_and_is_no_regular_file_is_a_config_error(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "m.prom"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        (tmp_path / "target.prom").write_text("kept\n")
        path.symlink_to(tmp_path / "target.prom")
    else:
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(path))
    error = _daemon_key(tmp_path, "metrics_file", "m.prom")
    assert "exists and is not a regular file" in str(error)
    path.lstat()  # still there, untouched


def test_a_metrics_file_naming_the_config_itself_is_a_config_error(tmp_path: Path) -> None:
    error = _daemon_key(tmp_path, "metrics_file", "t.prom", name="t.prom")
    assert "names the config file itself" in str(error)
    assert (tmp_path / "t.prom").read_text().startswith("[daemon]")


def test_a_metrics_file_replaced_by_no_regular_file_under_the_daemon_is_left_alone(
    tmp_path: Path,
) -> None:
    path = tmp_path / "m.prom"
    metrics = DaemonMetrics()
    metrics.write(path)
    assert path.read_text().startswith("# HELP")
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(OSError, match="not a regular file"):
        metrics.write(path)
    assert stat.S_ISFIFO(path.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["m.prom"]  # no temp left either


@pytest.mark.parametrize(
    ("value", "what"),
    [
        ("127.0.0.1:\u00b2", "expected HOST:PORT"),  # isdigit() took it, int() did not
        ("127.0.0.1:\u0669\u0661\u0660\u0668", "expected HOST:PORT"),  # isdecimal() took it
        ("127.0.0.1:" + "9" * 5000, "expected HOST:PORT"),  # over int()'s digit limit
        ("127.0.0.1:0", "expected HOST:PORT"),
        ("[::1%lo]:9108", "scoped IPv6 address"),
        ("[fe80::1%eth0]:9108", "scoped IPv6 address"),
    ],
)
def test_metrics_listen_takes_ascii_port_digits_and_no_ipv6_zone(value: str, what: str) -> None:
    text = f'[daemon]\nmetrics_listen = "{value}"\n[[pipeline]]\ndrop = "a"\noutput = "b"\n'
    with pytest.raises(ConfigError) as info:
        parse_config(text, env={})
    assert info.value.key == "daemon.metrics_listen"
    assert what in str(info.value)


# -- the claim and the end-record check under a real EMFILE -------------------------------

_FILL = """
import errno, os, resource
def fill():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    held = []
    try:
        while True:
            held.append(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        assert exc.errno == errno.EMFILE
    return held
def free(held):
    for fd in held:
        os.close(fd)
"""


def _run_script(body: str) -> dict[str, Any]:
    """A Python script in a process of its own (its file limit is lowered and filled); the
    last stdout line is its JSON result, the rest its log."""
    code = _FILL + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    *log, last = result.stdout.splitlines()
    out: dict[str, Any] = json.loads(last)
    out["log"] = "\n".join(log)
    return out


def test_a_claim_whose_folder_fsync_fails_with_emfile_stands(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.zip").write_bytes(b"drop")
    got = _run_script(
        f"""
        import json
        from pathlib import Path
        from tfdrop.daemon.claim import WorkArea
        area = WorkArea(Path({str(tmp_path / "state")!r}))
        held = fill()  # the rename needs no file; the fsync of the drop folder does
        claimed = area.claim(Path({str(tmp_path / "in" / "a.zip")!r}))
        free(held)
        print(json.dumps({{"input": str(claimed.input) if claimed else None}}))
        """
    )
    claimed = Path(got["input"])
    assert claimed.read_bytes() == b"drop"  # in its job folder, for the job to run
    assert claimed.parent.parent == tmp_path / "state" / "work" / claimed.parent.parent.name
    assert not (tmp_path / "in" / "a.zip").exists()
    assert "claim_fsync_failed" in got["log"]
    assert "Too many open files" in got["log"]


def test_an_end_record_check_that_fails_with_emfile_waits_and_never_takes_the_zip(
    tmp_path: Path,
) -> None:
    drop = tmp_path / "in"
    drop.mkdir()
    with zipfile.ZipFile(drop / "whole.zip", "w") as zf:
        zf.writestr("a.txt", b"a")
    (drop / "half.zip").write_bytes((drop / "whole.zip").read_bytes()[:-10])
    got = _run_script(
        f"""
        import asyncio, json
        from pathlib import Path
        from tfdrop.daemon.watch import DropTracker
        tracker = DropTracker(Path({str(drop)!r}), ("*.zip",), settle=0.0, stale=0.0)
        tracker.scan(0.0)
        loop = asyncio.new_event_loop()
        held = fill()
        during = loop.run_until_complete(tracker.settled(100.0))  # long past stale
        failed = sorted((n, e.errno) for n, e in tracker.check_failed)
        again = loop.run_until_complete(tracker.settled(200.0))
        free(held)
        after = loop.run_until_complete(tracker.settled(300.0))
        print(json.dumps({{
            "during": [s.path.name for s in during + again], "failed": failed,
            "after": sorted((s.path.name, s.complete) for s in after)}}))
        """
    )
    assert got["during"] == []  # neither taken as "no end record" while the check fails
    assert got["failed"] == [["half.zip", 24], ["whole.zip", 24]]  # EMFILE, reported once
    assert got["after"] == [["half.zip", False], ["whole.zip", True]]

"""The daemon config: TOML tables, defaults, environment overrides, errors that say where."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tfdrop.config import (
    DEFAULT_PATTERNS,
    MAX_SHARDS,
    changed_limits,
    default_config,
    load_config,
    open_files_needed,
    parse_config,
    resolve_config,
)
from tfdrop.errors import ConfigError
from tfdrop.limits import Limits

REPO = Path(__file__).resolve().parents[1]

MINIMAL = """
[[pipeline]]
drop = "in"
output = "out"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_documented_defaults_and_paths_relative_to_the_file(
    tmp_path: Path,
) -> None:
    config = load_config(_write(tmp_path, MINIMAL), env={})
    (p,) = config.pipelines
    assert p.drop == tmp_path / "in"
    assert p.output == tmp_path / "out"
    assert (p.source_format, p.target_format) == ("auto", "tfrecord")
    assert p.patterns == DEFAULT_PATTERNS
    assert p.on_success == "keep"
    assert p.state == tmp_path / "in" / ".tfdrop"
    assert p.done == tmp_path / "in" / "done"
    assert config.daemon.max_jobs == 2
    assert config.daemon.settle_seconds == 2.0
    assert not config.is_default


def test_every_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "map.pbtxt").write_text("item {\n\tid: 1\n\tname: 'cat'\n}\n\n")
    text = """
[daemon]
max_jobs = 3
settle_seconds = 0.5
rescan_seconds = 7
poll = true
poll_interval_seconds = 0.25
stale_seconds = 9
grace_seconds = 4
retry_base_seconds = 1
retry_max_seconds = 8
progress_seconds = 2
log_format = "json"
log_level = "debug"

[[pipeline]]
name = "cats"
drop = "/srv/in"
output = "/srv/out"
from = "tfrecord"
to = "tfrecord"
label_map = "map.pbtxt"
masks = true
shards = 4
compression = "gzip"
images = false
on_success = "delete"
patterns = ["*.zip"]
state_dir = "/srv/in/.state"
create = false
"""
    config = load_config(_write(tmp_path, text), env={})
    d = config.daemon
    assert (d.max_jobs, d.settle_seconds, d.rescan_seconds, d.poll) == (3, 0.5, 7.0, True)
    assert (d.poll_interval_seconds, d.stale_seconds, d.grace_seconds) == (0.25, 9.0, 4.0)
    assert (d.retry_base_seconds, d.retry_max_seconds, d.progress_seconds) == (1.0, 8.0, 2.0)
    assert (d.log_format, d.log_level) == ("json", "debug")
    (p,) = config.pipelines
    assert p.name == "cats"
    assert p.label_map is not None
    assert p.label_map.names == ["cat"]
    assert (p.masks, p.shards, p.compression, p.images) == (True, 4, "gzip", False)
    assert (p.on_success, p.patterns, p.create) == ("delete", ("*.zip",), False)
    assert p.state == Path("/srv/in/.state")


def test_environment_overrides_daemon_keys(tmp_path: Path) -> None:
    env = {"TFDROP_MAX_JOBS": "5", "TFDROP_POLL": "yes", "TFDROP_SETTLE_SECONDS": "0.1"}
    config = load_config(_write(tmp_path, "[daemon]\nmax_jobs = 2\n" + MINIMAL), env=env)
    assert config.daemon.max_jobs == 5
    assert config.daemon.poll is True
    assert config.daemon.settle_seconds == 0.1


def test_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL), env={"TFDROP_LOG_FORMAT": "xml"})
    text = str(info.value)
    assert "TFDROP_LOG_FORMAT" in text
    assert "auto, json, console" in text


@pytest.mark.parametrize(
    ("snippet", "key", "says"),
    [
        ('[daemon]\nmax_jobs = "two"\n', "daemon.max_jobs", "integer"),
        ("[daemon]\nmax_jobs = 0\n", "daemon.max_jobs", "at least 1"),
        ("[daemon]\njob_workers = 0\n", "daemon.job_workers", "at least 1"),
        ("[daemon]\njob_workers = 65\n", "daemon.job_workers", "between 1 and 64"),
        ("[daemon]\nsettle_seconds = -1\n", "daemon.settle_seconds", "negative"),
        ("[daemon]\nsettle = 1\n", "daemon.settle", "allowed: max_jobs"),
        ('[daemon]\nlog_level = "loud"\n', "daemon.log_level", "allowed: debug, info"),
    ],
)
def test_daemon_errors_name_file_key_and_allowed_values(
    tmp_path: Path, snippet: str, key: str, says: str
) -> None:
    path = _write(tmp_path, snippet + MINIMAL)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.key == key
    assert info.value.file == str(path)
    assert says in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("table", "key_end", "says"),
    [
        ('drop = "in"', ".output", "missing"),
        ('drop = "in"\noutput = "out"\nto = "pdf"', ".to", "allowed: tfrecord"),
        ('drop = "in"\noutput = "out"\nfrom = "pdf"', ".from", "allowed: auto, tfrecord"),
        ('drop = "in"\noutput = "out"\ncompression = "xz"', ".compression", "none, gzip, zlib"),
        ('drop = "in"\noutput = "out"\non_success = "move"', ".on_success", "keep, delete"),
        ('drop = "in"\noutput = "out"\npatterns = []', ".patterns", "non-empty list"),
        ('drop = "in"\noutput = "out"\nshards = 0', ".shards", "at least 1"),
        ('drop = "in"\noutput = "in"', ".output", "must differ from drop"),
        ('drop = "in"\noutput = "out"\nsource = "x"', ".source", "unknown key"),
        ('drop = "in"\noutput = "out"\nlabel_map = "nope.pbtxt"', ".label_map", "cannot read"),
    ],
)
def test_pipeline_errors_name_the_key(tmp_path: Path, table: str, key_end: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, f"[[pipeline]]\n{table}\n"), env={})
    assert info.value.key is not None
    assert info.value.key.endswith(key_end)
    assert says in str(info.value)


def test_bad_label_map_error_names_the_label_map_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "map.pbtxt").write_text("item {\n  id: 0\n  name: 'cat'\n}\n")
    text = 'label_map = "map.pbtxt"\n'
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL + text), env={})
    assert "map.pbtxt" in str(info.value)
    assert "ids start at 1" in str(info.value)


def test_two_pipelines_on_one_drop_folder_are_refused(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[pipeline]]\nname = "b"\ndrop = "in"\noutput = "other"\n'
    with pytest.raises(ConfigError, match="already the drop folder"):
        load_config(_write(tmp_path, text), env={})


def test_not_toml_and_no_pipeline_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[daemon\n"), env={})
    with pytest.raises(ConfigError, match=r"no \[\[pipeline\]\] table"):
        load_config(_write(tmp_path, "[daemon]\n"), env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml", env={})


def test_no_config_means_the_built_in_inbox_outbox_default(tmp_path: Path) -> None:
    config = default_config(env={}, cwd=tmp_path)
    assert config.is_default
    (p,) = config.pipelines
    assert p.drop == tmp_path / "tfdrop" / "inbox"
    assert p.output == tmp_path / "tfdrop" / "outbox"
    assert (p.source_format, p.target_format) == ("auto", "tfrecord")


def test_resolve_prefers_argument_then_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, MINIMAL)
    assert resolve_config(None, env={"TFDROP_CONFIG": str(path)}).source == path
    assert resolve_config(None, env={}).is_default


def test_parse_config_without_file_resolves_against_cwd() -> None:
    config = parse_config(MINIMAL, env={})
    assert config.pipelines[0].drop == Path.cwd() / "in"


def _check_config(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tfdrop", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_config_command_reports_ok_and_pipelines(tmp_path: Path) -> None:
    result = _check_config(str(_write(tmp_path, MINIMAL)))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert f"{tmp_path / 'in'} -> {tmp_path / 'out'}" in result.stdout


def test_check_config_command_fails_with_the_key_and_no_traceback(tmp_path: Path) -> None:
    result = _check_config(str(_write(tmp_path, MINIMAL + 'compression = "xz"\n')))
    assert result.returncode == 1
    assert "compression" in result.stderr
    assert "none, gzip, zlib" in result.stderr
    assert "Traceback" not in result.stderr


def test_example_config_in_systemd_folder_is_valid() -> None:
    example = REPO / "systemd" / "config.example.toml"
    result = _check_config(str(example))
    assert result.returncode == 0, result.stderr


# --- the budget, bounded values, paths and label maps that cannot be used --------------


def test_limits_table_sets_the_budget_and_a_pipeline_table_overrides_it(tmp_path: Path) -> None:
    text = """
[limits]
max_depth = 10
max_labels = 50

[[pipeline]]
name = "a"
drop = "in"
output = "out"

[pipeline.limits]
max_labels = 7

[[pipeline]]
name = "b"
drop = "in2"
output = "out2"
"""
    a, b = load_config(_write(tmp_path, text), env={}).pipelines
    assert (a.limits.max_depth, a.limits.max_labels) == (10, 7)
    assert (b.limits.max_depth, b.limits.max_labels) == (10, 50)
    assert changed_limits(b.limits) == {"max_labels": 50, "max_depth": 10}
    assert load_config(_write(tmp_path, MINIMAL), env={}).pipelines[0].limits == Limits()


@pytest.mark.parametrize(
    ("snippet", "key", "says"),
    [
        ("[limits]\nmax_dpeth = 3\n", "limits.max_dpeth", "unknown limit; known: max_entries"),
        ('[limits]\nmax_depth = "3"\n', "limits.max_depth", "positive integer"),
        ("[limits]\nmax_depth = 3.0\n", "limits.max_depth", "positive integer"),
        ("[limits]\nmax_depth = true\n", "limits.max_depth", "positive integer"),
        ("[limits]\nmax_depth = 0\n", "limits.max_depth", "at least 1"),
        ("limits = 3\n", "limits", "expected a table"),
    ],
)
def test_bad_limits_name_the_key(tmp_path: Path, snippet: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, snippet + MINIMAL), env={})
    assert info.value.key == key
    assert says in str(info.value)


def test_a_bad_pipeline_limit_names_the_pipeline_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL + "\n[pipeline.limits]\nmax_depth = -4\n"), env={})
    assert info.value.key == "pipeline[0] (pipeline0).limits.max_depth"


@pytest.mark.parametrize(
    ("snippet", "key", "says"),
    [
        ("[daemon]\nmax_jobs = 1e8\n", "daemon.max_jobs", "expected an integer"),
        ("[daemon]\nmax_jobs = 100000000\n", "daemon.max_jobs", "between 1 and 64"),
        ("[daemon]\nsettle_seconds = nan\n", "daemon.settle_seconds", "finite"),
        ("[daemon]\nretry_base_seconds = nan\n", "daemon.retry_base_seconds", "finite"),
        ("[daemon]\nretry_max_seconds = inf\n", "daemon.retry_max_seconds", "finite"),
        ("[daemon]\nstale_seconds = -inf\n", "daemon.stale_seconds", "finite"),
        ("[daemon]\nretry_base_seconds = 0\n", "daemon.retry_base_seconds", "between 0.01"),
        ("[daemon]\nrescan_seconds = 1e12\n", "daemon.rescan_seconds", "and 86400 seconds"),
        ("[daemon]\npoll_interval_seconds = 0\n", "daemon.poll_interval_seconds", "between"),
        ("[daemon]\ngrace_seconds = 1e300\n", "daemon.grace_seconds", "between 0 and 3600"),
    ],
)
def test_daemon_values_out_of_range_name_the_key(
    tmp_path: Path, snippet: str, key: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, snippet + MINIMAL), env={})
    assert info.value.key == key
    assert says in str(info.value)


def test_environment_values_are_bounded_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL), env={"TFDROP_RETRY_BASE_SECONDS": "nan"})
    assert "TFDROP_RETRY_BASE_SECONDS" in str(info.value)
    assert "finite" in str(info.value)


@pytest.mark.parametrize("shards", [2000, 100000, 1000000000])
def test_shards_over_the_bound_are_refused(tmp_path: Path, shards: int) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL + f"shards = {shards}\n"), env={})
    assert info.value.key is not None
    assert info.value.key.endswith(".shards")
    assert f"between 1 and {MAX_SHARDS}" in str(info.value)


def test_the_most_open_files_of_a_config_count_jobs_shards_and_subsets(tmp_path: Path) -> None:
    config = load_config(
        _write(tmp_path, "[daemon]\nmax_jobs = 4\n" + MINIMAL + "shards = 10\n"), env={}
    )
    assert open_files_needed(config) >= 4 * 10 * 3


@pytest.mark.parametrize("key", ["drop", "output", "label_map", "state_dir"])
def test_a_nul_in_a_path_is_a_config_error(tmp_path: Path, key: str) -> None:
    table = {"drop": '"in"', "output": '"out"', key: '"x\\u0000y"'}
    text = "[[pipeline]]\n" + "".join(f"{k} = {v}\n" for k, v in table.items())
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text), env={})
    assert info.value.key is not None
    assert info.value.key.endswith(f".{key}")
    assert "NUL" in str(info.value)


def test_a_label_map_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "map.pbtxt").write_bytes(b"item {\n id: 1\n name: '\xff\xfe'\n}\n")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, MINIMAL + 'label_map = "map.pbtxt"\n'), env={})
    assert info.value.key is not None
    assert info.value.key.endswith(".label_map")
    assert "UTF-8" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        '[[pipeline]]\ndrop = "x\\u0000y"\noutput = "out"\n',
        MINIMAL + 'label_map = "map.pbtxt"\n',
        "[daemon]\nmax_jobs = 1e8\n" + MINIMAL,
        "[daemon]\nretry_base_seconds = nan\n" + MINIMAL,
    ],
)
def test_check_config_explains_unusable_values_without_a_traceback(
    tmp_path: Path, text: str
) -> None:
    (tmp_path / "map.pbtxt").write_bytes(b"\xff\xfe\x00garbage")
    proc = subprocess.run(
        [sys.executable, "-m", "tfdrop", "check-config", str(_write(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert str(tmp_path / "config.toml") in proc.stderr


def test_check_config_prints_the_limits_that_differ_from_the_defaults(tmp_path: Path) -> None:
    text = "[limits]\nmax_depth = 9\n" + MINIMAL
    proc = subprocess.run(
        [sys.executable, "-m", "tfdrop", "check-config", str(_write(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "limits: max_depth=9" in proc.stdout


def test_a_config_needing_more_open_files_than_the_hard_limit_is_refused(tmp_path: Path) -> None:
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    text = "[daemon]\nmax_jobs = 64\n" + MINIMAL + "shards = 256\n"
    proc = subprocess.run(
        [sys.executable, "-m", "tfdrop", "check-config", str(_write(tmp_path, text))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=low_limit,
    )
    assert proc.returncode == 1
    assert "daemon.max_jobs" in proc.stderr
    assert "open-file limit of 256" in proc.stderr

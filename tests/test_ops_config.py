"""The config keys of retention and hooks: defaults, values kept, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tfdrop
from tfdrop.config import parse_config
from tfdrop.errors import ConfigError


def _pipeline(tmp_path: Path, extra: str) -> str:
    return f'[[pipeline]]\ndrop = "{tmp_path}/in"\noutput = "{tmp_path}/out"\n{extra}\n'


def test_retention_and_hooks_default_to_keep_forever_and_no_hook(tmp_path: Path) -> None:
    p = parse_config(_pipeline(tmp_path, ""), env={}).pipelines[0]
    assert (p.keep_done_days, p.keep_failed_days) == (None, None)
    assert (p.on_published, p.on_failed, p.hook_timeout_s) == (None, None, 60.0)


def test_retention_and_hook_keys_are_read(tmp_path: Path) -> None:
    extra = (
        "keep_done_days = 7\nkeep_failed_days = 0.5\n"
        'on_published = ["/bin/train", "--quick"]\non_failed = ["notify-send"]\n'
        "hook_timeout_s = 5\n"
    )
    p = parse_config(_pipeline(tmp_path, extra), env={}).pipelines[0]
    assert (p.keep_done_days, p.keep_failed_days) == (7.0, 0.5)
    assert p.on_published == ("/bin/train", "--quick")
    assert p.on_failed == ("notify-send",)
    assert p.hook_timeout_s == 5.0


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("keep_done_days = -1", "keep_done_days"),
        ('keep_failed_days = "7"', "keep_failed_days"),
        ("keep_done_days = nan", "keep_done_days"),
        ("keep_done_days = true", "keep_done_days"),
        ('on_published = "train.sh"', "on_published"),
        ("on_published = []", "on_published"),
        ('on_failed = ["", "x"]', "on_failed"),
        ("on_failed = [1]", "on_failed"),
        ("hook_timeout_s = 0", "hook_timeout_s"),
        ("hook_timeout_s = inf", "hook_timeout_s"),
    ],
)
def test_bad_retention_or_hook_values_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_pipeline(tmp_path, extra), env={})
    assert info.value.key is not None
    assert info.value.key.endswith(f".{key}")


def test_max_hooks_defaults_to_four_and_is_bounded(tmp_path: Path) -> None:
    assert parse_config(_pipeline(tmp_path, ""), env={}).daemon.max_hooks == 4
    text = "[daemon]\nmax_hooks = 1\n" + _pipeline(tmp_path, "")
    assert parse_config(text, env={}).daemon.max_hooks == 1
    with pytest.raises(ConfigError) as info:
        parse_config("[daemon]\nmax_hooks = 0\n" + _pipeline(tmp_path, ""), env={})
    assert info.value.key == "daemon.max_hooks"


@pytest.mark.parametrize(
    ("extra", "shown"),
    [
        ("keep_done_days = 2023-01-01", "got a date (2023-01-01)"),
        ("keep_done_days = 2023-01-01T10:00:00", "got a date-time (2023-01-01T10:00:00)"),
        ("hook_timeout_s = 10:30:00", "got a time (10:30:00)"),
        ('keep_failed_days = "7"', 'got "7"'),
        ("keep_done_days = true", "got true"),
        ("keep_done_days = nan", "got nan"),
        ('on_published = ["x", 1]', 'got ["x", 1]'),
        ('on_failed = {cmd = "x"}', 'got {cmd = "x"}'),
    ],
)
def test_bad_values_are_shown_as_toml_not_as_python(tmp_path: Path, extra: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_pipeline(tmp_path, extra), env={})
    assert shown in str(info.value)
    assert "datetime" not in str(info.value)
    assert "True" not in str(info.value)


def test_a_hook_program_path_is_relative_to_the_config_file_and_a_bare_name_kept(
    tmp_path: Path,
) -> None:
    extra = 'on_published = ["hooks/notify.sh", "-v"]\non_failed = ["notify-send", "x"]'
    config = tmp_path / "etc" / "tfdrop.toml"
    p = parse_config(_pipeline(tmp_path, extra), source=config, env={}).pipelines[0]
    assert p.on_published == (str(tmp_path / "etc" / "hooks" / "notify.sh"), "-v")
    assert p.on_failed == ("notify-send", "x")  # looked up on PATH when it runs


def test_check_config_refuses_a_hook_that_cannot_run(tmp_path: Path) -> None:
    plain = tmp_path / "not-executable.sh"
    plain.write_text("#!/bin/sh\n")
    plain.chmod(0o644)
    ok = tmp_path / "hooks" / "ok.sh"
    ok.parent.mkdir()
    ok.write_text("#!/bin/sh\n")
    ok.chmod(0o755)
    cases = [
        ('on_published = ["hooks/missing.sh"]', f"{tmp_path}/hooks/missing.sh is not there"),
        (f'on_failed = ["{plain}"]', f"{plain} is not executable"),
        ('on_failed = ["no-such-program-tfdrop"]', '"no-such-program-tfdrop" is not found on PATH'),
        ('on_published = ["hooks"]', '"hooks" is not found on PATH'),
        ('on_published = ["./hooks"]', f"{tmp_path}/hooks is not a file"),
    ]
    config = tmp_path / "c.toml"
    for extra, why in cases:
        config.write_text(_pipeline(tmp_path, extra))
        result = tfdrop("check-config", config, cwd=Path("/"))
        assert result.returncode == 1, (extra, result.stdout)
        assert f"the hook cannot run: {why}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    config.write_text(_pipeline(tmp_path, 'on_published = ["hooks/ok.sh"]\non_failed = ["sh"]'))
    assert tfdrop("check-config", config, cwd=Path("/")).returncode == 0

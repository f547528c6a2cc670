"""The config keys of retention and hooks: defaults, values kept, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

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

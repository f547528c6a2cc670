"""CI's short torture run: 40 drops, 10 SIGKILLs, every invariant holds.

The long run is the same code: ``python -m tests.stress.torture --drops 500 --kills 100``.
"""

from __future__ import annotations

from pathlib import Path

from stress.torture import run


def test_forty_drops_ten_sigkills_lose_nothing_and_publish_each_good_input_once(
    tmp_path: Path,
) -> None:
    result = run(tmp_path / "t", drops=40, kills=10, seed=3)
    assert result.breaches == []
    assert result.kills == 10
    assert result.unexpected_exits == 0
    assert result.lost == 0
    assert result.duplicates == 0
    assert result.published == result.good
    assert result.failed == result.bad
    assert result.good + result.bad == 40


def test_two_instances_on_one_folder_with_sigkills_lose_nothing_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    """Two daemons serve the same folders (two hosts on one share); kills hit either."""
    result = run(tmp_path / "t", drops=30, kills=8, seed=5, instances=2)
    assert result.breaches == []
    assert result.kills == 8
    assert result.lost == 0
    assert result.duplicates == 0
    assert result.published == result.good

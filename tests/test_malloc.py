"""The big commands fix glibc's malloc thresholds (cli/malloc.py); the user's own win."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROBE = "from tfdrop.cli.malloc import fix_thresholds; print(fix_thresholds())"


def _probe(**env: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return proc.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_thresholds_are_fixed_on_glibc() -> None:
    assert _probe() == "True"


def test_the_users_own_tunables_are_left_alone() -> None:
    tunables = "glibc.malloc.mmap_threshold=4194304"
    assert _probe(GLIBC_TUNABLES=tunables) == "False"

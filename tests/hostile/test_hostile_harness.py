"""The harness itself: it must see a refusal, a success, and catch what it is there to catch."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from hostile.harness import accepted, refused, run_cli


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_a_zip_of_unknown_files_is_refused_naming_the_input(tmp_path: Path) -> None:
    src = tmp_path / "odd.zip"
    src.write_bytes(_zip({"notes/readme.md": b"hello"}))
    run = refused(tmp_path, src)
    assert "tfdrop: error:" in run.stderr


def test_a_plain_images_zip_converts(tmp_path: Path) -> None:
    from daemon_support import png

    src = tmp_path / "cam.zip"
    src.write_bytes(_zip({"a.png": png(1), "b.png": png(2)}))
    run = accepted(tmp_path, src)
    assert "2 items" in run.stdout


def test_the_memory_limit_is_real(tmp_path: Path) -> None:
    # 24 MiB of address space is too little for a conversion's imports: the cap applies
    from daemon_support import png

    src = tmp_path / "cam.zip"
    src.write_bytes(_zip({"a.png": png(1)}))
    args: list[str | Path] = ["convert", src, "--to", "tfrecord", "-o", tmp_path / "o.zip"]
    assert run_cli(args, cwd=tmp_path, memory=24 << 20).returncode != 0
    assert run_cli(args, cwd=tmp_path).returncode == 0


def test_refused_fails_on_a_success(tmp_path: Path) -> None:
    from daemon_support import png

    src = tmp_path / "cam.zip"
    src.write_bytes(_zip({"a.png": png(1)}))
    with pytest.raises(AssertionError, match="exit 0, not 1"):
        refused(tmp_path, src)

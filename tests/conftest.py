"""Shared test fixtures.

- ``corpus_dir()`` / the ``corpus`` fixture: the real datasets in ``../shared/corpus`` (beside the
  repo, or beside the local repository a clone was made from; ``$TFDROP_CORPUS`` overrides).
  Tests that use them skip when the folder is absent (a user's fresh clone) but FAIL when it is
  absent and ``CI=true``, so CI can never pass by skipping them.
- ``tf``: TensorFlow, imported lazily once per session (about 4 s and 600 MB) with its C++ logs
  silenced; only interop tests ask for it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image

from tfdrop.codec.compression import Compression
from tfdrop.codec.example import encode_example
from tfdrop.codec.model import Annotation, Box, Item
from tfdrop.codec.proto import Example
from tfdrop.stream import RecordWriter

REPO = Path(__file__).resolve().parents[1]


def corpus_dir() -> Path:
    """Where the real datasets live: ``$TFDROP_CORPUS``, else ``<repo>/../shared/corpus``, else
    (a clone made elsewhere, e.g. a CI check in /tmp) beside the local repository it was cloned
    from: ``<origin>/../shared/corpus``."""
    if os.environ.get("TFDROP_CORPUS"):
        return Path(os.environ["TFDROP_CORPUS"])
    repo = Path(__file__).resolve().parents[1]
    beside = repo.parent / "shared" / "corpus"
    if beside.is_dir():
        return beside
    origin = subprocess.run(
        ["git", "-C", str(repo), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        return Path(origin).resolve().parent / "shared" / "corpus"
    return beside


def require_corpus(*parts: str) -> Path:
    """A path inside the corpus; skips when absent, fails when absent under ``CI=true``."""
    path = corpus_dir().joinpath(*parts)
    if not path.exists():
        message = f"real dataset not found: {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message} (CI=true: corpus tests must not be skipped)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The corpus folder (skip unless present; fail when absent under ``CI=true``)."""
    return require_corpus()


@pytest.fixture(scope="session")
def tf() -> ModuleType:
    """TensorFlow, imported once per session with its C++ logging silenced."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    try:
        return importlib.import_module("tensorflow")
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"tensorflow is not installed: {exc}")
        pytest.skip(f"tensorflow is not installed: {exc}")


def records_bytes(items: list[Item], compression: Compression = "none") -> bytes:
    """``items`` encoded as Examples and framed as one TFRecord file (optionally compressed)."""
    buf = io.BytesIO()
    with RecordWriter(buf, compression=compression) as w:
        for it in items:
            w.write(encode_example(it))
    return buf.getvalue()


def numerical_mask_records() -> bytes:
    """One record of an 8 x 6 PNG with one box whose mask is a float list of H * W values
    (TF's NUMERICAL_MASKS, as create_pet_tf_record.py --mask_type numerical writes it)."""
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 100, 50)).save(buf, "PNG")
    item = Item(
        name="num.png",
        width=8,
        height=6,
        image=buf.getvalue(),
        image_format="png",
        objects=(Annotation("car", Box(0.0, 0.0, 0.5, 0.5), label_id=1),),
    )
    example = Example.FromString(encode_example(item))
    mask = [1.0 if x < 4 and y < 3 else 0.0 for y in range(6) for x in range(8)]
    example.features.feature["image/object/mask"].float_list.value.extend(mask)  # type: ignore[attr-defined]
    out = io.BytesIO()
    with RecordWriter(out) as w:
        w.write(example.SerializeToString())
    return out.getvalue()


def require_root(what: str) -> None:
    """Skip a test that needs root (mounts, setpriv); fail instead under ``CI=true``."""
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true runs as root: {what} must not be skipped")
        pytest.skip(f"needs root ({what})")


def require_tool(command: str, package: str) -> None:
    """Skip a test whose external ``command`` is missing; fail instead under ``CI=true``
    (scripts/test.sh installs ``package`` there)."""
    if shutil.which(command) is None:
        message = f"{command} is not installed (apt-get install {package})"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{message}; CI=true: it must not be skipped")
        pytest.skip(message)


@contextlib.contextmanager
def mounted_tmpfs(mountpoint: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (e.g. "1m") at ``mountpoint``, so ENOSPC is real."""
    require_root("mounting a tmpfs")
    mountpoint.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)], check=True
    )
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def tfdrop(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m tfdrop ARGS`` in a subprocess; never a traceback on either stream."""
    proc = subprocess.run(
        [sys.executable, "-m", "tfdrop", *map(str, args)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc

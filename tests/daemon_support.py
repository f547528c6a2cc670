"""Helpers for the daemon tests: input archives, configs, and a real daemon process.

The daemon runs as ``python -m tfdrop run --config FILE`` in a subprocess, logging JSON lines
to a file that the tests read as events (no mocks: real files, real signals, real sockets).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
from PIL import Image

from tfdrop.codec.example import encode_example
from tfdrop.codec.framing import encode_record
from tfdrop.codec.model import Annotation, Box, Item

LABEL_MAP = "item {\n\tid: 1\n\tname: 'cat'\n}\n\nitem {\n\tid: 2\n\tname: 'dog'\n}\n\n"


def png(seed: int, size: int = 16) -> bytes:
    img = Image.new("RGB", (size, size), ((seed * 37) % 256, (seed * 11) % 256, seed % 256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def voc_xml(i: int, labels: list[str]) -> str:
    """A VOC annotation of ``{i:04d}.png`` (16x16) with one box per label."""
    objs = "".join(
        f"<object><name>{lb}</name><bndbox><xmin>1</xmin><ymin>2</ymin>"
        f"<xmax>{10 + k}</xmax><ymax>12</ymax></bndbox></object>"
        for k, lb in enumerate(labels)
    )
    return (
        f"<annotation><filename>{i:04d}.png</filename><size><width>16</width>"
        f"<height>16</height></size>{objs}</annotation>"
    )


def run_tfdrop(*args: str | Path, cwd: Path, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``python -m tfdrop ARGS`` in ``cwd`` with this test run's import path (60 s at most)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, "-m", "tfdrop", *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
        **kw,
    )


def tfrecord_bytes(items: int, *, tag: str = "a", image_size: int = 16) -> bytes:
    """A TFRecord stream of ``items`` Examples, each with one PNG and two boxes."""
    out = []
    for i in range(items):
        image = png(i + sum(map(ord, tag)), image_size)
        item = Item(
            name=f"{tag}_{i:05d}.png",
            width=image_size,
            height=image_size,
            image=image,
            image_format="png",
            objects=(
                Annotation("cat", Box(0.1, 0.1, 0.5, 0.5), label_id=1),
                Annotation("dog", Box(0.5, 0.25, 0.75, 1.0), label_id=2, difficult=True),
            ),
        )
        out.append(encode_record(encode_example(item)))
    return b"".join(out)


def tfrecord_zip(items: int = 3, *, tag: str = "a", image_size: int = 16) -> bytes:
    """A CVAT "TFRecord 1.0" zip: default.tfrecord + label_map.pbtxt."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("default.tfrecord", tfrecord_bytes(items, tag=tag, image_size=image_size))
        zf.writestr("label_map.pbtxt", LABEL_MAP)
    return buf.getvalue()


def write_config(path: Path, pipelines: list[dict[str, Any]], **daemon: Any) -> Path:
    """A TOML config; small settle/rescan times keep the tests fast."""
    d = {
        "settle_seconds": 0.2,
        "rescan_seconds": 1.0,
        "stale_seconds": 1.0,
        "grace_seconds": 5.0,
        "retry_base_seconds": 0.2,
        "retry_max_seconds": 1.0,
        "progress_seconds": 0.05,
        "log_format": "json",
        "log_level": "debug",
    }
    d.update(daemon)
    lines = ["[daemon]"]
    lines += [f"{k} = {_toml(v)}" for k, v in d.items()]
    for p in pipelines:
        lines.append("\n[[pipeline]]")
        lines += [f"{k} = {_toml(v)}" for k, v in p.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return json.dumps(str(v))


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, step: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(step)


class Daemon:
    """``python -m tfdrop run --config FILE`` as a child process with its log as events."""

    def __init__(
        self,
        config: Path,
        log: Path,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,  # e.g. setpriv ... to run as another user
        cwd: Path | None = None,  # default: the config's folder
    ) -> None:
        self.log = log
        self._log_file = log.open("ab")
        full_env = dict(os.environ)
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.pop("WATCHDOG_USEC", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "tfdrop", "run", "--config", str(config)],
            stdout=self._log_file,
            stderr=self._log_file,
            env=full_env,
            cwd=cwd or config.parent,
        )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
        return out

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == event]

    def wait_event(self, event: str, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.text()}")
            hits = self.named(event)
            return hits if len(hits) >= count else None

        try:
            result: list[dict[str, Any]] = wait_until(found, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- daemon log ---\n{self.text()[-4000:]}") from None
        return result

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self._log_file.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._log_file.close()


def copy_slowly(data: bytes, dst: Path, chunks: int = 5, pause: float = 0.1) -> None:
    """Write ``data`` to ``dst`` in chunks with pauses, like a slow network copy."""
    step = max(1, len(data) // chunks)
    with dst.open("wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(pause)


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


def all_files(root: Path) -> Iterator[Path]:
    return (p for p in root.rglob("*") if p.is_file())


def conversion_process(daemon: Daemon) -> psutil.Process | None:
    """The daemon's running conversion process (a child of its fork server), if any."""
    for child in psutil.Process(daemon.proc.pid).children():
        try:
            if "forkserver" in " ".join(child.cmdline()):
                kids = child.children()
                if kids:
                    return kids[0]
        except psutil.Error:
            continue
    return None

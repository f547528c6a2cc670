"""The rooms of ARCHITECTURE.md and what each may import, checked on every module of tfdrop.

One table (:data:`ALLOWED`) says which rooms a room may import; every module of ``src/tfdrop`` is
imported (so none is dead or broken on its own) and its ``tfdrop`` imports are read with ``ast``
(``if TYPE_CHECKING:`` imports count too: a type is a dependency). Imports inside functions are
refused: they hide cycles.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# module prefix -> room; the longest matching prefix wins
ROOMS: dict[str, str] = {
    "tfdrop": "package",
    "tfdrop.__main__": "cli",
    "tfdrop._console": "cli",
    "tfdrop.errors": "errors",
    "tfdrop.limits": "limits",
    "tfdrop.codec": "codec",
    "tfdrop.stream": "shell",
    "tfdrop.publish": "shell",
    "tfdrop.leftovers": "shell",
    "tfdrop.shards": "shell",
    "tfdrop.pool": "shell",
    "tfdrop.archive": "archive",
    "tfdrop.formats": "formats",
    "tfdrop.labels": "labels",
    "tfdrop.inputs": "convert",
    "tfdrop.convert": "convert",
    "tfdrop.units": "convert",
    "tfdrop.readback": "convert",
    "tfdrop.follow": "convert",
    "tfdrop.handoff": "convert",
    "tfdrop.beam": "beam",
    "tfdrop.preview": "preview",
    "tfdrop.config": "config",
    "tfdrop.daemon": "daemon",
    "tfdrop.cli": "cli",
}

# room -> the other rooms it may import (a room may always import itself)
ALLOWED: dict[str, frozenset[str]] = {
    "package": frozenset(),
    "errors": frozenset(),
    "limits": frozenset({"errors"}),
    "codec": frozenset({"errors"}),  # sans-IO: plain int caps, not the Limits object
    "shell": frozenset({"errors", "limits", "codec"}),
    # never formats: it knows no format; codec for the inflater and CRC-32 (codec/inflate.py)
    "archive": frozenset({"errors", "limits", "codec"}),
    "formats": frozenset({"errors", "limits", "codec", "shell", "archive"}),
    "labels": frozenset({"errors", "limits", "codec"}),
    "convert": frozenset({"errors", "limits", "codec", "shell", "archive", "formats", "labels"}),
    "beam": frozenset(
        {"errors", "limits", "codec", "shell", "archive", "formats", "labels", "convert"}
    ),  # the only room that imports apache_beam
    "config": frozenset({"errors", "limits", "codec", "formats", "labels"}),
    # the preview opens inputs as a conversion does (tfdrop.inputs)
    "preview": frozenset(
        {"errors", "limits", "codec", "shell", "archive", "formats", "labels", "convert"}
    ),
    "daemon": frozenset(
        {
            "errors",
            "limits",
            "codec",
            "shell",
            "archive",
            "formats",
            "labels",
            "convert",
            "config",
            "preview",
        }
    ),
    "cli": frozenset(ROOMS.values()),  # the shell around everything
}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted((SRC / "tfdrop").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


MODULES = _modules()


def room_of(module: str) -> str:
    best = max((p for p in ROOMS if module == p or module.startswith(p + ".")), key=len)
    return ROOMS[best]


def _imports(tree: ast.Module) -> list[tuple[int, str, bool]]:
    """(line, imported tfdrop module, at module level) for every import of tfdrop."""
    top = {id(n) for n in tree.body}
    top |= {id(m) for n in tree.body if isinstance(n, ast.If) for m in n.body}
    out = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        out += [(node.lineno, n, id(node) in top) for n in names if n.split(".")[0] == "tfdrop"]
    return out


def test_every_module_has_a_room_and_every_room_a_row() -> None:
    assert len(MODULES) > 50
    assert set(ROOMS.values()) == set(ALLOWED)
    for module, _ in MODULES:
        assert room_of(module) in ALLOWED, module


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_module_imports_only_what_its_room_may(module: str, path: Path) -> None:
    if module != "tfdrop.__main__":  # importing it runs the CLI
        importlib.import_module(module)
    room = room_of(module)
    allowed = ALLOWED[room] | {room}
    for line, imported, at_top in _imports(ast.parse(path.read_text(encoding="utf-8"))):
        where = f"{path.relative_to(SRC)}:{line} imports {imported}"
        assert at_top, f"{where} inside a function (a hidden cycle?)"
        assert room_of(imported) in allowed, f"{where}: {room} may not import {room_of(imported)}"


def test_the_table_forbids_what_architecture_md_promises() -> None:
    assert ALLOWED["codec"] == {"errors"}
    assert "archive" not in ALLOWED["codec"]
    assert "formats" not in ALLOWED["archive"]
    for room in ("formats", "archive", "codec", "convert", "config", "beam", "preview"):
        assert not ALLOWED[room] & {"daemon", "cli"}, room
    assert "cli" not in ALLOWED["daemon"]


def test_a_voc_conversion_imports_one_format_and_no_pillow_before_its_first_item(
    tmp_path: Path,
) -> None:
    # the parent's imports are serial start-up before the workers fork (issue 11): a format's
    # row costs its detection only, and Pillow, YAML and urllib wait for whoever needs them
    import os
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "voc.zip"
    with zipfile.ZipFile(src, "w") as zf:
        zf.writestr(
            "Annotations/a.xml",
            "<annotation><filename>a.jpg</filename><size><width>4</width><height>4</height>"
            "</size></annotation>",
        )
        zf.writestr("JPEGImages/a.jpg", b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x04\x00\x04")
    probe = (
        "import sys\n"
        "from tfdrop.cli import build_parser\n"
        "import tfdrop.cli.convert, tfdrop.convert\n"
        "from tfdrop.archive import open_source\n"
        "from tfdrop.formats import FORMATS, Notes, ReadOptions, detect_format\n"
        "build_parser(['convert', 'x'])\n"
        f"src = open_source({str(src)!r})\n"
        "fmt = detect_format(src.names())\n"
        "reader = FORMATS[fmt].open_reader(src, ReadOptions(), Notes())\n"
        "print(fmt, ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('PIL', 'yaml', 'urllib', 'http', 'email') or m.startswith('tfdrop.formats.'))))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(SRC))
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60,
        env=env,
    )  # fmt: skip
    fmt, *loaded = done.stdout.split()
    assert fmt == "voc"
    assert "tfdrop.formats.voc.reader" in loaded
    heavy = [m for m in loaded if m.split(".")[0] in ("PIL", "yaml", "email", "http")]
    assert heavy == [], heavy
    assert "urllib.request" not in loaded
    others = [
        m for m in loaded if m.endswith((".reader", ".writer")) and m != "tfdrop.formats.voc.reader"
    ]
    assert others == [], others

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

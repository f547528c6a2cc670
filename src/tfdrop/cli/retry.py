"""``tfdrop retry [--config F] [--pipeline P] NAME|--all``: failed inputs back into the drop.

Each input is moved from the pipeline's ``failed/`` into its drop folder without replacing
anything there (``<stem>-1<suffix>`` when the name is taken: the daemon's no-clobber move), then
its ``<name>.error.json`` is removed, and ``drop_retried`` is logged as the daemon logs. Retrying
an error file whose input is not there (taken away by hand) removes that error file and says so. A
running daemon takes it as a new drop; a stopped one finds it at its start-up scan. A failed
input holds no ledger entry (a failure forgets it), so the same bytes are converted again, not
taken for a duplicate. Fix what made it fail (a label map, a config key) first.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path

import structlog

from tfdrop.cli.common import config_failed, fail
from tfdrop.config import PipelineConfig, resolve_config
from tfdrop.daemon.fsops import ERROR_SUFFIX, move_unique
from tfdrop.daemon.logs import configure_logging
from tfdrop.errors import ConfigError
from tfdrop.publish import fsync_dir, is_temp_name

log = structlog.get_logger("tfdrop.daemon")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML config (default: $TFDROP_CONFIG, else the built-in default pipeline)",
    )
    parser.add_argument(
        "--pipeline", metavar="P", help="only this pipeline (needed when NAME failed in several)"
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "name", nargs="?", metavar="NAME", help="an input in failed/ (or its .error.json)"
    )
    which.add_argument("--all", action="store_true", help="every input in failed/")


def failed_inputs(cfg: PipelineConfig) -> list[str]:
    """The inputs in the pipeline's ``failed/``: files and links, not error files or temps."""
    try:
        entries = sorted(os.scandir(cfg.failed), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for entry in entries:
        if is_temp_name(entry.name) or entry.name.endswith(ERROR_SUFFIX):
            continue
        mode = entry.stat(follow_symlinks=False).st_mode
        if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
            out.append(entry.name)
    return out


def retry_input(cfg: PipelineConfig, name: str) -> Path:
    """Move ``failed/<name>`` into the drop folder and remove its error file; the new path."""
    dst = move_unique(cfg.failed / name, cfg.drop, name)
    error = cfg.failed / f"{name}{ERROR_SUFFIX}"
    had_error = os.path.lexists(error)
    error.unlink(missing_ok=True)
    fsync_dir(cfg.failed)
    log.info(
        "drop_retried",
        pipeline=cfg.name,
        source=name,
        moved_to=str(dst),
        error_file_removed=had_error,
    )
    return dst


def remove_orphan_error(cfg: PipelineConfig, name: str) -> Path | None:
    """``failed/<name>.error.json`` removed when its input is not there (taken away by hand);
    the error file removed, or None when there is none (or its input is there)."""
    error = cfg.failed / f"{name}{ERROR_SUFFIX}"
    if os.path.lexists(cfg.failed / name) or not os.path.lexists(error):
        return None
    error.unlink(missing_ok=True)
    fsync_dir(cfg.failed)
    log.info("error_file_removed", pipeline=cfg.name, source=name, reason="input_missing")
    return error


def _selected(pipelines: tuple[PipelineConfig, ...], wanted: str | None) -> list[PipelineConfig]:
    return [p for p in pipelines if wanted is None or p.name == wanted]


_Target = tuple[PipelineConfig, str]


def _target_name(args: argparse.Namespace) -> str:
    name = Path(args.name).name
    return name[: -len(ERROR_SUFFIX)] if name.endswith(ERROR_SUFFIX) else name


def _targets(pipes: list[PipelineConfig], args: argparse.Namespace) -> list[_Target] | str:
    """What to retry, or why nothing can be (a message)."""
    if args.all:
        return [(p, name) for p in pipes for name in failed_inputs(p)]
    name = _target_name(args)
    found = [p for p in pipes if name in failed_inputs(p)]
    if not found:
        where = ", ".join(str(p.failed) for p in pipes)
        return f"no failed input named {name!r} in {where}"
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        return f"{name!r} failed in several pipelines ({names}); choose one with --pipeline"
    return [(found[0], name)]


def _remove_orphans(pipes: list[PipelineConfig], args: argparse.Namespace) -> bool:
    """``retry x.zip.error.json`` whose input is gone: its error file is removed, and that
    said; whether there was one."""
    if args.all or not args.name.endswith(ERROR_SUFFIX):
        return False
    name = _target_name(args)
    found = False
    for p in pipes:
        try:
            error = remove_orphan_error(p, name)
        except OSError as exc:
            fail(f"{p.failed / args.name}: cannot remove it: {exc.strerror or exc}")
            continue
        if error is not None:
            found = True
            print(
                f"tfdrop: {p.failed / name} is not there (taken away by hand?): nothing to "
                f"retry; removed its error file {error}",
                file=sys.stderr,
            )
    return found


def run(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args.config)
    except ConfigError as exc:
        return config_failed(exc)
    pipes = _selected(config.pipelines, args.pipeline)
    if not pipes:
        known = ", ".join(p.name for p in config.pipelines)
        return fail(f"no pipeline named {args.pipeline!r}", hint=f"the pipelines: {known}")
    configure_logging(log_format=config.daemon.log_format, level=config.daemon.log_level)
    targets = _targets(pipes, args)
    if isinstance(targets, str):
        if _remove_orphans(pipes, args):
            return 0
        return fail(targets, hint="list them with: ls " + " ".join(str(p.failed) for p in pipes))
    if not targets:
        print("tfdrop: nothing to retry: failed/ is empty", file=sys.stderr)
        return 0
    return _retry_all(targets)


def _retry_all(targets: list[_Target]) -> int:
    for cfg, name in targets:
        if not cfg.drop.is_dir():
            return fail(f"pipeline {cfg.name}: the drop folder {cfg.drop} is not there")
        try:
            retry_input(cfg, name)
        except OSError as exc:
            return fail(f"{cfg.failed / name}: cannot move it back: {exc.strerror or exc}")
    return 0

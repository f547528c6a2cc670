"""One claimed drop, end to end: hash, convert, publish, route. Runs in a worker thread.

Follows SPEC.md "The daemon": converted (streamed) -> validated (``convert`` reads its output
back) -> published in the order ``<stem>.label_map.pbtxt``, ``<stem>.report.json``,
(``<stem>.preview.html`` with ``preview = N``), ``<stem>.zip``, each durable before the next,
so the archive appearing means its sidecars are there -> input to ``done/`` (or removed) or
to ``failed/`` with ``<name>.error.json``.
Bad input (:class:`~tfdrop.errors.DataError`) fails; an :class:`OSError` (full disk, a share
gone away) is transient: the input stays claimed and the service retries it later. This module
is the daemon's outermost job boundary, the one place where anything unexpected is caught and
turned into an error file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from tfdrop.codec.labelmap import format_label_map
from tfdrop.config import DaemonConfig, PipelineConfig
from tfdrop.convert import ConvertOptions, Progress, Report
from tfdrop.daemon.claim import Claimed, WorkArea, clean_job_folder, finish_job_folder
from tfdrop.daemon.fsops import (
    NameTooLongError,
    copy_replace,
    move_unique,
    move_with_error,
    publish_file,
    sha256_file,
    split_name,
    write_replace,
)
from tfdrop.daemon.isolate import convert_isolated
from tfdrop.daemon.ledger import BEING_WRITTEN, Entry, Ledger
from tfdrop.errors import TfdropError, UnsafeArchiveError
from tfdrop.pool import default_jobs
from tfdrop.preview import preview_path_of
from tfdrop.publish import NAME_MAX, name_bytes, name_fits

log = structlog.get_logger("tfdrop.daemon")

ARCHIVE_SUFFIX = ".zip"
LONGEST_SUFFIX = ".label_map.pbtxt"
"""The longest of the names published for one stem (``.zip``, ``.report.json``,
``.preview.html``, this)."""
SIDECARS = (".label_map.pbtxt", ".report.json", ".preview.html")
"""What is published beside an archive, before it (the preview only with ``preview = N``)."""


class JobCancelled(Exception):
    """Raised from the progress callback when the service aborts a job (shutdown)."""


class WaitForOther(Exception):
    """Another live instance is converting the same bytes; try again later."""


ETA_MIN_SECONDS = 1.0
ETA_MIN_ITEMS = 3
"""No time left is told before this long and this many items of converting: the first items'
rate (archive index read, the first images decoded) says nothing about the rest."""


def eta_seconds(done: int, total: int | None, elapsed: float, since: int = 0) -> float | None:
    """Seconds left at the rate of the ``done - since`` items of the last ``elapsed`` seconds;
    None while the total is unknown or the rate not yet told (:data:`ETA_MIN_SECONDS`,
    :data:`ETA_MIN_ITEMS`)."""
    if total is None or done - since < ETA_MIN_ITEMS or elapsed < ETA_MIN_SECONDS:
        return None
    return round(max(total - done, 0) * elapsed / (done - since), 1)


@dataclass(slots=True)
class EtaClock:
    """The rate of a conversion from its own first progress call (not from the job's start:
    hashing the drop and waiting for a process are no part of it)."""

    first: tuple[float, int] | None = None  # (time, items) of the first call

    def eta(self, items: int, total: int | None, now: float) -> float | None:
        if self.first is None:
            self.first = (now, items)
        start, since = self.first
        return eta_seconds(items, total, now - start, since)


def os_error_text(exc: OSError, name: str) -> str:
    """An OSError as text that names a file: its own, else the drop the job was working on
    (``os.utime``, a write or an fsync raise without one)."""
    return str(exc) if exc.filename is not None else f"{exc} (working on {name})"


def _json_bytes(doc: dict[str, Any]) -> bytes:
    """Readable UTF-8 JSON; a file name that is not UTF-8 (surrogate-escaped by Python) is
    written as a JSON escape, which reads back as the same name, instead of crashing."""
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode(
        "utf-8", "backslashreplace"
    )


Status = Literal["published", "duplicate", "failed", "retry", "waiting", "cancelled", "gone"]
"""How a job ended: published, a duplicate of a published input, failed (routed to ``failed/``),
to retry (a transient OS error), waiting (its claim is not yet free), cancelled (shutdown), or
gone (the input vanished before it was read)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a job ended (see :data:`Status`)."""

    status: Status
    detail: dict[str, Any] = field(default_factory=dict)


def workers_for(daemon: DaemonConfig, sharing: int | None = None) -> int:
    """The worker processes one job's conversion reads its drop with: ``job_workers``, or the
    cores this process may use spread over the jobs that share them, never more than the
    cores. ``sharing`` is how many jobs there are as this one starts (those running, this
    one and those queued to start, at most ``max_jobs``; None: ``max_jobs``): a lone drop
    gets every core, a burst of drops ``cores // max_jobs`` each (2 cores, 2 jobs: 1 each;
    8 cores, 2 jobs: 4 each). A job keeps what it started with: one that starts beside a
    lone job running on every core gets its share, and the two overlap until that one ends."""
    cores = default_jobs()
    if daemon.job_workers is not None:
        return min(daemon.job_workers, cores)
    jobs = daemon.max_jobs if sharing is None else min(max(sharing, 1), daemon.max_jobs)
    return max(1, cores // jobs)


@dataclass(slots=True)
class JobRunner:
    """Everything one job needs; :meth:`run` is called in a worker thread."""

    claimed: Claimed
    pipeline: PipelineConfig
    daemon: DaemonConfig
    work: WorkArea
    ledger: Ledger
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    entry: Entry | None = None
    items: int = 0  # done so far, as the progress callback last said (read by daemon/status)
    total: int | None = None  # the items the archive's index announces, when it tells
    sharing: int | None = None  # the jobs sharing the cores as it started (workers_for)

    def _check(self) -> None:
        if self.cancel.is_set():
            raise JobCancelled

    def _progress(self) -> Progress:
        last = time.monotonic()
        clock = EtaClock()

        def progress(items: int, total: int | None) -> None:
            nonlocal last
            self._check()
            self.items = items
            self.total = total
            now = time.monotonic()
            eta = clock.eta(items, total, now)
            if now - last >= self.daemon.progress_seconds:
                last = now
                elapsed = now - self.started
                log.info(
                    "job_progress",
                    items=items,
                    total=total,
                    elapsed_s=round(elapsed, 1),
                    eta_s=eta,
                )

        return progress

    def run(self) -> Outcome:
        try:
            return self._run()
        except Exception as exc:  # the outermost job boundary: sorted into outcomes below
            return self._outcome(exc)

    def _outcome(self, exc: Exception) -> Outcome:
        if self.cancel.is_set() or isinstance(exc, JobCancelled):
            # whatever an aborted conversion raised on its way out, the input is not at fault
            with contextlib.suppress(OSError):
                clean_job_folder(self.claimed)
            return Outcome("cancelled")
        if isinstance(exc, WaitForOther):
            return Outcome("waiting")
        if isinstance(exc, TfdropError):
            if exc.archive == str(self.claimed.input):
                exc.archive = self.claimed.name  # the name the user dropped, not our work path
            return self._fail(exc.at(archive=self.claimed.name).to_dict())
        if isinstance(exc, OSError) and exc.errno == errno.ENAMETOOLONG:
            # the same name fails the same way every time: retrying would convert forever
            return self._fail(
                {
                    "kind": NameTooLongError.kind,
                    "message": f"a file name is too long: {exc}",
                    "archive": self.claimed.name,
                    "hint": "rename the drop to a shorter name and drop it again",
                }
            )
        if isinstance(exc, OSError):
            with contextlib.suppress(OSError):
                clean_job_folder(self.claimed)  # retried anyway before the next attempt
            error = os_error_text(exc, self.claimed.name)
            return Outcome("retry", {"errno": exc.errno, "error": error, "kind": "os_error"})
        # a bug must not stop the daemon, nor retry forever: the input goes to failed/
        log.error("job_internal_error", exc_info=exc)
        return self._fail(
            {
                "kind": "internal_error",
                "message": f"{type(exc).__name__}: {exc}",
                "archive": self.claimed.name,
                "hint": "this is a bug in tfdrop; please report it with this file",
            }
        )

    # -- steps ----------------------------------------------------------------------------

    def _entry(self, digest: str) -> Entry | None:
        """Our pending entry for these bytes, or None when they were published already."""
        for _ in range(3):
            entry = self.ledger.get(digest)
            if entry is None:
                entry = self.ledger.begin(digest, self.claimed.name)
                if entry is not None:
                    return entry
                continue  # another instance created it just now: look again
            if entry.state == "published":
                return None
            if entry.instance == self.work.instance:
                return entry
            if entry.instance == BEING_WRITTEN or self.work.is_alive(entry.instance):
                raise WaitForOther
            return self.ledger.take_over(entry)
        raise WaitForOther

    def _run(self) -> Outcome:
        if self.claimed.input.is_symlink():
            # SPEC.md "Bad input": following it would read (and route) a file outside the
            # folders tfdrop was given; the link itself goes to failed/
            raise UnsafeArchiveError(
                "the drop is a symbolic link; tfdrop never follows links out of a drop folder",
                hint="copy the file itself into the drop folder",
            )
        if not self.claimed.input.exists():
            # moved away by hand while waiting for a retry: nothing left to do
            finish_job_folder(self.claimed)
            return Outcome("gone")
        clean_job_folder(self.claimed)  # leftovers of an attempt killed or aborted earlier
        p = self.pipeline
        before = self.claimed.input.stat()
        size = before.st_size
        digest = sha256_file(self.claimed.input, self._check)
        entry = self.entry = self._entry(digest)
        if entry is None:
            first = self.ledger.get(digest)
            if first is not None and self._published_by_us(first):
                # an earlier attempt of this job published, then could not route the input
                # (done/ replaced by a file): only the routing is left, and it is no duplicate
                log.info("publish_recovered", output=first.output)
                done = self._route_done()
                return Outcome("published", {"output": first.output, "moved_to": done})
            log.info(
                "duplicate_input",
                sha256=digest,
                published_as=first.output if first else None,
                first_source=first.source if first else None,
            )
            done = self._route_done()
            return Outcome("duplicate", {"sha256": digest, "moved_to": done})
        if entry.stem is not None and (p.output / f"{entry.stem}{ARCHIVE_SUFFIX}").exists():
            # a killed run of this job published already; only the bookkeeping is left
            self.ledger.published(entry, f"{entry.stem}{ARCHIVE_SUFFIX}")
            log.info("publish_recovered", output=f"{entry.stem}{ARCHIVE_SUFFIX}")
            done = self._route_done()
            return Outcome(
                "published", {"output": f"{entry.stem}{ARCHIVE_SUFFIX}", "moved_to": done}
            )

        self._check_name()
        self._ensure_output()
        out = self.claimed.folder / "out" / f"archive{ARCHIVE_SUFFIX}"
        out.parent.mkdir()
        tmp = self.claimed.folder / "tmp"
        tmp.mkdir()
        options = ConvertOptions(
            source_format=p.source_format,
            target_format=p.target_format,
            label_map=p.label_map,
            masks=p.masks,
            shards=p.shards,
            compression=p.compression,
            images=p.images,
            limits=p.limits,
            jobs=workers_for(self.daemon, self.sharing),
        )
        log.info("convert_started", size=size, sha256=digest, workers=options.jobs)
        report = convert_isolated(
            self.claimed.input,
            out,
            options,
            progress=self._progress(),
            check=self._check,
            workdir=tmp,
            memory=self.daemon.job_memory_mb << 20,
            preview=p.preview,
        )
        self._check_unchanged(before)
        out_size = out.stat().st_size
        # from here on only quick renames remain: a stop request lets them finish
        if entry.stem is None:
            entry = self.entry = self.ledger.reserve_stem(
                entry, split_name(self.claimed.name)[0], p.output, ARCHIVE_SUFFIX, LONGEST_SUFFIX
            )
        published = self._publish(entry, out, report, digest, size)
        done = self._route_done()
        detail = {
            "output": published,
            "items": report.items,
            "objects": report.objects,
            "warnings": len(report.warnings),
            "moved_to": done,
            "bytes_in": size,
            "bytes_out": out_size,
        }
        return Outcome("published", detail)

    def _published_by_us(self, first: Entry) -> bool:
        """Whether this very job (its claim) published the entry: its report names the job."""
        if first.stem is None:
            return False
        try:
            doc = json.loads((self.pipeline.output / f"{first.stem}.report.json").read_bytes())
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and doc.get("job") == self.claimed.job_id

    def _check_unchanged(self, before: os.stat_result) -> None:
        """A writer that kept the file open (a ``.tfrecord`` written in place, paused past the
        settle time) may have added to it while it converted: then the archive holds only part
        of it. Not published; retried, and the next attempt reads it whole."""
        now = self.claimed.input.stat()
        if (now.st_size, now.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise OSError(
                errno.EAGAIN,
                f"the drop changed while it was converted ({before.st_size} -> {now.st_size} "
                "bytes): still being written? converting it again",
            )

    def _check_name(self) -> None:
        """Fail before any conversion work when the output names cannot fit NAME_MAX."""
        stem = split_name(self.claimed.name)[0]
        if not name_fits(stem + LONGEST_SUFFIX):
            raise NameTooLongError(
                f"the output {stem}{LONGEST_SUFFIX} would be {name_bytes(stem + LONGEST_SUFFIX)}"
                f" bytes long, over the file system's {NAME_MAX}-byte name limit",
                hint=f"rename the drop to at most {NAME_MAX - len(LONGEST_SUFFIX) + 4} bytes "
                "(name and .zip) and drop it again",
            )

    def _ensure_output(self) -> None:
        """The output folder, made again if it was removed and ``create = true``; else an
        OSError (retried, and logged with each retry), found before any conversion work."""
        p = self.pipeline
        if p.output.is_dir():
            return
        if not p.create:
            raise FileNotFoundError(
                errno.ENOENT,
                "the output folder is missing and create = false; create it to go on",
                str(p.output),
            )
        p.output.mkdir(parents=True, exist_ok=True)
        log.warning("output_folder_recreated", output=str(p.output))

    def _publish(self, entry: Entry, archive: Path, report: Report, digest: str, size: int) -> str:
        assert entry.stem is not None
        p = self.pipeline
        doc = dict(report.to_dict())
        doc["source"] = self.claimed.name  # convert saw the work folder path
        doc["input"] = {"name": self.claimed.name, "sha256": digest, "size": size}
        doc["pipeline"] = p.name
        doc["job"] = self.claimed.job_id
        for attempt in range(3):
            stem = entry.stem
            assert stem is not None
            doc["output"] = f"{stem}{ARCHIVE_SUFFIX}"
            try:
                write_replace(
                    p.output / f"{stem}.label_map.pbtxt",
                    format_label_map(report.label_map).encode(),
                    self.work.instance,
                )
                write_replace(
                    p.output / f"{stem}.report.json", _json_bytes(doc), self.work.instance
                )
                if p.preview:
                    copy_replace(
                        preview_path_of(archive),
                        p.output / f"{stem}.preview.html",
                        self.work.instance,
                    )
                publish_file(archive, p.output / f"{stem}{ARCHIVE_SUFFIX}", self.work.instance)
            except FileExistsError:
                # someone put a file of that name there after we reserved it: take the next
                if attempt == 2:
                    raise
                for suffix in SIDECARS:
                    (p.output / f"{stem}{suffix}").unlink(missing_ok=True)
                entry = self.ledger.reserve_stem(
                    Entry(entry.sha256, "pending", entry.instance, None, entry.source),
                    stem,
                    p.output,
                    ARCHIVE_SUFFIX,
                    LONGEST_SUFFIX,
                )
                self.entry = entry
                continue
            except OSError:
                # disk full, a share gone: the job is retried, and until then no sidecar may
                # sit in the output folder without its archive (found by the disk-full test)
                for suffix in SIDECARS:
                    with contextlib.suppress(OSError):
                        (p.output / f"{stem}{suffix}").unlink(missing_ok=True)
                raise
            self.ledger.published(entry, f"{stem}{ARCHIVE_SUFFIX}")
            log.info(
                "archive_published",
                output=str(p.output / f"{stem}{ARCHIVE_SUFFIX}"),
                items=report.items,
                objects=report.objects,
                warnings=len(report.warnings),
                elapsed_s=round(time.monotonic() - self.started, 3),
            )
            return f"{stem}{ARCHIVE_SUFFIX}"
        raise AssertionError("unreachable")

    def _route_done(self) -> str | None:
        if self.pipeline.on_success == "delete":
            self.claimed.input.unlink()
            finish_job_folder(self.claimed)
            return None
        self.pipeline.done.mkdir(exist_ok=True)
        dst = move_unique(self.claimed.input, self.pipeline.done, self.claimed.name)
        finish_job_folder(self.claimed)
        return str(dst)

    def _fail(self, error: dict[str, Any]) -> Outcome:
        """Input to ``failed/`` with ``<name>.error.json``; forgets the ledger entry.

        The error file goes first (:func:`move_with_error`): a kill at any point leaves
        either the input claimed (failed again on restart) or both files in ``failed/``.
        """
        doc = dict(error)
        doc.update(
            pipeline=self.pipeline.name,
            source=self.claimed.name,
            job=self.claimed.job_id,
            time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        try:
            clean_job_folder(self.claimed)
            if self.entry is not None:
                self.ledger.forget(self.entry)
            self.pipeline.failed.mkdir(exist_ok=True)
            dst = move_with_error(
                self.claimed.input,
                self.pipeline.failed,
                self.claimed.name,
                _json_bytes(doc),
                job=self.claimed.job_id,
                instance=self.work.instance,
            )
        except OSError as exc:  # the input is still claimed: try again later
            text = os_error_text(exc, self.claimed.name)
            log.error("error_file_not_written", error=text, **doc)
            return Outcome("retry", {"errno": exc.errno, "error": text, "kind": "os_error"})
        with contextlib.suppress(OSError):  # a leftover folder is removed on restart
            finish_job_folder(self.claimed)
        return Outcome("failed", {**error, "moved_to": str(dst)})

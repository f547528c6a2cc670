"""The content-hash ledger: which input bytes were published under which output name.

Follows SPEC.md "never overwrite a published archive" and the issue's "same bytes again ->
duplicate; different file, same name -> ``<stem>-1.zip``". The ledger lives in the pipeline's
state folder, shared by every instance on the share, as one small file per entry so that
instances on several hosts never rewrite a common file:

- ``ledger/sha256/<hex>.json``: ``{"state": "pending"|"published", "instance", "stem", ...}``,
  created with O_EXCL when a job starts (so one instance converts given bytes at a time);
- ``ledger/names/<stem>``: created with O_EXCL to reserve an output stem for one hash.

A pending entry names its stem before anything is published, so a restarted job publishes
under the same name and skips an archive that its killed predecessor already published.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfdrop.daemon.fsops import NameTooLongError, write_replace
from tfdrop.publish import fsync_dir, name_bytes, name_fits

BEING_WRITTEN = "(being written)"
"""The instance of an entry that another instance is creating at this very moment."""
_FRESH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Entry:
    sha256: str
    state: str  # "pending" | "published"
    instance: str
    stem: str | None = None
    source: str = ""
    output: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "state": self.state,
            "instance": self.instance,
            "stem": self.stem,
            "source": self.source,
            "output": self.output,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


class Ledger:
    def __init__(self, state: Path, instance: str) -> None:
        self.root = state / "ledger"
        self.hashes = self.root / "sha256"
        self.names = self.root / "names"
        self.instance = instance
        self.root.mkdir(parents=True, exist_ok=True)
        self.ensure()

    def ensure(self) -> None:
        """Make the ledger's folders again if they were removed, inside the state folder only:
        never the state folder or what holds it (a drop folder removed right after
        :meth:`~tfdrop.daemon.claim.WorkArea.ensure` made its state folder whole again came
        back with ``mkdir(parents=True)``). FileNotFoundError when the state folder is gone:
        the caller tries again on its next tick."""
        for folder in (self.root, self.hashes, self.names):
            folder.mkdir(exist_ok=True)

    def _path(self, sha256: str) -> Path:
        return self.hashes / f"{sha256}.json"

    def get(self, sha256: str) -> Entry | None:
        try:
            data = json.loads(self._path(sha256).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            # torn: being written by :meth:`begin` right now, or left so by a crash
            fresh = time.time() - self._path(sha256).stat().st_mtime < _FRESH_SECONDS
            return Entry(sha256, "pending", BEING_WRITTEN if fresh else "")
        return Entry(
            sha256=sha256,
            state=str(data.get("state", "pending")),
            instance=str(data.get("instance", "")),
            stem=data.get("stem"),
            source=str(data.get("source", "")),
            output=data.get("output"),
        )

    def begin(self, sha256: str, source: str) -> Entry | None:
        """Create a pending entry for us; None when an entry exists already."""
        entry = Entry(sha256, "pending", self.instance, source=source)
        try:
            fd = os.open(self._path(sha256), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(entry.to_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(self.hashes)
        return entry

    def put(self, entry: Entry) -> Entry:
        write_replace(self._path(entry.sha256), json.dumps(entry.to_dict()).encode(), self.instance)
        return entry

    def take_over(self, entry: Entry) -> Entry:
        """Make a dead instance's pending entry ours (same stem)."""
        return self.put(Entry(entry.sha256, "pending", self.instance, entry.stem, entry.source))

    def reserve_stem(
        self, entry: Entry, stem: str, output: Path, suffix: str, longest: str | None = None
    ) -> Entry:
        """Reserve the first free ``stem``, ``stem-1``, ... for this entry and record it.

        ``longest`` is the longest suffix published for a stem: a candidate that would make
        that name pass NAME_MAX raises :class:`NameTooLongError` (longer ones only grow).
        """
        for n in range(10_000):
            cand = stem if n == 0 else f"{stem}-{n}"
            if not name_fits(cand + (longest or suffix)):
                raise NameTooLongError(
                    f"no output name for {stem!r} fits the file system's name limit "
                    f"({cand}{longest or suffix} is {name_bytes(cand + (longest or suffix))} "
                    "bytes)",
                    hint="rename the drop to a shorter name and drop it again",
                )
            if (output / f"{cand}{suffix}").exists():
                continue
            marker = self.names / cand
            try:
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if marker.read_text(encoding="utf-8").strip() != entry.sha256:
                    continue
            else:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(entry.sha256 + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                fsync_dir(self.names)
            return self.put(Entry(entry.sha256, "pending", self.instance, cand, entry.source))
        raise FileExistsError(f"no free output name for {stem}")

    def published(self, entry: Entry, output: str) -> Entry:
        return self.put(
            Entry(entry.sha256, "published", self.instance, entry.stem, entry.source, output)
        )

    def forget(self, entry: Entry) -> None:
        """Drop an entry whose input failed (the same bytes again should fail again, loudly)."""
        if entry.stem is not None:
            (self.names / entry.stem).unlink(missing_ok=True)
        self._path(entry.sha256).unlink(missing_ok=True)

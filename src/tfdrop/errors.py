"""The one exception tree of tfdrop.

Every error a user can meet is a :class:`TfdropError`; errors about bad input data also
subclass :class:`ValueError` (STYLE.md habit 4). Errors carry where they happened as fields
(file, archive, member, record index, byte offset, item, object, key, line), not only in the
message, so the CLI and the daemon's ``<name>.error.json`` can say *what* and *where* without
parsing text.

Inner layers raise with what they know (the framing decoder knows the offset and record index);
outer layers add the rest with :meth:`TfdropError.at` (the shell knows the file and the member).
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

_LOCATION_FIELDS = ("file", "archive", "member", "record", "offset", "item", "key", "line", "obj")
# The JSON names of fields whose attribute name differs (``object`` would shadow the builtin).
_JSON_NAMES = {"obj": "object"}


class TfdropError(Exception):
    """Root of every error tfdrop raises on purpose."""

    kind: ClassVar[str] = "error"
    default_hint: ClassVar[str] = ""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,  # a file read on its own: a config file, a label map file
        archive: str | None = None,  # the input being converted (a zip, a folder, a TFRecord)
        member: str | None = None,
        record: int | None = None,
        offset: int | None = None,
        item: str | None = None,
        key: str | None = None,
        line: int | None = None,
        obj: int | None = None,  # the index of an object within an item
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.archive = archive
        self.member = member
        self.record = record
        self.offset = offset
        self.item = item
        self.key = key
        self.line = line
        self.obj = obj
        self.hint: str = type(self).default_hint if hint is None else hint

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its fields, not by calling __init__ again (subclasses take other
        # arguments): a worker process's error reaches the parent whole (tfdrop.units).
        return (_restore, (type(self), self.message, dict(self.__dict__)))

    def at(self, **where: Any) -> Self:
        """Fill location fields that are still unknown; fields already set are kept."""
        for name, value in where.items():
            if name not in _LOCATION_FIELDS:
                raise TypeError(f"unknown location field {name!r}")
            if getattr(self, name) is None and value is not None:
                setattr(self, name, value)
        return self

    def location(self) -> dict[str, Any]:
        """The known location fields, in a stable order, by their JSON names (``object``)."""
        return {
            _JSON_NAMES.get(name, name): getattr(self, name)
            for name in _LOCATION_FIELDS
            if getattr(self, name) is not None
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: kind, message, location fields and hint."""
        out: dict[str, Any] = {"kind": self.kind, "message": self.message}
        out.update(self.location())
        if self.hint:
            out["hint"] = self.hint
        return out

    def __str__(self) -> str:
        parts = []
        if self.file is not None:
            parts.append(self.file)
        if self.archive is not None:
            parts.append(self.archive)
        if self.member is not None:
            parts.append(f"member {self.member}")
        if self.record is not None:
            parts.append(f"record {self.record}")
        if self.offset is not None:
            parts.append(f"offset {self.offset}")
        if self.item is not None:
            parts.append(f"item {self.item}")
        if self.obj is not None:
            parts.append(f"object {self.obj}")
        if self.key is not None:
            parts.append(f"key {self.key}")
        if self.line is not None:
            parts.append(f"line {self.line}")
        where = ", ".join(parts)
        return f"{where}: {self.message}" if where else self.message


def _restore(cls: type[TfdropError], message: str, state: dict[str, Any]) -> TfdropError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


def _subclasses(cls: type[TfdropError]) -> list[type[TfdropError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


def error_from_dict(data: dict[str, Any]) -> TfdropError:
    """The error :meth:`TfdropError.to_dict` describes, rebuilt (the first class of its
    ``kind``, its message, location fields, hint and any other fields), e.g. from a worker
    that could only send text (tfdrop.beam)."""
    kind = data.get("kind")
    cls = next((c for c in _subclasses(TfdropError) if c.kind == kind), TfdropError)
    fields: dict[str, Any] = dict.fromkeys(_LOCATION_FIELDS)
    names = {_JSON_NAMES.get(n, n): n for n in _LOCATION_FIELDS}
    for key, value in data.items():
        if key not in ("kind", "message"):
            fields[names.get(key, key)] = value
    fields.setdefault("hint", cls.default_hint)
    message = str(data.get("message", ""))
    return _restore(cls, message, {"message": message, **fields})


class DataError(TfdropError, ValueError):
    """The input is malformed. Retrying will not help; the input goes to ``failed/``."""

    kind = "bad_input"


# --- TFRecord framing -------------------------------------------------------------------------


class RecordError(DataError):
    """A TFRecord frame is broken."""

    kind = "bad_record"


class CrcMismatchError(RecordError):
    """A masked CRC-32C did not match; ``part`` (one subclass each) says ``length`` or ``data``."""

    kind = "crc_mismatch"
    default_hint = "the file is corrupted; export or copy it again"
    part: ClassVar[str] = ""


class LengthCrcMismatchError(CrcMismatchError):
    """The masked CRC-32C of a record's 8 length bytes did not match."""

    part: ClassVar[str] = "length"


class DataCrcMismatchError(CrcMismatchError):
    """The masked CRC-32C of a record's data did not match."""

    part: ClassVar[str] = "data"


class TruncatedRecordError(RecordError):
    """The input ended inside a record."""

    kind = "truncated_record"
    default_hint = "the file is incomplete; wait for the copy to finish or export it again"


class RecordTooLargeError(RecordError):
    """A record's length field is over the configured cap."""

    kind = "record_too_large"
    default_hint = "the length field is corrupt, or raise the record size cap"


class CompressionError(DataError):
    """A GZIP or ZLIB stream is corrupt or ends early."""

    kind = "bad_compression"


class DecoderDeadError(TfdropError):
    """A decoder was used after it raised; it must be discarded (h11's ERROR state)."""

    kind = "decoder_dead"


# --- Examples, schema, label maps --------------------------------------------------------------


class ExampleError(DataError):
    """A record is not a parseable ``tf.train.Example``, or a feature has the wrong type."""

    kind = "bad_example"


class SchemaError(DataError):
    """An Example parses but breaks the Object Detection API's expectations."""

    kind = "schema"


class LabelMapError(DataError):
    """A ``label_map.pbtxt`` cannot be parsed or is inconsistent."""

    kind = "bad_label_map"


class UnknownLabelError(DataError):
    """A label is used that the pinned label map does not have."""

    kind = "unknown_label"
    default_hint = "add the label to the pipeline's label map, or fix the annotation"


# --- Archives and formats ----------------------------------------------------------------------


class ArchiveError(DataError):
    """A zip is broken, or breaks a safety cap."""

    kind = "bad_archive"


class UnsafeArchiveError(ArchiveError):
    """A zip member would escape its folder, is a link, or the archive looks like a bomb."""

    kind = "unsafe_archive"
    default_hint = "rejected for safety; re-create the zip without links or absolute paths"


class MemberNotFoundError(ArchiveError):
    """A member that the annotations (or the caller) name is not in the archive."""

    kind = "missing_member"


class FormatError(DataError):
    """An annotation file is malformed for its format."""

    kind = "bad_annotation"


class DetectError(DataError):
    """The source format of an archive could not be recognised."""

    kind = "unknown_format"
    default_hint = "name the source format explicitly (--from / from = ...)"


class LimitExceededError(DataError):
    """The input needs more than one of the job's limits allows (:mod:`tfdrop.limits`).

    ``limit`` names the limit, ``value`` is what the input needed (at least), ``cap`` the limit
    in force. Raised before the memory is allocated or the work done.
    """

    kind = "limit_exceeded"

    def __init__(
        self, message: str, *, limit: str, value: int | float, cap: int, **where: Any
    ) -> None:
        where.setdefault(
            "hint",
            f"if the input is genuine, raise the limit: [limits] {limit} = N in the config, "
            f"or --limit {limit}=N on the command line",
        )
        super().__init__(message, **where)
        self.limit = limit
        self.value = value
        self.cap = cap

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out.update(limit=self.limit, value=self.value, cap=self.cap)
        return out


class WorkerDiedError(DataError):
    """A process converting part of a job died (killed, out of memory) before it answered."""

    kind = "worker_died"
    default_hint = (
        "the conversion ran out of memory or was killed; lower the job's limits or, if the "
        "input is genuine, give it more memory ([daemon] job_memory_mb for the daemon)"
    )


class ValidationError(TfdropError):
    """The written archive did not read back as written. Not a data error: tfdrop wrote
    something it cannot read, so the archive is never published."""

    kind = "validation"
    default_hint = "this is a bug in tfdrop; please report it with the input"


class ConfigError(TfdropError):
    """The configuration is invalid: names the file, the key and what is allowed."""

    kind = "config"

"""``validate``'s check of one record, in two halves: what the record says on its own
(:func:`own_problems`: framing passed, then the OD schema, class ids over int32), and what it
says against the records before it (:meth:`LabelTable.observe`, without a label map). A worker
process checking a range of records (:mod:`tfdrop.cli.checkunits`) makes the first half; the
parent adds the second in record order, so the problems are the ones a single pass names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from tfdrop.codec.example import LABEL, TEXT, parse_example
from tfdrop.codec.labeltable import LabelTable
from tfdrop.codec.model import LabelMap
from tfdrop.codec.schema import Fast, Problem, check_parsed
from tfdrop.errors import DataError
from tfdrop.handoff import MAX_CLASS_ID, class_id_problem


class Own(NamedTuple):
    """One record's own problems, in order around the label table's: ``before`` (schema),
    then the table's, then ``after`` (class ids over int32); the class texts and ids for the
    table (None: the record did not parse, the table has nothing to say)."""

    before: list[Problem]
    after: list[Problem]
    texts: Sequence[bytes] | None
    ids: Sequence[int] | None


def own_problems(rec: bytes, fast: Fast | None, label_map: LabelMap | None, cap: int) -> Own:
    """``fast``: what the all-clear check found when it passed the record and its image's
    SHA-256 matched, else None (the full parse then names the problems)."""
    if fast is not None:
        return Own([], id_problems(fast.ids), fast.texts, fast.ids)
    try:
        parsed = parse_example(rec, max_values_per_feature=cap, strict=True)
    except DataError as exc:
        return Own([Problem(exc.key or "", exc.message)], [], None, None)
    ids = parsed.lists.get(LABEL)
    return Own(check_parsed(parsed, label_map), id_problems(ids), parsed.lists.get(TEXT), ids)


def record_problems(own: Own, table: LabelTable | None, where: str) -> list[Problem]:
    """All of a record's problems: its own, and (``table``: no label map) its class ids and
    texts against the records before it (``where`` names it in later messages)."""
    if table is None:
        return own.before + own.after
    return own.before + table.observe(own.texts, own.ids, where) + own.after


def id_problems(ids: Sequence[int] | None) -> list[Problem]:
    """Class ids over int32 (a label map's ids are checked against the map instead)."""
    if not ids or max(ids) <= MAX_CLASS_ID:
        return []
    return [Problem(LABEL, why, i) for i, v in enumerate(ids) if (why := class_id_problem(v))]

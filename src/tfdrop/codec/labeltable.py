"""Class ids and texts across records: one text per id and one id per text.

Without a label map nothing says which id a class text has, so the records must agree among
themselves: record 0 with id 1 "cat" and record 1 with id 1 "dog" (or "cat" with ids 1 and
2) fit no label map. :class:`LabelTable` remembers the first record of each pair and names
the contradiction; it holds at most ``max_labels`` texts (the job budget's cap).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tfdrop.codec.example import LABEL, TEXT
from tfdrop.codec.schema import Problem
from tfdrop.errors import LimitExceededError


@dataclass(slots=True)
class LabelTable:
    """The text->id and id->text pairs seen so far, each with where it was first seen."""

    max_labels: int
    ids: dict[bytes, tuple[int, str]] = field(default_factory=dict)
    texts: dict[int, tuple[bytes, str]] = field(default_factory=dict)
    known: set[tuple[bytes, int]] = field(default_factory=set)
    """The (text, id) pairs both dicts hold: a record of only these has nothing to say."""

    def observe(
        self, texts: Sequence[bytes] | None, ids: Sequence[int] | None, where: str
    ) -> list[Problem]:
        """The contradictions of one record's objects with the records before it (``where``
        names this record in later messages). Objects without both a text and an id >= 1
        are left out."""
        if not texts or not ids:
            return []
        if set(zip(texts, ids, strict=False)) <= self.known:
            return []  # most records: one set operation instead of a loop over the objects
        out: list[Problem] = []
        for i, (text, label_id) in enumerate(zip(texts, ids, strict=False)):
            if not text or label_id < 1:
                continue
            seen_id = self.ids.get(text)
            seen_text = self.texts.get(label_id)
            name = text.decode("utf-8", "replace")
            if seen_id is not None and seen_id[0] != label_id:
                out.append(
                    Problem(
                        LABEL,
                        f"{name!r} has id {label_id} here but id {seen_id[0]} in "
                        f"{seen_id[1]}: no label map fits both",
                        i,
                    )
                )
            elif seen_text is not None and seen_text[0] != text:
                other = seen_text[0].decode("utf-8", "replace")
                out.append(
                    Problem(
                        TEXT,
                        f"id {label_id} is {name!r} here but {other!r} in "
                        f"{seen_text[1]}: no label map fits both",
                        i,
                    )
                )
            elif seen_id is None:
                self._add(text, label_id, where)
        return out

    def _add(self, text: bytes, label_id: int, where: str) -> None:
        if len(self.ids) >= self.max_labels:
            name, n, cap = "max_labels", len(self.ids) + 1, self.max_labels
            raise LimitExceededError(
                f"{name} is {cap}, and this input needs at least {n}", limit=name, value=n, cap=cap
            )
        self.ids[text] = (label_id, where)
        self.texts.setdefault(label_id, (text, where))  # absent, or already this text
        self.known.add((text, label_id))

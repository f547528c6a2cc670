"""The preview page's HTML, in pieces written one after the other (header, one card per item,
footer), so the page streams to disk. Self-contained: pictures are ``data:`` URIs, the style
sheet is inline, there is no script, and no link leaves the page (only ``#item-N`` anchors)."""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from tfdrop.codec.model import Annotation, Item
from tfdrop.handoff import Tally
from tfdrop.preview.draw import Drawn
from tfdrop.preview.palette import hex_colour, label_colour
from tfdrop.preview.scan import Entry

TABLE_LABELS: Final = 200
"""Labels (rows) of the page's label table; the rest are one "... N more labels" row."""
TABLE_SUBSETS: Final = 50
"""Subsets (columns) of the label table; the rest are one "... N more subsets" column."""

_STYLE: Final = """
body{font:14px/1.4 system-ui,sans-serif;margin:1em;background:#f4f4f4;color:#222}
h1{font-size:1.3em;margin:.2em 0}
table{border-collapse:collapse;margin:.5em 1em .5em 0;display:inline-table;vertical-align:top}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right;background:#fff}
th{background:#eee}td.l{text-align:left}
.sw{display:inline-block;width:.9em;height:.9em;border:1px solid #0006;margin-right:4px;
vertical-align:-2px}
.grid{display:flex;flex-wrap:wrap;gap:12px;margin-top:1em}
figure{margin:0;background:#fff;border:2px solid #ddd;padding:6px;width:324px}
figure.bad{border-color:#d22}
figure img{display:block;margin:auto;max-width:320px}
figcaption{font-size:12px;word-break:break-all}
ul{margin:.2em 0;padding-left:1.2em}
.problems li,.stop{color:#b00}
.notes li{color:#555}
.flag{font-size:11px;background:#eee;border-radius:3px;padding:0 3px;margin-left:3px}
"""


def esc(text: str) -> str:
    """HTML-escaped text (a name that is not valid UTF-8 keeps its escapes)."""
    return html.escape(text.encode("utf-8", "backslashreplace").decode("utf-8"))


@dataclass(slots=True)
class Counts:
    """What the whole archive holds, counted in one streamed pass (nothing decoded)."""

    items: int = 0
    unreadable: int = 0
    objects: int = 0
    matching: int = 0
    tally: Tally = field(default_factory=Tally)  # per subset and label: the report's counts
    labels: Counter[str] = field(default_factory=Counter)
    label_ids: dict[str, int] = field(default_factory=dict)
    warning_counts: dict[str, int] = field(default_factory=dict)
    stops: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def subsets(self) -> Counter[str]:
        """Items per subset."""
        return self.tally.items

    def in_subset(self, label: str, subset: str) -> int:
        """Objects of ``label`` in ``subset``."""
        return self.tally.objects.get(subset, Counter())[label]

    def add(self, item: Item) -> None:
        self.items += 1
        self.objects += len(item.objects)
        labels = [obj.label for obj in item.objects]
        self.tally.add(item.subset, labels)
        self.labels.update(labels)
        for obj in item.objects:
            if obj.label_id:
                self.label_ids.setdefault(obj.label, obj.label_id)


def _swatch(label: str) -> str:
    return f'<span class="sw" style="background:{hex_colour(label_colour(label))}"></span>'


def _label_table(counts: Counts) -> Iterator[str]:
    """The label x subset table, a row at a time: at most :data:`TABLE_LABELS` labels (the
    most used) x :data:`TABLE_SUBSETS` subsets; the rest summarised in one row/column."""
    every = sorted(counts.subsets)
    subsets = every[:TABLE_SUBSETS]
    more = len(every) - len(subsets)
    head = "".join(f"<th>{esc(s)}</th>" for s in subsets)
    more_head = f"<th>... {more} more subsets</th>" if more else ""
    yield f"<table><tr><th>label</th><th>id</th>{head}{more_head}<th>objects</th></tr>"
    ranked = sorted(counts.labels.items(), key=lambda kv: (-kv[1], kv[0]))
    for label, n in ranked[:TABLE_LABELS]:
        cells = "".join(f"<td>{counts.in_subset(label, s)}</td>" for s in subsets)
        if more:
            cells += f"<td>{n - sum(counts.in_subset(label, s) for s in subsets)}</td>"
        ident = counts.label_ids.get(label, "")
        yield (
            f'<tr><td class="l">{_swatch(label)}{esc(label)}</td><td>{ident}</td>{cells}'
            f"<td>{n}</td></tr>"
        )
    rest = ranked[TABLE_LABELS:]
    if rest:
        objects = sum(n for _, n in rest)
        span = len(subsets) + (2 if more else 1)
        yield (
            f'<tr><td class="l" colspan="{span + 1}">... {len(rest)} more labels</td>'
            f"<td>{objects}</td></tr>"
        )
    yield "</table>"


def _subset_table(counts: Counts) -> Iterator[str]:
    yield "<table><tr><th>subset</th><th>items</th></tr>"
    ranked = sorted(counts.subsets.items())
    for s, n in ranked[:TABLE_LABELS]:
        yield f'<tr><td class="l">{esc(s)}</td><td>{n}</td></tr>'
    rest = ranked[TABLE_LABELS:]
    if rest:
        yield (
            f'<tr><td class="l">... {len(rest)} more subsets</td>'
            f"<td>{sum(n for _, n in rest)}</td></tr>"
        )
    yield "</table>"


def header(title: str, fmt: str, counts: Counts, shown_note: str) -> Iterator[str]:
    """The page up to the first card, in pieces: counts per subset and per label over the
    archive (the tables bounded: a page of 100,000 labels x 1,000 subsets stays small)."""
    yield "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>tfdrop preview: {esc(title)}</title>",
            f"<style>{_STYLE}</style></head><body>",
            f"<h1>{esc(title)}</h1>",
            f"<p>{esc(fmt)}: {counts.items} items, {counts.objects} objects, "
            f"{len(counts.labels)} labels"
            + (f", {counts.unreadable} unreadable records" if counts.unreadable else "")
            + f". {esc(shown_note)}</p>\n",
        ]
    )
    yield from _subset_table(counts)
    yield "\n"
    yield from _label_table(counts)
    yield "\n"
    lines = []
    if counts.warning_counts:
        listed = ", ".join(f"{esc(k)}: {n}" for k, n in sorted(counts.warning_counts.items()))
        lines.append(f"<p>reader warnings: {listed}</p>")
    if counts.warnings:
        lines.append("<ul>" + "".join(f"<li>{esc(w)}</li>" for w in counts.warnings) + "</ul>")
    for stop in counts.stops:
        lines.append(f'<p class="stop">reading stopped: {esc(stop)}</p>')
    lines.append('<p><a href="#problems">problems in the items shown</a></p>')
    lines.append('<div class="grid">')
    yield "\n".join(lines) + "\n"


def _flags(obj: Annotation) -> str:
    flags = [
        name
        for name, on in (
            ("difficult", obj.difficult),
            ("truncated", obj.truncated),
            ("occluded", obj.occluded),
            ("crowd", obj.is_crowd),
            ("mask", obj.mask is not None),
        )
        if on
    ]
    return "".join(f'<span class="flag">{f}</span>' for f in flags)


def _keypoints(obj: Annotation) -> str:
    if not obj.keypoints:
        return ""
    shown = [p.name or str(i) for i, p in enumerate(obj.keypoints) if p.visibility > 0]
    hidden = len(obj.keypoints) - len(shown)
    text = ", ".join(shown) + (f" ({hidden} not labelled)" if hidden else "")
    return f"<br>keypoints: {esc(text)}"


def _object(obj: Annotation) -> str:
    ident = f" <small>id {obj.label_id}</small>" if obj.label_id else ""
    return f"<li>{_swatch(obj.label)}{esc(obj.label)}{ident}{_flags(obj)}{_keypoints(obj)}</li>"


def card(entry: Entry, drawn: Drawn | None, problems: list[str]) -> str:
    """One item: its drawn picture, name, subset, size, objects and problems."""
    bad = ' class="bad"' if problems else ""
    out = [f'<figure id="item-{entry.index}"{bad}>']
    if drawn is not None:
        data = base64.b64encode(drawn.data).decode("ascii")
        out.append(
            f'<img src="data:{drawn.mime};base64,{data}" width="{drawn.width}" '
            f'height="{drawn.height}" alt="{esc(entry.where)}">'
        )
    out.append(f"<figcaption><b>{esc(entry.where)}</b>")
    item = entry.item
    if item is not None:
        image = "" if item.image else ", no image"
        out.append(f"<br>{esc(item.subset)}, {item.width} x {item.height}{image}")
        out.append("<ul>" + "".join(_object(o) for o in item.objects) + "</ul>")
    if drawn is not None and drawn.notes:
        out.append('<ul class="notes">' + "".join(f"<li>{esc(n)}</li>" for n in drawn.notes))
        out.append("</ul>")
    if problems:
        out.append('<ul class="problems">')
        out += [f"<li>{esc(p)}</li>" for p in problems]
        out.append("</ul>")
    out.append("</figcaption></figure>\n")
    return "".join(out)


def footer(problems: list[tuple[int, str, str]]) -> str:
    """The end of the page: every shown item with problems, linked to its card."""
    rows = [
        f'<li><a href="#item-{index}">{esc(where)}</a>: {esc(first)}</li>'
        for index, where, first in problems
    ]
    listed = "<ul>" + "".join(rows) + "</ul>" if rows else "<p>none</p>"
    return f'</div>\n<h2 id="problems">problems in the items shown</h2>\n{listed}\n</body></html>\n'

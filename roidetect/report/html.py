"""HTML building blocks for a single self-contained page: inline CSS, images as data URIs.

The page needs nothing outside itself: no scripts, fonts, style sheets or images are
fetched, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

STYLE = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #1d232a; background: #f3f4f6;
       margin: 0; line-height: 1.45; font-size: 14px; }
main { max-width: 1260px; margin: 0 auto; padding: 20px 28px 48px; }
header { background: #18212b; color: #f5f7fa; padding: 22px 28px; }
header .inner { max-width: 1260px; margin: 0 auto; }
header h1 { margin: 0 0 4px; font-size: 24px; font-weight: 600; }
header p { margin: 2px 0; color: #c3ccd6; }
header code { background: rgba(255,255,255,.12); color: #e6edf3; }
nav { margin-top: 10px; }
nav a { color: #8cc8ff; margin-right: 16px; text-decoration: none; font-size: 13px; }
section { background: white; border-radius: 6px; padding: 16px 22px 20px; margin-top: 20px;
          box-shadow: 0 1px 3px rgba(0,0,0,.08); }
h2 { font-size: 18px; margin: 0 0 10px; font-weight: 600; }
h3 { font-size: 15px; margin: 16px 0 6px; font-weight: 600; }
p.note { color: #5a6570; margin: 4px 0 10px; }
.grid { display: flex; flex-wrap: wrap; gap: 18px 28px; align-items: flex-start; }
.grid > div { min-width: 260px; flex: 1 1 300px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { padding: 3px 9px; border-bottom: 1px solid #e3e6ea; vertical-align: top; }
th { text-align: left; background: #f0f2f5; font-weight: 600; white-space: nowrap; }
th.group { text-align: center; background: #e4e8ee; border-left: 2px solid white; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fafbfc; }
table.kv th { background: none; color: #5a6570; font-weight: normal; padding-left: 0; }
table.kv td { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; }
figure { margin: 6px 0 0; }
figure img { max-width: 100%; height: auto; display: block; border: 1px solid #e3e6ea; }
figcaption { color: #5a6570; font-size: 12.5px; margin-top: 5px; }
.chip { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; color: #111;
        margin: 1px 2px 1px 0; border: 1px solid rgba(0,0,0,.25); white-space: nowrap; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px;
          border: 1px solid rgba(0,0,0,.35); vertical-align: -1px; }
.thumbs { display: flex; flex-wrap: wrap; gap: 16px; }
.thumbs figure { width: 560px; max-width: 100%; }
.warn { color: #8a4b00; background: #fff4e0; padding: 6px 10px; border-radius: 4px; display: inline-block; }
code { font-size: 12.5px; background: #f0f2f5; padding: 0 3px; border-radius: 3px; word-break: break-all; }
footer { color: #7a8590; font-size: 12px; margin-top: 26px; }
"""


class Markup(str):
    """A string that is already HTML and must not be escaped again."""


@dataclass(frozen=True)
class Section:
    """One part of the page: an anchor id, a heading and its HTML body."""

    anchor: str
    heading: str
    body: str


def text(value: Any) -> str:
    """HTML-escape ``value``'s string form."""
    return html.escape(str(value), quote=True)


def format_value(value: Any) -> str:
    """A table cell's text: integers as they are, floats to four significant digits, NaN empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if hasattr(value, "item"):  # numpy scalars
        return format_value(value.item())
    return str(value)


def is_number(value: Any) -> bool:
    """Whether a cell holds a number (Python or numpy; booleans are not numbers here)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) or getattr(getattr(value, "dtype", None), "kind", "") in ("i", "u", "f")


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI holding the image itself."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure(png: bytes, alt: str, caption: str = "") -> str:
    """An embedded image with an optional caption (``caption`` is HTML)."""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(png)}" alt="{text(alt)}">{cap}</figure>'


def chip(label: str, colour: str) -> str:
    """A small rounded label on a coloured background."""
    return f'<span class="chip" style="background:{colour}">{text(label)}</span>'


def swatch(colour: str) -> str:
    return f'<span class="swatch" style="background:{colour}"></span>'


def key_value_table(items: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of names and values; empty values are left out, and so is an empty table.

    Values are escaped unless they are :class:`Markup`.
    """
    rows = "".join(f"<tr><th>{text(k)}</th><td>{v if isinstance(v, Markup) else text(format_value(v))}</td></tr>"
                   for k, v in items if format_value(v) != "")
    return f'<table class="kv">{rows}</table>' if rows else ""


def table(header: Sequence[str], rows: Iterable[Sequence[Any]],
          groups: Sequence[tuple[str, int]] | None = None) -> str:
    """A data table; numbers are right-aligned, :class:`Markup` cells are inserted as HTML.

    Parameters
    ----------
    header : column titles
    rows : cell values, one sequence per row
    groups : optional (title, number of columns) spanning the header, left to right
    """
    head = ""
    if groups:
        head += "<tr>" + "".join(f'<th class="group" colspan="{n}">{text(t)}</th>' for t, n in groups) + "</tr>"
    head += "<tr>" + "".join(f"<th>{text(h)}</th>" for h in header) + "</tr>"
    body = []
    for row in rows:
        cells = []
        for value in row:
            if isinstance(value, Markup):
                cells.append(f"<td>{value}</td>")
            elif is_number(value):
                cells.append(f'<td class="num">{text(format_value(value))}</td>')
            else:
                cells.append(f"<td>{text(format_value(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'


def page(title: str, lines: Sequence[str], sections: Sequence[Section], footer: str) -> str:
    """The whole HTML document: a dark header with ``title`` and ``lines``, a menu, the sections."""
    nav = "".join(f'<a href="#{s.anchor}">{text(s.heading)}</a>' for s in sections)
    header_lines = "".join(f"<p>{line}</p>" for line in lines)
    body = "".join(f'<section id="{s.anchor}"><h2>{text(s.heading)}</h2>{s.body}</section>' for s in sections)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{text(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head><body>"
        f'<header><div class="inner"><h1>{text(title)}</h1>{header_lines}<nav>{nav}</nav></div></header>'
        f"<main>{body}<footer>{footer}</footer></main></body></html>\n"
    )

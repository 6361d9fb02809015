"""Safe text for people's documents: anything that came from an input (device ids, MPxNs, details, names) is
escaped for Markdown exactly as html.escape does it for HTML, so a crafted value cannot add a link, a heading, a
table column or markup to a letter, worklist or report."""

from __future__ import annotations

import re
from html import escape as _html_escape

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|>~:])")


def md(value) -> str:
    """Markdown-inert text: special characters backslash-escaped, <, > and & as entities, newlines as spaces."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"[\r\n\t]+", " ", text)
    return _MD_SPECIAL.sub(r"\\\1", text)


def html(value) -> str:
    return _html_escape("" if value is None else str(value))


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table with every cell escaped (header cells are the tool's own words)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def html_table(header: list[str], rows: list[list], table_id: str = "") -> str:
    head = "".join(f"<th>{html(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table{f" id={chr(34)}{html(table_id)}{chr(34)}" if table_id else ""}><tr>{head}</tr>{body}</table>'


def file_safe(label: str) -> str:
    """A folder or file name for an organisation label (registry id or entity id)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("._") or "unknown"
    return cleaned[:80]

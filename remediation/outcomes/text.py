"""Safe text for people's documents: anything that came from an input (device ids, MPxNs, details, names) is
escaped for Markdown exactly as html.escape does it for HTML, so a crafted value cannot add a link, a heading, a
table column or markup to a letter, worklist or report."""

from __future__ import annotations

import re
from html import escape as _html_escape

# Characters that can start Markdown (CommonMark + GFM) syntax anywhere in a line; `_` is escaped unless it sits
# inside a word (CommonMark never opens emphasis there, and WRONG_NO stays readable). Parentheses and `!` need no
# escape once `[` and `]` are escaped: there is then no link or image for them to complete.
_MD_SPECIAL = re.compile(r"([\\`*\[\]#|~@])|((?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_AUTOLINK = re.compile(r"(?i)(://|www\.)")


def md(value) -> str:
    """Markdown-inert text: syntax characters backslash-escaped, <, > and & as entities, newlines as spaces, and
    the GFM autolink triggers (://, www.) broken, so input text can add no link, image, emphasis, heading or column."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"[\r\n\t\f\v]+", " ", text)
    text = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    return _AUTOLINK.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], text)


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
    return f"<table{f' id={chr(34)}{html(table_id)}{chr(34)}' if table_id else ''}><tr>{head}</tr>{body}</table>"


def file_safe(label: str) -> str:
    """A folder or file name for an organisation label (registry id or entity id)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", str(label)).strip("._") or "unknown"
    return cleaned[:80]


def folder_names(labels) -> dict[str, str]:
    """label -> a distinct folder name: two labels that clean to the same name get a short hash each."""
    import hashlib

    cleaned = {label: file_safe(label) for label in labels}
    counts: dict[str, int] = {}
    for name in cleaned.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        label: name if counts[name] == 1 else f"{name}-{hashlib.sha256(str(label).encode()).hexdigest()[:8]}"
        for label, name in cleaned.items()
    }

"""Safe text for people's documents: anything that came from an input (device ids, MPxNs, details, names) is
escaped for Markdown as autoescaping does it for HTML, so a crafted value cannot add a link, a heading, a table
column or markup to a letter, worklist or report.

The letters and the HTML report are Jinja2 templates shipped beside their modules (`templates/`), rendered by
`template_environment`: HTML templates (`*.html.j2`) autoescape every value; Markdown templates (`*.md.j2`) pass
every value through `md` unless it is already `MarkdownText`. A field a template names that the caller did not
pass is an error (StrictUndefined), never a blank in a letter sent to a Network Operator."""

from __future__ import annotations

import functools
import re

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

# Characters that can start Markdown (CommonMark + GFM) syntax anywhere in a line; `_` is escaped unless it sits
# inside a word (CommonMark never opens emphasis there, and WRONG_NO stays readable). Parentheses and `!` need no
# escape once `[` and `]` are escaped: there is then no link or image for them to complete.
_MD_SPECIAL = re.compile(r"([\\`*\[\]#|~@])|((?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
_AUTOLINK = re.compile(r"(?i)(://|www\.)")


class MarkdownText(str):
    """Text already escaped for Markdown (the result of `md`): a Markdown template prints it as it is."""


def md(value) -> MarkdownText:
    """Markdown-inert text: syntax characters backslash-escaped, <, > and & as entities, newlines as spaces, and
    the GFM autolink triggers (://, www.) broken, so input text can add no link, image, emphasis, heading or column.
    Safe in a table cell: a pipe is escaped and a newline cannot end the row. Already-escaped text is kept as it is."""
    if isinstance(value, MarkdownText):
        return value
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = re.sub(r"[\r\n\t\f\v]+", " ", text)
    text = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    return MarkdownText(_AUTOLINK.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], text))


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table with every cell escaped (header cells are the tool's own words)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


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


@functools.cache
def template_environment(package: str, markdown: bool = False) -> Environment:
    """The Jinja2 environment for `package`'s templates (`<package>/templates/`, read through the package, so an
    installed wheel finds them). `*.html.j2` autoescapes (as does any other name but `*.md.j2`); with `markdown`
    every printed value goes through `md` (`finalize`), the Markdown form of autoescaping. Both refuse an
    undefined name."""
    env = Environment(
        loader=PackageLoader(package, "templates"),
        autoescape=select_autoescape(
            enabled_extensions=("html.j2",), disabled_extensions=("md.j2",), default_for_string=True, default=True
        ),
        undefined=StrictUndefined,
        finalize=md if markdown else None,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["md"] = md
    return env


def render(package: str, name: str, /, **context) -> str:
    """Render template `name` (`*.html.j2` or `*.md.j2`) of `package` with `context`."""
    return template_environment(package, name.endswith(".md.j2")).get_template(name).render(**context)

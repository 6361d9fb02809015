"""The HTML report and the Network Operator letters are Jinja2 templates: data from input files cannot add markup.

One real run carries hostile text in every place a person or another system can put it: a registry id (it is the
RDP's network operator id too) and registry names, an approver's name in the trust policy, the change reference of
an approval, and the body of an S1SP's error reply. The HTML report and each letter are parsed: no <script> or <img>
element comes from data, the hostile text is shown as text, and each Markdown table row keeps its columns.
The Markdown escape itself is checked against a real CommonMark parser for any text (hypothesis), and a template
naming a field the caller did not pass fails instead of printing a blank."""

from __future__ import annotations

import json
import re
import threading
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2 import UndefinedError
from markdown_it import MarkdownIt

from remediation import pipeline
from remediation.apply.executor import RetryPolicy
from remediation.apply.runner import ApplyOptions
from remediation.outcomes.text import md, render
from tests.simulation import run_apply, start_sim
from tests.support import OPERATORS, PEOPLE, CaseFiles, mpan, no_cert, policy_toml, signer

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
HOSTILE_NO = "<img src=x onerror=alert(2)>|NO"  # a registry id (no quote or slash: it also names PEM files)
CHANGE_REF = "CHG-<img src=x onerror=alert(3)>|x\ny"
REPLY = "<script>alert(4)</script>|col\n# heading [link](http://evil.example)"


class _Elements(HTMLParser):
    """Every element's tag and every piece of text, as a browser would see them."""

    def __init__(self, page: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.text: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def _assert_inert_html(page: str, shown: list[str]) -> None:
    found = _Elements(page)
    assert "script" not in found.tags and "img" not in found.tags
    text = "".join(found.text)
    for value in shown:
        assert value in text, value  # shown as text, not dropped


def _assert_inert_markdown(text: str, shown: list[str]) -> None:
    rendered = MarkdownIt("commonmark").enable("table").render(text)
    found = _Elements(rendered)
    assert not {"script", "img", "a"} & set(found.tags), rendered
    assert not any(line.startswith(("<h1>onerror", "<h2>onerror")) for line in rendered.splitlines())
    body = "".join(found.text)
    for value in shown:
        assert value in body, value
    for table in rendered.split("<table>")[1:]:
        rows = table.split("</table>")[0].split("<tr>")[1:]
        widths = {row.count("<th") + row.count("<td") for row in rows}
        assert len(widths) == 1, table  # every row as wide as the header


class _HostileS1SP(BaseHTTPRequestHandler):
    """An S1SP that refuses every request with a body full of markup (a real HTTP server on 127.0.0.1)."""

    def _refuse(self):
        body = json.dumps({"error": REPLY}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = _refuse

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    case = CaseFiles(root)
    case.operators = {HOSTILE_NO: OPERATORS["AAAA"], "BBBB": OPERATORS["BBBB"], "GASX": OPERATORS["GASX"]}
    people = {n: (roles, [n]) for n, roles in PEOPLE.items() if n != "bob"}
    case.trust_policy = policy_toml({**people, SCRIPT: (("approver",), ["bob"])})
    for n in range(6):
        m = mpan(14, 8100 + n)
        s1sp = "MOC" if n < 4 else "XOC"
        case.device(f"00-1D-00-00-00-05-00-{n:02X}", m, no_cert("BBBB", "DS"), no_cert("BBBB", "KA"), s1sp=s1sp)
        case.register(m, HOSTILE_NO)
    case.s1sp_settings = {"MOC": {"base_url": "http://127.0.0.1:9"}, "XOC": {"base_url": "http://127.0.0.1:9"}}
    config = case.write()
    registry = (root / "registry.toml").read_text()
    for no, name in ((HOSTILE_NO, SCRIPT), ("BBBB", IMG)):
        registry = registry.replace(f'id = "{no}"\n', f'id = "{no}"\nname = {json.dumps(name)}\n')
    (root / "registry.toml").write_text(registry)
    plan_dir = root / "plan"
    pipeline.run_plan(config, plan_dir, key=signer("alice"))
    pipeline.run_approve(plan_dir, signer("bob"), note=SCRIPT, change_ref=CHANGE_REF)
    hostile = ThreadingHTTPServer(("127.0.0.1", 0), _HostileS1SP)
    threading.Thread(target=hostile.serve_forever, daemon=True).start()
    moc = start_sim(root / "moc.sqlite", config, "MOC")
    try:
        options = ApplyOptions(
            who="carol",
            endpoints={"MOC": moc.url, "XOC": f"http://127.0.0.1:{hostile.server_address[1]}"},
            retry=RetryPolicy(attempts=1, initial=0.01, max_wait=0.01),
        )
        run_apply(plan_dir, root / "run", options)
    finally:
        moc.stop()
        hostile.shutdown()
        hostile.server_close()
    pipeline.run_notify(root / "run", root / "packs")
    return root


def test_the_html_report_shows_hostile_inputs_as_text(hostile_run):
    path, report = pipeline.run_report(hostile_run / "run", "html", hostile_run / "report.html")
    assert report["problem_devices"]["devices"] == 2  # the hostile S1SP's devices failed, with its reply as reason
    page = path.read_text()
    approver = report["authority"]["approved_by"][0]
    assert approver["name"] == SCRIPT and approver["change_ref"] == CHANGE_REF
    _assert_inert_html(page, [SCRIPT, HOSTILE_NO, CHANGE_REF, "<script>alert(4)</script>"])
    found = _Elements(page)
    assert found.tags.count("tr") > 20 and "svg" in found.tags  # the report itself is still all there


def test_the_markdown_report_shows_hostile_inputs_as_text(hostile_run):
    path, _ = pipeline.run_report(hostile_run / "run", "md", hostile_run / "report.md")
    _assert_inert_markdown(path.read_text(), [SCRIPT, HOSTILE_NO, "<script>alert(4)</script>"])


def test_the_letters_show_hostile_inputs_as_text(hostile_run):
    letters = sorted((hostile_run / "packs").glob("*/letter.html"))
    assert len(letters) == 2  # the registered NO (hostile id) and the previous holder BBBB (hostile name)
    registered = next(p for p in letters if "devices-now-registered.csv" in {f.name for f in p.parent.iterdir()})
    released = next(p for p in letters if p != registered)
    # BBBB's letter lists the hostile registry id, pipe and all, in its "now registered to" column
    for page, shown in ((registered, [SCRIPT, HOSTILE_NO]), (released, [IMG, HOSTILE_NO])):
        _assert_inert_html(page.read_text(), shown)
        _assert_inert_markdown(page.with_name("letter.md").read_text(), shown)
    assert (
        "devices registered" in registered.read_text() and "<strong data-registered-devices=" in registered.read_text()
    )


# ------------------------------------------------------------------------------------------------ the Markdown escape


_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), include_characters="\n\t\r"),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(cells=st.lists(_TEXT, min_size=1, max_size=4))
def test_md_keeps_any_text_as_the_text_of_its_own_cell(cells):
    """For any text: a table row of escaped cells has exactly as many cells as the header, each cell renders as the
    text itself (line breaks and tabs as one space, trimmed as every cell is), and nothing in it becomes a link,
    image, emphasis or element."""
    header = "|" + " h |" * len(cells) + "\n|" + "---|" * len(cells) + "\n"
    row = "|" + "".join(f" {md(c)} |" for c in cells) + "\n"
    rendered = MarkdownIt("commonmark").enable("table").render(header + row)
    body = rendered.split("<tbody>")[1] if "<tbody>" in rendered else ""
    found = _Elements(body)
    assert found.tags.count("td") == len(cells), rendered
    assert set(found.tags) <= {"tr", "td"}, rendered
    texts = body.split("<td>")[1:]
    for cell, html_cell in zip(cells, texts):
        shown = "".join(_Elements(html_cell.split("</td>")[0]).text)
        assert shown == re.sub(r"[\r\n\t\f\v]+", " ", cell).strip(), (cell, rendered)


def test_md_is_applied_once():
    assert md(md("a|b")) == md("a|b") == "a\\|b"


# ------------------------------------------------------------------------------------------------ the environment


LETTER = {
    "org": "AAAA",
    "name": None,
    "now": "2026-06-01T00:00:00+00:00",
    "registered": None,
    "released": {"devices": 1, "rows": [["00-1D", "MOC", "NO_DS", "AAAA"]], "more": 0},
    "registered_file": "devices-now-registered.csv",
    "released_file": "devices-no-longer-controlled.csv",
    "references": {"change_record": "CHG-1", "decision": "d", "plan_hash": "h", "run_status": "completed"},
}


@pytest.mark.parametrize("template", ["letter.md.j2", "letter.html.j2"])
@pytest.mark.parametrize("missing", ["org", "references", "released_file"])
def test_a_missing_field_is_an_error_not_a_blank(template, missing):
    render("remediation.outcomes", template, **LETTER)  # the full context renders
    with pytest.raises(UndefinedError):
        render("remediation.outcomes", template, **{k: v for k, v in LETTER.items() if k != missing})
    broken = {**LETTER, "references": {k: v for k, v in LETTER["references"].items() if k != "decision"}}
    with pytest.raises(UndefinedError):
        render("remediation.outcomes", template, **broken)


def test_the_report_template_refuses_a_missing_field(hostile_run):
    from remediation.report.content import build_report
    from remediation.report.html import render_html

    report = build_report(hostile_run / "run")
    render_html(report)
    del report["quarantine"]
    with pytest.raises(UndefinedError):
        render_html(report)


def test_markdown_templates_escape_without_being_asked():
    """The Markdown environment escapes every printed value (finalize), as HTML autoescaping does."""
    letter = {**LETTER, "org": "[x](http://e.example)", "released": {**LETTER["released"], "rows": [["a|b", "c\nd"]]}}
    text = render("remediation.outcomes", "letter.md.j2", **letter)
    assert "\\[x\\](http:/\\/e.example)" in text and "| a\\|b | c d |" in text
    page = render("remediation.outcomes", "letter.html.j2", **{**LETTER, "org": SCRIPT})
    assert SCRIPT not in page and "&lt;script&gt;" in page


def test_the_templates_ship_in_the_package():
    from importlib.resources import files

    for package, name in (("remediation.report", "report.html.j2"), ("remediation.outcomes", "letter.md.j2")):
        assert files(package).joinpath("templates", name).is_file()
    assert Path(__file__).resolve().parents[1].joinpath("pyproject.toml").read_text().count("templates/*.j2") == 2

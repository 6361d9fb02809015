"""Reports: the HTML page is self-contained and its figures equal summary.json; MPxN redaction; md and json forms."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from remediation.cli import main
from remediation.model import CATEGORIES
from tests.support import REPO

KEY = "a-redaction-key-of-some-length"


@pytest.fixture(scope="module")
def plan_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    shutil.copytree(REPO / "configs", root / "configs")
    shutil.copytree(REPO / "sample_data", root / "sample_data")
    result = CliRunner().invoke(
        main, ["plan", "--config", str(root / "configs" / "sample.toml"), "--out", str(root / "plan"), "--by", "alice"]
    )
    assert result.exit_code == 0, result.stderr
    return root / "plan"


class Figures(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements, self.text_by_attrs, self._open, self.tags = [], [], None, set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag == "td" and any(k.startswith("data-") for k in attrs):
            self._open = [attrs, ""]

    def handle_data(self, data):
        if self._open is not None:
            self._open[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            self.text_by_attrs.append(tuple(self._open))
            self._open = None


def render(plan_dir, *args, env=None):
    result = CliRunner().invoke(main, ["report", str(plan_dir), *args], env=env or {})
    assert result.exit_code == 0, result.output + result.stderr
    return result


def test_html_figures_match_summary(plan_dir, tmp_path):
    render(plan_dir, "--format", "html", "--out", str(tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    summary = json.loads((plan_dir / "summary.json").read_text())
    plan = json.loads((plan_dir / "plan.json").read_text())
    page = Figures()
    page.feed(html)
    # table cells per S1SP and category
    cells = {
        (a["data-s1sp"], a["data-category"]): int(t)
        for a, t in page.text_by_attrs
        if "data-category" in a and "data-s1sp" in a
    }
    assert cells == {(s, c): summary["devices_by_s1sp"][s][c] for s in summary["devices_by_s1sp"] for c in CATEGORIES}
    totals = {a["data-total-category"]: int(t) for a, t in page.text_by_attrs if "data-total-category" in a}
    assert totals == summary["devices_by_category"]
    # chart bars carry the same numbers
    bars = {
        (a["data-s1sp"], a["data-category"]): int(a["data-devices"])
        for tag, a in page.elements
        if tag == "rect" and "data-category" in a
    }
    assert bars == {k: v for k, v in cells.items() if v}
    # wrong-owner matrix
    matrix = {
        (a["data-wrong"], a["data-expected"]): int(a["data-devices"])
        for tag, a in page.elements
        if tag == "td" and "data-wrong" in a
    }
    assert {k: v for k, v in matrix.items() if v} == {
        (r["wrong_owner"], r["expected_owner"]): r["devices"] for r in summary["wrong_owner_matrix"]
    }
    # apply estimate per S1SP = planned devices
    planned = {a["data-planned-s1sp"]: int(t) for a, t in page.text_by_attrs if "data-planned-s1sp" in a}
    assert planned == plan["counts"]["by_s1sp"]
    seconds = {
        a["data-s1sp"]: float(a["data-seconds"]) for tag, a in page.elements if tag == "rect" and "data-seconds" in a
    }
    assert seconds == {s: n * 3 / plan["endpoints"][s]["rate_per_second"] for s, n in plan["counts"]["by_s1sp"].items()}
    # excluded devices listed with their reason
    excluded_rows = [a for tag, a in page.elements if tag == "tr" and "data-category" in a]
    not_planned = sum(n for c, n in summary["devices_by_category"].items() if c not in ("WRONG_NO", "OK"))
    assert len(excluded_rows) == not_planned
    # self-contained: no scripts, no external resources
    assert "script" not in page.tags and "link" not in page.tags and "img" not in page.tags
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_redaction_hides_every_mpxn(plan_dir, tmp_path):
    import pandas as pd

    findings = pd.read_parquet(plan_dir / "findings.parquet")
    excluded = findings[~findings["category"].isin(["WRONG_NO", "OK"])]
    mpxns = [m for m in excluded["mpxn"].dropna().unique() if len(m) >= 6]
    render(plan_dir, "--format", "html", "--out", str(tmp_path / "plain.html"))
    render(
        plan_dir,
        "--format",
        "html",
        "--redact-mpxn",
        "--out",
        str(tmp_path / "red.html"),
        env={"REMEDIATION_REDACTION_KEY": KEY},
    )
    render(
        plan_dir,
        "--format",
        "json",
        "--redact-mpxn",
        "--out",
        str(tmp_path / "red1.json"),
        env={"REMEDIATION_REDACTION_KEY": KEY},
    )
    render(
        plan_dir,
        "--format",
        "json",
        "--redact-mpxn",
        "--out",
        str(tmp_path / "red2.json"),
        env={"REMEDIATION_REDACTION_KEY": KEY + "x"},
    )
    plain, red = (tmp_path / "plain.html").read_text(), (tmp_path / "red.html").read_text()
    assert sum(m in plain for m in mpxns) == len(mpxns)
    assert not [m for m in mpxns if m in red]
    one, two = (json.loads((tmp_path / n).read_text())["excluded"]["shown"] for n in ("red1.json", "red2.json"))
    assert all(r["mpxn"].startswith("h:") for r in one if r["mpxn"])
    assert [r["mpxn"] for r in one] != [r["mpxn"] for r in two]  # another key, other hashes


def test_redaction_without_a_key_is_a_usage_error(plan_dir):
    result = CliRunner().invoke(main, ["report", str(plan_dir), "--redact-mpxn"], env={"REMEDIATION_REDACTION_KEY": ""})
    assert result.exit_code == 2 and "REMEDIATION_REDACTION_KEY" in result.output + result.stderr


def test_markdown_and_json(plan_dir, tmp_path):
    render(plan_dir, "--format", "md", "--out", str(tmp_path / "r.md"))
    render(plan_dir, "--format", "json", "--out", str(tmp_path / "r.json"))
    md = (tmp_path / "r.md").read_text()
    data = json.loads((tmp_path / "r.json").read_text())
    summary = json.loads((plan_dir / "summary.json").read_text())
    assert data["devices_by_category"] == summary["devices_by_category"] and data["kind"] == "plan"
    assert f"| WRONG_NO | {summary['devices_by_s1sp']['MOC']['WRONG_NO']} |" in md


def test_report_on_a_directory_without_results(tmp_path):
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "summary.json" in result.stderr

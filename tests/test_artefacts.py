"""The artefact owners' typed documents write the same JSON the dict payloads did: keys in the order readers and
diffs have always seen, nothing unset written as null, and keys another version wrote kept."""

from __future__ import annotations

import json

import pytest

from remediation.artefacts.detect_result import DetectSummary, StaleDetectResult, read_summary, write_summary
from remediation.artefacts.plan_dir import PlanDir, PlanDocument
from remediation.artefacts.run_dir import RunDir, RunRecord
from remediation.errors import InputError
from remediation.outputs import read_json_object, write_json
from remediation.plan import PlanTampered
from remediation.verify import Verdict


def test_run_json_round_trips_in_order_and_keeps_keys_it_does_not_know(tmp_path):
    written = {
        "schema": "remediation/run/1",
        "plan_hash": "ab" * 32,
        "plan_dir": "/plans/p",
        "created_by": "carol",
        "created_at": "2026-11-20T09:00:00+00:00",
        "status": "paused",
        "paused": {"MOC": "failure rate 0.5 over 10 devices"},
        "journal_head": {"seq": 12, "hash": "cd" * 32},
        "updated_at": "2026-11-20T09:05:00+00:00",
        "counts": {"MOC": {"done": 3}},
        "a_later_field": [1, 2],
    }
    (tmp_path / "run.json").write_text(json.dumps(written, indent=2) + "\n")
    run = RunDir(tmp_path).record()
    assert (run.status, run.journal_seq, run.extra) == ("paused", 12, {"a_later_field": [1, 2]})
    run.update(status="superseded", superseded_by="/runs/r2", another=True)
    RunDir(tmp_path).write_record(run)
    again = json.loads((tmp_path / "run.json").read_text())
    known = [k for k in written if k != "a_later_field"]
    assert list(again) == [*known, "superseded_by", "a_later_field", "another"]  # known keys first, then the rest
    assert again["status"] == "superseded" and again["a_later_field"] == [1, 2] and again["another"] is True


def test_a_new_run_record_writes_only_what_is_set(tmp_path):
    RunDir(tmp_path).write_record(RunRecord(plan_hash="ab" * 32, plan_dir="/p", status="new", paused={}))
    assert list(json.loads((tmp_path / "run.json").read_text())) == [
        "schema",
        "plan_hash",
        "plan_dir",
        "status",
        "paused",
    ]


@pytest.mark.parametrize("content", ['{"plan_dir": "/p"}', "[1]", "not json"])
def test_a_run_json_that_is_no_run_record_is_an_input_error(tmp_path, content):
    (tmp_path / "run.json").write_text(content)
    with pytest.raises(InputError):
        RunDir(tmp_path).record()


def test_plan_documents_of_both_kinds_keep_their_key_order():
    common = dict(
        case="c",
        as_of="2026-11-20",
        planned_by="alice",
        s1sp_filter=[],
        policy={},
        inputs=[],
        config_files=[],
        endpoints={},
        counts={},
        outputs={},
    )
    correction = PlanDocument(
        **common,
        allow_unknown_no=False,
        registry_gaps=[],
        manual={"s1sps": []},
        additions=({"planned_by": "Alice", "trust_policy": None, "governance": {}}, {"governance": {"x": 1}}),
    ).body()
    assert list(correction) == [
        "schema",
        "tool_version",
        "case",
        "as_of",
        "planned_by",
        "s1sp_filter",
        "policy",
        "allow_unknown_no",
        "registry_gaps",
        "inputs",
        "config_files",
        "config_sha256",
        "endpoints",
        "counts",
        "manual",
        "outputs",
        "trust_policy",
        "governance",
    ]  # fmt: skip - one key order, compared as a whole
    assert correction["planned_by"] == "Alice" and correction["governance"] == {"x": 1}  # additions win, in place
    rollback = PlanDocument(**common, kind="rollback", rollback_of={"run_dir": "/r", "plan_hash": "h"}).body()
    assert list(rollback)[:4] == ["schema", "kind", "rollback_of", "tool_version"]
    assert "allow_unknown_no" not in rollback and "manual" not in rollback


def test_a_verdict_leaves_out_judgements_not_made():
    assert Verdict(0, 5, {"OK": 5}).document() == {"residual_wrong": 0, "devices": 5, "devices_by_category": {"OK": 5}}
    full = Verdict(1, 5, {}, {"WRONG_NO": 1}, 1, 4, 3, 2, 2).document()
    assert list(full)[-2:] == ["manual_change_requests", "manual_at_target"]


@pytest.mark.parametrize(
    ("content", "error", "text"),
    [
        (None, InputError, "not found (is this a plan directory?)"),
        ("{garbled", PlanTampered, "not valid JSON"),
        (b"\xff\xfe", PlanTampered, "not valid JSON"),
        ('"a string"', PlanTampered, "not a JSON object (found str)"),
    ],
)
def test_one_json_reader_names_the_file_and_tells_missing_from_tampered(tmp_path, content, error, text):
    """Missing is the operator's mistake (exit 2); a garbled plan.json is evidence changed (exit 3)."""
    if content is not None:
        path = tmp_path / "plan.json"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(error) as caught:
        PlanDir(tmp_path).load()
    assert str(tmp_path / "plan.json") in str(caught.value) and text in str(caught.value)
    assert caught.value.exit_code == (2 if error is InputError else 3)
    if content is None:
        assert read_json_object(tmp_path / "plan.json") is None  # optional documents (reports) read as absent


def _v1_summary() -> dict:
    """A summary.json as a version-1 detect wrote it: none of the v2 figures, and a key this version does not know."""
    return {
        "schema": "remediation/detect-summary/1",
        "tool_version": "0.1.0",
        "case": "sample",
        "as_of": "2026-11-20",
        "files": [{"role": "extract", "s1sp": "MOC", "path": "/x.csv", "sha256": "ab" * 32, "rows_read": 2}],
        "config_files": [{"path": "/case.toml", "sha256": "cd" * 32}],
        "rows_read": {"extracts": 2, "rdp": 2},
        "devices": 2,
        "rows_by_category": {"WRONG_NO": 1, "OK": 1},
        "devices_by_category": {"WRONG_NO": 1, "OK": 1},
        "devices_by_s1sp": {"MOC": {"WRONG_NO": 1, "OK": 1}},
        "wrong_owner_matrix": [{"wrong_owner": "ESP", "expected_owner": "WWU", "devices": 1}],
        "quarantine": {"issues": 0, "extract_rows": 0, "rdp_rows": 0, "by_field": {}},
        "reconciled": True,
        "a_later_field": {"k": 1},
    }


def test_a_detect_summary_round_trips_byte_for_byte_and_keeps_keys_it_does_not_know(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, _v1_summary())
    before = path.read_bytes()
    summary = read_summary(path)
    assert summary.devices_by_cause is None and summary.registry_gaps is None and summary.locked_out_devices is None
    assert summary.extra == {"a_later_field": {"k": 1}} and summary.rows_read["extracts"] == 2
    write_summary(path, summary)
    assert path.read_bytes() == before  # nothing absent written as null, unknown keys kept in place (they were last)


def test_a_fresh_detect_summary_writes_every_field_in_the_contract_order(tmp_path):
    fields = {k: v for k, v in _v1_summary().items() if k not in ("schema", "tool_version", "a_later_field")}
    v2 = {"devices_by_cause": {}, "no_locked_out": {"devices": 0}, "registry_gaps": [], "security_hold": []}
    document = DetectSummary(**fields, **v2, tool_version="9").to_json()
    assert list(document) == list(DetectSummary.ORDER)
    assert document["schema"] == "remediation/detect-summary/1" and document["registry_gaps"] == []


def test_a_summary_without_its_counts_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "summary.json"
    write_json(path, {k: v for k, v in _v1_summary().items() if k != "devices_by_category"})
    with pytest.raises(StaleDetectResult, match=r"summary.json: not a detect summary \(no devices_by_category\)"):
        read_summary(path)

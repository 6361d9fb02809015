"""The artefact owners' typed documents write the same JSON the dict payloads did: keys in the order readers and
diffs have always seen, nothing unset written as null, and keys another version wrote kept."""

from __future__ import annotations

import json

import pytest

from remediation.artefacts.plan_dir import PlanDir, PlanDocument
from remediation.artefacts.run_dir import RunDir, RunRecord
from remediation.errors import InputError
from remediation.outputs import read_json_object
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

"""Authority (issue 9): keys, not names, decide who plans, approves, runs and exports. Each attack the issue
describes is tried for real — real keys, real files, a real simulator on 127.0.0.1 — and must be refused (exit 3)
before any S1SP is touched."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import stat
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from remediation import pipeline
from remediation.apply.runner import ApplyOptions
from remediation.artefacts.plan_dir import load_plan, read_approvals
from remediation.authority import (
    APPROVAL_SCHEMA,
    AuthorityRefusal,
    Signer,
    authorise_run,
    key_id,
    load_signer,
    load_trust_policy,
    plan_signature_payload,
    public_key_line,
    redact,
    verify_journal_signatures,
)
from remediation.cli import main
from remediation.errors import ConfigError
from remediation.evidence.hashing import canonical_json, sha256_file, sha256_json
from remediation.evidence.journal import GENESIS, entry_hash, read_journal, verify_journal
from remediation.plan import operation_ids, seal
from tests.simulation import api_writes, run_apply, start_sim
from tests.support import CaseFiles, b64, key_env, mpan, no_cert, policy_toml, signer

WRONG, CORRECT = "00-1D-00-00-00-09-00-01", "00-1D-00-00-00-09-00-02"
LOOK_ALIKES = [
    "alice ",
    "al\u0456ce",
    "alice\u200b",
    "\uff41\uff4c\uff49\uff43\uff45",
    "AL\u0130CE",
]  # Cyrillic i, zero-width space, full-width, dotted I


def small_case(root, people=None, quorum=1, moc=None) -> tuple[CaseFiles, object]:
    """One WRONG_NO device (holds BBBB's certificates, registered to AAAA) and one correct AAAA device; `moc`: settings
    of the case's [s1sp.MOC] table."""
    case = CaseFiles(root, trust_policy=policy_toml(people, quorum), s1sp_settings={"MOC": moc or {}})
    m1, m2 = mpan(16, 9001), mpan(16, 9002)
    case.device(WRONG, m1, no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
    case.register(m1, "AAAA")
    case.device(CORRECT, m2, no_cert("AAAA", "DS"), no_cert("AAAA", "KA"))
    case.register(m2, "AAAA")
    return case, case.write()


def planned(root, people=None, quorum=1, approvers=("bob",), moc=None):
    _, config = small_case(root, people, quorum, moc)
    pipeline.run_plan(config, root / "plan", key=signer("alice"))
    for name in approvers:
        pipeline.run_approve(root / "plan", signer(name))
    return config, root / "plan"


def cli_apply(root, url, operator="carol", *extra):
    args = [
        "apply",
        str(root / "plan"),
        "--run",
        str(root / "run"),
        "--endpoint",
        f"MOC={url}",
        "--trust-policy",
        str(root / "people.toml"),
        *extra,
    ]
    return CliRunner(env=key_env(operator)).invoke(main, args)


@pytest.fixture()
def world(tmp_path):
    config, plan_dir = planned(tmp_path)
    sim = start_sim(tmp_path / "moc.sqlite", config)
    yield tmp_path, plan_dir, sim
    sim.stop()


def refused_untouched(result, root, *said):
    """Exit 3, one line naming what failed, no run directory, and not one write reached the simulator."""
    assert result.exit_code == 3, (result.exit_code, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    for text in said:
        assert text in result.stderr, result.stderr
    assert not (root / "run").exists()
    assert api_writes(root / "moc.sqlite") == []


def sign_block(key: Signer, document: dict, label: str) -> dict:
    block = {"key_id": key.key_id, "signer": label}
    block.update(key.sign(plan_signature_payload(document["plan_hash"], document["trust_policy"]["sha256"], block)))
    return block


def approval_by(key: Signer, plan_hash: str, policy_sha: str, label: str = "bob") -> dict:
    body = {
        "schema": APPROVAL_SCHEMA,
        "plan_hash": plan_hash,
        "trust_policy_sha256": policy_sha,
        "key_id": key.key_id,
        "approver": label,
        "approved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": "looks fine",
        "change_ref": None,
        "devices": 1,
    }
    return {**body, "signature": key.sign(body)}


def write_approvals(plan_dir, approvals):
    (plan_dir / "approvals.json").write_text(json.dumps({"approvals": approvals}))


# ------------------------------------------------------------------------------------------------ the forge


def forge_plan(plan_dir) -> dict:
    """The insider's edit: point the write at the correct device so it gets BBBB's certificates, then recompute
    plan.parquet's SHA-256 and re-seal plan.json with the package's own `seal`. Returns the re-sealed document."""
    rows = pd.read_parquet(plan_dir / "plan.parquet")
    row = rows.iloc[0].to_dict()
    row.update(
        device_id=CORRECT,
        expected_ds_fingerprint=row["target_ds_fingerprint"],
        expected_ka_fingerprint=row["target_ka_fingerprint"],
        target_ds_fingerprint=row["expected_ds_fingerprint"],
        target_ka_fingerprint=row["expected_ka_fingerprint"],
        target_ds_cert=b64(no_cert("BBBB", "DS")),
        target_ka_cert=b64(no_cert("BBBB", "KA")),
    )
    forged = pd.DataFrame([row], columns=rows.columns)
    forged["operation_id"] = operation_ids(
        forged["device_id"], forged["target_ds_fingerprint"], forged["target_ka_fingerprint"]
    )
    forged.to_parquet(plan_dir / "plan.parquet", index=False)
    document = json.loads((plan_dir / "plan.json").read_text())
    document["outputs"]["plan.parquet"] = sha256_file(plan_dir / "plan.parquet")
    document = seal(document)
    (plan_dir / "plan.json").write_text(json.dumps(document))
    assert load_plan(plan_dir).plan_hash == document["plan_hash"]  # the hashes alone now agree again
    return document


def _unkeyed_approval(document, mallory, plan_dir):
    body = {
        "schema": "remediation/approval/1",
        "plan_hash": document["plan_hash"],
        "approved_by": "bob",
        "approved_at": "2026-11-26T00:00:00+00:00",
        "note": "CHG-0001",
        "devices": 1,
    }
    return [{**body, "approval_hash": sha256_json(body)}]


def _mallory_signs_as_bob(document, mallory, plan_dir):
    return [approval_by(mallory, document["plan_hash"], document["trust_policy"]["sha256"], label="bob")]


def _bobs_real_approval_retargeted(document, mallory, plan_dir):
    real = read_approvals(plan_dir)[0]
    return [{**real, "plan_hash": document["plan_hash"]}]


@pytest.mark.parametrize(
    ("approvals", "resign", "said"),
    [
        (_unkeyed_approval, False, "plan signature by key"),
        (_mallory_signs_as_bob, False, "plan signature by key"),
        (_bobs_real_approval_retargeted, True, "is not in the trust policy"),
        (_mallory_signs_as_bob, True, "is not in the trust policy"),
    ],
    ids=[
        "unkeyed-approval",
        "own-key-approval-labelled-bob",
        "bobs-approval-retargeted+resigned-plan",
        "own-key-everything",
    ],
)
def test_reseal_and_forge_is_refused_and_nothing_is_written(world, approvals, resign, said):
    root, plan_dir, sim = world
    mallory = signer("mallory")
    document = forge_plan(plan_dir)
    if resign:  # mallory also re-signs the re-sealed plan with her own key, labelled as alice
        document["signature"] = sign_block(mallory, document, "alice")
        (plan_dir / "plan.json").write_text(json.dumps(document))
    write_approvals(plan_dir, approvals(document, mallory, plan_dir))
    result = cli_apply(root, sim.url)
    print(f"\nforge ({'re-signed' if resign else 'unsigned'}): exit {result.exit_code}: {result.stderr.strip()}")
    refused_untouched(result, root, said)
    assert sim.store.get(CORRECT).version == 1


def test_forged_policy_inside_the_plan_directory_or_unpinned_is_refused(world):
    """Mallory also writes a policy of her own (her key as planner and approver, carol's public key as operator),
    points plan.json at it and re-signs everything. A policy in the plan directory is no anchor; one elsewhere
    does not match the policy the operator must pin (--trust-policy or $REMEDIATION_TRUST_POLICY)."""
    root, plan_dir, sim = world
    mallory = signer("mallory")
    forged_policy = policy_toml(
        {
            "alice": (("planner",), ["mallory"]),
            "bob": (("approver",), ["mallory#2"]),
            "carol": (("operator",), ["carol"]),
        }
    )
    for where in (plan_dir / "people.toml", root / "elsewhere" / "people.toml"):
        where.parent.mkdir(exist_ok=True)
        where.write_text(forged_policy)
        document = (
            forge_plan(plan_dir) if where.parent == plan_dir else json.loads((plan_dir / "plan.json").read_text())
        )
        document["trust_policy"] = {"path": str(where), "sha256": sha256_file(where)}
        document = seal({k: v for k, v in document.items() if k != "signature"})
        document["signature"] = sign_block(mallory, document, "alice")
        (plan_dir / "plan.json").write_text(json.dumps(document))
        write_approvals(
            plan_dir, [approval_by(signer("mallory#2"), document["plan_hash"], document["trust_policy"]["sha256"])]
        )
        if where.parent == plan_dir:  # even a library caller that pins nothing gets no anchor from the plan directory
            with pytest.raises(AuthorityRefusal, match="inside the plan directory"):
                run_apply(plan_dir, root / "run", ApplyOptions(who="carol", endpoints={"MOC": sim.url}))
            continue
        result = cli_apply(root, sim.url)
        print(f"\nforged policy at {where.relative_to(root)}: exit {result.exit_code}: {result.stderr.strip()}")
        refused_untouched(result, root, "is not the policy plan")
        unpinned = CliRunner(env=key_env("carol")).invoke(
            main, ["apply", str(plan_dir), "--run", str(root / "run")], env={"REMEDIATION_TRUST_POLICY": ""}
        )
        assert unpinned.exit_code == 2 and "name the reviewed trust policy" in unpinned.stderr
        assert not (root / "run").exists() and api_writes(root / "moc.sqlite") == []


# ------------------------------------------------------------------------------------------------ approvals


def test_planner_key_cannot_approve_its_own_plan(tmp_path):
    """alice holds both roles: approve with her key is refused, and a hand-made approval by her key (labelled
    with any name) is refused by apply. Her second key is still her: refused too."""
    people = {
        "alice": (("planner", "approver"), ["alice", "alice#2"]),
        "bob": (("approver",), ["bob"]),
        "carol": (("operator",), ["carol"]),
    }
    _, plan_dir = planned(tmp_path, people, approvers=())
    for key in ("alice", "alice#2"):
        result = CliRunner(env=key_env(key)).invoke(main, ["approve", str(plan_dir)])
        assert result.exit_code == 3 and "who signed this plan" in result.stderr, result.stderr
    plan = load_plan(plan_dir)
    policy_sha = plan.document["trust_policy"]["sha256"]
    write_approvals(plan_dir, [approval_by(signer("alice#2"), plan.plan_hash, policy_sha, label="bob")])
    with pytest.raises(AuthorityRefusal, match="who signed the plan"):
        authorise_run(plan, read_approvals(plan_dir), signer("carol"))


def test_approver_key_not_in_the_policy_is_refused(tmp_path):
    _, plan_dir = planned(tmp_path, approvers=())
    result = CliRunner(env=key_env("stranger")).invoke(main, ["approve", str(plan_dir)])
    assert result.exit_code == 3 and "is not in the trust policy" in result.stderr
    plan = load_plan(plan_dir)
    write_approvals(
        plan_dir, [approval_by(signer("stranger"), plan.plan_hash, plan.document["trust_policy"]["sha256"])]
    )
    with pytest.raises(AuthorityRefusal, match=r"approval 1 \(key SHA256:.*is not in the trust policy"):
        authorise_run(plan, read_approvals(plan_dir), signer("carol"))
    # a key in the policy without the approver role (the operator's) is refused the same way
    result = CliRunner(env=key_env("carol")).invoke(main, ["approve", str(plan_dir)])
    assert result.exit_code == 3 and "does not have the approver role" in result.stderr


def test_quorum_of_two_needs_two_people(tmp_path):
    root = tmp_path
    config, plan_dir = planned(root, quorum=2, approvers=("bob",))
    sim = start_sim(root / "moc.sqlite", config)
    try:
        refused_untouched(cli_apply(root, sim.url), root, "quorum not met: 1 of 2")
        pipeline.run_approve(plan_dir, signer("dave"))
        result = cli_apply(root, sim.url)
        assert result.exit_code == 0, result.stderr
        started = read_journal(root / "run" / "journal.jsonl")[0]
        assert [a["key_id"] for a in started["approvals"]] == [signer("bob").key_id, signer("dave").key_id]
        assert len(api_writes(root / "moc.sqlite")) == 1
    finally:
        sim.stop()


def test_the_same_persons_two_keys_count_once(tmp_path):
    people = {
        "alice": (("planner",), ["alice"]),
        "bob": (("approver",), ["bob", "bob#2"]),
        "dave": (("approver",), ["dave"]),
        "carol": (("operator",), ["carol"]),
    }
    _, plan_dir = planned(tmp_path, people, quorum=2, approvers=("bob",))
    result = CliRunner(env=key_env("bob#2")).invoke(main, ["approve", str(plan_dir)])
    assert result.exit_code == 2 and "has already approved" in result.stderr
    plan = load_plan(plan_dir)
    write_approvals(
        plan_dir,
        [
            *read_approvals(plan_dir),
            approval_by(signer("bob#2"), plan.plan_hash, plan.document["trust_policy"]["sha256"], "Robert"),
        ],
    )
    with pytest.raises(AuthorityRefusal, match="quorum not met: 1 of 2"):
        authorise_run(plan, read_approvals(plan_dir), signer("carol"))


@pytest.mark.parametrize(
    "look_alike", LOOK_ALIKES, ids=["trailing-space", "cyrillic-i", "zero-width", "full-width", "dotted-I"]
)
def test_look_alike_names_cannot_bypass_anything(tmp_path, look_alike):
    """Names are labels: alice's key approving her own plan is refused whatever name the record carries, and a
    policy giving two people names that read the same is refused; a look-alike that is a distinct person holds a
    distinct key, and only that key's signature counts for them."""
    _, plan_dir = planned(tmp_path, approvers=())
    plan = load_plan(plan_dir)
    write_approvals(
        plan_dir,
        [approval_by(signer("alice"), plan.plan_hash, plan.document["trust_policy"]["sha256"], label=look_alike)],
    )
    with pytest.raises(AuthorityRefusal, match="does not have the approver role"):
        authorise_run(plan, read_approvals(plan_dir), signer("carol"))
    (tmp_path / "twins.toml").write_text(
        policy_toml({"alice": (("planner",), ["alice"]), look_alike: (("approver",), ["bob"])})
    )
    from remediation.authority import name_label

    if name_label(look_alike) == name_label("alice"):
        with pytest.raises(ConfigError, match=r"person\[1\]\.name.*reads the same"):
            load_trust_policy(tmp_path / "twins.toml")
    else:  # a different person (different key): allowed, shown apart, decided by key only
        policy = load_trust_policy(tmp_path / "twins.toml")
        assert policy.keys[signer("bob").key_id][0].name != policy.keys[signer("alice").key_id][0].name


def test_tampered_approval_signature_is_named(world):
    root, plan_dir, sim = world
    data = json.loads((plan_dir / "approvals.json").read_text())
    signature = bytearray(base64.b64decode(data["approvals"][0]["signature"]["value"]))
    signature[0] ^= 1
    data["approvals"][0]["signature"]["value"] = base64.b64encode(bytes(signature)).decode()
    (plan_dir / "approvals.json").write_text(json.dumps(data))
    refused_untouched(
        cli_apply(root, sim.url), root, f"approval 1 (key {signer('bob').key_id}", "signature does not verify"
    )


def test_change_reference_is_sealed_in_the_plan_and_signed_in_each_approval(tmp_path):
    _, config = small_case(tmp_path)
    pipeline.run_plan(config, tmp_path / "plan", key=signer("alice"), change_ref="CHG-0042")
    assert load_plan(tmp_path / "plan").document["governance"] == {
        "change_record": "CHG-0042",
        "decision": None,
    }  # the case gives no decision
    result = CliRunner(env=key_env("bob")).invoke(main, ["approve", str(tmp_path / "plan"), "--change-ref", "CHG-9999"])
    assert result.exit_code == 2 and "differs from the plan's 'CHG-0042'" in result.stderr
    result = CliRunner(env=key_env("bob")).invoke(main, ["approve", str(tmp_path / "plan"), "--note", "ok"])
    assert result.exit_code == 0 and "change CHG-0042" in result.stdout and signer("bob").key_id in result.stdout
    approval = read_approvals(tmp_path / "plan")[0]
    assert (
        approval["change_ref"] == "CHG-0042"
        and approval["approver"] == "bob"
        and approval["key_id"] == signer("bob").key_id
    )


def test_approvals_for_another_plan_or_policy_do_not_count(tmp_path):
    _, plan_dir = planned(tmp_path, approvers=())
    plan = load_plan(plan_dir)
    sha = plan.document["trust_policy"]["sha256"]
    write_approvals(
        plan_dir, [approval_by(signer("bob"), "0" * 64, sha), approval_by(signer("bob"), plan.plan_hash, "f" * 64)]
    )
    with pytest.raises(AuthorityRefusal, match=r"quorum not met: 0 of 1 .*another plan hash.*another trust policy"):
        authorise_run(plan, read_approvals(plan_dir), signer("carol"))


# ------------------------------------------------------------------------------------------------ the trust policy


def test_policy_changed_after_planning_is_refused(world):
    root, plan_dir, sim = world
    policy = root / "people.toml"
    original = policy.read_text()
    policy.write_text(original.replace("quorum = 1", "quorum = 2"))
    result = CliRunner(env=key_env("dave")).invoke(main, ["approve", str(plan_dir)])
    assert result.exit_code == 3 and "changed since planning" in result.stderr
    refused_untouched(cli_apply(root, sim.url), root, "changed since planning")
    (root / "other.toml").write_text(
        policy_toml() + "# reviewed again\n"
    )  # the same people, another text: another hash
    result = cli_apply(root, sim.url, "carol", "--trust-policy", str(root / "other.toml"))
    refused_untouched(result, root, "is not the policy plan")
    policy.write_text(
        original
    )  # (the case's own file is also one of the plan's config files: it must be back as planned)
    (root / "copy.toml").write_text(
        original
    )  # the sealed bytes under another name: the hash decides, so it is accepted
    assert cli_apply(root, sim.url, "carol", "--trust-policy", str(root / "copy.toml")).exit_code == 0


def test_operator_key_must_hold_the_operator_role(world):
    root, _, sim = world
    refused_untouched(cli_apply(root, sim.url, "bob"), root, "does not have the operator role")
    result = CliRunner().invoke(
        main,
        ["apply", str(root / "plan"), "--run", str(root / "run"), "--trust-policy", str(root / "people.toml")],
        env={"REMEDIATION_KEY": ""},
    )
    assert result.exit_code == 2 and "--key" in result.stderr and not (root / "run").exists()


KEY_FORMS = {
    "openssh": lambda k: public_key_line(k, "bob@laptop"),
    "pem": lambda k: k.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode(),
    "raw-base64": lambda k: base64.b64encode(
        k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode(),
    "raw-hex": lambda k: k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex(),
}


@pytest.mark.parametrize("form", KEY_FORMS)
def test_public_key_forms_are_accepted(tmp_path, form):
    text = KEY_FORMS[form](signer("bob").public_key).replace("\n", "\\n")
    (tmp_path / "p.toml").write_text(f'[[person]]\nname = "Bob"\nroles = ["approver"]\nkeys = ["{text}"]\n')
    policy = load_trust_policy(tmp_path / "p.toml")
    assert list(policy.keys) == [signer("bob").key_id] and policy.quorum == 1


BAD_POLICIES = {
    "unknown field": (
        '[[person]]\nname = "Bob"\nroles = ["approver"]\nkeys = ["KEY"]\nemail = "b@x"\n',
        "person[0].email",
    ),
    "unknown role": ('[[person]]\nname = "Bob"\nroles = ["boss"]\nkeys = ["KEY"]\n', "person[0].roles[0]"),
    "no people": ("[approval]\nquorum = 1\n", "field 'person'"),
    "rsa key": (
        '[[person]]\nname = "Bob"\nroles = ["approver"]\nkeys = ["ssh-rsa AAAAB3NzaC1yc2E bob"]\n',
        "person[0].keys[0]",
    ),
    "quorum above approvers": (
        '[approval]\nquorum = 2\n[[person]]\nname = "Bob"\nroles = ["approver"]\nkeys = ["KEY"]\n',
        "approval.quorum",
    ),
    # A small-order point verifies a trivial signature over any message: anyone could sign as its holder.
    "weak key (identity point)": (
        '[[person]]\nname = "Dave"\nroles = ["approver"]\n'
        'keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]\n',
        "person[0].keys[0]",
    ),
    "weak key (all zero)": (
        '[[person]]\nname = "Dave"\nroles = ["approver"]\nkeys = ["' + "00" * 32 + '"]\n',
        "person[0].keys[0]",
    ),
    "weak key (order 2, sign bit set)": (
        '[[person]]\nname = "Dave"\nroles = ["approver"]\nkeys = ["ec' + "ff" * 30 + 'ff"]\n',
        "person[0].keys[0]",
    ),
    "nested too deeply": ("x = " + "[" * 100_000 + "]" * 100_000 + "\n", "people.toml"),
    "one key, two people": (
        '[[person]]\nname = "Bob"\nroles = ["approver"]\nkeys = ["KEY"]\n[[person]]\nname = "Rob"\nroles = ["operator"]\nkeys = ["KEY"]\n',
        "person[1].keys[0]",
    ),
}


@pytest.mark.parametrize("case", BAD_POLICIES)
def test_bad_policy_is_exit_2_naming_file_and_field(tmp_path, case):
    text, field = BAD_POLICIES[case]
    _, config = small_case(tmp_path)
    (tmp_path / "people.toml").write_text(text.replace("KEY", public_key_line(signer("bob").public_key)))
    result = CliRunner(env=key_env("alice")).invoke(
        main, ["plan", "--config", str(config), "--out", str(tmp_path / "p")]
    )
    assert result.exit_code == 2 and str(tmp_path / "people.toml") in result.stderr and field in result.stderr, (
        result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ keys


def test_keygen_writes_a_private_key_only_its_owner_reads_and_an_openssh_line(tmp_path):
    result = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "keys" / "bob"), "--comment", "bob@dcc"])
    assert result.exit_code == 0, result.stderr
    private, public = tmp_path / "keys" / "bob", tmp_path / "keys" / "bob.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    line = public.read_text().strip()
    assert line.startswith("ssh-ed25519 AAAA") and line.endswith(" bob@dcc") and line in result.stdout
    assert load_signer(private).key_id in result.stdout
    assert "PRIVATE" not in result.stdout  # the private key never reaches any output
    again = CliRunner().invoke(main, ["keygen", "--out", str(private)])
    assert again.exit_code == 2 and "never overwritten" in again.stderr
    os.chmod(private, 0o644)
    with pytest.raises(Exception, match="accessible to other users"):
        load_signer(private)


@pytest.mark.parametrize("where", ["dangling symlink", "parent is a file", "public key path taken"])
def test_keygen_refuses_unusable_paths_in_one_line(tmp_path, where):
    out = tmp_path / "keys" / "bob"
    out.parent.mkdir()
    if where == "dangling symlink":
        out.symlink_to(tmp_path / "elsewhere")  # a planted link must not redirect the private key
    elif where == "parent is a file":
        (tmp_path / "keys" / "file").write_text("x")
        out = tmp_path / "keys" / "file" / "bob"
    else:
        (tmp_path / "keys" / "bob.pub").write_text("x")
    result = CliRunner().invoke(main, ["keygen", "--out", str(out)])
    assert (
        result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    ), result.output
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_pinned_trust_policy_that_is_not_a_regular_file_is_refused_without_reading_it(world, kind):
    """apply --trust-policy naming a FIFO (a read waits for ever) or /dev/zero (a read never ends): one line, exit 2."""
    root, _, sim = world
    pinned = root / "pinned.toml"
    if kind == "fifo":
        os.mkfifo(pinned)
    else:
        pinned.symlink_to("/dev/zero")
    args = [
        "apply",
        str(root / "plan"),
        "--run",
        str(root / "run"),
        "--endpoint",
        f"MOC={sim.url}",
        "--trust-policy",
        str(pinned),
    ]
    result = CliRunner(env=key_env("carol")).invoke(main, args)
    assert result.exit_code == 2 and "not a regular file" in result.stderr and "Traceback" not in result.output, (
        result.output
    )
    assert not (root / "run").exists() and api_writes(root / "moc.sqlite") == []


def test_passphrase_protected_and_openssh_private_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_PASS", "correct horse battery staple")
    result = CliRunner().invoke(main, ["keygen", "--out", str(tmp_path / "k"), "--passphrase-env", "MY_PASS"])
    assert result.exit_code == 0 and "encrypted" in result.stdout
    assert b"ENCRYPTED" in (tmp_path / "k").read_bytes()
    monkeypatch.delenv("REMEDIATION_KEY_PASSPHRASE", raising=False)
    with pytest.raises(Exception, match="passphrase-protected"):
        load_signer(tmp_path / "k")
    monkeypatch.setenv("REMEDIATION_KEY_PASSPHRASE", "wrong")
    with pytest.raises(Exception, match="wrong passphrase"):
        load_signer(tmp_path / "k")
    monkeypatch.setenv("REMEDIATION_KEY_PASSPHRASE", "correct horse battery staple")
    assert load_signer(tmp_path / "k").key_id == key_id(load_signer(tmp_path / "k").public_key)
    # a key someone already has from ssh-keygen (OpenSSH private key format)
    fd = os.open(tmp_path / "id_ed25519", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        signer("bob").private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ),
    )
    os.close(fd)
    monkeypatch.delenv("REMEDIATION_KEY_PASSPHRASE")
    assert load_signer(tmp_path / "id_ed25519").key_id == signer("bob").key_id


# ------------------------------------------------------------------------------------------------ signed runs


def test_run_records_are_signed_by_the_operator_and_checked(world):
    root, plan_dir, sim = world
    options = ApplyOptions(who="carol", endpoints={"MOC": sim.url})
    run_apply(plan_dir, root / "run", options)
    run_apply(plan_dir, root / "run", options)  # a second invocation: run_resumed
    entries = read_journal(root / "run" / "journal.jsonl")
    policy = load_trust_policy(root / "people.toml")
    assert verify_journal_signatures(entries, policy, "journal") == 4  # started, finished, resumed, finished
    started = entries[0]
    assert (
        started["signature"]["key_id"] == signer("carol").key_id and started["authority"]["operator"]["name"] == "carol"
    )
    assert "PRIVATE" not in (root / "run" / "journal.jsonl").read_text()
    # alter the signed run_started record and rebuild the whole chain: the chain holds, the signature does not
    started["run_by"] = "mallory"
    prev, lines = GENESIS, []
    for entry in [started, *entries[1:]]:
        entry["prev"] = prev
        prev = entry_hash(entry)
        lines.append(canonical_json(entry))
    (root / "run" / "journal.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert verify_journal(root / "run" / "journal.jsonl")[0]
    with pytest.raises(AuthorityRefusal, match=r"seq 1 \(run_started\): signature does not verify"):
        verify_journal_signatures(read_journal(root / "run" / "journal.jsonl"), policy, "journal")


# ------------------------------------------------------------------------------------------------ audit verify


def reseal_export(directory, key: Signer) -> None:
    """What an insider holding a real auditor key can do after editing an export: rehash and re-sign the manifest."""
    manifest = json.loads((directory / "manifest.json").read_text())
    for f in manifest["files"]:
        f["sha256"] = sha256_file(directory / f["name"])
    manifest["key_id"] = key.key_id
    data = (json.dumps(manifest, indent=2) + "\n").encode()
    (directory / "manifest.json").write_bytes(data)
    (directory / "manifest.sig").write_text(base64.b64encode(key.private_key.sign(data)).decode() + "\n")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("authority-export")
    config, plan_dir = planned(root)
    sim = start_sim(root / "moc.sqlite", config)
    try:
        run_apply(plan_dir, root / "run", ApplyOptions(who="carol", endpoints={"MOC": sim.url}))
    finally:
        sim.stop()
    pipeline.run_audit_export(root / "run", root / "export", None, "erin", key=signer("erin"))
    other = root / "other"  # a second plan of the same case, approved by bob: its approval is real but not for our plan
    other.mkdir()
    pipeline.run_plan(config, other / "plan", key=signer("alice"), s1sps=("MOC",), change_ref="CHG-OTHER")
    pipeline.run_approve(other / "plan", signer("bob"))
    return root


def test_audit_verify_checks_policy_hash_and_every_signature(exported, tmp_path):
    directory = tmp_path / "export"
    shutil.copytree(exported / "export", directory)
    sha = sha256_file(exported / "people.toml")
    result = CliRunner().invoke(main, ["audit", "verify", str(directory), "--expect-policy-sha256", sha])
    assert result.exit_code == 0 and "trust policy" in result.stdout, result.stderr
    print("\n" + result.stdout.strip())
    missing = CliRunner().invoke(main, ["audit", "verify", str(directory)])
    assert missing.exit_code == 2 and "--expect-policy-sha256" in missing.stderr and sha in missing.stderr
    wrong = CliRunner().invoke(main, ["audit", "verify", str(directory), "--expect-policy-sha256", "0" * 64])
    assert wrong.exit_code == 3 and "not the reviewed trust policy" in wrong.stderr


def test_audit_verify_fails_on_a_swapped_approval(exported, tmp_path):
    directory = tmp_path / "export"
    shutil.copytree(exported / "export", directory)
    shutil.copy2(
        exported / "other" / "plan" / "approvals.json", directory / "approvals.json"
    )  # bob's real approval, of another plan
    reseal_export(directory, signer("erin"))
    result = CliRunner().invoke(
        main, ["audit", "verify", str(directory), "--expect-policy-sha256", sha256_file(exported / "people.toml")]
    )
    assert result.exit_code == 3 and "approvals.json: quorum not met: 0 of 1" in result.stderr, result.stderr


def test_audit_verify_fails_on_a_swapped_policy(exported, tmp_path):
    """The insider swaps in a policy naming her own keys and re-signs plan, approval, run records and manifest
    with them: everything verifies against the swapped policy, but not against the hash the auditor expects."""
    directory = tmp_path / "export"
    shutil.copytree(exported / "export", directory)
    mallory = signer("mallory")
    (directory / "trust_policy.toml").write_text(
        policy_toml({"alice": (("planner", "auditor", "operator"), ["mallory"]), "bob": (("approver",), ["mallory#2"])})
    )
    sha = sha256_file(directory / "trust_policy.toml")
    document = json.loads((directory / "plan.json").read_text())
    document["trust_policy"]["sha256"] = sha
    document = seal({k: v for k, v in document.items() if k != "signature"})
    document["signature"] = sign_block(mallory, document, "alice")
    (directory / "plan.json").write_text(json.dumps(document))
    forged = [approval_by(signer("mallory#2"), document["plan_hash"], sha)]
    write_approvals(directory, forged)
    prev, lines = GENESIS, []
    for entry in read_journal(directory / "journal.jsonl"):
        entry["prev"] = prev
        if entry["event"] == "run_started":
            entry.update(plan_hash=document["plan_hash"], approvals=forged)
        if "signature" in entry:
            entry["signature"] = mallory.sign({k: v for k, v in entry.items() if k != "signature"})
        prev = entry_hash(entry)
        lines.append(canonical_json(entry))
    (directory / "journal.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    reseal_export(directory, mallory)
    pipeline.run_audit_verify(directory, None, sha)  # self-consistent under the swapped policy ...
    reviewed = sha256_file(exported / "people.toml")
    result = CliRunner().invoke(main, ["audit", "verify", str(directory), "--expect-policy-sha256", reviewed])
    assert result.exit_code == 3 and "not the reviewed trust policy" in result.stderr  # ... but not the reviewed one


# ------------------------------------------------------------------------------------------------ tokens


TOKEN_CASE = {"base_url": "http://127.0.0.1:9", "token_env": "MOC_TOKEN"}


@pytest.mark.parametrize(
    "url", ["http://192.0.2.10:8701", "http://127.0.0.1@evil.example:8701", "http://localhost.evil.example"]
)
def test_token_is_refused_for_a_plain_http_non_loopback_override(tmp_path, url):
    config, _ = planned(tmp_path, moc=TOKEN_CASE)
    env = {**key_env("carol"), "MOC_TOKEN": "s3cret-token-value"}
    result = CliRunner(env=env).invoke(
        main,
        [
            "apply",
            str(tmp_path / "plan"),
            "--run",
            str(tmp_path / "run"),
            "--endpoint",
            f"MOC={url}",
            "--trust-policy",
            str(tmp_path / "people.toml"),
        ],
    )
    assert result.exit_code == 3 and "tokens go only over TLS" in result.stderr and not (tmp_path / "run").exists(), (
        result.stderr
    )
    assert "s3cret" not in result.stderr


def test_missing_token_variable_is_exit_2_before_any_run_directory(tmp_path):
    planned(tmp_path, moc=TOKEN_CASE)
    result = CliRunner(env={**key_env("carol"), "MOC_TOKEN": ""}).invoke(
        main,
        [
            "apply",
            str(tmp_path / "plan"),
            "--run",
            str(tmp_path / "run"),
            "--trust-policy",
            str(tmp_path / "people.toml"),
        ],
    )
    assert result.exit_code == 2 and "$MOC_TOKEN" in result.stderr and not (tmp_path / "run").exists(), result.stderr


class _EchoingS1SP(BaseHTTPRequestHandler):
    """An S1SP that echoes the caller's credentials back in its error body (the token lands at the 200-character cut)."""

    def do_GET(self):  # noqa: N802
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        body = json.dumps(
            {
                "error": "x" * 170
                + f" rejected {token} (Authorization: Bearer {token}) key {base64.b64encode(token.encode()).decode()}"
            }
        )
        self.send_response(400)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


def test_echoed_token_is_redacted_before_journal_checkpoints_and_exports(tmp_path):
    token = "tok-" + "7f3a9c" * 6
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoingS1SP)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        planned(tmp_path, moc=TOKEN_CASE)
        env = {**key_env("carol"), "MOC_TOKEN": token}
        result = CliRunner(env=env).invoke(
            main,
            [
                "apply",
                str(tmp_path / "plan"),
                "--run",
                str(tmp_path / "run"),
                "--trust-policy",
                str(tmp_path / "people.toml"),
                "--endpoint",
                f"MOC=http://127.0.0.1:{server.server_address[1]}",
            ],
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.stderr  # the device failed (HTTP 400): attention, not a crash
    pipeline.run_audit_export(tmp_path / "run", tmp_path / "export", None, "erin", key=signer("erin"))
    journal = (tmp_path / "run" / "journal.jsonl").read_text()
    assert "HTTP 400" in journal and "rejected [REDACTED" in journal  # (the 200-character cut may split the marker)
    started = read_journal(tmp_path / "run" / "journal.jsonl")[0]
    override = started["authority"]["endpoint_overrides"][
        0
    ]  # the override is journaled: who, which key, where, token sent
    assert (
        override["by"]
        and override["by_key"] == signer("carol").key_id
        and override["token_sent"]
        and override["case_url"] == "http://127.0.0.1:9"
    )
    for prefix in (token, token[:12], base64.b64encode(token.encode()).decode()[:16]):
        for path in [*(tmp_path / "run").iterdir(), *(tmp_path / "export").iterdir()]:
            if path.is_file():
                assert prefix.encode() not in path.read_bytes(), f"{prefix!r} in {path}"
    with sqlite3.connect(tmp_path / "run" / "checkpoints.sqlite") as conn:
        errors = [e for (e,) in conn.execute("SELECT last_error FROM ops")]
        details = " ".join(d for (d,) in conn.execute("SELECT detail FROM transitions WHERE detail IS NOT NULL"))
    assert errors and all("[REDACTED" in e for e in errors) and token not in details


class _TokenInReply(BaseHTTPRequestHandler):
    """A 200 reply that puts the caller's token where a device id, a version or a certificate belongs."""

    where = "device_id"

    def do_GET(self):  # noqa: N802
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        device = self.path.split("/")[3]
        reply = {"device_id": device, "version": 3, "slots": {"NO_DS": {"cert": None}, "NO_KA": {"cert": None}}}
        if self.where == "device_id":
            reply["device_id"] = token
        elif self.where == "version":
            reply["version"] = token
        else:
            reply["slots"]["NO_DS"]["cert"] = token
        body = json.dumps(reply, ensure_ascii=self.where == "cert")  # the cert case also tries \u-escaping nothing
        self.send_response(200)
        self.send_header("Content-Length", str(len(body.encode())))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("where", ["device_id", "version", "cert"])
def test_a_reply_carrying_the_token_is_a_protocol_error_and_none_of_it_is_kept(tmp_path, where):
    """Found by attack review: a lying S1SP put the token in device_id, version or a certificate field of a 200
    reply, and it reached the screen, run.json, the journal, the checkpoints and the signed export (whole, or its
    first 20 characters)."""
    token = "SEKRIT-TOKEN-" + "abc123xyz" * 3
    handler = type("H", (_TokenInReply,), {"where": where})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        planned(tmp_path, moc=TOKEN_CASE)
        env = {**key_env("carol"), "MOC_TOKEN": token}
        result = CliRunner(env=env).invoke(
            main,
            [
                "apply",
                str(tmp_path / "plan"),
                "--run",
                str(tmp_path / "run"),
                "--trust-policy",
                str(tmp_path / "people.toml"),
                "--endpoint",
                f"MOC=http://127.0.0.1:{server.server_address[1]}",
            ],
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.exit_code == 1, result.output
    assert "echoes the bearer token" in (tmp_path / "run" / "journal.jsonl").read_text()
    for prefix in (token, token[:10], token[:20]):
        assert prefix not in result.output
        for path in (tmp_path / "run").iterdir():
            if path.is_file():
                assert prefix.encode() not in path.read_bytes(), f"{prefix!r} in {path}"


def test_redact_covers_plain_quoted_base64_bearer_and_private_keys():
    secret = "a/b+c=d-secret"
    text = f"{secret} {secret.replace('/', '%2F').replace('+', '%2B').replace('=', '%3D')} {base64.b64encode(secret.encode()).decode()} Bearer other-token"
    text += "\n-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----"
    out = redact(text, (secret,))
    assert "secret" not in out and "other-token" not in out and "MC4CAQ" not in out and out.count("[REDACTED]") == 5


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs OpenSSH's ssh-keygen")
def test_a_key_made_by_ssh_keygen_plans_and_its_id_is_what_ssh_keygen_prints(tmp_path, monkeypatch):
    """People can use the ed25519 key they already have: its .pub line goes into the policy, the private key signs,
    and the key id the tool prints is the fingerprint `ssh-keygen -l` shows."""
    import subprocess

    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice@laptop", "-f", str(tmp_path / "id_ed25519")],
        check=True,
    )
    line = (tmp_path / "id_ed25519.pub").read_text().strip()
    fingerprint = subprocess.run(
        ["ssh-keygen", "-lf", str(tmp_path / "id_ed25519.pub")], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    monkeypatch.setenv("REMEDIATION_KEY_PASSPHRASE", "for another key")  # an unencrypted key ignores it
    assert load_signer(tmp_path / "id_ed25519").key_id == fingerprint
    case = tmp_path / "case"
    _, config = small_case(case)
    (case / "people.toml").write_text(
        f'[[person]]\nname = "Alice"\nroles = ["planner"]\nkeys = ["{line}"]\n'
        + policy_toml({"bob": (("approver",), ["bob"])}).split("\n", 2)[2]
    )
    result = CliRunner().invoke(
        main, ["plan", "--config", str(config), "--out", str(case / "plan"), "--key", str(tmp_path / "id_ed25519")]
    )
    assert result.exit_code == 0, result.stderr
    assert load_plan(case / "plan").document["signature"]["key_id"] == fingerprint

"""One function per command: wire config, stages and outputs together. No argument parsing, no rendering."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd

from remediation import authority
from remediation.apply.pacing import WavePolicy
from remediation.apply.runner import (
    ApplyOptions,
    ApplyResult,
    apply_plan,
    check_endpoints,
    dry_run,
    write_outcomes,
)
from remediation.artefacts.audit_export import export_audit, verify_export
from remediation.artefacts.detect_result import FINDINGS, DetectResultDir
from remediation.artefacts.plan_dir import PlanDir, PlanDocument, check_fresh, load_plan, read_approvals
from remediation.artefacts.run_dir import JOURNAL, OUTCOMES_PARQUET, DryRunRecord, RunDir, carry_files, read_run
from remediation.artefacts.verify_result import VerifyResultDir
from remediation.certificates import CertificateCatalog
from remediation.config import load_case
from remediation.detection import DetectResult, detect_case, plannable_mask
from remediation.errors import InputError, SafetyRefusal
from remediation.evidence.hashing import BackgroundHashes, sha256_file
from remediation.ingest.case import load_case_data
from remediation.ingest.faults import QUARANTINE_COLUMNS
from remediation.ingest.pki import load_org_cas, load_orl
from remediation.ingest.registry import load_registry
from remediation.outputs import prepare_dir, write_json, write_parquet, write_text
from remediation.plan import (
    ROLLBACK_POSSIBLY_WRITTEN,
    build_plan,
    build_rollback_plan,
    plan_counts,
    plannable_categories,
    plannable_causes,
    refuse_registry_gaps,
    seal,
)
from remediation.progress import NO_PROGRESS, StageProgress
from remediation.report.content import build_report
from remediation.report.html import render_html
from remediation.report.markdown import render_markdown
from remediation.verify import fresh_case, verify_detection


def run_detect(
    config_path: str | Path, out_dir: str | Path, as_of: date | None = None, progress: StageProgress = NO_PROGRESS
) -> DetectResult:
    config = load_case(config_path)
    out = prepare_dir(out_dir)
    result = detect_case(load_case_data(config, as_of, progress), progress)
    progress.stage("writing findings and summary")
    DetectResultDir(out).write(
        result.detection, result.input_rows, result.quarantine[QUARANTINE_COLUMNS], result.summary
    )
    from remediation.outcomes.references import CERTIFICATES_FILE, certificate_table

    # The certificates detect saw (DER included), so `plan --from` can name slot certificates by serial + issuer.
    write_parquet(out / CERTIFICATES_FILE, certificate_table(result.case.catalog))
    return result


# ------------------------------------------------------------------------------------------------ plan / approve


@dataclass
class PlanResult:
    directory: Path
    document: dict
    rows: pd.DataFrame
    detect: DetectResult


def run_plan(
    config_path: str | Path,
    out_dir: str | Path,
    *,
    planner: str = "",
    as_of: date | None = None,
    s1sps: tuple[str, ...] = (),
    progress: StageProgress = NO_PROGRESS,
    from_detect: str | Path | None = None,
    allow_unknown_no: bool = False,
    key=None,
    change_ref: str | None = None,
    trust_policy: str | Path | None = None,
) -> PlanResult:
    """Detect (or, with `from_detect`, reuse a detect result that still matches the case) and plan."""
    from remediation.outcomes.change_requests import manual_s1sps, split_manual
    from remediation.outcomes.costs import load_cost_model
    from remediation.outcomes.planning import plan_extras
    from remediation.outcomes.references import intern_saved_certificates

    config = load_case(config_path)
    load_cost_model(
        config.costs, config.path, sorted({e.s1sp for e in config.extracts} | set(config.endpoints))
    )  # a bad [costs] fails before detect
    # Before any work: the key must be a planner's in the policy (the case's, or --trust-policy) the plan is sealed under.
    signing = authority.plan_signing(Path(trust_policy) if trust_policy else config.trust_policy_path, key)
    planner = planner.strip()
    if not planner and signing is None:  # a signed plan is named by its key's holder; an unsigned one needs a label
        raise InputError("a planner name is required", field="--by")
    for code in s1sps:
        if code not in config.s1sp_codes:
            raise InputError(
                f"unknown S1SP {code!r} (the case configures {', '.join(config.s1sp_codes)})", field="--s1sp"
            )
    # The directory first (a plan is never overwritten: refused before any work); whatever is written in it is removed
    # again unless the plan is sealed (a refusal, an error, Ctrl-C): a directory holds a whole plan or none of it.
    if from_detect is not None and Path(out_dir).resolve() == Path(from_detect).resolve():
        raise InputError("a plan needs a directory of its own, not the detect result it is made from", field="--out")
    plan_dir = PlanDir.new(out_dir)
    out = plan_dir.directory
    with plan_dir.unsealed():
        if from_detect is not None:
            source = DetectResultDir(Path(from_detect))
            as_of_used = as_of or config.as_of or date.today()
            # Re-hashing 12 GB of national inputs is most of a national `plan --from`: on every core, while the plan is
            # made; the inputs' SHA-256 are checked before the plan is sealed (and nothing is left if one differs).
            hashes = BackgroundHashes([*config.config_files, *config.input_files], workers=os.cpu_count() or 1)
            summary = source.check_matches(
                config.input_files, config.config_files, as_of_used, hashes.get, input_hashes=False
            )
            if summary.registry_gaps is None:
                raise SafetyRefusal(
                    f"refusing to plan from {from_detect}: its detect result predates the registry coverage check; run detect again"
                )
            refuse_registry_gaps(summary.registry_gaps, allow_unknown_no, config.registry_path)
            catalog = CertificateCatalog(
                load_org_cas(config.org_ca_paths), load_orl(config.orl_path), config.accepted_policy_oids
            )
            registry = load_registry(config.registry_path, catalog)
            intern_saved_certificates(catalog, source.directory)  # the slot certificates detect saw, for their ids
            wanted = plannable_categories(config.policy) + [c for c, _ in plannable_causes(config.policy)]
            chosen = source.findings_where(
                "category", wanted
            )  # build_plan keeps only the revoked cause of EXPIRED_OR_REVOKED
            rows = build_plan(chosen, registry, catalog, as_of_used, config.policy, tuple(sorted(s1sps)))
            detected = None
            # The plan directory carries the detect result it was made from, byte for byte, as a fresh plan would.
            outputs = source.copy_sealed(out)
        else:
            detected = detect_case(load_case_data(config, as_of, progress), progress)
            summary, as_of_used = detected.summary, detected.case.as_of
            refuse_registry_gaps(summary.registry_gaps, allow_unknown_no, config.registry_path)
            detection = detected.detection
            rows = build_plan(
                detection.subset(plannable_mask(detection, config.policy)),
                detected.case.registry,
                detected.case.catalog,
                as_of_used,
                config.policy,
                tuple(sorted(s1sps)),
            )
            catalog, registry = detected.case.catalog, detected.case.registry
            outputs = {
                name: path
                for name, path in DetectResultDir(out)
                .write(
                    detection,
                    detected.input_rows,
                    detected.quarantine[QUARANTINE_COLUMNS],
                    summary,
                    csv=False,
                    manifest=False,
                )
                .items()  # plan.json seals the copies itself
            }
        # A manual S1SP is never written through an API: its devices become the change-request export (one writer:
        # outcomes/change_requests.py) for a scope decision, outside plan.parquet (so apply cannot reach them), and are
        # counted in plan.json.
        progress.stage("writing the plan")
        manual_codes = manual_s1sps(config.endpoints)
        rows, manual = split_manual(rows, manual_codes)
        # ... and the S1SP's change-request export (ids, fingerprints, four-eyes columns), references, governance, costs.
        extras = plan_extras(out, config, catalog, registry, rows, change_ref, manual_rows=manual)
        rows = extras.rows
        outputs.update(extras.outputs)
        outputs.update(plan_dir.write_rows(rows))
        document = PlanDocument(
            case=config.name,
            as_of=as_of_used.isoformat(),
            planned_by=planner,
            s1sp_filter=sorted(s1sps),
            policy=config.policy.model_dump(),
            allow_unknown_no=allow_unknown_no,
            registry_gaps=summary.registry_gaps,
            inputs=[{k: f[k] for k in ("role", "s1sp", "path", "sha256", "rows_read")} for f in summary.files],
            config_files=summary.config_files,
            endpoints=PlanDocument.endpoint_settings(config.endpoints),
            counts=plan_counts(rows),
            manual={
                "s1sps": manual_codes,
                "devices": int(len(manual)),
                "by_s1sp": {k: int(v) for k, v in manual.groupby("s1sp").size().items()},
            },
            outputs={name: sha256_file(path) for name, path in outputs.items()},
            additions=(
                authority.plan_fields(signing, planner, change_ref or config.governance.change_record),
                # governance as the case gives it (change record, --change-ref over it, and the decision), costs,
                # change_requests, manual_s1sps
                extras.fields,
            ),
        )
        if from_detect is not None:
            source.check_input_hashes(summary, config.input_files, hashes.get)
        document = seal(document.body())
        document = authority.sign_sealed_plan(document, signing)
        plan_dir.write_document(document)
    return PlanResult(out, document, rows, detected)


def run_approve(
    plan_dir: str | Path, key, note: str = "", change_ref: str | None = None, trust_policy: str | Path | None = None
) -> dict:
    """Sign an approval of the plan with an approver's key, after checking the plan, its inputs and its signature."""
    plan = load_plan(plan_dir)
    check_fresh(plan)
    policy = authority.policy_for_plan(plan, trust_policy)
    existing = read_approvals(plan.directory)
    approval = authority.make_approval(plan, policy, authority.as_signer(key), note, change_ref, existing)
    PlanDir(plan.directory).write_approvals([*existing, approval])
    return approval


# ------------------------------------------------------------------------------------------------ report

REPORT_SUFFIX = {"html": "html", "md": "md", "json": "json"}


def run_report(
    directory: str | Path, fmt: str, out_path: str | Path | None = None, redaction_key: bytes | None = None
) -> tuple[Path, dict]:
    report = build_report(directory, redaction_key)
    path = Path(out_path) if out_path else Path(directory) / f"report.{REPORT_SUFFIX[fmt]}"
    if fmt == "json":
        write_json(path, report)
    else:
        write_text(path, render_html(report) if fmt == "html" else render_markdown(report))
    return path, report


# ------------------------------------------------------------------------------------------------ apply / status / verify


def apply_options(
    *,
    who: str,
    s1sps: tuple[str, ...] = (),
    endpoints: dict[str, str] | None = None,
    canary: int,
    max_wave: int,
    pause_failure_rate: float,
    pause_min_sample: int,
    retry_failed: bool = False,
    timeout: float,
    client_cert: tuple[str, str] | None = None,
    ca_bundle: str | None = None,
) -> ApplyOptions:
    """The options of an apply, resume or dry run, from the CLI's flags: waves and pauses, S1SP filter, endpoints."""
    waves = WavePolicy(
        canary=canary, max_wave=max_wave, pause_failure_rate=pause_failure_rate, pause_min_sample=pause_min_sample
    )
    return ApplyOptions(
        who=who,
        waves=waves,
        s1sps=s1sps,
        endpoints=endpoints or {},
        timeout=timeout,
        retry_failed=retry_failed,
        client_cert=client_cert,
        ca_bundle=ca_bundle,
    )


def run_apply(
    plan_dir: str | Path,
    run_dir: str | Path,
    options: ApplyOptions,
    progress=None,
    *,
    key=None,
    trust_policy: str | Path | None = None,
) -> ApplyResult:
    plan = load_plan(plan_dir)
    # Signatures, quorum, policy, operator key, then inputs and endpoints/tokens: all before the run directory exists.
    run_authority = authority.authorise_run(plan, read_approvals(plan.directory), key, trust_policy)
    check_fresh(plan)
    check_endpoints(plan, options)
    run_authority.endpoint_overrides = authority.endpoint_overrides(
        plan.document["endpoints"], options.endpoints, options.who, run_authority.signer.key_id
    )
    return apply_plan(plan, Path(run_dir), options, progress, authority=run_authority)


def run_resume(
    run_dir: str | Path, options: ApplyOptions, progress=None, *, key=None, trust_policy: str | Path | None = None
) -> ApplyResult:
    return run_apply(read_run(run_dir).plan_dir, run_dir, options, progress, key=key, trust_policy=trust_policy)


def run_dry_run(plan_dir: str | Path, out_dir: str | Path, options: ApplyOptions, progress=None) -> pd.DataFrame:
    plan = load_plan(plan_dir)
    check_fresh(plan)
    frame = dry_run(plan, options, progress=progress)
    RunDir(out_dir).write_dry_run(DryRunRecord.of(plan.plan_hash, plan.directory, frame), frame)
    return frame


def run_status(run_dir: str | Path):
    """The run's state from its verified journal (see apply/state.py): what `status` prints and exits with."""
    from remediation.apply.state import run_state

    return run_state(run_dir)


def run_ops_from_journal(run_dir: Path, plan, what: str):
    """The run's verified journal replayed (its operator-signed records and head included): every planned op's state
    (`.frame()`) and its last run event; an edited index is a refusal (exit 3)."""
    from remediation.apply.index import run_policy, verified_ops

    run = read_run(run_dir)
    return verified_ops(run_dir, plan.rows, run.journal_head, what, policy=run_policy(plan), run=run)


def run_verify(
    config_path: str | Path,
    fresh_dir: str | Path,
    out_dir: str | Path,
    plan_dir: str | Path | None = None,
    as_of: date | None = None,
    progress: StageProgress = NO_PROGRESS,
) -> dict:
    """Fresh extracts -> detect; residual WRONG_NO devices are listed (and, with a plan, planned devices not at target)."""
    from remediation.outcomes.change_requests import read_change_requests

    config = fresh_case(load_case(config_path), Path(fresh_dir))
    out = VerifyResultDir.new(out_dir)
    result = detect_case(load_case_data(config, as_of, progress), progress)
    progress.stage("checking planned devices and writing the verify result")
    plan = load_plan(plan_dir) if plan_dir is not None else None
    verification = verify_detection(
        result.detection,
        result.summary.devices_by_category,
        plan.rows if plan is not None else None,
        plan.directory / FINDINGS if plan is not None else None,
        read_change_requests(plan.directory) if plan is not None else None,
    )
    verdict = verification.verdict.document()
    out.write(
        verdict,
        result.summary,
        result.detection.chunks(),
        verification.residual,
        verification.planned_not_at_target,
        verification.manual_not_at_target,
    )
    return verdict


# ------------------------------------------------------------------------------------------------ evidence


def run_audit_export(
    run_dir: str | Path, out_dir: str | Path, sign_key: str | Path | None, exported_by: str, *, key=None
):
    """Signed with an auditor's or operator's Ed25519 key from the run's trust policy (--key; --sign-key is its old name).
    The notification packs are made afresh from the run into packs/ and signed with the rest."""
    from remediation.outcomes.links import utc_now
    from remediation.outcomes.packs import write_packs
    from remediation.outcomes.state import resolve

    sources = resolve(run_dir)

    def packs(out: Path) -> dict:
        summary = write_packs(sources, out / "packs", utc_now())
        return {name: summary[name] for name in ("alert_routing_impact", "alert_routing_totals")}

    signer = authority.as_signer(key if key is not None else sign_key)
    with_packs = sources.kind == "run" and sources.plan.get("kind") != "rollback"
    return export_audit(
        Path(run_dir),
        Path(out_dir),
        None,
        exported_by,
        signer=signer,
        extras=packs if with_packs else None,
        journal_ops=_ended_run_ops,
    )


def _ended_run_ops(run_dir: Path, plan_rows: pd.DataFrame, run, policy) -> pd.DataFrame:
    """What an export may sign: the ops of a run that is not running, replayed from its verified journal (operator-
    signed records and head checked under `policy`), which ends with a finish or interruption record, cross-checked
    against the checkpoint index (an edited index refuses)."""
    from remediation.apply.index import verified_ops

    return verified_ops(
        run_dir, plan_rows, run.journal_head, "export", require_end=True, policy=policy, run=run
    ).frame()


def _journal_states(journal: Path, plan_rows: pd.DataFrame) -> dict[str, str]:
    """operation id -> the state its journal entries lead to (an exported journal, replayed over the exported plan)."""
    from remediation.apply.index import replay

    return {op: o.state for op, o in replay(journal, plan_rows).ops.items()}


def run_audit_verify(
    directory: str | Path, pubkey: str | Path | None = None, expect_policy_sha256: str | None = None
) -> dict:
    return verify_export(
        Path(directory), Path(pubkey) if pubkey else None, expect_policy_sha256, journal_states=_journal_states
    )


def run_rollback(
    run_dir: str | Path, out_dir: str | Path, *, planner: str = "", devices: list[str] | None = None, key=None
) -> PlanResult:
    """A plan that restores the recorded prior certificates of devices this run wrote; approved and applied like any plan."""
    run_dir = Path(run_dir)
    original = load_plan(read_run(run_dir).plan_dir)
    # Signed by a planner under the original plan's (still unchanged) trust policy.
    signing = authority.rollback_signing(original, key)
    replayed = run_ops_from_journal(run_dir, original, "plan a rollback")  # the journal, not the index, says it
    ops = replayed.frame()
    # A run that ended without a finish or interruption record (killed, power cut) may have written devices whose
    # journal lines were lost: they are not in this rollback; a resume finds them (at_target_on_resume).
    ended = (replayed.last_run_event or {}).get("event") in ("run_finished", "run_interrupted")
    rows = build_rollback_plan(original.rows, ops, devices, _plan_certificates(original.directory))
    if rows.empty:
        raise InputError("no device written by this run to roll back", file=str(run_dir))
    out = PlanDir.new(out_dir).directory
    write_outcomes(run_dir, ops)  # the rollback's precondition file, current as of now
    carry_files(run_dir, out)
    outputs = PlanDir(out).write_rows(rows)
    inputs = [
        {
            "role": "run",
            "s1sp": None,
            "path": str((run_dir / name).resolve()),
            "sha256": sha256_file(run_dir / name),
            "rows_read": None,
        }
        for name in (JOURNAL, OUTCOMES_PARQUET)
    ]
    document = PlanDocument(
        kind="rollback",
        rollback_of={
            "run_dir": str(run_dir.resolve()),
            "plan_hash": original.plan_hash,
            # Devices whose write may have committed unseen (protocol error after a PUT, left writing or
            # confirming, at target on resume): offered too, marked ROLLBACK_POSSIBLY_WRITTEN in plan.parquet.
            "possibly_written": int((rows["category"] == ROLLBACK_POSSIBLY_WRITTEN).sum()),
            "run_ended": ended,
        },
        case=original.document["case"],
        as_of=original.document["as_of"],
        planned_by=planner,
        s1sp_filter=[],
        policy=original.document["policy"],
        inputs=inputs,
        config_files=[],
        endpoints=original.document["endpoints"],
        counts=plan_counts(rows),
        outputs={name: sha256_file(path) for name, path in outputs.items()},
        additions=(
            authority.plan_fields(signing, planner, (original.document.get("governance") or {}).get("change_record")),
        ),
    )
    document = seal(document.body())
    document = authority.sign_sealed_plan(document, signing)
    PlanDir(out).write_document(document)
    return PlanResult(out, document, rows, None)


def _plan_certificates(plan_dir: Path) -> dict[str, str]:
    """fingerprint -> base64 DER of every certificate the plan's case saw (what a rollback may have to restore)."""
    from remediation.outcomes.references import CERTIFICATES_FILE

    path = Path(plan_dir) / CERTIFICATES_FILE
    if not path.exists():
        return {}
    table = pd.read_parquet(path, columns=["fingerprint", "der_b64"])
    return dict(zip(table["fingerprint"], table["der_b64"]))


# ------------------------------------------------------------------------------------------------ outcomes (issue 12)


def _new_outcome_dir(out_dir: str | Path) -> Path:
    out = prepare_dir(out_dir)
    if any(out.iterdir()):
        raise InputError(
            "is not empty; packs and worklists are written to a new directory, never over old ones", file=str(out)
        )
    return out


def run_notify(run_dir: str | Path, out_dir: str | Path) -> dict:
    """NO notification packs of a run: per registered NO and per previous holder, with manifest and impact summary."""
    from remediation.outcomes.links import record_link, utc_now
    from remediation.outcomes.packs import write_packs
    from remediation.outcomes.state import resolve

    sources = resolve(run_dir)
    if sources.kind != "run":
        raise InputError(
            f"notification packs are made from a run directory; this is a {sources.kind} directory", file=str(run_dir)
        )
    from remediation.outcomes.state import run_state

    state = run_state(sources.directory)
    if state["status"] == "running":
        # Devices are being written right now: packs made now would tell NOs less than the run will have done.
        raise InputError(
            "the run is in progress (its lock is held by a live process); make the packs once it has finished",
            file=str(run_dir),
        )
    if sources.plan.get("kind") == "rollback":
        # A rollback puts the previous certificates back: packs saying "now at your certificates" would be false.
        raise InputError(
            "this run applied a rollback plan; notification packs are made for correction runs only", file=str(run_dir)
        )
    summary = write_packs(sources, _new_outcome_dir(out_dir), utc_now(), state)
    record_link(sources.directory, "packs", Path(out_dir))
    return summary


def run_worklist(directory: str | Path, out_dir: str | Path) -> dict:
    """The SRV 6.15.1 worklist of a plan or run directory: one CSV and JSON per current slot holder."""
    from remediation.outcomes.links import record_link, utc_now
    from remediation.outcomes.state import resolve
    from remediation.outcomes.worklist import write_worklist

    sources = resolve(directory)
    if sources.kind == "dry-run":
        raise InputError("a worklist is made from a plan or run directory, not a dry run", file=str(directory))
    index = write_worklist(sources, _new_outcome_dir(out_dir), utc_now())
    record_link(sources.directory, "worklist", Path(out_dir))
    return index

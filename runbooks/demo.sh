#!/usr/bin/env bash
# The main job end to end on the bundled sample case, against the bundled S1SP simulator:
# detect -> plan -> approve -> dry run -> apply -> verify -> report. Run it through `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/demo}"
R=.venv/bin/remediation
CASE=configs/sample.toml
rm -rf "$OUT"
mkdir -p "$OUT/sim" "$OUT/fresh"

step() { printf '\n== %s\n' "$*"; }

step "detect: classify every device in the three S1SP extracts"
$R detect --config $CASE --out "$OUT/detect"

step "keys: a planner, two approvers, an operator and an auditor each make their own Ed25519 key pair"
K="$OUT/keys"
for who in planner.alice approver.bob approver.dave operator.carol auditor.erin; do
  $R keygen --out "$K/$who" --comment "$who@demo"
done

step "trust policy: who holds which key in which role; two approvals needed (reviewed, then pinned by its SHA-256)"
POLICY="$OUT/people.toml"
person() { printf '\n[[person]]\nname = "%s"\nroles = ["%s"]\nkeys = ["%s"]\n' "$1" "$2" "$(cat "$K/$3.pub")"; }
{
  printf '# Who may plan, approve, run and export MP107 R2 corrections. Names are labels; the keys decide.\n[approval]\nquorum = 2\n'
  person "Alice Planner" planner planner.alice
  person "Bob Approver" approver approver.bob
  person "Dave Approver" approver approver.dave
  person "Carol Operator" operator operator.carol
  person "Erin Auditor" auditor auditor.erin
} > "$POLICY"
POLICY_SHA=$(sha256sum "$POLICY" | cut -d' ' -f1)
echo "trust policy $POLICY sha256 $POLICY_SHA"
export REMEDIATION_TRUST_POLICY="$POLICY"  # apply checks the plan against this reviewed policy, not one a plan names

step "plan (signed by the planner's key) and approve (two approvers' keys; the planner's own key is refused)"
$R plan --config $CASE --out "$OUT/plan" --from "$OUT/detect" --key "$K/planner.alice" --trust-policy "$POLICY" --change-ref CHG-0001
if $R approve "$OUT/plan" --key "$K/planner.alice" 2>"$OUT/self-approval.err"; then echo "self-approval was accepted" >&2; exit 1; fi
echo "refused as it must be: $(tr -s "\n" " " < "$OUT/self-approval.err")"
$R approve "$OUT/plan" --key "$K/approver.bob" --note "plan.csv reviewed against the findings" --change-ref CHG-0001
if $R apply "$OUT/plan" --run "$OUT/run" --key "$K/operator.carol" 2>"$OUT/quorum.err"; then echo "apply with one approval was accepted" >&2; exit 1; fi
echo "refused as it must be: $(tr -s "\n" " " < "$OUT/quorum.err")"
$R approve "$OUT/plan" --key "$K/approver.dave" --note "second approval" --change-ref CHG-0001

step "start one simulator per S1SP on the ports the case names (light faults: latency, 2% transient errors, 1% dropped after commit)"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true' EXIT
for spec in MOC:8701 FOC:8702 IOC:8703; do
  s1sp=${spec%%:*}; port=${spec##*:}
  $R simulator serve --config $CASE --s1sp "$s1sp" --db "$OUT/sim/$s1sp.sqlite" --port "$port" \
     --faults "latency=5ms,error=0.02,drop=0.01,seed=${port}" --ready-file "$OUT/sim/$s1sp.port" &
  PIDS+=($!)
done
for s1sp in MOC FOC IOC; do
  for _ in $(seq 100); do [ -s "$OUT/sim/$s1sp.port" ] && break; sleep 0.1; done
  [ -s "$OUT/sim/$s1sp.port" ] || { echo "simulator $s1sp did not start" >&2; exit 1; }
done

step "dry run: read live slots, write nothing"
$R apply "$OUT/plan" --dry-run "$OUT/dry-run"

step "apply: canary then waves per S1SP, checkpointed and journaled"
$R apply "$OUT/plan" --run "$OUT/run" --by operator.carol --key "$K/operator.carol"
$R status "$OUT/run"

step "verify: fresh extracts from the S1SPs, detect again"
for s1sp in MOC FOC IOC; do
  $R simulator export --db "$OUT/sim/$s1sp.sqlite" --out "$OUT/fresh/$(echo $s1sp | tr A-Z a-z).csv"
done
# Exit 1 means some device still holds another NO's certificate. In the sample these are the devices excluded
# from the plan as DUPLICATE_CONFLICT (verify names them); every planned device must be at target.
$R verify --config $CASE --fresh "$OUT/fresh" --plan "$OUT/plan" --out "$OUT/verify" || [ $? -eq 1 ]
.venv/bin/python -c "import json,sys; v=json.load(open('$OUT/verify/verify.json')); sys.exit(v['planned_at_target'] != v['planned'] or v['residual_planned'])"

step "report"
$R report "$OUT/run" --format html --out "$OUT/report.html"

step "signed audit export, verified"
$R audit export "$OUT/run" --out "$OUT/audit" --key "$K/auditor.erin" --by auditor.erin
$R audit verify "$OUT/audit" --expect-policy-sha256 "$POLICY_SHA"

printf '\nDemo complete: %s\n' "$OUT"

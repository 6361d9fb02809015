"""A hand-written DuckDB query doing detect's job on a generated case (benchmarks/generate_scale.py), as the reference
for the national-scale benchmark. It reads the same three dialect files and the RDP files, and takes certificate facts
from a table keyed by the certificate text as written (parsing X.509 is not SQL's job; the facts come from the same
`cryptography` parse detect uses, done before the clock starts). It implements the contract's version 2 rules
(device types and OUT_OF_SCOPE, SECURITY_HOLD from the certificate facts, PENDING_NO_CHANGE within the 28-day
horizon). It writes one category per device to Parquet and prints the counts as JSON.

    python benchmarks/duckdb_reference.py CASE_DIR OUT.parquet
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MPAN_WEIGHTS = [3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43]


def mpan_check(col: str) -> str:
    terms = " + ".join(f"CAST(substr({col}, {i + 1}, 1) AS INTEGER) * {w}" for i, w in enumerate(MPAN_WEIGHTS))
    return f"(({terms}) % 11 % 10) = CAST(substr({col}, 13, 1) AS INTEGER)"


QUERY = """
WITH
types(dtype, fuel, slots) AS (
  VALUES ('ESME', 'E', TRUE), ('GSME', 'G', TRUE), ('GPF', 'G', TRUE),
         ('CHF', NULL, FALSE), ('PPMID', NULL, FALSE), ('IHD', NULL, FALSE), ('HCALCS', NULL, FALSE)
),
moc AS (
  SELECT 'MOC' AS s1sp, upper(replace(trim(m.DEVICE_EUI), '-', '')) AS dev,
         CASE trim(m.DEV_TYPE) WHEN 'E' THEN 'ESME' WHEN 'G' THEN 'GSME' ELSE trim(m.DEV_TYPE) END AS dtype, trim(m.SUPPLY_POINT_REF) AS mpxn,
         nullif(trim(m.NO_DIGSIG_CERT_B64), '') IS NOT NULL AS ds_present, cd.idx AS ds,
         nullif(trim(m.NO_KEYAGR_CERT_B64), '') IS NOT NULL AS ka_present, ck.idx AS ka, 1 AS n_rows
  FROM read_csv('{moc}', header = true, all_varchar = true) m
  LEFT JOIN certs cd ON cd.text = trim(m.NO_DIGSIG_CERT_B64)
  LEFT JOIN certs ck ON ck.text = trim(m.NO_KEYAGR_CERT_B64)
),
foc_rows AS (
  SELECT f.device.guid AS guid, f.device.kind AS kind, f.device.supplyPoint AS mpxn, f.slot.name AS slot,
         f.slot.certificate IS NOT NULL AS present, c.idx AS cert
  FROM read_json('{foc}', format = 'newline_delimited',
       columns = {{device: 'STRUCT(guid VARCHAR, kind VARCHAR, supplyPoint VARCHAR)', slot: 'STRUCT(name VARCHAR, certificate VARCHAR)',
                  capturedAtEpochMs: 'BIGINT'}}) f
  LEFT JOIN certs c ON c.text = trim(f.slot.certificate)
),
foc AS (
  SELECT 'FOC' AS s1sp, upper(replace(trim(guid), '-', '')) AS dev,
         CASE any_value(kind) WHEN 'electricity' THEN 'ESME' WHEN 'gas' THEN 'GSME' WHEN 'gpf' THEN 'GPF' WHEN 'chf' THEN 'CHF'
              WHEN 'ppmid' THEN 'PPMID' WHEN 'ihd' THEN 'IHD' ELSE any_value(kind) END AS dtype, any_value(trim(mpxn)) AS mpxn,
         coalesce(bool_or(present) FILTER (WHERE slot = 'nwo-digital-signing'), FALSE) AS ds_present,
         max(cert) FILTER (WHERE slot = 'nwo-digital-signing') AS ds,
         coalesce(bool_or(present) FILTER (WHERE slot = 'nwo-key-agreement'), FALSE) AS ka_present,
         max(cert) FILTER (WHERE slot = 'nwo-key-agreement') AS ka,
         count(*) AS n_rows
  FROM foc_rows GROUP BY guid
),
ioc AS (
  SELECT 'IOC' AS s1sp, upper(replace(trim(i.eui64), '-', '')) AS dev, trim(i.meter_type) AS dtype, trim(i.mpxn) AS mpxn,
         i.no_ds_pem IS NOT NULL AS ds_present, cd.idx AS ds, i.no_ka_pem IS NOT NULL AS ka_present, ck.idx AS ka, 1 AS n_rows
  FROM read_parquet('{ioc}') i
  LEFT JOIN certs cd ON cd.text = trim(i.no_ds_pem, chr(10) || chr(13) || ' ')
  LEFT JOIN certs ck ON ck.text = trim(i.no_ka_pem, chr(10) || chr(13) || ' ')
),
all_rows AS (SELECT * FROM moc UNION ALL SELECT * FROM foc UNION ALL SELECT * FROM ioc),
devices AS (
  SELECT dev, any_value(s1sp) AS s1sp, any_value(dtype) AS dtype, any_value(mpxn) AS mpxn,
         any_value(ds_present) AS ds_present, any_value(ds) AS ds, any_value(ka_present) AS ka_present, any_value(ka) AS ka,
         sum(n_rows) AS n_rows, count(DISTINCT (s1sp, dtype, mpxn, ds, ka)) > 1 AS conflict,
         count(DISTINCT s1sp) > 1 AS several_s1sps
  FROM all_rows GROUP BY dev
),
rdp AS (
  SELECT MPAN_CORE AS mpxn, 'E' AS fuel, DISTRIBUTOR_MPID AS no, strptime(REG_FROM, '%d/%m/%Y')::DATE AS f,
         CASE WHEN REG_TO = '' THEN NULL ELSE strptime(REG_TO, '%d/%m/%Y')::DATE END AS t
  FROM read_csv('{rdp_e}', header = true, all_varchar = true)
  UNION ALL
  SELECT mprn, 'G', transporter, valid_from::DATE, CASE WHEN valid_to = '' THEN NULL ELSE valid_to::DATE END
  FROM read_csv('{rdp_g}', header = true, all_varchar = true, delim = ';')
),
reg AS (
  SELECT mpxn, fuel, count(DISTINCT no) AS n, any_value(no) AS no FROM rdp
  WHERE f <= DATE '{as_of}' AND (t IS NULL OR t >= DATE '{as_of}') GROUP BY mpxn, fuel
),
soon AS (
  SELECT mpxn, fuel, min(no) AS first_no, max(no) AS last_no FROM rdp
  WHERE f > DATE '{as_of}' AND f <= DATE '{as_of}' + INTERVAL {horizon} DAY GROUP BY mpxn, fuel
),
-- Why no registration is effective (NO_RDP causes): one starts later, or they all ended.
other_reg AS (
  SELECT mpxn, fuel, bool_or(f > DATE '{as_of}') AS future, bool_or(t < DATE '{as_of}') AS ended FROM rdp
  WHERE f > DATE '{as_of}' OR t < DATE '{as_of}' GROUP BY mpxn, fuel
),
-- The MPxN's previous NOs (ended registrations), as entities, for WRONG_NO's previous_no_of_mpxn.
previous AS (
  SELECT DISTINCT r.mpxn, r.fuel, g.entity FROM rdp r JOIN registry g ON g.id = r.no WHERE r.t < DATE '{as_of}'
),
served AS (SELECT entity, bool_or(fuel = 'E') AS e, bool_or(fuel = 'G') AS g FROM registry GROUP BY entity),
judged AS (
  SELECT d.*, ty.fuel AS fuel, ty.slots AS slots, ty.dtype IS NULL AS unconfigured, r.n AS rdp_n, r.no, g.entity AS expected, g.fuel AS no_fuel,
         (s.first_no IS NOT NULL AND (s.first_no <> r.no OR s.last_no <> r.no)) AS pending,
         gi.entity AS incoming_entity, o.future AS rdp_future, o.ended AS rdp_ended,
         cd.entity AS ds_entity, cd.role AS ds_role, cd.usage AS ds_usage, cd.hold AS ds_hold, cd.hold_cause AS ds_hold_cause, cd.valid AS ds_valid, cd.revoked AS ds_revoked,
         (ds_present AND (d.ds IS NULL OR cd.error)) AS ds_error,
         ck.entity AS ka_entity, ck.role AS ka_role, ck.usage AS ka_usage, ck.hold AS ka_hold, ck.hold_cause AS ka_hold_cause, ck.valid AS ka_valid, ck.revoked AS ka_revoked,
         (ka_present AND (d.ka IS NULL OR ck.error)) AS ka_error
  FROM devices d
  LEFT JOIN types ty ON ty.dtype = d.dtype
  LEFT JOIN reg r ON r.mpxn = d.mpxn AND r.fuel = ty.fuel
  LEFT JOIN soon s ON s.mpxn = d.mpxn AND s.fuel = ty.fuel
  LEFT JOIN registry gi ON gi.id = CASE WHEN s.first_no <> r.no THEN s.first_no ELSE s.last_no END
  LEFT JOIN other_reg o ON o.mpxn = d.mpxn AND o.fuel = ty.fuel
  LEFT JOIN registry g ON g.id = r.no
  LEFT JOIN facts cd ON cd.idx = d.ds
  LEFT JOIN facts ck ON ck.idx = d.ka
),
categorised AS (
  SELECT judged.*,
    CASE
      WHEN NOT regexp_full_match(dev, '[0-9A-F]{{16}}') OR unconfigured
           OR (fuel = 'E' AND NOT (regexp_full_match(mpxn, '[0-9]{{13}}') AND {mpan_ok}))
           OR (fuel = 'G' AND NOT regexp_full_match(mpxn, '[0-9]{{6,10}}'))
           OR ds_error OR ka_error THEN 'INVALID_INPUT'
      WHEN NOT slots THEN 'OUT_OF_SCOPE'
      WHEN conflict THEN 'DUPLICATE_CONFLICT'
      WHEN (ds_present AND ds_hold) OR (ka_present AND ka_hold) THEN 'SECURITY_HOLD'
      WHEN rdp_n IS NULL THEN 'NO_RDP'
      WHEN rdp_n > 1 THEN 'RDP_AMBIGUOUS'
      WHEN expected IS NULL OR no_fuel <> fuel THEN 'UNKNOWN_NO'
      WHEN pending THEN 'PENDING_NO_CHANGE'
      WHEN (ds_present AND (ds_entity IS DISTINCT FROM expected OR ds_role <> 3))
        OR (ka_present AND (ka_entity IS DISTINCT FROM expected OR ka_role <> 3)) THEN 'WRONG_NO'
      WHEN NOT ds_present OR NOT ka_present THEN 'SLOT_EMPTY'
      WHEN ds_usage <> 'DS' OR ka_usage <> 'KA' THEN 'KEY_USAGE_MISMATCH'
      WHEN NOT ds_valid OR ds_revoked OR NOT ka_valid OR ka_revoked THEN 'EXPIRED_OR_REVOKED'
      ELSE 'OK'
    END AS category,
    CASE WHEN fuel = 'E' THEN CASE WHEN NOT regexp_full_match(mpxn, '[0-9]{{13}}') THEN TRUE ELSE NOT {mpan_ok} END
         WHEN fuel = 'G' THEN NOT regexp_full_match(mpxn, '[0-9]{{6,10}}') ELSE FALSE END AS mpxn_bad
  FROM judged
),
wrong AS (  -- WRONG_NO devices: the first wrong slot (DS before KA) names the cause
  SELECT c.dev, CASE
      WHEN w.role <> 3 THEN 'non_no_role'
      WHEN p.entity IS NOT NULL THEN 'previous_no_of_mpxn'
      WHEN (c.fuel = 'E' AND sv.e) OR (c.fuel = 'G' AND sv.g) THEN 'other_no_same_fuel'
      WHEN sv.entity IS NOT NULL THEN 'other_fuel_no'
      ELSE 'unregistered_entity'
    END AS wrong_cause
  FROM categorised c
  CROSS JOIN LATERAL (SELECT CASE WHEN c.ds_present AND (c.ds_entity IS DISTINCT FROM c.expected OR c.ds_role <> 3)
                                  THEN c.ds_entity ELSE c.ka_entity END AS entity,
                             CASE WHEN c.ds_present AND (c.ds_entity IS DISTINCT FROM c.expected OR c.ds_role <> 3)
                                  THEN c.ds_role ELSE c.ka_role END AS role) w
  LEFT JOIN previous p ON p.mpxn = c.mpxn AND p.fuel = c.fuel AND p.entity = w.entity
  LEFT JOIN served sv ON sv.entity = w.entity
  WHERE c.category = 'WRONG_NO'
),
caused AS (
  SELECT c.dev, c.s1sp, c.n_rows, c.category,
    CASE c.category
      WHEN 'INVALID_INPUT' THEN CASE
        WHEN NOT regexp_full_match(c.dev, '[0-9A-F]{{16}}') THEN 'invalid_device_id'
        WHEN c.unconfigured THEN 'unconfigured_device_type'
        WHEN c.mpxn_bad THEN 'invalid_mpxn'
        ELSE 'undecodable_certificate' END
      WHEN 'OUT_OF_SCOPE' THEN 'device_type_without_no_slots'
      WHEN 'DUPLICATE_CONFLICT' THEN CASE WHEN c.several_s1sps THEN 'held_by_several_s1sps' ELSE 'differing_records' END
      WHEN 'SECURITY_HOLD' THEN CASE WHEN c.ds_present AND c.ds_hold THEN c.ds_hold_cause ELSE c.ka_hold_cause END
      WHEN 'NO_RDP' THEN CASE WHEN c.rdp_future THEN 'registration_not_yet_effective'
                              WHEN c.rdp_ended THEN 'registration_ended' ELSE 'no_registration' END
      WHEN 'RDP_AMBIGUOUS' THEN 'several_registrations'
      WHEN 'UNKNOWN_NO' THEN CASE WHEN c.expected IS NOT NULL THEN 'other_fuel_operator' ELSE 'not_in_registry' END
      WHEN 'PENDING_NO_CHANGE' THEN CASE WHEN c.incoming_entity IS NOT NULL AND
                                              (c.ds_entity = c.incoming_entity OR c.ka_entity = c.incoming_entity)
                                         THEN 'slots_hold_incoming_no' ELSE 'change_of_no_pending' END
      WHEN 'WRONG_NO' THEN w.wrong_cause
      WHEN 'SLOT_EMPTY' THEN CASE WHEN NOT c.ds_present AND NOT c.ka_present THEN 'both_empty'
                                  WHEN NOT c.ds_present THEN 'ds_empty' ELSE 'ka_empty' END
      WHEN 'KEY_USAGE_MISMATCH' THEN CASE WHEN c.ds_usage <> 'DS' AND c.ka_usage <> 'KA' THEN 'swapped'
                                          WHEN c.ds_usage <> 'DS' THEN 'ds_slot_holds_ka' ELSE 'ka_slot_holds_ds' END
      WHEN 'EXPIRED_OR_REVOKED' THEN CASE WHEN (c.ds_valid AND c.ds_revoked) OR (c.ka_valid AND c.ka_revoked)
                                          THEN 'revoked' ELSE 'expired' END
      ELSE '' END AS cause
  FROM categorised c LEFT JOIN wrong w ON w.dev = c.dev
)
SELECT dev, s1sp, n_rows, category, cause,
       category IN ('WRONG_NO', 'SLOT_EMPTY', 'KEY_USAGE_MISMATCH')
       OR (category = 'EXPIRED_OR_REVOKED' AND (cause = 'revoked' OR (cause = 'expired' AND s1sp IN ({enforcing}))))
       AS no_locked_out
FROM caused
"""


def main(case_dir: str, out: str, threads: int = 2, memory_limit: str | None = None) -> dict:
    case = Path(case_dir)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    # Certificate text as written -> a small id, and the facts per id: the query never carries certificate text past
    # the first join, which is how a hand-written query would treat 500-byte keys.
    con.execute(
        f"CREATE TABLE certs AS SELECT text, dense_rank() OVER (ORDER BY fingerprint) AS idx FROM read_parquet('{case / 'cert_facts.parquet'}')"
    )
    con.execute(
        f"CREATE TABLE facts AS SELECT DISTINCT dense_rank() OVER (ORDER BY fingerprint) AS idx, entity, role, usage, hold, "
        f"hold_cause, valid, revoked, error FROM read_parquet('{case / 'cert_facts.parquet'}')"
    )
    con.execute(f"CREATE TABLE registry AS SELECT * FROM read_parquet('{case / 'registry_facts.parquet'}')")
    enforcing = json.loads((case / "enforcing_s1sps.json").read_text())
    sql = QUERY.format(
        moc=case / "moc_anchor_slots.csv",
        foc=case / "foc_anchor_slots.jsonl",
        ioc=case / "ioc_anchor_slots.parquet",
        rdp_e=case / "rdp_electricity.csv",
        rdp_g=case / "rdp_gas.csv",
        as_of="2026-11-20",
        mpan_ok=mpan_check("mpxn"),
        horizon=28,
        enforcing=", ".join(f"'{code}'" for code in enforcing) or "NULL",
    )
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
    counts = dict(con.execute(f"SELECT category, count(*) FROM read_parquet('{out}') GROUP BY category").fetchall())
    causes: dict[str, dict[str, int]] = {}
    for category, cause, n in con.execute(
        f"SELECT category, cause, count(*) FROM read_parquet('{out}') WHERE category <> 'OK' GROUP BY ALL"
    ).fetchall():
        causes.setdefault(category, {})[cause] = int(n)
    locked = dict(
        con.execute(
            f"SELECT category, count(*) FROM read_parquet('{out}') WHERE no_locked_out GROUP BY category"
        ).fetchall()
    )
    rows = con.execute(f"SELECT sum(n_rows) FROM read_parquet('{out}')").fetchone()[0]
    return {
        "devices_by_category": counts,
        "devices_by_cause": causes,
        "locked_out_by_category": locked,
        "rows": int(rows),
    }


def prepare_facts(case_dir: str) -> None:
    """Certificate and registry facts for the reference, from the same parser detect uses (not timed)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from remediation.certificates import HOLD_CAUSES, CertificateCatalog
    from remediation.config import load_case
    from remediation.ingest.pki import load_org_cas, load_orl
    from remediation.ingest.registry import load_registry

    case = Path(case_dir)
    config = load_case(case / "case.toml")
    catalog = CertificateCatalog(
        load_org_cas(config.org_ca_paths), load_orl(config.orl_path), config.accepted_policy_oids
    )
    registry = load_registry(config.registry_path, catalog)
    texts = pq.read_table(case / "cert_texts.parquet").column("text").to_pylist()
    ids = [catalog.intern_text(t.strip()) for t in texts]
    frame = catalog.frame(config.as_of)
    facts = pd.DataFrame(
        {
            "text": [t.strip() for t in texts],
            "fingerprint": [frame.loc[i, "fingerprint"] for i in ids],
            "entity": [frame.loc[i, "entity_id"] for i in ids],
            "role": [int(frame.loc[i, "role"]) for i in ids],
            "usage": [frame.loc[i, "key_usage"] for i in ids],
            # untrusted issuer, policy OID not accepted, broken profile
            "hold": [bool(frame.loc[i, "hold"] >= 0) for i in ids],
            "hold_cause": [HOLD_CAUSES[int(frame.loc[i, "hold"])] if frame.loc[i, "hold"] >= 0 else None for i in ids],
            "valid": [bool(frame.loc[i, "in_validity"]) for i in ids],
            "revoked": [bool(frame.loc[i, "revoked"]) for i in ids],
            "error": [frame.loc[i, "error"] is not None for i in ids],
        }
    )
    facts.to_parquet(case / "cert_facts.parquet", index=False)
    reg = registry.frame().rename(columns={"network_operator_id": "id", "expected_entity": "entity", "no_fuel": "fuel"})
    reg[["id", "entity", "fuel"]].to_parquet(case / "registry_facts.parquet", index=False)
    # The S1SPs whose expired NO certificate locks the NO out (the case's enforces_validity), for the lock-out flag.
    enforcing = sorted(code for code, ep in config.endpoints.items() if ep.enforces_validity)
    (case / "enforcing_s1sps.json").write_text(json.dumps(enforcing))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case_dir")
    parser.add_argument("out")
    parser.add_argument("--memory-limit", default=None, help="DuckDB SET memory_limit, e.g. 1.5GB (default: none)")
    parser.add_argument("--prepare", action="store_true", help="(re)write the certificate and registry facts first")
    args = parser.parse_args()
    if args.prepare or not (Path(args.case_dir) / "enforcing_s1sps.json").exists():
        prepare_facts(args.case_dir)
    print(json.dumps(main(args.case_dir, args.out, memory_limit=args.memory_limit)))

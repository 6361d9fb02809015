"""A hand-written DuckDB query doing detect's job on a generated case (benchmarks/generate_scale.py), as the reference
for the national-scale benchmark. It reads the same three dialect files and the RDP files, and takes certificate facts
from a table keyed by the certificate text as written (parsing X.509 is not SQL's job; the facts come from the same
`cryptography` parse detect uses, done before the clock starts). It implements the contract's version 2 rules
(device types and OUT_OF_SCOPE, SECURITY_HOLD from the certificate facts, PENDING_NO_CHANGE within the 28-day
horizon). It writes one category per device to Parquet and prints the counts as JSON.

    python benchmarks/duckdb_reference.py CASE_DIR OUT.parquet
"""

from __future__ import annotations

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
         sum(n_rows) AS n_rows, count(DISTINCT (s1sp, dtype, mpxn, ds, ka)) > 1 AS conflict
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
judged AS (
  SELECT d.*, ty.fuel AS fuel, ty.slots AS slots, ty.dtype IS NULL AS unconfigured, r.n AS rdp_n, r.no, g.entity AS expected, g.fuel AS no_fuel,
         (s.first_no IS NOT NULL AND (s.first_no <> r.no OR s.last_no <> r.no)) AS pending,
         cd.entity AS ds_entity, cd.role AS ds_role, cd.usage AS ds_usage, cd.hold AS ds_hold, cd.valid AS ds_valid, cd.revoked AS ds_revoked,
         (ds_present AND (d.ds IS NULL OR cd.error)) AS ds_error,
         ck.entity AS ka_entity, ck.role AS ka_role, ck.usage AS ka_usage, ck.hold AS ka_hold, ck.valid AS ka_valid, ck.revoked AS ka_revoked,
         (ka_present AND (d.ka IS NULL OR ck.error)) AS ka_error
  FROM devices d
  LEFT JOIN types ty ON ty.dtype = d.dtype
  LEFT JOIN reg r ON r.mpxn = d.mpxn AND r.fuel = ty.fuel
  LEFT JOIN soon s ON s.mpxn = d.mpxn AND s.fuel = ty.fuel
  LEFT JOIN registry g ON g.id = r.no
  LEFT JOIN facts cd ON cd.idx = d.ds
  LEFT JOIN facts ck ON ck.idx = d.ka
),
categorised AS (
  SELECT dev, s1sp, n_rows,
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
    END AS category
  FROM judged
)
SELECT * FROM categorised
"""


def main(case_dir: str, out: str, threads: int = 2) -> dict:
    case = Path(case_dir)
    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    con.execute("SET preserve_insertion_order = false")
    con.execute("SET enable_progress_bar = false")
    # Certificate text as written -> a small id, and the facts per id: the query never carries certificate text past
    # the first join, which is how a hand-written query would treat 500-byte keys.
    con.execute(
        f"CREATE TABLE certs AS SELECT text, dense_rank() OVER (ORDER BY fingerprint) AS idx FROM read_parquet('{case / 'cert_facts.parquet'}')"
    )
    con.execute(
        f"CREATE TABLE facts AS SELECT DISTINCT dense_rank() OVER (ORDER BY fingerprint) AS idx, entity, role, usage, hold, valid, revoked, error "
        f"FROM read_parquet('{case / 'cert_facts.parquet'}')"
    )
    con.execute(f"CREATE TABLE registry AS SELECT * FROM read_parquet('{case / 'registry_facts.parquet'}')")
    sql = QUERY.format(
        moc=case / "moc_anchor_slots.csv",
        foc=case / "foc_anchor_slots.jsonl",
        ioc=case / "ioc_anchor_slots.parquet",
        rdp_e=case / "rdp_electricity.csv",
        rdp_g=case / "rdp_gas.csv",
        as_of="2026-11-20",
        mpan_ok=mpan_check("mpxn"),
        horizon=28,
    )
    con.execute(f"COPY ({sql}) TO '{out}' (FORMAT parquet)")
    counts = dict(con.execute(f"SELECT category, count(*) FROM read_parquet('{out}') GROUP BY category").fetchall())
    rows = con.execute(f"SELECT sum(n_rows) FROM read_parquet('{out}')").fetchone()[0]
    return {"devices_by_category": counts, "rows": int(rows)}


def prepare_facts(case_dir: str) -> None:
    """Certificate and registry facts for the reference, from the same parser detect uses (not timed)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from remediation.certificates import CertificateCatalog
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
            "hold": [
                bool(frame.loc[i, "hold"] >= 0) for i in ids
            ],  # untrusted issuer, policy OID not accepted, broken profile
            "valid": [bool(frame.loc[i, "in_validity"]) for i in ids],
            "revoked": [bool(frame.loc[i, "revoked"]) for i in ids],
            "error": [frame.loc[i, "error"] is not None for i in ids],
        }
    )
    facts.to_parquet(case / "cert_facts.parquet", index=False)
    reg = registry.frame().rename(columns={"network_operator_id": "id", "expected_entity": "entity", "no_fuel": "fuel"})
    reg[["id", "entity", "fuel"]].to_parquet(case / "registry_facts.parquet", index=False)


if __name__ == "__main__":
    prepare_facts(sys.argv[1])
    print(json.dumps(main(sys.argv[1], sys.argv[2])))

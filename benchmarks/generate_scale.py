"""Write a national-scale case: N devices across the three S1SP dialects plus RDP, in chunks, vectorised.

    python benchmarks/generate_scale.py --devices 10000000 --out bench_data/10m

Uses the sample case's PKI (real SMKI-profile certificates for 14 DNOs and 4 GTs), the sample dialects and a
registry, so `remediation detect --config OUT/case.toml` runs on it directly. Also writes `cert_facts.parquet`
(every certificate text as written, with its facts) for the DuckDB reference query, and `expected.json` with the
category counts the generator intended.
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "sample_data"))

import generate as sample  # noqa: E402  (sample_data/generate.py: PKI and registry writer)

from remediation.identifiers import MPAN_WEIGHTS  # noqa: E402

SHARES = {"MOC": 0.62, "FOC": 0.36, "IOC": 0.02}
CHUNK = 1_000_000
AS_OF = "2026-11-20"
# Scenario -> probability. Each device gets one; the intended category follows from it.
SCENARIOS = {
    "ok": 0.880,
    "ok_previous": 0.020,
    "wrong": 0.040,
    "wrong_ds_only": 0.005,
    "wrong_previous": 0.004,
    "wrong_other_fuel": 0.002,
    "wrong_supplier": 0.001,
    "wrong_unregistered": 0.0005,
    "no_rdp_ended": 0.0005,
    "empty_one": 0.012,
    "key_usage": 0.004,
    "expired": 0.004,
    "revoked": 0.001,
    "no_rdp": 0.005,
    "ambiguous": 0.002,
    "unknown_no": 0.001,
    "invalid_mpan": 0.001,
    "repeat": 0.001,
    "hold_untrusted": 0.0005,
    "hold_policy": 0.0003,
    "hold_profile": 0.0002,
    "pending": 0.003,
    "out_of_scope": 0.012,
}
INTENDED = {
    "ok": "OK",
    "ok_previous": "OK",
    "wrong": "WRONG_NO",
    "wrong_ds_only": "WRONG_NO",
    "wrong_previous": "WRONG_NO",
    "wrong_other_fuel": "WRONG_NO",
    "wrong_supplier": "WRONG_NO",
    "wrong_unregistered": "WRONG_NO",
    "no_rdp_ended": "NO_RDP",
    "empty_one": "SLOT_EMPTY",
    "key_usage": "KEY_USAGE_MISMATCH",
    "expired": "EXPIRED_OR_REVOKED",
    "revoked": "EXPIRED_OR_REVOKED",
    "no_rdp": "NO_RDP",
    "ambiguous": "RDP_AMBIGUOUS",
    "unknown_no": "UNKNOWN_NO",
    "invalid_mpan": "INVALID_INPUT",
    "repeat": "OK",
    "hold_untrusted": "SECURITY_HOLD",
    "hold_policy": "SECURITY_HOLD",
    "hold_profile": "SECURITY_HOLD",
    "pending": "PENDING_NO_CHANGE",
    "out_of_scope": "OUT_OF_SCOPE",
}
# An IDNO missing from the registry (a fictitious id and distributor id 38): its devices are UNKNOWN_NO, a registry gap.
UNLISTED_IDNO = ("IDNX", 38)
# The cause each scenario means; "empty_one" and "pending" split by a draw the chunk records.
CAUSE = {
    "ok": "",
    "ok_previous": "",
    "repeat": "",
    "wrong": "other_no_same_fuel",
    "wrong_ds_only": "other_no_same_fuel",
    "wrong_previous": "previous_no_of_mpxn",
    "wrong_other_fuel": "other_fuel_no",
    "wrong_supplier": "non_no_role",
    "wrong_unregistered": "unregistered_entity",
    "key_usage": "swapped",
    "expired": "expired",
    "revoked": "revoked",
    "no_rdp": "no_registration",
    "no_rdp_ended": "registration_ended",
    "ambiguous": "several_registrations",
    "unknown_no": "not_in_registry",
    "invalid_mpan": "invalid_mpxn",
    "hold_untrusted": "untrusted_issuer",
    "hold_policy": "policy_not_accepted",
    "hold_profile": "profile_violation",
    "out_of_scope": "device_type_without_no_slots",
}
GAS_ELECTRICITY_ONLY = (
    "unknown_no",
    "invalid_mpan",
    "wrong_other_fuel",
    "out_of_scope",
)  # scenarios drawn on electricity devices
PENDING_DAYS = 5  # the change of NO takes effect this many days after the as-of date (inside the 28-day horizon)
NAMES = list(SCENARIOS)
PROBS = np.array([SCENARIOS[k] for k in NAMES])
PROBS = PROBS / PROBS.sum()

HEX_UPPER = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)
HEX_LOWER = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def hex_ids(values: np.ndarray, hyphens: bool, lower: bool) -> pa.Array:
    octets = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    table = HEX_LOWER if lower else HEX_UPPER
    hi, lo = table[octets >> 4], table[octets & 15]
    if hyphens:
        out = np.full((len(values), 23), ord("-"), dtype=np.uint8)
        out[:, 0::3], out[:, 1::3] = hi, lo
    else:
        out = np.empty((len(values), 16), dtype=np.uint8)
        out[:, 0::2], out[:, 1::2] = hi, lo
    return pa.array(out.view(f"S{out.shape[1]}").ravel()).cast(pa.string())


def digit_strings(digits: np.ndarray) -> pa.Array:
    ascii_ = (digits + ord("0")).astype(np.uint8)
    return pa.array(np.ascontiguousarray(ascii_).view(f"S{digits.shape[1]}").ravel()).cast(pa.string())


def spread_digits(index: np.ndarray, width: int, multiplier: int, low: int = 0) -> np.ndarray:
    """Distinct device indexes -> distinct, scattered numbers of `width` digits (a bijection mod 10**width)."""
    values = (index.astype(np.int64) * multiplier + 12345) % (10**width - low) + low
    return (values[:, None] // 10 ** np.arange(width - 1, -1, -1)) % 10


def make_mpans(index: np.ndarray, prefixes: np.ndarray) -> np.ndarray:
    n = len(prefixes)
    digits = np.empty((n, 13), dtype=np.int64)
    digits[:, 0], digits[:, 1] = prefixes // 10, prefixes % 10
    digits[:, 2:12] = spread_digits(index, 10, 7919)  # unique per device: no two devices share a supply point
    digits[:, 12] = (digits[:, :12] @ MPAN_WEIGHTS) % 11 % 10
    return digits


class Pool:
    """Certificates as written: index -> base64 and PEM text, with the facts the reference query needs."""

    def __init__(self, pki: sample.Pki):
        self.ders: list[bytes] = []
        self.index: dict[tuple, int] = {}
        dnos, gts = [d[0] for d in sample.DNOS], [g[0] for g in sample.GTS]
        self.nos = dnos + gts
        for no in self.nos:
            self._add(("current", no, "DS"), pki.current[no][0])
            self._add(("current", no, "KA"), pki.current[no][1])
            self._add(("previous", no, "DS"), pki.previous[no][0])
            self._add(("previous", no, "KA"), pki.previous[no][1])
            self._add(("expired", no, "DS"), pki.expired[no])
            self._add(("revoked", no, "DS"), pki.revoked[no])
            self._add(("impostor", no, "DS"), pki.impostor[no][0])
            self._add(("impostor", no, "KA"), pki.impostor[no][1])
            self._add(("other_policy", no, "DS"), pki.other_policy[no])
            self._add(("bad_profile", no, "DS"), pki.bad_profile[no])
        self._add(("idno", "UNLISTED", "DS"), pki.idno[0])
        self._add(("idno", "UNLISTED", "KA"), pki.idno[1])
        self._add(("supplier", "SUPA", "DS"), pki.supplier[0][0])
        self._add(("supplier", "SUPA", "KA"), pki.supplier[0][1])
        self.b64 = pa.array([base64.b64encode(d).decode() for d in self.ders])
        self.pem = pa.array([sample.pem_text(d) for d in self.ders])

    def _add(self, key, der):
        self.index[key] = len(self.ders)
        self.ders.append(der)

    def ids(self, kind: str, nos: np.ndarray, usage: str) -> np.ndarray:
        lookup = np.array([self.index[(kind, no, usage)] for no in self.nos])
        return lookup[nos]


def build_chunk(rng: np.random.Generator, pool: Pool, s1sp: str, first_serial: int, n: int, first_index: int) -> dict:
    scenario = rng.choice(len(NAMES), size=n, p=PROBS)
    gas = rng.random(n) < 0.4
    n_dno, n_gt = len(sample.DNOS), len(sample.GTS)
    dno = rng.integers(0, n_dno, size=n)
    gt = n_dno + rng.integers(0, n_gt, size=n)
    registered = np.where(gas, gt, dno)
    shift = rng.integers(1, n_dno, size=n)
    neighbour = np.where(gas, n_dno + (gt - n_dno + 1 + shift % (n_gt - 1)) % n_gt, (dno + shift) % n_dno)
    is_ = {name: scenario == i for i, name in enumerate(NAMES)}
    gas &= ~np.logical_or.reduce([is_[k] for k in GAS_ELECTRICITY_ONLY])
    registered = np.where(gas, gt, dno)
    neighbour = np.where(gas, n_dno + (gt - n_dno + 1 + shift % (n_gt - 1)) % n_gt, (dno + shift) % n_dno)

    ds = pool.ids("current", registered, "DS")
    ka = pool.ids("current", registered, "KA")
    ds = np.where(is_["ok_previous"], pool.ids("previous", registered, "DS"), ds)
    ds = np.where(is_["wrong"] | is_["wrong_ds_only"], pool.ids("current", neighbour, "DS"), ds)
    ka = np.where(is_["wrong"], pool.ids("current", neighbour, "KA"), ka)
    ds = np.where(is_["key_usage"], pool.ids("current", registered, "KA"), ds)
    ka = np.where(is_["key_usage"], pool.ids("current", registered, "DS"), ka)
    ds = np.where(is_["expired"], pool.ids("expired", registered, "DS"), ds)
    ds = np.where(is_["revoked"], pool.ids("revoked", registered, "DS"), ds)
    empty_ds = is_["empty_one"] & (rng.random(n) < 0.5)
    ds = np.where(empty_ds, -1, ds)
    ka = np.where(is_["empty_one"] & ~empty_ds, -1, ka)
    unknown = is_["unknown_no"]
    ds = np.where(unknown, pool.index[("idno", "UNLISTED", "DS")], ds)
    ka = np.where(unknown, pool.index[("idno", "UNLISTED", "KA")], ka)
    # v2: the previous NO's certificates (RDP shows the change), the other fuel's NO, a supplier's, held certificates,
    # a pending change of NO (half already on the incoming NO's certificates), devices without NO slots.
    ds = np.where(is_["wrong_previous"], pool.ids("current", neighbour, "DS"), ds)
    ka = np.where(is_["wrong_previous"], pool.ids("current", neighbour, "KA"), ka)
    other_fuel = n_dno + rng.integers(0, n_gt, size=n)
    ds = np.where(is_["wrong_other_fuel"], pool.ids("current", other_fuel, "DS"), ds)
    ds = np.where(is_["wrong_supplier"], pool.index[("supplier", "SUPA", "DS")], ds)
    ka = np.where(is_["wrong_supplier"], pool.index[("supplier", "SUPA", "KA")], ka)
    ds = np.where(is_["wrong_unregistered"], pool.index[("idno", "UNLISTED", "DS")], ds)
    ka = np.where(is_["wrong_unregistered"], pool.index[("idno", "UNLISTED", "KA")], ka)
    ds = np.where(is_["hold_untrusted"], pool.ids("impostor", registered, "DS"), ds)
    ka = np.where(is_["hold_untrusted"], pool.ids("impostor", registered, "KA"), ka)
    ds = np.where(is_["hold_policy"], pool.ids("other_policy", registered, "DS"), ds)
    ds = np.where(is_["hold_profile"], pool.ids("bad_profile", registered, "DS"), ds)
    incoming = is_["pending"] & (rng.random(n) < 0.5)
    ds = np.where(incoming, pool.ids("current", neighbour, "DS"), ds)
    ka = np.where(incoming, pool.ids("current", neighbour, "KA"), ka)
    ds = np.where(is_["out_of_scope"], -1, ds)
    ka = np.where(is_["out_of_scope"], -1, ka)
    # Device types: a tenth of gas devices are gas proxy functions (GPF), which carry the GT's certificates too.
    gpf = gas & (rng.random(n) < 0.1)
    oos_type = np.array(["CHF", "PPMID", "IHD"])[rng.integers(0, 3, size=n)]
    device_type = np.where(is_["out_of_scope"], oos_type, np.where(gpf, "GPF", np.where(gas, "GSME", "ESME")))

    prefixes = np.where(unknown, UNLISTED_IDNO[1], 10 + dno)
    index = first_index + np.arange(n)
    digits = make_mpans(index, prefixes)
    mprn = spread_digits(index, 10, 104729, low=10**9)
    mpan_text = digit_strings(digits)
    bad = digits.copy()
    bad[:, 12] = (bad[:, 12] + 1) % 10
    mpan_text = pc.if_else(pa.array(is_["invalid_mpan"]), digit_strings(bad), mpan_text)
    mprn_text = digit_strings(mprn)
    mpxn = pc.if_else(pa.array(gas), mprn_text, mpan_text)
    serials = first_serial + np.arange(n, dtype=np.uint64) * np.uint64(3)
    return {
        "n": n,
        "serials": serials,
        "gas": gas,
        "mpxn": mpxn,
        "mpan_text": mpan_text,
        "mprn_text": mprn_text,
        "ds": ds,
        "ka": ka,
        "registered": registered,
        "neighbour": neighbour,
        "is": is_,
        "scenario": scenario,
        "device_type": device_type,
        "split": {
            "empty_one": (empty_ds, "ds_empty", "ka_empty"),
            "pending": (incoming, "slots_hold_incoming_no", "change_of_no_pending"),
        },
    }


def repeat_rows(chunk: dict) -> np.ndarray:
    """Row order for the extract: every device once, devices with the 'repeat' scenario a second time at the end."""
    order = np.arange(chunk["n"])
    return np.concatenate([order, order[chunk["is"]["repeat"]]])


def pd_map(values: np.ndarray, mapping: dict) -> np.ndarray:
    """Device type names -> a dialect's words (values without an entry pass unchanged), vectorised over few values."""
    out = values.astype(object)
    for source, target in mapping.items():
        out[values == source] = target
    return out


def certs(pool_text: pa.Array, ids: np.ndarray) -> pa.Array:
    return pc.take(pool_text, pa.array(ids, mask=ids < 0))


def write_moc(writer, chunk, pool, rows):
    types = pa.array(pd_map(chunk["device_type"], {"ESME": "E", "GSME": "G"}))
    table = pa.table(
        {
            "SP_CODE": pa.array(["MOC"] * chunk["n"]),
            "DEVICE_EUI": hex_ids(chunk["serials"], hyphens=False, lower=True),
            "DEV_TYPE": types,
            "SUPPLY_POINT_REF": chunk["mpxn"],
            "NO_DIGSIG_CERT_B64": certs(pool.b64, chunk["ds"]),
            "NO_KEYAGR_CERT_B64": certs(pool.b64, chunk["ka"]),
            "EXTRACT_TS": pa.array(["2026-11-19T01:30:00Z"] * chunk["n"]),
        }
    ).take(pa.array(rows))
    writer.write_table(table)


def write_foc(fh, chunk, pool, rows, part: int = 200_000):
    """JSON lines in slices, so one slice's text stays well under Arrow's 2 GB string-array limit."""
    for start in range(0, len(rows), part):
        _write_foc_part(fh, chunk, pool, rows[start : start + part])


def _write_foc_part(fh, chunk, pool, rows):
    n = len(rows)
    picked = pa.array(rows)
    ids = hex_ids(chunk["serials"][rows], hyphens=True, lower=False)
    kinds = pa.array(
        pd_map(
            chunk["device_type"][rows],
            {"ESME": "electricity", "GSME": "gas", "GPF": "gpf", "CHF": "chf", "PPMID": "ppmid", "IHD": "ihd"},
        )
    )
    mpxn = chunk["mpxn"].take(picked)
    head = pc.binary_join_element_wise(
        '{"device":{"guid":"', ids, '","kind":"', kinds, '","supplyPoint":"', mpxn, '"},"slot":{"name":"', ""
    )
    tail = ',"algorithm":"ECDSA-P256"},"capturedAtEpochMs":1763515800000,"source":"foc-anchor-export/3.2"}\n'
    lines = []
    for name, ids_ in (("nwo-digital-signing", chunk["ds"][rows]), ("nwo-key-agreement", chunk["ka"][rows])):
        text = certs(pool.b64, ids_)
        cert_json = pc.if_else(
            pc.is_null(text), "null", pc.binary_join_element_wise('"', pc.fill_null(text, ""), '"', "")
        )
        lines.append(pc.binary_join_element_wise(head, name, '","certificate":', cert_json, tail, ""))
    lines = [x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x for x in lines]
    both = pa.concat_arrays([lines[0], lines[1]])
    order = np.empty(2 * n, dtype=np.int64)
    order[0::2], order[1::2] = np.arange(n), np.arange(n) + n  # a device's DS and KA records next to each other
    out = both.take(pa.array(order))
    offsets = np.frombuffer(out.buffers()[1], dtype=np.int32)[out.offset : out.offset + len(out) + 1]
    fh.write(memoryview(out.buffers()[2])[offsets[0] : offsets[-1]])


def ioc_table(chunk, pool, rows) -> pa.Table:
    return pa.table(
        {
            "provider": pa.array(["IOC"] * chunk["n"]),
            "eui64": hex_ids(chunk["serials"], hyphens=True, lower=True),
            "meter_type": pa.array(chunk["device_type"]),
            "mpxn": chunk["mpxn"],
            "no_ds_pem": certs(pool.pem, chunk["ds"]),
            "no_ka_pem": certs(pool.pem, chunk["ka"]),
            "snapshot_time": pa.array(np.full(chunk["n"], 1763515800000, dtype="datetime64[ms]")).cast(
                pa.timestamp("ms", tz="UTC")
            ),
        }
    ).take(pa.array(rows))


def rdp_tables(chunk, pool) -> tuple[pa.Table, pa.Table]:
    """RDP rows: one open registration per registered device from 2019-04-01, a second NO for ambiguous ones, the
    previous NO's ended registration before it, and a change of NO PENDING_DAYS after the as-of date."""
    is_ = chunk["is"]
    registered = np.array(pool.nos + [UNLISTED_IDNO[0]])[
        np.where(is_["unknown_no"], len(pool.nos), chunk["registered"])
    ]
    neighbour = np.array(pool.nos)[chunk["neighbour"]]
    keep = ~(is_["no_rdp"] | is_["out_of_scope"] | is_["no_rdp_ended"])
    as_of = np.datetime64(AS_OF)
    switch = as_of + np.timedelta64(PENDING_DAYS, "D")
    segments = [  # (devices, NO ids, from, to)
        (keep & ~is_["pending"], registered, "2019-04-01", ""),
        (is_["ambiguous"], neighbour, "2021-01-01", ""),
        (is_["wrong_previous"], neighbour, "2014-04-01", "2019-03-31"),
        (is_["no_rdp_ended"], registered, "2014-04-01", "2020-03-31"),
        (is_["pending"], registered, "2019-04-01", str(switch - np.timedelta64(1, "D"))),
        (is_["pending"], neighbour, str(switch), ""),
    ]

    def when(iso: str, fuel: str) -> str:
        return iso if fuel == "G" or not iso else f"{iso[8:10]}/{iso[5:7]}/{iso[:4]}"

    tables = {}
    for fuel, mask, text in (("E", ~chunk["gas"], chunk["mpan_text"]), ("G", chunk["gas"], chunk["mprn_text"])):
        parts = [(m & mask, nos) for m, nos, _, _ in segments]
        mpxn = pa.concat_arrays([text.filter(pa.array(m)) for m, _ in parts])
        nos = np.concatenate([nos[m] for m, nos in parts])
        starts = np.concatenate([np.full(m.sum(), when(f, fuel)) for (m, _), (_, _, f, _) in zip(parts, segments)])
        ends = np.concatenate([np.full(m.sum(), when(t, fuel)) for (m, _), (_, _, _, t) in zip(parts, segments)])
        tables[fuel] = pa.table({"mpxn": mpxn, "no": pa.array(nos), "from": pa.array(starts), "to": pa.array(ends)})
    return tables["E"], tables["G"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    out: Path = args.out
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "configs" / "dialects", out / "dialects", dirs_exist_ok=True)
    pki = sample.build_pki()
    sample.write_pki(pki, out / "pki", out / "registry.toml")
    pool = Pool(pki)
    rng = np.random.default_rng(args.seed)
    counts = {c: 0 for c in set(INTENDED.values())}
    causes: dict[str, dict[str, int]] = {}
    rows_written = {"MOC": 0, "FOC": 0, "IOC": 0}
    moc_path, foc_path, ioc_path = (
        out / "moc_anchor_slots.csv",
        out / "foc_anchor_slots.jsonl",
        out / "ioc_anchor_slots.parquet",
    )
    e_path, g_path = out / "rdp_electricity.csv", out / "rdp_gas.csv"
    moc_writer = ioc_writer = None
    with open(foc_path, "wb") as foc, open(e_path, "wb") as e_fh, open(g_path, "wb") as g_fh:
        e_fh.write(b"MPAN_CORE,DISTRIBUTOR_MPID,REG_FROM,REG_TO\n")
        g_fh.write(b"mprn;transporter;valid_from;valid_to\n")
        first_index = 0
        serial_base = {"MOC": 0x001D240000000000, "FOC": 0x00D0C50000000000, "IOC": 0x0012F70000000000}
        for s1sp, share in SHARES.items():
            total = int(args.devices * share)
            done = 0
            while done < total:
                n = min(CHUNK, total - done)
                chunk = build_chunk(rng, pool, s1sp, serial_base[s1sp] + done * 3, n, first_index)
                first_index += n
                rows = repeat_rows(chunk)
                for i, name in enumerate(NAMES):
                    mine = chunk["scenario"] == i
                    counts[INTENDED[name]] += int(mine.sum())
                    if name in chunk["split"]:
                        mask, yes, no = chunk["split"][name]
                        for cause, devices in ((yes, int((mine & mask).sum())), (no, int((mine & ~mask).sum()))):
                            causes.setdefault(INTENDED[name], {}).setdefault(cause, 0)
                            causes[INTENDED[name]][cause] += devices
                    elif CAUSE[name]:
                        causes.setdefault(INTENDED[name], {}).setdefault(CAUSE[name], 0)
                        causes[INTENDED[name]][CAUSE[name]] += int(mine.sum())
                if s1sp == "MOC":
                    if moc_writer is None:
                        moc_writer = pacsv.CSVWriter(
                            moc_path,
                            pa.schema(
                                [
                                    (c, pa.string())
                                    for c in [
                                        "SP_CODE",
                                        "DEVICE_EUI",
                                        "DEV_TYPE",
                                        "SUPPLY_POINT_REF",
                                        "NO_DIGSIG_CERT_B64",
                                        "NO_KEYAGR_CERT_B64",
                                        "EXTRACT_TS",
                                    ]
                                ]
                            ),
                            write_options=pacsv.WriteOptions(quoting_style="needed"),
                        )
                    write_moc(moc_writer, chunk, pool, rows)
                    rows_written["MOC"] += len(rows)
                elif s1sp == "FOC":
                    write_foc(foc, chunk, pool, rows)
                    rows_written["FOC"] += 2 * len(rows)
                else:
                    table = ioc_table(chunk, pool, rows)
                    ioc_writer = ioc_writer or pq.ParquetWriter(ioc_path, table.schema, compression="zstd")
                    ioc_writer.write_table(table)
                    rows_written["IOC"] += len(rows)
                e_table, g_table = rdp_tables(chunk, pool)
                for fh, table, sep in ((e_fh, e_table, ","), (g_fh, g_table, ";")):
                    buf = pa.BufferOutputStream()
                    pacsv.write_csv(
                        table,
                        buf,
                        write_options=pacsv.WriteOptions(include_header=False, delimiter=sep, quoting_style="none"),
                    )
                    fh.write(buf.getvalue())
                done += n
                print(f"  {s1sp}: {done:,}/{total:,} devices", flush=True)
    moc_writer.close()
    if ioc_writer:
        ioc_writer.close()
    case = (ROOT / "configs" / "sample.toml").read_text()
    case = (
        case.replace("../sample_data/pki/", "pki/")
        .replace("../sample_data/", "")
        .replace('registry = "registry.toml"', 'registry = "registry.toml"')
    )
    (out / "case.toml").write_text(case)
    facts = pa.table(
        {"text": pa.concat_arrays([pool.b64, pool.pem]), "cert_index": pa.array(list(range(len(pool.ders))) * 2)}
    )
    pq.write_table(facts, out / "cert_texts.parquet")
    (out / "expected.json").write_text(
        json.dumps(
            {
                "devices": sum(counts.values()),
                "devices_by_category": counts,
                "devices_by_cause": causes,
                "rows": rows_written,
            },
            indent=2,
        )
    )
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(
        f"wrote {sum(counts.values()):,} devices ({size / 1e9:.2f} GB) to {out} in {time.perf_counter() - started:.1f}s"
    )


if __name__ == "__main__":
    main()

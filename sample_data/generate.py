"""Write the bundled sample case: SMKI-profile PKI, NO registry, three S1SP extracts in their own dialects, RDP.

Seeded and deterministic: running it twice gives byte-identical files (certificates use RFC 6979 signatures).
The generated files are committed so the demo runs without generating; `make sample` rewrites them.

    python sample_data/generate.py [--devices 3000] [--seed 107]

The case is small but shaped like the real one: MOC holds most devices, FOC fewer, IOC very few; most devices
are fine; the wrong ones mostly hold a neighbouring distributor's or the other fuel's NO certificates; and every
finding category and the interesting precedence conflicts occur at least once in every S1SP where they can.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import random
import sys
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remediation.identifiers import mpan_check_digit  # noqa: E402
from testing.testpki import der as der_of  # noqa: E402
from testing.testpki import make_org_ca, make_org_certificate  # noqa: E402

AS_OF = date(2026, 11, 20)
EXTRACTED = datetime(2026, 11, 19, 1, 30, tzinfo=UTC)

# Electricity distributors: MPID, MPAN distributor id, name. Gas transporters: id, name.
DNOS = [
    ("EELC", 10, "UK Power Networks (Eastern)"),
    ("EMEB", 11, "NGED East Midlands"),
    ("LOND", 12, "UK Power Networks (London)"),
    ("MANW", 13, "SP Manweb"),
    ("MIDE", 14, "NGED West Midlands"),
    ("NEEB", 15, "Northern Powergrid (Northeast)"),
    ("NORW", 16, "Electricity North West"),
    ("HYDE", 17, "SSEN Distribution (North Scotland)"),
    ("SPOW", 18, "SP Distribution"),
    ("SEEB", 19, "UK Power Networks (South Eastern)"),
    ("SOUT", 20, "SSEN Distribution (Southern)"),
    ("SWAE", 21, "NGED South Wales"),
    ("SWEB", 22, "NGED South West"),
    ("YELG", 23, "Northern Powergrid (Yorkshire)"),
    # IDNOs (distributor ids 24-38, each its own MPID) are NOs in their own right and need registry entries too.
    ("IPNL", 24, "Independent Power Networks (IDNO)"),
    ("GGEN", 33, "IDNO GGEN"),
]
# Gas transporters: the four GDNs and two independent gas transporters (iGTs).
GTS = [
    ("CADENT", "Cadent Gas"),
    ("NGN", "Northern Gas Networks"),
    ("SGN", "SGN"),
    ("WWU", "Wales & West Utilities"),
    ("ESP", "ES Pipelines (iGT)"),
    ("GTC", "GTC Pipelines (iGT)"),
]
UNLISTED_NO = "UNLISTED"  # an NO entity no registry entry names (its certificates are WRONG_NO unregistered_entity)
OTHER_POLICY_OID = "1.2.826.0.1.8641679.1.2.1.1"  # an SMKI-arc OID this (test) environment does not accept
SUPPLIERS = [("SUPA", "Supplier A"), ("SUPB", "Supplier B"), ("SUPC", "Supplier C")]


@dataclass
class Pki:
    ca: object
    impostor_ca: object
    current: dict  # NO id -> (ds der, ka der)
    previous: dict  # NO id -> (ds der, ka der), an older generation that is still valid
    expired: dict  # NO id -> ds der, expired before the as-of date
    revoked: dict  # NO id -> ds der, on the ORL
    revoked_serials: list
    supplier: list  # (ds der, ka der)
    impostor: dict  # NO id -> (ds der, ka der) claiming the NO's entity, issued by another CA
    idno: tuple  # (ds der, ka der) of an NO the registry does not list
    entity: dict  # NO id -> EUI-64
    other_policy: dict  # NO id -> ds der from the right CA but with a policy OID this environment does not accept
    bad_profile: dict  # NO id -> ds der from the right CA whose keyUsage is not critical
    revoked_issuer: str = "Z1"  # the ORL names the issuer with each serial


def entity_for(index: int, kind: int) -> str:
    return f"90-B3-D5-1F-{kind:02X}-00-00-{index:02X}"


def build_pki() -> Pki:
    ca = make_org_ca("sample/org-ca", "Z1")
    impostor_ca = make_org_ca("sample/impostor-ca", "Z1")  # same name, other key: only the signature tells
    ids = [d[0] for d in DNOS] + [g[0] for g in GTS]
    entity = {no: entity_for(i + 1, 0x30 if i < len(DNOS) else 0x40) for i, no in enumerate(ids)}
    current, previous, expired, revoked, impostor, serials = {}, {}, {}, {}, {}, []

    def pair(eid, name, issuer=ca, role=3, nb="2025-06-01", na="2035-06-01", gen="2025"):
        return tuple(
            der_of(
                make_org_certificate(
                    issuer,
                    eid,
                    role,
                    u,
                    name=name,
                    not_before=nb,
                    not_after=na,
                    seed=f"sample/{eid}/{role}/{u}/{gen}/{issuer is ca}",
                )
            )
            for u in ("DS", "KA")
        )

    for no in ids:
        current[no] = pair(entity[no], no)
        previous[no] = pair(entity[no], no, nb="2021-03-01", na="2031-03-01", gen="2021")
        expired[no] = pair(entity[no], no, nb="2016-01-01", na="2026-01-01", gen="2016")[0]
        revoked_cert = make_org_certificate(
            ca,
            entity[no],
            3,
            "DS",
            name=no,
            not_before="2023-05-01",
            not_after="2033-05-01",
            seed=f"sample/{no}/revoked",
        )
        revoked[no] = der_of(revoked_cert)
        serials.append(format(revoked_cert.serial_number, "X"))
        impostor[no] = pair(entity[no], no, issuer=impostor_ca, gen="impostor")
    other_policy = {
        no: der_of(
            make_org_certificate(
                ca,
                entity[no],
                3,
                "DS",
                name=no,
                not_before="2025-06-01",
                not_after="2035-06-01",
                seed=f"sample/{no}/other-policy",
                policy_oid=OTHER_POLICY_OID,
            )
        )
        for no in ids
    }
    bad_profile = {
        no: der_of(
            make_org_certificate(
                ca,
                entity[no],
                3,
                "DS",
                name=no,
                not_before="2025-06-01",
                not_after="2035-06-01",
                seed=f"sample/{no}/ku-not-critical",
                critical_key_usage=False,
            )
        )
        for no in ids
    }
    supplier = [pair(entity_for(i + 1, 0x50), name, role=2) for i, (_, name) in enumerate(SUPPLIERS)]
    idno = pair(entity_for(1, 0x60), UNLISTED_NO)
    return Pki(
        ca,
        impostor_ca,
        current,
        previous,
        expired,
        revoked,
        serials,
        supplier,
        impostor,
        idno,
        entity,
        other_policy,
        bad_profile,
    )


# ------------------------------------------------------------------------------------------------ devices


@dataclass
class Record:
    s1sp: str
    device_id: str  # canonical EUI-64; writers re-format per dialect
    device_type: str  # ESME/GSME or a deliberately bad value
    mpxn: str
    ds: bytes | None
    ka: bytes | None
    extracted_at: datetime = EXTRACTED
    raw_id: str | None = None  # written as-is instead of device_id (bad ids)


@dataclass
class Case:
    records: list = field(default_factory=list)
    rdp: list = field(default_factory=list)  # (fuel, mpxn, no id, from date, to date|None, raw override dict)
    intended: dict = field(default_factory=dict)  # canonical device id -> (category, cause) the generator meant


GARBAGE = b"\x30\x82\x01\x0a\x02\x01\x01"  # a DER SEQUENCE cut short: undecodable


def make_mpan(rng: random.Random, prefix: int) -> str:
    body = f"{prefix:02d}" + "".join(rng.choice("0123456789") for _ in range(10))
    return body + str(mpan_check_digit(body))


def make_mprn(rng: random.Random) -> str:
    return str(rng.randint(10**7, 10**10 - 1))


RECIPES = [  # (name, weight): the bulk of devices
    ("ok", 700),
    ("ok_previous_gen", 60),
    ("wrong_neighbour", 90),
    ("wrong_ds_only", 20),
    ("wrong_ka_only", 15),
    ("wrong_other_fuel", 12),
    ("wrong_supplier", 8),
    ("hold_untrusted", 5),
    ("wrong_unregistered_no", 4),
    ("wrong_previous_no", 10),
    ("hold_other_policy", 2),
    ("hold_profile", 2),
    ("pending_incoming", 4),
    ("pending_outgoing", 3),
    ("gpf_ok", 40),
    ("gpf_wrong", 6),
    ("out_of_scope", 8),
    ("empty_one", 25),
    ("empty_both", 8),
    ("key_usage_swapped", 10),
    ("expired", 8),
    ("revoked", 6),
    ("no_rdp", 10),
    ("no_rdp_ended", 5),
    ("rdp_ambiguous", 5),
    ("unknown_no", 5),
    ("invalid_id", 3),
    ("invalid_mpan", 4),
    ("invalid_type", 2),
    ("undecodable", 3),
    ("identical_repeat", 8),
]
# Every one of these occurs at least once in MOC and FOC (and the first few in IOC), whatever the draw.
GUARANTEED = [
    "ok",
    "wrong_neighbour",
    "empty_one",
    "key_usage_swapped",
    "expired",
    "no_rdp",
    "rdp_ambiguous",
    "unknown_no",
    "invalid_mpan",
    "undecodable",
    "duplicate_conflict",
    "duplicate_and_wrong",
    "invalid_and_wrong",
    "no_rdp_and_wrong",
    "unknown_and_wrong",
    "wrong_and_empty",
    "wrong_and_expired",
    "empty_and_key_usage",
    "key_usage_and_expired",
    "rdp_rejected_row",
    "revoked",
    "wrong_supplier",
    "hold_untrusted",
    "rdp_future_only",
    "identical_repeat",
    "cross_s1sp_duplicate",
    "wrong_previous_no",
    "wrong_other_fuel",
    "wrong_unregistered_no",
    "hold_other_policy",
    "hold_profile",
    "pending_incoming",
    "pending_outgoing",
    "gpf_ok",
    "gpf_wrong",
    "out_of_scope",
    "no_rdp_ended",
    "empty_both",
    "invalid_type",
    "invalid_id",
]
INTENDED = {
    "ok": "OK",
    "ok_previous_gen": "OK",
    "wrong_neighbour": "WRONG_NO",
    "wrong_ds_only": "WRONG_NO",
    "wrong_ka_only": "WRONG_NO",
    "wrong_other_fuel": "WRONG_NO",
    "wrong_supplier": "WRONG_NO",
    "hold_untrusted": "SECURITY_HOLD",
    "wrong_unregistered_no": "WRONG_NO",
    "wrong_previous_no": "WRONG_NO",
    "hold_other_policy": "SECURITY_HOLD",
    "hold_profile": "SECURITY_HOLD",
    "pending_incoming": "PENDING_NO_CHANGE",
    "pending_outgoing": "PENDING_NO_CHANGE",
    "gpf_ok": "OK",
    "gpf_wrong": "WRONG_NO",
    "out_of_scope": "OUT_OF_SCOPE",
    "empty_one": "SLOT_EMPTY",
    "empty_both": "SLOT_EMPTY",
    "key_usage_swapped": "KEY_USAGE_MISMATCH",
    "expired": "EXPIRED_OR_REVOKED",
    "revoked": "EXPIRED_OR_REVOKED",
    "no_rdp": "NO_RDP",
    "no_rdp_ended": "NO_RDP",
    "rdp_future_only": "NO_RDP",
    "rdp_ambiguous": "RDP_AMBIGUOUS",
    "rdp_rejected_row": "RDP_AMBIGUOUS",
    "unknown_no": "UNKNOWN_NO",
    "invalid_id": "INVALID_INPUT",
    "invalid_mpan": "INVALID_INPUT",
    "invalid_type": "INVALID_INPUT",
    "undecodable": "INVALID_INPUT",
    "identical_repeat": "OK",
    "duplicate_conflict": "DUPLICATE_CONFLICT",
    "duplicate_and_wrong": "DUPLICATE_CONFLICT",
    "invalid_and_wrong": "INVALID_INPUT",
    "no_rdp_and_wrong": "NO_RDP",
    "unknown_and_wrong": "UNKNOWN_NO",
    "wrong_and_empty": "WRONG_NO",
    "wrong_and_expired": "WRONG_NO",
    "empty_and_key_usage": "SLOT_EMPTY",
    "key_usage_and_expired": "KEY_USAGE_MISMATCH",
    "cross_s1sp_duplicate": "DUPLICATE_CONFLICT",
}


# The cause each recipe means (contract v2); recipes whose cause depends on the draw are settled in `make`.
INTENDED_CAUSE = {
    "ok": "",
    "ok_previous_gen": "",
    "identical_repeat": "",
    "gpf_ok": "",
    "wrong_neighbour": "other_no_same_fuel",
    "gpf_wrong": "other_no_same_fuel",
    "wrong_ds_only": "other_no_same_fuel",
    "wrong_ka_only": "other_no_same_fuel",
    "wrong_and_empty": "other_no_same_fuel",
    "wrong_and_expired": "other_no_same_fuel",
    "wrong_other_fuel": "other_fuel_no",
    "wrong_supplier": "non_no_role",
    "wrong_unregistered_no": "unregistered_entity",
    "wrong_previous_no": "previous_no_of_mpxn",
    "hold_untrusted": "untrusted_issuer",
    "hold_other_policy": "policy_not_accepted",
    "hold_profile": "profile_violation",
    "pending_incoming": "slots_hold_incoming_no",
    "pending_outgoing": "change_of_no_pending",
    "out_of_scope": "device_type_without_no_slots",
    "empty_both": "both_empty",
    "empty_and_key_usage": "ds_empty",
    "key_usage_swapped": "swapped",
    "key_usage_and_expired": "swapped",
    "expired": "expired",
    "revoked": "revoked",
    "no_rdp": "no_registration",
    "no_rdp_and_wrong": "no_registration",
    "no_rdp_ended": "registration_ended",
    "rdp_future_only": "registration_not_yet_effective",
    "rdp_ambiguous": "several_registrations",
    "rdp_rejected_row": "rejected_rdp_row",
    "unknown_no": "other_fuel_operator",
    "unknown_and_wrong": "other_fuel_operator",
    "invalid_id": "invalid_device_id",
    "invalid_mpan": "invalid_mpxn",
    "invalid_and_wrong": "invalid_mpxn",
    "invalid_type": "unconfigured_device_type",
    "undecodable": "undecodable_certificate",
    "duplicate_conflict": "differing_records",
    "duplicate_and_wrong": "differing_records",
}


class DeviceFactory:
    def __init__(self, rng: random.Random, pki: Pki, case: Case):
        self.rng, self.pki, self.case = rng, pki, case
        self.serial = {"MOC": 0x001D240000000000, "FOC": 0x00D0C50000000000, "IOC": 0x0012F70000000000}

    def next_id(self, s1sp: str) -> str:
        self.serial[s1sp] += self.rng.randint(1, 40)
        h = f"{self.serial[s1sp]:016X}"
        return "-".join(h[i : i + 2] for i in range(0, 16, 2))

    def register(self, fuel: str, mpxn: str, no: str, start: date | None = None, end: date | None = None) -> None:
        if start is None:
            start = min(date(2015, 1, 1) + timedelta(days=self.rng.randint(0, 3000)), AS_OF - timedelta(days=30))
        self.case.rdp.append((fuel, mpxn, no, start, end, None))

    def other(self, pool: list[str], no: str) -> str:
        return self.rng.choice([p for p in pool if p != no])

    def make(self, s1sp: str, recipe: str) -> None:
        rng, pki = self.rng, self.pki
        gas = rng.random() < 0.4 and recipe not in (
            "unknown_no",
            "unknown_and_wrong",
            "invalid_mpan",
            "wrong_unregistered_no",
        )
        gas = gas or recipe in ("gpf_ok", "gpf_wrong")
        dnos, gts = [d[0] for d in DNOS], [g[0] for g in GTS]
        if gas:
            # A gas NO's certificates sit on the GSME and on the GPF (SEC-defined SMETS1 device types).
            fuel, dtype, no = "G", "GPF" if recipe.startswith("gpf") or rng.random() < 0.1 else "GSME", rng.choice(gts)
            mpxn, pool, other_fuel = make_mprn(rng), gts, dnos
        else:
            fuel, dtype, (no, prefix, _) = "E", "ESME", rng.choice(DNOS)
            mpxn, pool, other_fuel = make_mpan(rng, prefix), dnos, gts
        ds, ka = pki.current[no]
        if recipe in ("unknown_no", "unknown_and_wrong"):
            # The RDP names a gas transporter for an MPAN: the registered NO serves the other fuel. (A registry gap, an
            # RDP id with no entry at all, is the other UNKNOWN_NO cause; the sample's registry has none, so that plan
            # runs without --allow-unknown-no; tests and the scale case exercise gaps.)
            no = rng.choice(gts)
        neighbour = self.other(pool, no)
        device_id = self.next_id(s1sp)
        rec = Record(s1sp, device_id, dtype, mpxn, ds, ka, EXTRACTED + timedelta(seconds=rng.randint(0, 5400)))
        registered = True
        cause = INTENDED_CAUSE.get(recipe)
        if recipe == "ok_previous_gen":
            rec.ds, rec.ka = pki.previous[no]
        elif recipe in (
            "wrong_neighbour",
            "gpf_wrong",
            "duplicate_and_wrong",
            "invalid_and_wrong",
            "no_rdp_and_wrong",
            "unknown_and_wrong",
        ):
            rec.ds, rec.ka = pki.current[neighbour] if rng.random() < 0.8 else pki.previous[neighbour]
        elif recipe == "wrong_ds_only":
            rec.ds = pki.current[neighbour][0]
        elif recipe == "wrong_ka_only":
            rec.ka = pki.current[neighbour][1]
        elif recipe == "wrong_other_fuel":
            rec.ds, rec.ka = pki.current[rng.choice(other_fuel)]
        elif recipe == "wrong_supplier":
            rec.ds, rec.ka = rng.choice(pki.supplier)
        elif recipe == "hold_untrusted":
            rec.ds, rec.ka = pki.impostor[no]
        elif recipe == "hold_other_policy":
            rec.ds = pki.other_policy[no]
        elif recipe == "hold_profile":
            rec.ds = pki.bad_profile[no]
        elif recipe == "wrong_previous_no":
            # The supply point changed NO and the S1SP never followed: the slots hold the previous NO's certificates.
            registered = False
            rec.ds, rec.ka = pki.current[neighbour]
            self.register(fuel, mpxn, neighbour, date(2014, 4, 1), AS_OF - timedelta(days=rng.randint(30, 700)))
            self.register(fuel, mpxn, no, AS_OF - timedelta(days=rng.randint(1, 29)))
        elif recipe in ("pending_incoming", "pending_outgoing"):
            # A change of NO days away: today's NO until then, the neighbour after. The slots already hold the incoming
            # NO's certificates, or the outgoing one's: either way nothing is written now.
            registered = False
            switch = AS_OF + timedelta(days=rng.randint(2, 20))
            self.register(fuel, mpxn, no, date(2016, 1, 1), switch - timedelta(days=1))
            self.register(fuel, mpxn, neighbour, switch)
            if recipe == "pending_incoming":
                rec.ds, rec.ka = pki.current[neighbour]
        elif recipe == "out_of_scope":
            rec.device_type = rng.choice(["CHF", "PPMID", "IHD"])  # no NO slots: counted, never judged
            rec.ds = rec.ka = None
        elif recipe == "wrong_unregistered_no":
            rec.ds, rec.ka = pki.idno
        elif recipe == "empty_one":
            if rng.random() < 0.5:
                rec.ds, cause = None, "ds_empty"
            else:
                rec.ka, cause = None, "ka_empty"
        elif recipe == "empty_both":
            rec.ds = rec.ka = None
        elif recipe == "key_usage_swapped":
            rec.ds, rec.ka = ka, ds
        elif recipe == "expired":
            rec.ds = pki.expired[no]
        elif recipe == "revoked":
            rec.ds = pki.revoked[no]
        elif recipe == "no_rdp":
            registered = False
        elif recipe == "no_rdp_ended":
            registered = False
            self.register(fuel, mpxn, no, date(2014, 4, 1), AS_OF - timedelta(days=rng.randint(1, 400)))
        elif recipe == "rdp_future_only":
            registered = False
            self.register(fuel, mpxn, no, AS_OF + timedelta(days=rng.randint(1, 60)))
        elif recipe == "rdp_ambiguous":
            self.register(fuel, mpxn, neighbour, date(2020, 1, 1))
        elif recipe == "rdp_rejected_row":
            self.case.rdp.append(
                (fuel, mpxn, neighbour, None, None, {"effective_from": "31/02/2021" if fuel == "E" else "2021-02-31"})
            )
        elif recipe == "invalid_id":
            rec.raw_id = device_id.replace("-", "")[:-2] + "ZZ"
        elif recipe in ("invalid_mpan",):
            rec.mpxn = mpxn[:-1] + str((int(mpxn[-1]) + 1) % 10)
        elif recipe == "invalid_type":
            rec.device_type = "SMARTPLUG"  # a device type the case does not configure (HCALCS etc. are OUT_OF_SCOPE)
        elif recipe == "undecodable":
            rec.ka = GARBAGE + bytes(rng.randrange(256) for _ in range(8))
        elif recipe == "wrong_and_empty":
            rec.ds, rec.ka = pki.current[neighbour][0], None
        elif recipe == "wrong_and_expired":
            rec.ds, rec.ka = pki.expired[no], pki.current[neighbour][1]
        elif recipe == "empty_and_key_usage":
            rec.ds, rec.ka = None, ds
        elif recipe == "key_usage_and_expired":
            rec.ds, rec.ka = ka, pki.expired[no]
        if recipe == "no_rdp_and_wrong":
            registered = False
        if recipe == "invalid_and_wrong":
            rec.mpxn = rec.mpxn + "0"
        if recipe == "unknown_and_wrong":
            rec.ds, rec.ka = pki.current[rng.choice(dnos)]
        if registered:
            self.register(fuel, mpxn, no)
        if (
            rng.random() < 0.15
            and registered
            and recipe not in ("rdp_ambiguous", "rdp_rejected_row", "gpf_wrong")
            and "wrong" not in recipe
        ):
            # History: an earlier, ended registration with another NO (a boundary change) must not count.
            self.register(
                fuel, mpxn, neighbour if fuel == "E" else self.other(pool, no), date(2012, 1, 1), date(2014, 12, 31)
            )
        self.case.records.append(rec)
        if recipe == "identical_repeat":
            self.case.records.append(replace(rec))
        if recipe in ("duplicate_conflict", "duplicate_and_wrong"):
            twin = replace(
                rec,
                ds=pki.previous[no][0]
                if recipe == "duplicate_conflict"
                else pki.current[self.other(pool, neighbour)][0],
            )
            self.case.records.append(twin)
        self.case.intended[rec.raw_id or device_id] = (INTENDED[recipe], cause)

    def cross_s1sp(self, first: str, second: str) -> None:
        """One device reported by two S1SPs with different slot content: neither may be written."""
        self.make(first, "ok")
        rec = self.case.records[-1]
        self.case.records.append(replace(rec, s1sp=second, ds=rec.ka, ka=rec.ds))
        self.case.intended[rec.device_id] = ("DUPLICATE_CONFLICT", "held_by_several_s1sps")


def build_case(pki: Pki, devices: int, seed: int) -> Case:
    rng = random.Random(seed)
    case = Case()
    factory = DeviceFactory(rng, pki, case)
    names, weights = zip(*RECIPES)
    shares = {"MOC": 0.62, "FOC": 0.36, "IOC": 0.02}
    for s1sp, share in shares.items():
        count = max(int(devices * share), 40)
        guaranteed = [g for g in GUARANTEED if g != "cross_s1sp_duplicate"]
        if s1sp == "IOC":
            guaranteed = guaranteed[:12]
        plan = guaranteed + rng.choices(names, weights, k=max(count - len(guaranteed), 0))
        rng.shuffle(plan)
        for recipe in plan:
            factory.make(s1sp, recipe)
    factory.cross_s1sp("MOC", "FOC")
    factory.cross_s1sp("FOC", "IOC")
    # RDP noise: registrations for supply points with no SMETS1 device, and an identical repeated row.
    for _ in range(devices // 20):
        no, prefix, _ = rng.choice(DNOS)
        factory.register("E", make_mpan(rng, prefix), no)
    case.rdp.append(case.rdp[0])
    return case


# ------------------------------------------------------------------------------------------------ writers


def b64(der: bytes | None) -> str:
    return "" if der is None else base64.b64encode(der).decode()


def pem_text(der: bytes | None) -> str | None:
    if der is None:
        return None
    body = b64(der)
    return (
        "-----BEGIN CERTIFICATE-----\n"
        + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        + "\n-----END CERTIFICATE-----\n"
    )


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_moc(records: list[Record], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")  # MOC exports from a Windows host
    w.writerow(
        [
            "SP_CODE",
            "DEVICE_EUI",
            "DEV_TYPE",
            "SUPPLY_POINT_REF",
            "NO_DIGSIG_CERT_B64",
            "NO_KEYAGR_CERT_B64",
            "EXTRACT_TS",
        ]
    )
    types = {"ESME": "E", "GSME": "G"}
    for r in records:
        device = r.raw_id or r.device_id.replace("-", "").lower()
        w.writerow(
            ["MOC", device, types.get(r.device_type, r.device_type), r.mpxn, b64(r.ds), b64(r.ka), iso(r.extracted_at)]
        )
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")


def write_foc(records: list[Record], path: Path, rng: random.Random) -> None:
    kinds = {"ESME": "electricity", "GSME": "gas"}
    lines = []
    for r in records:
        device = {
            "guid": r.raw_id or r.device_id,
            "kind": kinds.get(r.device_type, r.device_type.lower()),
            "supplyPoint": r.mpxn,
        }
        for name, der in (("nwo-digital-signing", r.ds), ("nwo-key-agreement", r.ka)):
            if der is None and name == "nwo-digital-signing" and rng.random() < 0.5:
                continue  # FOC leaves an empty DS slot out altogether half of the time (the KA record always comes)
            slot = {"name": name, "certificate": b64(der) if der is not None else None, "algorithm": "ECDSA-P256"}
            ms = int(r.extracted_at.timestamp() * 1000)
            lines.append(
                json.dumps({"device": device, "slot": slot, "capturedAtEpochMs": ms, "source": "foc-anchor-export/3.2"})
            )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_ioc(records: list[Record], path: Path) -> None:
    table = pa.table(
        {
            "provider": pa.array(["IOC"] * len(records), pa.string()),
            "eui64": [
                r.raw_id or r.device_id.lower() if i % 2 else r.raw_id or r.device_id for i, r in enumerate(records)
            ],
            "meter_type": [r.device_type for r in records],
            "mpxn": [r.mpxn for r in records],
            "no_ds_pem": pa.array([pem_text(r.ds) for r in records], pa.string()),
            "no_ka_pem": pa.array([pem_text(r.ka) for r in records], pa.string()),
            "snapshot_time": pa.array([r.extracted_at for r in records], pa.timestamp("ms", tz="UTC")),
        }
    )
    pq.write_table(table, path, compression="zstd")


def write_rdp(case: Case, e_path: Path, g_path: Path) -> None:
    e_buf, g_buf = io.StringIO(), io.StringIO()
    e, g = csv.writer(e_buf, lineterminator="\n"), csv.writer(g_buf, delimiter=";", lineterminator="\n")
    e.writerow(["MPAN_CORE", "DISTRIBUTOR_MPID", "REG_FROM", "REG_TO"])
    g.writerow(["mprn", "transporter", "valid_from", "valid_to"])
    for fuel, mpxn, no, start, end, raw in case.rdp:
        if fuel == "E":
            row = [mpxn, no, start.strftime("%d/%m/%Y") if start else "", end.strftime("%d/%m/%Y") if end else ""]
            if raw:
                row[2] = raw["effective_from"]
            e.writerow(row)
        else:
            row = [mpxn, no, start.isoformat() if start else "", end.isoformat() if end else ""]
            if raw:
                row[2] = raw["effective_from"]
            g.writerow(row)
    e_path.write_text(e_buf.getvalue(), encoding="utf-8")
    g_path.write_text(g_buf.getvalue(), encoding="utf-8")


def write_pki(pki: Pki, pki_dir: Path, registry_path: Path) -> None:
    (pki_dir / "no").mkdir(parents=True, exist_ok=True)
    (pki_dir / "org-ca.pem").write_bytes(pki.ca.pem())
    # SMETS1 identifies a certificate by serial and issuer: the ORL names both.
    (pki_dir / "orl.csv").write_text(
        "issuer,serial,reason\n"
        + "".join(f"{pki.revoked_issuer},{s},keyCompromise\n" for s in sorted(pki.revoked_serials))
    )
    lines = [
        "# Sample Network Operator registry, written by sample_data/generate.py: RDP network_operator_id -> SMKI entity",
        "# and the current NO_DS / NO_KA certificates that replace a wrong slot. In production this lists the NOs' real",
        "# current certificates as published in the SMKI repository.",
        "",
    ]
    names = {d[0]: (d[2], "E") for d in DNOS} | {
        g[0]: (g[1], "G") for g in GTS
    }  # GGEN (an IDNO) is left out on purpose
    for no, (name, fuel) in names.items():
        for usage, der in zip(("ds", "ka"), pki.current[no]):
            (pki_dir / "no" / f"{no.lower()}-{usage}.pem").write_text(pem_text(der))
        rel = Path(os.path.relpath(pki_dir / "no", registry_path.parent))
        lines += [
            "[[network_operator]]",
            f'id = "{no}"',
            f'name = "{name}"',
            f'fuel = "{fuel}"',
            f'entity_id = "{pki.entity[no]}"',
            f'ds_certificate = "{(rel / f"{no.lower()}-ds.pem").as_posix()}"',
            f'ka_certificate = "{(rel / f"{no.lower()}-ka.pem").as_posix()}"',
            "",
        ]
    registry_path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=107)
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data")
    parser.add_argument("--registry", type=Path, default=ROOT / "configs" / "registry.toml")
    args = parser.parse_args(argv)
    pki = build_pki()
    case = build_case(pki, args.devices, args.seed)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    by = {s: [r for r in case.records if r.s1sp == s] for s in ("MOC", "FOC", "IOC")}
    write_moc(by["MOC"], out / "moc_anchor_slots.csv")
    write_foc(by["FOC"], out / "foc_anchor_slots.jsonl", random.Random(args.seed + 1))
    write_ioc(by["IOC"], out / "ioc_anchor_slots.parquet")
    write_rdp(case, out / "rdp_electricity.csv", out / "rdp_gas.csv")
    write_pki(pki, out / "pki", args.registry)
    intended = sorted(case.intended.items())
    (out / "intended_categories.csv").write_text(
        "device_id,category,cause\n" + "".join(f"{d},{c},{k}\n" for d, (c, k) in intended)
    )
    print(
        f"wrote {len(case.records)} device records ({', '.join(f'{s} {len(v)}' for s, v in by.items())}) and {len(case.rdp)} RDP rows to {out}"
    )


if __name__ == "__main__":
    main()

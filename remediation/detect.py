"""Classify every device into exactly one finding category, in the contract's precedence.

Pure and vectorised: canonical tables in, findings table out; no I/O and no Python loop per device. Devices are
uint64 keys, MPxNs int64 keys, certificates small integer ids whose facts sit in arrays, and organisations integer
codes, so the per-device work is array indexing, sorting and comparisons. Text is only made at the end, as
dictionary-encoded Arrow columns (a few hundred distinct owner labels or details for millions of devices). The
rare awkward cases (repeated devices, ambiguous registrations, invalid rows) are handled on their small subsets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from remediation.certificates import HOLD_CAUSES
from remediation.config import DeviceType, Policy, default_device_types
from remediation.identifiers import eui64_keys, eui64_text, mpxn_text
from remediation.ingest.faults import FAULT_FIELDS
from remediation.memory import consumption_order, release_memory
from remediation.model import (
    CATEGORIES,
    CAUSES,
    FINDING_COLUMNS,
    FUEL_CODES,
    LOCKED_OUT_CATEGORIES,
    ROLE_NAMES,
    ROLE_NETWORK_OPERATOR,
    Category,
)
from remediation.progress import NO_PROGRESS, StageProgress
from remediation.registrations import RdpIndex, file_names, reg_keys_of

# Per-slot verdicts, most serious first; a slot gets the first that applies.
VERDICTS = ("EMPTY", "UNDECODABLE", "HOLD", "OTHER_ORG", "NOT_NO_ROLE", "KEY_USAGE", "EXPIRED", "REVOKED", "OK")
WRONG_VERDICTS = ("OTHER_ORG", "NOT_NO_ROLE")
_VERDICT_TEXT = {
    "EMPTY": "empty",
    "UNDECODABLE": "undecodable certificate",
    "HOLD": "certificate held for investigation (untrusted issuer, policy or profile)",
    "OTHER_ORG": "another organisation's certificate",
    "NOT_NO_ROLE": "certificate without the Network Operator role",
    "KEY_USAGE": "the registered NO's certificate with the other key usage",
    "EXPIRED": "the registered NO's certificate, not valid on the as-of date",
    "REVOKED": "the registered NO's certificate, revoked (on the ORL)",
    "OK": "the registered NO's certificate",
}
FINDINGS_EXTRA = [
    "registered_no",
    "ds_fingerprint",
    "ka_fingerprint",
    "ds_verdict",
    "ka_verdict",
    "ds_role",
    "ka_role",
    "source_file",
    "source_row",
    "rows",
    "extracted_at",
    "finding_id",
]
NO_CODE = -1  # "no registered NO" in NO-code arrays
FIND_PART = 1 << 21  # needles searched at a time by _find


@dataclass(frozen=True)
class Lookup:
    """A per-device column kept as the device's certificate id and a per-certificate array (id -1, the empty slot,
    reads the last entry): one int32 id array serves a slot's owner, fingerprint and role alike."""

    ids: np.ndarray
    values: np.ndarray
    labels: list | None = None  # set: `values` are codes into these labels (a dictionary column)

    def at(self, part) -> np.ndarray:
        return self.values[self.ids[part]]


class Detection:
    """One finding per device, held as compact per-device arrays; text columns are made per chunk on demand, so a
    national run never holds millions of strings at once. `findings` (pandas) and `table()` are for whole results
    of moderate size; writers use `chunks()`."""

    def __init__(self, columns: dict, input_rows: pd.DataFrame):
        self.columns = columns
        self.input_rows = input_rows  # one row per input record: source_file, source_row, n_rows, finding_id
        self._findings: pd.DataFrame | None = None
        self.security_holds: list[dict] = []  # held certificates and their device counts
        self.registry_gaps: list[dict] = []  # RDP NO ids with in-scope devices but no registry entry

    def __len__(self) -> int:
        return len(self.columns["key"])

    def codes(self, name: str) -> np.ndarray:
        value = self.columns[name]
        return value.at(slice(None)) if isinstance(value, Lookup) else value[0]

    def labels(self, name: str) -> list:
        value = self.columns[name]
        return value.labels if isinstance(value, Lookup) else value[1]

    def table(self, start: int = 0, stop: int | None = None) -> pa.Table:
        stop = len(self) if stop is None else min(stop, len(self))
        return self._table(slice(start, stop), np.arange(start, stop, dtype=np.int64))

    def _table(self, part, positions: np.ndarray) -> pa.Table:
        """Findings of the devices at `part` (a slice or an index array) as dictionary-encoded Arrow."""
        c = self.columns
        key_ok = c["key_ok"][part]
        device_text = eui64_text(c["key"][part])
        if not key_ok.all():  # the rows whose id is unreadable keep their text as read
            device_text = pc.if_else(pa.array(key_ok), device_text, _arrow_text(c["device_raw"].iloc[part]))
        mpxn_ok = c["mpxn_key"][part] >= 0
        mpxn = mpxn_text(c["mpxn_key"][part])
        if not mpxn_ok.all():
            mpxn = pc.if_else(pa.array(mpxn_ok), mpxn, _arrow_text(c["mpxn_raw"].iloc[part]))
        data = {"device_id": device_text, "mpxn": mpxn}
        for name, value in c.items():
            if isinstance(value, tuple):
                data[name] = _dictionary(value[0][part], value[1])
            elif isinstance(value, Lookup):
                data[name] = (
                    pa.array(value.at(part)) if value.labels is None else _dictionary(value.at(part), value.labels)
                )
        for name in ("source_row", "rows", "no_locked_out"):
            data[name] = pa.array(c[name][part])
        data["extracted_at"] = pa.array(c["extracted_at"][part]).cast(pa.timestamp("ns", tz="UTC"))
        data["finding_id"] = pa.array(positions)
        return pa.table(data).select(list(FINDING_COLUMNS) + FINDINGS_EXTRA)

    def chunks(self, size: int = 250_000):
        for start in range(0, max(len(self), 1), size):
            yield self.table(start, start + size)

    def subset(self, mask: np.ndarray, columns: list[str] | None = None) -> pd.DataFrame:
        """Findings of the devices in `mask` (a boolean mask or positions), as pandas (e.g. the WRONG_NO devices for
        a plan); only they are built, and only `columns` of them are made pandas objects when given."""
        positions = np.flatnonzero(mask) if mask.dtype == bool else np.asarray(mask, dtype=np.int64)
        table = self._table(positions, positions)
        return (table if columns is None else table.select(columns)).to_pandas()

    def positions_of(self, device_ids) -> np.ndarray:
        """Position of each device id (any accepted spelling) among the findings; -1 where it has none."""
        wanted, readable = eui64_keys(pa.array(list(device_ids), pa.string()))
        ok = np.flatnonzero(self.columns["key_ok"])  # readable ids are unique here: repeats were collapsed
        keys = self.columns["key"][ok]
        order = np.argsort(keys)
        slot, found = _find(keys[order], wanted)
        return np.where(found & readable, ok[order[slot]] if len(ok) else -1, -1)

    @property
    def findings(self) -> pd.DataFrame:
        if self._findings is None:
            self._findings = pa.concat_tables(list(self.chunks())).to_pandas()
        return self._findings


@dataclass(frozen=True)
class CertificateTable:
    """Certificate facts as arrays indexed by certificate id; index -1 (EMPTY_SLOT) hits the sentinel last row."""

    fingerprint: np.ndarray
    error: np.ndarray  # bool
    entity_code: np.ndarray  # int32 code of the subject entity (see `Entities`), -1 when none
    role: np.ndarray
    key_usage: np.ndarray  # int8: 0 DS, 1 KA, 2 anything else
    chains: np.ndarray
    in_validity: np.ndarray
    revoked: np.ndarray
    hold: np.ndarray  # int8 index into HOLD_CAUSES, -1 when the certificate is not held

    @classmethod
    def from_frame(cls, certs: pd.DataFrame, entities: Entities) -> CertificateTable:
        def col(name, sentinel, dtype=object):
            return np.append(certs[name].to_numpy(dtype=dtype), np.array([sentinel], dtype=dtype))

        return cls(
            fingerprint=col("fingerprint", ""),
            error=np.append(certs["error"].notna().to_numpy(), False),
            entity_code=np.append(entities.codes(certs["entity_id"]), -1).astype(np.int32),
            role=col("role", -1, np.int64),
            key_usage=np.append(certs["key_usage"].map({"DS": 0, "KA": 1}).fillna(2).to_numpy(dtype=np.int8), 2),
            chains=col("chains", False, bool),
            in_validity=col("in_validity", False, bool),
            revoked=col("revoked", False, bool),
            hold=np.append(certs["hold"].to_numpy(dtype=np.int8), -1).astype(np.int8)
            if "hold" in certs
            else np.full(len(certs) + 1, -1, np.int8),
        )


class Entities:
    """Organisation entity ids (EUI-64 text) <-> small integer codes, so comparisons per device are integer ones."""

    def __init__(self, *series: pd.Series):
        values = pd.concat([s.dropna().astype(str) for s in series], ignore_index=True).unique()
        self.labels = np.array(sorted(values), dtype=object)
        self.index = {e: i for i, e in enumerate(self.labels)}

    def codes(self, values: pd.Series) -> np.ndarray:
        return np.array([self.index.get(v, -1) if isinstance(v, str) else -1 for v in values], dtype=np.int32)


# ------------------------------------------------------------------------------------------------ devices


def _collapse_duplicates(records: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per device, in order of first appearance. Identical repeats collapse (their rows are summed);
    differing ones conflict. A device two S1SPs both hold conflicts even with equal slots: it cannot be written
    safely to either.

    Most devices appear once. Every device is its first record, taken once from `records` (which this consumes);
    only the repeated keys (usually a tiny share) are grouped, and their facts written over their first records."""
    n = len(records)
    keys = records["key"].to_numpy(dtype=np.uint64)
    repeated = _repeated(keys, records["key_ok"].to_numpy(dtype=bool))
    repeated_keys = keys[repeated]
    del keys  # a view of the records' column: it would keep 80 MB alive through the take below
    # The input-row trace keeps the records' own columns (the devices get copies of the kept rows).
    trace = {
        "source_file": records["source_file"],
        "source_row": records["source_row"].to_numpy(),
        "n_rows": records["n_rows"].to_numpy(),
    }
    keep = ~repeated
    multi = None
    if repeated.any():
        multi = records[repeated].assign(first=np.flatnonzero(repeated))  # in file order: each key's first record leads
        keep[multi.drop_duplicates("key")["first"].to_numpy()] = True
    kept = np.flatnonzero(keep)
    devices = _take_consuming(records, keep)
    del keep
    devices["rows"] = devices.pop("n_rows").astype(np.int32)  # int32 already: no copy (copy-on-write)
    dup_detail: dict[int, str] = {}  # device position -> why its records conflict (rare)
    finding = np.full(n, -1, dtype=np.int32)
    finding[kept] = np.arange(len(kept), dtype=np.int32)

    if multi is not None:
        grouped = multi.groupby("key", sort=False)  # keys in order of first appearance
        first = grouped["first"].min()
        at = np.searchsorted(kept, first.to_numpy())  # each repeated key's device position
        for name, values in (
            ("rows", grouped["n_rows"].sum()),
            ("invalid", grouped["invalid"].any()),
            ("fault", grouped["fault"].min()),
            ("conflict", grouped["conflict"].any()),
            ("extracted_at", grouped["extracted_at"].max()),
        ):
            column = devices[name].to_numpy().copy()
            column[at] = values.to_numpy(dtype=column.dtype)
            devices[name] = column
        content = ["key", "s1sp", "device_type", "mpxn_key", "ds", "ka"]
        distinct = multi.astype({"s1sp": str}).drop_duplicates(content)
        clash = pd.Index(distinct.loc[distinct["key"].duplicated(), "key"].unique())
        position = pd.Series(at, index=first.index)
        conflict = devices["conflict"].to_numpy().copy()
        conflict[position.reindex(clash).to_numpy()] = True
        devices["conflict"] = conflict
        # A clashing device is labelled with every S1SP that holds it (e.g. FOC+IOC); the others keep their own.
        involved = multi[multi["key"].isin(clash)]
        labels = involved.astype({"s1sp": str}).groupby("key")["s1sp"].agg(lambda v: "+".join(sorted(set(v))))
        old = devices["s1sp"].cat
        categories = sorted(set(old.categories) | set(labels))
        codes = np.array([categories.index(c) for c in old.categories] + [-1], dtype=np.int16)[old.codes.to_numpy()]
        if len(clash):
            where = (
                (file_names(involved["source_file"].astype(str)) + " row " + involved["source_row"].astype(str))
                .groupby(involved["key"])
                .agg("; ".join)
            )
            clash_at = position.reindex(clash).to_numpy()
            codes[clash_at] = [categories.index(label) for label in labels.reindex(clash)]
            dup_detail = dict(zip(clash_at.tolist(), ("records differ: " + where.reindex(clash)).tolist()))
        devices["s1sp"] = pd.Categorical.from_codes(codes, categories)
        # Every record of a repeated key traces to its device.
        finding[repeated] = position.reindex(repeated_keys).to_numpy()
    devices.attrs["dup_detail"] = dup_detail
    return devices, pd.DataFrame({**trace, "finding_id": finding}, copy=False)


def _repeated(keys: np.ndarray, key_ok: np.ndarray) -> np.ndarray:
    """Which records share their (readable) device id with another record. By sorting, not hashing: a hash table
    over 10 million keys costs several times the keys themselves."""
    ordered = keys[key_ok]
    ordered.sort()  # in place: np.sort would hold a second copy
    twice = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    return key_ok & _find(twice, keys)[1]


def _take_consuming(frame: pd.DataFrame, selector: np.ndarray) -> pd.DataFrame:
    """frame[selector] built column by column, emptying `frame` as it goes (peak: result + one column)."""
    columns = {}
    order = list(frame.columns)
    for name in consumption_order(frame):
        column = frame.pop(name)
        columns[name] = (
            column.iloc[selector].reset_index(drop=True)
            if selector.dtype != bool
            else column[selector].reset_index(drop=True)
        )
        del column
    return pd.DataFrame({name: columns.pop(name) for name in order}, copy=False)


# ------------------------------------------------------------------------------------------------ registrations


def _find(sorted_unique: np.ndarray, needles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slot, found) of each needle in a sorted array of distinct values; slot is 0 where not found.

    A binary search, so no hash table beside millions of keys. Millions of needles are searched in sorted order:
    NumPy then starts each search from the last answer, which is several times faster than random order."""
    if not len(sorted_unique):
        return np.zeros(len(needles), dtype=np.int64), np.zeros(len(needles), dtype=bool)
    slot = np.empty(len(needles), dtype=np.int64)
    found = np.empty(len(needles), dtype=bool)
    # In parts of FIND_PART needles: the sort and search temporaries of 10 million needles would be ~300 MB.
    for start in range(0, len(needles), FIND_PART):
        part = needles[start : start + FIND_PART]
        out = slot[start : start + FIND_PART]
        if len(part) > 100_000 and len(sorted_unique) > 1_000_000:  # beyond the CPU caches
            order = np.argsort(part)
            out[order] = np.searchsorted(sorted_unique, part[order])
            del order
        else:
            out[:] = np.searchsorted(sorted_unique, part)
        out[out == len(sorted_unique)] = 0
        np.equal(sorted_unique[out], part, out=found[start : start + FIND_PART])
    return slot, found


@dataclass
class Registration:
    count: np.ndarray  # distinct NOs effective on the as-of date (int8: 0, 1 or more, capped at 127)
    no_code: np.ndarray  # code into `no_ids` of the one registered NO (when count == 1)
    rejected: np.ndarray  # an RDP row for this MPxN was rejected
    detail: dict  # device position -> text, for ambiguous devices only
    no_ids: np.ndarray  # NO id per code
    pending_no: np.ndarray  # code of another NO whose registration starts within the policy's horizon, else NO_CODE
    # the first start day (days since 1970-01-01) of each device with pending_no set, in device order
    pending_day: np.ndarray
    no_rdp_cause: (
        np.ndarray
    )  # int8 per device: 0 never registered, 1 ended, 2 not yet effective (meaningful if count == 0)
    ended_pairs: (
        np.ndarray
    )  # sorted distinct (MPxN+fuel key) * width + NO code of registrations ended before the as-of date
    width: int


def _registration(devices: pd.DataFrame, rdp: RdpIndex, as_of: date, dev_fuel: np.ndarray) -> Registration:
    """Each device's registration on the as-of date, looked up in the RDP index by binary search."""
    n = len(devices)
    width = rdp.width
    dev_mpxn = devices["mpxn_key"].to_numpy(dtype=np.int64)
    dkey = reg_keys_of(dev_mpxn, dev_fuel)
    slot, found = _find(rdp.reg_keys, dkey)
    count = np.zeros(n, dtype=np.int8)  # 0, 1 or more (capped at 127)
    registered = np.full(n, NO_CODE, dtype=rdp.first_no.dtype)  # int16 unless there are 32k NO ids
    if len(rdp.counts):
        np.copyto(count, rdp.counts[slot], where=found)
        found &= count == 1
        np.copyto(registered, rdp.first_no[slot], where=found)
    del slot, found

    # A rejected row of the other fuel does not touch this device; one whose fuel is unreadable touches both.
    rejected = np.zeros(n, dtype=bool)
    if len(rdp.rejected_keys) or len(rdp.rejected_mpxns):
        rejected = (_find(rdp.rejected_keys, dkey)[1] | _find(rdp.rejected_mpxns, dev_mpxn)[1]) & (dkey >= 0)

    detail: dict[int, str] = {}  # device position -> text, for the few ambiguous devices
    many = np.flatnonzero(count > 1)
    if len(many):
        wanted = np.isin(rdp.shared_keys, dkey[many])
        names = (
            pd.Series(rdp.no_ids[rdp.shared_nos[wanted]])
            .groupby(rdp.shared_keys[wanted])
            .agg(lambda s: ", ".join(sorted(s)))
        )
        detail.update(
            zip(many.tolist(), ("registrations effective on " + str(as_of) + ": " + names.reindex(dkey[many])).tolist())
        )
    hit = np.flatnonzero(rejected)
    if len(hit):
        texts = "an RDP row for this MPxN was rejected: " + rdp.rejected_where.reindex(dev_mpxn[hit])
        detail.update(zip(hit.tolist(), texts.tolist()))

    # Pending change: another NO's registration starts within the horizon. Pairs are sorted by key then NO, so a
    # device's first pair and the one after it are enough to find an NO other than its registered one.
    pending_no = np.full(n, NO_CODE, dtype=registered.dtype)
    soon_pairs = rdp.soon_pairs
    if len(soon_pairs):
        # Only the few devices with a registration to come are looked at (no per-device temporaries at national scale).
        single = np.flatnonzero(_find(np.unique(soon_pairs // width), dkey)[1] & (count == 1) & (dkey >= 0))
        keys = dkey[single]
        at = np.searchsorted(soon_pairs, keys * width)
        at_next = np.minimum(at + 1, len(soon_pairs) - 1)
        first_no = (soon_pairs[at] % width).astype(np.int32)  # every key is there: `at` is its first pair
        next_no = np.where(
            (soon_pairs[at_next] // width == keys) & (at_next > at), soon_pairs[at_next] % width, NO_CODE
        ).astype(np.int32)
        mine = registered[single]
        pending_no[single] = np.where(first_no != mine, first_no, next_no)
    # The day each pending change takes effect: the earliest start of its (MPxN, NO) pair.
    pending = np.flatnonzero(pending_no >= 0)
    pending_day = np.zeros(len(pending), dtype=np.int32)  # for those devices only (a few at national scale)
    if len(pending):
        slot, _ = _find(rdp.soon_first_pairs, dkey[pending] * width + pending_no[pending])
        pending_day = rdp.soon_first_day[slot]
    # Why no registration is effective: the MPxN's registrations ended, or start later, or there are none.
    no_rdp_cause = np.zeros(n, dtype=np.int8)
    none = np.flatnonzero((count == 0) & (dkey >= 0))
    if len(none):
        for code, keys in ((1, rdp.ended_keys), (2, rdp.future_keys)):
            no_rdp_cause[none[_find(keys, dkey[none])[1]]] = code
    return Registration(
        count, registered, rejected, detail, rdp.no_ids, pending_no, pending_day, no_rdp_cause, rdp.ended_pairs, width
    )


# ------------------------------------------------------------------------------------------------ slots


def _slot_verdicts(ids: np.ndarray, expected_entity: np.ndarray, usage: str, certs: CertificateTable) -> np.ndarray:
    """Verdict codes (index into VERDICTS) for one slot of every device.

    All verdicts but OTHER_ORG are facts of the certificate alone, so they are settled once per certificate (a few
    dozen) and looked up; only the owner comparison is per device. A held certificate (untrusted issuer, no accepted
    policy OID, broken profile) stays HOLD whoever it names: it is evidence, not a candidate for correction."""
    V = VERDICTS.index
    n_certs = len(certs.error)  # the last entry is the empty slot's sentinel
    per_cert = _first_true(
        n_certs,
        [
            lambda: np.arange(n_certs) == n_certs - 1,
            lambda: certs.error,
            lambda: certs.hold >= 0,
            lambda: certs.role != ROLE_NETWORK_OPERATOR,
            lambda: certs.key_usage != {"DS": 0, "KA": 1}[usage],
            lambda: ~certs.in_validity,
            lambda: certs.revoked,
        ],
        [V("EMPTY"), V("UNDECODABLE"), V("HOLD"), V("NOT_NO_ROLE"), V("KEY_USAGE"), V("EXPIRED"), V("REVOKED")],
        default=V("OK"),
    )
    verdict = per_cert[ids]
    entity = certs.entity_code[ids]
    verdict[(verdict > V("HOLD")) & ((entity != expected_entity) | (entity < 0))] = V("OTHER_ORG")
    return verdict


def _first_true(n: int, conditions: list, codes: list[int], default: int) -> np.ndarray:
    """np.select over conditions made on demand (each a callable): the code of the first that holds. Built from the
    last to the first, so one mask exists at a time instead of all of them (each 10 MB at national scale)."""
    out = np.full(n, default, dtype=np.int8)
    for condition, code in zip(reversed(conditions), reversed(codes)):
        out[condition()] = code
    return out


def _dictionary(codes: np.ndarray, labels) -> pa.DictionaryArray:
    """Codes into `labels` -> a dictionary array with unique labels (negative codes are null)."""
    codes = np.asarray(codes, dtype=np.int64)
    inverse, unique = pd.factorize(pd.Series(list(labels), dtype=object).astype(str))
    inverse = np.append(inverse, -1)  # negative codes land on the trailing -1
    remapped = inverse[np.where(codes >= 0, codes, len(inverse) - 1)].astype(np.int32)
    return pa.DictionaryArray.from_arrays(pa.array(remapped, mask=remapped < 0), pa.array(list(unique), pa.string()))


# ------------------------------------------------------------------------------------------------ findings


def find_wrong_devices(
    records: pd.DataFrame,
    certs: pd.DataFrame,
    registrations: pd.DataFrame | RdpIndex,
    registry: pd.DataFrame,
    as_of: date,
    policy: Policy,
    quarantine: pd.DataFrame | None = None,
    device_types: tuple[DeviceType, ...] | None = None,
    enforces_validity: dict[str, bool] | None = None,
    progress: StageProgress = NO_PROGRESS,
) -> Detection:
    """Canonical device records (all S1SPs) -> one finding per device (category, cause, lock-out), and the trace of
    each input record to its finding. `device_types`: the case's types (a record's type code indexes them);
    `enforces_validity`: per S1SP, whether an expired NO certificate locks the NO out."""
    types = tuple(device_types or default_device_types().values())
    enforces_validity = enforces_validity or {}
    entities = Entities(certs["entity_id"], registry["expected_entity"])
    table = CertificateTable.from_frame(certs, entities)
    if isinstance(registrations, RdpIndex):  # indexed as the case was read (see ingest/case.py)
        rdp = registrations
    else:
        progress.stage("classifying: indexing RDP registrations")
        rdp = RdpIndex.build(registrations, as_of, policy)
    del registrations
    progress.stage("classifying: forming devices, collapsing duplicates")
    devices, input_rows = _collapse_duplicates(records)
    del records  # the caller handed them over: free them before the per-device arrays are built
    type_code = devices["device_type"].to_numpy(dtype=np.int8)
    type_fuel = np.array([FUEL_CODES.get(t.fuel, -1) for t in types] + [-1], dtype=np.int8)
    type_slots = np.array([t.no_slots for t in types] + [True], dtype=bool)  # unconfigured (-1) is INVALID_INPUT first
    dev_fuel = type_fuel[type_code]
    release_memory()  # the last step's temporaries: freed in the middle of the heap, kept until trimmed
    progress.stage("classifying: matching RDP registrations")
    reg = _registration(devices, rdp, as_of, dev_fuel)
    rdp.release()  # handed over, like the records: the caller's reference must not keep the arrays alive
    del rdp

    # Registry facts per registered NO code.
    registry_index = {no: i for i, no in enumerate(registry["network_operator_id"])}
    no_to_registry = np.array(
        [registry_index.get(no, -1) for no in reg.no_ids] + [-1], dtype=np.int16 if len(registry) < 2**15 else np.int32
    )
    reg_row = no_to_registry[reg.no_code]  # NO_CODE (-1) hits the trailing -1
    reg_entity = np.append(entities.codes(registry["expected_entity"]), -1).astype(np.int32)
    reg_fuel = np.append(registry["no_fuel"].map(FUEL_CODES).to_numpy(dtype=np.int8), -1)
    expected = reg_entity[reg_row]
    known_no = (reg_row >= 0) & (reg_fuel[reg_row] == dev_fuel)
    expected_for_slots = np.where(known_no, expected, -2)  # never equal to a certificate's entity

    release_memory()
    progress.stage("classifying: judging slot certificates")
    ds_ids = devices["ds"].to_numpy(dtype=np.int32)
    ka_ids = devices["ka"].to_numpy(dtype=np.int32)
    ds_v = _slot_verdicts(ds_ids, expected_for_slots, "DS", table)
    ka_v = _slot_verdicts(ka_ids, expected_for_slots, "KA", table)
    del expected_for_slots

    def either(*names):
        codes = [VERDICTS.index(v) for v in names]
        return np.isin(ds_v, codes) | np.isin(ka_v, codes)

    rdp_count = reg.count
    conditions = [
        lambda: devices["invalid"].to_numpy(dtype=bool),
        lambda: ~type_slots[type_code],
        lambda: devices["conflict"].to_numpy(dtype=bool),
        lambda: either("HOLD"),
        lambda: (rdp_count == 0) & ~reg.rejected,
        lambda: (rdp_count > 1) | reg.rejected,
        lambda: ~known_no,
        lambda: reg.pending_no >= 0,
        lambda: either(*WRONG_VERDICTS),
        lambda: either("EMPTY"),
        lambda: either("KEY_USAGE"),
        lambda: either("EXPIRED", "REVOKED"),
    ]
    category = _first_true(
        len(devices), conditions, list(range(len(conditions))), default=len(conditions)
    )  # the contract's precedence

    def category_is(name: str) -> np.ndarray:  # on demand: a dozen masks of 10 million would hold 120 MB
        return category == CATEGORIES.index(name)

    release_memory()
    progress.stage("classifying: causes, lock-outs and details")
    s1sp = devices["s1sp"]
    cause = _causes(
        category_is,
        devices,
        ds_v,
        ka_v,
        ds_ids,
        ka_ids,
        table,
        reg,
        reg_row,
        reg_entity,
        reg_fuel,
        no_to_registry,
        dev_fuel,
        s1sp,
    )
    locked = np.isin(category, [CATEGORIES.index(c) for c in LOCKED_OUT_CATEGORIES])
    expired_or_revoked = np.flatnonzero(category_is(Category.EXPIRED_OR_REVOKED.value))
    if len(expired_or_revoked):
        enforcing = np.array([bool(enforces_validity.get(label)) for label in s1sp.cat.categories] + [False])[
            s1sp.cat.codes.to_numpy()
        ]
        c = cause[expired_or_revoked]
        locked[expired_or_revoked] = (c == CAUSES.index("revoked")) | (
            (c == CAUSES.index("expired")) & enforcing[expired_or_revoked]
        )

    # Detail: a shared text per verdict pair or per category, plus per-device texts for the rare categories.
    texts = [f"NO_DS: {_VERDICT_TEXT[a]}; NO_KA: {_VERDICT_TEXT[b]}" for a in VERDICTS for b in VERDICTS]
    detail_code = ds_v.astype(np.int32) * len(VERDICTS) + ka_v
    for name, cause_name, text in (
        ("NO_RDP", "no_registration", f"no RDP registration for this MPxN and fuel (as of {as_of})"),
        ("NO_RDP", "registration_ended", f"the MPxN's registrations ended before {as_of}; none is effective"),
        (
            "NO_RDP",
            "registration_not_yet_effective",
            f"the MPxN's registration starts after {as_of}; none is effective yet",
        ),
    ):
        texts.append(text)
        detail_code[category_is(name) & (cause == CAUSES.index(cause_name))] = len(texts) - 1
    out_of_scope = np.flatnonzero(category_is(Category.OUT_OF_SCOPE.value))
    if len(out_of_scope):  # one text per device type, indexed by the type code
        base = len(texts)
        texts.extend(f"device type {t.name} carries no Network Operator anchor slots" for t in types)
        detail_code[out_of_scope] = base + type_code[out_of_scope]
    unknown = np.flatnonzero(category_is(Category.UNKNOWN_NO.value))
    if len(unknown):
        no_ids = np.append(reg.no_ids, None)[reg.no_code[unknown]]
        other_fuel = reg_row[unknown] >= 0
        per_device = np.where(
            other_fuel,
            "registered network operator " + no_ids.astype(str) + " serves the other fuel",
            "network operator " + no_ids.astype(str) + " is not in the NO registry",
        )
        detail_code[unknown] = _append_texts(texts, per_device)
    pending = np.flatnonzero(category_is(Category.PENDING_NO_CHANGE.value))
    if len(pending):
        current, incoming = (
            reg.no_ids[reg.no_code[pending]].astype(str),
            reg.no_ids[reg.pending_no[pending]].astype(str),
        )
        day = reg.pending_day[np.searchsorted(np.flatnonzero(reg.pending_no >= 0), pending)]
        on = (np.datetime64("1970-01-01") + day.astype("timedelta64[D]")).astype(str)
        horizon = (
            f" (within {policy.pending_change_horizon_days} days of {as_of}): held, never written to the outgoing NO"
        )
        detail_code[pending] = _append_texts(
            texts, "registration changes from " + current + " to " + incoming + " on " + on + horizon
        )
    reg.pending_no = reg.pending_day = reg.no_rdp_cause = reg.ended_pairs = (
        None  # settled: free them before the text columns are built
    )
    held = np.flatnonzero(category_is(Category.SECURITY_HOLD.value))
    if len(held):
        reasons = np.append(certs["hold_reason"].to_numpy(dtype=object), None)
        hold_ds = ds_v[held] == VERDICTS.index("HOLD")
        per_device = [
            f"{slot}: {reason}"
            for slot, reason in zip(
                np.where(hold_ds, "NO_DS", "NO_KA"), reasons[np.where(hold_ds, ds_ids[held], ka_ids[held])]
            )
        ]
        detail_code[held] = _append_texts(texts, per_device)
    for cat, values, fallback in (
        (
            Category.DUPLICATE_CONFLICT.value,
            devices.attrs.get("dup_detail", {}),
            "the same device appears with differing content",
        ),
        (Category.RDP_AMBIGUOUS.value, reg.detail, "more than one registration"),
    ):
        rows = np.flatnonzero(category_is(cat))
        if len(rows):
            detail_code[rows] = _append_texts(texts, [values.get(int(i), fallback) for i in rows])
    invalid = np.flatnonzero(category_is(Category.INVALID_INPUT.value))
    if len(invalid):
        detail_code[invalid] = _append_texts(texts, _invalid_detail(devices.iloc[invalid], quarantine))

    # Owners: per certificate id, an index into entity labels + "" (empty) + "UNDECODABLE".
    owner_labels = list(entities.labels) + ["", "UNDECODABLE", ""]
    empty_label, undecodable_label, none_label = (
        len(entities.labels),
        len(entities.labels) + 1,
        len(entities.labels) + 2,
    )
    owner_of = np.where(table.entity_code >= 0, table.entity_code, none_label).astype(np.int32)
    owner_of[table.error] = undecodable_label
    owner_of[-1] = empty_label

    source = devices["source_file"].astype("category")
    fingerprints = list(table.fingerprint)
    fingerprint_codes = np.arange(len(fingerprints), dtype=np.int32)  # id -1 (empty) reads the sentinel's last entry
    roles = table.role.astype(np.int16)
    columns = {
        "key": devices["key"].to_numpy(dtype=np.uint64),
        "key_ok": devices["key_ok"].to_numpy(dtype=bool),
        "device_raw": devices["device_raw"],
        "mpxn_key": devices["mpxn_key"].to_numpy(dtype=np.int64),
        "mpxn_raw": devices["mpxn_raw"],
        "s1sp": (s1sp.cat.codes.to_numpy(), list(s1sp.cat.categories)),
        "device_type": (type_code, [t.name for t in types]),
        "category": (category, list(CATEGORIES)),
        "cause": (cause, list(CAUSES)),
        "no_locked_out": locked,
        "slot_ds_owner": Lookup(ds_ids, owner_of, owner_labels),
        "slot_ka_owner": Lookup(ka_ids, owner_of, owner_labels),
        "expected_owner": (expected, list(entities.labels)),  # -1 where no registry row (reg_entity's last entry)
        "detail": (detail_code, texts),
        "registered_no": (reg.no_code, list(reg.no_ids)),
        "ds_fingerprint": Lookup(ds_ids, fingerprint_codes, fingerprints),
        "ka_fingerprint": Lookup(ka_ids, fingerprint_codes, fingerprints),
        "ds_verdict": (ds_v, list(VERDICTS)),
        "ka_verdict": (ka_v, list(VERDICTS)),
        "ds_role": Lookup(ds_ids, roles),
        "ka_role": Lookup(ka_ids, roles),
        "source_file": (source.cat.codes.to_numpy(), [Path(f).name for f in source.cat.categories]),
        "source_row": devices["source_row"].to_numpy(dtype=np.int32),
        "rows": devices["rows"].to_numpy(dtype=np.int32),
        "extracted_at": devices["extracted_at"].to_numpy(dtype="datetime64[ns]"),
    }
    files = input_rows["source_file"].astype("category")
    input_rows["source_file"] = files.cat.rename_categories([Path(f).name for f in files.cat.categories])
    detection = Detection(columns, input_rows)
    detection.security_holds = _security_holds(held, ds_v, ka_v, ds_ids, ka_ids, certs)
    detection.registry_gaps = _registry_gaps(category, reg, reg_row, type_slots[type_code])
    return detection


def _causes(
    category_is,
    devices,
    ds_v,
    ka_v,
    ds_ids,
    ka_ids,
    table: CertificateTable,
    reg: Registration,
    reg_row,
    reg_entity,
    reg_fuel,
    no_to_registry,
    dev_fuel,
    s1sp,
) -> np.ndarray:
    """The cause code (index into CAUSES) of every device; only the devices of each category are looked at."""
    C = CAUSES.index
    V = VERDICTS.index
    cause = np.zeros(len(ds_v), dtype=np.int16)

    def put(name: str, mask_or_rows, value) -> None:
        rows = np.flatnonzero(category_is(name)) if mask_or_rows is None else mask_or_rows
        cause[rows] = value

    rows = np.flatnonzero(category_is("INVALID_INPUT"))
    if len(rows):
        by_fault = np.array(
            [C(_INVALID_CAUSE_BY_FIELD.get(f, "invalid_other_row")) for f in FAULT_FIELDS]
            + [C("invalid_other_row")] * 2
        )
        fault = devices["fault"].to_numpy(dtype=np.int64)[rows]
        put("INVALID_INPUT", rows, by_fault[np.minimum(fault, len(FAULT_FIELDS) + 1)])
    put("OUT_OF_SCOPE", None, C("device_type_without_no_slots"))
    rows = np.flatnonzero(category_is("DUPLICATE_CONFLICT"))
    if len(rows):
        several = np.array(["+" in str(label) for label in s1sp.cat.categories] + [False])[
            s1sp.cat.codes.to_numpy()[rows]
        ]
        put("DUPLICATE_CONFLICT", rows, np.where(several, C("held_by_several_s1sps"), C("differing_records")))
    rows = np.flatnonzero(category_is("SECURITY_HOLD"))
    if len(rows):
        held_cert = np.where(ds_v[rows] == V("HOLD"), ds_ids[rows], ka_ids[rows])
        put("SECURITY_HOLD", rows, np.array([C(c) for c in HOLD_CAUSES])[table.hold[held_cert]])
    rows = np.flatnonzero(category_is("NO_RDP"))
    if len(rows):
        names = np.array([C("no_registration"), C("registration_ended"), C("registration_not_yet_effective")])
        put("NO_RDP", rows, names[reg.no_rdp_cause[rows]])
    rows = np.flatnonzero(category_is("RDP_AMBIGUOUS"))
    if len(rows):
        put("RDP_AMBIGUOUS", rows, np.where(reg.rejected[rows], C("rejected_rdp_row"), C("several_registrations")))
    rows = np.flatnonzero(category_is("UNKNOWN_NO"))
    if len(rows):
        put("UNKNOWN_NO", rows, np.where(reg_row[rows] >= 0, C("other_fuel_operator"), C("not_in_registry")))
    rows = np.flatnonzero(category_is("PENDING_NO_CHANGE"))
    if len(rows):
        incoming = reg_entity[no_to_registry[reg.pending_no[rows]]]
        holds = (incoming >= 0) & (
            (table.entity_code[ds_ids[rows]] == incoming) | (table.entity_code[ka_ids[rows]] == incoming)
        )
        put("PENDING_NO_CHANGE", rows, np.where(holds, C("slots_hold_incoming_no"), C("change_of_no_pending")))
    rows = np.flatnonzero(category_is("WRONG_NO"))
    if len(rows):
        put(
            "WRONG_NO",
            rows,
            _wrong_causes(
                rows, ds_v, ds_ids, ka_ids, table, reg, reg_entity, reg_fuel, no_to_registry, dev_fuel, devices
            ),
        )
    rows = np.flatnonzero(category_is("SLOT_EMPTY"))
    if len(rows):
        ds_empty, ka_empty = ds_v[rows] == V("EMPTY"), ka_v[rows] == V("EMPTY")
        put(
            "SLOT_EMPTY",
            rows,
            np.where(ds_empty & ka_empty, C("both_empty"), np.where(ds_empty, C("ds_empty"), C("ka_empty"))),
        )
    rows = np.flatnonzero(category_is("KEY_USAGE_MISMATCH"))
    if len(rows):
        ds_bad, ka_bad = ds_v[rows] == V("KEY_USAGE"), ka_v[rows] == V("KEY_USAGE")
        put(
            "KEY_USAGE_MISMATCH",
            rows,
            np.where(ds_bad & ka_bad, C("swapped"), np.where(ds_bad, C("ds_slot_holds_ka"), C("ka_slot_holds_ds"))),
        )
    rows = np.flatnonzero(category_is("EXPIRED_OR_REVOKED"))
    if len(rows):
        revoked = (ds_v[rows] == V("REVOKED")) | (ka_v[rows] == V("REVOKED"))
        put("EXPIRED_OR_REVOKED", rows, np.where(revoked, C("revoked"), C("expired")))
    return cause


def _wrong_causes(
    rows,
    ds_v,
    ds_ids,
    ka_ids,
    table: CertificateTable,
    reg: Registration,
    reg_entity,
    reg_fuel,
    no_to_registry,
    dev_fuel,
    devices,
) -> np.ndarray:
    """WRONG_NO causes, judged on the first wrong slot (DS before KA): a non-NO role; the MPxN's previous NO (a change
    of NO the S1SP never followed); another NO of the same fuel; the other fuel's NO; an entity no registry lists."""
    C = CAUSES.index
    ds_wrong = np.isin(ds_v[rows], [VERDICTS.index(v) for v in WRONG_VERDICTS])
    cert = np.where(ds_wrong, ds_ids[rows], ka_ids[rows])
    entity, role = table.entity_code[cert], table.role[cert]
    # Which fuels each entity is a registered NO for (bit 1: E, bit 2: G).
    serves = np.zeros(int(max(reg_entity.max(initial=-1), table.entity_code.max(initial=-1))) + 2, dtype=np.int8)
    for e, f in zip(reg_entity[:-1], reg_fuel[:-1]):
        if e >= 0 and f >= 0:
            serves[e] |= 1 << int(f)
    fuel = dev_fuel[rows]
    fuel_bit = np.where(fuel >= 0, 1 << np.maximum(fuel, 0), 0).astype(np.int8)
    served = serves[entity]  # entity -1 reads the trailing 0
    # The MPxN's previous NOs: (registration key, entity) pairs of registrations that ended before the as-of date, as
    # one int64 each (keys < 2**49, entity codes < width) and found by binary search: no hashing of 500 000 pairs.
    previous = np.zeros(len(rows), dtype=bool)
    if len(reg.ended_pairs):
        ended_entity = reg_entity[no_to_registry[(reg.ended_pairs % reg.width).astype(np.int64)]].astype(np.int64)
        known = ended_entity >= 0
        width = int(max(ended_entity.max(initial=0), entity.max(initial=0))) + 1
        dkey = reg_keys_of(devices["mpxn_key"].to_numpy(dtype=np.int64)[rows], fuel)
        if width < 2**14:
            ended = np.unique((reg.ended_pairs[known] // reg.width) * width + ended_entity[known])
            previous = _find(ended, dkey * width + entity)[1] & (entity >= 0) & (dkey >= 0)
        else:  # more organisations than the int64 packing allows: pairs as an index
            ended = pd.MultiIndex.from_arrays([reg.ended_pairs[known] // reg.width, ended_entity[known]])
            previous = pd.MultiIndex.from_arrays([dkey, entity.astype(np.int64)]).isin(ended) & (entity >= 0)
    return np.select(
        [role != ROLE_NETWORK_OPERATOR, previous, (served & fuel_bit) != 0, served != 0],
        [C("non_no_role"), C("previous_no_of_mpxn"), C("other_no_same_fuel"), C("other_fuel_no")],
        default=C("unregistered_entity"),
    )


def _security_holds(held, ds_v, ka_v, ds_ids, ka_ids, certs: pd.DataFrame) -> list[dict]:
    """The held certificates (issuer, serial, subject, fingerprint, why) with how many SECURITY_HOLD devices carry each."""
    if not len(held):
        return []
    hold = VERDICTS.index("HOLD")
    ids = np.concatenate([ds_ids[held][ds_v[held] == hold], ka_ids[held][ka_v[held] == hold]])
    counts = np.bincount(ids, minlength=len(certs))
    out = []
    for cid in np.flatnonzero(counts):
        row = certs.iloc[cid]
        out.append(
            {
                "issuer": row["issuer"],
                "serial": row["serial"],
                "subject": row["subject"],
                "fingerprint": row["fingerprint"],
                "cause": HOLD_CAUSES[int(row["hold"])],
                "reason": row["hold_reason"],
                "devices": int(counts[cid]),
            }
        )
    return sorted(out, key=lambda d: (-d["devices"], d["fingerprint"]))


def _registry_gaps(category: np.ndarray, reg: Registration, reg_row: np.ndarray, in_scope: np.ndarray) -> list[dict]:
    """RDP NO ids registered for in-scope devices but absent from the registry, with their device counts: every such
    device is UNKNOWN_NO (or worse) and silently never corrected unless someone adds the NO."""
    usable = (
        in_scope
        & (category != CATEGORIES.index(Category.INVALID_INPUT.value))
        & (reg.count == 1)
        & (reg_row < 0)
        & (reg.no_code >= 0)
    )
    counts = np.bincount(reg.no_code[usable], minlength=len(reg.no_ids))
    gaps = [{"network_operator_id": str(reg.no_ids[i]), "devices": int(counts[i])} for i in np.flatnonzero(counts)]
    return sorted(gaps, key=lambda d: (-d["devices"], d["network_operator_id"]))


def _arrow_text(series: pd.Series) -> pa.Array:
    values = series.array
    if isinstance(values, pd.arrays.ArrowExtensionArray):
        return pa.chunked_array(values._pa_array).combine_chunks().cast(pa.string())
    return pa.array(series.astype(object).where(series.notna(), None).tolist(), pa.string())


def _append_texts(texts: list[str], values) -> np.ndarray:
    """Add per-device texts to the dictionary (deduplicated) and return their codes."""
    uniques, inverse = np.unique(np.asarray(values, dtype=object).astype(str), return_inverse=True)
    base = len(texts)
    texts.extend(uniques.tolist())
    return (base + inverse).astype(np.int32)


def _invalid_detail(devices: pd.DataFrame, quarantine: pd.DataFrame | None) -> np.ndarray:
    fallback = "invalid input (see quarantine)"
    if quarantine is None or quarantine.empty:
        return np.full(len(devices), fallback, dtype=object)
    q = quarantine.assign(item=quarantine["field"] + ": " + quarantine["reason"])
    by_row = q.groupby(["file", "row"])["item"].agg("; ".join)
    keys = pd.MultiIndex.from_arrays(
        [devices["source_file"].astype(str).to_numpy(), devices["source_row"].to_numpy(dtype=np.int64)]
    )
    found = by_row.reindex(keys).to_numpy(dtype=object)
    # A device whose first row was clean but another of its rows was not: name the device, not a row.
    return np.where(pd.isna(found), "invalid input in another row of this device (see quarantine)", found)


_INVALID_CAUSE_BY_FIELD = {
    "device_id": "invalid_device_id",
    "device_type": "unconfigured_device_type",
    "mpxn": "invalid_mpxn",
    "no_ds_cert": "undecodable_certificate",
    "no_ka_cert": "undecodable_certificate",
    "cert": "undecodable_certificate",
    "extracted_at": "invalid_timestamp",
    "s1sp": "s1sp_mismatch",
    "slot": "unknown_slot",
}


# The findings columns wrong_owner_matrix reads.
OWNER_MATRIX_COLUMNS = [
    "category",
    "ds_verdict",
    "ka_verdict",
    "slot_ds_owner",
    "slot_ka_owner",
    "ds_role",
    "ka_role",
    "expected_owner",
]


def wrong_owner_matrix(findings: pd.DataFrame, labels: dict[str, str]) -> list[dict]:
    """WRONG_NO devices counted by (owner of the first wrong slot, registered owner), with readable labels."""
    wrong = findings[findings["category"] == Category.WRONG_NO.value]
    if wrong.empty:
        return []
    ds_wrong = wrong["ds_verdict"].isin(WRONG_VERDICTS).to_numpy()
    frame = pd.DataFrame(
        {
            "owner": np.where(ds_wrong, wrong["slot_ds_owner"].astype(str), wrong["slot_ka_owner"].astype(str)),
            "role": np.where(ds_wrong, wrong["ds_role"], wrong["ka_role"]),
            "verdict": np.where(ds_wrong, wrong["ds_verdict"].astype(str), wrong["ka_verdict"].astype(str)),
            "expected": wrong["expected_owner"].astype(str).to_numpy(),
        }
    )
    counts = frame.groupby(["owner", "role", "verdict", "expected"], dropna=False).size().reset_index(name="devices")
    rows = []
    for r in counts.itertuples(index=False):
        owner_label = labels.get(r.owner, r.owner or "no entity id")
        if r.role != ROLE_NETWORK_OPERATOR:
            owner_label += f" ({ROLE_NAMES.get(int(r.role), f'role {int(r.role):02X}')} certificate)"
        rows.append(
            {
                "wrong_owner": owner_label,
                "wrong_entity": r.owner,
                "wrong_role": int(r.role),
                "expected_owner": labels.get(r.expected, r.expected),
                "expected_entity": r.expected,
                "devices": int(r.devices),
            }
        )
    return sorted(rows, key=lambda d: (-d["devices"], d["wrong_owner"], d["expected_owner"]))

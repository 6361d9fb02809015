"""Case configuration: which extracts, RDP files, registry, PKI and policy make up one remediation case.

Paths in a case file are relative to that file. Every file the case reads is listed in `CaseConfig.files`
so a plan can record and later re-check their SHA-256 (a stale plan is refused).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from remediation.errors import ConfigError
from remediation.model import S1SPS

FORMATS = ("csv", "jsonl", "parquet")
LAYOUTS = ("wide", "slot_per_row")
TIMESTAMP_FORMATS = ("iso8601", "epoch_seconds", "epoch_millis")
EXTRACT_FIELDS_WIDE = ("s1sp", "device_id", "device_type", "mpxn", "no_ds_cert", "no_ka_cert", "extracted_at")
EXTRACT_FIELDS_SLOT = ("s1sp", "device_id", "device_type", "mpxn", "slot", "cert", "extracted_at")
RDP_FIELDS = ("mpxn", "fuel", "network_operator_id", "effective_from", "effective_to")


@dataclass(frozen=True)
class Dialect:
    """How one source lays out the canonical columns: format, column names, constants and value maps."""

    name: str
    path: Path
    format: str
    layout: str = "wide"
    columns: dict[str, str] = field(default_factory=dict)  # canonical -> source column (dotted path in JSON)
    constants: dict[str, str] = field(default_factory=dict)  # canonical -> value for every row
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # canonical -> {source value: canonical value}
    timestamp_format: str = "iso8601"
    date_format: str = "%Y-%m-%d"
    csv_delimiter: str = ","
    csv_encoding: str = "utf8"
    csv_newlines_in_values: bool = False  # quoted multi-line values (PEM in CSV); slower to parse


    def source_of(self, canonical: str) -> str:
        return self.columns.get(canonical, canonical)


@dataclass(frozen=True)
class ExtractSource:
    s1sp: str
    path: Path
    dialect: Dialect


@dataclass(frozen=True)
class RdpSource:
    path: Path
    dialect: Dialect


@dataclass(frozen=True)
class Policy:
    correct_key_usage_mismatch: bool = False  # plan KEY_USAGE_MISMATCH devices too (contract: off by default)
    rdp_effective_to_inclusive: bool = True  # a registration whose effective_to is the as-of date still counts


@dataclass(frozen=True)
class S1SPEndpoint:
    code: str
    base_url: str | None = None
    rate_per_second: float = 20.0
    concurrency: int = 4
    token_env: str | None = None  # name of the environment variable holding the bearer token
    mode: str = "automated"  # contract v2: "manual" = a change-request export for the S1SP, never an API write


S1SP_MODES = ("automated", "manual")


@dataclass(frozen=True)
class Governance:
    """The change-management references a plan is made under (case [governance], or plan --change-ref)."""

    change_record: str | None = None
    decision: str | None = None

    def as_dict(self) -> dict:
        return {"change_record": self.change_record, "decision": self.decision}


@dataclass(frozen=True)
class CaseConfig:
    name: str
    path: Path
    extracts: tuple[ExtractSource, ...]
    rdp: tuple[RdpSource, ...]
    registry_path: Path
    org_ca_paths: tuple[Path, ...]
    orl_path: Path | None
    policy: Policy
    endpoints: dict[str, S1SPEndpoint]
    as_of: date | None = None
    governance: Governance = field(default_factory=Governance)
    costs: dict | None = None  # [costs], validated by remediation.outcomes.costs (which owns its schema)

    @property
    def input_files(self) -> list[Path]:
        """Data the case reads: extracts and RDP."""
        return [e.path for e in self.extracts] + [r.path for r in self.rdp]

    @property
    def config_files(self) -> list[Path]:
        """Settings the case reads: case file, dialects, registry and the PKI trust material."""
        files = [self.path, *(e.dialect.path for e in self.extracts), *(r.dialect.path for r in self.rdp)]
        files += [self.registry_path, *self.org_ca_paths]
        if self.orl_path is not None:
            files.append(self.orl_path)
        return list(dict.fromkeys(files))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML ({exc})", file=str(path)) from None


def _existing(base: Path, value: Any, *, file: Path, field_name: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError("expected a path", file=str(file), field=field_name)
    path = (base / value).resolve()
    if not path.exists():
        raise ConfigError(f"{path} does not exist", file=str(file), field=field_name)
    return path


def load_dialect(path: Path, required: tuple[str, ...] | None = None) -> Dialect:
    raw = _read_toml(path)
    fmt = raw.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}", file=str(path), field="format")
    layout = raw.get("layout", "wide")
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}", file=str(path), field="layout")
    timestamps = raw.get("timestamps", {})
    ts_format = timestamps.get("extracted_at", "iso8601")
    if ts_format not in TIMESTAMP_FORMATS:
        raise ConfigError(f"must be one of {', '.join(TIMESTAMP_FORMATS)}", file=str(path), field="timestamps.extracted_at")
    csv = raw.get("csv", {})
    dialect = Dialect(
        name=raw.get("name", path.stem),
        path=path.resolve(),
        format=fmt,
        layout=layout,
        columns={str(k): str(v) for k, v in raw.get("columns", {}).items()},
        constants={str(k): str(v) for k, v in raw.get("constants", {}).items()},
        values={str(k): {str(a): str(b) for a, b in v.items()} for k, v in raw.get("values", {}).items()},
        timestamp_format=ts_format,
        date_format=raw.get("dates", {}).get("format", "%Y-%m-%d"),
        csv_delimiter=csv.get("delimiter", ","),
        csv_encoding=csv.get("encoding", "utf8"),
        csv_newlines_in_values=bool(csv.get("newlines_in_values", False)),
    )
    if required is None:
        required = EXTRACT_FIELDS_SLOT if layout == "slot_per_row" else EXTRACT_FIELDS_WIDE
    for canonical in required:
        if canonical in dialect.constants:
            continue
        if canonical == "effective_to":
            continue  # an RDP source may omit it: every registration is then open-ended
        if canonical not in dialect.columns:
            raise ConfigError("no source column or constant for this canonical column", file=str(path), field=f"columns.{canonical}")
    if len(dialect.csv_delimiter) != 1:
        raise ConfigError("must be a single character", file=str(path), field="csv.delimiter")
    return dialect


def canonical_dialect() -> Dialect:
    """CSV with the canonical column names: what the simulator exports and what tests write."""
    return Dialect(name="canonical", path=Path(__file__), format="csv", layout="wide", columns={c: c for c in EXTRACT_FIELDS_WIDE})


def load_case(path: str | Path) -> CaseConfig:
    path = Path(path).resolve()
    raw = _read_toml(path)
    base = path.parent
    inputs = raw.get("inputs", {})
    extracts = []
    for i, item in enumerate(inputs.get("extract", [])):
        where = f"inputs.extract[{i}]"
        s1sp = item.get("s1sp")
        if s1sp not in S1SPS:
            raise ConfigError(f"s1sp must be one of {', '.join(S1SPS)}", file=str(path), field=f"{where}.s1sp")
        dialect = load_dialect(_existing(base, item.get("dialect"), file=path, field_name=f"{where}.dialect"))
        extracts.append(ExtractSource(s1sp, _existing(base, item.get("path"), file=path, field_name=f"{where}.path"), dialect))
    if not extracts:
        raise ConfigError("no [[inputs.extract]] entries", file=str(path), field="inputs.extract")
    rdp = []
    for i, item in enumerate(inputs.get("rdp", [])):
        where = f"inputs.rdp[{i}]"
        dialect = load_dialect(_existing(base, item.get("dialect"), file=path, field_name=f"{where}.dialect"), RDP_FIELDS)
        rdp.append(RdpSource(_existing(base, item.get("path"), file=path, field_name=f"{where}.path"), dialect))
    if not rdp:
        raise ConfigError("no [[inputs.rdp]] entries", file=str(path), field="inputs.rdp")
    pki = raw.get("pki", {})
    cas = pki.get("organisation_ca", [])
    cas = [cas] if isinstance(cas, str) else cas
    if not cas:
        raise ConfigError("at least one Organisation CA certificate is required", file=str(path), field="pki.organisation_ca")
    org_ca_paths = tuple(_existing(base, c, file=path, field_name="pki.organisation_ca") for c in cas)
    orl = pki.get("orl")
    orl_path = _existing(base, orl, file=path, field_name="pki.orl") if orl else None
    pol = raw.get("policy", {})
    unknown = set(pol) - set(Policy.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown policy setting(s): {', '.join(sorted(unknown))}", file=str(path), field="policy")
    policy = Policy(**{k: bool(v) for k, v in pol.items()})
    endpoints = {}
    for code, ep in raw.get("s1sp", {}).items():
        if code not in S1SPS:
            raise ConfigError(f"unknown S1SP {code!r}", file=str(path), field=f"s1sp.{code}")
        endpoints[code] = S1SPEndpoint(
            code=code,
            base_url=ep.get("base_url"),
            rate_per_second=float(ep.get("rate_per_second", 20.0)),
            concurrency=int(ep.get("concurrency", 4)),
            token_env=ep.get("token_env"),
            mode=_s1sp_mode(ep.get("mode", "automated"), path, code),
        )
    as_of = raw.get("case", {}).get("as_of")
    if as_of is not None and not isinstance(as_of, date):
        raise ConfigError("must be a TOML date (YYYY-MM-DD, unquoted)", file=str(path), field="case.as_of")
    return CaseConfig(
        name=raw.get("case", {}).get("name", path.stem),
        path=path,
        extracts=tuple(extracts),
        rdp=tuple(rdp),
        registry_path=_existing(base, inputs.get("registry"), file=path, field_name="inputs.registry"),
        org_ca_paths=org_ca_paths,
        orl_path=orl_path,
        policy=policy,
        endpoints=endpoints,
        as_of=as_of,
        governance=_governance(raw.get("governance", {}), path),
        costs=_costs_table(raw.get("costs"), path),
    )


def _s1sp_mode(value: Any, path: Path, code: str) -> str:
    if value not in S1SP_MODES:
        raise ConfigError(f"must be one of {', '.join(S1SP_MODES)}", file=str(path), field=f"s1sp.{code}.mode")
    return value


def _governance(raw: Any, path: Path) -> Governance:
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", file=str(path), field="governance")
    unknown = set(raw) - {"change_record", "decision"}
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}", file=str(path), field="governance")
    for key, value in raw.items():
        if not isinstance(value, str) or not value.strip() or len(value) > 200:
            raise ConfigError("must be a non-empty text of at most 200 characters", file=str(path), field=f"governance.{key}")
    return Governance(change_record=raw.get("change_record"), decision=raw.get("decision"))


def _costs_table(raw: Any, path: Path) -> dict | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError("must be a table", file=str(path), field="costs")
    return raw

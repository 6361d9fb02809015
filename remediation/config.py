"""Case configuration: which extracts, RDP files, registry, PKI, S1SPs, device types and policy make up one case.

Every file is validated against a pydantic v2 schema before anything reads data: unknown keys are refused
(`[polcy]`, `rate_per_sec`, `pth =` are typos, never silently ignored), types are strict (`"false"` is not a bool,
`"fast"` not a number, a TOML datetime not a date), ranges are checked, and paths are resolved relative to the
file that names them and must be an existing regular file (no directory, no symlink loop). Every violation is a
`ConfigError` (exit 2) naming the file and the dotted field, on one line.

Paths in a case file are relative to that file. Every file the case reads is listed in `CaseConfig.config_files` /
`input_files` so a plan can record and later re-check their SHA-256 (a stale plan is refused).
"""

from __future__ import annotations

import codecs
import json
import re
import tomllib
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator, model_validator

from remediation.errors import ConfigError

FORMATS = ("csv", "jsonl", "parquet")
LAYOUTS = ("wide", "slot_per_row")
TIMESTAMP_FORMATS = ("iso8601", "epoch_seconds", "epoch_millis")
S1SP_MODES = ("automated", "manual")
EXTRACT_FIELDS_WIDE = ("s1sp", "device_id", "device_type", "mpxn", "no_ds_cert", "no_ka_cert", "extracted_at")
EXTRACT_FIELDS_SLOT = ("s1sp", "device_id", "device_type", "mpxn", "slot", "cert", "extracted_at")
RDP_FIELDS = ("mpxn", "fuel", "network_operator_id", "effective_from", "effective_to")
CANONICAL_FIELDS = frozenset(EXTRACT_FIELDS_WIDE + EXTRACT_FIELDS_SLOT + RDP_FIELDS)

# The contract's default device types: which fuel's NO certificates each carries, or none (OUT_OF_SCOPE).
DEFAULT_DEVICE_TYPES: dict[str, tuple[str | None, bool]] = {
    "ESME": ("E", True),
    "GSME": ("G", True),
    "GPF": ("G", True),
    "CHF": (None, False),
    "PPMID": (None, False),
    "IHD": (None, False),
    "HCALCS": (None, False),
}

_NAME = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
_CODE = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$")]  # S1SP codes become file names and "A+B" labels
_OID = Annotated[str, StringConstraints(pattern=r"^[0-2](\.(0|[1-9][0-9]*))+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ------------------------------------------------------------------------------------------------ dialect schema


class _Timestamps(_Strict):
    extracted_at: Literal["iso8601", "epoch_seconds", "epoch_millis"] = "iso8601"


class _Dates(_Strict):
    format: _NAME = "%Y-%m-%d"


class _Csv(_Strict):
    delimiter: Annotated[str, StringConstraints(min_length=1, max_length=1)] = ","
    encoding: _NAME = "utf8"
    newlines_in_values: bool = False  # quoted multi-line values (PEM in CSV); slower to parse

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding {value!r}") from None
        return value


class _DialectFile(_Strict):
    name: _NAME | None = None
    format: Literal["csv", "jsonl", "parquet"]
    layout: Literal["wide", "slot_per_row"] = "wide"
    columns: dict[str, _NAME] = {}
    constants: dict[str, str] = {}
    values: dict[str, dict[str, str]] = {}
    timestamps: _Timestamps = _Timestamps()
    dates: _Dates = _Dates()
    csv: _Csv = _Csv()

    @field_validator("columns", "constants", "values")
    @classmethod
    def _canonical_keys(cls, value: dict) -> dict:
        unknown = sorted(set(value) - CANONICAL_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown canonical column(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(CANONICAL_FIELDS))})"
            )
        return value


# ------------------------------------------------------------------------------------------------ case schema


class _CaseSection(_Strict):
    name: _NAME | None = None
    as_of: date | None = None  # a TOML date (2026-11-20, unquoted); a datetime is refused
    trust_policy: _NAME | None = None  # the authority branch owns its contents; here only the path


class _Source(_Strict):
    path: _NAME
    dialect: _NAME


class _ExtractEntry(_Source):
    s1sp: _CODE


class _Inputs(_Strict):
    registry: _NAME
    extract: list[_ExtractEntry] = Field(min_length=1)
    rdp: list[_Source] = Field(min_length=1)


class _Pki(_Strict):
    organisation_ca: list[_NAME] = Field(min_length=1)
    orl: _NAME | None = None
    accepted_policy_oids: list[_OID] = Field(min_length=1)

    @field_validator("organisation_ca", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class Policy(_Strict):
    """What detection judges and which findings a plan corrects (recorded in plan.json)."""

    correct_key_usage_mismatch: bool = False  # plan KEY_USAGE_MISMATCH devices too (contract: off by default)
    correct_slot_empty: bool = False  # plan SLOT_EMPTY devices too
    correct_revoked: bool = False  # plan EXPIRED_OR_REVOKED devices whose cause is `revoked`
    rdp_effective_to_inclusive: bool = True  # a registration whose effective_to is the as-of date still counts
    pending_change_horizon_days: int = Field(28, ge=0, le=3650)
    min_replacement_validity_days: int = Field(180, ge=0, le=36500)
    mprn_min_length: int = Field(6, ge=1, le=13)  # 13 digits at most: MPxN keys stay inside int64 arithmetic
    mprn_max_length: int = Field(10, ge=1, le=13)

    @model_validator(mode="after")
    def _lengths(self) -> Policy:
        if self.mprn_min_length > self.mprn_max_length:
            raise ValueError("mprn_min_length is greater than mprn_max_length")
        return self


class _S1SP(_Strict):
    base_url: _NAME | None = None
    rate_per_second: float = Field(20.0, gt=0, allow_inf_nan=False)
    concurrency: int = Field(4, ge=1, le=1024)
    token_env: _NAME | None = None  # name of the environment variable holding the bearer token
    mode: Literal["automated", "manual"] = "automated"
    enforces_validity: bool = False  # the S1SP refuses to use an expired NO certificate: expired locks the NO out

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """An S1SP endpoint is an http(s) URL with a host: anything else was sealed into plans and failed only when
        apply first dialled it."""
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host (got {value!r})")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials (the bearer token comes from token_env)")
        return value


class _DeviceType(_Strict):
    fuel: Literal["E", "G"] | None = None
    no_slots: bool  # true: the type carries Network Operator anchor slots (NO_DS, NO_KA)

    @model_validator(mode="after")
    def _fuel_when_slots(self) -> _DeviceType:
        if self.no_slots and self.fuel is None:
            raise ValueError('a device type with NO slots needs fuel = "E" or "G"')
        return self


class Governance(_Strict):
    """The change-management references a plan is made under (case [governance])."""

    change_record: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None
    decision: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = None

    def as_dict(self) -> dict:
        return {"change_record": self.change_record, "decision": self.decision}


class _CaseFile(_Strict):
    case: _CaseSection = _CaseSection()
    inputs: _Inputs
    pki: _Pki
    policy: Policy = Policy()
    s1sp: dict[_CODE, _S1SP] = Field(min_length=1)
    device_types: dict[Annotated[str, StringConstraints(pattern=r"^[A-Z0-9_]+$")], _DeviceType] = {}
    governance: Governance = Governance()
    costs: dict[str, Any] | None = None  # remediation.outcomes owns its schema; carried as given

    @model_validator(mode="after")
    def _extract_s1sps_configured(self) -> _CaseFile:
        if (
            len(set(DEFAULT_DEVICE_TYPES) | set(self.device_types)) > 100
        ):  # device type codes are int8 in the device tables
            raise _FieldError("device_types", "more than 100 device types")
        for i, item in enumerate(self.inputs.extract):
            if item.s1sp not in self.s1sp:
                raise _FieldError(
                    f"inputs.extract[{i}].s1sp",
                    f"S1SP {item.s1sp!r} has no [s1sp.{item.s1sp}] table (configured: {', '.join(self.s1sp)})",
                )
        return self


# ------------------------------------------------------------------------------------------------ registry schema


class _Operator(_Strict):
    id: _NAME
    name: _NAME | None = None
    fuel: Literal["E", "G"]
    entity_id: _NAME
    ds_certificate: _NAME
    ka_certificate: _NAME


class _RegistryFile(_Strict):
    network_operator: list[_Operator] = Field(min_length=1)


# ------------------------------------------------------------------------------------------------ typed settings


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
class S1SPEndpoint:
    code: str
    base_url: str | None = None
    rate_per_second: float = 20.0
    concurrency: int = 4
    token_env: str | None = None  # name of the environment variable holding the bearer token
    mode: str = "automated"  # automated: waves through its API; manual: a listing and change requests only
    enforces_validity: bool = False


@dataclass(frozen=True)
class DeviceType:
    name: str
    fuel: str | None  # "E" / "G"; None for a type without NO slots
    no_slots: bool  # carries NO_DS / NO_KA anchor slots (else OUT_OF_SCOPE)


def default_device_types() -> dict[str, DeviceType]:
    return {name: DeviceType(name, fuel, slots) for name, (fuel, slots) in DEFAULT_DEVICE_TYPES.items()}


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
    accepted_policy_oids: tuple[str, ...] = ()
    device_types: dict[str, DeviceType] = field(default_factory=default_device_types)
    trust_policy_path: Path | None = None
    governance: Governance = Governance()
    costs: dict | None = None  # [costs] as given (None when absent); its schema belongs to the cost model

    @property
    def s1sp_codes(self) -> tuple[str, ...]:
        """The case's S1SP codes, in the order the case file lists them."""
        return tuple(self.endpoints)

    @property
    def input_files(self) -> list[Path]:
        """Data the case reads: extracts and RDP."""
        return [e.path for e in self.extracts] + [r.path for r in self.rdp]

    @property
    def config_files(self) -> list[Path]:
        """Settings the case reads: case file, dialects, registry, the PKI trust material and the trust policy."""
        files = [self.path, *(e.dialect.path for e in self.extracts), *(r.dialect.path for r in self.rdp)]
        files += [self.registry_path, *self.org_ca_paths]
        if self.orl_path is not None:
            files.append(self.orl_path)
        if self.trust_policy_path is not None:
            files.append(self.trust_policy_path)
        return list(dict.fromkeys(files))


# ------------------------------------------------------------------------------------------------ reading


class _FieldError(ValueError):
    """Raised inside a model validator to name a field other than the model's own location."""

    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field_name, self.message = field_name, message


_MESSAGES = {
    "extra_forbidden": "unknown setting (not part of the schema; a typo?)",
    "missing": "required setting is missing",
    "date_type": "must be a TOML date (YYYY-MM-DD, unquoted; not a date-time, not a string)",
}


def _dotted(loc: tuple) -> str:
    """('inputs', 'extract', 0, 's1sp') -> inputs.extract[0].s1sp; an odd key (a typo with a newline, a quote) is
    shown quoted and escaped, so the message stays one line."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = str(part) if re.fullmatch(r"[\w+-]+", str(part)) else json.dumps(str(part))
        out += f".{name}" if out else name
    return out


def _validated(model: type[BaseModel], raw: dict, path: Path):
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, _FieldError):
            raise ConfigError(ctx_error.message, file=str(path), field=ctx_error.field_name) from None
        message = _MESSAGES.get(error["type"], error["msg"].removeprefix("Value error, "))
        if error["type"] not in _MESSAGES and not isinstance(error.get("input"), (dict, list)):
            shown = repr(error["input"])
            message += f" (got {shown[:80] + '…' if len(shown) > 80 else shown})"
        more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
        raise ConfigError(message + more, file=str(path), field=_dotted(error["loc"]) or None) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a file", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML ({exc})", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read ({exc.strerror or exc})", file=str(path)) from None


def existing_file(base: Path, value: str, *, file: Path, field_name: str) -> Path:
    """`value` resolved against `base`: an existing regular file reached without a symlink loop, else ConfigError."""
    try:
        path = (base / value).resolve(strict=True)
    except FileNotFoundError:
        raise ConfigError(f"{base / value} does not exist", file=str(file), field=field_name) from None
    except (RuntimeError, OSError) as exc:  # a symlink loop: RuntimeError up to 3.12, OSError (ELOOP) after
        raise ConfigError(f"{base / value} cannot be resolved ({exc})", file=str(file), field=field_name) from None
    if not path.is_file():
        raise ConfigError(f"{path} is not a regular file", file=str(file), field=field_name)
    return path


def load_dialect(path: Path, required: tuple[str, ...] | None = None) -> Dialect:
    raw = _validated(_DialectFile, _read_toml(path), path)
    dialect = Dialect(
        name=raw.name or path.stem,
        path=path.resolve(),
        format=raw.format,
        layout=raw.layout,
        columns=dict(raw.columns),
        constants=dict(raw.constants),
        values={k: dict(v) for k, v in raw.values.items()},
        timestamp_format=raw.timestamps.extracted_at,
        date_format=raw.dates.format,
        csv_delimiter=raw.csv.delimiter,
        csv_encoding=raw.csv.encoding,
        csv_newlines_in_values=raw.csv.newlines_in_values,
    )
    if required is None:
        required = EXTRACT_FIELDS_SLOT if raw.layout == "slot_per_row" else EXTRACT_FIELDS_WIDE
    for canonical in required:
        if canonical in dialect.constants:
            continue
        if canonical == "effective_to":
            continue  # an RDP source may omit it: every registration is then open-ended
        if canonical not in dialect.columns:
            raise ConfigError(
                "no source column or constant for this canonical column", file=str(path), field=f"columns.{canonical}"
            )
    return dialect


def canonical_dialect() -> Dialect:
    """CSV with the canonical column names: what the simulator exports and what tests write."""
    return Dialect(
        name="canonical", path=Path(__file__), format="csv", layout="wide", columns={c: c for c in EXTRACT_FIELDS_WIDE}
    )


def load_registry_file(path: Path) -> list[dict]:
    """The NO registry's entries, validated; certificate paths resolved and checked against the registry's folder."""
    path = Path(path)
    raw = _validated(_RegistryFile, _read_toml(path), path)
    entries = []
    for i, op in enumerate(raw.network_operator):
        entry = op.model_dump()
        for key in ("ds_certificate", "ka_certificate"):
            entry[key] = existing_file(path.parent, entry[key], file=path, field_name=f"network_operator[{i}].{key}")
        entries.append(entry)
    return entries


def load_case(path: str | Path) -> CaseConfig:
    path = Path(path)
    try:
        path = path.resolve(strict=True)
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except (RuntimeError, OSError) as exc:
        raise ConfigError(f"cannot be resolved ({exc})", file=str(path)) from None
    raw = _validated(_CaseFile, _read_toml(path), path)
    base = path.parent

    def file_at(value: str, where: str) -> Path:
        return existing_file(base, value, file=path, field_name=where)

    def dialect_at(value: str, where: str, required: tuple[str, ...] | None = None) -> Dialect:
        dialect_path = file_at(value, where)
        try:
            return load_dialect(dialect_path, required)
        except ConfigError as exc:
            if exc.field is not None:
                raise
            # The named file is not a dialect at all (not TOML, not UTF-8): say which setting named it.
            raise ConfigError(
                f"{dialect_path} is not a dialect file: {str(exc).split(': ', 1)[-1]}", file=str(path), field=where
            ) from None

    extracts = []
    for i, item in enumerate(raw.inputs.extract):
        where = f"inputs.extract[{i}]"
        dialect = dialect_at(item.dialect, f"{where}.dialect")
        extracts.append(ExtractSource(item.s1sp, file_at(item.path, f"{where}.path"), dialect))
    rdp = []
    for i, item in enumerate(raw.inputs.rdp):
        where = f"inputs.rdp[{i}]"
        rdp.append(
            RdpSource(file_at(item.path, f"{where}.path"), dialect_at(item.dialect, f"{where}.dialect", RDP_FIELDS))
        )
    device_types = default_device_types()
    for name, spec in raw.device_types.items():
        device_types[name] = DeviceType(name, spec.fuel, spec.no_slots)
    return CaseConfig(
        name=raw.case.name or path.stem,
        path=path,
        extracts=tuple(extracts),
        rdp=tuple(rdp),
        registry_path=file_at(raw.inputs.registry, "inputs.registry"),
        org_ca_paths=tuple(file_at(c, f"pki.organisation_ca[{i}]") for i, c in enumerate(raw.pki.organisation_ca)),
        orl_path=file_at(raw.pki.orl, "pki.orl") if raw.pki.orl else None,
        policy=raw.policy,
        endpoints={code: S1SPEndpoint(code=code, **ep.model_dump()) for code, ep in raw.s1sp.items()},
        as_of=raw.case.as_of,
        accepted_policy_oids=tuple(dict.fromkeys(raw.pki.accepted_policy_oids)),
        device_types=device_types,
        trust_policy_path=file_at(raw.case.trust_policy, "case.trust_policy") if raw.case.trust_policy else None,
        governance=raw.governance,
        costs=dict(raw.costs) if raw.costs is not None else None,
    )

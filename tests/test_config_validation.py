"""Validated configuration (issue 13): every mistake in the case, dialect or registry file is exit 2 with one line
naming the file and the dotted field, never a traceback, never silently ignored or coerced. The real CLI runs on a
private copy of the sample case's configuration (the sample data is linked, not copied: none of these reach it)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from remediation.cli import main
from tests.support import REPO


@pytest.fixture()
def case_dir(tmp_path) -> Path:
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "sample_data").symlink_to(REPO / "sample_data", target_is_directory=True)
    return tmp_path


def sub(file: str, old: str, new: str, count: int = 1):
    """An edit of one configuration file: replace `old` (which must be there) by `new`."""

    def edit(root: Path) -> None:
        path = root / "configs" / file
        text = path.read_text()
        assert old in text, f"{old!r} not in {file}"
        path.write_text(text.replace(old, new, count))

    return edit


def append(file: str, text: str):
    def edit(root: Path) -> None:
        path = root / "configs" / file
        path.write_text(path.read_text() + text)

    return edit


def write_bytes(file: str, data: bytes):
    def edit(root: Path) -> None:
        (root / "configs" / file).write_bytes(data)

    return edit


def point_registry_at(make):
    """inputs.registry names a path `make(root)` creates (a directory, a symlink loop ...)."""

    def edit(root: Path) -> None:
        target = make(root)
        sub("sample.toml", 'registry = "registry.toml"', f'registry = "{os.path.relpath(target, root / "configs")}"')(
            root
        )

    return edit


def symlink_loop(root: Path) -> Path:
    a, b = root / "configs" / "loop-a.toml", root / "configs" / "loop-b.toml"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def directory(root: Path) -> Path:
    (root / "configs" / "a-directory.toml").mkdir()
    return root / "configs" / "a-directory.toml"


def non_utf8_extract_header(root: Path) -> None:
    data = (REPO / "sample_data" / "moc_anchor_slots.csv").read_bytes()
    (root / "moc.csv").write_bytes(b"SP_CODE\xff\xfe," + data.split(b",", 1)[1])
    sub("sample.toml", 'path = "../sample_data/moc_anchor_slots.csv"', 'path = "../moc.csv"')(root)


# (edit, file named, field named (None: the file alone is the point), words the message must hold)
CASES = {
    # strict types: no string -> bool, no string -> number, no datetime for a date
    "bool_as_string": (
        sub("sample.toml", "correct_key_usage_mismatch = false", 'correct_key_usage_mismatch = "false"'),
        "sample.toml",
        "policy.correct_key_usage_mismatch",
        "valid boolean",
    ),
    "rate_as_word": (
        sub("sample.toml", "rate_per_second = 400", 'rate_per_second = "fast"'),
        "sample.toml",
        "s1sp.MOC.rate_per_second",
        "number",
    ),
    "as_of_datetime": (
        sub("sample.toml", "as_of = 2026-11-20", "as_of = 2026-11-20T10:00:00"),
        "sample.toml",
        "case.as_of",
        "date",
    ),
    "as_of_quoted": (
        sub("sample.toml", "as_of = 2026-11-20", 'as_of = "2026-11-20"'),
        "sample.toml",
        "case.as_of",
        "date",
    ),
    "enforces_validity_as_string": (
        sub("sample.toml", "enforces_validity = true", 'enforces_validity = "yes"'),
        "sample.toml",
        "s1sp.MOC.enforces_validity",
        "boolean",
    ),
    "horizon_as_float": (
        sub("sample.toml", "pending_change_horizon_days = 28", "pending_change_horizon_days = 28.5"),
        "sample.toml",
        "policy.pending_change_horizon_days",
        "integer",
    ),
    # ranges and choices
    "concurrency_negative": (
        sub("sample.toml", "concurrency = 8", "concurrency = -3"),
        "sample.toml",
        "s1sp.MOC.concurrency",
        "greater than or equal to 1",
    ),
    "rate_zero": (
        sub("sample.toml", "rate_per_second = 400", "rate_per_second = 0"),
        "sample.toml",
        "s1sp.MOC.rate_per_second",
        "greater than 0",
    ),
    "base_url_ftp": (
        sub("sample.toml", 'base_url = "http://127.0.0.1:8701"', 'base_url = "ftp://127.0.0.1:8701"'),
        "sample.toml",
        "s1sp.MOC.base_url",
        "http:// or https:// URL",
    ),
    "base_url_not_a_url": (
        sub("sample.toml", 'base_url = "http://127.0.0.1:8701"', 'base_url = "not a url"'),
        "sample.toml",
        "s1sp.MOC.base_url",
        "http:// or https:// URL",
    ),
    "base_url_with_credentials": (
        sub("sample.toml", 'base_url = "http://127.0.0.1:8701"', 'base_url = "http://ops:secret@127.0.0.1:8701"'),
        "sample.toml",
        "s1sp.MOC.base_url",
        "credentials",
    ),
    "mode_unknown": (
        sub("sample.toml", '[s1sp.MOC]\nmode = "automated"', '[s1sp.MOC]\nmode = "auto"'),
        "sample.toml",
        "s1sp.MOC.mode",
        "automated",
    ),
    "mprn_lengths_crossed": (
        sub("sample.toml", "mprn_min_length = 6", "mprn_min_length = 11"),
        "sample.toml",
        "policy",
        "greater than mprn_max_length",
    ),
    "policy_oid_malformed": (
        sub("sample.toml", '"1.2.826.0.1.8641679.1.2.1.4"', '"SMKI test"'),
        "sample.toml",
        "pki.accepted_policy_oids[0]",
        "pattern",
    ),
    "extract_s1sp_not_configured": (
        sub("sample.toml", 's1sp = "IOC"', 's1sp = "XOC"'),
        "sample.toml",
        "inputs.extract[2].s1sp",
        "XOC",
    ),
    "s1sp_code_with_plus": (sub("sample.toml", "[s1sp.IOC]", '[s1sp."I+OC"]'), "sample.toml", "s1sp.I+OC", "pattern"),
    # unknown keys and sections are typos, never ignored
    "unknown_section": (sub("sample.toml", "[policy]", "[polcy]"), "sample.toml", "polcy", "unknown setting"),
    "unknown_key": (
        sub("sample.toml", "rate_per_second = 400", "rate_per_sec = 400"),
        "sample.toml",
        "s1sp.MOC.rate_per_sec",
        "unknown setting",
    ),
    "unknown_key_in_extract": (
        sub(
            "sample.toml", 'path = "../sample_data/moc_anchor_slots.csv"', 'pth = "../sample_data/moc_anchor_slots.csv"'
        ),
        "sample.toml",
        "inputs.extract[0]",
        "",
    ),
    "non_table_value": (
        append("sample.toml", '\n[device_types]\nESME = "E"\n'),
        "sample.toml",
        "device_types.ESME",
        "dictionary",
    ),
    "missing_required": (
        sub("sample.toml", 'registry = "registry.toml"\n', ""),
        "sample.toml",
        "inputs.registry",
        "missing",
    ),
    # paths: relative to the naming file, existing, a regular file, no loop
    "path_missing": (
        sub("sample.toml", 'registry = "registry.toml"', 'registry = "no-such.toml"'),
        "sample.toml",
        "inputs.registry",
        "does not exist",
    ),
    "path_directory": (point_registry_at(directory), "sample.toml", "inputs.registry", "not a regular file"),
    "path_symlink_loop": (point_registry_at(symlink_loop), "sample.toml", "inputs.registry", "cannot be resolved"),
    "trust_policy_missing": (
        sub("sample.toml", 'name = "sample"', 'name = "sample"\ntrust_policy = "people.toml"'),
        "sample.toml",
        "case.trust_policy",
        "does not exist",
    ),
    # files that are not UTF-8 TOML (or not the kind of file the setting names)
    "dialect_is_a_csv": (
        sub("sample.toml", 'dialect = "dialects/moc.toml"', 'dialect = "../sample_data/moc_anchor_slots.csv"'),
        "sample.toml",
        "inputs.extract[0].dialect",
        "is not a dialect file",
    ),
    "case_not_utf8": (write_bytes("sample.toml", b'[case]\nname = "caf\xe9"\n'), "sample.toml", None, "not UTF-8"),
    "case_not_toml": (write_bytes("sample.toml", b"this is: not toml\n"), "sample.toml", None, "not valid TOML"),
    # dialects
    "dialect_unknown_encoding": (
        sub("dialects/moc.toml", 'encoding = "utf8"', 'encoding = "utf-9"'),
        "moc.toml",
        "csv.encoding",
        "unknown text encoding",
    ),
    "dialect_unknown_format": (
        sub("dialects/moc.toml", 'format = "csv"', 'format = "xlsx"'),
        "moc.toml",
        "format",
        "csv",
    ),
    "dialect_long_delimiter": (
        sub("dialects/moc.toml", 'delimiter = ","', 'delimiter = ";;"'),
        "moc.toml",
        "csv.delimiter",
        "at most 1",
    ),
    "dialect_unknown_column": (
        sub("dialects/moc.toml", 'extracted_at = "EXTRACT_TS"', 'extracted_at = "EXTRACT_TS"\nmpxm = "X"'),
        "moc.toml",
        "columns",
        "mpxm",
    ),
    "dialect_unknown_section": (
        append("dialects/moc.toml", '\n[timestamp]\nextracted_at = "iso8601"\n'),
        "moc.toml",
        "timestamp",
        "unknown setting",
    ),
    "dialect_value_map_not_text": (
        sub("dialects/moc.toml", 'E = "ESME"', "E = 1"),
        "moc.toml",
        "values.device_type.E",
        "string",
    ),
    # registry
    "registry_non_table_entry": (
        write_bytes("registry.toml", b'network_operator = ["x"]\n'),
        "registry.toml",
        "network_operator[0]",
        "",
    ),
    "registry_bad_fuel": (
        sub("registry.toml", 'fuel = "E"', 'fuel = "X"'),
        "registry.toml",
        "network_operator[0].fuel",
        "'E' or 'G'",
    ),
    "registry_unknown_key": (
        sub("registry.toml", 'fuel = "E"', 'fuel = "E"\nentity = "x"'),
        "registry.toml",
        "network_operator[0].entity",
        "unknown",
    ),
    "registry_id_not_text": (
        sub("registry.toml", 'id = "EELC"', "id = 10"),
        "registry.toml",
        "network_operator[0].id",
        "string",
    ),
    "registry_certificate_missing": (
        sub("registry.toml", "eelc-ds.pem", "nope.pem"),
        "registry.toml",
        "network_operator[0].ds_certificate",
        "does not exist",
    ),
    # an extract whose CSV header is not in the dialect's encoding
    "extract_header_not_utf8": (non_utf8_extract_header, "moc.csv", None, "utf8"),
}


@pytest.mark.parametrize("name", CASES)
def test_configuration_mistake_is_one_line_exit_2(case_dir, name):
    edit, file, field, words = CASES[name]
    edit(case_dir)
    result = CliRunner().invoke(
        main, ["detect", "--config", str(case_dir / "configs" / "sample.toml"), "--out", str(case_dir / "out")]
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert re.search(rf"{re.escape(file)}\b", line), line
    if field is not None:
        assert f"field '{field}" in line, line
    assert words.lower() in line.lower(), line


def test_the_sample_configuration_is_valid_and_typed():
    from remediation.config import load_case

    case = load_case(REPO / "configs" / "sample.toml")
    assert case.s1sp_codes == ("MOC", "FOC", "IOC")
    assert case.endpoints["MOC"].mode == "automated" and case.endpoints["MOC"].enforces_validity is True
    assert case.policy.pending_change_horizon_days == 28 and case.policy.min_replacement_validity_days == 180
    assert case.accepted_policy_oids == ("1.2.826.0.1.8641679.1.2.1.4",)
    assert {name: (t.fuel, t.no_slots) for name, t in case.device_types.items()} == {
        "ESME": ("E", True),
        "GSME": ("G", True),
        "GPF": ("G", True),
        "CHF": (None, False),
        "PPMID": (None, False),
        "IHD": (None, False),
        "HCALCS": (None, False),
    }
    assert (
        isinstance(case.endpoints["MOC"].rate_per_second, float) and case.governance.change_record == "CHG-SAMPLE-0001"
    )
    assert (
        case.costs["fixed_shared"] == 30157
    )  # the MP107 working group's Requirement 2 figure (validated by outcomes/costs.py)


def test_optional_sections_are_carried(case_dir):
    from remediation.config import load_case

    (case_dir / "configs" / "people.toml").write_text("# the authority branch's trust policy\n")
    sample = case_dir / "configs" / "sample.toml"
    sample.write_text(
        sample.read_text().split("\n[governance]")[0]
    )  # the sample's own [governance] and [costs], replaced below
    append(
        "sample.toml",
        '\n[governance]\nchange_record = "CHG-1234"\ndecision = "MP107 R2 go"\n[costs]\nper_device = 1.5\n',
    )(case_dir)
    sub("sample.toml", 'name = "sample"', 'name = "sample"\ntrust_policy = "people.toml"')(case_dir)
    case = load_case(case_dir / "configs" / "sample.toml")
    assert case.trust_policy_path == (case_dir / "configs" / "people.toml").resolve()
    assert case.trust_policy_path in case.config_files
    assert (case.governance.change_record, case.governance.decision, case.costs) == (
        "CHG-1234",
        "MP107 R2 go",
        {"per_device": 1.5},
    )


def test_planner_name_is_stripped_and_required(tmp_path):
    from tests.support import CaseFiles, mpan, no_cert

    case = CaseFiles(
        tmp_path, trust_policy=None
    )  # an unsigned plan is named by its --by label (a signed one by its key)
    m = mpan()
    case.device("00-1D-00-00-00-00-00-01", m, no_cert("BBBB", "DS"), no_cert("BBBB", "KA"))
    case.register(m, "AAAA")
    config = case.write()
    runner = CliRunner()
    ok = runner.invoke(main, ["plan", "--config", str(config), "--out", str(tmp_path / "p"), "--by", "  alice \t"])
    assert ok.exit_code == 0, ok.output
    import json

    assert json.loads((tmp_path / "p" / "plan.json").read_text())["planned_by"] == "alice"
    blank = runner.invoke(main, ["plan", "--config", str(config), "--out", str(tmp_path / "p2"), "--by", "   "])
    assert blank.exit_code == 2 and "--by" in blank.stderr


# ------------------------------------------------------------------------------------------------ any value, anywhere

from datetime import date, datetime  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def toml_value(v) -> str:
    """A tiny TOML writer (inline tables and arrays) for the property test below; tomllib only reads."""
    import json

    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return {float("inf"): "inf", float("-inf"): "-inf"}.get(v, "nan" if v != v else repr(v))
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(x)}" for k, x in v.items()) + "}"


SCALARS = st.one_of(
    st.text(max_size=12),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.booleans(),
    st.dates(),
    st.datetimes(),
    st.just("../sample_data/moc_anchor_slots.csv"),
    st.just("dialects"),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


@pytest.mark.parametrize("file", ["sample.toml", "dialects/moc.toml", "dialects/foc.toml", "registry.toml"])
@settings(
    max_examples=int(os.environ.get("CONFIG_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_value_anywhere_is_accepted_or_one_config_error(tmp_path_factory, file, data):
    """Replace any setting of a sample configuration file (or add a key) with any TOML value: loading either returns
    typed settings or raises ConfigError on one line naming a file; nothing else escapes (no TypeError, KeyError or
    traceback)."""
    import tomllib

    from remediation.config import load_case, load_registry_file
    from remediation.errors import ConfigError

    root = tmp_path_factory.mktemp("prop")
    shutil.copytree(REPO / "configs", root / "configs")
    (root / "sample_data").symlink_to(REPO / "sample_data", target_is_directory=True)
    raw = tomllib.loads((root / "configs" / file).read_text())
    where = data.draw(st.sampled_from([p for p in _paths(raw) if p]))
    value = data.draw(VALUES)
    node = raw
    for part in where[:-1]:
        node = node[part]
    if data.draw(st.booleans()) and isinstance(node, dict):
        node[data.draw(st.text(min_size=1, max_size=8))] = value  # a key nobody defined
    else:
        node[where[-1]] = value
    (root / "configs" / file).write_text("".join(f"{toml_value(k)} = {toml_value(v)}\n" for k, v in raw.items()))
    try:
        if file == "registry.toml":
            entries = load_registry_file(root / "configs" / file)
            assert entries and all(e["fuel"] in ("E", "G") and e["ds_certificate"].is_file() for e in entries)
        else:
            case = load_case(root / "configs" / "sample.toml")
            assert case.s1sp_codes and all(
                isinstance(ep.concurrency, int) and ep.concurrency >= 1 for ep in case.endpoints.values()
            )
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("/"), str(exc)  # one line, naming the file first

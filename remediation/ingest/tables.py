"""Stream a source file in batches with its dialect's columns renamed to the canonical names.

Structural faults (empty file, missing column, truncated or malformed line, wrong column type) stop the run with
an `InputError` naming the file, the row where known and the field: an extract that is not what its dialect
says cannot be trusted row by row. Faults inside well-formed rows are the caller's business (quarantine).
"""

from __future__ import annotations

import csv
import io
import queue
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from remediation.config import Dialect
from remediation.errors import InputError

# Arrow's streaming readers read ahead up to 32 blocks on their I/O thread, so the block size sets most of a national
# read's transient memory: measured on 1.5 million MOC rows, 16 MB blocks peaked at 0.95 GB, 4 MB at 0.44 GB. Small
# blocks, then, and GROUP_BLOCKS parsed blocks handed on as one batch, so the per-batch Python work is amortised as
# over 32 MB. On 10M devices 8 blocks a batch read MOC and FOC in 21 s where 4 took 24 s, at the same peak (the read
# is not detect's peak: classification is); 16 gained nothing more and raised the read's own peak by 80 MB.
CSV_BLOCK_BYTES = 4 << 20
JSON_BLOCK_BYTES = 4 << 20
GROUP_BLOCKS = 8
# Parquet is read in batches of rows: a string column read from a dictionary page is decoded in full, so certificate
# text is ~2 kB a row (NO_DS + NO_KA); 16 Ki rows keep a batch near 32 MB.
PARQUET_BATCH_ROWS = 16_384
# Canonical columns that carry epoch numbers rather than text when the dialect says so.
_EPOCH_FORMATS = ("epoch_seconds", "epoch_millis")


@dataclass(frozen=True)
class Batch:
    first_row: int  # 1-based number of the batch's first data row in its file
    table: pa.Table  # canonical column names
    bytes_done: int = 0  # estimate of the file's bytes read once this batch is in (for progress, never for results)


def _string_like(t: pa.DataType) -> bool:
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (pa.types.is_dictionary(t) and pa.types.is_string(t.value_type))
    )


def _wanted_sources(dialect: Dialect, canonical: tuple[str, ...]) -> dict[str, str]:
    """canonical -> source name, for the canonical columns the file itself must supply."""
    return {
        c: dialect.source_of(c)
        for c in canonical
        if c not in dialect.constants and (c in dialect.columns or c != "effective_to")
    }


def _with_constants(table: pa.Table, dialect: Dialect, canonical: tuple[str, ...]) -> pa.Table:
    for c in canonical:
        if c in dialect.constants:
            table = table.append_column(c, pa.repeat(pa.scalar(dialect.constants[c], pa.string()), table.num_rows))
        elif c not in table.column_names:
            table = table.append_column(c, pa.nulls(table.num_rows, pa.string()))
    return table.select(list(canonical))


def iter_batches(path: Path, dialect: Dialect, canonical: tuple[str, ...]) -> Iterator[Batch]:
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    if size == 0:
        raise InputError("file is empty (0 bytes): the extract is missing or was cut off", file=str(path))
    sources = _wanted_sources(dialect, canonical)
    reader = {"csv": _csv, "jsonl": _jsonl, "parquet": _parquet}[dialect.format]
    row = 1
    estimate = _bytes_estimate(path, dialect.format, size)
    group = 1 if dialect.format == "parquet" else GROUP_BLOCKS  # Parquet batches are sized in rows already
    for n, table in enumerate(prefetched(grouped(reader(path, dialect, sources), group)), 1):
        yield Batch(row, _with_constants(table, dialect, canonical), estimate(n, row - 1 + table.num_rows))
        row += table.num_rows


def file_size(path) -> int:
    """Bytes in `path`, 0 when it cannot be read: for progress totals (the reader reports a missing file itself)."""
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0


def _bytes_estimate(path: Path, fmt: str, size: int):
    """(batches so far, rows so far) -> bytes of the file read: CSV and JSON lines are read in blocks of a known
    size, Parquet's row count is in its footer. An estimate for progress only; the reader never relies on it."""
    if fmt == "parquet":
        try:
            total_rows = pq.read_metadata(path).num_rows
        except (pa.ArrowInvalid, OSError):  # the reader reports an unreadable file with its own message
            total_rows = 0
        return lambda n, rows: min(size, size * rows // total_rows) if total_rows else 0
    block = (CSV_BLOCK_BYTES if fmt == "csv" else JSON_BLOCK_BYTES) * GROUP_BLOCKS  # a batch is a group of blocks
    return lambda n, rows: min(size, n * block)


_DONE = object()


def grouped(tables: Iterator[pa.Table], size: int) -> Iterator[pa.Table]:
    """Consecutive tables `size` at a time, each group as one table (its columns chunked, not copied)."""
    group: list[pa.Table] = []
    try:
        for table in tables:
            group.append(table)
            if len(group) == size:
                yield pa.concat_tables(group)
                group = []
        if group:
            yield pa.concat_tables(group)
    finally:
        close = getattr(tables, "close", None)
        if close is not None:
            close()


def prefetched(items: Iterator, depth: int = 2) -> Iterator:
    """`items`, produced on a second thread up to `depth` ahead. Arrow parses a block with the GIL released, so
    the next blocks are parsed while the caller checks this one: without it the two take turns on the cores. An
    exception in the producer is raised here, in order; a caller that stops early stops the producer."""
    pending: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item) -> bool:
        while not stop.is_set():
            try:
                pending.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - raised again on the consuming thread
            offer((_DONE, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a reader's files are closed on this thread, the only one that ran it

    thread = threading.Thread(target=produce, name="batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            item, failure = pending.get()
            if failure is not None:
                raise failure
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()


# ------------------------------------------------------------------------------------------------ CSV


def _csv_header(path: Path, dialect: Dialect) -> list[str]:
    encoding = (
        "utf-8-sig" if dialect.csv_encoding.replace("-", "").lower() in ("utf8", "utf8sig") else dialect.csv_encoding
    )
    try:
        with open(path, encoding=encoding, newline="") as fh:
            first = fh.readline()
    except UnicodeDecodeError as exc:
        raise InputError(
            f"header line is not {dialect.csv_encoding} text ({exc.reason} at byte {exc.start}); check the dialect's csv.encoding",
            file=str(path),
            row=1,
        ) from None
    if not first.strip():
        raise InputError("file has no header line", file=str(path))
    return next(csv.reader(io.StringIO(first), delimiter=dialect.csv_delimiter))


def _csv(path: Path, dialect: Dialect, sources: dict[str, str]) -> Iterator[pa.Table]:
    header = _csv_header(path, dialect)
    for canonical, source in sources.items():
        if source not in header:
            raise InputError(
                f"column '{source}' (canonical {canonical}) is missing from the header", file=str(path), field=source
            )
    bad_rows: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "skip"

    reader_opts = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, encoding=dialect.csv_encoding)
    parse_opts = pacsv.ParseOptions(
        delimiter=dialect.csv_delimiter,
        newlines_in_values=dialect.csv_newlines_in_values,
        invalid_row_handler=on_invalid,
    )
    convert_opts = pacsv.ConvertOptions(
        include_columns=list(sources.values()),
        column_types={s: pa.string() for s in sources.values()},
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    rename = {s: c for c, s in sources.items()}
    rows_so_far = 0
    try:
        stream = pacsv.open_csv(path, read_options=reader_opts, parse_options=parse_opts, convert_options=convert_opts)
        for batch in stream:
            if bad_rows:
                _raise_bad_csv_row(path, header, bad_rows[0])
            rows_so_far += batch.num_rows
            table = pa.Table.from_batches([batch])
            yield table.rename_columns([rename[n] for n in table.column_names])
        if bad_rows:
            _raise_bad_csv_row(path, header, bad_rows[0])
    except pa.ArrowInvalid as exc:
        raise InputError(
            f"unreadable CSV near data row {rows_so_far + 1} ({_first_line(exc)})", file=str(path)
        ) from None


def _raise_bad_csv_row(path: Path, header: list[str], row: pacsv.InvalidRow) -> None:
    missing = header[row.actual_columns] if row.actual_columns < len(header) else None
    where = f"line {row.number}" if row.number is not None else "a line"
    detail = f"; first missing field '{missing}'" if missing else ""
    raise InputError(
        f"{where} has {row.actual_columns} of {row.expected_columns} columns (truncated or malformed){detail}",
        file=str(path),
        field=missing,
    )


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:200]


# ------------------------------------------------------------------------------------------------ JSON lines


def _json_schema(dialect: Dialect, sources: dict[str, str]) -> pa.Schema:
    """Nested explicit schema from dotted paths, so no column's type is guessed from its first block."""
    tree: dict = {}
    for canonical, source in sources.items():
        node = tree
        parts = source.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        epoch = canonical == "extracted_at" and dialect.timestamp_format in _EPOCH_FORMATS
        node[parts[-1]] = pa.int64() if epoch else pa.string()

    def to_type(node) -> pa.DataType:
        return node if isinstance(node, pa.DataType) else pa.struct([pa.field(k, to_type(v)) for k, v in node.items()])

    return pa.schema([pa.field(k, to_type(v)) for k, v in tree.items()])


def _leaf(table: pa.Table, dotted: str) -> pa.ChunkedArray:
    parts = dotted.split(".")
    column = table.column(parts[0])
    if len(parts) > 1:
        column = pc.struct_field(column, parts[1:])
    return column


_JSON_ROW = re.compile(r"in row (\d+)")


def _jsonl(path: Path, dialect: Dialect, sources: dict[str, str]) -> Iterator[pa.Table]:
    parse_opts = pajson.ParseOptions(
        explicit_schema=_json_schema(dialect, sources), unexpected_field_behavior="ignore", newlines_in_values=False
    )
    rows_so_far = 0
    try:
        stream = pajson.open_json(
            path, read_options=pajson.ReadOptions(block_size=JSON_BLOCK_BYTES), parse_options=parse_opts
        )
        for batch in stream:
            table = pa.Table.from_batches([batch])
            rows_so_far += table.num_rows
            yield pa.table({c: _leaf(table, s) for c, s in sources.items()})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        message = _first_line(exc)
        m = _JSON_ROW.search(message)
        row = rows_so_far + int(m.group(1)) + 1 if m else None
        field = next((s for s in sources.values() if "/" + s.replace(".", "/") in message), None)
        raise InputError(f"unreadable JSON line ({message})", file=str(path), row=row, field=field) from None


# ------------------------------------------------------------------------------------------------ Parquet


def _parquet(path: Path, dialect: Dialect, sources: dict[str, str]) -> Iterator[pa.Table]:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file ({_first_line(exc)})", file=str(path)) from None
    schema = pf.schema_arrow
    for canonical, source in sources.items():
        if source not in schema.names:
            raise InputError(f"column '{source}' (canonical {canonical}) is missing", file=str(path), field=source)
        t = schema.field(source).type
        epoch = canonical == "extracted_at" and dialect.timestamp_format in _EPOCH_FORMATS
        ok = (
            pa.types.is_integer(t)
            if epoch
            else (_string_like(t) or (canonical == "extracted_at" and pa.types.is_timestamp(t)))
        )
        if not ok:
            expected = "an integer" if epoch else "text"
            raise InputError(f"column '{source}' has type {t}, expected {expected}", file=str(path), field=source)
    rename = {s: c for c, s in sources.items()}
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(sources.values())):
            table = pa.Table.from_batches([batch])
            columns = {}
            for name in table.column_names:
                col = table.column(name)
                if pa.types.is_dictionary(col.type):
                    col = col.cast(col.type.value_type)
                if pa.types.is_large_string(col.type):
                    col = col.cast(pa.string())
                columns[rename[name]] = col
            yield pa.table(columns)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"Parquet data unreadable ({_first_line(exc)})", file=str(path)) from None

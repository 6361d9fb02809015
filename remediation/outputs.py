"""Writing result files: atomically (temp file, then rename), so a crash never leaves half a findings file; and the
one reader of the JSON documents they write."""

from __future__ import annotations

import json
import os
import queue
import secrets
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from remediation.errors import InputError, RemediationError


def prepare_dir(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output directory ({exc.strerror})", file=str(path)) from None
    return path


@contextmanager
def _atomic(path: Path, mode: str = "wb"):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if "b" not in mode else {})) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EncodedJSON(str):
    """A value already encoded as JSON text: write_json's records may be these (written as they are)."""


def write_json(path: Path, value: Any, records: str | None = None) -> Path:
    """`value` as indented JSON. `records`: the key of a long list of objects (a worklist's devices), written one
    compact object a line: the same JSON, made by the C encoder (an indented dump is pure Python, ~10x slower for
    hundreds of thousands of objects) and still one device per line for a reader."""
    if records is None:
        text = json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False)
    else:
        token = f"@@{records}-{secrets.token_hex(8)}@@"
        head = json.dumps({**value, records: token}, indent=2, sort_keys=False, ensure_ascii=False)
        encode = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
        items = ",\n".join(
            "    " + (item if isinstance(item, EncodedJSON) else encode(item)) for item in value[records]
        )
        text = head.replace(json.dumps(token), "[\n" + items + "\n  ]" if items else "[]", 1)
    with _atomic(path, "w") as fh:
        fh.write(text + "\n")
    return path


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    # Strip pandas' metadata blob: it records library versions, which would make identical results differ by bytes.
    table = table.replace_schema_metadata(None)
    with _atomic(path) as fh:
        pq.write_table(table, fh, compression="zstd")
    return path


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    with _atomic(path, "w") as fh:
        frame.to_csv(fh, index=False, lineterminator="\n")
    return path


def write_text(path: Path, text: str) -> Path:
    with _atomic(Path(path), "w") as fh:
        fh.write(text)
    return Path(path)


def _csv_ready(table: pa.Table) -> pa.Table:
    """The table as the CSV writer handles fast: dictionaries decoded, UTC timestamps as text. (Arrow formats a
    time-zone-aware timestamp about thirty times slower than a naive one: most of a national findings.csv.)"""
    columns = []
    for column in table.columns:
        t = column.type
        if pa.types.is_dictionary(t):
            column = column.cast(t.value_type)
        elif pa.types.is_timestamp(t) and t.tz in ("UTC", "+00:00", "Z"):
            column = pc.binary_join_element_wise(column.cast(pa.timestamp(t.unit)).cast(pa.string()), "Z", "")
        columns.append(column)
    return pa.table(columns, names=table.column_names)


class _Sink:
    """One output file written on its own thread from a queue of tables (at most two waiting). Arrow's writers
    release the GIL, so the Parquet and CSV encoders and the producer of the tables run on the cores at once."""

    def __init__(self, name: str, open_writer, prepare=lambda table: table):
        self.pending: queue.Queue = queue.Queue(maxsize=2)
        self.failure: BaseException | None = None
        self._open, self._prepare = open_writer, prepare
        self.thread = threading.Thread(target=self._loop, name=name)
        self.thread.start()

    def _loop(self) -> None:
        writer = None
        try:
            while (table := self.pending.get()) is not None:
                table = self._prepare(table)
                writer = writer or self._open(table.schema)
                writer.write_table(table)
        except BaseException as exc:  # noqa: BLE001 - raised again on the producing thread
            self.failure = exc
            while self.pending.get() is not None:  # drain so the producer never blocks
                pass
        finally:
            if writer is not None:
                writer.close()

    def put(self, table: pa.Table) -> None:
        self.pending.put(table)

    def close(self) -> None:
        self.pending.put(None)
        self.thread.join()


def write_tables(parquet_path: Path, csv_path: Path | None, tables, csv_rows=lambda table: table) -> Path:
    """A stream of Arrow tables to Parquet and, when asked, CSV too, making each table once; each file is
    encoded on its own thread while the next table is made, so memory stays flat and both cores are busy.
    `csv_rows` picks which rows of each table the CSV gets (e.g. only the devices that need attention)."""
    with _atomic(Path(parquet_path)) as pfh, _atomic(Path(csv_path)) if csv_path else _null() as cfh:
        sinks = [_Sink("parquet-writer", lambda schema: pq.ParquetWriter(pfh, schema, compression="zstd"))]
        if cfh is not None:
            sinks.append(
                _Sink("csv-writer", lambda schema: pacsv.CSVWriter(cfh, schema), lambda t: _csv_ready(csv_rows(t)))
            )
        try:
            for table in tables:
                table = table.replace_schema_metadata(None)
                for sink in sinks:
                    sink.put(table)
                if any(sink.failure for sink in sinks):
                    break
        finally:
            for sink in sinks:
                sink.close()
        for sink in sinks:
            if sink.failure is not None:
                raise sink.failure
    return Path(parquet_path)


@contextmanager
def _null():
    yield None


def read_json_object(path: str | Path, what: str | None = None, refusal: type[RemediationError] = InputError):
    """A JSON document the tool wrote. Absent: None, or (when `what` names the directory it belongs in) an input error
    naming the file (exit 2). Not UTF-8 JSON, or not an object: `refusal` naming the file - an input error, or a
    safety refusal where a garbled file means the evidence was changed."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if what is None:
            return None
        raise InputError(f"not found (is this a {what} directory?)", file=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read ({exc.strerror})", file=str(path)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refused(refusal, path, f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _refused(refusal, path, f"not a JSON object (found {type(value).__name__})")
    return value


def _refused(refusal: type[RemediationError], path: Path, reason: str) -> RemediationError:
    return refusal(reason, file=str(path)) if issubclass(refusal, InputError) else refusal(f"{path}: {reason}")

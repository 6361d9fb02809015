"""Writing result files: atomically (temp file, then rename), so a crash never leaves half a findings file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from remediation.errors import InputError


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


def write_json(path: Path, value: Any) -> Path:
    with _atomic(path, "w") as fh:
        fh.write(json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
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


def write_table_parquet(path: Path, table: pa.Table) -> Path:
    """An Arrow table as Parquet, dictionary columns kept (small files, fast writes at national scale)."""
    with _atomic(Path(path)) as fh:
        pq.write_table(table.replace_schema_metadata(None), fh, compression="zstd")
    return Path(path)


def write_table_csv(path: Path, table: pa.Table, batch_rows: int = 1_000_000) -> Path:
    """An Arrow table as CSV, written in batches with dictionary columns decoded, so memory stays flat."""
    import pyarrow.csv as pacsv

    plain = pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in table.schema])
    with _atomic(Path(path)) as fh:
        with pacsv.CSVWriter(fh, plain) as writer:
            for batch in table.to_batches(max_chunksize=batch_rows):
                columns = [c.cast(plain.field(i).type) if pa.types.is_dictionary(c.type) else c for i, c in enumerate(batch.columns)]
                writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=plain))
    return Path(path)

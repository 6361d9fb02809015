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


def _plain(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in schema])


def write_tables(parquet_path: Path, csv_path: Path | None, tables) -> Path:
    """A stream of Arrow tables to Parquet and, when asked, CSV too, making each table once.

    Writing runs on a second thread while the next table is made (Arrow's writers release the GIL), with at most
    two tables waiting, so memory stays flat and the two cores are both busy."""
    import queue
    import threading

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    pending: queue.Queue = queue.Queue(maxsize=2)
    failure: list[BaseException] = []

    with _atomic(Path(parquet_path)) as pfh, (_atomic(Path(csv_path)) if csv_path else _null()) as cfh:

        def writer_loop() -> None:
            pwriter = cwriter = None
            try:
                while (table := pending.get()) is not None:
                    pwriter = pwriter or pq.ParquetWriter(pfh, table.schema, compression="zstd")
                    pwriter.write_table(table)
                    if cfh is not None:
                        plain = _plain(table.schema)
                        cwriter = cwriter or pacsv.CSVWriter(cfh, plain)
                        cwriter.write_table(table.cast(plain))
            except BaseException as exc:  # noqa: BLE001 - handed to the producing thread below
                failure.append(exc)
                while pending.get() is not None:  # drain so the producer never blocks
                    pass
            finally:
                for writer in (pwriter, cwriter):
                    if writer is not None:
                        writer.close()

        thread = threading.Thread(target=writer_loop, name="findings-writer")
        thread.start()
        try:
            for table in tables:
                pending.put(table.replace_schema_metadata(None))
                if failure:
                    break
        finally:
            pending.put(None)
            thread.join()
        if failure:
            raise failure[0]
    return Path(parquet_path)


@contextmanager
def _null():
    yield None

"""Reader for the generic contract: a folder of `orders`, `order_lines`, ... as CSV or Parquet."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from juno.errors import InputError
from juno.sources.base import (
    FILE_COL,
    LINE_COL,
    TABLES,
    InputFile,
    RawTable,
    SourceResult,
    normalise_name,
)

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".tsv", ".txt")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_table_file(folder: Path, table: str) -> Path | None:
    """`orders.csv`, `Orders.parquet`, `orders.csv.gz`: one file per table, case-insensitive."""
    found = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file()
        and any(p.name.lower() == table + s for s in SUFFIXES)
    ]
    if len(found) > 1:
        raise InputError(
            f"two files for table `{table}`; keep one",
            file=str(folder),
            examples=[p.name for p in found],
        )
    return found[0] if found else None


def _sniff(path: Path) -> tuple[str, str]:
    """(delimiter, encoding) from the first bytes; refuses files that are not tables."""
    with path.open("rb") as f:
        head = f.read(64 * 1024)
    if not head.strip():
        raise InputError(
            "the file is empty", file=str(path), expected="a header line and data rows"
        )
    if b"\x00" in head:
        raise InputError(
            "the file is not a text table (binary content)",
            file=str(path),
            expected="a CSV file or a Parquet file named .parquet",
        )
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        raise InputError(
            "the file is an HTML/XML page, not a table (a failed download saved as CSV?)",
            file=str(path),
            expected="a CSV export",
            examples=[head[:80].decode("utf-8", "replace")],
        )
    if stripped.startswith((b"{", b"[")):
        raise InputError(
            "the file is JSON, not a table",
            file=str(path),
            expected="a CSV export or Parquet",
            examples=[head[:80].decode("utf-8", "replace")],
        )
    try:
        text = head.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError as exc:
        if exc.start > len(head) - 4:  # a multi-byte character cut by the 64 KiB window
            text = head[: exc.start].decode("utf-8")
            encoding = "utf-8"
        else:
            text = head.decode("latin-1")
            encoding = "latin-1"
    first = text.splitlines()[0] if text.splitlines() else ""
    counts = {d: first.count(d) for d in (",", ";", "\t", "|")}
    delim = max(counts, key=lambda d: counts[d])
    if counts[delim] == 0:
        delim = ","
    return delim, encoding


def read_csv_strings(path: Path, table: str) -> pa.Table:
    """Every column as string: typing happens in validation, where bad cells become rejects."""
    delim, encoding = _sniff(path)
    try:
        header_reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(encoding=encoding, block_size=1 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delim),
            convert_options=pacsv.ConvertOptions(
                column_types={}, strings_can_be_null=True
            ),
        )
        names = header_reader.schema.names
        header_reader.close()
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(encoding=encoding, block_size=8 << 20),
            parse_options=pacsv.ParseOptions(delimiter=delim, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid as exc:
        msg = str(exc).splitlines()[0]
        if "Empty CSV file" in msg:
            raise InputError(
                "the file is empty", file=str(path), expected="a header line and data rows"
            ) from None
        if "duplicate" in msg.lower():
            raise InputError(
                "the header names a column twice", file=str(path), expected="unique column names"
            ) from None
        raise InputError(
            f"the file cannot be read as a {table} table: {msg}",
            file=str(path),
            expected=f"a CSV file with one header line (delimiter detected: {delim!r})",
        ) from None


def read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"the file is not a readable Parquet file: {str(exc).splitlines()[0]}",
            file=str(path),
            expected="a Parquet file",
        ) from None


def to_raw_frame(table: pa.Table, path: Path, table_name: str) -> pd.DataFrame:
    """Rename columns to contract names, refuse duplicated names, add file and line columns."""
    names = [normalise_name(n) for n in table.column_names]
    seen: dict[str, str] = {}
    for orig, norm in zip(table.column_names, names, strict=True):
        if norm in seen:
            raise InputError(
                "two columns have the same name (names are compared case- and space-insensitively)",
                file=str(path),
                column=norm,
                examples=[seen[norm], orig],
            )
        seen[norm] = orig
    table = table.rename_columns(names)
    frame: pd.DataFrame = table.to_pandas(types_mapper=_types_mapper, self_destruct=True)
    frame[FILE_COL] = path.name
    # Header is line 1, so the first data row is line 2 (record numbers when cells hold newlines).
    frame[LINE_COL] = pd.RangeIndex(2, len(frame) + 2)
    return frame


def _types_mapper(t: pa.DataType) -> pd.ArrowDtype | pd.StringDtype | None:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype()
    return None


def read_table_file(path: Path, table: str) -> tuple[pd.DataFrame, InputFile]:
    is_parquet = path.suffix.lower() in (".parquet", ".pq")
    if path.stat().st_size == 0:
        raise InputError("the file is empty", file=str(path), expected="a header and data rows")
    arrow = read_parquet(path) if is_parquet else read_csv_strings(path, table)
    frame = to_raw_frame(arrow, path, table)
    info = InputFile(
        path=str(path),
        table=table,
        sha256=sha256_file(path),
        rows=len(frame),
        format="parquet" if is_parquet else "csv",
    )
    return frame, info


def read_generic(folder: Path) -> SourceResult:
    """Read every contract table present in `folder`."""
    if not folder.is_dir():
        raise InputError(
            "the store folder does not exist or is not a folder",
            file=str(folder),
            expected="a folder holding orders.csv or orders.parquet",
        )
    tables: dict[str, RawTable] = {}
    files: list[InputFile] = []
    for name in TABLES:
        path = find_table_file(folder, name)
        if path is None:
            continue
        frame, info = read_table_file(path, name)
        tables[name] = RawTable(name, frame)
        files.append(info)
    if "orders" not in tables:
        present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        raise InputError(
            "no orders table found",
            file=str(folder),
            expected="orders.csv or orders.parquet (or a Shopify orders_export*.csv)",
            examples=present[:5] or ["(the folder is empty)"],
        )
    return SourceResult(kind="generic", tables=tables, files=files)

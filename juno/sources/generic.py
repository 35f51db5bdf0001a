"""Reader for the generic contract: a folder of `orders`, `order_lines`, ... as CSV or Parquet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from juno.errors import InputError
from juno.sources.base import (
    FILE_COL,
    LINE_COL,
    REJECTED_COLUMNS,
    TABLES,
    TAKEN_IN_ORDER,
    InputFile,
    RawTable,
    SourceResult,
    TableReader,
    coded_columns,
    normalise_name,
    projection,
)
from juno.sources.csvfiles import (
    BLOCK,
    WRONG_FIELDS,
    BadRow,
    Digest,
    digest_file,
    header_names,
    holds_quote,
    quiet_undecodable_rows,
    read_csv_strings,
    sniff,
)

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".tsv", ".txt")


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


def read_parquet(path: Path, table: str | None = None, coded: bool = False) -> pa.Table:
    """The file's columns (for a contract `table`, only those anything reads: the rest would be
    decoded and held for nothing). `coded`: its FEW_DISTINCT text columns as dictionaries."""
    if table is not None:
        try:
            schema = pq.read_schema(path)
            names = schema.names
            keep = projection(names, table)
            as_codes = [
                n for n in coded_columns(names, table) if _is_text_type(schema.field(n).type)
            ] if coded and keep is not None else []
            if keep is not None and (len(keep) < len(names) or as_codes):
                # Index columns a pandas-written file declares come along, as in a full read.
                return pq.read_table(
                    path, columns=[names[i] for i in keep], use_pandas_metadata=True, read_dictionary=as_codes or None
                )
        except (pa.ArrowInvalid, OSError):
            pass  # the full read below reports the problem as before
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(
            f"the file is not a readable Parquet file: {str(exc).splitlines()[0]}",
            file=str(path),
            expected="a Parquet file",
        ) from None


def to_raw_frame(
    table: pa.Table, path: Path, table_name: str, skipped: Sequence[int] = ()
) -> pd.DataFrame:
    """Rename columns to contract names, refuse duplicated names, add file and line columns.

    Unnamed columns (a spreadsheet's trailing empty columns) are unknown columns: ignored.
    `skipped` holds the lines of rows set aside while reading, so line numbers stay true.
    """
    unnamed = [i for i, n in enumerate(table.column_names) if normalise_name(n) == ""]
    if unnamed:
        table = table.select([i for i in range(table.num_columns) if i not in unnamed])
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
    # Text as large_string, the layout pandas holds strings in, cast by Arrow chunk by chunk:
    # left to pandas, a Parquet file's 32-bit-offset text columns convert ~3x slower.
    if any(pa.types.is_string(t) for t in table.schema.types):
        table = table.cast(
            pa.schema([f.with_type(pa.large_string()) if pa.types.is_string(f.type) else f for f in table.schema])
        )
    handed = [table]
    del table
    frame = _to_pandas(handed)
    # One code per row, not one string per row (300 MB at a million customers).
    frame[FILE_COL] = pd.Categorical.from_codes(
        np.zeros(len(frame), dtype=np.int8), dtype=pd.CategoricalDtype([path.name])
    )
    # Header is line 1, so the first data row is line 2 (record numbers when cells hold newlines).
    lines = np.arange(2, len(frame) + 2 + len(skipped))
    if len(skipped):
        lines = lines[~np.isin(lines, np.asarray(skipped))]
    frame[LINE_COL] = lines[: len(frame)] if len(lines) >= len(frame) else np.arange(2, len(frame) + 2)
    return frame


def _to_pandas(handed: list[pa.Table]) -> pd.DataFrame:
    """`table.to_pandas` as `juno` reads tables, for the one table in `handed` (taken out of it,
    so that nothing else holds it): text as pandas' Arrow strings, one block per column, each
    column's Arrow memory freed once it is converted (no consolidation copies).

    Float and null-free integer columns are copied out by NumPy (their nulls made NaN by Arrow
    first), column by column: pyarrow's own conversion of a number column holds the GIL
    throughout (~30 ms a column per 5M rows; seconds at 3M customers, where fresh pages are
    slow), and the order lines are converted on a reader thread while the main thread types
    the orders: it stalled there. Same values and dtypes as pyarrow gives them. A table with
    pandas metadata (which can name index columns or restore other dtypes) is left to pyarrow.
    """
    table = handed.pop()
    numeric = [
        f.name
        for f in table.schema
        if pa.types.is_float64(f.type) or (pa.types.is_int64(f.type) and table.column(f.name).null_count == 0)
    ]
    if not numeric or table.num_rows == 0 or table.schema.pandas_metadata is not None:
        whole: pd.DataFrame = table.to_pandas(types_mapper=_types_mapper, self_destruct=True, split_blocks=True)
        return whole
    order = table.column_names
    numbers: dict[str, np.ndarray] = {}
    for name in numeric:
        column = table.column(name)
        if column.null_count:
            column = pc.fill_null(column, float("nan"))
        numbers[name] = np.concatenate([c.to_numpy(zero_copy_only=True) for c in column.chunks])
        del column
        table = table.drop_columns([name])  # its Arrow memory goes now, unless the caller holds it
    rest = (
        table.to_pandas(types_mapper=_types_mapper, self_destruct=True, split_blocks=True)
        if table.num_columns
        else None
    )
    del table
    cols = {name: numbers[name] if name in numbers else rest[name] for name in order}  # type: ignore[index]
    return pd.DataFrame(cols, copy=False)


def _types_mapper(t: pa.DataType) -> pd.ArrowDtype | pd.StringDtype | None:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype()
    return None


def _is_text(path: Path) -> bool:
    return path.suffix.lower() not in (".parquet", ".pq")


def read_table_file(
    path: Path, table: str, digest: Future[Digest] | None = None, coded: bool = False
) -> tuple[pd.DataFrame, InputFile, pd.DataFrame, dict[str, Callable[[], pd.Series]]]:
    """(raw frame, file info, rows set aside while reading as REJECTED_COLUMNS, the text of the
    columns read typed from a CSV file: `RawTable.text`).

    `digest`: `digest_file` of the file being taken elsewhere meanwhile (otherwise taken here).
    `coded`: the table's FEW_DISTINCT text columns come as categoricals (see `FEW_DISTINCT`), and
    a CSV file's number and date-time columns typed where they allow (see `read_csv_strings`)."""
    is_parquet = not _is_text(path)
    if path.stat().st_size == 0:
        raise InputError("the file is empty", file=str(path), expected="a header and data rows")
    bad: list[BadRow] = []
    text: dict[str, Callable[[], pa.ChunkedArray]] = {}
    if digest is None:
        digest = Future()
        digest.set_result(digest_file(path, text=not is_parquet))
    if is_parquet:
        arrow = read_parquet(path, table, coded)
    else:
        # Whether the file holds any quote: from its digest when that is taken by now (on another
        # thread, in the order the tables are read), otherwise from a read up to the first quote.
        arrow, bad, text = read_csv_strings(
            path,
            table,
            lambda: digest.result().utf8,
            coded,
            typed=coded,
            quote_free=lambda: digest.result().quote_free if digest.done() else not holds_quote(path),
        )
    if bad and arrow.num_rows == 0:
        raise InputError(
            "no row has as many fields as the header (wrong delimiter, or unquoted delimiters in cells?)",
            file=str(path),
            expected=f"{bad[0][2]} fields per row, as in the header",
            examples=[f"line {n}: {found} fields: {text[:60]}" for n, found, _, text in bad[:5]],
        )
    skipped = [n for n, _, _, _ in bad if n is not None]
    # Handed over, not kept here: the conversion frees each column's Arrow memory as it goes.
    handed = [arrow]
    del arrow
    frame = to_raw_frame(handed.pop(), path, table, skipped)
    rejected = pd.DataFrame(
        {
            "file": path.name,
            "line": pd.Series([n for n, _, _, _ in bad], dtype="Int64"),
            "table": table,
            "reason": WRONG_FIELDS,
            "revenue": np.nan,
            "detail": [f"{found} fields, header has {exp}: {text[:60]}" for _, found, exp, text in bad],
        },
        columns=REJECTED_COLUMNS,
    )
    info = InputFile(
        path=str(path),
        table=table,
        sha256=digest.result().sha256,
        rows=len(frame) + len(bad),
        format="parquet" if is_parquet else "csv",
    )
    return frame, info, rejected, {normalise_name(n): partial(_text_series, read) for n, read in text.items()}


def _text_series(read: Callable[[], pa.ChunkedArray]) -> pd.Series:
    return read().to_pandas(types_mapper=_types_mapper)  # type: ignore[no-any-return]


def _complete_header(path: Path, table: str) -> bool:
    """True when the file's header has the table's required columns and nothing a full read would
    refuse (clashing names): its read can wait. Otherwise it is read at once, so that the problem
    is reported while loading, as for any file."""
    try:
        if not _is_text(path):
            names = pq.read_schema(path).names
        else:
            delim, encoding = sniff(path)
            with quiet_undecodable_rows():
                names = header_names(path, delim, encoding, BLOCK)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError):
        return False
    return path.stat().st_size > 0 and projection(names, table) is not None


def read_generic(folder: Path, *, defer: bool = False) -> SourceResult:
    """Read every contract table present in `folder`.

    `defer`: tables whose header is complete are left in `SourceResult.deferred`, read when
    validation takes them (a caller that validates at once, consuming the raw tables: `juno run`).
    """
    if not folder.is_dir():
        raise InputError(
            "the store folder does not exist or is not a folder",
            file=str(folder),
            expected="a folder holding orders.csv or orders.parquet",
        )
    tables: dict[str, RawTable] = {}
    files: list[InputFile] = []
    set_aside: list[pd.DataFrame] = []
    deferred: dict[str, TableReader] = {}
    paths = {name: path for name in TABLES if (path := find_table_file(folder, name)) is not None}
    if "orders" not in paths:
        present = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
        raise InputError(
            "no orders table found",
            file=str(folder),
            expected="orders.csv or orders.parquet (or a Shopify orders_export*.csv)",
            examples=present[:5] or ["(the folder is empty)"],
        )
    # The files' sha256 (for review.toml) on a second thread while they are parsed: hashing lets
    # go of the GIL, and a million-customer store is a gigabyte of CSV to hash. The thread ends
    # once the queued files are hashed.
    hasher = ThreadPoolExecutor(max_workers=1)
    # Hashed in the order the tables will be read: a read waits for its file's UTF-8 verdict.
    order = [t for t in TAKEN_IN_ORDER if t in paths] if defer else list(paths)
    digests = {name: hasher.submit(digest_file, paths[name], _is_text(paths[name])) for name in order}
    hasher.shutdown(wait=False)
    try:
        for name, path in paths.items():
            if defer and _complete_header(path, name):
                deferred[name] = partial(read_table_file, path, name, digests[name], coded=True)
                continue
            frame, info, rejected, _ = read_table_file(path, name, digests[name])  # text only: no typed columns
            tables[name] = RawTable(name, frame)
            files.append(info)
            if len(rejected):
                set_aside.append(rejected)
    except BaseException:
        for pending in digests.values():
            pending.cancel()
        raise
    result = SourceResult(kind="generic", tables=tables, files=files, deferred=deferred)
    if set_aside:
        result.rejected = pd.concat(set_aside, ignore_index=True)
    return result


def _is_text_type(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))

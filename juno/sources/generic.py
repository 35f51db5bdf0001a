"""Reader for the generic contract: a folder of `orders`, `order_lines`, ... as CSV or Parquet."""

from __future__ import annotations

import codecs
import hashlib
import sys
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from juno.errors import InputError

if TYPE_CHECKING:
    from sys import UnraisableHookArgs
from juno.sources.base import (
    FILE_COL,
    LINE_COL,
    REJECTED_COLUMNS,
    TABLES,
    USED_COLUMNS,
    InputFile,
    RawTable,
    SourceResult,
    TableReader,
    has_required,
    normalise_name,
)

SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".tsv", ".txt")
MAX_COLUMNS = 10_000


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest_file(path: Path, text: bool) -> tuple[str, bool]:
    """(sha256, whether every byte is valid UTF-8) in one pass; for a `text` file only, the
    second is True otherwise. The reader converts only the columns it keeps, so this pass is what
    notices a legacy (Latin-1) byte in a column nothing reads: the file's encoding is the whole
    file's."""
    h = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")() if text else None
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            if decoder is not None:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    decoder = None
                    text = False
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            text = False
    return h.hexdigest(), text


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
        # A multi-byte character cut by the 64 KiB window; in a shorter file the bytes are the end.
        if exc.start > len(head) - 4 and len(head) == 64 * 1024:
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
    columns = counts[delim] + 1
    if "\n" not in text and "\r" not in text:  # the header line is longer than the head
        with path.open("rb") as f:
            f.seek(len(head))
            while columns <= MAX_COLUMNS and (chunk := f.read(1 << 20)):
                line = chunk.split(b"\n", 1)[0]
                columns += line.count(delim.encode())
                if len(line) < len(chunk):
                    break
    if columns > MAX_COLUMNS:
        # pandas needs memory per column: a million-column header would exhaust the machine.
        raise InputError(
            f"the header has more than {MAX_COLUMNS:,} columns",
            file=str(path),
            expected=f"a table of at most {MAX_COLUMNS:,} columns (delimiter detected: {delim!r})",
            examples=[first[:80]],
        )
    return delim, encoding


# (line, fields found, fields expected, text) of a row whose field count differs from the header's.
BadRow = tuple[int | None, int, int, str]

# pyarrow's own default. Each block's parse buffers are freed as its columns are built, but the
# allocator keeps freed pages a while: at a million customers 8 MiB blocks left ~400 MB more
# resident after the reads than 1 MiB blocks do, and were no faster.
_BLOCK = 1 << 20
_MAX_BLOCK = (1 << 31) - 1
_MSG_CAP = 200
WRONG_FIELDS = "wrong number of fields for the header"


@contextmanager
def _quiet_undecodable_rows() -> Iterator[None]:
    """pyarrow prints 'Exception ignored' when a ragged row's bytes are not UTF-8 (it then fails
    the read, and the caller retries as Latin-1): keep that noise off the user's terminal."""
    previous = sys.unraisablehook

    def hook(info: UnraisableHookArgs) -> None:
        if not isinstance(info.exc_value, UnicodeDecodeError):
            previous(info)

    sys.unraisablehook = hook
    try:
        yield
    finally:
        sys.unraisablehook = previous


def _header(path: Path, delim: str, encoding: str, block: int) -> list[str]:
    """The header's column names, as the reader sees them."""
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=encoding, block_size=block),
        parse_options=pacsv.ParseOptions(
            delimiter=delim, newlines_in_values=True, invalid_row_handler=lambda r: "skip"
        ),
        convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=True),
    )
    names: list[str] = reader.schema.names
    reader.close()
    return names


def _read_csv(
    path: Path, delim: str, encoding: str, block: int, bad: list[BadRow], threads: bool, table: str | None
) -> pa.Table:
    """The file's columns as strings: for a contract `table`, only those anything reads (the rest
    are parsed for their field counts but never turned into strings: a million order lines' product
    names are 250 MB)."""
    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append((row.number, row.actual_columns, row.expected_columns, row.text))
        return "skip"

    names = _header(path, delim, encoding, block)
    keep = projection(names, table) if table is not None else None
    include = [names[i] for i in keep] if keep is not None and len(keep) < len(names) else []
    return pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(encoding=encoding, block_size=block, use_threads=threads),
        parse_options=pacsv.ParseOptions(
            delimiter=delim, newlines_in_values=True, invalid_row_handler=on_invalid
        ),
        convert_options=pacsv.ConvertOptions(
            # 64-bit offsets, as pandas holds strings: no conversion copy of every text column.
            column_types=dict.fromkeys(include or names, pa.large_string()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            include_columns=include,
        ),
    )


def read_csv_strings(
    path: Path, table: str, utf8: Callable[[], bool] | None = None
) -> tuple[pa.Table, list[BadRow]]:
    """Every column as string: typing happens in validation, where bad cells become rejects.

    Rows whose field count differs from the header's are set aside (returned, for rejection).
    `utf8`: whether the whole file is valid UTF-8 (see `digest_file`). Given it, only the
    columns anything reads are converted, and a file with a non-UTF-8 byte anywhere is read as
    Latin-1 as a read of every column would; without it, every column is read.
    """
    delim, encoding = _sniff(path)
    size = path.stat().st_size
    block = _BLOCK
    while True:
        bad: list[BadRow] = []
        try:
            with _quiet_undecodable_rows():
                subset = table if utf8 is not None else None
                arrow = _read_csv(path, delim, encoding, block, bad, True, subset)
                if encoding == "utf-8" and utf8 is not None and not utf8():
                    encoding = "latin-1"  # a legacy byte in a column not converted
                    continue
                if any(b[0] is None for b in bad):  # line numbers are only known single-threaded
                    bad = []
                    arrow = _read_csv(path, delim, encoding, block, bad, False, subset)
            return arrow, bad
        except pa.ArrowInvalid as exc:
            msg = str(exc).splitlines()[0]
            too_long = "straddl" in msg or "out of sync" in msg or "Empty CSV file" in msg
            if too_long and block <= size:
                # A cell or header line longer than a block: read the file as one block.
                block = min(size + 1, _MAX_BLOCK)
                continue
            undecodable = "invalid UTF8" in msg or "CSV parse error" in msg  # the latter: a ragged
            if undecodable and encoding == "utf-8":  # row's text failed to decode for the handler
                # Valid UTF-8 in the sniffed head, other bytes further on: a legacy export.
                encoding = "latin-1"
                continue
            if "Empty CSV file" in msg:
                raise InputError(
                    "the file is empty", file=str(path), expected="a header line and data rows"
                ) from None
            if "duplicate" in msg.lower():
                raise InputError(
                    "the header names a column twice", file=str(path), expected="unique column names"
                ) from None
            if len(msg) > _MSG_CAP:
                msg = msg[:_MSG_CAP] + " ..."
            raise InputError(
                f"the file cannot be read as a {table} table: {msg}",
                file=str(path),
                expected=f"a CSV file with one header line (delimiter detected: {delim!r})",
            ) from None


def projection(names: Sequence[str], table: str) -> list[int] | None:
    """Indices of the columns anything reads from a `table` file with these header names, or
    None to keep them all: when a required column is missing (the error then lists every column
    found) or two names clash (the reader reports that)."""
    norm = [normalise_name(n) for n in names]
    named = [n for n in norm if n]
    if len(set(named)) != len(named) or len(set(names)) != len(names):
        return None
    if not has_required(table, named):
        return None
    used = USED_COLUMNS[table]
    return [i for i, n in enumerate(norm) if n in used]


def read_parquet(path: Path, table: str | None = None) -> pa.Table:
    """The file's columns (for a contract `table`, only those anything reads: the rest would be
    decoded and held for nothing)."""
    if table is not None:
        try:
            names = pq.read_schema(path).names
            keep = projection(names, table)
            if keep is not None and len(keep) < len(names):
                # Index columns a pandas-written file declares come along, as in a full read.
                return pq.read_table(path, columns=[names[i] for i in keep], use_pandas_metadata=True)
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
    # One block per column, each freed from Arrow as it is converted: no consolidation copies.
    frame: pd.DataFrame = table.to_pandas(types_mapper=_types_mapper, self_destruct=True, split_blocks=True)
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


def _types_mapper(t: pa.DataType) -> pd.ArrowDtype | pd.StringDtype | None:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pd.StringDtype()
    return None


def _is_text(path: Path) -> bool:
    return path.suffix.lower() not in (".parquet", ".pq")


def read_table_file(
    path: Path, table: str, digest: Future[tuple[str, bool]] | None = None
) -> tuple[pd.DataFrame, InputFile, pd.DataFrame]:
    """(raw frame, file info, rows set aside while reading as REJECTED_COLUMNS).

    `digest`: `digest_file` of the file being taken elsewhere meanwhile (otherwise taken here)."""
    is_parquet = not _is_text(path)
    if path.stat().st_size == 0:
        raise InputError("the file is empty", file=str(path), expected="a header and data rows")
    bad: list[BadRow] = []
    if digest is None:
        digest = Future()
        digest.set_result(digest_file(path, text=not is_parquet))
    if is_parquet:
        arrow = read_parquet(path, table)
    else:
        arrow, bad = read_csv_strings(path, table, lambda: digest.result()[1])
        keep = projection(arrow.column_names, table)
        if keep is not None and len(keep) < arrow.num_columns:
            arrow = arrow.select(keep)
    if bad and arrow.num_rows == 0:
        raise InputError(
            "no row has as many fields as the header (wrong delimiter, or unquoted delimiters in cells?)",
            file=str(path),
            expected=f"{bad[0][2]} fields per row, as in the header",
            examples=[f"line {n}: {found} fields: {text[:60]}" for n, found, _, text in bad[:5]],
        )
    skipped = [n for n, _, _, _ in bad if n is not None]
    frame = to_raw_frame(arrow, path, table, skipped)
    del arrow
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
        sha256=digest.result()[0],
        rows=len(frame) + len(bad),
        format="parquet" if is_parquet else "csv",
    )
    return frame, info, rejected


def _complete_header(path: Path, table: str) -> bool:
    """True when the file's header has the table's required columns and nothing a full read would
    refuse (clashing names): its read can wait. Otherwise it is read at once, so that the problem
    is reported while loading, as for any file."""
    try:
        if not _is_text(path):
            names = pq.read_schema(path).names
        else:
            delim, encoding = _sniff(path)
            with _quiet_undecodable_rows():
                names = _header(path, delim, encoding, _BLOCK)
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
    digests = {name: hasher.submit(digest_file, path, _is_text(path)) for name, path in paths.items()}
    hasher.shutdown(wait=False)
    try:
        for name, path in paths.items():
            if defer and _complete_header(path, name):
                deferred[name] = partial(read_table_file, path, name, digests[name])
                continue
            frame, info, rejected = read_table_file(path, name, digests[name])
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

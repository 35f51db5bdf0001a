"""Reading delimited text exports: delimiter and encoding sniffing, every used column as text
(for `juno run`, number and date-time columns typed where every cell allows), rows with the wrong
field count set aside, and the one pass that hashes a file and checks it is UTF-8. The generic
contract reads its CSV files through it; every source fingerprints its input files with
`sha256_file`."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from juno.errors import InputError
from juno.sources.base import READ_AS_DATETIME, READ_AS_NUMBER, coded_columns, normalise_name, projection

if TYPE_CHECKING:
    from sys import UnraisableHookArgs

MAX_COLUMNS = 10_000


def sha256_file(path: Path) -> str:
    return digest_file(path, text=False).sha256


def open_text(path: Path) -> BinaryIO:
    """The file's text bytes: a `.gz` file decompressed, as Arrow's reader reads it."""
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def holds_quote(path: Path) -> bool:
    """Whether the file holds a '"' anywhere (a read from the start up to the first one)."""
    with open_text(path) as f:
        return any(b'"' in chunk for chunk in iter(lambda: f.read(1 << 20), b""))


class Digest(NamedTuple):
    sha256: str
    utf8: bool  # every byte valid UTF-8 (True for a file not read as text)
    quote_free: bool  # no '"' anywhere: no cell is quoted, so none holds a line break


def digest_file(path: Path, text: bool) -> Digest:
    """The file's sha256, whether every byte is valid UTF-8 and whether it holds no quote, in
    one pass (a `.gz` file's text in a second); for a `text` file only, the last two are True
    otherwise. The reader converts only the columns it keeps, so this pass is what notices a
    legacy (Latin-1) byte in a column nothing reads: the file's encoding is the whole file's."""
    h = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")() if text else None
    quote_free, scan = True, text
    compressed = text and path.suffix.lower() == ".gz"  # the checks read the text, a second pass

    def check(chunk: bytes) -> None:
        nonlocal quote_free, decoder, text
        if scan and quote_free:
            quote_free = b'"' not in chunk
        # ASCII after a complete sequence is valid UTF-8 as it stands: a byte scan, not a
        # decode into text (536 MB of order lines: 0.12 -> 0.02 s).
        if decoder is not None and not (chunk.isascii() and not decoder.getstate()[0]):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError:
                decoder = None
                text = False

    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            if not compressed:
                check(chunk)
    if compressed:
        with open_text(path) as g:
            for chunk in iter(lambda: g.read(1 << 20), b""):
                check(chunk)
    if decoder is not None:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            text = False
    return Digest(h.hexdigest(), text, quote_free)


def sniff(path: Path) -> tuple[str, str]:
    """(delimiter, encoding) from the first bytes; refuses files that are not tables."""
    try:
        with open_text(path) as f:
            head = f.read(64 * 1024)
    except (OSError, EOFError) as exc:
        if path.suffix.lower() != ".gz":
            raise
        raise InputError(  # a .gz file that is not gzip, or cut short
            f"the file cannot be decompressed: {exc}", file=str(path), expected="a gzip-compressed CSV file"
        ) from None
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
        with open_text(path) as f:
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
BLOCK = 1 << 20
_MAX_BLOCK = (1 << 31) - 1
_MSG_CAP = 200
WRONG_FIELDS = "wrong number of fields for the header"


@contextmanager
def quiet_undecodable_rows() -> Iterator[None]:
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


def header_names(path: Path, delim: str, encoding: str, block: int) -> list[str]:
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
    path: Path,
    names: list[str],
    delim: str,
    encoding: str,
    block: int,
    bad: list[BadRow],
    threads: bool,
    table: str,
    coded: bool,
    typed: dict[str, pa.DataType],
    newlines: bool = True,
) -> pa.Table:
    """The file's columns as strings, only those anything reads from a contract `table` (the rest
    are parsed for their field counts but never turned into strings: a million order lines' product
    names are 250 MB); every column when a required one is missing, for the error to list.
    `coded`: the table's FEW_DISTINCT columns as dictionaries of strings (one code per row).
    `typed`: header names read as these types instead (see `read_csv_strings`).
    `newlines`: whether a quoted cell may hold a line break (False: the reader splits the file
    into blocks at any line break, a faster pass; only for a file without quotes)."""
    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append((row.number, row.actual_columns, row.expected_columns, row.text))
        return "skip"

    keep = projection(names, table)
    include = [names[i] for i in keep] if keep is not None and len(keep) < len(names) else []
    types = dict.fromkeys(include or names, pa.large_string())
    if coded and keep is not None:
        types.update(dict.fromkeys(coded_columns([names[i] for i in keep], table), _CODED))
    types.update(typed)
    return pacsv.read_csv(path, **_options(delim, encoding, block, threads, newlines, on_invalid, types, include))


def _options(
    delim: str,
    encoding: str,
    block: int,
    threads: bool,
    newlines: bool,
    on_invalid: Callable[[pacsv.InvalidRow], str],
    types: dict[str, pa.DataType],
    include: list[str],
) -> dict[str, Any]:
    """The reader's options for `_read_csv` and `_column_text`, which must set the same rows aside."""
    return {
        "read_options": pacsv.ReadOptions(encoding=encoding, block_size=block, use_threads=threads),
        "parse_options": pacsv.ParseOptions(
            delimiter=delim, newlines_in_values=newlines, invalid_row_handler=on_invalid
        ),
        "convert_options": pacsv.ConvertOptions(
            # 64-bit offsets, as pandas holds strings: no conversion copy of every text column.
            column_types=types,
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            include_columns=include,
        ),
    }


def _column_text(path: Path, name: str, delim: str, encoding: str, block: int, newlines: bool) -> pa.ChunkedArray:
    """One column's cells as text, as `_read_csv` reads text (the same rows set aside)."""
    options = _options(delim, encoding, block, True, newlines, lambda r: "skip", {name: pa.large_string()}, [name])
    return pacsv.read_csv(path, **options).column(0)


# What a column named in READ_AS_NUMBER / READ_AS_DATETIME is first read as, then, should a cell
# not convert, the next; text after the last. Arrow's readings agree with validation's of the
# text (juno.parse) wherever Arrow accepts a cell: decimals (spaces around them, a sign, an
# exponent), NULL/NA/NaN and the like as missing, date-times with a UTC offset (converted to
# UTC), and, in a column without offsets, as UTC. Cells validation would reject (a thousands
# separator, a currency sign, Feb 30, a date before 1677) fail the conversion, and the column is
# read as text. What they differ on is caught after the read: 'inf', which validation finds is
# not a number (juno.parse.parse_number makes it so for any typed column) and '-0', which it
# reads as +0 in a column of whole numbers (read as text then).
_NUMBER_TYPES = (pa.float64(),)
_DATETIME_TYPES = (pa.timestamp("ns", "UTC"), pa.timestamp("ns"))
_CONVERSION = re.compile(r"^In CSV column #(\d+): .*CSV conversion error")


def _typed_candidates(names: list[str], table: str) -> dict[str, tuple[pa.DataType, ...]]:
    numbers = READ_AS_NUMBER.get(table, frozenset())
    dates = READ_AS_DATETIME.get(table, frozenset())
    out: dict[str, tuple[pa.DataType, ...]] = {}
    for name in names:
        norm = normalise_name(name)
        if norm in numbers:
            out[name] = _NUMBER_TYPES
        elif norm in dates:
            out[name] = _DATETIME_TYPES
    return out


def _has_negative_zero(column: pa.ChunkedArray) -> bool:
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        values = np.frombuffer(chunk.buffers()[1], dtype=np.float64)[chunk.offset : chunk.offset + len(chunk)]
        if ((values == 0) & np.signbit(values)).any():
            return True
    return False


_CODED = pa.dictionary(pa.int32(), pa.large_string())


def read_csv_strings(
    path: Path,
    table: str,
    utf8: Callable[[], bool],
    coded: bool = False,
    typed: bool = False,
    quote_free: Callable[[], bool] | None = None,
) -> tuple[pa.Table, list[BadRow], dict[str, Callable[[], pa.ChunkedArray]]]:
    """Every used column as string: typing happens in validation, where bad cells become rejects.

    Rows whose field count differs from the header's are set aside (returned, for rejection).
    `utf8`: whether the whole file is valid UTF-8 (see `digest_file`). Only the columns anything
    reads are converted, so this is what reads a file with a non-UTF-8 byte anywhere as Latin-1,
    as a read of every column would.

    `typed`: the table's READ_AS_NUMBER and READ_AS_DATETIME columns come as float64 and
    nanosecond timestamps where every cell converts (see `_NUMBER_TYPES`), each other one as text.
    A failed conversion costs a read: messy exports take longer, clean ones hold a third less and
    skip validation's text checks. The third item gives each typed column's text, read again from
    the file (header names as keys).

    `quote_free`: True when the file is known to hold no quote (`Digest.quote_free`; False when
    not known yet): no cell can then hold a line break, and the reader's faster split is used
    (~0.15 s on a million customers' order lines). Same rows and cells either way.
    """
    delim, encoding = sniff(path)
    newlines = not (quote_free is not None and quote_free())
    size = path.stat().st_size
    block = BLOCK
    candidates: dict[str, tuple[pa.DataType, ...]] | None = None
    while True:
        bad: list[BadRow] = []
        try:
            with quiet_undecodable_rows():
                names = header_names(path, delim, encoding, block)
                if candidates is None:
                    candidates = _typed_candidates(names, table) if typed else {}
                types = {n: c[0] for n, c in candidates.items() if c}
                arrow = _read_csv(path, names, delim, encoding, block, bad, True, table, coded, types, newlines)
                if encoding == "utf-8" and not utf8():
                    encoding = "latin-1"  # a legacy byte in a column not converted
                    continue
                signed_zero = [
                    n for n, t in types.items() if pa.types.is_float64(t) and _has_negative_zero(arrow.column(n))
                ]
                if signed_zero:
                    candidates.update(dict.fromkeys(signed_zero, ()))
                    continue
                if any(b[0] is None for b in bad):  # line numbers are only known single-threaded
                    bad = []
                    arrow = _read_csv(path, names, delim, encoding, block, bad, False, table, coded, types, newlines)
            text: dict[str, Callable[[], pa.ChunkedArray]] = {
                n: partial(_column_text, path, n, delim, encoding, block, newlines) for n in types
            }
            return arrow, bad, text
        except pa.ArrowInvalid as exc:
            msg = str(exc).splitlines()[0]
            failed = _CONVERSION.match(msg)
            name = names[int(failed.group(1))] if failed and int(failed.group(1)) < len(names) else None
            if candidates and name in candidates:
                candidates[name] = candidates[name][1:]  # the next type, or text
                continue
            too_long = "straddl" in msg or "out of sync" in msg or "Empty CSV file" in msg
            if too_long and block <= size:
                # A cell or header line longer than a block: read the file as one block (a
                # compressed file's text is larger than the file: as large a block as allowed).
                block = _MAX_BLOCK if path.suffix.lower() == ".gz" else min(size + 1, _MAX_BLOCK)
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

"""Renderers: CSV with formula escaping, Markdown from Jinja2 templates, JSON. They compute nothing."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from juno import background
from juno.brief import Brief, CohortFacts
from juno.largefile import LargeFile
from juno.narrative.template import environment
from juno.plaincells import first_byte_in, holds_byte, string_buffers

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cells(s: pd.Series) -> pd.Series:
    """Prefix a quote to text a spreadsheet would run as a formula (OWASP CSV injection)."""
    t = s.astype("string")
    risky = t.str.startswith(FORMULA_START, na=False)
    return t.where(~risky, "'" + t)


def escape_text(s: pd.Series) -> pd.Series:
    """`escape_cells` for a text column without NA, by Arrow (the same Series)."""
    t = s.astype("string")
    a = large_text(pa.array(t))
    if a.null_count or not isinstance(t.dtype, pd.StringDtype) or t.dtype.storage != "pyarrow":
        return escape_cells(s)
    return pd.Series(pd.array(escape_formulas(a), dtype=t.dtype), index=t.index, name=t.name)


def format_float(v: float) -> str:
    """One float as CSV text: 4 decimals at most, trailing zeros dropped, '' for NaN."""
    return "" if pd.isna(v) else f"{v:.4f}".rstrip("0").rstrip(".")


def format_floats(values: np.ndarray) -> np.ndarray:
    """`format_float` over an array, vectorised (same text): integer tenths of a thousandth
    are split into whole and fractional digits by Arrow kernels; huge or infinite values
    take the per-value path."""
    v = np.round(np.asarray(values, dtype=float), 4)
    out = np.full(len(v), "", dtype=object)
    fast = np.isfinite(v) & (np.abs(v) < 1e9)  # 1e13 ten-thousandths: exact in float64
    if fast.any():
        x = v[fast]
        k = np.rint(np.abs(x) * 1e4).astype(np.int64)
        whole = pa.array(k // 10_000).cast(pa.string())
        frac = pc.utf8_rtrim(pc.utf8_lpad(pa.array(k % 10_000).cast(pa.string()), 4, "0"), "0")
        dot = pc.if_else(pc.equal(pc.utf8_length(frac), 0), "", ".")
        sign = pc.if_else(pa.array(np.signbit(x)), "-", "")  # -0.0 prints as "-0", as f"" does
        text = pc.binary_join_element_wise(sign, whole, dot, frac, "")
        out[fast] = text.to_numpy(zero_copy_only=False)
    slow = ~fast & ~np.isnan(v)
    if slow.any():
        out[slow] = [format_float(x) for x in v[slow]]
    return out


def format_datetimes(s: pd.Series) -> pd.Series:
    """Naive timestamps as '2024-05-01T13:45:00' (seconds truncated), NaT as NA."""
    if getattr(s.dt, "tz", None) is not None:
        aware: pd.Series = s.dt.strftime("%Y-%m-%dT%H:%M:%S").astype("string")
        return aware
    a = s.to_numpy(dtype="datetime64[ns]").astype("datetime64[s]")
    text = pd.Series(np.datetime_as_string(a, unit="s"), index=s.index, dtype="string")
    return text.mask(np.isnat(a))


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Stable text for every cell: 2-decimal floats, ISO dates, escaped strings."""
    out = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        s = frame[col]
        if s.dtype.kind == "M":
            out[col] = format_datetimes(s)
        elif s.dtype.kind == "f":
            out[col] = pd.Series(format_floats(s.to_numpy(float)), index=s.index, dtype=object)
        elif s.dtype.kind == "b":
            out[col] = np.where(s.to_numpy(bool), "true", "false")
        elif s.dtype.kind in "iu":
            out[col] = s.astype("string")
        else:
            out[col] = escape_cells(s)
    return out


def write_csv(frame: pd.DataFrame, path: Path, ahead: CellsAhead | None = None) -> None:
    """`csv_frame(frame).to_csv(index=False, lineterminator="\\n", na_rep="")`, byte for byte, but
    each column turned into cell text by Arrow kernels and the rows joined and written in slices.

    `ahead`: the text of the frame's last columns, made ahead (`CellsAhead`); each slice it has
    is taken from it, the others made here. Ignored unless its columns are the frame's last."""
    if ahead is not None and not ahead.fits(frame):
        ahead.close()
        ahead = None
    if frame.shape[1] < 2 or len(frame) == 0:  # csv quotes a lone empty field: keep its rules
        csv_frame(frame).to_csv(path, index=False, lineterminator="\n", na_rep="")
        return
    columns = [frame.iloc[:, j] for j in range(frame.shape[1])]
    own = columns if ahead is None else columns[: len(columns) - len(ahead.names)]

    def text(start: int) -> memoryview:
        made = ahead.take(start) if ahead is not None else None
        if made is None:
            return _lines([csv_cells(s.iloc[start : start + _SLICE]) for s in columns])
        return _lines([*(csv_cells(s.iloc[start : start + _SLICE]) for s in own), made], ended=True)

    header = ",".join(_quote_name(str(c)) for c in frame.columns) + "\n"
    _write_slices(path, header, text, range(0, len(frame), _SLICE))


# In slices of rows: the text of a whole million-row table at once is gigabytes.
_SLICE = 1 << 16
_AHEAD = 2  # slices being turned into text while the previous one is written


class CellsAhead:
    """The CSV text of a table's last columns, made slice by slice (`write_csv`'s slices) on a
    thread of its own before the rest of the table exists.

    customers.csv's last 28 columns are the signals and contacts, known before classification
    is done: their text is made while a core would otherwise wait (classification's last part
    runs mostly on one), and `write_csv` joins each slice's other cells to it. Each slice is
    made once, by whichever side comes to it first. Every slice's text is the cells `csv_cells`
    gives, joined by commas, so the rows come out byte for byte as without it.

    What is made ahead is held until the write: up to `budget` bytes of it as it is, then, up to
    `packed` more bytes, LZ4-compressed (CSV text of numbers and codes packs ~2.5x, at ~0.5 GB/s
    on the core that would otherwise wait, and unpacks at ~1.5 GB/s in the write); the rest is
    left to `write_csv`. At a million customers these columns' text is 207 MB: 96 MB held as it
    is (the budget until round 11) left a core idle for the last ~0.3 s of classification and
    the first ~0.2 s of the write; 192 MB, once the purchase history no longer stayed until the
    write, fits the memory target (bench/README.md, round 11).
    """

    def __init__(
        self, columns: dict[str, Any], rows: int, budget: int = 192 << 20, packed: int = 48 << 20
    ) -> None:
        self.names = list(columns)
        # A column given as None is all missing (a table built from the same dict holds None in
        # every row).
        self._columns = [
            v if isinstance(v, pd.Series) else pd.Series(np.full(rows, None, object) if v is None else v, copy=False)
            for v in columns.values()
        ]
        self._dtypes = [c.dtype for c in self._columns]
        self._rows = rows
        self._slice = _SLICE
        self._budget = budget
        self._packed = packed if _CODEC is not None else 0
        self._lock = threading.Lock()
        # slice start -> its text (being) made here: as it is, packed, or None (left to write_csv)
        self._made: dict[int, Future[pa.Array | _Packed | None]] = {}
        self._taken: set[int] = set()  # slices write_csv makes itself
        self._closed = False

    def start(self, when: threading.Event | None = None) -> Future[None]:
        """Make the slices' text, in order, on a thread: once `when` is set (other work no
        longer needs the second core), when given; never once closed."""
        return background.start(self._run, when, name="juno-cells")

    def _run(self, when: threading.Event | None) -> None:
        while when is not None and not when.wait(0.02):
            if self._closed:
                return
        made = packed = 0
        for start in range(0, self._rows, self._slice):
            with self._lock:
                if self._closed or (made >= self._budget and packed >= self._packed):
                    return
                if start in self._taken:
                    continue
                slot: Future[pa.Array | _Packed | None] = Future()
                self._made[start] = slot
            try:
                text: pa.Array | _Packed = self._text(start)
                if made >= self._budget:
                    text = _pack(text)
            except BaseException as exc:
                slot.set_exception(exc)
                return
            slot.set_result(text)
            if isinstance(text, _Packed):
                packed += len(text.data) + text.offsets.nbytes
            else:
                made += text.nbytes

    def _text(self, start: int) -> pa.Array:
        """The slice's cells joined by commas, each row ended by its newline (added to the last
        column's cells here, not to the joined text in the write: one copy of it fewer)."""
        cells = [csv_cells(s.iloc[start : start + self._slice]) for s in self._columns]
        cells[-1] = pc.binary_join_element_wise(cells[-1], text_scalar("\n"), text_scalar(""))
        return cells[0] if len(cells) == 1 else pc.binary_join_element_wise(*cells, text_scalar(","))

    def fits(self, frame: pd.DataFrame) -> bool:
        """Whether these are `frame`'s last columns (same names, types and length) and its
        slices `write_csv`'s."""
        k = len(self.names)
        if frame.shape[1] <= k or len(frame) != self._rows or self._slice != _SLICE:
            return False
        tail = frame.iloc[:, frame.shape[1] - k :]
        return [str(c) for c in tail.columns] == self.names and list(tail.dtypes) == self._dtypes

    def take(self, start: int) -> pa.Array | None:
        """The text of the slice at `start` (waited for if being made), or None: then the
        caller makes it, and this side no longer will."""
        with self._lock:
            slot = self._made.pop(start, None)
            if slot is None:
                self._taken.add(start)
                return None
        text = slot.result()
        return _unpack(text) if isinstance(text, _Packed) else text

    def close(self) -> None:
        """Make no more text ahead (what was made is dropped)."""
        with self._lock:
            self._closed = True
            self._made.clear()


def _lz4() -> pa.Codec | None:
    """Arrow's raw LZ4 codec (every pyarrow wheel has it), or None in a build without it."""
    try:
        return pa.Codec("lz4_raw") if pa.Codec.is_available("lz4_raw") else None
    except (ValueError, NotImplementedError):  # pragma: no cover - a build without compression
        return None


_CODEC = _lz4()


class _Packed(NamedTuple):
    """A slice's text held compressed: its bytes packed, and each row's start in them unpacked."""

    data: bytes  # exactly the packed size (Arrow's own result buffer keeps the worst case's)
    size: int  # the text's bytes, unpacked
    offsets: np.ndarray  # int64, one more than the rows, from 0


def _pack(text: pa.Array) -> pa.Array | _Packed:
    """The text (a large_string array without nulls) compressed, or as it is where it has nulls
    or no bytes."""
    offsets, _ = string_buffers(text)
    lo, hi = int(offsets[0]), int(offsets[-1])
    if _CODEC is None or text.null_count or hi == lo:
        return text
    body = text.buffers()[2].slice(lo, hi - lo)
    return _Packed(_CODEC.compress(body, asbytes=True), hi - lo, offsets - lo)


def _unpack(p: _Packed) -> pa.Array:
    assert _CODEC is not None
    data = _CODEC.decompress(p.data, decompressed_size=p.size)
    return pa.Array.from_buffers(pa.large_string(), len(p.offsets) - 1, [None, pa.py_buffer(p.offsets), data])


def _write_slices(path: Path, header: str, text: Callable[[int], memoryview], starts: range) -> None:
    """Each slice's text, in order; the next ones are built on a second thread meanwhile (Arrow
    kernels and numpy let go of the GIL), at most `_AHEAD` slices held at once. The file's
    sha256 is taken from the bytes as they are written (see `written_sha256`)."""
    digest = hashlib.sha256()
    with LargeFile(path) as fh:

        def put(chunk: bytes | memoryview) -> None:
            fh.write(chunk)
            digest.update(chunk)

        put(header.encode("utf-8"))
        if len(starts) == 1:
            put(text(starts[0]))
        else:
            with ThreadPoolExecutor(max_workers=_AHEAD) as pool:
                pending: deque[Future[memoryview]] = deque()
                for start in starts:
                    pending.append(pool.submit(text, start))
                    if len(pending) >= _AHEAD:
                        put(pending.popleft().result())
                while pending:
                    put(pending.popleft().result())
    _remember_sha256(path, digest.hexdigest())


# sha256 of the files write_csv wrote, by path, with the size and modification time they had then.
_WRITTEN: dict[str, tuple[tuple[int, int, int], str]] = {}


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mtime_ns


def _remember_sha256(path: Path, digest: str) -> None:
    if len(_WRITTEN) >= 64:  # a long-lived process (tests, notebooks) keeps the latest only
        del _WRITTEN[next(iter(_WRITTEN))]
    _WRITTEN[str(path.resolve())] = (_stamp(path), digest)


def written_sha256(path: Path) -> str | None:
    """The sha256 of a file this process wrote with `write_csv`, if it is unchanged since (same
    inode, size and modification time); None otherwise. Spares reading a large file back."""
    key = str(path.resolve())
    known = _WRITTEN.get(key)
    if known is None:
        return None
    try:
        if _stamp(path) == known[0]:
            return known[1]
    except OSError:
        pass
    del _WRITTEN[key]
    return None


def _quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if any(ch in name for ch in _SPECIALS) else name


def _csv_specials() -> str:
    """Characters that make the csv module quote a field (a lone '\\r' only on newer Pythons)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["\r", "x"])
    return ',"\n' + ("\r" if buf.getvalue().startswith('"') else "")


_SPECIALS = _csv_specials()


def text_scalar(text: str) -> pa.Scalar:
    """A text scalar of the type the cell kernels work in (large_string)."""
    return pa.scalar(text, pa.large_string())


def large_text(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A string column as one large_string array (chunks combined), the type the cell kernels
    work in."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    return a if a.type == pa.large_string() else a.cast(pa.large_string())


_FRACTIONS: list[pa.Array] = []


def _ending_texts() -> list[str]:
    """'.0001' ... '.9999' with trailing zeros dropped, '' for 0: the text of k % 10_000."""
    return [""] + ["." + f"{i:04d}".rstrip("0") for i in range(1, 10_000)]


def _fraction_text() -> pa.Array:
    """`_ending_texts` as an Arrow array."""
    if not _FRACTIONS:
        _FRACTIONS.append(pa.array(_ending_texts(), pa.large_string()))
    return _FRACTIONS[0]


_SMALL = 100_000
_NUMBERS: list[pa.Array] = []


def int_cells(values: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Integers as decimal text (str(int)), null where `null`: small non-negative ones looked up
    in a table of '0' ... '99999', others cast by Arrow."""
    v = np.asarray(values)
    if len(v) and v.dtype.kind in "iu" and int(v.min()) >= 0 and int(v.max()) < _SMALL:
        if not _NUMBERS:
            _NUMBERS.append(pa.array([str(i) for i in range(_SMALL)], pa.large_string()))
        return _NUMBERS[0].take(pa.array(v, mask=null))
    return pa.array(v, mask=null).cast(pa.large_string())


def float_cells(values: np.ndarray) -> pa.Array:
    """`format_floats` as an Arrow array (NaN as null): each cell's bytes put together in NumPy
    words where the text is short (`_short_float_text`); otherwise the whole part cast by Arrow,
    the fraction looked up in a table of the 10,000 four-digit endings, and the two joined. Huge
    or infinite values take `format_floats` itself."""
    # The value rounded to 4 decimals, in ten-thousandths: np.round(v, 4) is rint(v * 1e4) / 1e4,
    # and below 1e13 ten-thousandths (exact in float64) times 1e4 and rint give rint(v * 1e4)
    # back. (One multiply and rint, not np.round's three passes and another two.)
    r = np.rint(np.asarray(values, dtype=float) * 1e4)
    nan = np.isnan(r)
    a = np.abs(r)
    if not bool(((a < 1e13) | nan).all()):  # huge or infinite values: the reference text
        return large_text(pa.array(format_floats(values), pa.large_string()))
    a[nan] = 0.0
    whole, frac = _divmod_10k(a)
    negative = np.signbit(r) & ~nan  # -0.0 prints as "-0", as f"" does
    null = nan if nan.any() else None
    fraction = bool(frac.any())
    if fraction or negative.any():  # (whole numbers of one sign are one lookup as they are)
        short = _short_float_text(whole, frac, negative, null)
        if short is not None:
            return short
    parts = [int_cells(whole, null)]
    if fraction:  # whole numbers need no fraction column
        parts.append(_fraction_text().take(pa.array(frac)))
    if negative.any():
        parts.insert(0, pc.if_else(pa.array(negative), text_scalar("-"), text_scalar("")))
    return parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, text_scalar(""))


def _divmod_10k(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`np.divmod(a.astype(np.int64), 10_000)` for whole numbers 0 <= a < 2**53 held as
    float64 (or int64 under 2**53): the quotient by one float division and floor, exact there (a
    quotient's fraction is a multiple of 1e-4, far above float64's rounding at these sizes),
    instead of an int64 division per value (~4x the time)."""
    high = np.floor(a / 10_000.0).astype(np.int64)
    low = a.astype(np.int64) - high * 10_000
    return high, low


# Text as little-endian words of ASCII bytes: the first character in the lowest byte.
_LITTLE = sys.byteorder == "little"


@cache
def _digit_words() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Tables of text as words, read-only: '0000'..'9999' (uint64, 4 bytes used), the digits of
    0..9999 (uint64; 1 for 0), '.0001'..'.9999' less trailing zeros with '' for 0 (uint64, up to
    5 bytes) and their lengths (uint64), '00'..'99' (uint16)."""
    four = np.array([int.from_bytes(f"{i:04d}".encode(), "little") for i in range(10_000)], dtype=np.uint64)
    digits = np.array([len(str(i)) for i in range(10_000)], dtype=np.uint64)
    endings = _ending_texts()
    fraction = np.array([int.from_bytes(t.encode(), "little") for t in endings], dtype=np.uint64)
    fraction_length = np.array([len(t) for t in endings], dtype=np.uint64)
    two = np.array([int.from_bytes(f"{i:02d}".encode(), "little") for i in range(100)], dtype=np.uint16)
    tables = (four, digits, fraction, fraction_length, two)
    for t in tables:
        t.flags.writeable = False
    return tables


_U = np.uint64  # shifts and masks on uint64 words need uint64 operands


def _short_float_text(
    whole: np.ndarray, frac: np.ndarray, negative: np.ndarray, nan: np.ndarray | None
) -> pa.Array | None:
    """The text of `float_cells` from whole parts and ten-thousandths (int64, >= 0) and signs,
    null where `nan`; None unless every cell is at most 12 bytes (a whole part under 10**8).

    Each cell is made as two 64-bit words of ASCII (sign, the whole part's 8 digits from a table
    of four-digit words shifted past its leading zeros, and the ending '.dddd' less trailing
    zeros shifted in after it) and written as an Arrow string view, whose cells of up to 12
    bytes are held inline in 16 bytes: Arrow's cast to large_string packs them. No per-cell
    join: 2.9 -> ~1.8 ms a 65k-row slice of money values."""
    n = len(whole)
    if not _LITTLE or n == 0 or int(whole.max()) >= 10**8:
        return None
    four, digits, fraction, fraction_length, _ = _digit_words()
    high, low = _divmod_10k(whole)
    # digits of the whole part: 4 + those of its high half, or those of its low half
    nd = np.where(high > 0, digits[high] + _U(4), digits[low])
    word = four[high] | (four[low] << _U(32))
    word >>= (_U(8) - nd) << _U(3)  # the leading zeros out
    if negative.any():
        word = np.where(negative, (word << _U(8)) | _U(ord("-")), word)
        nd += negative
    length = nd + fraction_length[frac]
    if int(length.max()) > 12 or int(nd.max()) > 8:
        return None
    shift = nd << _U(3)
    ending = fraction[frac]
    first = word | (ending << shift)  # bytes 0-7 (a shift by 64 gives 0)
    second = ending >> (_U(64) - shift)  # bytes 8-15
    views = np.empty((n, 2), dtype=np.uint64)  # per cell: int32 length, 12 bytes inline
    np.bitwise_or(length, first << _U(32), out=views[:, 0])
    np.bitwise_or(first >> _U(32), second << _U(32), out=views[:, 1])
    valid = None if nan is None else pa.py_buffer(np.packbits(~nan, bitorder="little"))  # NaN: null
    text = pa.Array.from_buffers(pa.string_view(), n, [valid, pa.py_buffer(views)])
    return text.cast(pa.large_string())


_YEAR_1000 = int(np.datetime64("1000-01-01", "D").astype(np.int64))  # days from 1970-01-01
_YEAR_10000 = int(np.datetime64("9999-12-31", "D").astype(np.int64)) + 1
_DAY = 86_400


def _civil(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) of days since 1970-01-01 (int64), proleptic Gregorian: H. Hinnant's
    `civil_from_days`, in whole-array integer steps."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (month <= 2), month, day


def _date_words(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """'YYYY-MM-' (uint64) and 'DD' (uint16) of each day; years 1000-9999."""
    four, _, _, _, two = _digit_words()
    year, month, day = _civil(days)
    dash = _U(ord("-"))
    head = four[year] | (dash << _U(32)) | (two[month].astype(np.uint64) << _U(40)) | (dash << _U(56))
    return head, two[day]


@cache
def _clock_words() -> np.ndarray:
    """'HH:MM:SS' of each second of the day, as uint64 (read-only, 691 kB)."""
    two = _digit_words()[4].astype(np.uint64)
    hours, rest = np.divmod(np.arange(_DAY), 3600)
    minutes, secs = np.divmod(rest, 60)
    colon = _U(ord(":"))
    words = two[hours] | (colon << _U(16)) | (two[minutes] << _U(24)) | (colon << _U(40)) | (two[secs] << _U(48))
    words.flags.writeable = False
    return words


def datetime_cells(seconds: np.ndarray) -> pa.Array | None:
    """Date-times (datetime64[s]) as CSV cells, 'YYYY-MM-DDTHH:MM:SS', NaT as '': the text of
    Arrow's cast to text with the 'T' put in, from tables of dates and clock times written into
    19-byte rows (2.5-4.4 -> ~1 ms a 65k-row slice). None for years outside 1000-9999 (the
    caller casts)."""
    n = len(seconds)
    if not _LITTLE or n == 0:
        return None
    nat = np.isnat(seconds)
    s = seconds.view(np.int64)
    some_nat = bool(nat.any())
    if some_nat:
        s = s[~nat]  # the text of the others; each NaT is an empty cell
        if len(s) == 0:
            return None
    m = len(s)
    days = s // _DAY
    first, last = int(days.min()), int(days.max())
    if first < _YEAR_1000 or last >= _YEAR_10000:
        return None
    if last - first < m:  # one table entry per day of the slice's span, looked up by row
        head, dd = _date_words(np.arange(first, last + 1, dtype=np.int64))
        at = days - first
        head, dd = head[at], dd[at]
    else:
        head, dd = _date_words(days)
    text = np.empty(m * 19, dtype=np.uint8)

    def put(dtype: type[np.generic], offset: int, values: np.ndarray | int) -> None:
        np.ndarray(m, dtype=dtype, buffer=text, offset=offset, strides=(19,))[...] = values

    put(np.uint64, 0, head)
    put(np.uint16, 8, dd)
    put(np.uint8, 10, ord("T"))
    put(np.uint64, 11, _clock_words()[s - days * _DAY])
    if some_nat:
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.where(nat, 0, 19), out=offsets[1:])
    else:
        offsets = np.arange(0, 19 * (n + 1), 19, dtype=np.int64)
    return pa.Array.from_buffers(pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(text)])


def csv_cells(s: pd.Series) -> pa.Array:
    """One column's cells exactly as `write_csv` writes them (csv_frame's text, NA as empty, the
    csv module's minimal quoting), as an Arrow large_string array without nulls."""
    kind = s.dtype.kind
    numpy_backed = isinstance(s.dtype, np.dtype)
    if kind == "M" and numpy_backed:
        seconds = s.to_numpy(dtype="datetime64[ns]").astype("datetime64[s]")  # as format_datetimes
        made = datetime_cells(seconds)
        if made is not None:
            return made
        text = pc.utf8_replace_slice(pa.array(seconds).cast(pa.large_string()), 10, 11, "T")
        return large_text(text.fill_null(""))
    if kind == "f" and numpy_backed:
        return float_cells(s.to_numpy(float)).fill_null("")
    if kind == "b" and numpy_backed:
        return pc.if_else(pa.array(s.to_numpy(bool)), text_scalar("true"), text_scalar("false"))
    if kind in "iu" and numpy_backed:
        return int_cells(s.to_numpy())
    if kind in "Mfbiu":  # extension dtypes (tz-aware, nullable): the reference text, quoted below
        return quote_cells(large_text(pa.array(csv_frame(s.to_frame())[s.name].astype("string"))))
    text = large_text(pa.array(s.astype("string")))
    text = text.fill_null("") if text.null_count else text
    if _quoted_by_value(text):
        codes = pc.dictionary_encode(text)
        return quote_cells(escape_formulas(large_text(codes.dictionary))).take(codes.indices)
    return quote_cells(escape_formulas(text))


_SAMPLE = 1024


def _quoted_by_value(a: pa.Array) -> bool:
    """Whether a text column's cells are better made once per distinct text and looked up: a
    long column whose first 1,024 cells hold at most 256 distinct texts, at least 32 of them to
    be quoted (reason codes, next actions: lists with commas). At 1M rows, reason_codes 0.132 ->
    0.047 s and next_action 0.081 -> 0.045 s of CPU; a column that needs few quotes is cheaper
    as it is (the encoding costs ~1 ms a 65k-row slice)."""
    if len(a) < 8 * _SAMPLE:
        return False
    sample = a.slice(0, _SAMPLE)
    return (
        int(np.count_nonzero(holds_byte(sample, _SPECIALS.encode("ascii")))) >= _SAMPLE // 32
        and pc.count_distinct(sample).as_py() <= _SAMPLE // 4
    )


_FORMULA_BYTES = "".join(FORMULA_START).encode("ascii")


def escape_formulas(a: pa.Array) -> pa.Array:
    """`escape_cells` over Arrow (a large_string array without nulls): a quote in front of the
    cells that start like a formula."""
    risky = first_byte_in(a, _FORMULA_BYTES)
    if not risky.any():
        return a
    mask = pa.array(risky)
    return pc.replace_with_mask(a, mask, pc.binary_join_element_wise(text_scalar("'"), a.filter(mask), text_scalar("")))


def quote_cells(a: pa.Array) -> pa.Array:
    """Text cells (a large_string array) as the csv module writes them (minimal quoting, quotes
    doubled), NA as empty."""
    if a.null_count:
        a = a.fill_null("")
    needs = holds_byte(a, _SPECIALS.encode("ascii"))
    if not needs.any():
        return a
    mask = pa.array(needs)
    doubled = pc.replace_substring(a.filter(mask), '"', '""')
    quoted = pc.binary_join_element_wise(text_scalar('"'), doubled, text_scalar('"'), text_scalar(""))
    return pc.replace_with_mask(a, mask, quoted)


def write_text_csv(text: pd.DataFrame, path: Path) -> None:
    """A frame of cell texts (already escaped) as `text.to_csv(path, index=False,
    lineterminator="\\n")` writes it, the rows joined by Arrow."""
    plain = all(isinstance(text[c].dtype, pd.StringDtype) for c in text.columns)
    if text.shape[1] < 2 or len(text) == 0 or not plain:
        text.to_csv(path, index=False, lineterminator="\n")
        return
    with LargeFile(path) as fh:
        fh.write((",".join(_quote_name(str(c)) for c in text.columns) + "\n").encode("utf-8"))
        for start in range(0, len(text), _SLICE):
            part = text.iloc[start : start + _SLICE]
            fh.write(_lines([quote_cells(large_text(pa.array(part[c]))) for c in text.columns]))


def _lines(cells: list[pa.Array], ended: bool = False) -> memoryview:
    """Rows of cell texts joined by commas, each ended by a newline: a view of Arrow's buffer.
    `ended`: the last cells end with the newline already (`CellsAhead`'s text).

    Built in glibc's heap (Arrow's system pool), which keeps what one slice frees for the next
    (the `juno` command has it keep up to 256 MB: juno.memory). In Arrow's jemalloc, whose freed
    pages go back to the system within 250 ms, every slice's ~21 MB of rows came on fresh pages:
    1M Parquet write step 1.93-2.09 -> 1.75-1.78 s, page faults 140-183k -> 83-107k."""
    pool = pa.system_memory_pool()
    if not ended:
        last = pc.binary_join_element_wise(cells[-1], text_scalar("\n"), text_scalar(""), memory_pool=pool)
        cells = [*cells[:-1], last]
    lines = pc.binary_join_element_wise(*cells, text_scalar(","), memory_pool=pool)
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks()
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = lines.buffers()[2]
    assert data is not None
    return memoryview(data)[int(offsets[0]) : int(offsets[-1])]


def cohorts_frame(cohorts: list[CohortFacts]) -> pd.DataFrame:
    rows = []
    for c in sorted(cohorts, key=lambda c: int(c.priority[1:])):
        rows.append(
            {
                "priority": c.priority,
                "cohort": c.cohort,
                "size": c.size,
                "share_of_customers": c.share_of_customers,
                "value_window": c.value_window,
                "margin_window": c.margin_window,
                "value_share": c.value_share,
                "rule": c.rule,
                "definition": c.definition,
                "value_signal": c.value_signal,
                "risk": c.risk,
                "next_action": c.action,
                "timing": c.timing,
                "outreach_ready": c.outreach_ready,
                "held_back": c.held_back,
                "held_back_by_flag": "; ".join(f"{b.flag}: {b.count}" for b in c.held_back_by_flag),
                "primary_elsewhere": c.secondary_members,
                "priority_score": c.priority_score,
                "confidence": c.confidence,
                "confidence_reasons": "; ".join(c.confidence_reasons),
                "stability": c.stability,
                "thin_sample": c.thin,
                "margin_incomplete": c.margin_incomplete,
            }
        )
    return pd.DataFrame(rows)


def render_cohorts_md(brief: Brief) -> str:
    cohorts = sorted(brief.facts.cohorts, key=lambda c: int(c.priority[1:]))
    return environment().get_template("cohorts.md.j2").render(f=brief.facts, cohorts=cohorts)


def render_brief_md(brief: Brief, review: dict[str, Any] | None = None) -> str:
    return environment().get_template("brief.md.j2").render(
        brief=brief,
        n=brief.narrative,
        f=brief.facts,
        s=brief.facts.scope,
        p=brief.provenance,
        review=review or {},
    )


def write_json(obj: Any, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n", encoding="utf-8")

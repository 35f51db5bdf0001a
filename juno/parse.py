"""Vectorised cell parsers: each returns the typed values and a mask of cells that were not empty
but could not be parsed, so validation can reject those rows with a reason."""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0", ""}
EARLIEST = pd.Timestamp("1995-01-01")


def blank(s: pd.Series) -> pd.Series:
    """True where the cell is missing or only whitespace."""
    if s.dtype.kind in "fiumb":
        return s.isna()
    if s.dtype.kind == "M":
        return s.isna()
    return s.isna() | (s.astype("string").str.strip() == "")


def isin(s: pd.Series, values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """`s.isin(values)` as a bool array; for string columns one Arrow hash join instead of
    pandas' Python loop over `values` (seconds per million values)."""
    if not isinstance(s.dtype, pd.StringDtype) or s.dtype.storage != "pyarrow":
        return np.asarray(s.isin(values), dtype=bool)
    arr = pa.array(s)
    try:
        value_set = pa.array(values, from_pandas=True).cast(arr.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return np.asarray(s.isin(values), dtype=bool)
    return np.asarray(pc.is_in(arr, value_set=value_set).to_numpy(zero_copy_only=False), dtype=bool)


def positions(values: pd.Series, keys: pd.Series | pd.Index) -> np.ndarray:
    """`pd.Index(keys).get_indexer(values)` (-1 where absent) for unique string keys, by one
    Arrow hash lookup instead of an object-index probe per value."""
    index = pd.Index(keys)
    string_keys = index.dtype.kind in "OU" or isinstance(index.dtype, pd.StringDtype)
    if not (isinstance(values.dtype, pd.StringDtype) and string_keys):
        return np.asarray(index.get_indexer(values), dtype=np.intp)
    found = _index_in(pa.array(values), index)
    if found is None:
        return np.asarray(index.get_indexer(values), dtype=np.intp)
    return found


def _index_in(arr: pa.Array | pa.ChunkedArray, index: pd.Index) -> np.ndarray | None:
    try:
        value_set = pa.array(index, from_pandas=True).cast(arr.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    found = pc.index_in(arr, value_set=value_set, skip_nulls=True).fill_null(-1)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=np.intp)


def arrow_positions(arr: pa.Array, keys: pd.Series) -> np.ndarray:
    """`positions` for values already in Arrow form."""
    index = pd.Index(keys)
    found = _index_in(arr, index)
    if found is None:
        return np.asarray(index.get_indexer(string_series(arr)), dtype=np.intp)
    return found


def string_series(arr: pa.Array) -> pd.Series:
    """An Arrow string array as a pandas string column (Arrow-backed, no per-value objects)."""
    mapper = {arr.type: pd.StringDtype("pyarrow")}
    out: pd.Series = arr.to_pandas(types_mapper=mapper.get)
    return out


def is_increasing(s: pd.Series) -> bool:
    """True when every value is greater than the one before (so no two are equal); no missing."""
    if not _is_arrow_string(s):
        return bool(s.notna().all() and s.is_monotonic_increasing and s.is_unique)
    arr = arrow_chunks(s)
    if arr.null_count:
        return False
    n = len(arr)
    return n < 2 or bool(pc.all(pc.greater(arr.slice(1), arr.slice(0, n - 1))).as_py())


def arrow_chunks(s: pd.Series) -> pa.Array | pa.ChunkedArray:
    """The column's Arrow data as it is held (a Parquet read leaves dozens of chunks): kernels
    run over chunks, so no contiguous copy of a large column is made."""
    return pa.array(s)


def arrow_of(s: pd.Series) -> pa.Array:
    """The column as one contiguous Arrow array (a copy when it is held in chunks)."""
    arr = pa.array(s)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _is_arrow_string(s: pd.Series | pd.Index) -> bool:
    return isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"


def run_positions(values: pd.Series, keys: pd.Series) -> np.ndarray:
    """`positions(values, keys)` looking up each run of equal consecutive values once: order
    lines come grouped by order. When the runs are the keys themselves, in order (every order
    has lines and both files list them in the same order), nothing is looked up at all."""
    n = len(values)
    if n < 2 or not (_is_arrow_string(values) and _is_arrow_string(keys)):
        return positions(values, keys)
    arr = arrow_chunks(values)
    change = pc.not_equal(arr.slice(1), arr.slice(0, n - 1)).fill_null(True)
    starts = np.flatnonzero(np.r_[True, np.asarray(change.to_numpy(zero_copy_only=False), dtype=bool)])
    if len(starts) > 0.8 * n:  # not grouped: a run per value gains nothing
        return positions(values, keys)
    runs = arr.take(pa.array(starts))
    lengths = np.diff(np.r_[starts, n])
    karr = arrow_chunks(keys)
    if (
        len(runs) == len(karr)
        and runs.null_count == 0
        and karr.null_count == 0
        and runs.type == karr.type
        and pc.all(pc.equal(runs, karr)).as_py()
    ):
        at = np.arange(len(karr), dtype=np.intp)
    else:
        found = _index_in(runs, pd.Index(keys))
        if found is None:
            return positions(values, keys)
        at = found
    return np.repeat(at, lengths)


def has_duplicates(s: pd.Series) -> bool:
    """Whether a value other than missing occurs twice. A column sorted in increasing order
    (ids usually are) answers by one comparison pass, other columns by one hash pass."""
    if not _is_arrow_string(s):
        return bool((s.duplicated(keep=False) & s.notna()).any())
    arr = arrow_chunks(s)
    if arr.null_count:
        arr = arr.drop_null()
    n = len(arr)
    if n < 2 or pc.all(pc.greater(arr.slice(1), arr.slice(0, n - 1))).as_py():
        return False
    return len(pc.unique(arr)) < n


def clean_text(s: pd.Series) -> pd.Series:
    """Strings trimmed, a leading apostrophe removed (spreadsheet text marker), blanks as NA."""
    t = s.astype("string")
    if _already_clean(t):
        # The usual case: keep the column's own buffers instead of a copy of a large table.
        return t
    t = t.str.strip()
    t = t.str.removeprefix("'")
    return t.mask(t == "")


# Whole-column checks run over slices of this many rows: a kernel that builds a transformed copy
# to compare with (trimmed, lower-cased) then holds one slice's copy, not a whole column's.
_SLICE = 1 << 18


def _every_slice(arr: pa.Array | pa.ChunkedArray, test: Callable[[pa.Array], bool]) -> bool:
    return all(test(arr.slice(i, _SLICE)) for i in range(0, len(arr), _SLICE))


def _already_clean(t: pd.Series) -> bool:
    """True when clean_text would change no cell (same trim kernel as `str.strip`)."""
    if not _is_arrow_string(t):
        return False

    def clean(part: pa.Array) -> bool:
        if not pc.all(pc.equal(pc.utf8_trim_whitespace(part), part), min_count=0).as_py():
            return False
        return not (pc.any(pc.starts_with(part, "'")).as_py() or pc.any(pc.equal(part, "")).as_py())

    return _every_slice(pa.array(t), clean)


def lower_text(s: pd.Series) -> pd.Series:
    """`s.str.lower()`, keeping the column's own buffers when it has no upper-case letter."""
    if _is_arrow_string(s) and _every_slice(
        pa.array(s), lambda p: bool(pc.all(pc.equal(pc.utf8_lower(p), p), min_count=0).as_py())
    ):
        return s
    return s.str.lower()


def upper_text(s: pd.Series) -> pd.Series:
    """`s.str.upper()`, keeping the column's own buffers when it has no lower-case letter."""
    if _is_arrow_string(s) and _every_slice(
        pa.array(s), lambda p: bool(pc.all(pc.equal(pc.utf8_upper(p), p), min_count=0).as_py())
    ):
        return s
    return s.str.upper()


def parse_number(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numbers as float64; accepts '$1,234.50', ' 12 ', '€3'. Returns (values, bad)."""
    if s.dtype.kind in "fiu":
        v = s.astype("float64")
        return v, pd.Series(False, index=s.index)
    if s.dtype.kind == "b":
        return s.astype("float64"), pd.Series(False, index=s.index)
    t = s.astype("string").str.strip()
    plain = _plain_numbers(t)
    if plain is not None:
        return plain, pd.Series(False, index=s.index, dtype="bool[pyarrow]")
    empty = t.isna() | (t == "")
    v = pd.to_numeric(t, errors="coerce")
    failed = v.isna() & ~empty
    if failed.any():
        u = t[failed]
        neg = u.str.match(r"^\(.*\)$", na=False)
        u = u.str.replace(r"[()$€£¥\s]|USD|EUR|GBP", "", regex=True)
        # Thousands separators: '1,234' or '1,234.56'
        u = u.where(~u.str.match(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$", na=False), u.str.replace(",", ""))
        w = pd.to_numeric(u, errors="coerce")
        w = w.where(~neg, -w)
        v = v.astype("float64")
        v[failed] = w.astype("float64")
    v = v.astype("float64")
    inf = v.abs() == float("inf")
    v = v.mask(inf)
    bad = (v.isna() & ~empty) | inf
    return v, bad


# A decimal of at most 15 digits: pandas' parser and Arrow's both give the correctly rounded
# double (the digits are an exact integer, divided once by an exact power of ten).
_PLAIN_NUMBER = r"^-?[0-9]{1,9}(\.[0-9]{1,6})?$"
# ISO 8601 date-times, all with a UTC offset or all without one (then read as UTC, as pandas does).
_DATE = r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
_TIME = r"[T ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
_PLAIN_DATETIME_TZ = rf"^{_DATE}{_TIME}(Z|[+-]([01][0-9]|2[0-3]):?[0-5][0-9])$"
_PLAIN_DATETIME_NAIVE = rf"^{_DATE}({_TIME})?$"
# Seconds since the epoch that nanoseconds can hold (1678-2261): the rest go the long way.
_NS_SECONDS = (pd.Timestamp("1678-01-01").value // 10**9, pd.Timestamp("2261-12-31").value // 10**9)


def _only_plain(arr: pa.Array | pa.ChunkedArray, pattern: str) -> pa.Array | pa.ChunkedArray | None:
    """The cells as they are where they match `pattern`, missing where empty; None when a
    non-empty cell does not match. The patterns above are checked on the string buffers (the same
    answer per cell as the regex, a few numpy passes instead of RE2 per cell); others by regex."""
    check = _BYTE_CHECKS.get(pattern)
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    if check is None or not all(pa.types.is_string(c.type) or pa.types.is_large_string(c.type) for c in chunks):
        return _only_plain_regex(arr, pattern)
    kept = []
    for chunk in chunks:
        match = check(chunk)
        matched = np.count_nonzero(match)
        if matched != np.count_nonzero(_nonempty(chunk)):
            return None
        if matched == len(chunk) - chunk.null_count:  # no empty cells: nothing to blank
            kept.append(chunk)
        else:
            kept.append(pc.if_else(pa.array(match), chunk, pa.scalar(None, chunk.type)))
    return pa.chunked_array(kept, type=arr.type) if isinstance(arr, pa.ChunkedArray) else kept[0]


def _only_plain_regex(arr: pa.Array | pa.ChunkedArray, pattern: str) -> pa.Array | pa.ChunkedArray | None:
    """`_only_plain` by RE2, for patterns and types the byte checks do not cover."""
    match = pc.match_substring_regex(arr, pattern)
    nonempty = pc.not_equal(arr, "")
    if pc.any(pc.and_(nonempty, pc.invert(match))).as_py():
        return None
    return pc.if_else(match, arr, pa.scalar(None, arr.type))


def _string_buffers(a: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of a string or large_string array as numpy views of its buffers: cell i is
    bytes[offsets[i]:offsets[i + 1]] (the slice offset applied, null cells included)."""
    buffers = a.buffers()
    width = np.int64 if pa.types.is_large_string(a.type) else np.int32
    if buffers[1] is None:
        offsets = np.zeros(len(a) + 1, dtype=width)
    else:
        offsets = np.frombuffer(buffers[1], dtype=width)[a.offset : a.offset + len(a) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    return offsets, data


def _valid(a: pa.Array) -> np.ndarray | None:
    """Which cells are not null; None when none is."""
    if not a.null_count:
        return None
    return np.asarray(a.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _nonempty(a: pa.Array) -> np.ndarray:
    """Cells neither null nor empty."""
    offsets, _ = _string_buffers(a)
    out = offsets[1:] > offsets[:-1]
    valid = _valid(a)
    return out if valid is None else out & valid


_DIGIT, _DOT, _MINUS = ord("0"), ord("."), ord("-")
# Cells per numpy pass of the byte checks, so that a pass's per-cell arrays stay in the CPU cache;
# and at most this many bytes per pass of the number check (it keeps a count per byte).
_BLOCK = 1 << 16
_BLOCK_BYTES = 1 << 20


def _plain_number_cells(a: pa.Array) -> np.ndarray:
    """Per cell of a string array, whether it matches _PLAIN_NUMBER (False where null)."""
    offsets, data = _string_buffers(a)
    out = np.zeros(len(a), dtype=bool)
    i = 0
    while i < len(a):
        j = min(i + _BLOCK, len(a))
        if offsets[j] - offsets[i] > _BLOCK_BYTES:  # long cells, which cannot match: fewer at a time
            j = max(int(np.searchsorted(offsets, offsets[i] + _BLOCK_BYTES, side="right")) - 1, i + 1)
        if j > i + 1 or offsets[j] - offsets[i] <= 17:  # else one cell, too long to match (1 + 9 + 1 + 6)
            out[i:j] = _plain_number_block(offsets[i : j + 1], data)
        i = j
    valid = _valid(a)
    return out if valid is None else out & valid


def _plain_number_block(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Whether each cell data[offsets[i]:offsets[i + 1]] is an optional '-', 1-9 digits, then
    optionally '.' and 1-6 digits: the cell's non-digit bytes are counted (a running count over
    the bytes, read at the cell's ends) and the one after the sign, if any, must be that '.'."""
    size = int(offsets[-1] - offsets[0])
    signed, unsigned = (np.int32, np.uint32) if size < 2**31 - 2 else (np.int64, np.uint64)
    bounds: np.ndarray = np.empty(len(offsets), dtype=signed)
    np.subtract(offsets, offsets[0], out=bounds, casting="unsafe")
    starts, ends = bounds[:-1], bounds[1:]
    body = np.zeros(size + 1, dtype=np.uint8)  # a zero after the bytes, where empty cells at the end start
    body[:size] = data[offsets[0] : offsets[-1]]
    nondigit = (body[:size] - np.uint8(_DIGIT)) > 9  # anything else, non-ASCII bytes included
    seen = np.zeros(size + 1, dtype=signed)  # non-digits before each byte
    seen[1:] = nondigit
    np.cumsum(seen, out=seen)
    where = np.flatnonzero(nondigit)
    at = np.full(len(where) + 2, size, dtype=signed)  # where the non-digits are, then two past the end
    at[: len(where)] = where
    # np.take rather than [] below: it gathers by 32-bit positions without widening them first.
    minus = (np.take(body, starts) == _MINUS).view(np.uint8)
    counted = np.take(seen, bounds)
    sign = counted[:-1] + minus  # non-digits before the cell and its sign: at[sign] is the one after it
    extra = counted[1:] - sign  # the cell's non-digits after the sign
    lead = starts + minus + 1  # one past the first digit
    whole = (extra == 0) & ((ends - lead).view(unsigned) < 9)
    dot = np.take(at, sign)
    dotted = (extra == 1) & (np.take(body, dot) == _DOT) & ((dot - lead).view(unsigned) < 9)
    dotted &= (ends - dot - 2).view(unsigned) < 6
    out: np.ndarray = whole | dotted
    return out


def _datetime_layout(width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per character of an ISO date-time `width` long, the lowest byte allowed and the span above
    it: 'YYYY-MM-DD', then 'THH:MM:SS' (T or space), then 'Z', '+HHMM' or '+HH:MM' (+ or -).
    The first digit of each two-digit field is bounded here, the rest in _datetime_rows."""
    layout = "9999-19-39"
    if width >= 19:
        layout += "T29:59:59"
    layout += {20: "Z", 24: "+2959", 25: "+29:59"}.get(width, "")
    low = {"9": "0", "1": "0", "2": "0", "3": "0", "5": "0", "T": " ", "+": "+"}
    high = {"T": "T", "+": "-"}
    lo = np.array([ord(low.get(c, c)) for c in layout], dtype=np.uint8)
    hi = np.array([ord(high.get(c, c)) for c in layout], dtype=np.uint8)
    return lo, hi - lo


# Rows per pass of the date-time check; each width's layout is kept repeated over that many rows.
_DATETIME_ROWS = 1 << 14


@functools.cache
def _repeated_layout(width: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`_datetime_layout(width)` repeated `rows` times, to compare with that many rows' bytes."""
    lo, span = (np.tile(part, rows) for part in _datetime_layout(width))
    lo.setflags(write=False)
    span.setflags(write=False)
    return lo, span


# (position, lowest, highest) of the two-digit fields whose range the first digit does not settle:
# month, day, hour, offset hour.
_DATETIME_FIELDS = ((5, 1, 12), (8, 1, 31), (11, 0, 23), (20, 0, 23))


def _datetime_rows(rows: np.ndarray) -> np.ndarray:
    """Per row of a C-contiguous (n, width) byte matrix of at most _DATETIME_ROWS rows, whether it
    is a date-time the patterns accept."""
    count, width = rows.shape
    lo, span = _repeated_layout(width, _DATETIME_ROWS)
    flat = rows.reshape(-1)
    outside = (flat - lo[: flat.size]) > span[: flat.size]
    ok = ~outside.reshape(count, width).any(axis=1) if outside.any() else np.ones(count, dtype=bool)
    for at, low, high in _DATETIME_FIELDS:
        if at < width:  # both digits are digits where ok: 10 * '0' + '0' is 528, 16 in a byte
            value = rows[:, at] * np.uint8(10) + rows[:, at + 1]
            ok &= (value - np.uint8(16 + low)) <= np.uint8(high - low)
    if width >= 19:
        ok &= (rows[:, 10] == ord("T")) | (rows[:, 10] == ord(" "))
    if width >= 24:
        ok &= rows[:, 19] != ord(",")  # between '+' and '-'
    return ok


def _datetime_cells(a: pa.Array, widths: tuple[int, ...]) -> np.ndarray:
    """Per cell of a string array, whether it is an ISO date-time of one of `widths` characters
    that the date-time patterns accept (False where null). A column of one width (the usual case)
    is read as a matrix over its bytes; cells of other widths are copied out width by width."""
    n = len(a)
    out = np.zeros(n, dtype=bool)
    offsets, data = _string_buffers(a)
    body = data[offsets[0] : offsets[-1]] if n else data[:0]
    if not len(body):
        return out
    length = np.diff(offsets)
    nonempty = length > 0
    filled = np.count_nonzero(nonempty)
    width = int(length.max())
    if filled * width == len(body):  # every non-empty cell `width` long: they lie back to back
        if width in widths:
            rows = body.reshape(-1, width)
            step = _DATETIME_ROWS
            out[nonempty] = np.concatenate([_datetime_rows(rows[i : i + step]) for i in range(0, filled, step)])
    else:
        padded = np.zeros(len(body) + max(widths), dtype=np.uint8)
        padded[: len(body)] = body
        starts = offsets[:-1] - offsets[0]
        for width in widths:
            windows = np.lib.stride_tricks.as_strided(padded, (len(body), width), (1, 1), writeable=False)
            cells = np.flatnonzero(length == width)
            for i in range(0, len(cells), _DATETIME_ROWS):
                part = cells[i : i + _DATETIME_ROWS]
                out[part] = _datetime_rows(windows[starts[part]])
    valid = _valid(a)
    return out if valid is None else out & valid


_BYTE_CHECKS: dict[str, Callable[[pa.Array], np.ndarray]] = {
    _PLAIN_NUMBER: _plain_number_cells,
    _PLAIN_DATETIME_TZ: lambda a: _datetime_cells(a, (20, 24, 25)),
    _PLAIN_DATETIME_NAIVE: lambda a: _datetime_cells(a, (10, 19)),
}


def _plain_numbers(t: pd.Series) -> pd.Series | None:
    """What the general path gives (float64, NaN where empty) when every non-empty cell is a
    plain decimal: one Arrow cast instead of pd.to_numeric's per-cell Python objects."""
    if not _is_arrow_string(t) or not len(t):
        return None
    arr = _only_plain(pa.array(t), _PLAIN_NUMBER)
    if arr is None:
        return None
    try:
        values = np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if (np.signbit(values) & (values == 0)).any():
        return None  # '-0': pandas reads a column of integers as +0
    return pd.Series(values, index=t.index, name=t.name)


def _plain_datetimes(t: pd.Series) -> pd.Series | None:
    """What the general path gives before the plausibility check (naive UTC datetime64[ns], NaT
    where empty) when every non-empty cell is a plain ISO 8601 date-time; None otherwise."""
    if not _is_arrow_string(t) or not len(t):
        return None
    raw = pa.array(t)
    for pattern, unit in ((_PLAIN_DATETIME_TZ, pa.timestamp("s", "UTC")), (_PLAIN_DATETIME_NAIVE, pa.timestamp("s"))):
        arr = _only_plain(raw, pattern)
        if arr is None:
            continue
        try:
            seconds = pc.cast(pc.cast(arr, unit), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        low, high = pc.min(seconds).as_py(), pc.max(seconds).as_py()
        if low is not None and (low < _NS_SECONDS[0] or high > _NS_SECONDS[1]):
            return None
        ns = np.array(seconds.fill_null(np.iinfo(np.int64).min).to_numpy(), dtype=np.int64)
        valid = ns != np.iinfo(np.int64).min
        ns[valid] *= 10**9
        return pd.Series(ns.view("datetime64[ns]"), index=t.index, name=t.name)
    return None


def _as_ns(v: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Nanosecond timestamps; dates outside 1677-2262 (year -1, 9999) become missing, and bad."""
    if v.dtype == "datetime64[ns]":
        return v, pd.Series(False, index=v.index)
    within = _within_ns(v)
    if within is not None:
        return within, pd.Series(False, index=v.index)
    outside = (v < pd.Timestamp.min) | (v > pd.Timestamp.max)
    return v.mask(outside).astype("datetime64[ns]"), outside.fillna(False).astype(bool)


def _within_ns(v: pd.Series) -> pd.Series | None:
    """`v` (naive, in s/ms/us) as datetime64[ns] by integer arithmetic when every value fits in
    nanoseconds with room to spare (None otherwise): what the comparisons and cast give then."""
    if not isinstance(v.dtype, np.dtype) or v.dtype.kind != "M":
        return None
    values = v.to_numpy()
    per = {"s": 10**9, "ms": 10**6, "us": 10**3}.get(np.datetime_data(values.dtype)[0])
    if per is None:
        return None
    ints = values.view(np.int64)
    missing = ints == np.iinfo(np.int64).min
    present = ints[~missing] if missing.any() else ints
    low, high = (bound * (10**9 // per) for bound in _NS_SECONDS)
    if len(present) and (present.min() < low or present.max() > high):
        return None
    ns = ints * per
    ns[missing] = np.iinfo(np.int64).min
    return pd.Series(ns.view("datetime64[ns]"), index=v.index, name=v.name)


def parse_datetime(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Timestamps as naive UTC; offsets honoured, dates alone accepted. Returns (values, bad)."""
    if s.dtype.kind == "M":
        v = s
        if getattr(v.dt, "tz", None) is not None:
            v = v.dt.tz_convert("UTC").dt.tz_localize(None)
        v, bad = _as_ns(v)
    else:
        t = s.astype("string").str.strip()
        plain = _plain_datetimes(t)
        if plain is not None:
            implausible = plain < EARLIEST
            bad = pd.Series(False, index=s.index, dtype="bool[pyarrow]")
            return plain.mask(implausible), bad | implausible
        empty = t.isna() | (t == "")
        v = pd.to_datetime(t, utc=True, format="ISO8601", errors="coerce")
        failed = v.isna() & ~empty
        if failed.any():
            w = pd.to_datetime(t[failed], utc=True, format="mixed", errors="coerce")
            v[failed] = w
        v, _ = _as_ns(v.dt.tz_localize(None))
        bad = v.isna() & ~empty
    implausible = v < EARLIEST
    if implausible.any():
        v = v.mask(implausible)
    return v, bad | implausible


def parse_bool(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Booleans from true/false, yes/no, 1/0 in any case; blank is False. Returns (values, bad)."""
    if s.dtype.kind == "b":
        return s.fillna(False).astype(bool), pd.Series(False, index=s.index)
    if s.isna().all():  # an absent column: every cell blank, so False and not bad
        return pd.Series(False, index=s.index, name=s.name), pd.Series(False, index=s.index, name=s.name)
    t = s.astype("string").str.strip().str.lower().fillna("")
    val = t.isin(_TRUE)
    bad = ~val & ~t.isin(_FALSE)
    return val.astype(bool), bad


CONSENT_VALUES = (
    "subscribed",
    "unsubscribed",
    "never_subscribed",
    "pending",
    "invalid",
    "redacted",
    "unknown",
)
_CONSENT_ALIASES = {
    "yes": "subscribed",
    "true": "subscribed",
    "y": "subscribed",
    "1": "subscribed",
    "opted_in": "subscribed",
    "no": "unsubscribed",
    "false": "unsubscribed",
    "n": "unsubscribed",
    "0": "unsubscribed",
    "not_subscribed": "never_subscribed",
    "opted_out": "unsubscribed",
    "": "unknown",
}


def parse_consent(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Platform consent vocabulary in any case; yes/no from Shopify. Unknown words -> 'unknown'."""
    # A handful of distinct words per million rows: parse each once, spread back by code.
    codes, distinct = pd.factorize(s.astype("string"), use_na_sentinel=False)
    t, bad = _parse_consent_values(pd.Series(distinct, dtype="string"))
    return (
        t.take(codes).set_axis(s.index).astype("string"),
        bad.take(codes).set_axis(s.index).astype(bool),
    )


def _parse_consent_values(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    t = (
        s.astype("string")
        .str.strip()
        .str.lower()
        .str.replace(r"[\s-]+", "_", regex=True)
        .fillna("")
    )
    t = t.replace(_CONSENT_ALIASES)
    bad = ~t.isin(CONSENT_VALUES)
    return t.mask(bad, "unknown").astype("string"), bad

"""Vectorised cell parsers: each returns the typed values and a mask of cells that were not empty
but could not be parsed, so validation can reject those rows with a reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from juno.idkeys import id_words, integer_keys
from juno.idkeys import positions as integer_positions
from juno.plaincells import (
    PLAIN_DATETIME_NAIVE,
    PLAIN_DATETIME_TZ,
    PLAIN_NUMBER,
    only_plain,
    surely_trimmed,
    surely_unchanged_by_case,
)

_TRUE = {"true", "t", "yes", "y", "1", "1.0"}
_FALSE = {"false", "f", "no", "n", "0", "0.0", ""}
EARLIEST = pd.Timestamp("1995-01-01")


def blank(s: pd.Series) -> pd.Series:
    """True where the cell is missing or only whitespace."""
    if s.dtype.kind in "fiumb":
        return s.isna()
    if s.dtype.kind == "M":
        return s.isna()
    t = s.astype("string")
    if not _is_arrow_string(t):
        return t.isna() | (t.str.strip() == "")
    # Arrow's whitespace test is the one its strip uses: no stripped copy of the column.
    arr = pa.array(t)
    empty = pc.or_kleene(pc.equal(pc.utf8_length(arr), 0), pc.utf8_is_space(arr)).fill_null(True)
    return pd.Series(pd.arrays.ArrowExtensionArray(empty), index=s.index, name=s.name)  # bool[pyarrow], as the == gave


def _present_among(
    value_set: pa.Array | pa.ChunkedArray, arr: pa.Array | pa.ChunkedArray
) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray] | None:
    """With many more values than cells (64k tickets against a million customers): the values
    that occur among the cells, and their rows in `value_set`, from a hash of the cells alone.
    Looking the cells up in those gives the same answer (nulls too, first value on repeats)
    without a hash table of every value. None when the value set is not that much larger."""
    if len(value_set) <= 2 * len(arr):
        return None
    present = np.asarray(pc.is_in(value_set, value_set=arr).to_numpy(zero_copy_only=False), dtype=bool)
    return value_set.filter(pa.array(present)), np.flatnonzero(present)


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
    kept: np.ndarray | None = None
    as_ints = integer_keys(arr, value_set)
    if as_ints is not None:  # ids of a common shape: looked up as integers (juno.idkeys)
        return integer_positions(*as_ints)
    few = _present_among(value_set, arr)  # few values, many keys: then mapped back to key rows
    if few is not None:
        value_set, kept = few
    found = np.asarray(
        pc.index_in(arr, value_set=value_set, skip_nulls=True).fill_null(-1).to_numpy(zero_copy_only=False),
        dtype=np.intp,
    )
    if kept is not None:
        found = np.where(found >= 0, kept[np.maximum(found, 0)], -1) if len(kept) else np.full(len(found), -1)
    return np.asarray(found, dtype=np.intp)


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


def take_increasing(arr: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pa.Array | pa.ChunkedArray:
    """`arr.take(rows)` for increasing `rows`, chunk by chunk: Arrow's take over a chunked array
    first copies it into one (7.6M order ids: 1.3 s against 0.06 s)."""
    if not isinstance(arr, pa.ChunkedArray) or arr.num_chunks < 2:
        return arr.take(pa.array(rows))
    local = _rows_by_chunk([len(c) for c in arr.chunks], rows)
    parts = [c.take(pa.array(r)) for c, r in zip(arr.chunks, local, strict=True)]
    return pa.chunked_array(parts, type=arr.type)


def _rows_by_chunk(lengths: list[int], rows: np.ndarray) -> list[np.ndarray]:
    """Increasing `rows` numbered across chunks of these lengths, as each chunk's own rows."""
    bounds = np.cumsum([0, *lengths])
    cut = np.searchsorted(rows, bounds)
    return [rows[cut[i] : cut[i + 1]] - bounds[i] for i in range(len(lengths))]


def arrow_of(s: pd.Series) -> pa.Array:
    """The column as one contiguous Arrow array (a copy when it is held in chunks)."""
    arr = pa.array(s)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks != 1 else arr.chunk(0)
    return arr


def _is_arrow_string(s: pd.Series | pd.Index) -> bool:
    return isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow"


@dataclass
class Runs:
    """A column's runs of equal consecutive values (`value_runs`): each run's first row and length
    in `column`. For ids of one width of at most 8 bytes, each run's first id as a 64-bit word
    (`first_words`, equal exactly where the texts are): `run_positions` compares those with the
    keys' and gathers the runs' first texts (`firsts`) only when they differ."""

    column: pa.Array | pa.ChunkedArray
    starts: np.ndarray
    lengths: np.ndarray
    first_words: np.ndarray | None = None
    width: int = 0  # the ids' byte width, with first_words

    def firsts(self) -> pa.Array | pa.ChunkedArray:
        """The first value of each run."""
        return take_increasing(self.column, self.starts)


def value_runs(values: pd.Series) -> Runs | None:
    """The runs of equal consecutive values of an Arrow text column (order lines come grouped by
    order); None when it is no such column, or when runs would gain nothing (most values differ
    from the one before). Reads the column alone: a reader thread takes it before the keys exist.

    Ids of one width of at most 8 bytes are compared as 64-bit words (`idkeys.id_words`; a view
    of the text at 8 bytes), not as texts by Arrow: 7.6M order-line ids ~0.19 -> ~0.05 s, most of
    it the runs' first texts, which are then not gathered at all."""
    n = len(values)
    if n < 2 or not _is_arrow_string(values):
        return None
    arr = arrow_chunks(values)
    words = id_words(arr)
    if words is None:
        change = pc.not_equal(arr.slice(1), arr.slice(0, n - 1)).fill_null(True)
        changed = np.asarray(change.to_numpy(zero_copy_only=False), dtype=bool)
    else:
        changed = _word_changes(words[0])
    starts = np.flatnonzero(np.r_[True, changed])
    if len(starts) > 0.8 * n:  # not grouped: a run per value gains nothing
        return None
    if words is None:
        return Runs(arr, starts, np.diff(np.r_[starts, n]))
    return Runs(arr, starts, np.diff(np.r_[starts, n]), _take_words(words[0], starts), words[1])


def _word_changes(words: list[np.ndarray]) -> np.ndarray:
    """Per row after the first (chunks in order), whether its word differs from the row before."""
    parts: list[np.ndarray] = []
    last: np.uint64 | None = None
    for w in words:
        if not len(w):
            continue
        if last is not None:
            parts.append(np.array([w[0] != last]))
        parts.append(w[1:] != w[:-1])
        last = w[-1]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=bool)


def _take_words(words: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """The words at increasing `rows` (numbered across the chunks), chunk by chunk."""
    local = _rows_by_chunk([len(w) for w in words], rows)
    return np.concatenate([w[r] for w, r in zip(words, local, strict=True)] or [np.zeros(0, np.uint64)])


def _words_equal(words: np.ndarray, other: list[np.ndarray]) -> bool:
    """Whether `words` is `other`'s chunks end to end."""
    if len(words) != sum(len(w) for w in other):
        return False
    at = 0
    for w in other:
        if not np.array_equal(words[at : at + len(w)], w):
            return False
        at += len(w)
    return True


def run_positions(values: pd.Series, keys: pd.Series, runs: Runs | None = None) -> np.ndarray:
    """`positions(values, keys)` looking up each run of equal consecutive values once: order
    lines come grouped by order. When the runs are the keys themselves, in order (every order
    has lines and both files list them in the same order), nothing is looked up at all.
    `runs`: `value_runs(values)`, when taken already."""
    if runs is None:
        runs = value_runs(values)
    if runs is None or not _is_arrow_string(keys):
        return positions(values, keys)
    karr = arrow_chunks(keys)
    if runs.first_words is not None and len(runs.starts) == len(karr):
        key_words = id_words(karr)
        if key_words is not None and key_words[1] == runs.width and _words_equal(runs.first_words, key_words[0]):
            return np.repeat(np.arange(len(karr), dtype=np.intp), runs.lengths)
    firsts = runs.firsts()
    if (
        len(firsts) == len(karr)
        and firsts.null_count == 0
        and karr.null_count == 0
        and firsts.type == karr.type
        and pc.all(pc.equal(firsts, karr)).as_py()
    ):
        at = np.arange(len(karr), dtype=np.intp)
    else:
        found = _index_in(firsts, pd.Index(keys))
        if found is None:
            return positions(values, keys)
        at = found
    return np.repeat(at, runs.lengths)


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
    if not _is_arrow_string(t):
        t = t.str.strip()
        t = t.str.removeprefix("'")
        return t.mask(t == "")
    # The same steps by Arrow kernels: one trimmed copy, and further ones only where a cell
    # needs them (pandas' strip, removeprefix and mask copied the column three times over).
    x = pc.utf8_trim_whitespace(pa.array(t))
    marked = pc.starts_with(x, "'")
    if pc.any(marked).as_py():
        x = pc.if_else(marked, pc.utf8_slice_codeunits(x, 1), x)
    empty = pc.equal(x, "")
    if pc.any(empty).as_py():
        x = pc.if_else(empty, pa.scalar(None, x.type), x)
    return pd.Series(pd.array(x, dtype=t.dtype), index=s.index, name=s.name)


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
        if surely_trimmed(part):  # the bytes settle it for ids and codes: no trimmed copy made
            return True
        if not pc.all(pc.equal(pc.utf8_trim_whitespace(part), part), min_count=0).as_py():
            return False
        return not (pc.any(pc.starts_with(part, "'")).as_py() or pc.any(pc.equal(part, "")).as_py())

    return _every_slice(pa.array(t), clean)


def lower_text(s: pd.Series) -> pd.Series:
    """`s.str.lower()`, keeping the column's own buffers when it has no upper-case letter."""
    if _is_arrow_string(s) and _every_slice(
        pa.array(s),
        lambda p: surely_unchanged_by_case(p, upper=False)
        or bool(pc.all(pc.equal(pc.utf8_lower(p), p), min_count=0).as_py()),
    ):
        return s
    return s.str.lower()


def upper_text(s: pd.Series) -> pd.Series:
    """`s.str.upper()`, keeping the column's own buffers when it has no lower-case letter."""
    if _is_arrow_string(s) and _every_slice(
        pa.array(s),
        lambda p: surely_unchanged_by_case(p, upper=True)
        or bool(pc.all(pc.equal(pc.utf8_upper(p), p), min_count=0).as_py()),
    ):
        return s
    return s.str.upper()


def _none_bad(index: pd.Index) -> pd.Series:
    """An all-False bool[pyarrow] mask: built from a NumPy array (pandas repeats a scalar into an
    Arrow array element by element, ~0.4 s per 7.6M-row column)."""
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.array(np.zeros(len(index), dtype=bool))), index=index)


def _plain_before_strip(
    s: pd.Series, plain_values: Callable[[pd.Series], pd.Series | None]
) -> tuple[pd.Series, pd.Series | None]:
    """(the column as text, stripped unless every cell was plain; its plain values or None).
    Plain cells hold no spaces, so when every cell is plain the strip changes nothing: try
    before paying for a stripped copy of the column."""
    t = s.astype("string")
    plain = plain_values(t)
    if plain is None:
        t = t.str.strip()
        plain = plain_values(t)
    return t, plain


def parse_number(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Numbers as float64; accepts '$1,234.50', ' 12 ', '€3'. Returns (values, bad)."""
    if s.dtype.kind in "fiu":
        v = s.astype("float64")
        infinite = np.isinf(v.to_numpy())
        if infinite.any():  # not a number, as a text cell 'inf' is found to be below
            return v.mask(infinite), pd.Series(infinite, index=s.index)
        return v, pd.Series(False, index=s.index)
    if s.dtype.kind == "b":
        return s.astype("float64"), pd.Series(False, index=s.index)
    t, plain = _plain_before_strip(s, _plain_numbers)
    if plain is not None:
        return plain, _none_bad(s.index)
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


# Seconds since the epoch that nanoseconds can hold (1678-2261): the rest go the long way.
_NS_SECONDS = (pd.Timestamp("1678-01-01").value // 10**9, pd.Timestamp("2261-12-31").value // 10**9)


def _plain_numbers(t: pd.Series) -> pd.Series | None:
    """What the general path gives (float64, NaN where empty) when every non-empty cell is a
    plain decimal: one Arrow cast instead of pd.to_numeric's per-cell Python objects."""
    if not _is_arrow_string(t) or not len(t):
        return None
    arr = only_plain(pa.array(t), PLAIN_NUMBER)
    if arr is None:
        return None
    try:
        values = np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    if (np.signbit(values) & (values == 0)).any():
        return None  # '-0': pandas reads a column of integers as +0
    return pd.Series(values, index=t.index, name=t.name, copy=False)  # pandas 3 copies an array by default


def _plain_datetimes(t: pd.Series) -> pd.Series | None:
    """What the general path gives before the plausibility check (naive UTC datetime64[ns], NaT
    where empty) when every non-empty cell is a plain ISO 8601 date-time; None otherwise."""
    if not _is_arrow_string(t) or not len(t):
        return None
    raw = pa.array(t)
    for pattern, unit in ((PLAIN_DATETIME_TZ, pa.timestamp("s", "UTC")), (PLAIN_DATETIME_NAIVE, pa.timestamp("s"))):
        arr = only_plain(raw, pattern)
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
        return pd.Series(ns.view("datetime64[ns]"), index=t.index, name=t.name, copy=False)
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
    return pd.Series(ns.view("datetime64[ns]"), index=v.index, name=v.name, copy=False)


def parse_datetime(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Timestamps as naive UTC; offsets honoured, dates alone accepted. Returns (values, bad)."""
    if s.dtype.kind == "M":
        v = s
        if getattr(v.dt, "tz", None) is not None:
            # To UTC, then naive: tz_convert(None) does both by dropping the zone of values held
            # in UTC (tz_convert("UTC").tz_localize(None) gave the same in ~80 ms per 4.8M rows).
            v = v.dt.tz_convert(None)
        v, bad = _as_ns(v)
    else:
        t, plain = _plain_before_strip(s, _plain_datetimes)
        if plain is not None:
            implausible = plain < EARLIEST
            bad = _none_bad(s.index)
            return plain.mask(implausible), bad | implausible
        empty = t.isna() | (t == "")
        v = pd.to_datetime(t, utc=True, format="ISO8601", errors="coerce")
        failed = v.isna() & ~empty
        if failed.any():
            w = pd.to_datetime(t[failed], utc=True, format="mixed", errors="coerce")
            v[failed] = w
        v, _ = _as_ns(v.dt.tz_convert(None))  # (UTC: the same as tz_localize(None), at no cost)
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
    # A handful of distinct words per million rows: read each once, spread back by code.
    codes, distinct = pd.factorize(s.astype("string"), use_na_sentinel=False)
    t = pd.Series(distinct, dtype="string").str.strip().str.lower().fillna("")
    val = t.isin(_TRUE).to_numpy(bool)
    bad = ~val & ~t.isin(_FALSE).to_numpy(bool)
    return (
        pd.Series(val[codes], index=s.index, name=s.name, copy=False),
        pd.Series(bad[codes], index=s.index, name=s.name, copy=False),
    )


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
    if isinstance(s.dtype, pd.CategoricalDtype):  # read as codes (FEW_DISTINCT): missing last
        words = pd.Series(s.cat.categories, dtype="string")
        distinct = pd.concat([words, pd.Series([pd.NA], dtype="string")], ignore_index=True)
        codes = s.cat.codes.to_numpy()
        codes = np.where(codes < 0, len(words), codes)
    else:
        codes, found = pd.factorize(s.astype("string"), use_na_sentinel=False)
        distinct = pd.Series(found, dtype="string")
    t, bad = _parse_consent_values(distinct)
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

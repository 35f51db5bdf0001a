"""Duplicate customer records: normalised email and E.164 phone, grouped transitively."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from juno.config import Duplicates
from juno.grouping import hashed_key_codes, key_codes, text_hashes, text_key_codes
from juno.plaincells import cell_sums, first_byte_in, holds_byte, string_buffers, surely_trimmed


def _rewrite(values: pa.Array, where: pa.Array, fn: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """`if_else(where, fn(values), values)`, computing fn on the selected rows only."""
    if not pc.any(where).as_py():
        return values
    return pc.replace_with_mask(values, where, fn(pc.filter(values, where)))


def normalise_email(s: pd.Series, cfg: Duplicates) -> pd.Series:
    """Lower-case, trimmed; optional plus-tag and Gmail-dot folding."""
    e = s.astype("string")
    if isinstance(e.dtype, pd.StringDtype) and e.dtype.storage == "pyarrow":
        arr = pa.array(e)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        # What pandas' str.strip().str.lower() run on Arrow strings, without a Series per step:
        # by the ASCII kernels where they give the same (no byte the Unicode ones treat apart).
        if _plain_ascii(arr):
            arr = pc.ascii_lower(pc.ascii_trim_whitespace(arr))
        else:
            arr = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
    else:
        arr = pa.array(e.str.strip().str.lower())
    # Most addresses are their own key: one with an '@' after some text, no '+' and neither
    # Gmail domain is rewritten to itself. Only the others are split and rewritten (1M addresses
    # with few such: 0.34 -> ~0.17 s).
    rewrite = pc.less_equal(pc.find_substring(arr, "@"), 0)  # no '@', or nothing before it
    if cfg.ignore_plus_tags:
        rewrite = pc.or_(rewrite, pc.match_substring(arr, "+"))
    rewrite = pc.or_(rewrite, pc.ends_with(arr, "@googlemail.com"))
    if cfg.ignore_gmail_dots:
        rewrite = pc.or_(rewrite, pc.ends_with(arr, "@gmail.com"))
    keyed = _rewrite(arr, pc.fill_null(rewrite, False), lambda x: _rewritten(x, cfg))
    return pd.Series(pd.array(keyed, dtype="string"), index=s.index)


def email_key_codes(s: pd.Series, cfg: Duplicates) -> tuple[np.ndarray, int]:
    """`key_codes(normalise_email(s, cfg))` up to the numbering of the keys (as
    `text_key_codes` numbers them): (per row its key's code, -1 where it has none; the number
    of codes). Equal keys, equal codes, and only then.

    Most addresses are their own key once lower-cased. Those are hashed as they are; the few
    `normalise_email` rewrites (no '@' after some text, a plus tag, Gmail) are rewritten alone
    and hashed, and no key column of every address is put together. The '@' and '+' are found
    from the bytes (`plaincells.holds_byte`, `first_byte_in`), and the trim is skipped where
    `surely_trimmed` says it changes no cell (Arrow's substring kernels and the merge of the
    rewritten keys took ~0.15 s of the ~0.2 s per million addresses). Text with non-ASCII bytes, or not held
    by Arrow, takes `normalise_email` itself."""
    e = s.astype("string")
    if not (isinstance(e.dtype, pd.StringDtype) and e.dtype.storage == "pyarrow"):
        return text_key_codes(normalise_email(s, cfg))
    arr = pa.array(e)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not _plain_ascii(arr):
        return text_key_codes(normalise_email(s, cfg))
    if not surely_trimmed(arr):  # (else no cell has whitespace to trim)
        arr = pc.ascii_trim_whitespace(arr)
    arr = pc.ascii_lower(arr)
    n = len(arr)
    valid = np.ones(n, dtype=bool) if not arr.null_count else np.asarray(
        arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool
    )
    # Rewritten: no '@', or nothing before the first one (find_substring(arr, "@") <= 0) ...
    rewrite = ~holds_byte(arr, b"@") | first_byte_in(arr, b"@")
    if cfg.ignore_plus_tags:  # ... a '+' anywhere ...
        rewrite |= holds_byte(arr, b"+")
    rewrite |= np.asarray(pc.ends_with(arr, "@googlemail.com").fill_null(False).to_numpy(zero_copy_only=False))
    if cfg.ignore_gmail_dots:  # ... or a Gmail address
        rewrite |= np.asarray(pc.ends_with(arr, "@gmail.com").fill_null(False).to_numpy(zero_copy_only=False))
    rewrite &= valid
    rows = np.flatnonzero(rewrite)
    hashes = text_hashes(arr)
    if not len(rows):
        return hashed_key_codes(hashes, None if arr.null_count == 0 else valid, lambda r: arr.take(pa.array(r)))
    rewritten = _rewritten(arr.take(pa.array(rows)), cfg)
    hashes[rows] = text_hashes(rewritten)
    if rewritten.null_count:
        valid = valid.copy()
        valid[rows] = np.asarray(rewritten.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    # Where each row's key is: its own text, or its rewritten one (`rewritten`'s position + n).
    where = np.arange(n, dtype=np.int64)
    where[rows] = n + np.arange(len(rows), dtype=np.int64)
    rewritten = rewritten.cast(arr.type)

    def texts(r: np.ndarray) -> pa.Array:
        """The keys of rows `r`, in their order: taken from the two arrays, then put in order."""
        w = where[r]
        own = w < n
        if own.all():
            return arr.take(pa.array(r))
        kept = pa.concat_arrays([arr.take(pa.array(w[own])), rewritten.take(pa.array(w[~own] - n))])
        at = np.empty(len(r), dtype=np.int64)
        at[own] = np.arange(int(own.sum()))
        at[~own] = int(own.sum()) + np.arange(int((~own).sum()))
        return kept.take(pa.array(at))

    return hashed_key_codes(hashes, None if valid.all() else valid, texts)


def _plain_ascii(arr: pa.Array) -> bool:
    """Whether every byte is ASCII outside 0x1c-0x1f (which Arrow's Unicode trim takes for
    whitespace and its ASCII trim does not): the ASCII kernels then give the Unicode ones' text."""
    offsets, data = string_buffers(arr)
    body = data[int(offsets[0]) : int(offsets[-1])] if len(arr) else data[:0]
    return not bool(((body >= 0x80) | ((body >= 0x1C) & (body <= 0x1F))).any())


def _rewritten(arr: pa.Array, cfg: Duplicates) -> pa.Array:
    """`normalise_email`'s keys of lower-cased, trimmed addresses: split at the first '@' (null
    without one), Googlemail as Gmail, the plus tag and Gmail dots dropped as configured, null
    where nothing comes before the '@'."""
    # Arrow kernels throughout: splitting into Python lists costs ~30 s per million emails.
    local, domain = _split_at(arr)
    domain = pc.if_else(pc.equal(domain, "googlemail.com"), "gmail.com", domain)
    # Each rewrite runs on the rows it can change only (few have a plus tag or a Gmail address).
    if cfg.ignore_plus_tags:
        plus = pc.fill_null(pc.match_substring(local, "+"), False)
        local = _rewrite(local, plus, lambda x: pc.replace_substring_regex(x, r"(?s)\+.*", ""))
    if cfg.ignore_gmail_dots:
        gmail = pc.fill_null(pc.equal(domain, "gmail.com"), False)
        local = _rewrite(local, gmail, lambda x: pc.replace_substring(x, ".", ""))
    joined = pc.binary_join_element_wise(local, domain, pa.scalar("@", local.type))
    out: pa.Array = pc.if_else(pc.fill_null(pc.equal(local, ""), False), pa.scalar(None, joined.type), joined)
    return out


def _split_at(arr: pa.Array) -> tuple[pa.Array, pa.Array]:
    """(the text before the first '@', the text after it), both null where there is no '@'.

    One split into at most two parts (a third of the time of the equivalent regex extract,
    0.57 s per million emails): the parts are then taken from the split's values by its list
    offsets, masked where a cell split into fewer than two."""
    parts = pc.split_pattern(arr, "@", max_splits=1)
    if isinstance(parts, pa.ChunkedArray):
        parts = parts.combine_chunks()
    two = np.asarray(pc.equal(pc.list_value_length(parts), 2).fill_null(False).to_numpy(zero_copy_only=False))
    values = parts.values
    first = np.asarray(parts.offsets.to_numpy(zero_copy_only=False)[:-1], dtype=np.int64)
    first = np.where(two, first, 0)  # cells without two parts: any row, masked below
    return values.take(pa.array(first, mask=~two)), values.take(pa.array(first + two, mask=~two))


def _phone_text(s: pd.Series) -> pa.Array:
    """The column as one Arrow string array, trimmed of whitespace."""
    t = s.astype("string")
    arr = pa.array(t) if isinstance(t.dtype, pd.StringDtype) and t.dtype.storage == "pyarrow" else None
    if arr is None:
        arr = pa.array(t.astype(object).to_numpy(), pa.large_string(), from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    return pc.utf8_trim_whitespace(arr)


def normalise_phone(s: pd.Series, cfg: Duplicates) -> pd.Series:
    """E.164-style: '+1 (415) 555-0101', '4155550101' and '001 415 555 0101' all -> '+14155550101'.

    Arrow kernels on the column (pandas' string methods made a Series per step: 0.5 s per
    million phones); the digits are kept by one pass over the bytes. The definition of the
    phone keys: duplicate detection groups by `phone_key_codes`, which numbers the same keys."""
    raw = _phone_text(s)
    if not pc.all(pc.string_is_ascii(raw), min_count=0).as_py():
        return _normalise_phone_text(s, cfg)  # Unicode digits count as digits: Python's regex
    plus = pc.fill_null(pc.starts_with(raw, "+"), False)
    d = _digits(raw)
    # An international prefix: '00' leading the digits is dropped (unless a '+' leads), and a
    # number is international when the text starts with '+' or '00'.
    zeros = pc.fill_null(pc.starts_with(d, "00"), False)
    d = pc.if_else(pc.and_(pc.invert(plus), zeros), pc.utf8_slice_codeunits(d, 2), d)
    intl = pc.or_(plus, pc.fill_null(pc.starts_with(raw, "00"), False))
    cc = cfg.default_phone_country
    length = pc.utf8_length(d)
    national = pc.and_(pc.invert(intl), pc.equal(length, 10))
    d = pc.if_else(national, pc.binary_join_element_wise(pa.scalar(cc, d.type), d, pa.scalar("", d.type)), d)
    trunk = pc.and_(pc.and_(pc.invert(intl), pc.equal(pc.utf8_length(d), 11)), pc.starts_with(d, cc))
    keep = pc.fill_null(pc.and_(pc.or_(pc.or_(national, trunk), intl), pc.greater_equal(pc.utf8_length(d), 8)), False)
    out = pc.if_else(keep, pc.binary_join_element_wise(pa.scalar("+", d.type), d, pa.scalar("", d.type)), None)
    return pd.Series(pd.array(out, dtype="string"), index=s.index, name=s.name)


def _normalise_phone_text(s: pd.Series, cfg: Duplicates) -> pd.Series:
    """`normalise_phone` by pandas' string methods, for columns with non-ASCII text."""
    raw = s.astype("string").str.strip()
    plus = raw.str.startswith("+", na=False)
    d = raw.str.replace(r"\D", "", regex=True)
    d = d.where(plus | ~d.str.startswith("00", na=False), d.str.slice(2))
    intl = plus | raw.str.startswith("00", na=False)
    cc = cfg.default_phone_country
    national = ~intl & (d.str.len() == 10)
    d = d.where(~national, cc + d)
    trunk = ~intl & (d.str.len() == 11) & d.str.startswith(cc, na=False)
    d = d.mask(~(national | trunk | intl))
    out: pd.Series = ("+" + d).mask(d.str.len() < 8)
    return out


_BLOCK = 1 << 16
# A key's digits are held as one int64 (value x 32 + digit count) up to this many digits.
_KEY_DIGITS = 17
_POW10 = 10 ** np.arange(19, dtype=np.int64)


def phone_key_codes(s: pd.Series, cfg: Duplicates) -> tuple[np.ndarray, int]:
    """`key_codes(normalise_phone(s, cfg))` up to the numbering of the keys: (per row its key's
    code, -1 where it has none; the number of keys). Equal keys, equal codes, and only then.

    A key is '+' and a string of digits, so it is told apart by its digits' count and value:
    one int64 per phone, made from the digits in NumPy and numbered by one integer hash
    (normalise_phone's Arrow text and its dictionary encoding took ~0.4 s of CPU per million
    customers on the duplicate-identity thread). Text with non-ASCII characters, a country code
    that is not digits, or a kept key of over 17 digits take `normalise_phone` itself."""
    raw = _phone_text(s)
    cc = cfg.default_phone_country
    if not (cc.isascii() and (cc == "" or cc.isdigit())) or len(cc) > 6:
        return key_codes(normalise_phone(s, cfg))
    if not pc.all(pc.string_is_ascii(raw), min_count=0).as_py():
        return key_codes(normalise_phone(s, cfg))
    n = len(raw)
    offsets, data = string_buffers(raw)
    starts = offsets[:-1].astype(np.int64)
    size = offsets[1:].astype(np.int64) - starts
    valid = np.ones(n, dtype=bool) if not raw.null_count else np.asarray(
        raw.is_valid().to_numpy(zero_copy_only=False), dtype=bool
    )
    # The text's first two bytes (a '+', or '00': an international number); a shorter cell
    # reads a neighbour's, then is masked out.
    if len(data):
        b0 = data[np.minimum(starts, len(data) - 1)]
        b1 = data[np.minimum(starts + 1, len(data) - 1)]
    else:
        b0 = b1 = np.zeros(n, dtype=np.uint8)
    plus = valid & (size >= 1) & (b0 == ord("+"))
    intl = plus | (valid & (size >= 2) & (b0 == ord("0")) & (b1 == ord("0")))
    count, value = _digit_values(offsets, data)
    # '00' leading the digits is dropped unless a '+' leads (a value ignores leading zeros).
    two = np.maximum(count - 2, 0)
    zeros = (count >= 2) & (count <= 18) & (value < _POW10[np.minimum(two, 18)])
    count = np.where(~plus & zeros, count - 2, count)
    national = ~intl & (count == 10)
    k = len(cc)
    if national.any():  # the country code put in front of a bare national number
        value = np.where(national, int(cc or "0") * _POW10[10] + value, value)
        count = np.where(national, count + k, count)
    trunk = ~intl & (count == 11)
    if k:  # ... whose digits then start with the country code
        trunk &= value // _POW10[11 - k] == int(cc)
    keep = valid & (national | trunk | intl) & (count >= 8)
    if bool((count[keep] > _KEY_DIGITS).any()):
        return key_codes(normalise_phone(s, cfg))
    codes = np.full(n, -1, dtype=np.int64)
    found, keys = pd.factorize(value[keep] * 32 + count[keep])
    codes[keep] = found
    return codes, len(keys)


def _digit_values(offsets: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of an ASCII text array's buffers: (how many digits it holds, their value as a
    decimal number; only meaningful up to 18 digits)."""
    n = len(offsets) - 1
    count = np.zeros(n, dtype=np.int64)
    value = np.zeros(n, dtype=np.int64)
    for i in range(0, n, _BLOCK):  # in blocks of cells: per-digit arrays stay small
        j = min(i + _BLOCK, n)
        lo, hi = int(offsets[i]), int(offsets[j])
        if hi == lo:
            continue
        digit = (data[lo:hi] - np.uint8(48)) <= 9
        per = cell_sums(offsets[i : j + 1], digit, _BLOCK)
        count[i:j] = per
        g = (data[lo:hi][digit] - np.uint8(48)).astype(np.int64)
        if not len(g):
            continue
        ends = np.cumsum(per)
        # Each digit's power of ten: the digits after it in its cell.
        power = np.repeat(ends, per) - 1 - np.arange(len(g), dtype=np.int64)
        g *= _POW10[np.minimum(power, 18)]
        held = np.flatnonzero(per)
        value[i + held] = np.add.reduceat(g, (ends - per)[held])
    return count, value


def _digits(arr: pa.Array) -> pa.Array:
    """Each cell of an ASCII text array with only its digits kept; null stays null."""
    offsets, data = string_buffers(arr)
    body = data[int(offsets[0]) : int(offsets[-1])]
    digit = (body - np.uint8(48)) <= 9
    counts = cell_sums(offsets, digit, _BLOCK)  # digits per cell
    new_offsets = np.zeros(len(arr) + 1, dtype=np.int64)
    np.cumsum(counts, out=new_offsets[1:])
    out = pa.LargeStringArray.from_buffers(len(arr), pa.py_buffer(new_offsets), pa.py_buffer(body[digit].tobytes()))
    return pc.if_else(pc.is_valid(arr), out, pa.scalar(None, pa.large_string())) if arr.null_count else out


def duplicate_groups(customers: pd.DataFrame, cfg: Duplicates) -> np.ndarray:
    """Per customer row, the row index of the first record of its identity (itself when unique).

    Records sharing an email key or a phone key are one identity, transitively (label
    propagation over both keys until stable; converges in a few passes). Keys are integer
    codes (one Arrow dictionary encode each), so a pass is a scatter-min, not a string groupby.
    Only keys that two or more records hold take part: a key held once links nothing, and at a
    million customers nearly every key is held once (each pass then scatters over a few
    thousand rows, not a million).
    """
    n = len(customers)
    label = np.arange(n)
    keys = []
    for codes, n_keys in (
        email_key_codes(customers["email"], cfg),
        phone_key_codes(customers["phone"], cfg),
    ):
        held = codes >= 0
        if not held.any():
            continue
        shared = np.bincount(codes[held], minlength=n_keys) > 1
        idx = np.flatnonzero(held)
        idx = idx[shared[codes[idx]]]
        if len(idx):
            keys.append((idx, codes[idx], n_keys))
    for _ in range(20):
        before = label.copy()
        for idx, code, n_keys in keys:
            mins = np.full(n_keys, n, dtype=label.dtype)
            np.minimum.at(mins, code, label[idx])
            label[idx] = np.minimum(label[idx], mins[code])
        # Follow chains: a label's own label may be smaller.
        label = label[label]
        if np.array_equal(label, before):
            break
    return label

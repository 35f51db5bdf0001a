"""Duplicate customer records: normalised email and E.164 phone, grouped transitively."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from juno.config import Duplicates
from juno.grouping import key_codes


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
        # What pandas' str.strip().str.lower() run on Arrow strings, without a Series per step.
        arr = pc.utf8_lower(pc.utf8_trim_whitespace(arr))
    else:
        arr = pa.array(e.str.strip().str.lower())
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
    joined = pc.if_else(pc.fill_null(pc.equal(local, ""), False), pa.scalar(None, joined.type), joined)
    return pd.Series(pd.array(joined, dtype="string"), index=s.index)


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


def normalise_phone(s: pd.Series, cfg: Duplicates) -> pd.Series:
    """E.164-style: '+1 (415) 555-0101', '4155550101' and '001 415 555 0101' all -> '+14155550101'."""
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


def duplicate_groups(customers: pd.DataFrame, cfg: Duplicates) -> np.ndarray:
    """Per customer row, the row index of the first record of its identity (itself when unique).

    Records sharing an email key or a phone key are one identity, transitively (label
    propagation over both keys until stable; converges in a few passes). Keys are integer
    codes (one Arrow dictionary encode each), so a pass is a scatter-min, not a string groupby.
    """
    n = len(customers)
    label = np.arange(n)
    keys = []
    for key in (normalise_email(customers["email"], cfg), normalise_phone(customers["phone"], cfg)):
        codes, n_keys = key_codes(key)
        idx = np.flatnonzero(codes >= 0)
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

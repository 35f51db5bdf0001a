"""Ids as integers for lookups: the same rows as looking up the texts, in a fraction of the time.

Every order names its customer by id, and validation finds each order's customer row by looking
its id up among the customers' (5M lookups into 1M ids at a million customers). A hash lookup of
strings costs ~0.7 s there, one of integers about half, and indexing an array by the id itself
(ids numbered from a counter, as most shop databases number them) a few hundredths.

`integer_keys` turns both sides into uint64 keys that are equal exactly when the texts are:
- ids of one width with a shared prefix and digits after it ('C0000001', 'CUST-000123'): the
  number the digits spell (same width, so different digits are different numbers);
- other ids of one width of at most 8 bytes: the bytes themselves;
- plain decimal integers without leading zeros ('6234567890123', Shopify's): the number.
`positions` then indexes a table when the keys are unique and span a compact range, and hashes
the integers otherwise.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from juno.plaincells import string_buffers

_MAX_DIGITS = 18  # below 2**63: no overflow summing them
_DENSE_SPAN = 4  # a table at most this many times as long as the keys (plus a little)


def chunks(a: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(a.chunks) if isinstance(a, pa.ChunkedArray) else [a]


def integer_keys(
    values: pa.Array | pa.ChunkedArray, keys: pa.Array | pa.ChunkedArray
) -> tuple[list[np.ndarray], np.ndarray] | None:
    """(the values' chunks, the keys) as uint64 arrays, equal exactly where the texts are; None
    when the ids have none of the shapes above, or any is missing."""
    vs, ks = chunks(values), chunks(keys)
    both = [*ks, *vs]
    if not sum(len(c) for c in ks) or not _present_texts(both):
        return None
    width = _fixed_width(both)
    if width is not None:
        prefix = _digit_prefix(both, width)
        if prefix is not None:
            return [_digit_number(c, width, prefix) for c in vs], _joined([_digit_number(c, width, prefix) for c in ks])
        if width <= 8:
            return [_packed(c, width) for c in vs], _joined([_packed(c, width) for c in ks])
    if all(_plain_integers(c) for c in both):
        def number(c: pa.Array) -> np.ndarray:
            return np.asarray(pc.cast(c, pa.uint64()).to_numpy(zero_copy_only=False), dtype=np.uint64)

        return [number(c) for c in vs], _joined([number(c) for c in ks])
    return None


def id_words(a: pa.Array | pa.ChunkedArray) -> tuple[list[np.ndarray], int] | None:
    """(each chunk's cells as one uint64 each, the width): a cell's bytes with zero bytes after
    them, so two cells' words are equal exactly where their texts are; None unless every cell is
    present and all have one width of 1 to 8 bytes. Views of the text when the width is 8."""
    parts = chunks(a)
    if not _present_texts(parts):
        return None
    width = _fixed_width(parts)
    if width is None or width > 8:
        return None
    return [_packed(c, width) for c in parts], width


def _present_texts(arrays: list[pa.Array]) -> bool:
    """Whether every array is text (string or large_string) without a missing cell."""
    return all(
        not c.null_count and (pa.types.is_string(c.type) or pa.types.is_large_string(c.type)) for c in arrays
    )


def positions(values: list[np.ndarray], keys: np.ndarray) -> np.ndarray:
    """Per value (chunks in order), the row of the first equal key; -1 where none is."""
    found = _dense_positions(values, keys)
    if found is not None:
        return found
    out = pc.index_in(pa.chunked_array([pa.array(v) for v in values], pa.uint64()), value_set=pa.array(keys))
    return np.asarray(out.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.intp)


def _dense_positions(values: list[np.ndarray], keys: np.ndarray) -> np.ndarray | None:
    """`positions` by indexing a table of the key range; None unless the keys are unique and their
    range is compact (at most ~4 table cells per key)."""
    lo, hi = int(keys.min()), int(keys.max())
    span = hi - lo + 1
    if span > _DENSE_SPAN * len(keys) + 1024:
        return None
    table = np.full(span, -1, dtype=np.intp)
    table[(keys - np.uint64(lo)).astype(np.intp)] = np.arange(len(keys), dtype=np.intp)
    if int(np.count_nonzero(table >= 0)) != len(keys):
        return None  # repeated keys: the hash lookup keeps the first of each
    out = np.full(sum(len(v) for v in values), -1, dtype=np.intp)
    at = 0
    for v in values:
        if len(v) and int(v.min()) >= lo and int(v.max()) <= hi:  # the usual: every id is a key's
            # One subtraction and one take into place: no mask, no row list, no second gather
            # ("clip": every index is in the table, and the take then writes straight into out).
            np.take(table, (v - np.uint64(lo)).view(np.int64), out=out[at : at + len(v)], mode="clip")
        else:
            inside = np.flatnonzero((v >= np.uint64(lo)) & (v <= np.uint64(hi)))
            out[at + inside] = table[(v[inside] - np.uint64(lo)).astype(np.intp)]
        at += len(v)
    return out


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _fixed_width(arrays: list[pa.Array]) -> int | None:
    """The byte length every cell of `arrays` has, when there is one (and it is not 0)."""
    width: int | None = None
    for a in arrays:
        if not len(a):
            continue
        offsets, _ = string_buffers(a)
        lengths = np.diff(offsets)
        w = int(lengths[0])
        if w < 1 or (width is not None and w != width) or not bool((lengths == w).all()):
            return None
        width = w
    return width


def _cells(a: pa.Array, width: int) -> np.ndarray:
    """The cells of a fixed-width text array as rows of a (len, width) byte matrix (a view)."""
    offsets, data = string_buffers(a)
    start = int(offsets[0]) if len(a) else 0
    return data[start : start + width * len(a)].reshape(len(a), width)


def _digit_prefix(arrays: list[pa.Array], width: int) -> bytes | None:
    """The prefix every cell shares, when the rest of every cell is ASCII digits (1 to 18 of them):
    the first cell up to its last non-digit. None otherwise."""
    first = next(a for a in arrays if len(a))
    head = bytes(_cells(first.slice(0, 1), width)[0])
    p = max((i + 1 for i, b in enumerate(head) if not 48 <= b <= 57), default=0)
    if not 1 <= width - p <= _MAX_DIGITS:
        return None
    if width <= 8:  # each cell one 64-bit word: a few word operations per cell, not one per byte
        word = int.from_bytes(head[:p], "little")
        keep = (1 << (8 * p)) - 1
        for a in arrays:
            x = _packed(a, width)
            if p and not bool(((x & np.uint64(keep)) == np.uint64(word)).all()):
                return None
            if not bool(_all_digits(_digits_aligned(x, width, p)).all()):
                return None
        return head[:p]
    want = np.frombuffer(head[:p], dtype=np.uint8)
    for a in arrays:
        m = _cells(a, width)
        if p and not bool((m[:, :p] == want).all()):
            return None
        d = m[:, p:]
        if not bool(((d >= 48) & (d <= 57)).all()):
            return None
    return head[:p]


def _digit_number(a: pa.Array, width: int, prefix: bytes) -> np.ndarray:
    """The number each cell's digits (after `prefix`) spell, as uint64."""
    if width <= 8:
        return _eight_digits(_digits_aligned(_packed(a, width), width, len(prefix)))
    d = _cells(a, width)[:, len(prefix) :]
    out = np.zeros(len(a), dtype=np.uint64)
    for j in range(d.shape[1]):
        out *= np.uint64(10)
        out += d[:, j] - np.uint8(48)
    return out


# Every byte of a 64-bit word at once: its high and low nibbles, '0' in each, 6 in each.
_HIGH, _LOW = np.uint64(0xF0F0F0F0F0F0F0F0), np.uint64(0x0F0F0F0F0F0F0F0F)
_ZEROS, _SIXES = np.uint64(0x3030303030303030), np.uint64(0x0606060606060606)


def _digits_aligned(x: np.ndarray, width: int, prefix: int) -> np.ndarray:
    """The cells' digits (the bytes after a `prefix` of `width`-byte cells, as `_packed` gives
    them: the first byte the lowest) right-aligned in eight ASCII digits: the last digit in the
    highest byte, '0's before the first digit. Bytes that are no digit stay what they are (see
    `_all_digits`)."""
    shift = np.uint64(8 * (8 - width))
    low = 8 - width + prefix  # bytes below the first digit once shifted
    if not low:  # eight digits from the first byte: the word as it is
        return x
    shifted = x << shift if shift else x.copy()
    shifted &= np.uint64(((1 << 64) - 1) ^ ((1 << (8 * low)) - 1))
    shifted |= np.uint64(int.from_bytes(b"0" * low, "little"))
    return shifted


def _all_digits(x: np.ndarray) -> np.ndarray:
    """Per word, whether all eight bytes are ASCII digits: high nibble 3, low nibble at most 9
    (adding 6 to a low nibble above 9 carries into the high one)."""
    ok: np.ndarray = ((x & _HIGH) == _ZEROS) & ((((x & _LOW) + _SIXES) & _HIGH) == 0)
    return ok


def _eight_digits(x: np.ndarray) -> np.ndarray:
    """The number eight ASCII digits spell (the first in the lowest byte), per word: pairs, then
    fours, then all eight combined by three multiply-adds, each lane wide enough for its value."""
    v = x - _ZEROS
    v = (v * np.uint64(10) + (v >> np.uint64(8))) & np.uint64(0x00FF00FF00FF00FF)
    v = (v * np.uint64(100) + (v >> np.uint64(16))) & np.uint64(0x0000FFFF0000FFFF)
    return (v * np.uint64(10000) + (v >> np.uint64(32))) & np.uint64(0xFFFFFFFF)


def _packed(a: pa.Array, width: int) -> np.ndarray:
    """Each cell's `width` bytes as one uint64 (zero bytes after them; a view when width is 8)."""
    m = _cells(a, width)
    if width == 8:
        return m.reshape(-1).view(np.uint64)
    wide = np.zeros((len(a), 8), dtype=np.uint8)
    wide[:, :width] = m
    return wide.reshape(-1).view(np.uint64)


def _plain_integers(a: pa.Array) -> bool:
    """Every cell is 1 to 18 ASCII digits, the first not 0 unless it is the only one: texts that
    cast to distinct integers exactly when they differ."""
    if not len(a):
        return True
    offsets, data = string_buffers(a)
    lengths = np.diff(offsets)
    if int(lengths.min()) < 1 or int(lengths.max()) > _MAX_DIGITS:
        return False
    if not pc.all(pc.ascii_is_decimal(a)).as_py():
        return False
    return not bool(((data[offsets[:-1]] == ord("0")) & (lengths > 1)).any())

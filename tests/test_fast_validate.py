"""Loading and validation fast paths give exactly what the plain code they replaced gives.

Each fast path (Arrow casts for plain numbers and ISO date-times, sliced cleanliness and case
checks, sorted/distinct shortcuts for duplicates, run-length and single-lookup joins, column
projection, raw tables dropped as they are typed) is pinned here to its reference, on data made to
hit the edges: empty and missing cells, '-0', impossible dates, unsorted and repeated ids.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import juno.idkeys as idkeys
import juno.parse as parse
import juno.plaincells as plaincells
from juno.config import Config
from juno.errors import InputError
from juno.parse import (
    EARLIEST,
    clean_text,
    has_duplicates,
    is_increasing,
    lower_text,
    parse_bool,
    parse_datetime,
    parse_number,
    positions,
    run_positions,
    take_increasing,
    upper_text,
    value_runs,
)
from juno.pipeline import run
from juno.sources import read_store
from juno.sources.base import FILE_COL, LINE_COL
from juno.sources.generic import read_generic, read_table_file
from juno.validate import Store, validate

EXAMPLE_STORE = Path(__file__).resolve().parent.parent / "examples" / "store"


def _s(values: list[str | None]) -> pd.Series:
    return pd.Series(values, dtype="string")


# ---- the plain implementations the fast paths replaced ----


def _reference_parse_number(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    t = s.astype("string").str.strip()
    empty = t.isna() | (t == "")
    v = pd.to_numeric(t, errors="coerce")
    failed = v.isna() & ~empty
    if failed.any():
        u = t[failed]
        neg = u.str.match(r"^\(.*\)$", na=False)
        u = u.str.replace(r"[()$€£¥\s]|USD|EUR|GBP", "", regex=True)
        u = u.where(~u.str.match(r"^-?\d{1,3}(,\d{3})+(\.\d+)?$", na=False), u.str.replace(",", ""))
        w = pd.to_numeric(u, errors="coerce")
        w = w.where(~neg, -w)
        v = v.astype("float64")
        v[failed] = w.astype("float64")
    v = v.astype("float64")
    inf = v.abs() == float("inf")
    v = v.mask(inf)
    return v, (v.isna() & ~empty) | inf


def _reference_parse_datetime(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    t = s.astype("string").str.strip()
    empty = t.isna() | (t == "")
    v = pd.to_datetime(t, utc=True, format="ISO8601", errors="coerce")
    failed = v.isna() & ~empty
    if failed.any():
        v[failed] = pd.to_datetime(t[failed], utc=True, format="mixed", errors="coerce")
    v = v.dt.tz_localize(None)
    if v.dtype != "datetime64[ns]":
        outside = (v < pd.Timestamp.min) | (v > pd.Timestamp.max)
        v = v.mask(outside).astype("datetime64[ns]")
    bad = v.isna() & ~empty
    implausible = v < EARLIEST
    return v.mask(implausible), bad | implausible


def _reference_clean_text(s: pd.Series) -> pd.Series:
    t = s.astype("string").str.strip().str.removeprefix("'")
    return t.mask(t == "")


def _same(a: pd.Series, b: pd.Series) -> None:
    pd.testing.assert_series_equal(a, b, check_exact=True, check_names=False)
    if a.dtype.kind == "f":  # assert_series_equal does not tell 0.0 from -0.0
        assert np.array_equal(np.signbit(a.to_numpy()), np.signbit(b.to_numpy()))


# ---- cell parsers ----


def _decimal(rng: random.Random) -> str:
    whole = str(rng.randint(0, 10 ** rng.randint(1, 9) - 1))
    if rng.random() >= 0.4:
        digits = rng.randint(1, 6)
        whole = f"{whole}.{rng.randint(0, 10**digits - 1):0{digits}d}"
    text = whole
    return ("-" if rng.random() < 0.3 else "") + text


NUMBER_COLUMNS = [
    ["36.75", "0.00", "12", "", None, " 7.5 ", "-3.10"],
    ["1", "2", "-0", "3"],  # integers only: pandas reads '-0' as +0
    ["1.5", "-0", "-0.0", "0"],
    ["999999999.999999", "0.1", "0.3", "123456789.123456", "5"],
    ["", None, " "],
    ["1,234.50", "2", "(5)"],  # not plain: the general path
    ["1e5", "3"],
    ["+5", "007", ".5", "5."],
    ["nan", "inf", "12"],
    ["1234567890", "1"],  # ten digits: the general path
]


@pytest.mark.parametrize("values", NUMBER_COLUMNS)
def test_parse_number_matches_reference(values: list[str | None]) -> None:
    got, bad = parse_number(_s(values))
    want, want_bad = _reference_parse_number(_s(values))
    _same(got, want)
    _same(bad, want_bad)


def test_parse_number_random_decimals_match_reference() -> None:
    rng = random.Random(8)
    for _ in range(20):
        values: list[str | None] = [_decimal(rng) for _ in range(2_000)]
        values[rng.randrange(len(values))] = ""
        got, bad = parse_number(_s(values))
        want, want_bad = _reference_parse_number(_s(values))
        _same(got, want)
        _same(bad, want_bad)


DATE_COLUMNS = [
    ["2024-11-30T18:33:20-06:00", "2024-12-01T00:41:41+00:00", "", None],
    ["2024-01-01T00:00:00Z", "2024-06-01 10:00:00+05:30", "2024-06-01T10:00:00+0530"],
    ["2024-01-01", "2024-01-01T10:00:00", "2024-02-29 23:59:59", ""],
    ["1990-05-01T00:00:00+00:00", "2024-01-01T00:00:00+00:00"],  # implausibly early
    ["2024-02-30T00:00:00+00:00", "2024-01-01T00:00:00+00:00"],  # impossible date
    ["2024-01-01T24:00:00+00:00"],
    ["9999-12-31T00:00:00+00:00", "2024-01-01T00:00:00+00:00"],  # outside nanoseconds
    ["1600-01-01", "2024-01-01"],
    ["2024-01-01T00:00:00+00:00", "2024-01-01"],  # offsets on some cells only
    ["2024-01-01T10:00:00.250+00:00"],  # fractions: the general path
    ["03/04/2025", "2025-01-01"],
    ["", " ", None],
]


@pytest.mark.parametrize("values", DATE_COLUMNS)
def test_parse_datetime_matches_reference(values: list[str | None]) -> None:
    got, bad = parse_datetime(_s(values))
    want, want_bad = _reference_parse_datetime(_s(values))
    _same(got, want)
    _same(bad, want_bad)


def test_parse_datetime_random_matches_reference() -> None:
    rng = np.random.default_rng(4)
    seconds = rng.integers(pd.Timestamp("1994-01-01").value // 10**9, pd.Timestamp("2027-01-01").value // 10**9, 3_000)
    stamps = pd.to_datetime(seconds, unit="s")
    offsets = rng.choice(["+00:00", "-06:00", "+05:30", "Z"], len(stamps))
    with_tz = [f"{d:%Y-%m-%dT%H:%M:%S}{o}" for d, o in zip(stamps, offsets, strict=True)]
    naive = [f"{d:%Y-%m-%d %H:%M:%S}" if i % 3 else f"{d:%Y-%m-%d}" for i, d in enumerate(stamps)]
    for values in (with_tz, naive):
        got, bad = parse_datetime(_s(values))
        want, want_bad = _reference_parse_datetime(_s(values))
        _same(got, want)
        _same(bad, want_bad)


# ---- plain-cell byte checks: the same answer per cell as the regex they replace ----

_PATTERNS = [plaincells.PLAIN_NUMBER, plaincells.PLAIN_DATETIME_TZ, plaincells.PLAIN_DATETIME_NAIVE]


def _regex_cells(a: pa.Array, pattern: str) -> np.ndarray:
    return np.asarray(pc.match_substring_regex(a, pattern).fill_null(False).to_numpy(zero_copy_only=False), bool)


def _null_with_bytes(a: pa.Array, rng: random.Random) -> pa.Array:
    """`a` with some cells nulled by the validity bitmap only, their bytes left in place."""
    if not len(a):
        return a
    keep = [rng.random() > 0.2 for _ in range(len(a))]
    validity = pa.array(keep).buffers()[1]
    flat = pa.concat_arrays([a])  # offset 0, so the new bitmap lines up
    return pa.Array.from_buffers(a.type, len(a), [validity, *flat.buffers()[1:]])


def _layouts(values: list[str | None], rng: random.Random) -> list[pa.Array | pa.ChunkedArray]:
    """The same cells as string and large_string, sliced (non-zero offset), chunked, and with nulls
    that still hold bytes."""
    out: list[pa.Array | pa.ChunkedArray] = []
    for kind in (pa.large_string(), pa.string()):
        whole = pa.array(["0.5", "x", *values, "12", None], kind)
        out.append(whole.slice(2, len(values)))
        out.append(pa.array(values, kind))
        cut = sorted(rng.sample(range(len(values) + 1), min(3, len(values) + 1)))
        pieces = zip([0, *cut], [*cut, len(values)], strict=True)
        out.append(pa.chunked_array([whole.slice(2 + i, j - i) for i, j in pieces], kind))
        out.append(_null_with_bytes(pa.array(values, kind), rng))
    return out


def _check_cells(values: list[str | None], rng: random.Random) -> int:
    """Pins every byte check to its regex on `values` in every layout; returns how many matched."""
    matched = 0
    for arr in _layouts(values, rng):
        chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
        for pattern in _PATTERNS:
            for chunk in chunks:
                got, want = plaincells.BYTE_CHECKS[pattern](chunk), _regex_cells(chunk, pattern)
                assert got.dtype == bool
                bad = np.flatnonzero(got != want)
                assert not len(bad), (pattern, [chunk[int(i)].as_py() for i in bad[:5]])
                matched += int(want.sum())
            got_plain, want_plain = plaincells.only_plain(arr, pattern), plaincells.only_plain_regex(arr, pattern)
            assert (got_plain is None) == (want_plain is None)
            if got_plain is not None and want_plain is not None:
                assert got_plain.type == want_plain.type and got_plain.to_pylist() == want_plain.to_pylist()
    return matched


_NUMBER_PIECES = [
    *"0123456789", "-", ".", "+", ":", "T", " ", "Z", "e", "é", "\n",
    "123456789", "1234567890", "123456", "1234567", ".5", "5.", "-.5", "1.2.3", "4-2", "--",
]  # fmt: skip


def _number_like(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.05:
        return None
    if roll < 0.1:
        return ""
    if roll < 0.5:
        return _decimal(rng)
    if roll < 0.7:  # a plain decimal, a piece put in, over or instead of one byte
        text = _decimal(rng)
        at = rng.randrange(len(text) + 1)
        return text[:at] + rng.choice(["", *_NUMBER_PIECES]) + text[at + rng.randint(0, 1) :]
    return "".join(rng.choice(_NUMBER_PIECES) for _ in range(rng.randint(1, 4)))


@pytest.fixture(params=[False, True], ids=["blocks", "small-blocks"])
def small_blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each byte check once as it runs, once over blocks of a few cells and bytes (a column spans many)."""
    if request.param:
        monkeypatch.setattr(plaincells, "_BLOCK", 5)
        monkeypatch.setattr(plaincells, "_BLOCK_BYTES", 12)  # some cells alone in a pass, some longer
        monkeypatch.setattr(plaincells, "_DATETIME_ROWS", 3)


@pytest.mark.usefixtures("small_blocks")
def test_number_byte_check_matches_regex() -> None:
    rng = random.Random(11)
    matched = 0
    for _ in range(40):
        matched += _check_cells([_number_like(rng) for _ in range(rng.randint(0, 300))], rng)
    assert matched > 10_000


def _datetime_text(rng: random.Random, width: int) -> str:
    d = f"{rng.randint(0, 9999):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 31):02d}"
    if width >= 19:
        d += f"{rng.choice('T ')}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
    sign = rng.choice("+-")
    tz = {20: "Z", 24: f"{sign}{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}"}
    tz[25] = f"{sign}{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    return d + tz.get(width, "")


# Almost valid: (position, replacement) per width-independent field, each just outside its range.
_DATETIME_EDGES = [
    (5, "00"), (5, "13"), (5, "19"), (5, "20"), (8, "00"), (8, "32"), (8, "39"), (8, "40"), (4, "/"), (7, "_"),
    (0, "a"), (3, "é"), (10, "t"), (10, "_"), (10, "Z"), (11, "24"), (11, "29"), (11, "30"), (14, "60"),
    (17, "60"), (13, "."), (16, "-"), (19, "z"), (19, ","), (19, " "), (20, "24"), (20, "30"), (22, "60"),
    (23, "60"), (22, ";"), (24, "a"),
]  # fmt: skip


def _almost_datetime(rng: random.Random, width: int) -> str:
    text = _datetime_text(rng, width)
    roll = rng.random()
    if roll < 0.6:
        at, piece = rng.choice(_DATETIME_EDGES)
        if at + len(piece) <= len(text):
            return text[:at] + piece + text[at + len(piece) :]
        return text
    if roll < 0.8:  # a character dropped, added or doubled: another width
        at = rng.randrange(len(text))
        return text[:at] + rng.choice(["", "0", text[at] * 2, "é"]) + text[at + 1 :]
    at = rng.randrange(len(text))
    return text[:at] + rng.choice("0123456789-:T Z+.é") + text[at + 1 :]


@pytest.mark.usefixtures("small_blocks")
def test_datetime_byte_check_matches_regex() -> None:
    rng = random.Random(12)
    matched = 0
    for width in (10, 19, 20, 24, 25):
        for _ in range(12):  # one width per column (the matrix path), some cells almost valid
            spoil = rng.choice([0.0, 0.01, 0.3])
            blanks = rng.choice([0.0, 0.1])
            values: list[str | None] = [
                rng.choice(["", None]) if rng.random() < blanks
                else _almost_datetime(rng, width) if rng.random() < spoil
                else _datetime_text(rng, width)
                for _ in range(rng.randint(1, 400))
            ]  # fmt: skip
            matched += _check_cells(values, rng)
    for _ in range(20):  # mixed widths: cell by cell, width by width
        values = [
            rng.choice([None, "", _datetime_text(rng, w), _almost_datetime(rng, w)])
            for w in rng.choices((10, 19, 20, 24, 25), k=rng.randint(1, 300))
        ]
        matched += _check_cells(values, rng)
    assert matched > 50_000


def test_plain_cells_edges_match_regex() -> None:
    rng = random.Random(13)
    columns: list[list[str | None]] = [
        [], [None], [""], ["", None, ""], ["1"], ["1", ""], ["", "1"], ["-"], ["-0", "0", "-"],
        ["999999999.999999", "1000000000", "1.1234567", "0.000001"], ["1\n", "\n1", " 1", "1 "],
        ["2024-02-31", "2024-02-31T23:59:59", "2024-02-31T23:59:59+23:59", "2024-02-31 00:00:00-2359"],
        ["2024-12-01T00:00:17+00:00", "", None], ["2024-12-01T00:00:17Z", "2024-12-01T00:00:17z"],
        ["2024-12-01T00:00:17+00:00"] * 3 + ["2024-12-01T00:00:17+0000"],
        ["2024-12-01", "2024-12-01T00:00:17"], ["2024-12-01T00:00:17.5", "２０２４-12-01"],
    ]  # fmt: skip
    for values in columns:
        _check_cells(values, rng)


def test_plain_columns_take_the_byte_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_regex(arr: pa.Array | pa.ChunkedArray, pattern: str) -> None:
        raise AssertionError(pattern)

    monkeypatch.setattr(plaincells, "only_plain_regex", no_regex)
    got, bad = parse_number(_s(["123.75", "1", "", None, "-0.5"]))
    assert got.tolist()[:2] == [123.75, 1.0] and not bad.any()
    for values in (["2024-12-01T00:00:17+00:00", "", "2024-12-01T08:00:00-05:00"], ["2024-12-01", None, "2025-01-31"]):
        got, bad = parse_datetime(_s(values))
        assert got.notna().sum() == 2 and not bad.any()


# ---- text: sliced checks keep clean columns, change nothing else ----

TEXTS = ["a", " b", "c ", "'d", "", None, "Zoë", "ÉCOLE", "x\u00a0", "\u2003y", "ok", "MiXed", "123", "ß"]


def test_sliced_text_checks_match_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parse, "_SLICE", 7)  # many slices, a dirty cell in just one of them
    rng = random.Random(2)
    for _ in range(200):
        values = [rng.choice(TEXTS) for _ in range(rng.randint(0, 40))]
        s = _s(values)
        _same(clean_text(s), _reference_clean_text(s))
        _same(lower_text(s), s.str.lower())
        _same(upper_text(s), s.str.upper())
        clean = [v for v in values if v is not None and v == v.strip() and v and not v.startswith("'")]
        c = _s(clean)
        assert clean_text(c) is c or pd.Series.equals(clean_text(c), c)


_EDGE_CHARS = ["a", "Z", "0", " ", "\t", "\n", "'", "\u00a0", "\u2003", "\u00e9", "\u00c9", "\x1f", "\x7f", "-"]


def test_byte_level_text_checks_never_claim_a_change_away() -> None:
    """surely_trimmed / surely_unchanged_by_case may say "look closer" for a clean column, but
    when they say "unchanged" the exact Arrow kernels agree, on sliced, chunked and null-bearing
    arrays of cells made of spaces, tabs, NBSP, em spaces, apostrophes, accents, controls."""
    rng = random.Random(11)
    claimed = 0
    for _ in range(3000):
        cells = [
            None if rng.random() < 0.1 else "".join(rng.choice(_EDGE_CHARS) for _ in range(rng.randint(0, 4)))
            for _ in range(rng.randint(0, 12))
        ]
        arr = pa.array(cells, type=rng.choice([pa.string(), pa.large_string()]))
        for a in (arr, arr.slice(1), pa.chunked_array([arr.slice(0, 3), arr.slice(3)], type=arr.type)):
            parts = a.chunks if isinstance(a, pa.ChunkedArray) else [a]
            exact_trim = all(
                pc.all(pc.equal(pc.utf8_trim_whitespace(p), p), min_count=0).as_py()
                and not pc.any(pc.starts_with(p, "'")).as_py()
                and not pc.any(pc.equal(p, "")).as_py()
                for p in parts
            )
            if plaincells.surely_trimmed(a):
                claimed += 1
                assert exact_trim, cells
            for upper, kernel in ((False, pc.utf8_lower), (True, pc.utf8_upper)):
                if plaincells.surely_unchanged_by_case(a, upper):
                    assert all(pc.all(pc.equal(kernel(p), p), min_count=0).as_py() for p in parts), cells
    assert claimed > 100  # the fast answer is given, not only "look closer"


def test_clean_ascii_ids_skip_the_trim_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_kernel(*args: object, **kwargs: object) -> None:
        raise AssertionError("the exact trim / case kernels ran on a column the bytes settle")

    monkeypatch.setattr(parse.pc, "utf8_trim_whitespace", no_kernel)
    monkeypatch.setattr(parse.pc, "utf8_lower", no_kernel)
    s = _s([f"C{i:07d}" for i in range(1000)] + [None, "x-1"])
    assert clean_text(s) is not None and lower_text(_s(["sku-a", "b", None])) is not None


def test_clean_columns_keep_their_buffers() -> None:
    s = _s(["abc", "def", None] * 100)
    assert pa.array(clean_text(s)).buffers()[2].address == pa.array(s).buffers()[2].address
    assert lower_text(s) is s
    assert upper_text(_s(["USD", None])).tolist() == ["USD", pd.NA]


# ---- ids: duplicates, order, lookups ----


def test_has_duplicates_and_is_increasing_match_reference() -> None:
    rng = random.Random(5)
    for _ in range(300):
        values = [rng.choice(["a", "b", "c", "d", "e", None, "a "]) for _ in range(rng.randint(0, 6))]
        if rng.random() < 0.3:
            values = sorted({v for v in values if v is not None})
        s = _s(values)
        assert has_duplicates(s) == bool((s.duplicated(keep=False) & s.notna()).any())
        assert is_increasing(s) == bool(s.notna().all() and s.is_monotonic_increasing and s.is_unique)


def test_run_positions_match_positions() -> None:
    rng = random.Random(6)
    for _ in range(300):
        keys = _s([f"O{i}" for i in rng.sample(range(30), rng.randint(1, 20))])
        pool = [*keys.tolist(), "O99", None]
        values: list[str | None] = []
        for _ in range(rng.randint(0, 25)):
            values += [rng.choice(pool)] * rng.randint(1, 3)  # grouped, as order lines are
        if rng.random() < 0.3:
            rng.shuffle(values)
        if rng.random() < 0.2:  # the runs are the keys themselves
            values = [k for k in keys.tolist() for _ in range(rng.randint(1, 2))]
        v = _s(values)
        if rng.random() < 0.5:  # held in chunks, as a file read in blocks is (empty chunks too)
            cuts = sorted(rng.choices(range(len(values) + 1), k=rng.randint(1, 4)))
            chunks = [pa.array(values[a:b], pa.large_string()) for a, b in itertools.pairwise([0, *cuts, len(values)])]
            v = pd.Series(pd.array(pa.chunked_array(chunks, type=pa.large_string()), dtype=v.dtype))
            rows = np.flatnonzero(np.array([rng.random() < 0.5 for _ in values], dtype=bool))
            taken = take_increasing(pa.array(v), rows)
            assert taken.to_pylist() == [values[i] for i in rows]
        got = run_positions(v, keys)
        assert got.dtype == np.intp
        assert np.array_equal(got, positions(v, keys))


def test_run_positions_of_one_width_ids_match_positions() -> None:
    """Ids of one width of at most 8 bytes are compared as 64-bit words (value_runs' changes, the
    runs' first ids against the keys); the answers are positions' for every width, chunking, and
    keys that are, or are not, the runs themselves (another width, a NUL byte that pads a word)."""
    rng = random.Random(7)
    for trial in range(400):
        width = rng.randint(1, 9)
        alphabet = "AB" if width < 3 else "ABCDEFGHIJ"
        ids = sorted({"".join(rng.choice(alphabet) for _ in range(width)) for _ in range(rng.randint(1, 25))})
        keys = list(ids)
        if trial % 3 == 0:
            values = [k for k in keys for _ in range(rng.randint(1, 3))]  # the runs are the keys
        else:
            values = [rng.choice(keys) for _ in range(rng.randint(2, 40))]
        if trial % 7 == 0:
            keys = [k[:-1] + "\x00" for k in keys] if width > 1 else keys  # same words at width <= 8?
        if trial % 11 == 0 and 1 < width <= 8:
            # ids ending in a NUL byte, and keys one byte shorter: the same words, other texts
            values = [x[:-1] + "\x00" for x in values]
            keys = [x[:-1] for x in keys]
        v = _s(values)
        if rng.random() < 0.5:
            cuts = sorted(rng.choices(range(len(values) + 1), k=rng.randint(1, 4)))
            chunks = [pa.array(values[a:b], pa.large_string()) for a, b in itertools.pairwise([0, *cuts, len(values)])]
            v = pd.Series(pd.array(pa.chunked_array(chunks, type=pa.large_string()), dtype=v.dtype))
        k = _s(keys)
        runs = value_runs(v)
        if runs is not None:
            assert (runs.first_words is not None) == (width <= 8)
            assert np.array_equal(runs.lengths, np.diff(np.r_[runs.starts, len(values)]))
        got = run_positions(v, k, runs)
        assert np.array_equal(got, positions(v, k)), (trial, values, keys)


def _id_pool(rng: random.Random, kind: str) -> list[str]:
    """Ids of one shape each (see juno.idkeys), and shapes that must keep the text lookup."""
    if kind == "prefixed":  # a shared prefix and zero-padded digits: the number they spell
        return [f"C{i:07d}" for i in rng.sample(range(10**7), 40)]
    if kind == "counter":  # numbered from a counter, prefix and all: a dense table
        return [f"CUST-{i:06d}" for i in range(1, 41)]
    if kind == "short":  # one width, not digits after a prefix: the bytes as a number
        return [f"{chr(65 + i % 26)}{i:02d}{chr(97 + i % 7)}" for i in rng.sample(range(100), 40)]
    if kind == "integers":  # Shopify's 13-digit ids (sparse: hashed), small ones, 0
        return [str(i) for i in rng.sample(range(10**12, 10**13), 30)] + ["0", "7", "42", "999999999999999999"]
    if kind == "sequence":  # auto-increment integers: a dense table
        return [str(i) for i in range(1, 45)]
    if kind == "zeros":  # '007' and '7' are different ids
        return ["007", "7", "07", "70", "0", "00", "12", "012"]
    if kind == "digits":  # Unicode digits are not ASCII decimals
        return ["12", "\u0661\u0662", "34", "\u0663\u0664"]
    if kind == "long":  # 19 digits overflow the integer paths
        return ["1234567890123456789", "1234567890123456788", "12", "13"]
    if kind == "prefixes":  # one width, digits after different prefixes; 'B' is no digit ('A181')
        return ["A001", "B001", "A002", "AB01", "A0B1", "A181", "9A01"]
    if kind == "letter":  # a letter among the digits after the prefix: text lookup
        return ["A001", "A0B1", "A181", "A002"]
    if kind == "leading":  # ids that differ in their first digit only
        return [f"X{d}{r:03d}" for d in range(10) for r in (1, 2)]
    return ["a", "bb", "ccc", "C0000001", "C000001", "é", "", " 1"]  # mixed widths, empty


KINDS = [
    "prefixed", "counter", "short", "integers", "sequence", "leading",  # integer paths
    "zeros", "digits", "long", "prefixes", "letter", "mixed",  # and shapes that must not take them
]


def _expect_integer_keys(keys: list[str], values: list[str | None]) -> bool:
    """When juno.idkeys takes the integer path, from the ids alone."""
    if None in values:
        return False
    ids = [x.encode() for x in keys + values]  # type: ignore[union-attr]
    widths = {len(x) for x in ids}
    if len(widths) == 1 and min(widths) >= 1:
        w, first = min(widths), ids[0]
        p = max((i + 1 for i, b in enumerate(first) if not 48 <= b <= 57), default=0)
        if 1 <= w - p <= 18 and all(x[:p] == first[:p] and x[p:].isdigit() for x in ids):
            return True
        if w <= 8:
            return True
    return all(x.isdigit() and 1 <= len(x) <= 18 and (x == b"0" or x[:1] != b"0") for x in ids)


@pytest.mark.parametrize("kind", KINDS)
def test_integer_keys_lookup_matches_get_indexer(kind: str) -> None:
    """The integer paths (digits after a prefix, packed bytes, plain integers; a table or a hash)
    find exactly the rows a lookup of the texts finds (the first of repeated keys), chunked or
    not, with repeats, absent ids and missing ones."""
    rng = random.Random(KINDS.index(kind))
    for trial in range(80):
        pool = _id_pool(rng, kind)
        keys = rng.sample(pool, rng.randint(1, len(pool)))
        absent = [x for x in pool if x not in keys]
        values: list[str | None] = [rng.choice(keys + absent) for _ in range(rng.randint(0, 40))]
        if trial % 7 == 0 and values:
            values[rng.randrange(len(values))] = None  # a missing id: the string path
        v = _s(values)
        if rng.random() < 0.5:  # chunks that are slices of one buffer, as a Parquet read leaves
            whole = pa.array(values, pa.large_string())
            cuts = sorted(rng.choices(range(len(values) + 1), k=rng.randint(1, 4)))
            chunks = [whole.slice(a, b - a) for a, b in itertools.pairwise([0, *cuts, len(values)])]
            v = pd.Series(pd.array(pa.chunked_array(chunks, type=pa.large_string()), dtype=v.dtype))
        k = _s(keys)
        expected = pd.Index(pd.Series(keys, dtype=object)).get_indexer(pd.Series(values, dtype=object))
        assert np.array_equal(positions(v, k), expected), (kind, keys, values)
        as_ints = idkeys.integer_keys(pa.array(v), pa.array(k))
        assert (as_ints is not None) == _expect_integer_keys(keys, values), (kind, keys, values)
        if kind in ("prefixed", "counter", "short", "integers", "sequence", "leading") and None not in values:
            assert as_ints is not None  # each shape meant for the integer path reaches it
        # Repeated keys (which validation never leaves): the first of each, table or hash.
        twice = keys + keys[: rng.randint(1, len(keys))]
        if as_ints is not None:
            again = idkeys.integer_keys(pa.array(v), pa.array(twice, pa.large_string()))
            assert again is not None
            first = {key: i for i, key in reversed(list(enumerate(twice)))}
            want = [first.get(x, -1) if x is not None else -1 for x in values]
            assert idkeys.positions(*again).tolist() == want


def test_dense_ids_take_the_table() -> None:
    """Ids numbered from a counter are looked up in a table (not hashed); sparse ones are hashed."""
    dense = pa.array([f"C{i:07d}" for i in range(1, 1001)], pa.large_string())
    vals = pa.array([f"C{i:07d}" for i in (5, 1000, 1001, 0, 77)], pa.large_string())
    as_ints = idkeys.integer_keys(vals, dense)
    assert as_ints is not None
    assert idkeys._dense_positions(*as_ints) is not None
    assert idkeys.positions(*as_ints).tolist() == [4, 999, -1, -1, 76]
    sparse = pa.array([str(10**12 + 7919 * i) for i in range(1000)], pa.large_string())
    as_ints = idkeys.integer_keys(sparse.slice(3, 2), sparse)
    assert as_ints is not None and idkeys._dense_positions(*as_ints) is None
    assert idkeys.positions(*as_ints).tolist() == [3, 4]


# ---- whole stores: joins filled by validation equal the lazy lookups ----


def _messy_store(rng: random.Random, folder: Path, fmt: str, with_customers: bool) -> None:
    folder.mkdir(parents=True)
    cids = [f"C{i:03d}" for i in range(12)]
    customers = [c for c in cids[:9] if rng.random() < 0.9]
    rng.shuffle(customers)
    orders = []
    for i in range(rng.randint(1, 40)):
        c = rng.choice(cids)
        orders.append(
            {
                "order_id": f"O{i:04d}" if rng.random() > 0.05 else rng.choice(["", "O0000"]),
                "customer_id": c if rng.random() > 0.15 else rng.choice(["", "C999"]),
                "email": f"{c.lower()}@x.com" if rng.random() > 0.3 else "",
                "ordered_at": rng.choice(["2025-01-03", "2025-02-10T10:00:00+00:00", "2025-05-20", "x", ""]),
                "revenue": rng.choice(["40", "25.5", "-3", "x", "12.00"]),
                "currency": rng.choice(["USD"] * 6 + ["EUR"]),
                "channel": "web",
            }
        )
    if rng.random() < 0.5:
        orders.append(dict(orders[0]))
    lines = [
        {"order_id": o["order_id"] if rng.random() > 0.1 else "O9999", "sku": rng.choice(["A", "B ", "'A", ""]),
         "category": rng.choice(["Tea", "home", " TEA", "", "Zed"]), "quantity": rng.choice(["1", "2", "x"])}
        for o in orders for _ in range(rng.randint(0, 2))
    ]  # fmt: skip
    tables = {
        "orders": pd.DataFrame(orders),
        "order_lines": pd.DataFrame(lines, columns=["order_id", "sku", "category", "quantity"]),
        "support_tickets": pd.DataFrame(
            {"ticket_id": ["T1", "T2", "T3"], "customer_id": [cids[0], "", "C999"],
             "email": ["", f"{cids[1].lower()}@x.com", ""], "opened_at": ["2025-01-05"] * 3}
        ),
    }  # fmt: skip
    if with_customers:
        tables["customers"] = pd.DataFrame(
            {"customer_id": customers, "email": [f"{c.lower()}@x.com" for c in customers], "topic": "x"}
        )
    for name, frame in tables.items():
        if fmt == "csv":
            frame.to_csv(folder / f"{name}.csv", index=False)
        else:
            table = pa.Table.from_pandas(frame.astype("string"), preserve_index=False)
            pq.write_table(table, folder / f"{name}.parquet")


CONFIGS = [Config(), Config.model_validate({"currency": "USD"}), Config.model_validate({"as_of": "2025-03-01"})]


def test_joins_filled_by_validation_equal_lookups(tmp_path: Path) -> None:
    rng = random.Random(7)
    checked = 0
    for i in range(60):
        folder = tmp_path / f"s{i}"
        _messy_store(rng, folder, "csv" if i % 2 else "parquet", with_customers=i % 3 != 0)
        for config in CONFIGS:
            try:
                store = validate(read_store(folder, None, None), config, consume=True)
            except InputError:
                continue
            assert store._line_order_rows is not None and store._order_customer_rows is not None
            assert store.lines is not None
            assert np.array_equal(store._line_order_rows, positions(store.lines["order_id"], store.orders["order_id"]))
            assert np.array_equal(
                store._order_customer_rows, positions(store.orders["customer_id"], store.customers["customer_id"])
            )
            assert (store._order_customer_rows >= 0).all()
            assert store.customers["customer_id"].is_monotonic_increasing
            checked += 1
    assert checked > 60


def test_consuming_the_source_changes_nothing(tmp_path: Path) -> None:
    rng = random.Random(9)
    for i in range(10):
        folder = tmp_path / f"s{i}"
        _messy_store(rng, folder, "parquet" if i % 2 else "csv", with_customers=True)
        try:
            kept = validate(read_store(folder, None, None), Config())
        except InputError:
            continue
        source = read_store(folder, None, None)
        consumed = validate(source, Config(), consume=True)
        assert source.tables == {}
        _assert_same_store(kept, consumed)
        # Read table by table as validation takes them (juno run): the same Store again, except that
        # SKU and category come as codes (categoricals of the same values), as compact makes them.
        deferred = read_store(folder, None, None, defer=True)
        assert deferred.tables == {} and deferred.files == [] and set(deferred.deferred) >= {"orders"}
        late = validate(deferred, Config(), consume=True)
        assert deferred.deferred == {}
        assert kept.lines is not None and late.lines is not None
        for col in ("sku", "category"):
            assert isinstance(late.lines[col].dtype, pd.CategoricalDtype)
            assert late.lines[col].astype(object).equals(kept.lines[col].astype(object))
        _assert_same_store(kept, late, text_or_codes=True)
        kept.compact()
        late.compact()
        _assert_same_store(kept, late)  # what the core reads: identical, categories and codes alike


def _assert_same_store(a: Store, b: Store, text_or_codes: bool = False) -> None:
    """`text_or_codes`: the lines' SKU and category are left out (the caller compares them by value)."""
    for name in ("orders", "lines", "customers", "tickets", "subscriptions", "rejected"):
        if getattr(a, name) is None:
            assert getattr(b, name) is None
        elif name == "lines" and text_or_codes:
            coded = ["sku", "category"]
            pd.testing.assert_frame_equal(getattr(a, name).drop(columns=coded), getattr(b, name).drop(columns=coded))
        else:
            pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.notes == b.notes
    assert a.files == b.files
    assert list(a.rows_read.items()) == list(b.rows_read.items())


def test_deferred_reads_keep_rows_set_aside_and_header_errors(tmp_path: Path) -> None:
    """Rows with the wrong field count, read late, are rejected as when read up front; a table
    whose header lacks a required column is read (and refused) before any other is typed."""
    write = (tmp_path / "orders.csv").write_text
    write("order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\nO2,C2,2025-01-02\nO3,C1,2025-01-03,5,x\n")
    (tmp_path / "order_lines.csv").write_text("order_id,sku\nO1,A\nO1\nO3,B,1,2\nO1,C\n")
    (tmp_path / "customers.csv").write_text("customer_id,email\nC1,a@x.com\nC2,b@x.com\n")
    eager = validate(read_store(tmp_path, None, None), Config(), consume=True)
    assert len(eager.rejected) == 4 and eager.rows_read == {"orders": 3, "order_lines": 4, "customers": 2}
    late = validate(read_store(tmp_path, None, None, defer=True), Config(), consume=True)
    _assert_same_store(eager, late, text_or_codes=True)
    assert late.lines is not None and late.lines["sku"].astype(object).tolist() == ["A", "C"]
    (tmp_path / "customers.csv").write_text("id,email\nC1,a@x.com\n")
    source = read_store(tmp_path, None, None, defer=True)
    assert set(source.tables) == {"customers"} and set(source.deferred) == {"orders", "order_lines"}
    with pytest.raises(InputError) as err:
        validate(source, Config(), consume=True)
    assert "customers table lacks required column(s): customer_id" in str(err.value)
    assert set(source.deferred) == {"orders", "order_lines"}  # refused before reading them


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_lines_are_read_while_the_orders_are_typed(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lines' read starts as soon as the raw orders are in hand, Parquet or CSV: the orders
    are typed on the main thread meanwhile (alone, that left a core idle)."""
    import threading

    import juno.validate as validate_module

    orders = pd.DataFrame({"order_id": ["O1", "O2"], "customer_id": ["C1", "C2"],
                           "ordered_at": ["2025-01-01", "2025-01-02"], "revenue": ["10", "5"]})  # fmt: skip
    lines = pd.DataFrame({"order_id": ["O1", "O2", "O2"], "sku": ["A", "B", "A"], "category": ["x", "y", "x"]})
    for name, frame in (("orders", orders), ("order_lines", lines)):
        path = tmp_path / f"{name}.{fmt}"
        frame.to_parquet(path, index=False) if fmt == "parquet" else frame.to_csv(path, index=False)
    source = read_store(tmp_path, None, None, defer=True)
    started = threading.Event()
    read_lines = source.deferred["order_lines"]

    def reading_lines() -> object:
        started.set()
        return read_lines()

    source.deferred["order_lines"] = reading_lines
    seen: list[bool] = []
    typing = validate_module.orders_table

    def orders_table(*args: object, **kwargs: object) -> object:
        # The lines' read is under way before the orders are typed (waited for, so a slow
        # thread start cannot fail the test).
        seen.append(started.wait(10))
        return typing(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(validate_module, "orders_table", orders_table)
    store = validate(source, Config(), consume=True)
    assert seen == [True]
    assert store.lines is not None and store.lines["sku"].astype(object).tolist() == ["A", "B", "A"]
    eager = validate(read_store(tmp_path, None, None), Config(), consume=True)
    _assert_same_store(eager, store, text_or_codes=True)


# ---- reading: only the used columns, the file as one category ----


def test_reader_keeps_used_columns_and_their_values(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"Order ID": ["O1", "O2"], "customer_id": ["C1", "C2"], "ordered_at": ["2025-01-01", "2025-01-02"],
         "revenue": ["1", "2"], "Channel": ["web", "pos"], "notes": ["a", "b"]}
    )  # fmt: skip
    for fmt in ("csv", "parquet"):
        path = tmp_path / f"orders.{fmt}"
        if fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
        raw, info, _, _ = read_table_file(path, "orders")
        assert list(raw.columns) == ["order_id", "customer_id", "ordered_at", "revenue", FILE_COL, LINE_COL]
        assert raw["order_id"].tolist() == ["O1", "O2"]
        assert raw[FILE_COL].astype(str).tolist() == [path.name] * 2
        assert raw[LINE_COL].tolist() == [2, 3]
        assert info.rows == 2


def test_missing_required_column_still_lists_every_column(tmp_path: Path) -> None:
    frame = pd.DataFrame({"order_id": ["O1"], "customer_id": ["C1"], "revenue": ["1"], "channel": ["web"]})
    for fmt in ("csv", "parquet"):
        folder = tmp_path / fmt
        folder.mkdir()
        if fmt == "csv":
            frame.to_csv(folder / "orders.csv", index=False)
        else:
            frame.to_parquet(folder / "orders.parquet", index=False)
        for defer in (False, True):
            with pytest.raises(InputError) as err:
                validate(read_store(folder, None, None, defer=defer), Config())
            assert "found: order_id, customer_id, revenue, channel" in str(err.value)


# ---- typed Parquet columns and absent columns ----


def _reference_typed_datetime(s: pd.Series) -> tuple[pd.Series, pd.Series]:
    v = s
    if getattr(v.dt, "tz", None) is not None:
        v = v.dt.tz_convert("UTC").dt.tz_localize(None)
    if v.dtype == "datetime64[ns]":
        bad = pd.Series(False, index=v.index)
    else:
        outside = (v < pd.Timestamp.min) | (v > pd.Timestamp.max)
        v, bad = v.mask(outside).astype("datetime64[ns]"), outside.fillna(False).astype(bool)
    implausible = v < EARLIEST
    return v.mask(implausible), bad | implausible


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
@pytest.mark.parametrize("tz", [None, "UTC", "America/Chicago"])
def test_typed_datetimes_match_reference(unit: str, tz: str | None) -> None:
    base = ["2024-11-30 18:33:20", None, "1990-01-01", "2026-11-30 23:59:03.250", "1995-01-01"]
    columns = [base]
    if unit != "ns":
        columns.append([*base, "2300-01-01", "1600-06-01"])  # outside nanoseconds: the long way
    for values in columns:
        arr = pa.array(pd.to_datetime(pd.Series(values), format="mixed").astype(f"datetime64[{unit}]"))
        if tz is not None:
            arr = arr.cast(pa.timestamp(unit, "UTC")).cast(pa.timestamp(unit, tz))
        s = pa.table({"t": arr}).to_pandas()["t"]
        got, bad = parse_datetime(s)
        want, want_bad = _reference_typed_datetime(s)
        _same(got, want)
        _same(bad, want_bad)


# Every whitespace character Python knows, alone, doubled and beside text, and flag words
# in any case and padding: what blank() and parse_bool() meet in a hand-edited export.
_SPACES = [chr(c) for c in range(0x3100) if chr(c).isspace()] + ["\u200b", "\ufeff", "\u180e"]
_MESSY_FLAGS = (
    ["", " ", "a", " a ", None, "TRUE", " yes", "No ", "1", "1.0", "0.0", "t", "F", "maybe", "\u00a0true\u00a0"]
    + ["y\t", "YES\n", "-0", "2023-01-01"] + _SPACES + [c * 2 for c in _SPACES] + [c + "x" for c in _SPACES]
)


@pytest.mark.parametrize("dtype", ["string", "str", object])
def test_clean_text_matches_reference(dtype: object) -> None:
    marked = ["'", "''", "' ", " ' ", "'x", " 'x", "''x", "' x", "'\u3000"]
    column = pd.Series((_MESSY_FLAGS + marked) * 2, dtype=dtype, name="c")
    _same(clean_text(column), _reference_clean_text(column))


@pytest.mark.parametrize("dtype", ["string", "str", object])
def test_blank_matches_reference(dtype: object) -> None:
    column = pd.Series(_MESSY_FLAGS * 2, dtype=dtype, name="c")
    want = column.isna() | (column.astype("string").str.strip() == "")
    pd.testing.assert_series_equal(parse.blank(column), want)


@pytest.mark.parametrize(
    "column",
    [pd.Series([None, None], dtype="string"), pd.Series([None, None], dtype=object), pd.Series([np.nan] * 3),
     pd.Series([], dtype="string"), pd.Series(["yes", None, " no ", "maybe"], dtype="string")] +
    [pd.Series(_MESSY_FLAGS * 2, dtype=dt) for dt in ("string", "str", object)],
)  # fmt: skip
def test_parse_bool_matches_reference(column: pd.Series) -> None:
    t = column.astype("string").str.strip().str.lower().fillna("")
    val = t.isin({"true", "t", "yes", "y", "1", "1.0"})
    want_bad = ~val & ~t.isin({"false", "f", "no", "n", "0", "0.0", ""})
    got, bad = parse_bool(column)
    _same(got, val.astype(bool))
    _same(bad, want_bad)


def test_fill_and_floor_shortcuts_match_reference() -> None:
    from juno.tables import _filled, _zero_floor

    for values in ([1.0, 2.5, 0.0], [1.0, np.nan, -0.0], [-0.0, 3.0], [-2.0, 0.5], [], [np.nan], [0.0, 1e300]):
        v = pd.Series(values, dtype="float64")
        _same(_zero_floor(v), v.fillna(0.0).clip(lower=0))
        _same(_filled(v, 1.0), v.fillna(1.0))


# ---------------------------------------------------------------- compact order lines (juno.run)


def test_sorted_codes_of_a_categorical_match_the_string_column() -> None:
    from juno.grouping import sorted_codes
    from juno.validate import _categorical

    rng = np.random.default_rng(5)
    words = np.array(["tea", "Tea", "coffee", "été", "b", "a b", "zz", ""], dtype=object)
    values = pd.Series(rng.choice(words, 5_000), dtype="str").mask(rng.random(5_000) < 0.1)
    as_cat = _categorical(values)
    assert isinstance(as_cat.dtype, pd.CategoricalDtype)
    assert as_cat.astype("str").equals(values.astype("str"))
    codes, names = sorted_codes(values)
    cat_codes, cat_names = sorted_codes(as_cat)
    assert (cat_codes == codes).all() and list(cat_names) == list(names)
    # Unused categories and unsorted categories are numbered as factorize(sort=True) would.
    odd = pd.Series(pd.Categorical(["zz", None, "a", "zz"], categories=["zz", "unused", "a"]))
    c, n = sorted_codes(odd)
    assert list(c) == [1, -1, 0, 1] and list(n) == ["a", "zz"]


def test_run_compacts_the_lines_without_changing_them() -> None:
    config = Config()
    plain = validate(read_generic(EXAMPLE_STORE), config)
    result = run(EXAMPLE_STORE, config=config, narrative="template")
    assert plain.lines is not None and result.store is not None and result.store.lines is not None
    lines = result.store.lines
    assert "order_id" not in lines
    assert isinstance(lines["sku"].dtype, pd.CategoricalDtype)
    assert isinstance(lines["category"].dtype, pd.CategoricalDtype)
    for col in ("sku", "category"):
        assert lines[col].astype("str").equals(plain.lines[col].astype("str"))
    rows = result.store.line_order_rows()
    assert (result.store.orders["order_id"].to_numpy()[rows] == plain.lines["order_id"].to_numpy()).all()
    # The orders keep every column the core reads, unchanged; the settled audit columns and the
    # customer ids (kept as rows of the customers table) go.
    orders = result.store.orders
    assert not {"customer_id", FILE_COL, LINE_COL, "discount_code", "currency"} & set(orders.columns)
    pd.testing.assert_frame_equal(orders, plain.orders[list(orders.columns)])
    customer_ids = result.store.customers["customer_id"].to_numpy()[result.store.order_customer_rows()]
    assert (customer_ids == plain.orders["customer_id"].to_numpy()).all()


def test_an_absent_column_reads_as_all_missing_text() -> None:
    from juno.tables import raw_column

    f = pd.DataFrame({"order_id": ["O1", "O2", "O3"]}, index=[4, 5, 9])
    pd.testing.assert_series_equal(raw_column(f, "email"), pd.Series(pd.NA, index=f.index, dtype="string"))
    assert raw_column(f, "order_id") is not None and raw_column(f, "order_id").tolist() == ["O1", "O2", "O3"]


def test_number_columns_converted_as_pyarrow_converts_them() -> None:
    """`generic._to_pandas` (float and null-free integer columns copied out by NumPy, outside
    the GIL) gives the frame pyarrow's own conversion gives: values, dtypes, column order,
    index; for tables in several chunks, with nulls, of numbers only, empty, or with pandas
    metadata (left to pyarrow)."""
    from juno.sources.generic import _to_pandas, _types_mapper

    rng = np.random.default_rng(3)
    n = 1_000
    floats = rng.normal(size=n)
    floats[::7] = np.nan
    base = pa.table(
        {
            "order_id": pa.array([f"O{i}" for i in range(n)], pa.large_string()),
            "revenue": pa.array(floats, mask=np.arange(n) % 5 == 0),  # nulls and NaNs
            "quantity": pa.array(rng.integers(-5, 9, n), pa.int64()),
            "csat": pa.array(rng.integers(1, 6, n), pa.int64(), mask=np.arange(n) % 3 == 0),  # int with nulls
            "flag": pa.array(rng.random(n) < 0.5),
            "at": pa.array(rng.integers(0, 10**12, n).astype("datetime64[ms]")).cast(pa.timestamp("ms", tz="UTC")),
            "sku": pa.array(rng.choice(["a", "b", None], n)).dictionary_encode(),
            "cost": pa.array(rng.normal(size=n)),
        }
    )
    chunked = pa.Table.from_batches(base.to_batches(max_chunksize=97))
    tables = [
        base,
        chunked,
        chunked.select(["revenue", "quantity", "cost"]),  # numbers only
        chunked.select(["order_id", "flag"]),  # no numbers
        base.slice(0, 0),
        pa.Table.from_pandas(base.to_pandas().set_index("order_id")),  # pandas metadata: an index
    ]
    for table in tables:
        want = table.to_pandas(types_mapper=_types_mapper, split_blocks=True)
        handed = [table]
        got = _to_pandas(handed)
        assert handed == []
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        for name in got.columns:
            assert got[name].dtype == want[name].dtype


# One odd cell in an otherwise plain column of a CSV store: Arrow converts some of these (the
# column is then read typed) and refuses others (read as text); validation must end the same.
_ODD_CELLS = {
    "revenue": [" 12 ", "+5", "1e3", ".5", "5.", "inf", "-Infinity", "-0", "-0.0", "NA", "NULL", "",
                "12.3456789012345", "$5", '"1,234"', "x", "-3", "2000000000"],
    "cost": ["inf", "-0", " 4", "1E-2", "n/a", "x"],
    "ordered_at": ["2025-01-03", "2025-01-03T10:00:00", "2025-02-10T10:00:00+02:00", "2025-02-10T10:00:00Z",
                   "2025-02-10 10:00:00.5+00:00", "2025-02-10T10:00+0100", "1990-01-01T00:00:00+00:00",
                   "1990-01-01", "2025-02-30T00:00:00+00:00", "1500-01-01T00:00:00+00:00", "x", ""],
    "cancelled_at": ["2025-03-01T00:00:00+00:00", "2025-03-01", "x"],
    "quantity": ["2.5", "-0", "inf", " 3 ", "x"],
    "created_at": ["2024-01-01", "1980-01-01T00:00:00+00:00", "x"],
}  # fmt: skip


def _store_with_odd_cell(folder: Path, column: str, cell: str, plain_dates: str) -> None:
    """Six orders (with lines and customers) whose `column` is plain but for one `cell`.
    `plain_dates`: the other date cells with a UTC offset ('offset') or without ('naive')."""
    def at(day: int) -> str:
        return f"2025-01-{day:02d}T08:30:00+00:00" if plain_dates == "offset" else f"2025-01-{day:02d} 08:30:00"

    orders = {
        "order_id": [f"O{i}" for i in range(6)], "customer_id": ["C1", "C2", "C1", "C3", "C2", "C1"],
        "ordered_at": [at(d) for d in (2, 3, 5, 8, 13, 21)], "revenue": ["40", "25.5", "12.00", "7", "99.99", "3"],
        "discount": ["0", "5", "0", "1.5", "0", "0"], "refunded": ["0", "0", "12.00", "0", "0", "0"],
        "cost": ["10", "8.25", "4", "2", "30", "1"], "cancelled_at": ["", "", "", at(9), "", ""],
    }  # fmt: skip
    lines = {
        "order_id": [f"O{i}" for i in range(6)], "sku": ["A"] * 6, "category": ["Tea"] * 6,
        "quantity": ["1", "2", "1", "3", "1", "1"], "price": ["40", "12.75", "12", "2.3333", "99.99", "3"],
    }  # fmt: skip
    customers = {"customer_id": ["C1", "C2", "C3"], "created_at": [at(1), at(1), at(2)]}
    for table in (orders, lines, customers):
        if column in table:
            table[column][2] = cell
    folder.mkdir(parents=True)
    for name, table in (("orders", orders), ("order_lines", lines), ("customers", customers)):
        rows = [",".join(table)] + [",".join(r) for r in zip(*table.values(), strict=True)]
        (folder / f"{name}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


@pytest.mark.parametrize("column", list(_ODD_CELLS))
def test_typed_csv_reads_validate_as_the_text_does(tmp_path: Path, column: str) -> None:
    """`juno run` reads a CSV file's number and date-time columns typed where Arrow converts
    every cell, as text otherwise: the Store validation makes is the one the text gives, down to
    the rejected rows quoting the cells as the file wrote them."""
    for i, (cell, dates) in enumerate(itertools.product(_ODD_CELLS[column], ("offset", "naive"))):
        folder = tmp_path / f"s{i}"
        _store_with_odd_cell(folder, column, cell, dates)
        try:
            text = validate(read_store(folder, None, None), Config())
        except InputError as exc:
            with pytest.raises(InputError) as late_exc:
                validate(read_store(folder, None, None, defer=True), Config(), consume=True)
            assert str(late_exc.value) == str(exc)
            continue
        typed = validate(read_store(folder, None, None, defer=True), Config(), consume=True)
        text.compact()
        typed.compact()
        _assert_same_store(text, typed)
        for name in ("orders", "lines"):  # -0.0 equals +0.0 in the comparison above: the signs too
            a, b = getattr(text, name), getattr(typed, name)
            for col in a.columns[[a[c].dtype.kind == "f" for c in a.columns]]:
                assert np.array_equal(np.signbit(a[col].to_numpy()), np.signbit(b[col].to_numpy())), (cell, col)


def test_clean_csv_columns_are_read_typed_and_quoted_from_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    _store_with_odd_cell(folder, "ordered_at", "1990-01-01T00:00:00+00:00", "offset")
    frame, _, _, text = read_table_file(folder / "orders.csv", "orders", coded=True)
    assert frame["revenue"].dtype == np.float64 and frame["cost"].dtype == np.float64
    assert str(frame["ordered_at"].dtype) == "datetime64[ns, UTC]"
    assert set(text) == {"revenue", "discount", "refunded", "cost", "ordered_at", "cancelled_at"}
    assert text["ordered_at"]().tolist()[2] == "1990-01-01T00:00:00+00:00"
    # Read without types (validation's own eager read), every column is text.
    eager, _, _, none = read_table_file(folder / "orders.csv", "orders")
    assert none == {} and eager["revenue"].dtype == "string"
    store = validate(read_store(folder, None, None, defer=True), Config(), consume=True)
    orders_rejected = store.rejected[store.rejected["table"] == "orders"]
    assert orders_rejected["detail"].tolist() == ["1990-01-01T00:00:00+00:00"]
    # A cell Arrow refuses, a '-0' and dates without offsets: those columns only fall back.
    odd_cells = (("revenue", "$5", "string"), ("cost", "-0", "string"), ("ordered_at", "2025-01-03", "datetime64[ns]"))
    for column, cell, want in odd_cells:
        odd = tmp_path / f"odd_{column}"
        _store_with_odd_cell(odd, column, cell, "naive")
        frame, _, _, text = read_table_file(odd / "orders.csv", "orders", coded=True)
        assert str(frame[column].dtype) == want, column
        assert (column in text) == (want != "string")
        assert frame["discount"].dtype == np.float64


def test_short_ids_as_words_match_their_digits() -> None:
    """Ids of up to 8 bytes are checked and numbered as 64-bit words (juno.idkeys): the prefix
    found and the numbers equal a byte-by-byte reading, for every width and prefix length, and a
    byte that is no digit (':' and '/' next to '0'-'9', 'A', 0x80, a space) anywhere after the
    prefix sends the ids to another path."""
    rng = random.Random(8)
    for _ in range(400):
        width = rng.randint(1, 8)
        p = rng.randint(0, width - 1)
        prefix = "".join(rng.choice("ABZ-_x") for _ in range(p))
        digits = "0123456789"
        cells = [prefix + "".join(rng.choice(digits) for _ in range(width - p)) for _ in range(rng.randint(1, 30))]
        spoil = rng.random() < 0.3
        if spoil:
            i, j = rng.randrange(len(cells)), rng.randrange(p, width)
            bad = rng.choice([":", "/", "A", " ", "\u0080"])
            cells[i] = cells[i][:j] + bad + cells[i][j + 1 :]
            if len(cells[i].encode()) != width:
                continue  # a two-byte character changes the width: not this path
        arr = pa.array(cells, pa.large_string())
        parts = [arr.slice(0, len(cells) // 2), arr.slice(len(cells) // 2)]
        found = idkeys._digit_prefix(parts, width)
        head = cells[0].encode()
        p0 = max((i + 1 for i, b in enumerate(head) if not 48 <= b <= 57), default=0)
        every = all(c.encode()[:p0] == head[:p0] and c.encode()[p0:].isdigit() for c in cells)
        assert (found is not None) == (every and width - p0 >= 1), (cells, found)
        if found is not None:
            got = np.concatenate([idkeys._digit_number(c, width, found) for c in parts])
            assert got.dtype == np.uint64
            assert got.tolist() == [int(c.encode()[len(found) :]) for c in cells], cells


def test_file_of_names_the_files_present() -> None:
    """Error messages name the files a table's rows came from: read off a categorical's codes
    when it has few names, as the unique names of its rows gave them (sorted, up to five)."""
    from juno.sources.base import RawTable
    from juno.validate import _file_of

    def reference(col: pd.Series) -> str:
        return ", ".join(sorted(str(n) for n in col.dropna().unique()[:5])) or "orders"

    rng = np.random.default_rng(4)
    names = [f"orders_{i}.csv" for i in range(8)]
    for k in (1, 2, 5, 8):
        for missing in (0.0, 0.5, 1.0):
            codes = rng.integers(0, k, 200)
            codes[rng.random(200) < missing] = -1
            col = pd.Series(pd.Categorical.from_codes(codes, categories=names[:k]))
            for c in (col, col.cat.add_categories(["unused.csv"])):
                assert _file_of(RawTable("orders", pd.DataFrame({FILE_COL: c})), []) == reference(c), (k, missing)

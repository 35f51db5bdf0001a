"""Optimised code paths give exactly what the straightforward implementations they replaced give.

Outputs may change for good reasons (new columns, rule fixes); these tests pin only that each
fast path is equivalent to its plain reference, so a speed-up can never change a byte.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from juno import grouping, identity
from juno.checks import _covered_by_active_subscription
from juno.config import Config, Duplicates
from juno.grouping import key_codes, text_key_codes
from juno.identity import (
    _normalise_phone_text,
    email_key_codes,
    normalise_email,
    normalise_phone,
    phone_key_codes,
)
from juno.parse import _parse_consent_values, clean_text, parse_consent, positions
from juno.pipeline import run
from juno.render import csv_frame, format_datetimes, format_float, format_floats, write_csv
from juno.signals import join_by_group

EXAMPLE_STORE = Path(__file__).resolve().parent.parent / "examples" / "store"


def _reference_csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """csv_frame as first written: strftime and a Python format per float."""
    out = csv_frame(frame)
    for col in frame.columns:
        s = frame[col]
        if s.dtype.kind == "M":
            out[col] = s.dt.strftime("%Y-%m-%dT%H:%M:%S").astype("string")
        elif s.dtype.kind == "f":
            out[col] = pd.Series(np.round(s.to_numpy(float), 4), index=s.index).map(format_float)
    return out


EDGE_FLOATS = [
    0.0, -0.0, -0.00004, 0.00005, -0.00005, 0.00015, 0.12345, 1.00005, 2.5, 123.45675,
    999_999_999.99995, 1e9, -1e9, 1e15, -3.2e12, float("inf"), float("-inf"), float("nan"),
]


def test_float_text_matches_python_formatting() -> None:
    rng = np.random.default_rng(3)
    v = np.r_[
        rng.normal(0, 1000, 50_000),
        rng.normal(0, 1, 50_000),
        np.round(rng.normal(0, 100, 50_000), 2),
        rng.integers(-10**6, 10**6, 10_000).astype(float) / 10_000,
        EDGE_FLOATS,
    ]
    expected = np.array([format_float(x) for x in np.round(v, 4)], dtype=object)
    assert (format_floats(v) == expected).all()


def test_datetime_text_matches_strftime() -> None:
    s = pd.Series(
        pd.to_datetime(["2024-01-01 12:34:56.999", None, "1999-12-31", "2026-11-30 23:59:59"], format="mixed")
    )
    for unit in ("ns", "ms", "s"):
        x = s.astype(f"datetime64[{unit}]")
        expected = x.dt.strftime("%Y-%m-%dT%H:%M:%S").astype("string")
        pd.testing.assert_series_equal(format_datetimes(x), expected)


def test_csv_bytes_match_reference() -> None:
    rng = np.random.default_rng(5)
    n = 2_000
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series([f"C{i}" for i in range(n)], dtype="string"),
            "value": rng.normal(0, 500, n),
            "share": np.where(rng.random(n) < 0.1, np.nan, rng.random(n)),
            "at": pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 10**8, n), unit="s"),
            "n": rng.integers(0, 9, n),
            "ok": rng.random(n) < 0.5,
            "note": pd.Series(rng.choice(["=SUM(A1)", "plain", None, "-1"], n), dtype="string"),
        }
    )
    frame.loc[::7, "at"] = pd.NaT
    fast = csv_frame(frame).to_csv(index=False, lineterminator="\n", na_rep="")
    slow = _reference_csv_frame(frame).to_csv(index=False, lineterminator="\n", na_rep="")
    assert fast == slow


def test_join_by_group_matches_groupby_join() -> None:
    rng = np.random.default_rng(7)
    keys = np.sort(rng.integers(0, 300, 2_000))
    texts = rng.choice(np.array(["coffee", "tea", "skin care", "a;b"], dtype=object), 2_000)
    got_keys, got = join_by_group(keys, texts)
    expected = pd.Series(texts).groupby(keys).agg(";".join)
    assert (got_keys == expected.index.to_numpy()).all()
    assert (got == expected.to_numpy()).all()
    empty_keys, empty = join_by_group(np.array([], dtype=int), np.array([], dtype=object))
    assert len(empty_keys) == 0 and len(empty) == 0


def _reference_covered(ctx: types.SimpleNamespace, subs: pd.DataFrame, ids: pd.Index) -> np.ndarray:
    """The per-row set lookup the merge replaced."""
    out = np.zeros(len(ctx.f), dtype=bool)
    due = ctx.cycles.due
    act = subs[subs["status"] == "active"]
    code = ids.get_indexer(pd.Index(act["customer_id"]))
    by_cat = set(zip(code, act["category"].fillna(""), strict=True))
    by_sku = set(zip(code, act["sku"].fillna(""), strict=True))
    d_c = due["c"].to_numpy(int)
    hit = np.array(
        [
            (c, cat) in by_cat or (c, prod) in by_sku
            for c, cat, prod in zip(d_c, due["category"].fillna(""), due["product"], strict=True)
        ],
        dtype=bool,
    )
    out[d_c[hit]] = True
    return out


def test_subscription_cover_matches_row_lookup() -> None:
    rng = np.random.default_rng(11)
    n, m, k = 1_000, 1_500, 3_000
    ids = pd.Index([f"C{i:05d}" for i in range(n)])
    cats = np.array(["coffee", "tea", None, "skin"], dtype=object)
    subs = pd.DataFrame(
        {
            "customer_id": pd.Series(rng.choice(ids.to_numpy(), m), dtype="string"),
            "status": pd.Series(rng.choice(["active", "paused"], m), dtype="string"),
            "sku": pd.Series(rng.choice(np.array(["A", "B", None], dtype=object), m), dtype="string"),
            "category": pd.Series(rng.choice(cats, m), dtype="string"),
        }
    )
    due = pd.DataFrame(
        {
            "c": rng.integers(0, n, k),
            "category": rng.choice(cats, k),
            "product": rng.choice(np.array(["A", "B", "coffee", "tea", "X"], dtype=object), k),
        }
    )
    ctx = types.SimpleNamespace(f=pd.DataFrame({"x": np.zeros(n)}), cycles=types.SimpleNamespace(due=due))
    got = _covered_by_active_subscription(ctx, subs, ids)  # type: ignore[arg-type]
    expected = _reference_covered(ctx, subs, ids)
    assert got.any()
    assert (got == expected).all()


def test_positions_match_get_indexer() -> None:
    keys = pd.Series(["C3", "C1", "C2"], dtype="string")
    values = pd.Series(["C1", None, "C9", "C3", "C3"], dtype="string")
    expected = pd.Index(keys).get_indexer(values)
    assert (positions(values, keys) == expected).all()
    assert (positions(values, pd.Index(keys.to_numpy(object))) == expected).all()


def test_positions_of_few_values_among_many_keys_match_arrow_lookup() -> None:
    """Few values against many keys (tickets against every customer) hashes the values, not the
    keys: the same rows as a lookup in every key, missing values and repeated keys included (the
    first key of a repeat, as Arrow's lookup gives)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rng = np.random.default_rng(8)
    for trial in range(60):
        words = [f"C{i}" for i in range(80)]
        keys = [None if rng.random() < 0.03 * (trial % 3) else str(rng.choice(words)) for _ in range(120)]
        if trial % 2:
            keys = list(dict.fromkeys(keys))  # unique keys, as customer ids are
        values = [None if rng.random() < 0.15 else str(rng.choice([*words, "X1"])) for _ in range(rng.integers(0, 12))]
        s, k = pd.Series(values, dtype="string"), pd.Series(keys, dtype="string")
        assert len(k) > 2 * len(s)
        want = pc.index_in(pa.array(s), value_set=pa.array(k), skip_nulls=True).fill_null(-1).to_numpy(False)
        got = positions(s, k)
        assert got.dtype == np.intp and (got == want).all(), (values, keys)
        if trial % 2 and k.notna().all():  # unique keys: pandas' own answer too
            assert (got == pd.Index(k).get_indexer(s)).all()


def test_consent_parsed_per_distinct_value_matches_per_row() -> None:
    words = ["Subscribed", " yes ", "NO", None, "", "opted-in", "opted in", "weird", "never subscribed", "n"]
    s = pd.Series(words * 3, dtype="string", index=range(10, 40))
    got, got_bad = parse_consent(s)
    want, want_bad = _parse_consent_values(s)
    pd.testing.assert_series_equal(got, want.astype("string"))
    pd.testing.assert_series_equal(got_bad, want_bad.astype(bool))
    # Read as codes (a deferred read's FEW_DISTINCT columns): the same, missing cells included.
    coded = s.astype("category")
    no_empty = pd.Series(["NO", None, "weird", "yes", None], dtype="category")
    for col in (coded, coded.cat.add_categories(["unused"]), coded.iloc[:0], no_empty):
        got, got_bad = parse_consent(col)
        want, want_bad = _parse_consent_values(col.astype("string"))
        pd.testing.assert_series_equal(got, want.astype("string"))
        pd.testing.assert_series_equal(got_bad, want_bad.astype(bool))


def _reference_normalise_email(s: pd.Series, cfg: Duplicates) -> pd.Series:
    """normalise_email as first written: Python lists from str.split."""
    e = s.astype("string").str.strip().str.lower()
    e = e.mask(~e.str.contains("@", regex=False, na=False))
    parts = e.str.split("@", n=1, regex=False)
    local = parts.str[0]
    domain = parts.str[1].replace({"googlemail.com": "gmail.com"})
    if cfg.ignore_plus_tags:
        local = local.str.split("+", n=1, regex=False).str[0]
    if cfg.ignore_gmail_dots:
        local = local.where(domain != "gmail.com", local.str.replace(".", "", regex=False))
    out: pd.Series = (local + "@" + domain).mask((local == "") | domain.isna())
    return out


def test_email_keys_match_reference() -> None:
    emails = [
        " A.B+x@GoogleMail.com ", "a.b@gmail.com", "noat", "@x.com", "a@", "a@b@c", None, "",
        "x+y+z@Gmail.COM", "é.l+1@exämple.org", "a\n+b@x.com", "+@gmail.com", ".@gmail.com",
    ]
    s = pd.Series(emails, dtype="string")
    no_at = pd.Series(["noat", None, "", "x"], dtype="string")  # nothing to split anywhere
    assert normalise_email(no_at, Duplicates()).isna().all()
    for cfg in (
        Duplicates(),
        Duplicates(ignore_plus_tags=False, ignore_gmail_dots=False),
        Duplicates(ignore_plus_tags=True, ignore_gmail_dots=True),
    ):
        got = normalise_email(s, cfg).astype(object).to_numpy()
        want = _reference_normalise_email(s, cfg).astype(object).to_numpy()
        assert all((pd.isna(a) and pd.isna(b)) or a == b for a, b in zip(got, want, strict=True))


_EMAIL_PARTS = st.sampled_from(
    ["a", "B", ".", "+", "@", "x1", "é", "\x1c", "\x1f", " ", "\t", "\n", "\u00a0", "@gmail.com",
     "@GMail.Com", "@googlemail.com", "@GoogleMail.COM", "gmail.com", "@example.org", "'", "-"]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.one_of(st.none(), st.lists(_EMAIL_PARTS, max_size=6).map("".join)), min_size=1, max_size=40),
    st.booleans(),
    st.booleans(),
)
def test_email_keys_match_reference_on_any_text(emails: list[str | None], plus: bool, dots: bool) -> None:
    """Addresses keyed as they stand (the usual: an '@' after some text, no '+', no Gmail
    domain) and those split and rewritten, ASCII or not (the ASCII kernels only where they agree
    with the Unicode ones: bytes 0x1c-0x1f are whitespace to the latter), give the reference's
    keys."""
    s = pd.Series(emails, dtype="string")
    cfg = Duplicates(ignore_plus_tags=plus, ignore_gmail_dots=dots)
    got = normalise_email(s, cfg).astype(object).to_numpy()
    want = _reference_normalise_email(s, cfg).astype(object).to_numpy()
    assert all((pd.isna(a) and pd.isna(b)) or a == b for a, b in zip(got, want, strict=True)), (got, want)


def test_written_csv_bytes_match_pandas(tmp_path: Path) -> None:
    """write_csv joins rows with Arrow; pandas' to_csv of the same text is the reference."""
    result = run(EXAMPLE_STORE, config=Config())
    assert result.customers is not None and result.store is not None
    rng = np.random.default_rng(2)
    tricky = result.customers.head(400).copy()
    tricky["flag_detail"] = rng.choice(['a,b', 'say "hi"', "two\nlines", "cr\r", "", None, "=1+2"], 400)
    for name, frame in (
        ("cohorts", result.cohorts),
        ("customers", result.customers),
        ("rejected", result.store.rejected),
        ("tricky", tricky),
    ):
        path = tmp_path / f"{name}.csv"
        write_csv(frame, path)
        expected = csv_frame(frame).to_csv(index=False, lineterminator="\n", na_rep="")
        assert path.read_bytes() == expected.encode("utf-8"), name


def test_clean_text_keeps_clean_columns_and_cleans_the_rest() -> None:
    def reference(s: pd.Series) -> pd.Series:
        t = s.astype("string").str.strip()
        t = t.str.removeprefix("'")
        return t.mask(t == "")

    for cells in (["a", "b", None], ["a", " b"], ["'x", "y"], ["", None, "z"], ["a\u00a0", "b"], []):
        for dtype in ("string", object):
            s = pd.Series(cells, dtype=dtype)
            pd.testing.assert_series_equal(clean_text(s), reference(s))


@pytest.mark.parametrize("block", [1 << 16, 7, 1])
def test_phone_keys_match_reference(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Arrow phone keys equal the first-written pandas ones (kept in juno.identity for text
    with non-ASCII characters, whose Unicode digits count as digits). Digits are counted in
    blocks of cells: small blocks put block edges everywhere."""
    monkeypatch.setattr(identity, "_BLOCK", block)
    phones = [
        "+1 (415) 555-0101", "415.555.0101", "0044 20 7946 0000", "12", None, "", "  ", "(00) 44 20 7946 0000",
        "+0044 20 7946", "00", "0", "+", "1-415-555-0101", "14155550101", "24155550101", "tel: 415 555 0101 ext",
        "+44 (0) 20 7946 0000", "001 415 555 0101", "5550101", "+1 555 01", "441234567890", "4412345678901",
        "(00) 415 555 0101", "415/555/0101", "415:555:0101",
    ]
    unicode = ["４１５５５５０１０１", "415 555 0101 ☎", "\u00a0415 555 0101\u00a0"]  # the pandas path
    rng = np.random.default_rng(5)
    pieces = ["+", "00", "0", "1", "44", "(", ")", " ", "-", ".", "/", ":", "x", "555", "0101", "415"]
    phones += ["".join(rng.choice(pieces, rng.integers(0, 8))) for _ in range(3000)]

    def same(s: pd.Series, cfg: Duplicates) -> bool:
        got = normalise_phone(s, cfg).astype(object).to_numpy()
        want = _normalise_phone_text(s, cfg).astype(object).to_numpy()
        pairs = zip(got, want, strict=True)
        return all(a == b if not (pd.isna(a) or pd.isna(b)) else pd.isna(a) and pd.isna(b) for a, b in pairs)

    for values in (phones, [*phones, *unicode]):
        for dtype in ("string", "str", object):
            for cc in ("1", "44"):
                assert same(pd.Series(values, dtype=dtype), Duplicates(default_phone_country=cc)), (dtype, cc)
    sliced = pd.Series(pd.array(pa.array(phones, pa.large_string()).slice(3, 40), dtype="string"))
    assert same(sliced, Duplicates())
    assert normalise_phone(pd.Series(unicode[:1]), Duplicates()).tolist() == ["+1４１５５５５０１０１"]


def _partition(codes: np.ndarray) -> list[int]:
    """Per row, the first row holding its code (-1 for none): codes compared up to numbering."""
    first: dict[int, int] = {}
    return [first.setdefault(int(c), i) if c >= 0 else -1 for i, c in enumerate(codes)]


@pytest.mark.parametrize("block", [1 << 16, 7, 1])
def test_phone_key_codes_group_as_the_phone_keys(block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Duplicate detection numbers the phones by their keys' digits (one integer each): the same
    groups as the text keys of `normalise_phone`, for every country code setting, without
    falling back to the text keys; over 17 digits kept, non-ASCII text or a country code that
    is not digits fall back to them."""
    monkeypatch.setattr(identity, "_BLOCK", block)
    phones = [
        "+1 (415) 555-0101", "415.555.0101", "0044 20 7946 0000", "12", None, "", "  ", "(00) 44 20 7946 0000",
        "+0044 20 7946", "00", "0", "+", "1-415-555-0101", "14155550101", "24155550101", " +1 415 555 0101",
        "\t0044 20 7946 0000 ", "0000000000", "+00000000", "+000000000", "00 00000000", "0044", "+1" + "0" * 15,
        "\u00a0+1 415 555 0101\u00a0", "\x1c+1 415 555 0101", "441234567890", "001 415 555 0101", "01234567890",
        "123456789012345678901", "00123456789012345678",
    ]
    rng = np.random.default_rng(7)
    pieces = ["+", "00", "0", "1", "44", "(", ")", " ", "-", ".", "x", "555", "0101", "415", "9999999"]
    phones += ["".join(rng.choice(pieces, rng.integers(0, 9))) for _ in range(4000)]
    # (an international number of over 17 digits would take the text keys)
    phones = [
        p for p in phones if p is None or sum(ch.isdigit() for ch in p) <= 17 or not p.lstrip().startswith(("+", "00"))
    ]
    text_keys = normalise_phone

    def fast(s: pd.Series, cfg: Duplicates) -> tuple[np.ndarray, int]:
        monkeypatch.setattr(identity, "normalise_phone", None)  # no fallback to the text keys
        try:
            return phone_key_codes(s, cfg)
        finally:
            monkeypatch.setattr(identity, "normalise_phone", text_keys)

    for dtype in ("string", "str", object):
        for cc in ("1", "44", "", "01", "353"):
            s = pd.Series(phones, dtype=dtype)
            cfg = Duplicates(default_phone_country=cc)
            want, n_want = key_codes(normalise_phone(s, cfg))
            got, n_got = fast(s, cfg)
            assert _partition(got) == _partition(want), (dtype, cc)
            assert n_got == n_want
    for odd, cfg in (
        (["+1 415 555 0101 2345 6789 01", "+1415555010123456789 01"], Duplicates()),
        (["４１５５５５０１０１", "4155550101"], Duplicates()),
        (["+x4155550101", "4155550101"], Duplicates(default_phone_country="x")),
    ):
        s = pd.Series(odd, dtype="string")
        assert _partition(phone_key_codes(s, cfg)[0]) == _partition(key_codes(normalise_phone(s, cfg))[0])


def test_text_key_codes_group_as_the_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Duplicate detection numbers the email keys by a 64-bit hash of each, and the rows whose
    hash is shared by their text: the same groups as numbering every text (`key_codes`), with
    the hash as it is and with one that collides everywhere (each text's length)."""
    rng = np.random.default_rng(3)
    alphabet = [*"abcdefghij.+@-_", "é", "ü", "😀", "\x00"]
    texts: list[str | None] = ["".join(rng.choice(alphabet, rng.integers(0, 30))) for _ in range(5000)]
    texts += [None, "", "", None, "a" * 100, "a" * 100, "a" * 101, "x" * 7, "x" * 8, "x" * 9, "x" * 16, "x" * 17]
    texts += list(rng.choice(np.array(texts, dtype=object), 1000))  # texts held twice or more
    s = pd.Series(texts, dtype="string")
    sliced = pd.Series(pd.array(pa.array(texts, pa.large_string()).slice(5, 3000), dtype="string"))
    for col in (s, sliced, s.iloc[:0], pd.Series([None, None], dtype="string")):
        want = _partition(key_codes(col)[0])
        assert _partition(text_key_codes(col)[0]) == want
        lengths = lambda a: pa.compute.binary_length(a).fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)  # noqa: E731
        monkeypatch.setattr(grouping, "text_hashes", lengths)
        assert _partition(text_key_codes(col)[0]) == want
        monkeypatch.undo()
    # The hash tells the texts here apart (nulls hash as empty texts).
    hashes = grouping.text_hashes(pa.array(texts, pa.large_string()))
    assert len(set(hashes.tolist())) == len({t or "" for t in texts})


def test_email_key_codes_group_as_the_email_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Duplicate detection numbers the email keys without making the key column: the same groups
    as numbering `normalise_email`'s keys, for each setting, with padded, upper-case, plus-tagged,
    Gmail and Googlemail addresses, no '@' or nothing before it, missing and empty cells, and
    with a hash that collides everywhere; non-ASCII text takes normalise_email itself."""
    rng = np.random.default_rng(5)
    names = ["jane", "Jane", "j.ane", "JANE+shop", "j.a.n.e+x", "", "bob", "Bob.Smith", "a+b+c", "+tag"]
    domains = ["@gmail.com", "@GMail.com", "@googlemail.com", "@example.com", "@Example.COM", "", "@", "@x@y"]
    pads = ["", " ", "\t", "  \n"]
    emails: list[str | None] = [
        None if rng.random() < 0.05 else rng.choice(pads) + rng.choice(names) + rng.choice(domains) + rng.choice(pads)
        for _ in range(4000)
    ]
    emails += ["@gmail.com", "@", "", "noat", "x@", "@x", None]
    trimmed = [e.strip() if e else e for e in emails]
    lengths = lambda a: pa.compute.binary_length(a).fill_null(0).to_numpy(zero_copy_only=False).astype(np.uint64)  # noqa: E731
    for cfg in (Duplicates(), Duplicates(ignore_plus_tags=False), Duplicates(ignore_gmail_dots=False)):
        for values in (emails, trimmed, ["Jé@x.com", "jé@x.com", "a@b.c"]):
            for dtype in ("string", "str", object):
                s = pd.Series(values, dtype=dtype)
                want = _partition(key_codes(normalise_email(s, cfg))[0])
                assert _partition(email_key_codes(s, cfg)[0]) == want, (cfg, dtype)
                monkeypatch.setattr(identity, "text_hashes", lengths)
                assert _partition(email_key_codes(s, cfg)[0]) == want, (cfg, dtype)
                monkeypatch.undo()

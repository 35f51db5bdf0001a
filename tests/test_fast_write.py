"""The fast paths of the customer table and of writing the outputs give exactly what the plain
implementations they replaced give (like tests/test_outputs_stable.py: no timings, only equality).
"""

from __future__ import annotations

import itertools
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from helpers import random_store

import juno.render
from juno import classify as classify_module
from juno import report_html, segment_sql, segments
from juno.checks import HOLD_FLAGS, Flags, flag_strings, next_action_codes
from juno.classify import Classification, customer_table
from juno.cohorts import RULES, Membership, vip_excluded_for_discounts
from juno.config import Config
from juno.pipeline import RunResult, run
from juno.plaincells import first_byte_in
from juno.render import (
    FORMULA_START,
    _short_float_text,
    csv_frame,
    datetime_cells,
    escape_cells,
    escape_text,
    float_cells,
    format_floats,
    int_cells,
    write_csv,
    write_text_csv,
)
from juno.signals import Signals
from juno.sources.csvfiles import sha256_file

EXAMPLE_STORE = Path(__file__).resolve().parent.parent / "examples" / "store"

TRICKY_TEXT = [
    "plain", "", None, "a,b", 'say "hi"', "two\nlines", "cr\r", "\rx", "=1+2", "+1 619 555", "-3",
    "@a", "\tx", "'quoted", '=a,"b"', "é,ü", "a;b", " lead", "trail ",
]


def _reference_bytes(frame: pd.DataFrame) -> bytes:
    """What write_csv wrote first: pandas' to_csv of csv_frame's text."""
    return csv_frame(frame).to_csv(index=False, lineterminator="\n", na_rep="").encode("utf-8")


def _tricky_frame(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    at = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(-(10**10), 10**10, n), unit="ms")
    floats = np.r_[
        [0.0, -0.0, -0.00004, 0.00005, -0.00005, 0.00015, 0.12345, 1.00005, 2.5, 123.45675, 1e9 - 0.00005],
        rng.normal(0, 1000, n),
    ][:n]
    frame = pd.DataFrame(
        {
            "id": pd.Series([f"C{i}" for i in range(n)], dtype="str"),
            "text": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="str"),
            "string": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="string"),
            "obj": pd.Series(rng.choice(np.array([1, 2.5, "x,y", None, np.nan, "=z", True], dtype=object), n)),
            "value": floats,
            "share": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
            "at_ns": at,
            "at_s": at.astype("datetime64[s]"),
            "at_us": at.astype("datetime64[us]"),
            "at_tz": at.tz_localize("UTC"),
            "n": rng.integers(-(10**12), 10**12, n),
            "small": rng.integers(0, 9, n).astype(np.int8),
            "nullable": pd.array(np.where(rng.random(n) < 0.3, None, rng.integers(0, 99, n)), dtype="Int64"),
            "ok": rng.random(n) < 0.5,
            "last": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="str"),
        }
    )
    frame.loc[::7, "at_ns"] = pd.NaT
    frame.loc[::5, "at_s"] = pd.NaT
    frame.loc[::3, "at_tz"] = pd.NaT
    return frame


@pytest.mark.parametrize("slice_rows", [1 << 17, 97])
def test_write_csv_matches_pandas_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slice_rows: int) -> None:
    monkeypatch.setattr(juno.render, "_SLICE", slice_rows)
    frame = _tricky_frame(1_000)
    path = tmp_path / "t.csv"
    write_csv(frame, path)
    assert path.read_bytes() == _reference_bytes(frame)


def test_write_csv_edge_shapes(tmp_path: Path) -> None:
    frames = [
        pd.DataFrame({"a": pd.Series(["", None, "x"], dtype="str"), "b": [np.nan, np.inf, -np.inf]}),
        pd.DataFrame({"a": ["", ""], "b": ["", ""]}),
        pd.DataFrame({"a": [1e15, -3.2e12], 'odd "name",': [True, False]}),
        pd.DataFrame({"only": ["", "x,y"]}),
        pd.DataFrame({"a": pd.Series([], dtype="str"), "b": pd.Series([], dtype=float)}),
        _tricky_frame(50).iloc[10:30],  # a frame that does not start at row 0
    ]
    for i, frame in enumerate(frames):
        path = tmp_path / f"{i}.csv"
        write_csv(frame, path)
        assert path.read_bytes() == _reference_bytes(frame), i


def test_float_cells_match_format_floats() -> None:
    rng = np.random.default_rng(3)
    v = np.r_[
        rng.normal(0, 1000, 20_000),
        rng.normal(0, 1, 20_000),
        np.round(rng.normal(0, 100, 20_000), 2),
        rng.integers(-(10**6), 10**6, 10_000).astype(float) / 10_000,
        [0.0, -0.0, -0.00004, 0.00005, 999_999_999.99994, -999_999_999.99994, np.nan],
    ]
    got = float_cells(v).fill_null("").to_numpy(zero_copy_only=False)
    assert (got == format_floats(v)).all()
    rounded = np.r_[np.arange(0, 5000.0), [np.nan, 7.0]]
    for w in (np.abs(v), rounded, -rounded, np.round(np.abs(v), 1), np.array([np.nan, np.nan]), v[:0]):
        assert (float_cells(w).fill_null("").to_numpy(zero_copy_only=False) == format_floats(w)).all()
    huge = np.array([1e9, 1e15, np.inf, np.nan, 1.5])
    assert (float_cells(huge).fill_null("").to_numpy(zero_copy_only=False) == format_floats(huge)).all()


def _ten_thousandths(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """float_cells' inputs to _short_float_text: (whole, ten-thousandths, negative, nan)."""
    r = np.round(v, 4)
    nan = np.isnan(r)
    whole, frac = np.divmod(np.rint(np.abs(np.where(nan, 0.0, r)) * 1e4).astype(np.int64), 10_000)
    return whole, frac, np.signbit(r) & ~nan, nan


def test_short_float_text_is_format_floats_where_it_applies() -> None:
    """The cells put together as words (a whole part under 10**8, at most 12 bytes) are
    format_floats' text, nulls where NaN; anything longer is left to the joined path (None)."""
    rng = np.random.default_rng(11)
    v = np.r_[
        rng.normal(0, 1000, 50_000),
        np.round(rng.uniform(0, 30_000, 50_000), 2),
        rng.exponential(1e-3, 20_000),
        -rng.exponential(1e-4, 20_000),
        rng.integers(-(10**10), 10**10, 20_000) / 10_000,  # whole parts up to 10**6, four decimals
        (rng.integers(-(10**9), 10**9, 20_000) + 0.5) / 10_000,  # ties
        [0.0, -0.0, 0.00005, -0.00005, -0.00004, 0.0001, 1.0, 10.0, 99_999_999.0, 1_234_567.123, -1_234_567.123,
         -1_234_567.12, 9_999.9999, -0.1, np.nan, -np.nan],
    ]  # fmt: skip
    whole, frac, negative, nan = _ten_thousandths(v)
    got = _short_float_text(whole, frac, negative, nan)
    assert got is not None
    assert got.null_count == int(nan.sum())
    assert (got.fill_null("").to_numpy(zero_copy_only=False) == format_floats(v)).all()
    assert float_cells(v).equals(got)
    for longer in ([123_456_789.0], [12_345_678.1234], [-12_345_678.0], [-1_234_567.1234]):  # 9 digits, 13 bytes
        assert _short_float_text(*_ten_thousandths(np.array(longer))[:3], None) is None, longer
    for w in (np.array([1.5, 123_456_789.0]), np.array([-1_234_567.1234, 2.0])):  # the joined path
        assert (float_cells(w).fill_null("").to_numpy(zero_copy_only=False) == format_floats(w)).all()


def test_datetime_cells_are_arrows_text_with_a_t() -> None:
    """datetime_cells gives Arrow's text of each second with 'T' between date and time, NaT as
    empty, for years 1000-9999 (leap days, before 1970, the ends of the range); None outside."""
    rng = np.random.default_rng(12)
    lo = int(np.datetime64("1000-01-01T00:00:00").astype(np.int64))
    hi = int(np.datetime64("9999-12-31T23:59:59").astype(np.int64))
    leap = int(np.datetime64("2024-02-29T12:00:00").astype(np.int64))
    draws = [
        rng.integers(lo, hi + 1, 100_000),  # spans more days than rows: dates made per row
        rng.integers(1_600_000_000, 1_800_000_000, 50_000),  # a few years: a table of days
        np.array([lo, hi, 0, -1, 86_399, 86_400, -86_400, -86_401, leap, leap + 86_400]),
    ]
    for seconds in draws:
        for nat_every in (0, 3):
            x = seconds.astype("datetime64[s]")
            if nat_every:
                x[::nat_every] = np.datetime64("NaT")
            want = pa.array(x).cast(pa.large_string()).to_numpy(zero_copy_only=False)
            want = np.array(["" if w is None else w[:10] + "T" + w[11:] for w in want], dtype=object)
            got = datetime_cells(x)
            assert got is not None and got.null_count == 0
            assert (got.to_numpy(zero_copy_only=False) == want).all()
    for outside in ([lo - 1, 0], [hi + 1], []):
        assert datetime_cells(np.array(outside, dtype=np.int64).astype("datetime64[s]")) is None
    assert datetime_cells(np.array(["NaT", "NaT"], dtype="datetime64[s]")) is None


# ---------------------------------------------------------------- the customer table


def _reference_flag_strings(flags: Flags) -> np.ndarray:
    out = np.full(len(flags.frame), "", dtype=object)
    for name in HOLD_FLAGS:
        m = flags.frame[name].to_numpy(bool)
        out = np.where(m, np.where(out == "", name, out + ";" + name), out)
    return out


def _reference_primary(memberships: dict[str, Membership], precedence: list[str], n: int) -> np.ndarray:
    out = np.full(n, "", dtype=object)
    for cid in reversed(precedence):
        if cid in memberships:
            out = np.where(memberships[cid].mask, cid, out)
    return out


def _reference_next_actions(primary: np.ndarray, flags: Flags, actions: dict[str, str], config: Config) -> np.ndarray:
    fr = flags.frame
    out = np.array([actions.get(p, "") for p in primary], dtype=object)
    fallback = config.consent.fallback_channel
    rules = [
        ("duplicate_record", "merge duplicate records before outreach"),
        ("subscription_conflict", "adjust the action: manage the subscription, do not remind or discount"),
        ("recent_purchase", f"hold outreach: ordered within {config.thresholds.cooldown_days} days"),
        ("no_consent", f"no marketing send: {fallback.replace('_', ' ')} or transactional only"),
        ("recent_support_issue", "service recovery / review first; no promotional send"),
    ]
    for flag, text in rules:
        out = np.where(fr[flag].to_numpy(bool) & (primary != ""), text, out)
    hs = fr["high_severity"].to_numpy(bool) & (primary != "")
    return np.where(hs, "service recovery first (high-severity ticket); no promotional send", out)


def _reference_customer_table(
    signals: Signals, cl: Classification, contacts: pd.DataFrame | None = None
) -> pd.DataFrame:
    """customer_table as it was: object arrays inferred by the DataFrame, columns set one by one."""
    f = signals.frame
    n = len(f)
    prio = {c.cohort: c.priority for c in cl.cohort_facts}
    cohorts_col = np.full(n, "", dtype=object)
    reasons = np.full(n, "", dtype=object)
    for cid in cl.memberships:
        m = cl.memberships[cid]
        idx = np.flatnonzero(m.mask)
        if len(idx) == 0:
            continue
        cur = cohorts_col[idx]
        cohorts_col[idx] = np.where(cur == "", cid, cur + ";" + cid)
        text = cid + ": " + np.char.replace(m.reasons[idx].astype(str), ";", ", ").astype(object)
        cur = reasons[idx]
        reasons[idx] = np.where(cur == "", text, cur + " | " + text)
    if "vip" in cl.memberships:
        idx = np.flatnonzero(vip_excluded_for_discounts(cl.ctx))
        note = "not vip: discount-dependent high spender"
        cur = reasons[idx]
        reasons[idx] = np.where(cur == "", note, cur + " | " + note)
    prim = cl.primary
    classified = prim != ""
    excluded = f["excluded"].to_numpy(bool)
    merged = f["merged_into"].notna().to_numpy(bool)
    no_orders = f["orders_all_lifetime"].to_numpy() == 0
    only_void = (f["orders_lifetime"].to_numpy() == 0) & ~no_orders
    why = np.select(
        [classified, excluded, merged, no_orders, only_void],
        [
            "",
            f["excluded_reason"].to_numpy(object),
            ("merged into " + f["merged_into"].fillna("")).to_numpy(object),
            "no orders",
            "only cancelled or fully refunded orders",
        ],
        default="no cohort rule met",
    )
    status = np.select([classified, excluded, merged], ["classified", "excluded", "merged"], "unclassified")
    priority = np.full(n, "", dtype=object)
    for cohort, p in prio.items():
        priority[prim == cohort] = p
    out = pd.DataFrame(
        {
            "customer_id": f["customer_id"].to_numpy(),
            "status": status,
            "primary_cohort": prim,
            "cohorts": cohorts_col,
            "flags": _reference_flag_strings(cl.flags),
            "held_back": cl.held & classified,
            "next_action": cl.actions,
            "priority": priority,
            "reason_codes": reasons,
            "flag_detail": cl.flags.detail,
            "unclassified_reason": why,
        }
    )
    for col in CUSTOMER_SIGNALS:
        out[col] = f[col].to_numpy()
    if contacts is not None:
        for col in ("email", "phone"):
            out[col] = contacts[col].to_numpy() if col in contacts else None
    return out


CUSTOMER_SIGNALS = [
    "orders_window", "orders_lifetime", "net_revenue_window", "net_revenue_lifetime", "margin_window",
    "value_window", "value_lifetime", "value_score", "first_order_at", "last_order_at", "recency_days",
    "tenure_days", "median_gap_days", "discount_share_window", "discount_rate_window", "refund_rate",
    "top_category", "categories", "subscription_status", "tickets_window", "open_tickets", "email_consent",
    "sms_consent", "email_ok", "sms_ok", "duplicate_group",
]


def _check_classification(result: RunResult) -> None:
    store, sig, cl = result.store, result.signals, result.classification
    assert store is not None and sig is not None and cl is not None
    assert (flag_strings(cl.flags) == _reference_flag_strings(cl.flags)).all()
    actions = {c: RULES[c].action for c in cl.memberships}
    for config in (result.config, Config.model_validate({"consent": {"primary_channel": "sms"}})):
        got = next_action_codes(cl.primary, cl.flags, actions, config).values()
        assert got.dtype == object
        assert (got == _reference_next_actions(cl.primary, cl.flags, actions, config)).all()
    assert (cl.actions == _reference_next_actions(cl.primary, cl.flags, actions, result.config)).all()
    # A primary column with none, an unknown cohort and a missing cell; and the codes carried.
    odd = cl.primary.copy()
    flagged = np.flatnonzero(cl.flags.frame[["no_consent", "recent_purchase"]].to_numpy(bool).any(axis=1))
    assert len(flagged) >= 6  # the odd cells meet the flag rules
    odd[flagged[:6]] = ["", "not_a_cohort", None, None, "not_a_cohort", ""]
    got = next_action_codes(odd, cl.flags, actions, result.config).values()
    assert (got == _reference_next_actions(odd, cl.flags, actions, result.config)).all()
    assert (np.asarray(cl.primary_names, dtype=object)[cl.primary_code] == cl.primary).all()
    assert (cl.primary == _reference_primary(cl.memberships, list(result.config.precedence), len(sig.frame))).all()
    n = len(sig.frame)
    fast = classify_module._member_texts(cl.memberships, cl.ctx, n)
    plain = classify_module._member_texts_objects(cl.memberships, cl.ctx, n)
    assert fast is not None
    for a, b in zip(fast, plain, strict=True):
        pd.testing.assert_extension_array_equal(a, b)
    assert (cl.memberships and any(m.mask.any() for m in cl.memberships.values()))
    contacts = [store.customers, None, store.customers.drop(columns=["phone"])]
    for who in contacts:
        got_t = customer_table(sig, cl, contacts=who)
        want = _reference_customer_table(sig, cl, contacts=who)
        pd.testing.assert_frame_equal(got_t, want, check_exact=True)


@pytest.mark.parametrize(
    "config",
    [
        Config(),
        Config.model_validate({"duplicates": {"merge": True}, "value": "margin"}),
        Config.model_validate({"as_of": "2025-06-30", "population": {"exclude_tags": ["loyalty"]}}),
    ],
)
def test_customer_table_matches_reference(config: Config) -> None:
    _check_classification(run(EXAMPLE_STORE, config=config))


def test_customer_table_matches_reference_on_a_random_store(tmp_path: Path) -> None:
    store = random_store(tmp_path / "s", n=400, staff_tags=True, category="tea")
    cfg = Config.model_validate({"population": {"exclude_tags": ["staff"]}, "duplicates": {"merge": True}})
    _check_classification(run(store, config=cfg))


# ---------------------------------------------------------------- segments


def test_write_text_csv_matches_to_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(juno.render, "_SLICE", 64)
    rng = np.random.default_rng(4)
    n = 500
    text = pd.DataFrame(
        {
            "First Name": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="string"),
            "Tags": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="str"),
            "Phone": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="string"),
        }
    )
    frames = [text, text.iloc[3:9], text.iloc[:0], text[["Tags"]], text.assign(n=1)]
    for i, frame in enumerate(frames):
        path = tmp_path / f"{i}.csv"
        write_text_csv(frame, path)
        assert path.read_bytes() == frame.to_csv(index=False, lineterminator="\n").encode("utf-8"), i


def test_tag_import_by_position_matches_reindex(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = random_store(tmp_path / "s", n=400, staff_tags=True)
    result = run(store, config=Config())
    assert result.classification is not None and result.store is not None and result.signals is not None
    assert segments._row_aligned(result.store.customers["customer_id"], result.signals.frame["customer_id"])
    fast = {cid: segments.tag_import(cid, result, "t") for cid in result.classification.memberships}
    assert sum(len(f) for f in fast.values()) > 50
    monkeypatch.setattr(segments, "_row_aligned", lambda a, b: False)
    for cid, frame in fast.items():
        pd.testing.assert_frame_equal(frame, segments.tag_import(cid, result, "t"), check_exact=True)
    ids = result.signals.frame["customer_id"]
    assert not segments._row_aligned(ids, ids.iloc[::-1].reset_index(drop=True))
    assert not segments._row_aligned(ids, ids.iloc[1:])


def _reference_cycle_rows(result: RunResult) -> list[tuple[str, str, str | None, float]]:
    cl = result.classification
    assert cl is not None
    table = cl.cycles.table
    if table.empty:
        return []
    rep = table[table["replenishable"].astype(bool)]
    p = cl.cycles.purchases
    sku_cat: dict[str, str | None] = {}
    if len(p) and "sku" in p:
        first = p.dropna(subset=["sku"]).drop_duplicates("sku")
        for sku, cat in zip(first["sku"].tolist(), first["category"].tolist(), strict=True):
            sku_cat[str(sku)] = None if pd.isna(cat) else str(cat)
    rows: list[tuple[str, str, str | None, float]] = []
    for r in rep.sort_values(["level", "product"]).itertuples():
        product = str(r.product)
        category = product if r.level == "category" else sku_cat.get(product)
        rows.append((str(r.level), product, category, float(str(r.median_days))))
    return rows


def test_cycle_rows_match_reference() -> None:
    result = run(EXAMPLE_STORE, config=Config())
    assert segment_sql.cycle_rows_of(result) == _reference_cycle_rows(result)
    # SKU-level cycles (the example store has none): first category of each SKU with a cycle.
    purchases = pd.DataFrame(
        {
            "c": [0, 1, 2, 3, 4, 5],
            "category": pd.Series([None, "tea", "coffee", "tea", None, "x"], dtype="string"),
            "sku": pd.Series(["S1", "S1", None, "S2", "S3", "S4"], dtype="string"),
            "day": pd.to_datetime(["2025-01-01"] * 6),
        }
    )
    table = pd.DataFrame(
        {
            "level": ["category", "sku", "sku", "sku", "sku", "category"],
            "product": ["tea", "S1", "S2", "S3", "S9", "coffee"],
            "median_days": [30.0, 20.5, 14.0, 7.0, 3.0, 45.0],
            "replenishable": [True, True, True, True, True, False],
        }
    )
    got = []
    for p in (purchases, purchases.astype({"sku": object}), purchases.iloc[:0]):
        cycles = types.SimpleNamespace(table=table, purchases=p)
        fake = types.SimpleNamespace(classification=types.SimpleNamespace(cycles=cycles))
        got.append(segment_sql.cycle_rows_of(fake))  # type: ignore[arg-type]
        assert got[-1] == _reference_cycle_rows(fake)  # type: ignore[arg-type]
        # Classification's own SKU -> first category map gives the same rows without the frame.
        first = p.dropna(subset=["sku"]).drop_duplicates("sku")
        known = {str(k): (None if pd.isna(v) else str(v)) for k, v in zip(first["sku"], first["category"], strict=True)}
        cycles.sku_categories = known
        assert segment_sql.cycle_rows_of(fake) == got[-1]  # type: ignore[arg-type]
    assert ("sku", "S1", None, 20.5) in got[0] and ("sku", "S2", "tea", 14.0) in got[0]


# ---------------------------------------------------------------- the HTML brief's grid


def _reference_cell_counts(customers: pd.DataFrame) -> pd.DataFrame:
    """The grouping _grid did before: a DataFrame of (x, y, cohort) grouped with pandas."""
    import math

    rec = pd.to_numeric(customers["recency_days"], errors="coerce").to_numpy(float)
    val = pd.to_numeric(customers["value_lifetime"], errors="coerce").to_numpy(float)
    keep = np.isfinite(rec) & np.isfinite(val) & (val > 0) & (customers["status"] != "excluded").to_numpy()
    rec, val = rec[keep], val[keep]
    prim = customers["primary_cohort"].astype("string").fillna("").to_numpy(object)[keep]
    x_max = max(float(np.nanmax(rec)), 1.0)
    x_step = next((s for s in report_html.X_STEPS if (x_max + 1) / s <= report_html.GRID_X), 365)
    columns = min(math.ceil((x_max + 1) / x_step), report_html.GRID_X)
    xb = np.minimum((rec // x_step).astype(int), columns - 1)
    lv = np.log10(val)
    lo, hi = math.floor(float(lv.min())), math.ceil(float(lv.max()) + 1e-9)
    hi = max(hi, lo + 1)
    yb = np.minimum(((lv - lo) / (hi - lo) * report_html.GRID_Y).astype(int), report_html.GRID_Y - 1)
    frame = pd.DataFrame({"x": xb, "y": yb, "p": prim})
    return frame.groupby(["x", "y", "p"], sort=True).size().rename("n").reset_index()


def test_grid_counts_match_groupby(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(EXAMPLE_STORE, config=Config())
    assert result.customers is not None
    rng = np.random.default_rng(9)
    n = 5_000
    synthetic = pd.DataFrame(
        {
            "recency_days": np.where(rng.random(n) < 0.05, np.nan, rng.integers(0, 900, n).astype(float)),
            "value_lifetime": rng.lognormal(4, 2, n) * (rng.random(n) < 0.95),
            "status": rng.choice(["classified", "excluded", "unclassified"], n),
            "primary_cohort": pd.Series(rng.choice(["vip", "near_vip", "", None, "é", "Z"], n), dtype="str"),
        }
    )
    seen: list[pd.DataFrame] = []
    real = report_html._cell_counts

    def spy(*args: object) -> pd.DataFrame:
        out = real(*args)  # type: ignore[arg-type]
        seen.append(out.copy())
        return out

    monkeypatch.setattr(report_html, "_cell_counts", spy)
    for customers in (result.customers, synthetic):
        report_html._grid(customers)
        pd.testing.assert_frame_equal(seen[-1], _reference_cell_counts(customers), check_exact=True)


def test_text_cells_made_once_per_distinct_text_are_the_same_cells() -> None:
    """A long text column of few distinct texts, many to be quoted, is made once per distinct
    text and looked up (`_quoted_by_value`): the cells are those made cell by cell (formula
    escapes, quotes doubled, NA as empty; that path is checked against pandas' text above)."""
    rng = np.random.default_rng(13)
    few = pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), 20_000), dtype="str")
    many = pd.Series([f"{i},{i % 7}" if i % 3 else None for i in range(20_000)], dtype="str")
    short = few.iloc[:5_000]
    for s, by_value in ((few, True), (many, False), (short, False)):
        text = pa.array(s.astype("string"), pa.large_string()).fill_null("")
        assert juno.render._quoted_by_value(text) is by_value
        got = juno.render.csv_cells(s)
        assert got.equals(juno.render.quote_cells(juno.render.escape_formulas(text)))
        assert got.null_count == 0 and got.to_pylist()[: len(TRICKY_TEXT)] == [
            _one_cell(v) for v in s.iloc[: len(TRICKY_TEXT)]
        ]


def _one_cell(v: object) -> str:
    """One text cell as write_csv writes it, by hand: NA empty, formula escape, csv quoting."""
    t = "" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v)
    if t.startswith(FORMULA_START):
        t = "'" + t
    if any(ch in t for ch in juno.render._SPECIALS):
        t = '"' + t.replace('"', '""') + '"'
    return t


def test_escape_text_matches_escape_cells() -> None:
    rng = np.random.default_rng(11)
    values = rng.choice(np.array([t for t in TRICKY_TEXT if t is not None], dtype=object), 2_000)
    for s in (
        pd.Series(values, dtype="string"),
        pd.Series(values, dtype="str", index=np.arange(5, 2_005)),
        pd.Series(values, dtype=object, name="x"),
        pd.Series([None, "=a"], dtype="string"),  # NA: escape_cells itself
        pd.Series([], dtype="string"),
    ):
        pd.testing.assert_series_equal(escape_text(s), escape_cells(s), check_exact=True)


def test_first_byte_in_matches_starts_with() -> None:
    """The formula check reads each cell's first byte off the buffers: empty cells (an empty
    cell's offset points at the next cell's first byte, or past the data), slices that start
    mid-buffer and arrays with no bytes at all must answer as starts_with does."""
    rng = np.random.default_rng(12)
    values = [t for t in TRICKY_TEXT if t is not None]
    whole = pa.array([*rng.choice(np.array(values, dtype=object), 500), "", "=x", ""], pa.large_string())
    chars = "".join(FORMULA_START).encode("ascii")
    cases = [whole, whole.slice(1), whole.slice(7, 40), whole.slice(len(whole) - 2), whole.slice(3, 0)]
    cases += [pa.array(["", ""], pa.large_string()), pa.array(["", "-1"], pa.large_string())]
    for a in cases:
        want = np.array([str(v).startswith(FORMULA_START) for v in a.to_pylist()], dtype=bool)
        assert first_byte_in(a, chars).tolist() == want.tolist()


def _reference_tag_import(cid: str, result: RunResult, tag: str) -> pd.DataFrame:
    """tag_import as it was: members by a string reindex, escaped by csv_frame."""
    cl, store = result.classification, result.store
    assert cl is not None and store is not None and result.signals is not None
    ids = result.signals.frame["customer_id"].to_numpy()[cl.memberships[cid].mask]
    members = store.customers.set_index("customer_id").reindex(pd.Index(ids, dtype="string"))

    def col(name: str) -> pd.Series:
        if name in members:
            return members[name].astype("string").fillna("").reset_index(drop=True)
        return pd.Series("", index=range(len(members)), dtype="string")

    existing = col("tags")
    frame = pd.DataFrame(
        {
            "First Name": col("first_name"),
            "Last Name": col("last_name"),
            "Email": col("email"),
            "Phone": col("phone"),
            "Tags": existing.where(existing == "", existing + ", ") + tag,
        }
    )
    frame = frame[((frame["Email"] != "") | (frame["Phone"] != "")).to_numpy(bool)].reset_index(drop=True)
    out = csv_frame(frame)
    plain_phone = frame["Phone"].str.fullmatch(r"\+?[0-9 ()./-]+", na=False).to_numpy(bool)
    out["Phone"] = out["Phone"].where(~plain_phone, frame["Phone"])
    return out


def test_tag_import_matches_reference(tmp_path: Path) -> None:
    store = random_store(tmp_path / "s", n=400, staff_tags=True)
    customers = pd.read_csv(store / "customers.csv", dtype=str)
    rng = np.random.default_rng(12)
    customers["first_name"] = rng.choice(np.array([t for t in TRICKY_TEXT if t], dtype=object), len(customers))
    phones = np.array(["+1 619 555 0132", "=HYPERLINK()", "", "-5"], dtype=object)
    customers["phone"] = rng.choice(phones, len(customers))
    customers.to_csv(store / "customers.csv", index=False)
    for result in (run(store, config=Config()), run(EXAMPLE_STORE, config=Config())):
        assert result.classification is not None
        for cid in result.classification.memberships:
            got = segments.tag_import(cid, result, "juno-t")
            pd.testing.assert_frame_equal(got, _reference_tag_import(cid, result, "juno-t"), check_exact=True)


def test_sha256_taken_while_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(juno.render, "_SLICE", 97)
    path = tmp_path / "t.csv"
    for frame in (_tricky_frame(1_000), _tricky_frame(50)):
        write_csv(frame, path)
        assert juno.render.written_sha256(path) == sha256_file(path)
    with path.open("ab") as fh:
        fh.write(b"x")
    assert juno.render.written_sha256(path) is None
    assert juno.render.written_sha256(tmp_path / "never.csv") is None


def test_member_texts_renumber_reason_combinations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Customers' reasons are numbered digit by digit, renumbered before a digit could overflow:
    with a tiny bound every cohort forces it, and the texts still equal the object path's."""
    result = run(random_store(tmp_path / "s", n=600, staff_tags=True), config=Config())
    cl, sig = result.classification, result.signals
    assert cl is not None and sig is not None
    n = len(sig.frame)
    plain = classify_module._member_texts_objects(cl.memberships, cl.ctx, n)
    distinct = {m.reasons[i] for m in cl.memberships.values() for i in np.flatnonzero(m.mask)}
    assert len(distinct) > 4 and sum(bool(m.mask.any()) for m in cl.memberships.values()) >= 3
    for bound in (1 << 62, 8, 2):
        monkeypatch.setattr(classify_module, "_COMBO_SPAN", bound)
        fast = classify_module._member_texts(cl.memberships, cl.ctx, n)
        assert fast is not None
        for a, b in zip(fast, plain, strict=True):
            pd.testing.assert_extension_array_equal(a, b)


def test_customer_table_with_odd_reasons_takes_the_object_path(tmp_path: Path) -> None:
    import copy

    result = run(random_store(tmp_path / "s", n=300), config=Config())
    assert result.classification is not None and result.signals is not None
    cl = copy.deepcopy(result.classification)
    m = next(m for m in cl.memberships.values() if m.mask.any())
    m.reasons[np.flatnonzero(m.mask)[0]] = None
    assert classify_module._member_texts(cl.memberships, cl.ctx, len(result.signals.frame)) is None
    got = customer_table(result.signals, cl)
    pd.testing.assert_frame_equal(got, _reference_customer_table(result.signals, cl), check_exact=True)


def test_int_cells_match_str() -> None:
    rng = np.random.default_rng(13)
    for v in (
        rng.integers(0, 99_999, 5_000),
        np.array([0, 99_999, 100_000, 7]),
        rng.integers(-(10**15), 10**15, 5_000),
        np.array([2**63 - 1, -(2**63)], dtype=np.int64),
        np.array([2**64 - 1, 0], dtype=np.uint64),
        rng.integers(0, 120, 300).astype(np.int8),
        np.array([], dtype=np.int64),
    ):
        assert int_cells(v).to_pylist() == [str(int(x)) for x in v]
    null = np.array([False, True, False])
    assert int_cells(np.array([1, 2, 300_000]), null).to_pylist() == ["1", None, "300000"]
    assert int_cells(np.array([1, 2, 3]), null).to_pylist() == ["1", None, "3"]


def test_take_rows_chunk_by_chunk_equals_take() -> None:
    """Tag imports take each cohort's contacts chunk by chunk: the same frame as `take`."""
    import pyarrow as pa

    rng = np.random.default_rng(5)
    texts = np.array(["a", "bé", "", "=x", None, "long text, with comma"], dtype=object)
    n = 1_000
    cuts = [0, 1, 1, 300, 301, 999, n]  # an empty chunk and one-row chunks among them
    columns = {}
    for name, dtype in (("email", pd.StringDtype("pyarrow")), ("tags", pd.StringDtype("pyarrow", na_value=np.nan))):
        values = texts[rng.integers(0, len(texts), n)]
        chunks = [pa.array(values[a:b], pa.large_string()) for a, b in itertools.pairwise(cuts)]
        columns[name] = pd.Series(pd.array(pa.chunked_array(chunks), dtype=dtype))
    columns["n"] = pd.Series(np.arange(n))
    frame = pd.DataFrame(columns)
    assert pa.array(frame["email"]).num_chunks == len(cuts) - 1
    for rows in (np.array([], dtype=np.int64), np.array([0, 1, 300, 999]), np.flatnonzero(rng.random(n) < 0.3)):
        got = segments._take_rows(frame, rows)
        pd.testing.assert_frame_equal(got, frame.take(rows).reset_index(drop=True), check_exact=True)


def test_coded_with_matches_the_object_column() -> None:
    """`_coded_with` (Arrow take, then the variable cells) against `_text` of the object array
    built cell by cell: missing cells, rows set twice (the later wins), no text at all, no rows."""
    rng = np.random.default_rng(5)
    texts = ["no orders", "", "no cohort rule met"]
    for n in (0, 1, 7, 500):
        code = rng.integers(0, len(texts), n)
        first = np.flatnonzero(rng.random(n) < 0.3)
        second = np.flatnonzero(rng.random(n) < 0.2)
        cells_a = np.array([f"merged into C{i}" for i in first], dtype=object)
        cells_b = np.array([np.nan if i % 3 == 0 else f"excluded: tag {i}" for i in second], dtype=object)
        for rows in ([], [(first, cells_a)], [(first, cells_a), (second, cells_b)]):
            want = np.array(texts, dtype=object)[code]
            for idx, cells in rows:
                want[idx] = cells
            got = classify_module._coded_with(texts, code, rows)
            expected = classify_module._text(want)
            assert type(got) is type(expected)
            pd.testing.assert_series_equal(pd.Series(got), pd.Series(expected))
    # Every cell missing: left as objects, as `_text` leaves them.
    code = np.zeros(4, dtype=np.int8)
    got = classify_module._coded_with(["x"], code, [(np.arange(4), np.full(4, np.nan, dtype=object))])
    assert isinstance(got, np.ndarray) and got.dtype == object


# ---------------------------------------------------------------- cells made ahead


def _ahead_of(
    frame: pd.DataFrame, k: int, budget: int = 1 << 30, packed: int = 0
) -> juno.render.CellsAhead:
    """A CellsAhead of the frame's last `k` columns, built from a dict as the pipeline builds it."""
    cols = {str(c): frame[c] for c in frame.columns[-k:]}
    return juno.render.CellsAhead(cols, len(frame), budget=budget, packed=packed)


def _kinds(ahead: juno.render.CellsAhead) -> list[str]:
    """How each slice made ahead is held: "text" as it is, "packed" compressed."""
    held = [slot.result() for _, slot in sorted(ahead._made.items())]
    return ["packed" if isinstance(t, juno.render._Packed) else "text" for t in held]


@pytest.mark.parametrize("slice_rows", [1 << 17, 97])
def test_cells_made_ahead_write_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slice_rows: int
) -> None:
    """The text of the last columns made ahead (all, some, none of the slices; on a thread that
    starts before, during or after the writing) joins into the same bytes as without it."""
    import threading

    monkeypatch.setattr(juno.render, "_SLICE", slice_rows)
    frame = _tricky_frame(1_000)
    want = _reference_bytes(frame)
    path = tmp_path / "t.csv"
    slices = -(-len(frame) // slice_rows)
    held = {  # (budget, packed): how the slices made before the writing are held
        (1 << 30, 0): ["text"] * slices,  # all as they are
        (1, 0): ["text"],  # the first only
        (0, 0): [],  # none
        (1, 1 << 30): ["text"] + ["packed"] * (slices - 1),  # the first as it is, the rest packed
        (0, 1 << 30): ["packed"] * slices,  # all packed
        (0, 1): ["packed"],  # the first packed
    }
    for k in (1, 5, frame.shape[1] - 1):
        for (budget, packed), kinds in held.items():
            ahead = _ahead_of(frame, k, budget, packed)
            ahead.start().result()
            assert _kinds(ahead) == kinds, (k, budget, packed)
            write_csv(frame, path, ahead)
            assert path.read_bytes() == want, (k, budget, packed)
        when = threading.Event()
        ahead = _ahead_of(frame, k, 1, 1 << 30)
        started = ahead.start(when)
        when.set()  # made while the writing goes on: each slice by whichever side comes first
        write_csv(frame, path, ahead)
        assert path.read_bytes() == want, k
        started.result()
    # A column given as None is all missing: as in a frame built from the same dict.
    cols = {"a": frame["id"], "b": None}
    table = pd.DataFrame(cols)
    ahead = juno.render.CellsAhead({"b": None}, len(table))
    ahead.start().result()
    write_csv(table, path, ahead)
    assert path.read_bytes() == _reference_bytes(table)


def test_cells_made_ahead_for_other_columns_are_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(juno.render, "_SLICE", 97)
    frame = _tricky_frame(300)
    path = tmp_path / "t.csv"
    others = [
        _ahead_of(frame.drop(columns=["last"]), 2),  # not the last columns
        _ahead_of(frame.iloc[:200], 2),  # another length
        _ahead_of(frame.assign(last=frame["last"].astype(object)), 2),  # another type
    ]
    for ahead in others:
        ahead.start().result()
        write_csv(frame, path, ahead)
        assert path.read_bytes() == _reference_bytes(frame)
    ahead = _ahead_of(frame, 2)
    ahead.start().result()
    monkeypatch.setattr(juno.render, "_SLICE", 50)  # other slices than it was made in
    write_csv(frame, path, ahead)
    assert path.read_bytes() == _reference_bytes(frame)


def test_cells_made_ahead_fail_the_write_and_stop_when_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    frame = _tricky_frame(300)
    ahead = _ahead_of(frame, 2)

    def broken(start: int) -> object:
        raise RuntimeError("made ahead: failed")

    monkeypatch.setattr(ahead, "_text", broken)
    ahead.start().result()
    with pytest.raises(RuntimeError, match="made ahead: failed"):  # not written without the slice
        write_csv(frame, tmp_path / "t.csv", ahead)
    # Waiting for a signal that never comes: closing ends the thread (the process can exit).
    waiting = _ahead_of(frame, 2)
    started = waiting.start(threading.Event())
    assert not started.done()
    waiting.close()
    started.result(timeout=5)


def test_run_writes_the_same_customers_with_cells_made_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's customers.csv, its signal columns' text made during classification (in
    small slices, so that both sides make some), is the table's own text."""
    monkeypatch.setattr(juno.render, "_SLICE", 64)
    result = run(EXAMPLE_STORE, tmp_path / "out", narrative="template")
    assert result.customers is not None and result.customers_ahead is None  # dropped once written
    assert (tmp_path / "out" / "customers.csv").read_bytes() == _reference_bytes(result.customers)


def test_byte_table_finds_the_cells_the_comparisons_find(monkeypatch: pytest.MonkeyPatch) -> None:
    """`holds_byte` looks large texts up in a table of the bytes sought: the same cells as one
    comparison per byte sought, on sliced arrays, empty cells and every special byte."""
    import pyarrow as pa

    import juno.plaincells as plaincells
    import juno.render as render

    rng = np.random.default_rng(5)
    alphabet = np.array(list('ab,"\n\r=@é '), dtype=object)
    cells = ["".join(rng.choice(alphabet, rng.integers(0, 6))) for _ in range(5_000)]
    whole = pa.array(cells, pa.large_string())
    for a in (whole, whole.slice(37, 3_000)):
        for chars in (render._SPECIALS.encode("ascii"), b",", b'"\n'):
            monkeypatch.setattr(plaincells, "_TABLE_FROM", 1 << 62)
            compared = plaincells.holds_byte(a, chars)
            monkeypatch.setattr(plaincells, "_TABLE_FROM", 0)
            looked_up = plaincells.holds_byte(a, chars)
            want = np.array([any(ch in (c or "") for ch in chars.decode()) for c in a.to_pylist()])
            assert np.array_equal(compared, want) and np.array_equal(looked_up, want)

"""Replenishment cycles from the store's own repeat purchases, and who is due now."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from juno.config import Thresholds
from juno.grouping import STR, group_median, group_order_counts, group_quantile, sorted_by_group, sorted_codes
from juno.validate import Store

DAY = np.timedelta64(1, "D")


@dataclass
class Cycles:
    """Store-wide cycle estimates and per-customer due products."""

    table: pd.DataFrame  # level, product, median_days, pairs, customers, replenishable, reason
    due: pd.DataFrame  # c (customer code), level, product, category, last_at, due_at, purchases
    # c, category, sku, day per counted order line (read by `purchases`): a frame, or what builds
    # it on first use. Classification never reads it; the segment logic and the backtest do.
    purchase_rows: pd.DataFrame | Callable[[], pd.DataFrame] = field(repr=False)
    reason_none: str | None  # why no product has a cycle, when none has
    # Per SKU bought: the category of its first counted line (None when that line has none), the
    # same as purchases.dropna(subset=["sku"]).drop_duplicates("sku") gives without the frame.
    sku_categories: dict[str, str | None] | None = field(default=None, repr=False)

    @property
    def purchases(self) -> pd.DataFrame:
        if callable(self.purchase_rows):
            self.purchase_rows = self.purchase_rows()
        return self.purchase_rows


@dataclass
class _Level:
    """One product level (category or SKU): each customer's distinct purchase days per product.

    Products are integer codes numbered in the order of their names. The (customer, product)
    groups are held in (product, customer) order; everything read from them is either per
    product or re-sorted by customer before it is shown.
    """

    names: np.ndarray  # product name per code
    n_customers: int
    gk: np.ndarray  # per (customer, product) bought, sorted by (code, customer): the product code
    gc: np.ndarray  # ... the customer row
    last_day: np.ndarray  # ... the last purchase day (days since 1970-01-01)
    purchases: np.ndarray  # ... the number of distinct purchase days
    present: np.ndarray  # codes of the products bought at all (rows of `stats`)
    stats: pd.DataFrame  # product, median_days, pairs, customers, spread: no threshold changes them
    # (product, customer) as one sorted int64 key per group: made on the first lookup and kept
    # for the next (the cycles and each of their +-10% re-estimates look up the due rows).
    _keys: np.ndarray | None = field(default=None, repr=False)

    def lookup(self, c: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Row in the (customer, product) arrays of each (c, k) pair; -1 where never bought."""
        out = np.full(len(c), -1, dtype=np.int64)
        if not len(self.gc):
            return out
        if self._keys is None:  # sorted: groups are in (code, customer) order
            self._keys = self.gk * self.n_customers + self.gc
        keys = self._keys
        want = k * self.n_customers + c.astype(np.int64)
        at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
        hit = (k >= 0) & (keys[at] == want)
        out[hit] = at[hit]
        return out


def _by_product(
    k: np.ndarray, cd: np.ndarray, cd_bits: int, n_k: int, in_order: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (product, customer-day) rows sorted, as (product codes, packed customer-days).

    `in_order`: the rows come sorted by customer-day, so one stable counting sort by product
    code is enough (O(rows + products); a radix argsort of int16 codes, as before, took four
    passes and ~2x the time, and stopped at 32k products); otherwise one sort of int64 keys
    (product, customer, day packed).
    """
    if in_order:
        order, per_product = group_order_counts(k, n_k)  # the counting sort counts them anyway
        cd = cd[order]
        del order
        k = np.repeat(np.arange(n_k, dtype=np.int32), per_product)
    elif n_k.bit_length() + cd_bits <= 62:
        key = np.sort((k.astype(np.int64) << cd_bits) | cd)
        k, cd = key >> cd_bits, key & ((1 << cd_bits) - 1)
    else:
        order = np.lexsort((cd, k))
        k, cd = k[order].astype(np.int64), cd[order]
    new = np.ones(len(k), dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (cd[1:] != cd[:-1])
    return k[new], cd[new]


def _level(
    k: np.ndarray, cd: np.ndarray, day_bits: int, d0: int, names: np.ndarray, n_c: int, in_order: bool
) -> _Level | None:
    """Distinct purchase days, reorder gaps and the threshold-free statistics of one level.

    `cd`: per row, its customer and day packed as customer << day_bits | (day - d0).
    """
    ok = k >= 0
    if not ok.any():
        return None
    if not ok.all():
        k, cd = k[ok], cd[ok]
    n_k = len(names)
    k, cd = _by_product(k, cd, n_c.bit_length() + day_bits, n_k, in_order)
    # Each array below is as long as the level's distinct purchase days (millions at a million
    # customers; this is the classification's peak): each goes as soon as it has served.
    first = np.ones(len(k), dtype=bool)  # first day of a (customer, product)
    # Same customer: the packed values agree above the day bits (no customer array needed).
    first[1:] = (k[1:] != k[:-1]) | (((cd[1:] ^ cd[:-1]) >> day_bits) != 0)
    again = ~first
    gk_gap = k[again]
    # Whole days between consecutive distinct purchase days (same customer: the packed
    # customer-day values differ by the days alone).
    gap = (cd[1:] - cd[:-1])[again[1:]]
    del again
    sv, pairs = sorted_by_group(gk_gap, gap, n_k)  # pairs: reorder gaps per product
    del gk_gap, gap
    # A product's rows are its customers' first days and their later ones (one per gap): rows
    # per product read off the sorted codes, not counted again over a selection of the rows.
    # (Searched with k's own integer type: int64 codes against int32 ones copy all of k first.)
    customers = np.diff(np.searchsorted(k, np.arange(n_k + 1, dtype=k.dtype))) - pairs
    median = group_median(sv, pairs)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = (group_quantile(sv, pairs, 0.75) - group_quantile(sv, pairs, 0.25)) / median
    del sv
    present = np.flatnonzero(customers > 0)
    stats = pd.DataFrame(
        {
            "product": pd.array(names[present], dtype=STR),
            "median_days": median[present],
            "pairs": pairs[present].astype(np.int64),
            "customers": customers[present].astype(np.int64),
            "spread": spread[present],
        }
    )
    starts = np.flatnonzero(first)
    del first
    ends = np.r_[starts[1:], len(k)] - 1
    gk = k[starts].astype(np.int64)
    del k
    gc = cd[starts] >> day_bits
    last_day = (cd[ends] & ((1 << day_bits) - 1)) + d0
    del cd
    return _Level(
        names=names,
        n_customers=n_c,
        gk=gk,
        gc=gc,
        last_day=last_day,
        purchases=(ends - starts + 1).astype(np.int64),
        present=present,
        stats=stats,
    )


def _no_stats() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "product": np.array([], dtype=object),
            "median_days": np.array([], dtype=float),
            "pairs": np.array([], dtype=np.int64),
            "customers": np.array([], dtype=np.int64),
            "spread": np.array([], dtype=float),
        }
    )


def _str_column(s: pd.Series, idx: np.ndarray) -> object:
    """The column's values at `idx` as the "str" column a frame built from them infers, without
    a Python object per cell (all-missing columns stay object, as inference leaves them)."""
    taken = s.array.take(idx)
    if not len(taken) or bool(taken.isna().all()):
        return np.asarray(taken.to_numpy(), dtype=object)
    return taken.astype(STR)


@dataclass
class PurchaseHistory:
    """Distinct purchase days per customer and product, and reorder gaps: built once per run.

    Everything no threshold changes is computed here once; the stability re-runs (+-10%
    thresholds) only re-select from it.
    """

    purchase_rows: pd.DataFrame | Callable[[], pd.DataFrame]  # see Cycles.purchase_rows
    levels: dict[str, _Level]  # "category" / "sku"
    reason_none: str | None
    sku_category: np.ndarray | None = None  # per SKU code: category code of its first counted line
    category_names: np.ndarray | None = None
    sku_categories: dict[str, str | None] | None = None  # Cycles.sku_categories

    def purchases(self) -> pd.DataFrame:
        """The per-line purchase frame, built once (the first Cycles to be asked builds it)."""
        if callable(self.purchase_rows):
            self.purchase_rows = self.purchase_rows()
        return self.purchase_rows


class _Rows:
    """Builds the per-line purchase frame on first use and keeps it: shared by a history and the
    Cycles made from it. A Cycles holds this, not the history, so the history's per-product
    arrays (~180 MB at a million customers) go once classification is done with them, not at the
    end of the run: the segment logic and the backtest read the frame, a plain run never does."""

    def __init__(self, build: Callable[[], pd.DataFrame]) -> None:
        self._build: Callable[[], pd.DataFrame] | None = build
        self._frame: pd.DataFrame | None = None

    def __call__(self) -> pd.DataFrame:
        if self._frame is None:
            assert self._build is not None
            self._frame, self._build = self._build(), None
        return self._frame


def _narrow(a: np.ndarray) -> np.ndarray:
    """Integer codes or row numbers as int32 when they fit: half the memory of 7.6M lines' int64."""
    if a.dtype == np.int32 or (len(a) and (int(a.max()) >= 1 << 31 or int(a.min()) < -(1 << 31))):
        return a
    return a.astype(np.int32)


def _lines_by_customer(
    pos: np.ndarray, n_orders: int, orders: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(rows of the lines of `orders` (order rows), order after order; each order's line count):
    None unless the lines are grouped by order in order-row order."""
    if orders is None or not len(pos) or pos.min() < 0 or not bool((pos[1:] >= pos[:-1]).all()):
        return None
    count = _narrow(np.bincount(pos, minlength=n_orders))
    start = _narrow(np.cumsum(count, dtype=np.int64) - count)  # first line of each order
    take = count[orders]
    return _run_rows(start[orders], take), take


def _run_rows(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The rows of the runs [start, start + length), one run after another: a concatenation of
    aranges in one repeat and one add; int32 when every row fits (half the memory of 7.6M
    lines' int64, in the purchase history's peak), else int64."""
    total = int(lengths.sum()) if len(lengths) else 0
    wide = total >= 1 << 31 or (len(starts) and int(starts.max()) + int(lengths.max()) >= 1 << 31)
    dtype = np.int64 if wide else np.int32
    ends = np.cumsum(lengths, dtype=np.int64)
    shift = np.repeat((starts - (ends - lengths)).astype(dtype), lengths)
    shift += np.arange(len(shift), dtype=dtype)
    return shift


def purchase_history(
    store: Store,
    code: np.ndarray,
    category_codes: tuple[np.ndarray, np.ndarray] | None = None,
    orders_by_customer: np.ndarray | None = None,
) -> PurchaseHistory:
    """`category_codes`: `sorted_codes(store.lines["category"])`, and `orders_by_customer`: the
    rows of the counted orders sorted by (customer code, time), when the caller has them already
    (signals does)."""
    if store.lines is None:
        return PurchaseHistory(pd.DataFrame(), {}, "no order lines were provided, so products are unknown")
    o = store.orders
    lines = store.lines
    # Each line's order (order ids are unique after validation): counted orders only.
    pos = store.line_order_rows()
    counted = store.counted_lines()
    order_day = o["ordered_at"].to_numpy().astype("datetime64[D]")

    def frame() -> pd.DataFrame:
        idx = _narrow(np.flatnonzero(store.counted_lines()))  # not held until then (30 MB at 1M)
        at = pos[idx]
        return pd.DataFrame(
            {
                "c": code[at],
                "category": _str_column(lines["category"], idx),
                "sku": _str_column(lines["sku"], idx),
                "day": o["ordered_at"].to_numpy()[at].astype("datetime64[D]").astype("datetime64[s]"),
            }
        )

    cat_codes, cat_names = category_codes or sorted_codes(lines["category"])
    sku_codes, sku_names = sorted_codes(lines["sku"])
    sku_codes = _narrow(sku_codes)
    # Per line, its SKU code where its order counts (else -1): no selection of the counted lines.
    ks = np.where(counted, sku_codes, -1)
    if not (ks >= 0).any() and not (cat_codes[counted] >= 0).any():
        return PurchaseHistory(_Rows(frame), {}, "order lines carry no category or SKU")
    # Each SKU's category: the category of its first counted line (missing: -1).
    # First line per SKU code: pandas' hash-based drop_duplicates (first kept) instead of a
    # scatter-min over every line (np.minimum.at: 0.27 s at a million customers, this 0.04 s).
    first = np.full(len(sku_names), len(ks), dtype=np.int64)
    firsts = pd.Series(ks).drop_duplicates(keep="first")
    firsts = firsts[firsts.to_numpy() >= 0]
    first[firsts.to_numpy()] = firsts.index.to_numpy()
    del firsts, ks
    seen = first < len(counted)
    sku_category = np.full(len(sku_names), -1, dtype=np.int64)
    sku_category[seen] = cat_codes[first[seen]]
    sku_categories = {
        str(sku): (None if cat < 0 else str(cat_names[cat]))
        for sku, cat in zip(sku_names[seen].tolist(), sku_category[seen].tolist(), strict=True)
    }
    del first
    # The counted lines by (customer, day): when lines come grouped by order in order-row order
    # (the usual export), the orders' own sort gives it by expanding each order into its lines.
    order_days = order_day.view(np.int64)
    expanded = _lines_by_customer(pos, len(o), orders_by_customer)
    n_c = len(store.customers)
    # Customer and day packed in one int64 per line: one array to move through the sorts. Packed
    # per order (in the orders' row order, the days' range taken over every order: a range that
    # holds the days used), then taken in one gather and repeated over each order's lines: no
    # line-long customer and day arrays on the way, and one random gather instead of two.
    if expanded is not None and orders_by_customer is not None:
        rows, per_order = expanded
        at = orders_by_customer
    else:
        rows = _narrow(np.flatnonzero(counted))
        per_order, at = None, pos[rows]
    d0, day_max = int(order_days.min()), int(order_days.max())
    day_bits = (day_max - d0).bit_length()
    assert n_c.bit_length() + day_bits <= 62
    cd = (code.astype(np.int64, copy=False) << day_bits) | (order_days - d0)
    cd = cd[at]
    del at
    if per_order is not None:
        cd = np.repeat(cd, per_order)
    rows = _narrow(rows)
    levels = {}
    for name, k, names in (("category", cat_codes, cat_names), ("sku", sku_codes, sku_names)):
        lv = _level(_narrow(k)[rows], cd, day_bits, d0, names, n_c, expanded is not None)
        if lv is not None:
            levels[name] = lv
    return PurchaseHistory(_Rows(frame), levels, None, sku_category, cat_names, sku_categories)


def estimate_cycles(
    store: Store,
    code: np.ndarray,
    as_of: pd.Timestamp,
    th: Thresholds,
    history: PurchaseHistory | None = None,
    *,
    due_customers_only: bool = False,
) -> Cycles:
    """Median reorder interval per category (and SKU with enough pairs); who is due within the window.

    `due_customers_only`: `due` holds only the column "c" (one row per due product, unordered):
    all the stability re-runs need to know who is due.
    """
    empty_due = pd.DataFrame(columns=["c", "level", "product", "category", "last_at", "due_at", "purchases"])
    empty_tab = pd.DataFrame(
        columns=["level", "product", "median_days", "pairs", "customers", "replenishable", "reason"]
    )
    h = history or purchase_history(store, code)
    if h.reason_none is not None:
        return Cycles(empty_tab, empty_due, h.purchase_rows, h.reason_none, h.sku_categories)
    tables = []
    dues = []
    # Per level with due rows: (level number, product codes, category codes, last purchase days,
    # customers).
    picked: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for li, (level, min_pairs) in enumerate(
        (("category", th.min_reorder_pairs), ("sku", th.min_sku_reorder_pairs))
    ):
        lv = h.levels.get(level)
        # A level nobody bought at still adds its (empty, untyped) table, as it always has: the
        # concatenated table's text columns are then object, not str.
        stats = lv.stats.copy() if lv is not None else _no_stats()
        stats["level"] = level
        enough = stats["pairs"] >= min_pairs
        short = stats["median_days"] <= th.max_cycle_days
        regular = stats["spread"].fillna(np.inf) <= th.max_cycle_spread
        stats["replenishable"] = enough & short & regular
        stats["reason"] = np.select(
            [~enough, ~short, ~regular],
            [
                "only " + stats["pairs"].astype(str) + f" reorder pairs (< {min_pairs})",
                f"median reorder interval over {th.max_cycle_days} days",
                "reorder intervals too irregular (spread "
                + stats["spread"].round(2).astype(str)
                + f" > {th.max_cycle_spread:g})",
            ],
            default="cycle estimated",
        )
        tables.append(stats)
        rep = stats["replenishable"].to_numpy(bool)
        if lv is None or not rep.any():
            continue
        cycle_of = np.full(len(lv.names), np.nan)  # per product code: its cycle, NaN if none
        cycle_of[lv.present[rep]] = stats["median_days"].to_numpy(float)[rep]
        with_cycle = np.flatnonzero(~np.isnan(cycle_of))
        # The groups are sorted by product: each product's rows are one run.
        bounds = np.searchsorted(lv.gk, np.arange(len(cycle_of) + 1))
        starts, lengths = bounds[with_cycle], np.diff(bounds)[with_cycle]
        sel = _run_rows(starts, lengths)
        k_sel = np.repeat(with_cycle, lengths)
        is_due, cycle_s = _due(lv.last_day[sel], k_sel, cycle_of, as_of, th.overdue_fraction, th.lead_days)
        rows = sel[is_due]
        k = lv.gk[rows]
        assert h.sku_category is not None
        picked.append((li, k, k if level == "category" else h.sku_category[k], lv.last_day[rows], lv.gc[rows]))
        if due_customers_only:
            continue
        last_at = lv.last_day[rows].astype("datetime64[D]").astype("datetime64[s]")
        dues.append(
            pd.DataFrame(
                {
                    "c": lv.gc[rows],
                    "level": level,
                    "product": lv.names[k],
                    "last_at": last_at,
                    "due_at": last_at + cycle_s[k],
                    "purchases": lv.purchases[rows],
                }
            )
        )
    table = pd.concat(tables, ignore_index=True) if tables else empty_tab
    table = table[["level", "product", "median_days", "pairs", "customers", "replenishable", "reason"]]
    reason = None if bool(table["replenishable"].any()) else (
        "no product has enough repeat purchases for a reliable cycle"
        f" (>= {th.min_reorder_pairs} reorder pairs, a median under {th.max_cycle_days} days"
        f" and a regular rhythm)"
    )
    if due_customers_only:
        c_due = np.concatenate([x[4] for x in picked]) if picked else np.zeros(0, dtype=np.int64)
        if len(c_due):
            c_due = c_due[~_later(h, picked)]
        due_c = pd.DataFrame({"c": c_due})
        return Cycles(table.reset_index(drop=True), due_c, h.purchase_rows, reason, h.sku_categories)
    due = pd.concat(dues, ignore_index=True) if dues else empty_due
    if len(due):
        # Category of each due product; a SKU-level due needs no later purchase in its category.
        assert h.category_names is not None
        level_no = np.concatenate([np.full(len(x[1]), x[0]) for x in picked])
        product, category, c_due = (np.concatenate([x[i] for x in picked]) for i in (1, 2, 4))
        due["category"] = np.append(h.category_names.astype(object), np.nan)[category]  # -1: none
        keep = np.flatnonzero(~_later(h, picked))
        order = keep[np.lexsort((product[keep], level_no[keep], c_due[keep]))]
        due = due.iloc[order].reset_index(drop=True)
    return Cycles(table.reset_index(drop=True), due, h.purchase_rows, reason, h.sku_categories)


def _due(
    last_day: np.ndarray, product: np.ndarray, cycle_of: np.ndarray, as_of: pd.Timestamp, overdue: float, lead: int
) -> tuple[np.ndarray, np.ndarray]:
    """(per row: due, per product code: its cycle as timedelta64[s] (0 where it has none)).

    Due: lo <= due_at <= hi, where due_at = last purchase day + the product's cycle in whole
    seconds, lo = as_of - cycle x `overdue` days, hi = as_of + `lead` days. Both bounds are
    taken per product, less the cycle, in whole nanoseconds (as the datetime comparison makes
    them), so each row costs one multiply and two compares: the same answer as the datetimes.
    """
    with_cycle = ~np.isnan(cycle_of)
    cycle_s = np.zeros(len(cycle_of), dtype="timedelta64[s]")
    cycle_s[with_cycle] = (cycle_of[with_cycle] * 86400).astype("timedelta64[s]")
    cycle_ns = cycle_s[with_cycle].astype("timedelta64[ns]").astype(np.int64)
    lo = (as_of - pd.to_timedelta(cycle_of[with_cycle] * overdue, unit="D")).to_numpy()
    hi = (as_of + pd.Timedelta(days=lead)).to_datetime64()
    low = np.zeros(len(cycle_of), dtype=np.int64)
    high = np.zeros(len(cycle_of), dtype=np.int64)
    low[with_cycle] = lo.astype("datetime64[ns]").astype(np.int64) - cycle_ns
    high[with_cycle] = np.array(hi).astype("datetime64[ns]").astype(np.int64) - cycle_ns
    last_ns = last_day.astype(np.int64) * (86400 * 10**9)
    return (last_ns >= low[product]) & (last_ns <= high[product]), cycle_s


def _later(h: PurchaseHistory, picked: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per due row: bought in the due product's category after its last purchase."""
    category, last_day, c_due = (np.concatenate([x[i] for x in picked]) for i in (2, 3, 4))
    later = np.zeros(len(c_due), dtype=bool)
    if "category" in h.levels:
        cat = h.levels["category"]
        at = cat.lookup(c_due, category)
        found = at >= 0
        later[found] = cat.last_day[at[found]] > last_day[found]
    return later

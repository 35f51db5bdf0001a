"""Per-customer signals (PRODUCT.md section 4), fully vectorised over integer customer codes."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.extensions import ExtensionArray

from juno import background
from juno.config import Config
from juno.cycles import PurchaseHistory, purchase_history
from juno.grouping import (
    STR,
    dictionary_codes,
    group_median,
    group_order_counts,
    sorted_by_group,
    sorted_codes,
)
from juno.identity import duplicate_groups
from juno.memory import release_free_memory
from juno.parse import positions
from juno.score import value_score
from juno.validate import Store

DAY = np.timedelta64(1, "D")


@dataclass
class Signals:
    """The per-customer table plus the store-level facts the rules need."""

    frame: pd.DataFrame  # one row per input customer, in customer_id order
    as_of: pd.Timestamp
    history_days: int
    margin_coverage: float  # share of net revenue whose cost is known
    value_column: str  # "value_window" basis: net_revenue or margin
    first_to_second_p75: float | None
    first_to_second_median: float | None
    customers_with_second_order: int
    # Per order row of store.orders: the customer's row in `frame` (the merged identity when
    # duplicates are merged). Later stages join orders to customers through it.
    order_codes: np.ndarray | None = None
    # Arrays derived from the frame once per run and shared by every cohort context (the
    # stability re-runs rebuild the context ~35 times): eligibility, sorted values for share cuts.
    cache: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    # The order lines' categories as sorted integer codes (grouping.sorted_codes), for cycles.
    category_codes: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)
    # Rows of the counted orders sorted by (customer code, time), for cycles.
    orders_by_customer: np.ndarray | None = field(default=None, repr=False)
    # cycles.purchase_history from the arrays above, started on a second thread while the rest
    # of the signals were computed (compute_signals(..., history=True)); see take_history.
    history: Future[PurchaseHistory] | None = field(default=None, repr=False)
    # Set once classification asks for the history: from then on it leaves a core idle (while
    # it waits for the history, and in the mostly single-threaded work after it).
    history_asked: threading.Event = field(default_factory=threading.Event, repr=False)

    def take_history(self) -> PurchaseHistory | None:
        """The purchase history started with the signals (waited for), handed over once: the
        signals, which live until the outputs are written, do not keep its arrays alive."""
        self.history_asked.set()
        started, self.history = self.history, None
        return None if started is None else started.result()


def _days(delta: pd.Series) -> np.ndarray:
    return np.asarray(delta.to_numpy() / np.timedelta64(1, "D"), dtype=float)


def join_by_group(keys: np.ndarray, texts: np.ndarray, sep: str = ";") -> tuple[np.ndarray, np.ndarray]:
    """Texts joined by `sep` per group, in row order; `keys` must hold each group contiguously.

    Returns (group keys, joined texts): one C-level reduction instead of a Python call per group.
    """
    if len(keys) == 0:
        return keys[:0], np.array([], dtype=object)
    start = np.r_[True, keys[1:] != keys[:-1]]
    parts = np.asarray(texts, dtype=object)
    parts = np.where(start, parts, sep + parts)
    return keys[start], np.add.reduceat(parts, np.flatnonzero(start))


def _tags_match(tags: pd.Series, wanted: list[str]) -> pd.Series:
    """Per customer, whether its comma-separated tags hold one of `wanted` (case-insensitive)."""
    if not wanted:
        return pd.Series(False, index=tags.index)
    if isinstance(tags.dtype, pd.StringDtype) and tags.dtype.storage == "pyarrow" and len(tags):
        # A store has a few hundred distinct tag texts over a million customers: each text is
        # matched once (missing as "", the last entry) and the answers taken per customer.
        codes, distinct = dictionary_codes(tags)
        texts = pd.Series(pa.concat_arrays([distinct.cast(pa.large_string()), pa.array([""], pa.large_string())]))
        hit = _tags_match_texts(texts.astype("string"), wanted).to_numpy(bool)
        return pd.Series(hit[codes], index=tags.index)
    return _tags_match_texts(tags, wanted)


def _tags_match_texts(tags: pd.Series, wanted: list[str]) -> pd.Series:
    t = tags.astype("string").str.lower().fillna("")
    lowered = pd.Series(wanted).str.lower()
    pattern = r"(?:^|,)\s*(?:" + "|".join(
        lowered.str.replace(r"([^\w\s])", r"\\\1", regex=True)
    ) + r")\s*(?:,|$)"
    # The pattern (Python re, for its \s) runs only where a wanted tag occurs as plain text:
    # one Arrow substring scan per tag instead of a Python regex call per customer.
    maybe = np.zeros(len(t), dtype=bool)
    for w in lowered:
        maybe |= t.str.contains(w, regex=False).to_numpy(bool)
    out = pd.Series(False, index=tags.index)
    if maybe.any():
        out[maybe] = t[maybe].str.contains(pattern, regex=True, na=False).to_numpy(bool)
    return out


def _counts(code: np.ndarray, flags: tuple[np.ndarray, ...], most: int, n: int) -> list[np.ndarray]:
    """Per customer (`code` per order), how many orders each of `flags` marks, as int64; `most`:
    the most orders any customer has. The flags go into one bincount as bit fields of a float
    weight when they fit in its 53-bit mantissa: every partial sum is then an integer below
    2**53, exact, and each field's total stays below its next field (a bincount per flag, as
    before, took ~50 ms each at a million customers)."""
    bits = max(most.bit_length(), 1)
    if bits * len(flags) > 53:
        return [np.bincount(code, weights=f.astype(float), minlength=n).astype(np.int64) for f in flags]
    w = flags[0].astype(float)
    for i, f in enumerate(flags[1:], start=1):
        np.add(w, float(1 << (i * bits)), out=w, where=f)
    packed = np.bincount(code, weights=w, minlength=n).astype(np.int64)
    mask = (1 << bits) - 1
    return [(packed >> (i * bits)) & mask for i in range(len(flags))]


# A customer's subscription status: the highest-ranked of its subscriptions', by rank (0: none).
_SUBSCRIPTION_RANKED = ("none", "cancelled", "paused", "active")


def _text(codes: np.ndarray, names: np.ndarray, dtype: object = "string") -> ExtensionArray:
    """`names[codes]` (missing where the code is -1) as a string column ("string" or STR),
    built by Arrow from the few distinct texts instead of one Python object per row."""
    idx = pa.array(codes.astype(np.int32), mask=codes < 0)
    texts = pa.array(np.asarray(names, dtype=object), type=pa.large_string())
    out: ExtensionArray = pd.array(pa.DictionaryArray.from_arrays(idx, texts).cast(pa.large_string()), dtype=dtype)
    return out


def _order_history(
    code: np.ndarray, at: np.ndarray, n: int, counted: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The orders (only the `counted` ones, when given) sorted by (customer, time), ties in row
    order (a stable sort by both): (their rows, customer codes, times as int64). One stable
    argsort of the times (skipped when orders come in time order) and one counting pass by
    customer, in which the uncounted orders form a last group that is then dropped: the rows
    come out as rows of the whole table, with no selection of the counted orders before and no
    gather through them after (4.8M orders: ~0.2 s less)."""
    t = at.view(np.int64)
    groups = code if counted is None else np.where(counted, code, n)
    in_time_order = bool((t[1:] >= t[:-1]).all())  # the usual export
    if not in_time_order and counted is not None:  # only the counted orders need to be
        kept = t[counted]
        in_time_order = bool((kept[1:] >= kept[:-1]).all())
        del kept
    if in_time_order:
        order, per_group = group_order_counts(groups, n + 1)
    else:
        by_time = np.argsort(t, kind="stable")
        order, per_group = group_order_counts(groups[by_time], n + 1)
        order = by_time[order]
    per_customer = per_group[:n]
    order = order[: int(per_customer.sum())]
    # Sorted by customer, the codes are each customer's code repeated over its orders: repeated
    # by the sort's own counts, not gathered through the permutation (4.8M orders: 76 -> ~15 ms).
    return order, np.repeat(np.arange(n, dtype=code.dtype), per_customer), t[order]


# A (customer, category) grid of up to this many cells is summed by bincount however few lines
# there are (128 MB per float array); beyond it, while the grid holds no more cells than 4x the
# lines (its arrays then no larger than a few of the line-long arrays already held).
_DENSE_CELLS = 1 << 24


def _dense_cells(cells: int, lines: int) -> bool:
    """Whether per-customer category sums go through one bincount over the whole grid. Past it,
    pandas' groupby over every line: 18 s of a 3M-customer run when the bound was 2**24 cells
    alone (3M customers x 8 categories), against under a second on the grid."""
    return cells <= max(_DENSE_CELLS, 4 * lines)


def _top_categories(
    c: np.ndarray, k: np.ndarray, v: np.ndarray, n: int, n_cat: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer: its top category (largest summed value, ties to the first name; -1 if none),
    and the (customer, category) pairs bought, sorted.

    The original ranked pandas' groupby sums, which are Kahan-compensated; plain bincount sums
    can differ from them in the last bit. So the top is taken from the plain sums only where no
    rival category comes within both sums' error bound, and the few close calls are re-ranked
    on pandas' own sums: the same top, at a fraction of the cost.
    """
    if not len(c):
        return np.full(n, -1, dtype=np.int64), c[:0].astype(np.int64), k[:0].astype(np.int64)
    dense = _dense_cells(n * n_cat, len(c)) and bool(np.isfinite(v).all())
    if dense:
        # Group by one bincount over (customer, category) cells; then work on the bought cells.
        key = c.astype(np.int64) * n_cat + k
        del c, k  # the key holds both (the close calls below read them back from it)
        cells = np.bincount(key, minlength=n * n_cat)
        bought = np.flatnonzero(cells)  # sorted by (customer, category)
        cnt = cells[bought]
        # The sums over the bought cells only: each line's cell numbered among them, in the
        # count grid's own memory (two more whole-grid sums were ~80 MB each at 1M customers).
        # bincount adds each cell's values in line order either way: the same sums, bit for bit.
        cells[bought] = np.arange(len(bought))
        at = cells[key]
        del cells
        total = np.bincount(at, weights=v, minlength=len(bought))
        # The sums of |v| bound the error; with no negative value (no line discounted below
        # zero) they are the sums themselves, bit for bit: the same values in the same order.
        size = total if not (v < 0).any() else np.bincount(at, weights=np.abs(v), minlength=len(bought))
        del at
        pc_, pk = np.divmod(bought, n_cat)
        starts = np.flatnonzero(np.r_[True, pc_[1:] != pc_[:-1]])
        group = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(bought)]))
        best = np.maximum.reduceat(total, starts)[group]
        # The first (lowest-coded) cell holding its customer's best sum: the top.
        at_best = np.flatnonzero(total == best)
        top_cell = at_best[np.r_[True, group[at_best][1:] != group[at_best][:-1]]]
        # Up to two summands the plain sum is the compensated one, bit for bit.
        eps = np.finfo(float).eps
        tol = np.where(cnt <= 2, 0.0, 4 * eps * (cnt + 2) * size)
        tol_top = tol[top_cell][group]
        rival = (tol + tol_top > 0) & (total >= best - tol_top - tol)
        rival[top_cell] = False
        customers = pc_[starts]
        top = np.full(n, -1, dtype=np.int64)
        top[customers] = pk[top_cell]
        unsure = np.zeros(n, dtype=bool)
        unsure[customers] = np.logical_or.reduceat(rival, starts)
    else:
        unsure = np.ones(n, dtype=bool)
    if unsure.any():
        if dense:
            # The close calls' lines by their cells (a few customers' worth: dividing every
            # line's key back into customer and category took ~0.3 s at a million customers).
            sel = np.repeat(unsure, n_cat)[key]
            c, k = np.divmod(key[sel], n_cat)
            lc = pd.DataFrame({"c": c, "cat": k, "v": v[sel]})
        else:
            sel = unsure[c]
            lc = pd.DataFrame({"c": c[sel], "cat": k[sel], "v": v[sel]})
        per = lc.groupby(["c", "cat"], sort=True)["v"].sum().reset_index()
        exact = per.sort_values(["c", "v", "cat"], ascending=[True, False, True], kind="stable")
        exact = exact.drop_duplicates("c")
        if not dense:
            top = np.full(n, -1, dtype=np.int64)
            pc_, pk = per["c"].to_numpy(np.int64), per["cat"].to_numpy(np.int64)
        top[exact["c"].to_numpy()] = exact["cat"].to_numpy()
    return top, pc_, pk


def _category_lists(pc_: np.ndarray, pk: np.ndarray, names: np.ndarray, n: int) -> ExtensionArray:
    """Each customer's categories, sorted and ';'-joined (missing when none): with few
    categories, one bit set per customer, joined once per distinct set."""
    if len(names) <= 52:  # a float64 holds the sum of up to 52 distinct powers of two exactly
        bits = np.bincount(pc_, weights=np.ldexp(1.0, pk), minlength=n)
        codes, sets = pd.factorize(bits)
        texts = np.array(
            [";".join(names[np.flatnonzero([(int(b) >> i) & 1 for i in range(len(names))])]) for b in sets],
            dtype=object,
        )
        codes = np.where(bits > 0, codes, -1)
        return _text(codes, texts)
    out = np.full(n, None, dtype=object)
    keys, joined = join_by_group(pc_, names[pk].astype(object))
    out[keys] = joined
    return pd.array(out, dtype="string")


def compute_signals(
    store: Store,
    config: Config,
    *,
    history: bool = False,
    identity: Future[Identity] | None = None,
) -> Signals:
    """One row per customer: orders, value, recency, gaps, discounts, refunds, consent, identity.

    `history`: also start the purchase history classification begins with (`Signals.history`)
    as soon as its inputs exist, on a second thread while the rest of the signals are computed.
    `identity`: `identity_columns(store.customers, config)`, when the caller started it already
    (the pipeline does, while validation waits for the order lines).
    """
    cust = store.customers
    # The frame's columns, in order; one DataFrame is built from them at the end.
    cols: dict[str, object] = {"customer_id": cust["customer_id"].array.astype(STR)}
    cols["duplicate_group"] = cols["merged_into"] = None  # identity: filled at the end, in this order
    if identity is not None:
        return _signals(store, config, cols, identity, history)
    # Duplicate identities (email and phone keys: string kernels, then a few scatter passes) need
    # only the customers table: found on a second thread while the order signals are computed
    # (Arrow and NumPy let go of the GIL), unless merging, where every order's customer code
    # depends on them and waits.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return _signals(store, config, cols, pool.submit(identity_columns, cust, config), history)


# What identity_columns gives: (each record's identity root, whether merged away, the
# duplicate_group and merged_into columns).
Identity = tuple[np.ndarray, np.ndarray, dict[str, object]]


def identity_columns(cust: pd.DataFrame, config: Config) -> Identity:
    """(each record's identity root, whether merged away, the duplicate_group and merged_into
    columns) of the final customers table (`Store.customers`)."""
    n = len(cust)
    dup_root = duplicate_groups(cust, config.duplicates)
    group_size = np.bincount(dup_root, minlength=n)[dup_root]
    ids = pa.array(cust["customer_id"])
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks()
    roots = ids.take(pa.array(dup_root))
    null = pa.scalar(None, roots.type)
    merged = dup_root != np.arange(n)
    cols: dict[str, object] = {
        "duplicate_group": pd.array(pc.if_else(pa.array(group_size > 1), roots, null), dtype="string"),
        "merged_into": (
            pd.array(pc.if_else(pa.array(merged), roots, null), dtype="string")
            if config.duplicates.merge
            else pd.array(pa.nulls(n, roots.type), dtype="string")
        ),
    }
    return dup_root, merged, cols


def _signals(
    store: Store,
    config: Config,
    cols: dict[str, object],
    identity: Future[Identity],
    history: bool = False,
) -> Signals:
    """compute_signals' body: `cols` holds the columns so far; `identity` gives identity_columns."""
    th = config.thresholds
    as_of = store.as_of
    cust = store.customers
    n = len(cust)

    # ---- orders: integer customer codes (merged identity when configured) ----
    o = store.orders
    code = store.order_customer_rows()
    if config.duplicates.merge:
        code = identity.result()[0][code]
    ordered_at = o["ordered_at"].to_numpy()
    counts = o["counts"].to_numpy(bool)
    # The line-level work, then the purchase history, on a second thread from here on while this
    # one computes the order signals; the history waits for the counted orders by (customer,
    # time), sorted below. The lines' arrays are freed before the history starts: with both at
    # once, a million-customer run peaked 350 MB higher.
    by_customer: Future[np.ndarray] = Future()
    lines_done, started = _start_lines(store, code, n, by_customer, history)
    try:
        orders_by_customer, c_arr, t_arr = _order_history(code, ordered_at, n, counts)
    except BaseException as exc:
        by_customer.set_exception(exc)
        raise
    by_customer.set_result(orders_by_customer)

    # ---- population ----
    tags = cust["tags"] if "tags" in cust else pd.Series(pd.NA, index=cust.index, dtype="string")
    excluded_tag = _tags_match(tags, config.population.exclude_tags).to_numpy()
    country = cust["country"] if "country" in cust else pd.Series(pd.NA, index=cust.index)
    if config.population.countries:
        wanted = [c.upper() for c in config.population.countries]
        excluded_country = ~country.astype("string").str.upper().isin(wanted).fillna(False).to_numpy(bool)
    else:
        excluded_country = np.zeros(n, dtype=bool)
    cols["excluded"] = excluded_tag | excluded_country
    reasons = np.array(
        ["", "excluded by country filter", "excluded by tag (" + ",".join(config.population.exclude_tags) + ")"],
        dtype=object,
    )
    cols["excluded_reason"] = _text(
        np.where(excluded_tag, 2, np.where(excluded_country, 1, 0)), reasons, STR
    )

    in_window = ordered_at > (as_of - pd.Timedelta(days=config.window_days)).to_datetime64()
    # Orders in time order (the usual export): the window's orders are the table's last rows,
    # from `w0`, and the window's sums are taken over those rows alone. The same sums, bit for
    # bit: an order outside the window adds +0.0, which changes no sum that starts at +0.0.
    w0 = int(np.argmax(in_window)) if len(in_window) else 0
    if w0 == 0 or not bool(in_window[w0:].all()):
        w0 = 0  # (0: every order is in the window, or they are not in time order)
    net = o["net_revenue"].to_numpy(float)
    revenue = o["revenue"].to_numpy(float)
    cost = o["cost"].to_numpy(float)
    if store.lines is not None and np.isnan(cost).all() and store.lines["cost"].notna().any():
        # Each order's cost from its lines: pandas' (compensated) group sums, grouped by order row.
        pos = store.line_order_rows()
        line_cost = (store.lines["cost"] * store.lines["quantity"]).to_numpy(float)
        per_order = pd.Series(line_cost[pos >= 0]).groupby(pos[pos >= 0], sort=False).sum(min_count=1)
        cost = per_order.reindex(np.arange(len(o))).to_numpy(float)
    cost_known = ~np.isnan(cost)
    # Margin: what was kept minus the cost of goods; partial refunds reduce cost in proportion.
    kept_share = np.divide(net, revenue, out=np.zeros_like(net), where=revenue > 0)
    margin = np.where(counts & cost_known, net - np.nan_to_num(cost) * kept_share, 0.0)
    disc = o["discount"].to_numpy(float)
    has_disc = o["has_discount"].to_numpy(bool)
    refunded_any = (o["refunded"].to_numpy(float) > 0) | o["fully_refunded"].to_numpy(bool)

    def agg(values: np.ndarray, mask: np.ndarray | None = None, start: int = 0) -> np.ndarray:
        """Per customer, the sum of `values` over the rows from `start` where `mask` holds."""
        w = values[start:] if mask is None else np.where(mask[start:], values[start:], 0)
        return np.bincount(code[start:], weights=np.asarray(w, dtype=float), minlength=n)

    def agg_window(values: np.ndarray, counted: bool = False) -> np.ndarray:
        """`agg(values, in_window)` (`counts & in_window` when `counted`)."""
        if w0:
            return agg(values, counts if counted else None, w0)
        return agg(values, cw if counted else in_window)

    cw = counts & in_window
    orders_all = np.bincount(code, minlength=n).astype(np.int64)
    # Four counts per customer (counted orders, those in the window, those with a discount in
    # the window, refunded orders) from one bincount: each order's four yes/no packed as bit
    # fields of one weight, wide enough for the customer with the most orders.
    orders_lifetime, orders_window, discounted_window, refunded_orders = _counts(
        code, (counts, cw, cw & has_disc, refunded_any), int(orders_all.max()), n
    )
    net_lifetime = agg(net)
    cols["orders_lifetime"] = orders_lifetime
    cols["orders_window"] = orders_window
    cols["orders_all_lifetime"] = orders_all
    cols["net_revenue_lifetime"] = net_lifetime
    cols["net_revenue_window"] = agg_window(net)
    cols["margin_lifetime"] = agg(margin)
    cols["margin_window"] = agg_window(margin)
    known_rev = agg(net, cost_known & counts)
    cols["cost_coverage"] = np.divide(known_rev, net_lifetime, out=np.ones(n), where=net_lifetime > 0)
    gross_window = agg_window(net + disc, counted=True)
    cols["discount_share_window"] = np.divide(
        discounted_window, orders_window, out=np.zeros(n), where=orders_window > 0
    )
    cols["discount_rate_window"] = np.divide(
        agg_window(disc, counted=True), gross_window, out=np.zeros(n), where=gross_window > 0
    )
    cols["refund_rate"] = np.divide(refunded_orders, orders_all, out=np.zeros(n), where=orders_all > 0)
    total_net = float(net[counts].sum())
    known_net = float(net[counts & cost_known].sum())
    # Free the per-order arrays (dozens of MB each at 1M customers) before the line-level peak.
    del net, revenue, cost, cost_known, kept_share, margin, disc, has_disc, refunded_any
    del known_rev, gross_window

    # First / last counted order and gaps between consecutive counted orders.
    start = np.ones(len(c_arr), dtype=bool)
    start[1:] = c_arr[1:] != c_arr[:-1]
    end = np.ones(len(c_arr), dtype=bool)
    end[:-1] = start[1:]
    first = np.full(n, np.datetime64("NaT"), dtype=ordered_at.dtype)
    last = first.copy()
    first[c_arr[start]] = t_arr[start]
    last[c_arr[end]] = t_arr[end]
    first_at = pd.Series(first, dtype="datetime64[ns]")
    last_at = pd.Series(last, dtype="datetime64[ns]")
    cols["first_order_at"] = first_at.to_numpy()
    cols["last_order_at"] = last_at.to_numpy()
    cols["recency_days"] = np.floor(_days(as_of - last_at))
    cols["tenure_days"] = np.floor(_days(as_of - first_at))
    delta = np.dtype(f"m8[{np.datetime_data(ordered_at.dtype)[0]}]")  # the times' own unit
    same = ~start  # same customer as the previous order
    gap_c = c_arr[same]
    gap_t = (t_arr[1:] - t_arr[:-1])[same[1:]]  # in the times' unit, >= 0: sorted within a customer
    # Gaps in whole seconds (the usual timestamps) sort as small composite keys.
    unit = next((u for u in (10**9, 10**6, 10**3) if not (gap_t % u).any()), 1) if len(gap_t) else 1
    sv, per_customer = sorted_by_group(gap_c, gap_t // unit, n)
    cols["median_gap_days"] = group_median((sv * unit).astype(delta) / DAY, per_customer)
    # First-to-second gap: the gap that ends each customer's second order.
    second = same & np.r_[True, start[:-1]]
    f2s = (t_arr[second] - t_arr[np.flatnonzero(second) - 1]).astype(delta) / DAY
    f2s_p75 = float(np.percentile(f2s, 75)) if len(f2s) >= 30 else None
    f2s_med = float(np.median(f2s)) if len(f2s) >= 30 else None
    del c_arr, t_arr, start, end, same, gap_c, gap_t, sv, second, first, last

    cols["top_category"] = cols["categories"] = None  # from the lines: filled at the end, in this order

    # ---- subscriptions and support: customer rows by one Arrow hash lookup for both ----
    subs = store.subscriptions if store.subscriptions is not None and len(store.subscriptions) else None
    tickets = store.tickets if store.tickets is not None and len(store.tickets) else None
    named = [x["customer_id"] for x in (subs, tickets) if x is not None]
    rows = positions(pd.concat(named, ignore_index=True), cust["customer_id"]) if named else np.zeros(0, dtype=np.intp)
    # Per customer, the highest-ranked status among its subscriptions, as a code into the few
    # texts (missing where every one of its statuses is unknown): no object per customer.
    status = np.zeros(n, dtype=np.int64)  # 0: "none"
    sub_cache: dict[str, np.ndarray] = {}
    if subs is not None:
        sub_cache[f"subscription_rows:{id(subs)}"] = rows[: len(subs)]  # checks reads them too
        rank_map = {name: rank for rank, name in enumerate(_SUBSCRIPTION_RANKED) if rank}
        sc = pd.DataFrame({"c": rows[: len(subs)], "r": subs["status"].map(rank_map).to_numpy()})
        best = sc.groupby("c")["r"].max()
        status[best.index.to_numpy()] = np.nan_to_num(best.to_numpy(float), nan=-1).astype(np.int64)
    cols["subscription_status"] = _text(status, np.array(_SUBSCRIPTION_RANKED, dtype=object), STR)

    cols["tickets_window"] = np.zeros(n, dtype=np.int64)
    cols["open_tickets"] = np.zeros(n, dtype=np.int64)
    cols["recent_high_severity"] = np.zeros(n, dtype=bool)
    if tickets is not None:
        t = tickets
        tc = rows[len(rows) - len(t) :]
        recent = (t["opened_at"] >= as_of - pd.Timedelta(days=th.support_window_days)).to_numpy(bool)
        cols["tickets_window"] = np.bincount(tc, weights=recent.astype(float), minlength=n).astype(np.int64)
        cols["open_tickets"] = np.bincount(tc, weights=t["is_open"].to_numpy(float), minlength=n).astype(
            np.int64
        )
        hs = (recent | t["is_open"].to_numpy(bool)) & t["high_severity"].to_numpy(bool)
        cols["recent_high_severity"] = np.bincount(tc, weights=hs.astype(float), minlength=n) > 0

    # ---- consent ----
    cols["email_consent"] = cust["email_consent"].array.astype(STR)
    cols["sms_consent"] = cust["sms_consent"].array.astype(STR)
    suppressed = cust["email_suppressed"].fillna(False).to_numpy(bool)
    has_email = cust["email"].notna().to_numpy(bool) if "email" in cust else np.zeros(n, bool)
    has_phone = cust["phone"].notna().to_numpy(bool) if "phone" in cust else np.zeros(n, bool)
    cols["email_ok"] = (
        cust["email_consent"].isin(config.consent.email_requires).to_numpy(bool) & ~suppressed & has_email
    )
    cols["sms_ok"] = cust["sms_consent"].isin(config.consent.sms_requires).to_numpy(bool) & has_phone

    # ---- value ----
    use_margin = config.value == "margin" and store.has_cost
    value_window = np.array(cols["margin_window"] if use_margin else cols["net_revenue_window"])
    value_lifetime = np.array(cols["margin_lifetime"] if use_margin else cols["net_revenue_lifetime"])
    cols["value_window"] = value_window
    cols["value_lifetime"] = value_lifetime
    # The ranking score for VIP / near-VIP, chosen by backtest (docs/backtest.md): it reads
    # the columns before merged-away records are zeroed.
    score_cols = ("value_window", "value_lifetime", "orders_window", "orders_lifetime",
                  "first_order_at", "last_order_at")
    cols["value_score"] = value_score(
        pd.DataFrame({k: cols[k] for k in score_cols}), config.window_days, as_of
    )

    category_texts, category_codes = lines_done.result()
    cols["top_category"], cols["categories"] = category_texts.result()
    _, merged, identity_cols = identity.result()
    cols.update(identity_cols)
    if config.duplicates.merge:
        # Merged-away records carry no signals of their own: their orders count on the root.
        for col in ("orders_lifetime", "orders_window", "net_revenue_lifetime", "value_window", "value_score"):
            arr = np.array(cols[col])
            arr[merged] = 0
            cols[col] = arr

    # Each column keeps its own array: no array here is anyone else's, and stacking the ~30
    # float and integer columns into 2D blocks copied ~0.3 GB at a million customers (~0.3 s,
    # most of it fresh pages) for nothing the later steps need.
    f = pd.DataFrame(cols, copy=False)
    del cols
    release_free_memory()
    coverage = known_net / total_net if total_net > 0 else 0.0
    first_any = o["ordered_at"].min()
    return Signals(
        order_codes=code,
        frame=f,
        as_of=as_of,
        history_days=int((as_of - first_any) / pd.Timedelta(days=1)),
        margin_coverage=coverage if store.has_cost else 0.0,
        value_column="margin" if use_margin else "net_revenue",
        first_to_second_p75=f2s_p75,
        first_to_second_median=f2s_med,
        customers_with_second_order=len(f2s),
        category_codes=category_codes,
        orders_by_customer=orders_by_customer,
        cache=sub_cache,
        history=started,
    )


# What _line_categories gives: (the top_category and categories columns, to come; the lines'
# category codes).
_LineCategories = tuple[Future[tuple[object, object]], tuple[np.ndarray, np.ndarray] | None]


def _line_categories(store: Store, code: np.ndarray, n: int) -> _LineCategories:
    """(what gives top_category and categories, the lines' category codes): per customer the
    category with the most net line value over counted orders, and every category bought."""
    none = pd.array(pa.nulls(n, pa.large_string()), dtype="string")
    nothing: Future[tuple[object, object]] = Future()
    nothing.set_result((none, none))
    if store.lines is None:
        return nothing, None
    lines = store.lines
    category_codes = sorted_codes(lines["category"])
    cat, cat_names = category_codes
    if not (cat >= 0).any():
        return nothing, category_codes
    # Each line's order (order ids are unique after validation): counted orders only.
    pos = store.line_order_rows()
    idx = np.flatnonzero(store.counted_lines() & (cat >= 0))
    # quantity x price (missing price: 0) - line discount, computed in one buffer
    v = lines["price"].to_numpy(float)[idx]
    v[np.isnan(v)] = 0.0
    np.multiply(lines["quantity"].to_numpy(float)[idx], v, out=v)
    np.subtract(v, lines["line_discount"].to_numpy(float)[idx], out=v)
    top, pc_, pk = _top_categories(code[pos[idx]], cat[idx], v, n, len(cat_names))
    del v, idx
    # The two text columns (Arrow, ~0.15 s at a million customers) are made on a thread: the
    # purchase history, which classification waits for, starts as soon as this returns.
    texts: Future[tuple[object, object]] = background.start(
        lambda: (_text(top, cat_names), _category_lists(pc_, pk, cat_names, n)), name="juno-categories"
    )
    return texts, category_codes


def _start_lines(
    store: Store,
    code: np.ndarray,
    n: int,
    orders_by_customer: Future[np.ndarray],
    history: bool,
) -> tuple[Future[_LineCategories], Future[PurchaseHistory] | None]:
    """`_line_categories` and then (when `history`) `purchase_history`, one after the other on a
    thread of their own, returned at once: (the line categories, the purchase history).

    Classification's largest step, the history (1.4 s at a million customers, sorts and takes
    that let go of the GIL), waits for the lines' categories (0.9 s); both run while the order
    signals are computed on the other core, and never hold their arrays at once."""
    lines_done: Future[_LineCategories] = Future()
    started: Future[PurchaseHistory] | None = Future() if history else None

    def work() -> None:
        try:
            found = _line_categories(store, code, n)
        except BaseException as exc:
            lines_done.set_exception(exc)
            if started is not None:
                started.set_exception(exc)
            return
        lines_done.set_result(found)
        if started is None:
            return
        try:
            started.set_result(purchase_history(store, code, found[1], orders_by_customer.result()))
        except BaseException as exc:
            started.set_exception(exc)

    if store.lines is not None:
        store.line_order_rows()  # looked up here, if validation left it to us: not by two threads
    background.start(work, name="juno-lines")
    return lines_done, started

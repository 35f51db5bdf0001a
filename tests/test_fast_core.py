"""The core's fast paths give exactly what the plain implementations they replaced give (issue 8).

Each `_ref_*` below is the code as it was before the scale work (commit 0a07dec): pandas sorts,
drop_duplicates and groupby on string keys. The tests run both on seeded stores built to hit the
edge cases (duplicate records, missing categories and SKUs, SKUs in several categories, same-day
orders, equal timestamps, many small line values whose compensated and plain sums differ, exact
ties between categories) and require equal frames, dtypes included.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import load, write_store

from juno.assess import _perturbed, stability
from juno.classify import run_classification
from juno.cohorts import RULES, Context, _ranked, _top_cut, make_context
from juno.config import Config, Duplicates, Thresholds, config_from_dict
from juno.cycles import Cycles, estimate_cycles, purchase_history
from juno.grouping import group_median, group_quantile, key_codes, sorted_by_group, sorted_codes
from juno.identity import duplicate_groups, normalise_email, normalise_phone
from juno.parse import positions
from juno.score import value_score
from juno.signals import (
    Identity,
    Signals,
    _category_lists,
    _counts,
    _order_history,
    _tags_match,
    _top_categories,
    compute_signals,
    identity_columns,
    join_by_group,
)
from juno.sources.generic import read_generic
from juno.validate import Store, validate

DAY = np.timedelta64(1, "D")


def _days(delta: pd.Series) -> np.ndarray:
    return np.asarray(delta.to_numpy() / np.timedelta64(1, "D"), dtype=float)


def _ref_duplicate_groups(customers: pd.DataFrame, cfg: Duplicates) -> np.ndarray:
    """Per customer row, the row index of the first record of its identity (itself when unique).

    Records sharing an email key or a phone key are one identity, transitively (label
    propagation over both keys until stable; converges in a few passes).
    """
    n = len(customers)
    label = np.arange(n)
    keys = [
        normalise_email(customers["email"], cfg).astype(object).to_numpy(),
        normalise_phone(customers["phone"], cfg).astype(object).to_numpy(),
    ]
    for _ in range(20):
        before = label.copy()
        for key in keys:
            has = pd.notna(key)
            if not has.any():
                continue
            idx = np.flatnonzero(has)
            frame = pd.DataFrame({"k": key[idx], "l": label[idx]})
            mins = frame.groupby("k", sort=False)["l"].transform("min").to_numpy()
            label[idx] = np.minimum(label[idx], mins)
        # Follow chains: a label's own label may be smaller.
        label = label[label]
        if np.array_equal(label, before):
            break
    return label


def _ref_tags_match(tags: pd.Series, wanted: list[str]) -> pd.Series:
    if not wanted:
        return pd.Series(False, index=tags.index)
    t = tags.astype("string").str.lower().fillna("")
    pattern = r"(?:^|,)\s*(?:" + "|".join(
        pd.Series(wanted).str.lower().str.replace(r"([^\w\s])", r"\\\1", regex=True)
    ) + r")\s*(?:,|$)"
    return t.str.contains(pattern, regex=True, na=False)




def _ref_signals(store: Store, config: Config) -> Signals:
    """One row per customer: orders, value, recency, gaps, discounts, refunds, consent, identity."""
    th = config.thresholds
    as_of = store.as_of
    cust = store.customers
    n = len(cust)
    ids = pd.Index(cust["customer_id"])

    # ---- identity and population ----
    dup_root = _ref_duplicate_groups(cust, config.duplicates)
    group_size = np.bincount(dup_root, minlength=n)[dup_root]
    f = pd.DataFrame({"customer_id": cust["customer_id"].to_numpy()})
    roots = np.where(group_size > 1, cust["customer_id"].to_numpy()[dup_root], None)
    f["duplicate_group"] = pd.Series(roots, dtype="string")
    f["merged_into"] = pd.Series(pd.NA, index=f.index, dtype="string")
    if config.duplicates.merge:
        merged = dup_root != np.arange(n)
        f.loc[merged, "merged_into"] = cust["customer_id"].to_numpy()[dup_root[merged]]

    tags = cust["tags"] if "tags" in cust else pd.Series(pd.NA, index=cust.index, dtype="string")
    excluded_tag = _ref_tags_match(tags, config.population.exclude_tags).to_numpy()
    country = cust["country"] if "country" in cust else pd.Series(pd.NA, index=cust.index)
    if config.population.countries:
        wanted = [c.upper() for c in config.population.countries]
        excluded_country = ~country.astype("string").str.upper().isin(wanted).fillna(False).to_numpy(bool)
    else:
        excluded_country = np.zeros(n, dtype=bool)
    f["excluded"] = excluded_tag | excluded_country
    f["excluded_reason"] = np.where(
        excluded_tag,
        "excluded by tag (" + ",".join(config.population.exclude_tags) + ")",
        np.where(excluded_country, "excluded by country filter", ""),
    )

    # ---- orders: integer customer codes (merged identity when configured) ----
    o = store.orders
    code = store.order_customer_rows()
    if config.duplicates.merge:
        code = dup_root[code]
    ordered_at = o["ordered_at"].to_numpy()
    counts = o["counts"].to_numpy(bool)
    in_window = ordered_at > (as_of - pd.Timedelta(days=config.window_days)).to_datetime64()
    net = o["net_revenue"].to_numpy(float)
    revenue = o["revenue"].to_numpy(float)
    cost = o["cost"].to_numpy(float)
    if store.lines is not None and np.isnan(cost).all() and store.lines["cost"].notna().any():
        lc = store.lines.assign(c=store.lines["cost"] * store.lines["quantity"])
        per_order = lc.groupby("order_id", sort=False)["c"].sum(min_count=1)
        cost = o["order_id"].map(per_order).to_numpy(float)
    cost_known = ~np.isnan(cost)
    # Margin: what was kept minus the cost of goods; partial refunds reduce cost in proportion.
    kept_share = np.divide(net, revenue, out=np.zeros_like(net), where=revenue > 0)
    margin = np.where(counts & cost_known, net - np.nan_to_num(cost) * kept_share, 0.0)
    disc = o["discount"].to_numpy(float)
    has_disc = o["has_discount"].to_numpy(bool)
    refunded_any = (o["refunded"].to_numpy(float) > 0) | o["fully_refunded"].to_numpy(bool)

    def agg(values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        w = values if mask is None else np.where(mask, values, 0)
        return np.bincount(code, weights=w.astype(float), minlength=n)

    cw = counts & in_window
    f["orders_lifetime"] = agg(counts.astype(float)).astype(np.int64)
    f["orders_window"] = agg(cw.astype(float)).astype(np.int64)
    f["orders_all_lifetime"] = np.bincount(code, minlength=n).astype(np.int64)
    f["net_revenue_lifetime"] = agg(net)
    f["net_revenue_window"] = agg(net, in_window)
    f["margin_lifetime"] = agg(margin)
    f["margin_window"] = agg(margin, in_window)
    known_rev = agg(net, cost_known & counts)
    f["cost_coverage"] = np.divide(
        known_rev, f["net_revenue_lifetime"], out=np.ones(n), where=f["net_revenue_lifetime"] > 0
    )
    gross_window = agg(net + disc, cw)
    f["discount_share_window"] = np.divide(
        agg(has_disc.astype(float), cw), f["orders_window"], out=np.zeros(n), where=f["orders_window"] > 0
    )
    f["discount_rate_window"] = np.divide(
        agg(disc, cw), gross_window, out=np.zeros(n), where=gross_window > 0
    )
    f["refund_rate"] = np.divide(
        agg(refunded_any.astype(float)),
        f["orders_all_lifetime"],
        out=np.zeros(n),
        where=f["orders_all_lifetime"] > 0,
    )

    # First / last counted order and gaps between consecutive counted orders.
    oc = pd.DataFrame({"c": code[counts], "t": ordered_at[counts]}).sort_values(["c", "t"], kind="stable")
    g = oc.groupby("c", sort=True)["t"]
    first = g.min()
    last = g.max()
    f["first_order_at"] = pd.Series(first.reindex(range(n)).to_numpy(), dtype="datetime64[ns]")
    f["last_order_at"] = pd.Series(last.reindex(range(n)).to_numpy(), dtype="datetime64[ns]")
    f["recency_days"] = np.floor(_days(as_of - f["last_order_at"]))
    f["tenure_days"] = np.floor(_days(as_of - f["first_order_at"]))
    c_arr = oc["c"].to_numpy()
    t_arr = oc["t"].to_numpy()
    # Same customer as the previous order (length len(c_arr), also when there are no counted orders).
    same = np.r_[False, c_arr[1:] == c_arr[:-1]][: len(c_arr)]
    gaps = pd.DataFrame(
        {"c": c_arr[same], "gap": (t_arr[1:] - t_arr[:-1])[same[1:]] / DAY}
    )
    f["median_gap_days"] = gaps.groupby("c")["gap"].median().reindex(range(n)).to_numpy()
    # First-to-second gap: the gap that ends each customer's second order.
    rank = pd.Series(same).groupby(c_arr).cumsum().to_numpy()
    second = gaps.assign(r=rank[same])
    f2s = second.loc[second["r"] == 1, "gap"]
    f2s_p75 = float(np.percentile(f2s, 75)) if len(f2s) >= 30 else None
    f2s_med = float(np.median(f2s)) if len(f2s) >= 30 else None

    # ---- categories (order lines) ----
    f["top_category"] = pd.Series(pd.NA, index=f.index, dtype="string")
    f["categories"] = pd.Series(pd.NA, index=f.index, dtype="string")
    if store.lines is not None and store.lines["category"].notna().any():
        lines = store.lines
        # Each line's order (order ids are unique after validation): counted orders only.
        pos = store.line_order_rows()
        keep = (pos >= 0) & counts[np.maximum(pos, 0)] & lines["category"].notna().to_numpy(bool)
        lk = lines[keep]
        lc = pd.DataFrame(
            {
                "c": code[pos[keep]],
                "cat": lk["category"].to_numpy(),
                "v": (lk["quantity"] * lk["price"].fillna(0) - lk["line_discount"]).to_numpy(float),
            }
        )
        per = lc.groupby(["c", "cat"], sort=True)["v"].sum().reset_index()
        top = per.sort_values(["c", "v", "cat"], ascending=[True, False, True], kind="stable")
        top = top.drop_duplicates("c")
        f.loc[top["c"].to_numpy(), "top_category"] = top["cat"].to_numpy()
        # `per` is sorted by customer, then category: each customer's categories, sorted, joined.
        keys, joined = join_by_group(per["c"].to_numpy(), per["cat"].to_numpy(object))
        f.loc[keys, "categories"] = joined

    # ---- subscriptions ----
    f["subscription_status"] = "none"
    if store.subscriptions is not None and len(store.subscriptions):
        s = store.subscriptions
        rank_map = {"active": 3, "paused": 2, "cancelled": 1}
        sc = pd.DataFrame(
            {"c": positions(s["customer_id"], ids), "r": s["status"].map(rank_map).to_numpy()}
        )
        best = sc.groupby("c")["r"].max()
        inv = {v: k for k, v in rank_map.items()}
        f.loc[best.index.to_numpy(), "subscription_status"] = best.map(inv).to_numpy()

    # ---- support ----
    f["tickets_window"] = 0
    f["open_tickets"] = 0
    f["recent_high_severity"] = False
    if store.tickets is not None and len(store.tickets):
        t = store.tickets
        tc = positions(t["customer_id"], ids)
        recent = (t["opened_at"] >= as_of - pd.Timedelta(days=th.support_window_days)).to_numpy(bool)
        f["tickets_window"] = np.bincount(tc, weights=recent.astype(float), minlength=n).astype(np.int64)
        f["open_tickets"] = np.bincount(tc, weights=t["is_open"].to_numpy(float), minlength=n).astype(
            np.int64
        )
        hs = (recent | t["is_open"].to_numpy(bool)) & t["high_severity"].to_numpy(bool)
        f["recent_high_severity"] = np.bincount(tc, weights=hs.astype(float), minlength=n) > 0

    # ---- consent ----
    f["email_consent"] = cust["email_consent"].to_numpy()
    f["sms_consent"] = cust["sms_consent"].to_numpy()
    suppressed = cust["email_suppressed"].fillna(False).to_numpy(bool)
    has_email = cust["email"].notna().to_numpy(bool) if "email" in cust else np.zeros(n, bool)
    has_phone = cust["phone"].notna().to_numpy(bool) if "phone" in cust else np.zeros(n, bool)
    f["email_ok"] = (
        cust["email_consent"].isin(config.consent.email_requires).to_numpy(bool) & ~suppressed & has_email
    )
    f["sms_ok"] = cust["sms_consent"].isin(config.consent.sms_requires).to_numpy(bool) & has_phone

    # ---- value ----
    use_margin = config.value == "margin" and store.has_cost
    f["value_window"] = f["margin_window"] if use_margin else f["net_revenue_window"]
    f["value_lifetime"] = f["margin_lifetime"] if use_margin else f["net_revenue_lifetime"]
    # The ranking score for VIP / near-VIP, chosen by backtest (docs/backtest.md).
    f["value_score"] = value_score(f, config.window_days, as_of)

    if config.duplicates.merge:
        # Merged-away records carry no signals of their own: their orders count on the root.
        gone = f["merged_into"].notna().to_numpy()
        for col in ("orders_lifetime", "orders_window", "net_revenue_lifetime", "value_window", "value_score"):
            f.loc[gone, col] = 0

    total_net = float(net[counts].sum())
    known_net = float(net[counts & cost_known].sum())
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
    )


def _ref_purchases(store: Store, code: np.ndarray) -> pd.DataFrame:
    o = store.orders
    lines = store.lines
    assert lines is not None
    counted = o["counts"].to_numpy(bool)
    # Each line's order (order ids are unique after validation): counted orders only.
    pos = store.line_order_rows()
    keep = (pos >= 0) & counted[np.maximum(pos, 0)]
    lk = lines[keep]
    at = pos[keep]
    p = pd.DataFrame(
        {
            "c": code[at],
            "category": lk["category"].to_numpy(),
            "sku": lk["sku"].to_numpy(),
            "day": o["ordered_at"].to_numpy()[at].astype("datetime64[D]"),
        }
    )
    return p


def _ref_gaps(p: pd.DataFrame, key: str) -> pd.DataFrame:
    """Distinct purchase days per (customer, product) and the gaps between consecutive ones."""
    d = p.dropna(subset=[key])[["c", key, "day"]].drop_duplicates().sort_values(["c", key, "day"])
    c = d["c"].to_numpy()
    k = d[key].to_numpy()
    t = d["day"].to_numpy()
    same = np.r_[False, (c[1:] == c[:-1]) & (k[1:] == k[:-1])]
    gap = np.r_[np.nan, (t[1:] - t[:-1]) / DAY]
    d = d.assign(gap=np.where(same, gap, np.nan))
    return d


@dataclass
class _RefHistory:
    """Distinct purchase days per customer and product, and reorder gaps: built once per run."""

    purchases: pd.DataFrame
    gaps: dict[str, pd.DataFrame]  # "category" / "sku" -> c, product key, day, gap
    reason_none: str | None
    # Aggregates that no threshold changes, kept for the stability re-runs (+-10% thresholds).
    cache: dict[str, pd.DataFrame] = field(default_factory=dict)


def _ref_history(store: Store, code: np.ndarray) -> _RefHistory:
    if store.lines is None:
        return _RefHistory(pd.DataFrame(), {}, "no order lines were provided, so products are unknown")
    p = _ref_purchases(store, code)
    if p["category"].isna().all() and p["sku"].isna().all():
        return _RefHistory(p, {}, "order lines carry no category or SKU")
    return _RefHistory(p, {"category": _ref_gaps(p, "category"), "sku": _ref_gaps(p, "sku")}, None)


def _ref_cycles(
    store: Store, code: np.ndarray, as_of: pd.Timestamp, th: Thresholds, history: _RefHistory | None = None
) -> Cycles:
    """Median reorder interval per category (and SKU with enough pairs); who is due within the window."""
    empty_due = pd.DataFrame(columns=["c", "level", "product", "category", "last_at", "due_at", "purchases"])
    empty_tab = pd.DataFrame(
        columns=["level", "product", "median_days", "pairs", "customers", "replenishable", "reason"]
    )
    h = history or _ref_history(store, code)
    if h.reason_none is not None:
        return Cycles(empty_tab, empty_due, h.purchases, h.reason_none)
    p = h.purchases
    tables = []
    dues = []
    for level, key, min_pairs in (
        ("category", "category", th.min_reorder_pairs),
        ("sku", "sku", th.min_sku_reorder_pairs),
    ):
        d = h.gaps[level]
        if d.empty:
            continue
        if "stats:" + level not in h.cache:
            g = d.groupby(key, sort=True)["gap"]
            base = pd.DataFrame(
                {
                    "median_days": g.median(),
                    "pairs": g.count(),
                    "customers": d.groupby(key, sort=True)["c"].nunique(),
                    "spread": (g.quantile(0.75) - g.quantile(0.25)) / g.median(),
                }
            )
            h.cache["stats:" + level] = base.reset_index().rename(columns={key: "product"})
        stats = h.cache["stats:" + level].copy()
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
        cyc = stats.loc[stats["replenishable"], ["product", "median_days"]].set_index("product")["median_days"]
        if cyc.empty:
            continue
        if "last:" + level not in h.cache:
            last = d.groupby(["c", key], sort=True).agg(last_at=("day", "max"), purchases=("day", "count"))
            h.cache["last:" + level] = last.reset_index()
        last = h.cache["last:" + level]
        last = last[last[key].isin(cyc.index)]
        cycle = last[key].map(cyc).to_numpy(float)
        due_at = last["last_at"].to_numpy() + (cycle * 86400).astype("timedelta64[s]")
        lo = (as_of - pd.to_timedelta(cycle * th.overdue_fraction, unit="D")).to_numpy()
        hi = (as_of + pd.Timedelta(days=th.lead_days)).to_datetime64()
        is_due = (due_at >= lo) & (due_at <= hi)
        sel = last[is_due]
        dues.append(
            pd.DataFrame(
                {
                    "c": sel["c"].to_numpy(),
                    "level": level,
                    "product": sel[key].to_numpy(),
                    "last_at": sel["last_at"].to_numpy(),
                    "due_at": due_at[is_due],
                    "purchases": sel["purchases"].to_numpy(),
                }
            )
        )
    table = pd.concat(tables, ignore_index=True) if tables else empty_tab
    table = table[["level", "product", "median_days", "pairs", "customers", "replenishable", "reason"]]
    due = pd.concat(dues, ignore_index=True) if dues else empty_due
    if len(due):
        # Category of each due product; a SKU-level due needs no later purchase in its category.
        sku_cat = p.dropna(subset=["sku"]).drop_duplicates("sku").set_index("sku")["category"]
        due["category"] = np.where(
            due["level"] == "category", due["product"], due["product"].map(sku_cat).to_numpy()
        )
        if "cat_last" not in h.cache:
            h.cache["cat_last"] = p.groupby(["c", "category"])["day"].max().to_frame()
        cat_last = h.cache["cat_last"]["day"]
        pairs = pd.MultiIndex.from_arrays([due["c"], due["category"]])
        later = cat_last.reindex(pairs).to_numpy() > due["last_at"].to_numpy()
        due = due[~later].sort_values(["c", "level", "product"], kind="stable").reset_index(drop=True)
    reason = None if bool(table["replenishable"].any()) else (
        "no product has enough repeat purchases for a reliable cycle"
        f" (>= {th.min_reorder_pairs} reorder pairs, a median under {th.max_cycle_days} days"
        f" and a regular rhythm)"
    )
    return Cycles(table.reset_index(drop=True), due, p, reason)


# ---------------------------------------------------------------------------------------------
# Seeded stores


def _store(folder: Path, seed: int, n: int = 400) -> Path:
    """Customers with shared emails and phones, tags, consent; orders with cancellations, refunds,
    equal timestamps and same-day repeats; lines with missing categories and SKUs, SKUs sold in
    two categories, prices missing, fractional quantities; subscriptions and tickets."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"C{i:04d}" for i in range(n)]
    email = [f"p{i % (n - 40)}{'+x' if i % 7 == 0 else ''}@{'gmail.com' if i % 3 else 'example.com'}" for i in range(n)]
    email = [e.replace("p1", "p.1") if i % 11 == 0 else e for i, e in enumerate(email)]
    phone = [f"+1 415 555 {i % (n - 25):04d}" if i % 4 else "" for i in range(n)]
    pd.DataFrame(
        {
            "customer_id": ids,
            "email": email,
            "phone": phone,
            "email_consent": rng.choice(["subscribed", "unsubscribed", "unknown"], n),
            "sms_consent": rng.choice(["subscribed", "never_subscribed"], n),
            "tags": rng.choice(["", "staff", "vip, Staff", "test", "tester", "a,test ,b", "staffing"], n),
            "country": rng.choice(["US", "CA", "de"], n),
        }
    ).to_csv(folder / "customers.csv", index=False)
    per = rng.integers(0, 12, n)
    cust = np.repeat(np.arange(n), per)
    m = len(cust)
    end = pd.Timestamp("2026-06-30 18:00:00")
    days = rng.choice(np.arange(0, 700, 3), m)  # coarse days: same-day repeats and reorder cycles
    ordered = end - pd.to_timedelta(days, unit="D") - pd.to_timedelta(rng.integers(0, 4, m) * 3600, unit="s")
    revenue = np.round(rng.choice([19.0, 40.0, 80.0, 150.0, 320.0], m) + rng.random(m), 2)
    oid = [f"O{i:05d}" for i in range(m)]
    pd.DataFrame(
        {
            "order_id": oid,
            "customer_id": np.array(ids)[cust],
            "ordered_at": ordered.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "revenue": revenue,
            "discount": np.where(rng.random(m) < 0.3, 10.0, 0.0),
            "refunded": np.where(rng.random(m) < 0.05, revenue, np.where(rng.random(m) < 0.05, 5.0, 0.0)),
            "cancelled": rng.random(m) < 0.04,
            # Even seeds: no order cost at all, so margin comes from the lines' cost.
            "cost": np.where(rng.random(m) < 0.8, np.round(revenue * 0.4, 2), np.nan) if seed % 2 else np.nan,
        }
    ).to_csv(folder / "orders.csv", index=False)
    k = rng.integers(1, 5, m)
    lo = np.repeat(np.arange(m), k)
    nl = len(lo)
    cats = np.array(["coffee", "tea", "Pet Food", "skincare", "cups", ""], dtype=object)
    cat = cats[rng.integers(0, len(cats), nl)]
    sku = np.array([f"S{j}" for j in range(12)] + [""], dtype=object)[rng.integers(0, 13, nl)]
    # Prices that sum differently with and without compensation, and exact ties.
    price = rng.choice([0.1, 0.2, 0.3, 1e-3, 7.0, 7.0, 33.3333, 1e8], nl)
    if seed % 2 == 0:  # lines not grouped by order
        lo = rng.permutation(lo)
    pd.DataFrame(
        {
            "order_id": np.array(oid)[lo],
            "sku": sku,
            "category": cat,
            "quantity": rng.choice([1, 1, 2, 3, 0.5], nl),
            "price": np.where(rng.random(nl) < 0.05, np.nan, price),
            "line_discount": np.where(rng.random(nl) < 0.2, 0.1, 0.0),
            "cost": np.where(rng.random(nl) < 0.5, 1.5, np.nan),
        }
    ).to_csv(folder / "order_lines.csv", index=False)
    ns = n // 5
    pd.DataFrame(
        {
            "customer_id": np.array(ids)[rng.integers(0, n, ns)],
            "status": rng.choice(["active", "paused", "cancelled"], ns),
            "sku": rng.choice(["S1", "S2", ""], ns),
            "category": rng.choice(["coffee", "tea", ""], ns),
        }
    ).to_csv(folder / "subscriptions.csv", index=False)
    nt = n // 6
    pd.DataFrame(
        {
            "customer_id": np.array(ids)[rng.integers(0, n, nt)],
            "opened_at": (end - pd.to_timedelta(rng.integers(0, 90, nt), unit="D")).strftime("%Y-%m-%d"),
            "status": rng.choice(["open", "closed"], nt),
            "severity": rng.choice(["low", "high"], nt),
        }
    ).to_csv(folder / "support_tickets.csv", index=False)
    return folder


CONFIGS = {
    "default": {},
    "merge_margin": {"duplicates": {"merge": True}, "value": "margin"},
    "tags_countries": {"population": {"exclude_tags": ["Staff", "a.b", ""], "countries": ["us", "DE"]}},
    "no_tags": {"population": {"exclude_tags": []}},
}


@pytest.fixture(scope="module", params=[1, 2])
def store_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _store(tmp_path_factory.mktemp(f"fast{request.param}"), request.param)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_signals_match_reference(store_dir: Path, name: str) -> None:
    config = config_from_dict(CONFIGS[name])
    store = load(store_dir, config)
    got = compute_signals(store, config)
    want = _ref_signals(load(store_dir, config), config)
    pd.testing.assert_frame_equal(got.frame, want.frame, check_exact=True)
    for k in ("history_days", "margin_coverage", "value_column", "first_to_second_p75",
              "first_to_second_median", "customers_with_second_order"):
        assert getattr(got, k) == getattr(want, k), k
    assert np.array_equal(got.order_codes, want.order_codes)


@pytest.mark.parametrize("name", ["default", "merge_margin"])
def test_identity_found_during_validation(store_dir: Path, name: str) -> None:
    """The pipeline starts the duplicate identities while validation waits for the order lines,
    from the customers table validation hands over: the table the Store then holds, and the
    signals built on those identities are the ones compute_signals finds itself."""
    config = config_from_dict(CONFIGS[name])
    handed: list[pd.DataFrame] = []
    store = validate(read_generic(store_dir), config, customers_final=handed.append)
    assert len(handed) == 1 and handed[0] is store.customers
    early: Future[Identity] = Future()
    early.set_result(identity_columns(handed[0], config))
    got = compute_signals(store, config, history=True, identity=early)
    want = compute_signals(load(store_dir, config), config, history=True)
    pd.testing.assert_frame_equal(got.frame, want.frame, check_exact=True)
    assert np.array_equal(got.order_codes, want.order_codes)
    a, b = got.take_history(), want.take_history()
    assert a is not None and b is not None
    for level in ("category", "sku"):
        assert np.array_equal(a.levels[level].gc, b.levels[level].gc)
        assert np.array_equal(a.levels[level].last_day, b.levels[level].last_day)


def test_purchase_history_goes_once_classification_is_done(store_dir: Path) -> None:
    """The history's per-product arrays are not kept until the outputs are written: nothing
    holds the history once classification returns, and the cycles still give the purchase frame
    (built on first use, the same as the history's own)."""
    import gc
    import weakref

    config = Config()
    store = load(store_dir, config)
    sig = compute_signals(store, config, history=True)
    handed: list[weakref.ref[Any]] = []
    take = sig.take_history

    def spy() -> Any:
        found = take()
        if found is not None:
            handed.append(weakref.ref(found))
        return found

    sig.take_history = spy  # type: ignore[method-assign]
    cl = run_classification(store, sig, config)
    gc.collect()
    assert len(handed) == 1 and handed[0]() is None
    assert sig.order_codes is not None
    want = purchase_history(store, sig.order_codes).purchases()
    pd.testing.assert_frame_equal(cl.cycles.purchases, want, check_exact=True)


def test_customers_handed_over_are_the_final_table(tmp_path: Path) -> None:
    """Customers out of id order, and one known only from an order: validation adds and sorts
    before it hands the table over, so the identities are those of the Store's rows."""
    folder = write_store(
        tmp_path,
        customers="customer_id,email\nC3,a@x.com\nC1,A@x.com\nC2,b@x.com",
        orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\nO2,C9,2025-01-02,20\nO3,C3,2025-01-03,5",
    )
    handed: list[pd.DataFrame] = []
    store = validate(read_generic(folder), Config(), customers_final=handed.append)
    assert len(handed) == 1 and handed[0] is store.customers
    assert handed[0]["customer_id"].tolist() == ["C1", "C2", "C3", "C9"]
    roots = identity_columns(handed[0], Config())[0]
    assert roots.tolist() == [0, 1, 0, 3]  # C3 shares C1's email: one identity, rooted at C1


def test_signals_error_stops_the_lines_thread(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lines' thread waits for the orders sorted by customer on the main thread: an error
    there reaches the caller and the waiting thread ends too, instead of hanging."""
    import juno.signals as signals_mod

    def broken(*args: Any) -> Any:
        raise RuntimeError("sorting failed")

    monkeypatch.setattr(signals_mod, "_order_history", broken)
    config = Config()
    with pytest.raises(RuntimeError, match="sorting failed"):
        compute_signals(load(store_dir, config), config, history=True)
    for t in threading.enumerate():
        if t.name.startswith("juno-lines"):
            t.join(timeout=10)
            assert not t.is_alive()


THRESHOLDS = [
    {},
    {"min_reorder_pairs": 3, "min_sku_reorder_pairs": 2, "max_cycle_spread": 5.0, "lead_days": 30},
    {"min_reorder_pairs": 1, "min_sku_reorder_pairs": 1, "max_cycle_spread": 50.0, "overdue_fraction": 0.9},
    {"min_reorder_pairs": 2, "min_sku_reorder_pairs": 400, "max_cycle_days": 30, "max_cycle_spread": 9.0},
]


@pytest.mark.parametrize("merge", [False, True])
def test_cycles_match_reference(store_dir: Path, merge: bool) -> None:
    config = config_from_dict({"duplicates": {"merge": merge}})
    store = load(store_dir, config)
    sig = compute_signals(store, config)
    assert sig.order_codes is not None
    # Lines expanded from the orders' (customer, time) sort, and lines sorted on their own.
    # And the history compute_signals starts on a second thread (what the pipeline uses): the
    # signals it comes with are the same, and it is handed over once.
    early = compute_signals(load(store_dir, config), config, history=True)
    pd.testing.assert_frame_equal(early.frame, sig.frame, check_exact=True)
    started = early.take_history()
    assert started is not None and early.take_history() is None
    assert sig.history is None  # not asked for: nothing started
    histories = [
        purchase_history(store, sig.order_codes, sig.category_codes, sig.orders_by_customer),
        purchase_history(store, sig.order_codes),
        started,
    ]
    ref_history = _ref_history(store, sig.order_codes)
    for over in THRESHOLDS:
        th = Thresholds.model_validate(over)
        want = _ref_cycles(store, sig.order_codes, sig.as_of, th, ref_history)
        for history in histories:
            got = estimate_cycles(store, sig.order_codes, sig.as_of, th, history)
            pd.testing.assert_frame_equal(got.table, want.table, check_exact=True)
            pd.testing.assert_frame_equal(got.due, want.due, check_exact=True)
            pd.testing.assert_frame_equal(got.purchases, want.purchases, check_exact=True)
            assert got.reason_none == want.reason_none
            # What the segment logic reads from the purchases, without the frame.
            first = want.purchases.dropna(subset=["sku"]).drop_duplicates("sku")
            assert got.sku_categories == {
                str(sku): None if pd.isna(cat) else str(cat)
                for sku, cat in zip(first["sku"].tolist(), first["category"].tolist(), strict=True)
            }
            only = estimate_cycles(store, sig.order_codes, sig.as_of, th, history, due_customers_only=True)
            assert sorted(only.due["c"].tolist()) == sorted(want.due["c"].tolist())
            pd.testing.assert_frame_equal(only.table, want.table, check_exact=True)
    some_due = estimate_cycles(store, sig.order_codes, sig.as_of, Thresholds.model_validate(THRESHOLDS[2]), history)
    assert len(some_due.due) > 0  # the store reaches the due path


def _ref_due(
    last_day: np.ndarray, product: np.ndarray, cycle_of: np.ndarray, as_of: pd.Timestamp, overdue: float, lead: int
) -> np.ndarray:
    """Who is due, as estimate_cycles computed it row by row with datetimes before the per-product bounds."""
    cycle = cycle_of[product]
    last_at = last_day.astype("datetime64[D]").astype("datetime64[s]")
    due_at = last_at + (cycle * 86400).astype("timedelta64[s]")
    lo = (as_of - pd.to_timedelta(cycle * overdue, unit="D")).to_numpy()
    hi = (as_of + pd.Timedelta(days=lead)).to_datetime64()
    return np.asarray((due_at >= lo) & (due_at <= hi), dtype=bool)


@pytest.mark.parametrize("as_of", ["2026-03-01", "2026-03-01 23:59:59", "2026-03-01 12:00:00.5"])
def test_due_bounds_match_the_datetimes(as_of: str) -> None:
    """Rows a day either side of both bounds and exactly on them, for whole, fractional and
    second-truncated cycles: the per-product integer bounds agree with the datetime comparison."""
    from juno.cycles import _due

    at = pd.Timestamp(as_of)
    cycle_of = np.array([10.0, 30.5, np.nan, 7.25, 1 / 3, 45.0000001])
    day0 = int(at.normalize().value // (86400 * 10**9))
    products, days = [], []
    for p, cycle in enumerate(cycle_of):
        if np.isnan(cycle):
            continue
        for overdue, lead in ((0.5, 14), (0.0, 0), (1.1, 15)):
            for edge in (day0 - cycle - cycle * overdue, day0 + lead - cycle):  # lo and hi bounds
                for d in range(int(np.floor(edge)) - 2, int(np.ceil(edge)) + 3):
                    products.append(p)
                    days.append(d)
    product, last_day = np.array(products), np.array(days)
    reached = []
    for overdue, lead in ((0.5, 14), (0.0, 0), (1.1, 15), (0.45, 13)):
        want = _ref_due(last_day, product, cycle_of, at, overdue, lead)
        got, cycle_s = _due(last_day, product, cycle_of, at, overdue, lead)
        np.testing.assert_array_equal(got, want)
        reached.append(want)
        known = ~np.isnan(cycle_of)
        np.testing.assert_array_equal(cycle_s[known], (cycle_of[known] * 86400).astype("timedelta64[s]"))
    assert np.any(reached) and not np.all(reached)  # rows on both sides of the bounds


def _bare_store(lines: pd.DataFrame | None) -> Store:
    orders = pd.DataFrame(
        {
            "order_id": pd.Series(["O1", "O2", "O3"], dtype="string"),
            "customer_id": pd.Series(["A", "A", "B"], dtype="string"),
            "ordered_at": pd.to_datetime(["2025-01-01", "2025-02-01", "2025-03-01"]),
            "counts": [True, True, False],
        }
    )
    customers = pd.DataFrame({"customer_id": pd.Series(["A", "B"], dtype="string")})
    return Store(
        orders, lines, customers, None, None, pd.DataFrame(), [], [], pd.Timestamp("2025-06-01"), "x", None,
        "generic",
    )


@pytest.mark.parametrize(
    "lines",
    [
        None,
        {"order_id": ["O1", "O2"], "category": [None, None], "sku": [None, None]},
        {"order_id": ["O3"], "category": ["tea"], "sku": ["S1"]},
        {"order_id": ["O1", "O2", "O2"], "category": [None, None, None], "sku": ["S1", "S1", "S2"]},
        {"order_id": ["O1", "O2"], "category": ["tea", "tea"], "sku": [None, None]},
    ],
)
def test_cycles_edge_stores_match_reference(lines: dict[str, list[str | None]] | None) -> None:
    frame = None if lines is None else pd.DataFrame({k: pd.Series(v, dtype="string") for k, v in lines.items()})
    store = _bare_store(frame)
    code = store.order_customer_rows()
    th = Thresholds.model_validate({"min_reorder_pairs": 1, "min_sku_reorder_pairs": 1, "max_cycle_spread": 9.0})
    got = estimate_cycles(store, code, store.as_of, th)
    want = _ref_cycles(store, code, store.as_of, th)
    pd.testing.assert_frame_equal(got.table, want.table, check_exact=True)
    pd.testing.assert_frame_equal(got.due, want.due, check_exact=True)
    pd.testing.assert_frame_equal(got.purchases, want.purchases, check_exact=True)
    assert got.reason_none == want.reason_none


def test_classification_and_stability_match_plain_rules(store_dir: Path) -> None:
    config = config_from_dict({"thresholds": {"min_reorder_pairs": 3, "max_cycle_spread": 5.0}})
    store = load(store_dir, config)
    sig = compute_signals(store, config)
    cl = run_classification(store, sig, config)
    ctx = cl.ctx
    for cid, rule in RULES.items():
        assert np.array_equal(rule.member_mask(ctx), rule.members(ctx).mask), cid

    def plain(th: Thresholds) -> Context:
        # A context without the run's cache, from freshly estimated cycles: every cut sorted afresh.
        fresh = Signals(sig.frame, sig.as_of, sig.history_days, sig.margin_coverage, sig.value_column,
                        sig.first_to_second_p75, sig.first_to_second_median, sig.customers_with_second_order)
        assert sig.order_codes is not None
        return make_context(fresh, estimate_cycles(store, sig.order_codes, sig.as_of, th), config, th)

    for c in cl.cohort_facts:
        # The stability before: full memberships (reason codes included) of plain contexts.
        mask = cl.memberships[c.cohort].mask
        worst, worst_key = 1.0, None
        for key in RULES[c.cohort].threshold_keys:
            for factor in (0.9, 1.1):
                moved = _perturbed(config.thresholds, key, factor)
                if moved is None:
                    continue
                kept = float((mask & RULES[c.cohort].members(plain(moved)).mask).sum()) / int(mask.sum())
                if kept < worst:
                    worst, worst_key = kept, key
        assert c.stability == round(worst if mask.any() else 1.0, 4), c.cohort
        want = (worst, worst_key) if mask.any() else (1.0, None)
        assert stability(c.cohort, mask, config.thresholds, plain) == want


def test_top_cut_from_cached_ranking_matches_sorting() -> None:
    rng = np.random.default_rng(4)
    v = pd.Series(np.where(rng.random(5000) < 0.2, 0.0, np.round(rng.normal(100, 80, 5000), 1)))
    v[::97] = np.nan
    base = rng.random(5000) < 0.8
    ranked = _ranked(v, base)
    for share in (0.0001, 0.09, 0.1, 0.15, 0.25, 0.5, 0.99, 1.0):
        plain = v.to_numpy(float)[base & (v.to_numpy(float) > 0)]
        k = max(int(np.ceil(share * len(plain) - 1e-9)), 1)
        want = float(np.sort(plain)[::-1][min(k, len(plain)) - 1])
        assert _top_cut(v, base, share, ranked) == want == _top_cut(v, base, share)
    assert _top_cut(v, np.zeros(5000, bool), 0.1) == float("inf")


# ---------------------------------------------------------------------------------------------
# Building blocks


def test_sorted_codes_match_sorted_factorize() -> None:
    values = ["b", None, "a", "é", "B", "a", "", "z\u00e9", "\U0001f600", None, "ä", "b"]
    for s in (
        pd.Series(values, dtype="string"),
        pd.Series(values, dtype="str"),
        pd.Series(values, dtype=object),
        pd.concat([pd.Series(values[:5], dtype="string"), pd.Series(values[5:], dtype="string")], ignore_index=True),
        pd.Series([], dtype="string"),
        pd.Series([None, None], dtype="string"),
    ):
        codes, names = sorted_codes(s)
        want_codes, want_names = pd.factorize(s.astype(object), sort=True)
        assert codes.tolist() == want_codes.tolist()
        assert list(names) == list(want_names)
        assert list(names) == sorted(names)
        kc, nk = key_codes(s)
        assert nk == len(names)
        assert ((kc >= 0) == (codes >= 0)).all()
        # Equal keys, equal codes: the same grouping as the sorted codes.
        assert len({(a, b) for a, b in zip(kc, codes, strict=True)}) == len(set(codes.tolist()))


def _pandas_stats(g: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    s = pd.Series(v.astype(float)).groupby(g)
    idx = np.arange(n)
    return (
        s.median().reindex(idx).to_numpy(),
        s.quantile(0.25).reindex(idx).to_numpy(),
        s.quantile(0.75).reindex(idx).to_numpy(),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_group_median_and_quantiles_match_pandas(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 300
    sizes = rng.choice([0, 1, 2, 3, 4, 5, 8, 17, 60], n)
    in_order = np.repeat(np.arange(n), sizes)  # groups listed one after another (a merge sort)
    g = rng.permutation(in_order)
    for v in (
        rng.integers(1, 400, len(g)),  # day gaps: small domain (bincount path)
        rng.integers(0, 10**12, len(g)),  # large domain (one sort of composite keys)
        rng.integers(0, 2**61, len(g)),  # too large to compose (lexsort)
    ):
        for groups in (g, in_order):
            sv, counts = sorted_by_group(groups, v, n)
            assert np.array_equal(sv, v[np.lexsort((v, groups))])
            assert np.array_equal(counts, np.bincount(groups, minlength=n))
        med, q25, q75 = _pandas_stats(g, v, n)
        sv, counts = sorted_by_group(g, v, n)
        np.testing.assert_array_equal(group_median(sv, counts), med)
        np.testing.assert_array_equal(group_quantile(sv, counts, 0.25), q25)
        np.testing.assert_array_equal(group_quantile(sv, counts, 0.75), q75)
    # Fractional values (gap days with seconds): the median of floats, as pandas takes it.
    f = rng.integers(0, 10**6, len(g)) / 86400.0
    order = np.lexsort((f, g))
    np.testing.assert_array_equal(
        group_median(f[order], np.bincount(g, minlength=n)), pd.Series(f).groupby(g).median().reindex(np.arange(n))
    )
    empty, counts = sorted_by_group(np.zeros(0, np.int64), np.zeros(0, np.int64), 3)
    assert np.isnan(group_median(empty, counts)).all() and np.isnan(group_quantile(empty, counts, 0.5)).all()


def _ref_top(c: np.ndarray, k: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    lc = pd.DataFrame({"c": c, "cat": k, "v": v})
    per = lc.groupby(["c", "cat"], sort=True)["v"].sum().reset_index()
    top = per.sort_values(["c", "v", "cat"], ascending=[True, False, True], kind="stable").drop_duplicates("c")
    out = np.full(n, -1)
    out[top["c"].to_numpy()] = top["cat"].to_numpy()
    return out, list(zip(per["c"].tolist(), per["cat"].tolist(), strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_top_category_matches_compensated_sums(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, n_cat, m = 2000, 5, 30000
    c = rng.integers(0, n, m)
    k = rng.integers(0, n_cat, m)
    # Values whose plain and compensated sums differ in the last bit, and exact ties.
    v = rng.choice([0.1, 0.2, 0.3, 0.7, 1e-8, 1e8, -1e8, 3.0, 3.0, 0.0], m) * rng.choice([1, 1, 3, 0.5], m)
    top, pc_, pk = _top_categories(c, k, v, n, n_cat)
    want_top, want_pairs = _ref_top(c, k, v, n)
    assert np.array_equal(top, want_top)
    assert list(zip(pc_.tolist(), pk.tolist(), strict=True)) == want_pairs
    plain = np.bincount(c * n_cat + k, weights=v, minlength=n * n_cat)
    kahan = pd.Series(v).groupby(c * n_cat + k).sum().reindex(np.arange(n * n_cat), fill_value=0).to_numpy()
    assert (plain != kahan).any()  # the case the close calls guard against does occur
    # Non-finite values take pandas' path throughout.
    v2 = v.copy()
    v2[:3] = np.inf
    top2, pc2, pk2 = _top_categories(c, k, v2, n, n_cat)
    want2, pairs2 = _ref_top(c, k, v2, n)
    assert np.array_equal(top2, want2)
    assert list(zip(pc2.tolist(), pk2.tolist(), strict=True)) == pairs2


def test_top_category_close_call_is_decided_by_compensated_sums() -> None:
    """Customer 1: 0.1 + 0.2 + 0.3 in category 1 sums (plainly) to 0.6000000000000001, above the
    0.6 of category 0; compensated, the two tie and the first category wins. Customer 0 and 2
    are clear. The close call must be re-ranked, whichever path sums the cells."""
    c = np.array([0, 1, 1, 1, 1, 2, 2])
    k = np.array([2, 1, 1, 1, 0, 0, 1])
    v = np.array([5.0, 0.1, 0.2, 0.3, 0.6, 1.0, 2.0])
    assert 0.1 + 0.2 + 0.3 > 0.6  # the plain sum would pick category 1
    top, pc_, pk = _top_categories(c, k, v, 3, 3)
    assert top.tolist() == [2, 0, 1]
    assert list(zip(pc_.tolist(), pk.tolist(), strict=True)) == [(0, 2), (1, 0), (1, 1), (2, 0), (2, 1)]


def test_top_category_close_call_with_negative_values() -> None:
    """A negative line value (a discount above the price) cancels most of a sum: the error bound
    then comes from the sum of |v|, not the sum. Category 1 sums plainly to 0.0 (each 1.0 lost
    against 2**53), compensated to 2.0, above category 0's 1.0: pandas' sums pick category 1."""
    big = 2.0**53
    c = np.array([0, 0, 0, 0, 0, 1])
    k = np.array([1, 1, 1, 1, 0, 0])
    v = np.array([big, 1.0, 1.0, -big, 1.0, 3.0])
    assert np.bincount(c * 2 + k, weights=v)[1] == 0.0  # the plain sum would pick category 0
    top, _, _ = _top_categories(c, k, v, 2, 2)
    assert top.tolist() == _ref_top(c, k, v, 2)[0].tolist() == [1, 0]


def test_top_category_of_no_lines() -> None:
    nothing = np.zeros(0, dtype=np.int64)
    top, pc_, pk = _top_categories(nothing, nothing, nothing.astype(float), 4, 3)
    assert top.tolist() == [-1] * 4 and len(pc_) == len(pk) == 0
    assert _category_lists(pc_, pk, np.array(["a", "b", "c"], dtype=object), 4).isna().all()


@pytest.mark.parametrize("n_cat", [3, 52, 53, 70])
def test_category_lists_match_join(n_cat: int) -> None:
    rng = np.random.default_rng(n_cat)
    n = 500
    names = np.array(sorted(f"cat{i:03d}" for i in range(n_cat)), dtype=object)
    drawn = zip(rng.integers(0, n, 3000), rng.integers(0, n_cat, 3000), strict=True)
    pairs = sorted({(int(a), int(b)) for a, b in drawn})
    pc_ = np.array([a for a, _ in pairs])
    pk = np.array([b for _, b in pairs])
    got = _category_lists(pc_, pk, names, n)
    keys, joined = join_by_group(pc_, names[pk])
    want = pd.Series(pd.NA, index=range(n), dtype="string")
    want[keys] = joined
    pd.testing.assert_series_equal(pd.Series(got), want, check_exact=True)


@pytest.mark.parametrize(("n_emails", "n_phones"), [(1200, 900), (40_000, 9000)])
def test_duplicate_groups_match_reference(n_emails: int, n_phones: int) -> None:
    # Dense draws: most keys shared. Sparse ones, as in a real store: most keys held once, and
    # identities linked through records whose other key is theirs alone.
    rng = np.random.default_rng(9)
    n = 3000
    emails = pd.Series(
        np.where(rng.random(n) < 0.1, None, [f"u{i}@x.com" for i in rng.integers(0, n_emails, n)]), dtype="string"
    )
    phones = pd.Series(
        np.where(rng.random(n) < 0.5, None, [f"+1415{i:07d}" for i in rng.integers(0, n_phones, n)]), dtype="string"
    )
    cust = pd.DataFrame({"email": emails, "phone": phones})
    for cfg in (Duplicates(), Duplicates(ignore_plus_tags=False, ignore_gmail_dots=False)):
        assert np.array_equal(duplicate_groups(cust, cfg), _ref_duplicate_groups(cust, cfg))
    nothing = pd.Series([None] * 3, dtype="string")
    none = pd.DataFrame({"email": nothing, "phone": nothing})
    assert duplicate_groups(none, Duplicates()).tolist() == [0, 1, 2]


def test_normalised_email_is_the_same_column() -> None:
    s = pd.Series([" Jane.Doe+shop@GoogleMail.com", None, "x@y", "@nolocal.com", "no-at", "a@b@c"], dtype="string")
    got = normalise_email(s, Duplicates())
    want = pd.Series(["janedoe@gmail.com", None, "x@y", None, None, "a@b@c"], dtype="string")
    pd.testing.assert_series_equal(got, want)


@pytest.mark.parametrize("dtype", ["string", object])  # Arrow text: matched per distinct text
def test_tag_match_matches_reference(dtype: object) -> None:
    tags = pd.Series(
        ["staff", "Staff ", " vip , staff", "staffing", "a.b", "axb", "test,", None, "", "x\n", "tést", "a.b,c",
         "staff"],
        dtype=dtype,
    )
    for wanted in (["staff"], ["Staff", "a.b"], ["test", ""], ["x"], ["tést"], []):
        got = _tags_match(tags, wanted)
        want = _ref_tags_match(tags, wanted)
        assert got.to_numpy(bool).tolist() == want.fillna(False).to_numpy(bool).tolist(), wanted


@pytest.mark.parametrize("n_k", [40, 40_000])  # and more products than an int16 code holds
def test_product_grouping_paths_agree(n_k: int) -> None:
    from juno.cycles import _by_product

    rng = np.random.default_rng(5)
    k = rng.integers(0, n_k, 20000)
    cd = rng.integers(0, 1 << 30, 20000)
    again = rng.integers(0, 20000, 2000)  # repeated (product, customer-day) rows: one is kept
    k, cd = np.r_[k, k[again]], np.r_[cd, cd[again]]
    by_day = np.argsort(cd, kind="stable")  # sorted by customer-day, as the fast path needs
    k, cd = k[by_day], cd[by_day]
    want_k, want_cd = _by_product(k, cd, 30, n_k, False)  # one sort of packed keys
    order = np.lexsort((cd, k))
    keep = np.r_[True, (k[order][1:] != k[order][:-1]) | (cd[order][1:] != cd[order][:-1])]
    assert np.array_equal(want_k, k[order][keep]) and np.array_equal(want_cd, cd[order][keep])
    assert len(want_k) < len(k)
    for got in (_by_product(k, cd, 30, n_k, True), _by_product(k, cd, 60, n_k, False)):  # counting; lexsort
        assert np.array_equal(got[0], want_k) and np.array_equal(got[1], want_cd)


def test_top_category_grid_scales_with_the_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past 2**24 cells the grid is still summed by bincount while it holds at most 4x the lines
    (3M customers x 8 categories over 23M lines); a sparser grid takes pandas' path. Both give the
    compensated sums' top."""
    import juno.signals as signals

    assert signals._dense_cells(1 << 24, 10) and not signals._dense_cells((1 << 24) + 1, 10)
    assert signals._dense_cells(24_000_000, 23_000_000) and not signals._dense_cells(200_000_000, 23_000_000)
    grouped: list[int] = []
    real_groupby = pd.DataFrame.groupby

    def counting(self: pd.DataFrame, *args: Any, **kwargs: Any) -> Any:
        grouped.append(len(self))
        return real_groupby(self, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "groupby", counting)
    rng = np.random.default_rng(4)
    n, n_cat = 3000, 4  # 12,000 cells
    # (lines, bound, whether pandas sums every line): over both bounds; under the fixed bound;
    # over the fixed bound but under 4x the lines.
    for m, bound, all_by_pandas in ((2000, 100, True), (2000, 100_000, False), (6000, 100, False)):
        c, k = rng.integers(0, n, m), rng.integers(0, n_cat, m)
        v = rng.choice([0.1, 0.2, 0.3, 0.7, 3.0, 3.0, 1e8, -1e8], m)
        want_top, want_pairs = _ref_top(c, k, v, n)
        monkeypatch.setattr(signals, "_DENSE_CELLS", bound)
        grouped.clear()
        top, pc_, pk = _top_categories(c, k, v, n, n_cat)
        assert (grouped == [m]) is all_by_pandas  # the grid path re-ranks only close calls
        assert np.array_equal(top, want_top)
        assert list(zip(pc_.tolist(), pk.tolist(), strict=True)) == want_pairs


def test_reason_codes_by_bit_sets_match_cell_by_cell() -> None:
    """Cohort reason codes joined once per set of masks equal the cell-by-cell join (an empty
    code and codes holding ';' included), and past 16 masks the cell-by-cell join is used."""
    from juno.cohorts import _codes, _codes_by_cell

    rng = np.random.default_rng(3)
    for k in (1, 2, 4, 5, 17):
        masks = [rng.random(2000) < p for p in rng.random(k)]
        parts = [(m, c) for m, c in zip(masks, ["a", "", "b;c", "dd", "e"] * 4, strict=False)]
        got = _codes(*parts)
        assert got.dtype == object
        np.testing.assert_array_equal(got, _codes_by_cell(*parts))
        assert (got != "").any() and (k > 5 or (got == "").any())


@pytest.mark.parametrize("pandas_sort", [True, False])
def test_group_order_counts_is_a_stable_sort_by_group(pandas_sort: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counting pass (or, without pandas' one, the (group, row) key sort) orders rows as a
    stable argsort of the group codes: groups in order, rows within a group as they came."""
    import juno.grouping as grouping

    if not pandas_sort:
        monkeypatch.setattr(grouping, "_pandas_groupsort", lambda: None)
    else:
        assert grouping._pandas_groupsort() is not None  # the fast path is the one measured
    rng = np.random.default_rng(5)
    for n_groups, m in ((1, 5), (7, 1000), (1000, 50), (50_000, 200_000), (3, 0)):
        groups = rng.integers(0, n_groups, m)
        order, counts = grouping.group_order_counts(groups, n_groups)
        np.testing.assert_array_equal(order, np.argsort(groups, kind="stable"))
        assert order.dtype == np.intp
        np.testing.assert_array_equal(counts, np.bincount(groups, minlength=n_groups))
        assert counts.dtype == np.int64


def test_run_rows_are_concatenated_ranges() -> None:
    """cycles._run_rows: the rows of each run [start, start + length), in order; int32 while
    every row fits, int64 past 2**31 (no wrap-around)."""
    from juno.cycles import _run_rows

    rng = np.random.default_rng(9)
    for _ in range(50):
        starts = rng.integers(0, 1000, rng.integers(0, 12))
        lengths = rng.integers(0, 6, len(starts))
        want = [s + i for s, n in zip(starts.tolist(), lengths.tolist(), strict=True) for i in range(n)]
        got = _run_rows(starts, lengths)
        assert got.tolist() == want and got.dtype == np.int32
    big = _run_rows(np.array([5, 2**31 - 2]), np.array([2, 3]))
    assert big.tolist() == [5, 6, 2**31 - 2, 2**31 - 1, 2**31] and big.dtype == np.int64


@pytest.mark.parametrize("heavy", [0, 8191, 20_000])
def test_order_counts_packed_match_one_bincount_each(heavy: int) -> None:
    """signals._counts: four yes/no counts per customer from one bincount of bit-packed weights,
    against a bincount per flag. `heavy`: one customer with that many orders, every flag set:
    8191 fills each 13-bit field to the top (no carry into the next); 20,000 needs 15 bits a
    field, too wide for four in a float's mantissa (one bincount per flag then)."""
    rng = np.random.default_rng(5)
    n = 500
    code = np.concatenate([rng.integers(0, n, 20_000), np.full(heavy, 7)])
    flags = tuple(np.concatenate([rng.random(20_000) < p, np.ones(heavy, bool)]) for p in (0.9, 0.5, 0.2, 0.05))
    most = int(np.bincount(code, minlength=n).max())
    got = _counts(code, flags, most, n)
    for g, f in zip(got, flags, strict=True):
        want = np.bincount(code, weights=f.astype(float), minlength=n).astype(np.int64)
        assert g.dtype == np.int64 and np.array_equal(g, want)
    assert got[3][7] >= heavy


@pytest.mark.parametrize("in_time_order", [True, False])
def test_order_history_is_a_stable_sort_by_customer_then_time(in_time_order: bool) -> None:
    """signals._order_history against np.lexsort: the permutation, and the customer codes and
    times it gives (codes counted and repeated, not gathered). Customers 0 and n-1 have no order."""
    rng = np.random.default_rng(3)
    n, m = 300, 5_000
    code = rng.integers(1, n - 1, m)
    t = rng.integers(0, 400, m).astype("datetime64[D]").astype("datetime64[ns]")  # ties within a customer
    if in_time_order:
        t = np.sort(t)
    order, c_sorted, t_sorted = _order_history(code, t, n)
    want = np.lexsort((np.arange(m), t.view(np.int64), code))
    assert np.array_equal(order, want)
    assert c_sorted.dtype == code.dtype and np.array_equal(c_sorted, code[want])
    assert np.array_equal(t_sorted, t.view(np.int64)[want])
    # Counted orders only (as signals asks): rows of the whole table, the uncounted left out;
    # when the orders come in time order, the uncounted ones out of it (cancellations listed
    # last with their old dates).
    counted = rng.random(m) < 0.8
    if in_time_order:
        counted[-500:] = False
        t[-500:] = t[:500]
    order, c_sorted, t_sorted = _order_history(code, t, n, counted)
    rows = np.flatnonzero(counted)
    want = rows[np.lexsort((rows, t.view(np.int64)[rows], code[rows]))]
    assert np.array_equal(order, want)
    assert c_sorted.dtype == code.dtype and np.array_equal(c_sorted, code[want])
    assert np.array_equal(t_sorted, t.view(np.int64)[want])


@pytest.mark.parametrize("k", [1, 5, 8, 9, 16, 17, 33, 64])
def test_bit_codes_match_a_sum_of_powers_of_two(k: int) -> None:
    """grouping.bit_codes: bit i set exactly where masks[i] holds, in the narrowest unsigned
    type with k bits (uint8 to 8 masks, then 16, 32, 64); masks given as bools or as 0/1."""
    from juno.grouping import bit_codes

    rng = np.random.default_rng(k)
    n = 3000
    masks = [rng.random(n) < p for p in rng.random(k)]
    masks[0] = masks[0].astype(np.int64)  # not a bool array: taken as one
    want = np.zeros(n, dtype=object)
    for i, m in enumerate(masks):
        want += np.asarray(m, dtype=bool).astype(object) * (1 << i)
    got = bit_codes(masks, n)
    narrowest = next(b for b in (8, 16, 32, 64) if k <= b)
    assert got.dtype == {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}[narrowest]
    assert got.astype(object).tolist() == want.tolist()
    with pytest.raises(ValueError):
        bit_codes([masks[0]] * 65, n)

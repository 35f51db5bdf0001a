"""Replenishment cycles from the store's own repeat purchases, and who is due now."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from juno.config import Thresholds
from juno.validate import Store

DAY = np.timedelta64(1, "D")


@dataclass
class Cycles:
    """Store-wide cycle estimates and per-customer due products."""

    table: pd.DataFrame  # level, product, median_days, pairs, customers, replenishable, reason
    due: pd.DataFrame  # c (customer code), level, product, category, last_at, due_at, purchases
    purchases: pd.DataFrame  # c, category, sku, day: distinct purchase days (for subscriptions)
    reason_none: str | None  # why no product has a cycle, when none has


def _purchases(store: Store, code: np.ndarray) -> pd.DataFrame:
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


def _gaps(p: pd.DataFrame, key: str) -> pd.DataFrame:
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
class PurchaseHistory:
    """Distinct purchase days per customer and product, and reorder gaps: built once per run."""

    purchases: pd.DataFrame
    gaps: dict[str, pd.DataFrame]  # "category" / "sku" -> c, product key, day, gap
    reason_none: str | None
    # Aggregates that no threshold changes, kept for the stability re-runs (+-10% thresholds).
    cache: dict[str, pd.DataFrame] = field(default_factory=dict)


def purchase_history(store: Store, code: np.ndarray) -> PurchaseHistory:
    if store.lines is None:
        return PurchaseHistory(pd.DataFrame(), {}, "no order lines were provided, so products are unknown")
    p = _purchases(store, code)
    if p["category"].isna().all() and p["sku"].isna().all():
        return PurchaseHistory(p, {}, "order lines carry no category or SKU")
    return PurchaseHistory(p, {"category": _gaps(p, "category"), "sku": _gaps(p, "sku")}, None)


def estimate_cycles(
    store: Store, code: np.ndarray, as_of: pd.Timestamp, th: Thresholds, history: PurchaseHistory | None = None
) -> Cycles:
    """Median reorder interval per category (and SKU with enough pairs); who is due within the window."""
    empty_due = pd.DataFrame(columns=["c", "level", "product", "category", "last_at", "due_at", "purchases"])
    empty_tab = pd.DataFrame(
        columns=["level", "product", "median_days", "pairs", "customers", "replenishable", "reason"]
    )
    h = history or purchase_history(store, code)
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

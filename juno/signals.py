"""Per-customer signals (PRODUCT.md section 4), fully vectorised over integer customer codes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from juno.config import Config
from juno.identity import duplicate_groups
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
    if not wanted:
        return pd.Series(False, index=tags.index)
    t = tags.astype("string").str.lower().fillna("")
    pattern = r"(?:^|,)\s*(?:" + "|".join(
        pd.Series(wanted).str.lower().str.replace(r"([^\w\s])", r"\\\1", regex=True)
    ) + r")\s*(?:,|$)"
    return t.str.contains(pattern, regex=True, na=False)


def compute_signals(store: Store, config: Config) -> Signals:
    """One row per customer: orders, value, recency, gaps, discounts, refunds, consent, identity."""
    th = config.thresholds
    as_of = store.as_of
    cust = store.customers
    n = len(cust)
    ids = pd.Index(cust["customer_id"])

    # ---- identity and population ----
    dup_root = duplicate_groups(cust, config.duplicates)
    group_size = np.bincount(dup_root, minlength=n)[dup_root]
    f = pd.DataFrame({"customer_id": cust["customer_id"].to_numpy()})
    roots = np.where(group_size > 1, cust["customer_id"].to_numpy()[dup_root], None)
    f["duplicate_group"] = pd.Series(roots, dtype="string")
    f["merged_into"] = pd.Series(pd.NA, index=f.index, dtype="string")
    if config.duplicates.merge:
        merged = dup_root != np.arange(n)
        f.loc[merged, "merged_into"] = cust["customer_id"].to_numpy()[dup_root[merged]]

    tags = cust["tags"] if "tags" in cust else pd.Series(pd.NA, index=cust.index, dtype="string")
    excluded_tag = _tags_match(tags, config.population.exclude_tags).to_numpy()
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

"""The six cohorts: each a small named rule (data plus one vectorised membership function)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from juno.config import Config, Thresholds
from juno.cycles import Cycles
from juno.grouping import bit_codes
from juno.signals import Signals, join_by_group


@dataclass
class Context:
    """What every rule sees: signals, resolved thresholds, cycles. Rebuilt when thresholds move."""

    f: pd.DataFrame
    eligible: np.ndarray  # in population, not merged away
    th: Thresholds
    window_days: int
    value_label: str
    # The cycles, or what gives them when first read (classification builds them while the
    # rules that do not read them run: see `reads_cycles`).
    cycles_of: Callable[[], Cycles]
    resolved: dict[str, float] = field(default_factory=dict)
    # Threshold-free arrays shared by every context of one run (the signals' cache): the sorted
    # values the share cuts are read from.
    cache: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def cycles(self) -> Cycles:
        return self.cycles_of()


@dataclass
class Membership:
    """Members (bool per customer) and a reason-code string per customer ('' when not a member)."""

    mask: np.ndarray
    reasons: np.ndarray


@dataclass(frozen=True)
class CohortRule:
    id: str
    title: str
    description: str
    action: str
    allowed_actions: tuple[str, ...]
    risk: str
    value_signal: str
    threshold_keys: tuple[str, ...]
    signals_used: tuple[str, ...]
    margin_sensitive: bool
    needs_history: bool
    members: Callable[[Context], Membership]
    rule_text: Callable[[Context], str]
    # The members alone, without reason codes (the stability re-runs need only the mask).
    mask: Callable[[Context], np.ndarray] | None = None

    def member_mask(self, ctx: Context) -> np.ndarray:
        return self.mask(ctx) if self.mask is not None else self.members(ctx).mask


def _top_cut(values: pd.Series, base: np.ndarray, share: float, ranked: np.ndarray | None = None) -> float:
    """The value at the top `share` of the base with positive value (ties at the cut are in).

    `ranked`: the base's positive values sorted ascending, when the caller has them already.
    """
    if ranked is None:
        ranked = _ranked(values, base)
    if len(ranked) == 0:
        return float("inf")
    k = max(int(np.ceil(share * len(ranked) - 1e-9)), 1)  # 0.09 x 100 is 9.000000000000002
    return float(ranked[len(ranked) - min(k, len(ranked))])


def _ranked(values: pd.Series, base: np.ndarray) -> np.ndarray:
    """The base's positive values, sorted ascending."""
    v = values.to_numpy(float)
    return np.sort(v[base & (v > 0)])


def _cut(ctx: Context, col: str, share: float) -> float:
    """`_top_cut` of a signals column over the eligible base; the sorted values are cached for
    the run (the thresholds move between contexts, the values and the base do not)."""
    key = "ranked:" + col
    if key not in ctx.cache:
        ctx.cache[key] = _ranked(ctx.f[col], ctx.eligible)
    return _top_cut(ctx.f[col], ctx.eligible, share, ctx.cache[key])


def resolve(ctx: Context) -> None:
    """Turn shares into the value cuts they imply on this store."""
    th = ctx.th
    f = ctx.f
    active = ctx.eligible & (f["recency_days"].to_numpy(float) <= th.active_days)
    ctx.resolved["vip_cut"] = _cut(ctx, "value_score", th.vip_share)
    ctx.resolved["near_vip_cut"] = _cut(ctx, "value_score", min(th.vip_share + th.near_vip_share, 1.0))
    ctx.resolved["half_life_days"] = max(ctx.window_days / 4.0, 1.0)
    ctx.resolved["high_value_cut"] = _cut(ctx, "value_lifetime", th.high_value_share)
    ctx.resolved["active_customers"] = float(active.sum())


def _codes(*parts: tuple[np.ndarray, str]) -> np.ndarray:
    """Join reason codes per customer: codes for the customers where each mask holds.

    Each customer's set of masks is one bit code; the few sets that occur are joined once and
    taken by code (string work per customer costs ~0.5 s per million)."""
    n = len(parts[0][0])
    if len(parts) > 16:
        return _codes_by_cell(*parts)
    combo = bit_codes([mask for mask, _ in parts], n)
    texts = np.full(1 << len(parts), "", dtype=object)
    for c in np.flatnonzero(np.bincount(combo, minlength=len(texts))):
        text = ""
        for i, (_, code) in enumerate(parts):
            if c >> i & 1:
                text = code if text == "" else text + ";" + code
        texts[c] = text
    out: np.ndarray = texts[combo]
    return out


def _codes_by_cell(*parts: tuple[np.ndarray, str]) -> np.ndarray:
    """`_codes` cell by cell, for more masks than bit codes serve."""
    out = np.full(len(parts[0][0]), "", dtype=object)
    for mask, code in parts:
        idx = np.flatnonzero(mask)
        cur = out[idx]
        out[idx] = np.where(cur == "", code, cur + ";" + code)
    return out


def _num(f: pd.DataFrame, col: str) -> np.ndarray:
    return f[col].to_numpy(float)


def discount_dependent(ctx: Context) -> np.ndarray:
    th = ctx.th
    share = _num(ctx.f, "discount_share_window") >= th.discount_share_min
    rate = _num(ctx.f, "discount_rate_window") >= th.discount_rate_min
    return np.asarray(share | rate, dtype=bool)


def _vip_mask(ctx: Context) -> np.ndarray:
    f, th = ctx.f, ctx.th
    top = ctx.eligible & (_num(f, "value_score") >= ctx.resolved["vip_cut"])
    orders = _num(f, "orders_window") >= th.vip_min_orders
    active = _num(f, "recency_days") <= th.active_days
    dep = discount_dependent(ctx)
    return np.asarray(top & orders & active & ~dep, dtype=bool)


def _vip(ctx: Context) -> Membership:
    th = ctx.th
    mask = _vip_mask(ctx)
    pct = round(th.vip_share * 100)
    reasons = _codes(
        (mask, f"value_top_{pct}pct"),
        (mask, f"orders_{ctx.window_days}d>={th.vip_min_orders}"),
        (mask, f"active_{th.active_days}d"),
        (mask, "not_discount_dependent"),
    )
    return Membership(mask, reasons)


def vip_excluded_for_discounts(ctx: Context) -> np.ndarray:
    """Top spenders who would be VIP but for their discount dependence (the brief says so)."""
    f, th = ctx.f, ctx.th
    top = ctx.eligible & (_num(f, "value_score") >= ctx.resolved["vip_cut"])
    mask = (
        top
        & (_num(f, "orders_window") >= th.vip_min_orders)
        & (_num(f, "recency_days") <= th.active_days)
        & discount_dependent(ctx)
    )
    return np.asarray(mask, dtype=bool)


def _near_vip_mask(ctx: Context) -> np.ndarray:
    f, th = ctx.f, ctx.th
    v = _num(f, "value_score")
    band = ctx.eligible & (v >= ctx.resolved["near_vip_cut"]) & (v < ctx.resolved["vip_cut"])
    active = _num(f, "recency_days") <= th.active_days
    return np.asarray(band & active & ~_vip_mask(ctx), dtype=bool)


def _near_vip(ctx: Context) -> Membership:
    th = ctx.th
    mask = _near_vip_mask(ctx)
    lo = round(th.vip_share * 100)
    hi = round((th.vip_share + th.near_vip_share) * 100)
    return Membership(mask, _codes((mask, f"value_top_{lo}_{hi}pct"), (mask, f"active_{th.active_days}d")))


def _replenishment_mask(ctx: Context) -> np.ndarray:
    mask = np.zeros(len(ctx.f), dtype=bool)
    due = ctx.cycles.due
    if len(due):
        c = due["c"].to_numpy(int)
        mask[c[ctx.eligible[c]]] = True
    return mask


def _replenishment(ctx: Context) -> Membership:
    n = len(ctx.f)
    due = ctx.cycles.due
    mask = np.zeros(n, dtype=bool)
    reasons = np.full(n, "", dtype=object)
    if len(due):
        d = due[ctx.eligible[due["c"].to_numpy(int)]]
        if len(d):
            label = "due:" + d["product"].astype(str)
            label = label.where(d["purchases"] < 3, label + ";replenishments>=2")
            # Each customer's labels joined in due order (a stable sort keeps it).
            by_c = np.argsort(d["c"].to_numpy(int), kind="stable")
            keys, joined = join_by_group(d["c"].to_numpy(int)[by_c], label.to_numpy(object)[by_c])
            mask[keys] = True
            reasons[keys] = joined
    return Membership(mask, reasons)


def _own_gap(ctx: Context) -> np.ndarray:
    """Each customer's median gap in days, 0 without one: threshold-free, made once per run (the
    lapsed rule is re-run for each of its thresholds moved +-10%)."""
    if "own_gap" not in ctx.cache:
        ctx.cache["own_gap"] = np.nan_to_num(_num(ctx.f, "median_gap_days"), nan=0.0)
    return ctx.cache["own_gap"]


def _lapsed_mask(ctx: Context) -> np.ndarray:
    f, th = ctx.f, ctx.th
    hv = ctx.eligible & (_num(f, "value_lifetime") >= ctx.resolved["high_value_cut"])
    gap = _own_gap(ctx)
    limit = np.maximum(th.lapse_multiple * gap, th.lapse_min_days)
    rec = _num(f, "recency_days")
    return np.asarray(hv & (rec > limit) & (rec < th.lost_days), dtype=bool)


def _lapsed(ctx: Context) -> Membership:
    th = ctx.th
    mask = _lapsed_mask(ctx)
    gap = _own_gap(ctx)
    pct = round(th.high_value_share * 100)
    return Membership(
        mask,
        _codes(
            (mask, f"lifetime_value_top_{pct}pct"),
            (mask & (th.lapse_multiple * gap > th.lapse_min_days), f"silent>{th.lapse_multiple:g}x_own_gap"),
            (mask & (th.lapse_multiple * gap <= th.lapse_min_days), f"silent>{th.lapse_min_days}d"),
            (mask, f"within_{th.lost_days}d"),
        ),
    )


def _discount_risk_mask(ctx: Context) -> np.ndarray:
    f, th = ctx.f, ctx.th
    orders = _num(f, "orders_window") >= th.discount_min_orders
    return np.asarray(ctx.eligible & orders & discount_dependent(ctx), dtype=bool)


def _discount_risk(ctx: Context) -> Membership:
    f, th = ctx.f, ctx.th
    share = _num(f, "discount_share_window") >= th.discount_share_min
    rate = _num(f, "discount_rate_window") >= th.discount_rate_min
    mask = _discount_risk_mask(ctx)
    return Membership(
        mask,
        _codes(
            (mask, f"orders_{ctx.window_days}d>={th.discount_min_orders}"),
            (mask & share, f"discount_share>={th.discount_share_min:g}"),
            (mask & rate, f"discount_rate>={th.discount_rate_min:g}"),
        ),
    )


def _first_to_second_mask(ctx: Context) -> np.ndarray:
    f, th = ctx.f, ctx.th
    window = ctx.resolved["second_order_window"]
    rec = _num(f, "recency_days")
    return np.asarray(
        ctx.eligible & (_num(f, "orders_lifetime") == 1) & (rec >= th.first_order_min_days) & (rec <= window),
        dtype=bool,
    )


def _first_to_second(ctx: Context) -> Membership:
    th = ctx.th
    window = ctx.resolved["second_order_window"]
    mask = _first_to_second_mask(ctx)
    return Membership(
        mask, _codes((mask, "one_order"), (mask, f"first_order_{th.first_order_min_days}_{window:g}d_ago"))
    )


def _score_text(c: Context) -> str:
    return (
        f"value score = {c.value_label} {c.window_days}d x 0.5^(days since last order"
        f" / {c.resolved['half_life_days']:g})"
    )


def _money(v: float) -> str:
    return f"{v:,.2f}" if np.isfinite(v) else "n/a"


RULES: dict[str, CohortRule] = {
    r.id: r
    for r in [
        CohortRule(
            id="lapsed_high_value",
            title="Lapsed high-value",
            description="High lifetime value customers who have gone quiet but are not yet lost.",
            action="winback: personal outreach, not discount-first; a survey first if they had a support issue",
            allowed_actions=("winback", "survey", "review"),
            risk="reopening a bad experience; contacting people who left for a reason",
            value_signal="lifetime value",
            threshold_keys=("high_value_share", "lapse_multiple", "lapse_min_days", "lost_days"),
            signals_used=("value_lifetime", "recency_days", "median_gap_days"),
            margin_sensitive=False,
            needs_history=True,
            members=_lapsed,
            mask=_lapsed_mask,
            rule_text=lambda c: (
                f"lifetime {c.value_label} >= {_money(c.resolved['high_value_cut'])}"
                f" (top {c.th.high_value_share:.0%}) AND last order > max({c.th.lapse_multiple:g} x own median gap,"
                f" {c.th.lapse_min_days}d) ago AND last order < {c.th.lost_days}d ago"
            ),
        ),
        CohortRule(
            id="vip",
            title="VIP",
            description="The most valuable active customers, who buy without needing discounts.",
            action="loyalty treatment: early access, thank-you, service priority; no discount needed",
            allowed_actions=("loyalty treatment", "review"),
            risk="over-messaging; teaching a full-price buyer to wait for discounts; an unresolved service issue",
            value_signal="value score (window value, recency-weighted)",
            threshold_keys=(
                "vip_share",
                "vip_min_orders",
                "active_days",
                "discount_share_min",
                "discount_rate_min",
            ),
            signals_used=("value_score", "orders_window", "recency_days", "discount_share_window"),
            margin_sensitive=False,
            needs_history=False,
            members=_vip,
            mask=_vip_mask,
            rule_text=lambda c: (
                f"value score >= {_money(c.resolved['vip_cut'])} (top {c.th.vip_share:.0%}; {_score_text(c)})"
                f" AND orders {c.window_days}d >= {c.th.vip_min_orders} AND last order <= {c.th.active_days}d ago"
                f" AND discount share < {c.th.discount_share_min:g} AND discount rate < {c.th.discount_rate_min:g}"
            ),
        ),
        CohortRule(
            id="replenishment_ready",
            title="Replenishment-ready",
            description="Customers whose replenishable product is due, by the store's own reorder cycle.",
            action="replenishment reminder; a subscription offer after 2+ replenishments",
            allowed_actions=("replenishment reminder", "subscription offer", "review"),
            risk="reminding someone who still has stock or already subscribes",
            value_signal="value in window",
            threshold_keys=("min_reorder_pairs", "lead_days", "overdue_fraction"),
            signals_used=("categories",),
            margin_sensitive=False,
            needs_history=True,
            members=_replenishment,
            mask=_replenishment_mask,
            rule_text=lambda c: (
                f"bought a product with a store cycle (>= {c.th.min_reorder_pairs} reorder pairs) AND last purchase"
                f" + cycle between as_of - {c.th.overdue_fraction:g} x cycle and as_of + {c.th.lead_days}d"
                " AND no later purchase of it"
            ),
        ),
        CohortRule(
            id="near_vip",
            title="Near-VIP",
            description="The next tier by value: active customers who could become VIPs.",
            action="product education / tier-progress nudge, cross-sell from their categories",
            allowed_actions=("product education", "cross-sell", "review"),
            risk="pushing too hard; a discount that erodes margin",
            value_signal="value score (window value, recency-weighted)",
            threshold_keys=("vip_share", "near_vip_share", "active_days"),
            signals_used=("value_score", "recency_days"),
            margin_sensitive=False,
            needs_history=False,
            members=_near_vip,
            mask=_near_vip_mask,
            rule_text=lambda c: (
                f"{_money(c.resolved['near_vip_cut'])} <= value score"
                f" < {_money(c.resolved['vip_cut'])} (next {c.th.near_vip_share:.0%}; {_score_text(c)}) AND last order"
                f" <= {c.th.active_days}d ago AND not VIP"
            ),
        ),
        CohortRule(
            id="discount_risk",
            title="Discount risk",
            description="Repeat buyers who mostly buy with a discount.",
            action="suppress from discount campaigns; full-price product education; test a no-discount offer",
            allowed_actions=("suppression", "product education", "review"),
            risk="margin erosion; training the whole base to wait for codes",
            value_signal="discount rate",
            threshold_keys=("discount_min_orders", "discount_share_min", "discount_rate_min"),
            signals_used=("discount_share_window", "discount_rate_window", "orders_window"),
            margin_sensitive=True,
            needs_history=False,
            members=_discount_risk,
            mask=_discount_risk_mask,
            rule_text=lambda c: (
                f"orders {c.window_days}d >= {c.th.discount_min_orders} AND (discount share >= "
                f"{c.th.discount_share_min:g} OR discount rate >= {c.th.discount_rate_min:g})"
            ),
        ),
        CohortRule(
            id="first_to_second",
            title="First to second purchase",
            description="One-order customers in the window where a second purchase is most likely.",
            action="product education, then a second-purchase nudge timed at the store's median first-to-second gap",
            allowed_actions=("product education", "second-purchase nudge", "review"),
            risk="fatigue right after the first purchase; a discount that becomes the expectation",
            value_signal="first order value",
            threshold_keys=("first_order_min_days", "second_order_window"),
            signals_used=("orders_lifetime", "recency_days"),
            margin_sensitive=False,
            needs_history=False,
            members=_first_to_second,
            mask=_first_to_second_mask,
            rule_text=lambda c: (
                f"exactly 1 lifetime order AND placed {c.th.first_order_min_days}"
                f" to {c.resolved['second_order_window']:g} days ago"
            ),
        ),
    ]
}


def make_context(
    signals: Signals, cycles: Cycles | Callable[[], Cycles], config: Config, th: Thresholds | None = None
) -> Context:
    """`cycles`: the cycles, or a function that gives them (read only by the rules that
    `reads_cycles`, and by the checks)."""
    f = signals.frame
    cache = signals.cache
    if "eligible" not in cache:
        cache["eligible"] = ~f["excluded"].to_numpy(bool) & f["merged_into"].isna().to_numpy(bool)
    ctx = Context(
        f=f,
        eligible=cache["eligible"],
        th=th or config.thresholds,
        window_days=config.window_days,
        value_label="margin" if signals.value_column == "margin" else "net revenue",
        cycles_of=cycles if callable(cycles) else lambda: cycles,
        cache=cache,
    )
    resolve(ctx)
    t = ctx.th
    if t.second_order_window is not None:
        ctx.resolved["second_order_window"] = float(t.second_order_window)
    elif signals.first_to_second_p75 is not None:
        ctx.resolved["second_order_window"] = float(round(signals.first_to_second_p75))
    else:
        ctx.resolved["second_order_window"] = 90.0
    return ctx


def reads_cycles(cid: str) -> bool:
    """Whether the cohort's rule reads the replenishment cycles (the others can be decided
    before the cycles exist)."""
    return cid == "replenishment_ready"


def primary_codes(
    memberships: dict[str, Membership], precedence: Sequence[str], n: int
) -> tuple[np.ndarray, list[str]]:
    """The primary cohort per customer by precedence as (codes, names): names[0] is '' (none),
    then the cohorts of `precedence` that have memberships. Comparing small integers, not
    strings in an object array (~10 ms per comparison at a million customers)."""
    names = ["", *[c for c in precedence if c in memberships]]
    code = np.zeros(n, dtype=np.int16)
    for i in range(len(names) - 1, 0, -1):  # the first in precedence is written last: it wins
        code[np.asarray(memberships[names[i]].mask, dtype=bool)] = i
    return code, names


def primary(memberships: dict[str, Membership], precedence: Sequence[str], n: int) -> np.ndarray:
    """The primary cohort per customer by precedence; '' when none."""
    code, names = primary_codes(memberships, precedence, n)
    out: np.ndarray = np.asarray(names, dtype=object)[code]
    return out

"""Each rule on hand-built signal frames: the columns a rule reads are written out per case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import cfg, write_store

from juno.classify import run_classification
from juno.cohorts import RULES, make_context, primary, reads_cycles
from juno.config import Config
from juno.cycles import Cycles
from juno.signals import Signals, compute_signals
from juno.sources.generic import read_generic
from juno.validate import validate

DEFAULTS: dict[str, object] = {
    "excluded": False,
    "merged_into": pd.NA,
    "value_window": 0.0,
    "value_lifetime": 0.0,
    "orders_window": 0,
    "orders_lifetime": 0,
    "recency_days": 10.0,
    "tenure_days": 400.0,
    "median_gap_days": np.nan,
    "discount_share_window": 0.0,
    "discount_rate_window": 0.0,
    "email_consent": "subscribed",
}


def ctx_for(rows: dict[str, dict[str, object]], config: Config | None = None, p75: float | None = None):  # type: ignore[no-untyped-def]
    config = config or Config()
    recs = [{"customer_id": cid, **DEFAULTS, **vals} for cid, vals in rows.items()]
    f = pd.DataFrame(recs)
    if "value_score" not in f:
        f["value_score"] = f["value_window"]  # the rules read the score; these cases set it directly
    f["merged_into"] = f["merged_into"].astype("string")
    sig = Signals(
        frame=f,
        as_of=pd.Timestamp("2025-06-30"),
        history_days=720,
        margin_coverage=1.0,
        value_column="net_revenue",
        first_to_second_p75=p75,
        first_to_second_median=None,
        customers_with_second_order=0,
    )
    cycles = Cycles(
        pd.DataFrame(
            columns=["level", "product", "median_days", "pairs", "customers", "replenishable", "reason"]
        ),
        pd.DataFrame(columns=["c", "level", "product", "category", "last_at", "due_at", "purchases"]),
        pd.DataFrame(),
        "none",
    )
    return make_context(sig, cycles, config)


def members(cid: str, ctx) -> list[str]:  # type: ignore[no-untyped-def]
    m = RULES[cid].members(ctx).mask
    return ctx.f["customer_id"][m].tolist()


def ten_customers(**over: dict[str, object]) -> dict[str, dict[str, object]]:
    """c0..c9 with window value 100..1000, 3 orders, active; overrides per customer."""
    rows = {
        f"c{i}": {
            "value_window": 100.0 * (i + 1),
            "value_lifetime": 100.0 * (i + 1),
            "orders_window": 3,
            "orders_lifetime": 3,
        }
        for i in range(10)
    }
    for k, v in over.items():
        rows[k].update(v)
    return rows


def test_vip_is_the_top_share_by_value_with_two_orders_active_not_discount_dependent() -> None:
    ctx = ctx_for(ten_customers())
    assert ctx.resolved["vip_cut"] == 1000.0
    assert members("vip", ctx) == ["c9"]
    assert members("vip", ctx_for(ten_customers(c9={"orders_window": 1}))) == []
    assert members("vip", ctx_for(ten_customers(c9={"recency_days": 121.0}))) == []
    assert members("vip", ctx_for(ten_customers(c9={"discount_share_window": 0.7}))) == []
    assert members("vip", ctx_for(ten_customers(c9={"discount_rate_window": 0.25}))) == []


def test_ties_at_the_vip_cut_are_in() -> None:
    ctx = ctx_for(ten_customers(c8={"value_window": 1000.0}))
    assert members("vip", ctx) == ["c8", "c9"]


def test_vip_is_not_order_count_or_recency() -> None:
    # Many orders and very recent, but low value: not VIP.
    ctx = ctx_for(ten_customers(c0={"orders_window": 40, "recency_days": 0.0}))
    assert "c0" not in members("vip", ctx)


def test_near_vip_is_the_next_band_active_and_not_vip() -> None:
    rows = {f"c{i:02d}": {"value_window": float(i + 1), "orders_window": 3} for i in range(20)}
    ctx = ctx_for(rows)
    # Top 10% of 20 = 2 customers; top 25% = 5: the next band is 3 customers.
    assert members("vip", ctx) == ["c18", "c19"]
    assert members("near_vip", ctx) == ["c15", "c16", "c17"]
    rows["c15"]["recency_days"] = 200.0
    assert members("near_vip", ctx_for(rows)) == ["c16", "c17"]


def test_excluded_customers_are_in_no_cohort_and_not_in_the_base() -> None:
    ctx = ctx_for(ten_customers(c9={"excluded": True}))
    assert members("vip", ctx) == ["c8"]


def test_lapsed_high_value_uses_own_gap_and_floor_and_lost_limit() -> None:
    rows = ten_customers(
        c9={"recency_days": 200.0, "median_gap_days": 60.0},  # 200 > max(120, 90): lapsed
        c8={"recency_days": 100.0, "median_gap_days": 60.0},  # 100 < 120: not yet
        c7={"recency_days": 95.0},  # one order: floor 90 applies
        c6={"recency_days": 600.0},  # lost (> 540)
        c0={"recency_days": 300.0},  # not high value
    )
    ctx = ctx_for(rows)
    assert ctx.resolved["high_value_cut"] == 900.0  # top 20% of 10 = 2 customers
    assert members("lapsed_high_value", ctx) == ["c9"]
    rows["c7"]["value_lifetime"] = 950.0
    assert members("lapsed_high_value", ctx_for(rows)) == ["c7", "c9"]


def test_discount_risk_needs_two_orders_and_share_or_rate() -> None:
    rows = ten_customers(
        c0={"discount_share_window": 0.7},
        c1={"discount_rate_window": 0.25},
        c2={"discount_share_window": 0.69, "discount_rate_window": 0.24},
        c3={"discount_share_window": 1.0, "orders_window": 1},
    )
    assert members("discount_risk", ctx_for(rows)) == ["c0", "c1"]


def test_first_to_second_window_defaults_to_store_p75_then_90() -> None:
    rows = {
        "a": {"orders_lifetime": 1, "recency_days": 6.0},
        "b": {"orders_lifetime": 1, "recency_days": 7.0},
        "c": {"orders_lifetime": 1, "recency_days": 60.0},
        "d": {"orders_lifetime": 1, "recency_days": 90.0},
        "e": {"orders_lifetime": 1, "recency_days": 91.0},
        "f": {"orders_lifetime": 2, "recency_days": 30.0},
        "g": {"orders_lifetime": 0, "recency_days": np.nan},
    }
    assert members("first_to_second", ctx_for(rows)) == ["b", "c", "d"]
    assert members("first_to_second", ctx_for(rows, p75=60.0)) == ["b", "c"]
    assert members("first_to_second", ctx_for(rows, cfg(thresholds={"second_order_window": 91}))) == [
        "b",
        "c",
        "d",
        "e",
    ]


def test_precedence_picks_one_primary_and_is_configurable() -> None:
    rows = ten_customers(c9={"discount_share_window": 0.0})
    ctx = ctx_for(rows)
    ms = {c: RULES[c].members(ctx) for c in ("vip", "near_vip", "discount_risk", "first_to_second")}
    ms["discount_risk"].mask[9] = True  # pretend c9 also meets discount_risk
    prim = primary(ms, Config().precedence, 10)
    assert prim[9] == "vip"
    order = [
        "discount_risk",
        "vip",
        "lapsed_high_value",
        "replenishment_ready",
        "near_vip",
        "first_to_second",
    ]
    assert primary(ms, order, 10)[9] == "discount_risk"


def test_rule_text_shows_actual_thresholds() -> None:
    ctx = ctx_for(ten_customers())
    text = RULES["vip"].rule_text(ctx)
    assert "value score >= 1,000.00 (top 10%" in text and "orders 365d >= 2" in text and "120d" in text
    assert "net revenue 365d x 0.5^(days since last order / 91.25)" in text


# ---- replenishment cycles on a real (tiny) store ----


def _coffee_store(tmp_path: Path, customers: int = 35, cycle: int = 30) -> Path:
    orders = ["order_id,customer_id,ordered_at,revenue"]
    lines = ["order_id,sku,category,quantity,price"]
    start = pd.Timestamp("2025-01-01")
    k = 0
    for c in range(customers):
        for j in range(3):
            t = start + pd.Timedelta(days=c + j * cycle)
            orders.append(f"O{k},C{c},{t:%Y-%m-%d},20")
            lines.append(f"O{k},BEANS,coffee,1,20")
            k += 1
    # A mug buyer: mugs have no repeat pairs, so no cycle.
    orders.append(f"O{k},M1,2025-01-05,30")
    lines.append(f"O{k},MUG,mugs,1,30")
    return write_store(tmp_path, orders="\n".join(orders), order_lines="\n".join(lines))


def test_cycles_need_enough_reorder_pairs(tmp_path: Path) -> None:
    folder = _coffee_store(tmp_path)
    config = cfg(as_of="2025-04-15")
    store = validate(read_generic(folder), config)
    sig = compute_signals(store, config)
    cl = run_classification(store, sig, config)
    tab = cl.cycles.table.set_index(["level", "product"])
    assert tab.loc[("category", "coffee"), "pairs"] == 70
    assert tab.loc[("category", "coffee"), "median_days"] == 30
    assert bool(tab.loc[("category", "coffee"), "replenishable"])
    assert not bool(tab.loc[("category", "mugs"), "replenishable"])
    # Last purchase = 2025-03-02 + c days; due 30 days later, window [as_of - 6d, as_of + 14d].
    m = cl.memberships["replenishment_ready"]
    due = sorted(sig.frame["customer_id"][m.mask])
    last = {f"C{c}": pd.Timestamp("2025-03-02") + pd.Timedelta(days=c) for c in range(35)}
    expected = sorted(
        c
        for c, t in last.items()
        if pd.Timestamp("2025-04-15 23:59:59") - pd.Timedelta(days=6)
        <= t + pd.Timedelta(days=30)
        <= pd.Timestamp("2025-04-15 23:59:59") + pd.Timedelta(days=14)
    )
    assert due == expected and len(due) > 5
    strict = cfg(as_of="2025-04-15", thresholds={"min_reorder_pairs": 71, "min_sku_reorder_pairs": 71})
    cl2 = run_classification(
        validate(read_generic(folder), strict),
        compute_signals(validate(read_generic(folder), strict), strict),
        strict,
    )
    assert not cl2.memberships["replenishment_ready"].mask.any()
    assert cl2.cycles.reason_none is not None and "reorder pairs" in cl2.cycles.reason_none


def test_only_the_replenishment_rule_reads_the_cycles(tmp_path: Path) -> None:
    """Classification decides the other cohorts (and their stability) while the purchase history
    is still being built; it relies on `reads_cycles` naming every rule that reads them."""
    folder = _coffee_store(tmp_path)
    config = cfg(as_of="2025-04-15")
    store = validate(read_generic(folder), config)
    sig = compute_signals(store, config)
    reads: list[str] = []

    def cycles() -> Cycles:
        reads.append("read")
        raise RuntimeError("cycles read")

    ctx = make_context(sig, cycles, config)
    for cid in RULES:
        if reads_cycles(cid):
            with pytest.raises(RuntimeError, match="cycles read"):
                RULES[cid].members(ctx)
        else:
            before = len(reads)
            RULES[cid].members(ctx)
            assert len(reads) == before, cid  # decided without the cycles
    assert reads == ["read"]
    # Started on the signals' thread or not, the classification is the same.
    early = compute_signals(validate(read_generic(folder), config), config, history=True)
    a, b = run_classification(store, sig, config), run_classification(store, early, config)
    for cid in a.memberships:
        assert (a.memberships[cid].mask == b.memberships[cid].mask).all()
        assert (a.memberships[cid].reasons == b.memberships[cid].reasons).all()
    assert [c.model_dump() for c in a.cohort_facts] == [c.model_dump() for c in b.cohort_facts]


def test_no_order_lines_means_no_replenishment_and_says_why(tmp_path: Path) -> None:
    folder = write_store(tmp_path, orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,5\n")
    config = Config()
    store = validate(read_generic(folder), config)
    cl = run_classification(store, compute_signals(store, config), config)
    assert not cl.memberships["replenishment_ready"].mask.any()
    assert cl.cycles.reason_none == "no order lines were provided, so products are unknown"

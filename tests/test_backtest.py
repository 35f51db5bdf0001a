"""juno backtest: no leakage across the cutoff, the metric arithmetic, the ranking capture."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import write_store
from typer.testing import CliRunner

from juno.backtest import backtest, capture, classify_past, render_table
from juno.cli import app
from juno.config import Config
from juno.score import CANDIDATES, value_score, window_value
from juno.sources.generic import read_generic

ROOT = Path(__file__).resolve().parents[1]
CUTOFF = pd.Timestamp("2025-06-30 23:59:59")


# ---------------------------------------------------------------------------------------------
# A store rich enough for every rule: cycles, tickets, subscriptions, consent, duplicates
# ---------------------------------------------------------------------------------------------


def _history(seed: int = 3) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    orders, lines, customers = [], [], []
    n = 0
    for i in range(150):
        cid = f"C{i:03d}"
        start = pd.Timestamp("2024-01-01") + pd.Timedelta(days=int(rng.integers(0, 500)))
        customers.append(
            {
                "customer_id": cid,
                "email": f"p{i}@example.com",
                "created_at": start.isoformat(),
                "email_consent": "subscribed" if i % 4 else "unsubscribed",
            }
        )
        gap = int(rng.choice([21, 30, 45, 120]))
        t = start
        while t < pd.Timestamp("2025-12-31"):
            n += 1
            oid = f"O{n:05d}"
            cat = "coffee" if gap < 60 else "apparel"
            rev = float(rng.choice([18, 25, 40, 90, 300]))
            disc = 5.0 if i % 7 == 0 else 0.0
            orders.append(
                {
                    "order_id": oid,
                    "customer_id": cid,
                    "ordered_at": t.isoformat(),
                    "revenue": f"{rev:.2f}",
                    "discount": f"{disc:.2f}",
                    "refunded": "0",
                    "cancelled_at": "",
                }
            )
            lines.append(
                {"order_id": oid, "sku": cat[:3].upper(), "category": cat, "quantity": "1", "price": rev}
            )
            t = t + pd.Timedelta(days=gap + int(rng.integers(-3, 4)))
            if rng.random() < 0.08:  # some customers stop buying
                break
    tickets = [
        {"customer_id": "C001", "opened_at": "2025-06-25", "closed_at": "2025-06-26", "status": "closed"},
        {"customer_id": "C002", "opened_at": "2025-06-20", "closed_at": "", "status": "open"},
    ]
    subs = [{"customer_id": "C003", "status": "active", "category": "coffee", "started_at": "2024-06-01"}]
    return {
        "orders": pd.DataFrame(orders),
        "order_lines": pd.DataFrame(lines),
        "customers": pd.DataFrame(customers),
        "support_tickets": pd.DataFrame(tickets),
        "subscriptions": pd.DataFrame(subs),
    }


def _write(folder: Path, tables: dict[str, pd.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.to_csv(folder / f"{name}.csv", index=False)
    return folder


def _perturb_future(t: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Change everything after the cutoff and nothing before it (as it stood at the cutoff)."""
    t = {k: v.copy() for k, v in t.items()}
    o = t["orders"]
    after = pd.to_datetime(o["ordered_at"]) > CUTOFF
    assert after.sum() > 50 and (~after).sum() > 50
    o.loc[after, "revenue"] = "9999.00"
    o.loc[after, "discount"] = "500.00"
    # drop a third of the future orders and their lines
    gone = o.loc[after, "order_id"].iloc[::3]
    o = o[~o["order_id"].isin(gone)]
    lines = t["order_lines"]
    lines = lines[~lines["order_id"].isin(gone)].copy()
    # move the future's categories around
    future_ids = o.loc[pd.to_datetime(o["ordered_at"]) > CUTOFF, "order_id"]
    lines.loc[lines["order_id"].isin(future_ids), "category"] = "skincare"
    # a cancellation and a refund that happened after the cutoff on a pre-cutoff order
    before_idx = o.index[pd.to_datetime(o["ordered_at"]) <= CUTOFF][5]
    o.loc[before_idx, "cancelled_at"] = "2025-08-01T10:00:00"
    # new orders after the cutoff: existing customers and a brand-new one
    new = pd.DataFrame(
        [
            {
                "order_id": "N1",
                "customer_id": "C000",
                "ordered_at": "2025-07-01T00:00:01",
                "revenue": "5000",
                "discount": "0",
                "refunded": "0",
                "cancelled_at": "",
            },
            {
                "order_id": "N2",
                "customer_id": "Z999",
                "ordered_at": "2025-09-01",
                "revenue": "70",
                "discount": "0",
                "refunded": "0",
                "cancelled_at": "",
            },
        ]
    )
    o = pd.concat([o, new], ignore_index=True)
    nl = pd.DataFrame(
        [{"order_id": "N1", "sku": "COF", "category": "coffee", "quantity": "1", "price": 5000}]
    )
    t["order_lines"] = pd.concat([lines, nl], ignore_index=True)
    t["orders"] = o
    # a ticket closed after the cutoff (open at the cutoff in both), a ticket opened after it
    tk = t["support_tickets"]
    tk.loc[tk["customer_id"] == "C002", ["closed_at", "status"]] = ["2025-07-15", "closed"]
    t["support_tickets"] = pd.concat(
        [
            tk,
            pd.DataFrame(
                [{"customer_id": "C004", "opened_at": "2025-07-02", "closed_at": "", "status": "open"}]
            ),
        ],
        ignore_index=True,
    )
    # a subscription started after the cutoff; a customer record created after it, duplicating C005
    t["subscriptions"] = pd.concat(
        [
            t["subscriptions"],
            pd.DataFrame(
                [
                    {
                        "customer_id": "C006",
                        "status": "active",
                        "category": "coffee",
                        "started_at": "2025-07-10",
                    }
                ]
            ),
        ],
        ignore_index=True,
    )
    t["customers"] = pd.concat(
        [
            t["customers"],
            pd.DataFrame(
                [
                    {
                        "customer_id": "Z998",
                        "email": "p5@example.com",
                        "created_at": "2025-08-01T00:00:00",
                        "email_consent": "subscribed",
                    }
                ]
            ),
        ],
        ignore_index=True,
    )
    return t


def test_nothing_after_the_cutoff_leaks_into_the_classification(tmp_path: Path) -> None:
    tables = _history()
    a = classify_past(read_generic(_write(tmp_path / "a", tables)), Config(), CUTOFF)
    b = classify_past(read_generic(_write(tmp_path / "b", _perturb_future(tables))), Config(), CUTOFF)
    # The store is rich enough that every rule is exercised.
    sizes = {c.cohort: c.size for c in a.classification.cohort_facts}
    assert sizes["replenishment_ready"] > 0 and sizes["vip"] > 0 and sizes["first_to_second"] >= 0
    assert bool(a.classification.cycles.table["replenishable"].any())
    pd.testing.assert_frame_equal(a.customers, b.customers)
    assert a.classification.ctx.resolved == b.classification.ctx.resolved
    pd.testing.assert_frame_equal(a.classification.cycles.table, b.classification.cycles.table)
    pd.testing.assert_frame_equal(a.signals.frame, b.signals.frame)
    # Post-cutoff rows are dropped before validation: they are not "rejected rows" of the past.
    assert len(a.store.rejected) == len(b.store.rejected) == 0
    assert a.store.as_of == b.store.as_of == CUTOFF


def test_the_leakage_test_would_see_a_change_before_the_cutoff(tmp_path: Path) -> None:
    tables = _history()
    changed = {k: v.copy() for k, v in tables.items()}
    o = changed["orders"]
    before = o.index[pd.to_datetime(o["ordered_at"]) <= CUTOFF]
    o.loc[before[::4], "revenue"] = "9999.00"
    a = classify_past(read_generic(_write(tmp_path / "a", tables)), Config(), CUTOFF)
    b = classify_past(read_generic(_write(tmp_path / "b", changed)), Config(), CUTOFF)
    assert not a.customers.equals(b.customers)


# ---------------------------------------------------------------------------------------------
# Metric arithmetic on a tiny hand-built history
# ---------------------------------------------------------------------------------------------

ORDERS = """
order_id,customer_id,ordered_at,revenue,discount,refunded,cancelled_at,discount_code
A1,A,2025-01-10,100,0,0,,
A2,A,2025-05-01,100,0,0,,
A3,A,2025-07-10,50,0,0,,
A4,A,2025-08-01,60,0,10,,
A5,A,2025-08-05T12:00:00,30,0,0,2025-08-06,
B1,B,2025-06-01,40,0,0,,
B2,B,2025-07-20,20,5,0,,SAVE5
C1,C,2025-03-01,20,0,0,,
D1,D,2025-08-01,70,0,0,,
"""


def _by_cohort(result: Any) -> dict[str, dict[str, Any]]:
    return {c["cohort"]: c for c in result.cohorts}


def test_metrics_on_a_hand_built_history(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", orders=ORDERS)
    r = backtest(store, "2025-06-30")
    # Horizon to the last order (2025-08-05 12:00): 35.5 days, rounded up.
    assert r.horizon_days == 36
    # Base: A, B, C (D only ordered after the cutoff). Future net revenue: A 50 + (60-10) + 0
    # (cancelled) = 100, B 20, C 0 -> 120 over 3 customers.
    assert r.customers == 3
    assert r.base["future_buy_rate"] == pytest.approx(2 / 3, abs=1e-4)
    assert r.base["future_revenue_per_customer"] == 40.0
    assert r.base["future_revenue"] == 120.0
    assert r.base["future_orders"] == 3  # the cancelled order does not count
    assert r.base["future_revenue_outside_base"] == 70.0  # D, a new customer
    c = _by_cohort(r)
    # VIP: top 10% by value (A, 200 over 2 orders, active).
    assert c["vip"]["size"] == 1
    assert c["vip"]["future_revenue_per_customer"] == 100.0
    assert c["vip"]["future_revenue_share"] == pytest.approx(100 / 120, abs=1e-4)
    assert c["vip"]["revenue_lift"] == 2.5
    # first_to_second: B (one order 29 days ago); C's order is 121 days old (> 90).
    f2s = c["first_to_second"]
    assert (f2s["size"], f2s["future_buy_rate"], f2s["future_revenue_per_customer"]) == (1, 1.0, 20.0)
    assert f2s["revenue_lift"] == 0.5
    assert f2s["check"] == {
        "metric": "second_order_rate",
        "value": 1.0,
        "versus": "other one-order customers",
        "versus_size": 1,
        "versus_value": 0.0,
    }
    # discount_risk has no members: no check, and the notes say so.
    assert c["discount_risk"]["size"] == 0 and "check" not in c["discount_risk"]
    assert any("no members" in n and "discount_risk" in n for n in r.notes)
    # A shorter horizon drops A's August orders: A 50, B 20.
    short = backtest(store, "2025-06-30", horizon_days=25)
    assert short.base["future_revenue"] == 70.0
    assert "vip" in render_table(r)


REPL_ORDERS = """
order_id,customer_id,ordered_at,revenue
P1,P,2025-04-01,20
P2,P,2025-05-01,20
P3,P,2025-06-01,20
P4,P,2025-07-05,20
Q1,Q,2025-04-15,20
Q2,Q,2025-05-15,20
Q3,Q,2025-06-25,20
Q4,Q,2025-07-30,20
R1,R,2025-01-01,20
R2,R,2025-02-01,20
R3,R,2025-07-10,20
"""


def test_replenishment_is_checked_against_buyers_who_were_not_due(tmp_path: Path) -> None:
    ids = [line.split(",")[0] for line in REPL_ORDERS.strip().splitlines()[1:]]
    lines = "order_id,sku,category,quantity,price\n" + "\n".join(f"{i},CF,coffee,1,20" for i in ids)
    store = write_store(tmp_path / "s", orders=REPL_ORDERS, order_lines=lines)
    config = Config.model_validate({"thresholds": {"min_reorder_pairs": 2, "min_sku_reorder_pairs": 100}})
    r = backtest(store, "2025-06-30", config=config)
    # Gaps 30, 31, 30, 41, 31: a 31-day coffee cycle. P (last 06-01) is due on 07-02; Q (06-25) and
    # R (02-01, long overdue) are not. The window is 14 + 0.2 x 31 = 20.2 days after the cutoff:
    # P buys on 07-05 (in), R on 07-10 (in), Q on 07-30 (out).
    c = _by_cohort(r)["replenishment_ready"]
    assert c["size"] == 1
    assert c["check"]["value"] == 1.0
    assert (c["check"]["versus_size"], c["check"]["versus_value"]) == (2, 0.5)


def test_cutoff_outside_the_history_is_a_user_error(tmp_path: Path) -> None:
    store = write_store(tmp_path / "s", orders=ORDERS)
    from juno.errors import ConfigError

    with pytest.raises(ConfigError):
        backtest(store, "2026-01-01")


# ---------------------------------------------------------------------------------------------
# Ranking capture
# ---------------------------------------------------------------------------------------------


def test_capture_is_the_future_revenue_share_of_the_top_customers() -> None:
    score = np.array([3.0, 2.0, 1.0, 0.0])
    future = np.array([0.0, 10.0, 30.0, 60.0])
    assert capture(score, future, 0.25) == 0.0
    assert capture(score, future, 0.5) == pytest.approx(0.1)
    assert capture(-score, future, 0.25) == pytest.approx(0.6)
    # Ties keep input (customer id) order; a share always takes at least one customer.
    assert capture(np.zeros(4), future, 0.01) == 0.0
    assert capture(score, np.zeros(4), 0.5) == 0.0


def _frame(value: list[float], last: list[str], orders: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "value_window": value,
            "value_lifetime": value,
            "orders_window": orders,
            "orders_lifetime": orders,
            "first_order_at": pd.to_datetime(["2024-01-01"] * len(value)),
            "last_order_at": pd.to_datetime(last),
        }
    )


def test_value_score_ranks_a_recent_buyer_above_an_equal_spender_who_went_quiet() -> None:
    as_of = pd.Timestamp("2025-06-30")
    f = _frame([500, 500, 100, 0], ["2025-06-20", "2024-09-01", "2025-06-25", "NaT"], [2, 2, 1, 0])
    s = value_score(f, 365, as_of)
    assert s[0] > s[1] and s[3] == 0.0
    assert np.array_equal(s, value_score(f, 365, as_of))  # deterministic
    # The recent buyer is the one who buys again: the score captures it, the baseline ties.
    future = np.array([300.0, 0.0, 50.0, 0.0])
    assert capture(s, future, 0.25) == pytest.approx(300 / 350)
    assert capture(window_value(f, 365, as_of), future[::-1], 0.25) == 0.0
    for fn in CANDIDATES.values():
        out = fn(f, 365, as_of)
        assert out.shape == (4,) and np.isfinite(out).all() and out[3] == 0.0


# ---------------------------------------------------------------------------------------------
# JSON output and its schema
# ---------------------------------------------------------------------------------------------


def _validate(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """The subset of JSON Schema that schemas/backtest.schema.json uses."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        py: dict[str, type | tuple[type, ...]] = {
            "object": dict,
            "array": list,
            "string": str,
            "integer": int,
            "number": (int, float),
            "null": type(None),
            "boolean": bool,
        }
        assert any(
            isinstance(value, py[t]) and not (t in ("integer", "number") and isinstance(value, bool))
            for t in names
        ), f"{path}: {value!r} is not {names}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in enum"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            assert value >= schema["minimum"], path
        if "maximum" in schema:
            assert value <= schema["maximum"], path
        if "exclusiveMinimum" in schema:
            assert value > schema["exclusiveMinimum"], path
    if isinstance(value, str) and "pattern" in schema:
        assert re.search(schema["pattern"], value), path
    if isinstance(value, dict):
        for key in schema.get("required", []):
            assert key in value, f"{path}: missing {key}"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _validate(value[key], sub, f"{path}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _validate(item, schema["items"], f"{path}[{i}]")


def test_json_output_matches_the_schema(tmp_path: Path) -> None:
    store = _write(tmp_path / "s", _history())
    res = CliRunner().invoke(app, ["backtest", str(store), "--cutoff", "2025-06-30", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    schema = json.loads((ROOT / "schemas" / "backtest.schema.json").read_text(encoding="utf-8"))
    _validate(out, schema)
    assert out["cutoff"] == "2025-06-30"
    assert [r["top_share"] for r in out["ranking"]] == [0.05, 0.1, 0.2]
    with pytest.raises(AssertionError):
        _validate({**out, "ranking": [{"top_share": 0.1}]}, schema)


def test_example_store_end_to_end() -> None:
    store = ROOT / "examples" / "store"
    if not (store / "orders.csv").exists():
        pytest.skip("examples/store not generated yet")
    res = CliRunner().invoke(app, ["backtest", str(store), "--cutoff", "2026-05-31"])
    assert res.exit_code == 0, res.output
    assert "Value ranking" in res.output and "vip" in res.output

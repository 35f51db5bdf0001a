"""Segment logic: the SQL returns exactly each cohort's members in DuckDB; Shopify queries and tag imports."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import juno
from juno.config import Config, Population, Thresholds
from juno.pipeline import RunResult
from juno.segment_sql import SQL_COLUMNS
from juno.segments import build

duckdb = pytest.importorskip("duckdb")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "store"
TABLES = ("orders", "order_lines", "customers", "support_tickets", "subscriptions")


def tiny_store(folder: Path, n: int = 400, seed: int = 3, cost_on: str | None = None) -> Path:
    """A random but fixed store with cancellations, refunds, discounts, tags and repeat products."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"C{i:04d}" for i in range(n)]
    tags = rng.choice(["", "", "", "newsletter", "Test", "wholesale, staff ", "vip"], n)
    pd.DataFrame(
        {
            "customer_id": ids,
            "email": [f"p{i}@example.com" if i % 17 else "" for i in range(n)],
            "phone": [f"+1 555 01{i % 100:02d}" if i % 3 == 0 else "" for i in range(n)],
            "first_name": ["=cmd" if i == 5 else f"N{i}" for i in range(n)],
            "email_consent": rng.choice(["subscribed", "unsubscribed"], n),
            "tags": tags,
            "country": rng.choice(["US", "ca", " GB", ""], n),
        }
    ).to_csv(folder / "customers.csv", index=False)
    per = rng.integers(0, 9, n)
    cust = np.repeat(np.arange(n), per)
    m = len(cust)
    end = pd.Timestamp("2026-06-30 18:00:00")
    ordered = end - pd.to_timedelta(rng.uniform(0, 700, m), unit="D").round("s")
    revenue = rng.choice([19.0, 25.5, 40.0, 80.0, 150.0, 320.0], m)
    discount = np.where(rng.random(m) < 0.3, np.round(revenue * rng.choice([0.1, 0.3]), 2), 0.0)
    refunded = np.where(rng.random(m) < 0.05, revenue, np.where(rng.random(m) < 0.05, 5.0, 0.0))
    cancelled = np.where(rng.random(m) < 0.04, "2026-01-01T00:00:00Z", "")
    oid = [f"O{i:05d}" for i in range(m)]
    unit_cost = np.where(rng.random(m) < 0.1, np.nan, np.round(revenue * rng.uniform(0.2, 0.6, m), 2))
    orders = pd.DataFrame(
        {
            "order_id": oid,
            "customer_id": np.array(ids)[cust],
            "ordered_at": ordered.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "revenue": revenue,
            "discount": discount,
            "refunded": refunded,
            "cancelled_at": cancelled,
            "discount_code": np.where(rng.random(m) < 0.1, "WELCOME", ""),
        }
    )
    if cost_on == "orders":
        orders["cost"] = unit_cost
    orders.to_csv(folder / "orders.csv", index=False)
    cats = rng.choice(["coffee", "Coffee ", "mugs", "pet food"], m)
    lines = pd.DataFrame(
        {
            "order_id": oid,
            "sku": np.char.add("SKU-", rng.integers(0, 4, m).astype(str)),
            "category": cats,
            "quantity": 1,
            "price": revenue,
        }
    )
    if cost_on == "lines":
        lines["cost"] = unit_cost
    lines.to_csv(folder / "order_lines.csv", index=False)
    return folder


def load_duckdb(store: Path) -> object:
    con = duckdb.connect()
    for table in TABLES:
        path = store / f"{table}.csv"
        if not path.exists():
            continue
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv_auto('{path.as_posix()}')")
        have = {row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()}
        for col in SQL_COLUMNS.get(table, ()):
            if col not in have:  # optional contract columns absent from the extract are NULL
                con.execute(f"ALTER TABLE {table} ADD COLUMN {col} VARCHAR")
    return con


def assert_parity(result: RunResult, store: Path) -> dict[str, int]:
    assert result.out is not None
    cust = pd.read_csv(result.out / "customers.csv", dtype=str, keep_default_na=False)
    member_lists = cust["cohorts"].str.split(";")
    con = load_duckdb(store)
    sizes = {}
    for seg in build(result):
        got = [row[0] for row in con.execute(seg.sql).fetchall()]  # type: ignore[attr-defined]
        want = set(cust.loc[member_lists.apply(lambda cs, c=seg.cohort: c in cs), "customer_id"])
        assert len(got) == len(set(got)), f"{seg.cohort}: duplicate ids"
        assert set(got) == want, (
            f"{seg.cohort}: missing {sorted(want - set(got))[:5]}, extra {sorted(set(got) - want)[:5]}"
        )
        sizes[seg.cohort] = len(want)
    return sizes


def test_sql_parity_tiny_store(tmp_path: Path) -> None:
    store = tiny_store(tmp_path / "store")
    # Random purchase days have no regular rhythm: let any 5 reorder pairs make a cycle here.
    loose = Thresholds(min_reorder_pairs=5, min_sku_reorder_pairs=5, max_cycle_spread=10)
    config = Config(thresholds=loose)
    result = juno.run(store, tmp_path / "run", config=config, narrative="template")
    sizes = assert_parity(result, store)
    assert sum(sizes.values()) > 0
    assert sizes.get("replenishment_ready", 0) > 0


def test_sql_parity_with_as_of_and_countries(tmp_path: Path) -> None:
    store = tiny_store(tmp_path / "store", seed=11)
    config = Config(
        as_of=date(2026, 3, 1),
        window_days=180,
        population=Population(exclude_tags=["test", "vip"], countries=["us", "CA"]),
        thresholds=Thresholds(
            min_reorder_pairs=5, min_sku_reorder_pairs=5, max_cycle_spread=10, vip_share=0.2
        ),
    )
    result = juno.run(store, tmp_path / "run", config=config, narrative="template")
    sizes = assert_parity(result, store)
    assert sum(sizes.values()) > 0


@pytest.mark.parametrize("cost_on", ["orders", "lines"])
def test_sql_parity_margin(tmp_path: Path, cost_on: str) -> None:
    store = tiny_store(tmp_path / "store", seed=21, cost_on=cost_on)
    loose = Thresholds(min_reorder_pairs=5, min_sku_reorder_pairs=5, max_cycle_spread=10)
    config = Config(value="margin", thresholds=loose)
    result = juno.run(store, tmp_path / "run", config=config, narrative="template")
    assert result.signals is not None and result.signals.value_column == "margin"
    sizes = assert_parity(result, store)
    assert sizes["vip"] > 0 and sizes["lapsed_high_value"] > 0


@pytest.mark.skipif(not (EXAMPLE / "orders.csv").exists(), reason="examples/store not generated")
def test_sql_parity_example_store(tmp_path: Path) -> None:
    result = juno.run(EXAMPLE, tmp_path / "run", narrative="template")
    sizes = assert_parity(result, EXAMPLE)
    assert all(v > 0 for v in sizes.values()), sizes


def test_segment_files(tmp_path: Path) -> None:
    store = tiny_store(tmp_path / "store")
    result = juno.run(store, tmp_path / "run", narrative="template")
    run = tmp_path / "run"
    doc = json.loads((run / "segments.json").read_text())
    assert [d["cohort"] for d in doc] == list(result.config.cohorts)
    for d in doc:
        assert {"cohort", "shopify_query", "shopify_exact", "sql"} <= set(d)
        assert (run / "segments" / f"{d['cohort']}.sql").read_text() == d["sql"]
        assert d["shopify_query"] in (run / "segments" / f"{d['cohort']}.shopify.txt").read_text()
        assert "customer_tags NOT CONTAINS 'test'" in d["shopify_query"]
        assert "inf" not in d["shopify_query"] and "nan" not in d["shopify_query"]
        if not d["shopify_exact"]:
            tags = pd.read_csv(run / d["shopify_tag_import"], dtype=str, keep_default_na=False)
            assert {"Email", "Tags"} <= set(tags.columns)
            assert tags["Tags"].str.contains(d["shopify_tag"], regex=False).all()
            assert not tags["First Name"].str.startswith("=").any()  # formula escaped
    vip = next(d for d in doc if d["cohort"] == "vip")
    assert not vip["shopify_exact"]
    assert "amount_spent >= " in vip["shopify_query"] and "last_order_date >= -120d" in vip["shopify_query"]
    first = next(d for d in doc if d["cohort"] == "first_to_second")
    assert first["shopify_exact"] and "number_of_orders = 1" in first["shopify_query"]

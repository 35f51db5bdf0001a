"""Tiny stores written inline, so each case is readable in its test."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from juno.config import Config, config_from_dict
from juno.signals import Signals, compute_signals
from juno.sources.generic import read_generic
from juno.validate import Store, validate


def write_store(folder: Path, **tables: str) -> Path:
    """write_store(tmp, orders="order_id,customer_id,...\\n...") -> folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (folder / f"{name}.csv").write_text(text.strip() + "\n", encoding="utf-8")
    return folder


def load(folder: Path, config: Config | None = None) -> Store:
    return validate(read_generic(folder), config or Config())


def signals_of(folder: Path, config: Config | None = None) -> Signals:
    cfg = config or Config()
    return compute_signals(load(folder, cfg), cfg)


def cfg(**kw: object) -> Config:
    return config_from_dict(dict(kw))


def row(frame: pd.DataFrame, customer_id: str) -> pd.Series:
    return frame.set_index("customer_id").loc[customer_id]


def random_store(
    folder: Path,
    n: int = 300,
    seed: int = 8,
    max_orders: int = 9,
    staff_tags: bool = False,
    category: str | None = None,
) -> Path:
    """A seeded store of n customers with 0..max_orders-1 orders each over 600 days to 2026-06-30.

    `staff_tags` tags about a third of the customers `staff`; `category` adds one order line per
    order with that category (e.g. a hostile catalogue string).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"C{i:04d}" for i in range(n)]
    customers: dict[str, object] = {
        "customer_id": ids,
        "email": [f"p{i}@example.com" for i in range(n)],
        "email_consent": rng.choice(["subscribed", "unsubscribed"], n),
    }
    if staff_tags:
        customers["tags"] = rng.choice(["", "", "staff"], n)
    pd.DataFrame(customers).to_csv(folder / "customers.csv", index=False)
    per = rng.integers(0, max_orders, n)
    cust = np.repeat(np.arange(n), per)
    m = len(cust)
    end = pd.Timestamp("2026-06-30 18:00:00")
    ordered = end - pd.to_timedelta(rng.uniform(0, 600, m), unit="D").round("s")
    revenue = rng.choice([19.0, 40.0, 80.0, 150.0, 320.0], m)
    oid = [f"O{i:05d}" for i in range(m)]
    pd.DataFrame(
        {
            "order_id": oid,
            "customer_id": np.array(ids)[cust],
            "ordered_at": ordered.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "revenue": revenue,
            "discount": np.where(rng.random(m) < 0.3, 10.0, 0.0),
        }
    ).to_csv(folder / "orders.csv", index=False)
    if category is not None:
        pd.DataFrame({"order_id": oid, "sku": "S1", "category": category, "quantity": 1, "price": revenue}).to_csv(
            folder / "order_lines.csv", index=False
        )
    return folder

from pathlib import Path

import pandas as pd
import pytest
from helpers import cfg, load, row, signals_of, write_store

from juno.config import Duplicates
from juno.identity import duplicate_groups, normalise_email, normalise_phone


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return write_store(
        tmp_path,
        orders="""
order_id,customer_id,ordered_at,revenue,discount,refunded,cancelled_at,cost,discount_code
O1,A,2024-01-01,100,0,0,,40,
O2,A,2025-01-01,100,25,0,,40,SAVE25
O3,A,2025-01-31,100,0,20,,40,
O4,A,2025-03-02,50,0,0,2025-03-03,20,
O5,B,2025-03-01,80,0,80,,,
O6,C,2025-04-01,0,0,0,,0,
""",
        order_lines="""
order_id,sku,category,quantity,price
O1,K1,Coffee,2,50
O2,K2,Mugs,1,125
O3,K1,Coffee,1,100
""",
        customers="""
customer_id,email,phone,email_consent,sms_consent,email_suppressed,tags
A,a@example.com,+1 415 555 0101,subscribed,subscribed,false,vip
B,b@example.com,,subscribed,,true,
C,,4155550101,unsubscribed,,false,"Staff, other"
D,d@example.com,,never_subscribed,,false,
""",
        support_tickets="customer_id,opened_at,status,severity\nA,2025-03-20,closed,high\nB,2024-01-01,open,low\n",
        subscriptions="customer_id,status,category\nA,paused,coffee\nA,cancelled,coffee\n",
    )


def test_orders_revenue_margin_and_windows(store: Path) -> None:
    f = signals_of(store).frame
    a = row(f, "A")
    # O4 cancelled: zero. O3 partly refunded: 80. Window = 365 days before 2025-04-01.
    assert a["orders_lifetime"] == 3 and a["orders_window"] == 2 and a["orders_all_lifetime"] == 4
    assert a["net_revenue_lifetime"] == 280 and a["net_revenue_window"] == 180
    # Margin: kept revenue minus cost in proportion to what was kept (80/100 of 40 for O3).
    assert a["margin_lifetime"] == pytest.approx(60 + 60 + 80 - 32)
    assert a["first_order_at"] == pd.Timestamp("2024-01-01")
    assert a["last_order_at"] == pd.Timestamp("2025-01-31")
    assert a["recency_days"] == 60 and a["tenure_days"] == 456
    assert a["median_gap_days"] == pytest.approx((366 + 30) / 2)


def test_discount_share_rate_and_refund_rate(store: Path) -> None:
    a = row(signals_of(store).frame, "A")
    assert a["discount_share_window"] == 0.5
    assert a["discount_rate_window"] == pytest.approx(25 / (100 + 25 + 80))  # gross = net + discount
    assert a["refund_rate"] == 0.25


def test_only_refunded_orders_and_zero_value_orders(store: Path) -> None:
    f = signals_of(store).frame
    b, c = row(f, "B"), row(f, "C")
    assert b["orders_lifetime"] == 0 and b["orders_all_lifetime"] == 1 and b["net_revenue_lifetime"] == 0
    assert pd.isna(b["last_order_at"])
    assert c["orders_lifetime"] == 1 and c["net_revenue_lifetime"] == 0


def test_categories_subscription_support_consent(store: Path) -> None:
    f = signals_of(store).frame
    a, b, d = row(f, "A"), row(f, "B"), row(f, "D")
    assert a["top_category"] == "coffee" and a["categories"] == "coffee;mugs"
    assert a["subscription_status"] == "paused" and d["subscription_status"] == "none"
    assert a["tickets_window"] == 1 and a["open_tickets"] == 0 and a["recent_high_severity"]
    assert b["open_tickets"] == 1 and b["tickets_window"] == 0
    assert a["email_ok"] and a["sms_ok"]
    assert not b["email_ok"]  # suppressed
    assert not d["email_ok"] and d["orders_lifetime"] == 0


def test_population_filter_and_duplicates(store: Path) -> None:
    f = signals_of(store).frame
    assert row(f, "C")["excluded"] and "tag" in row(f, "C")["excluded_reason"]
    assert not row(f, "A")["excluded"]
    assert row(f, "A")["duplicate_group"] == row(f, "C")["duplicate_group"] == "A"
    f2 = signals_of(store, cfg(population={"exclude_tags": [], "countries": ["GB"]})).frame
    assert f2["excluded"].all()


def test_margin_coverage(store: Path) -> None:
    s = signals_of(store)
    assert s.margin_coverage == 1.0
    assert s.history_days == 456


def test_email_and_phone_normalisation() -> None:
    d = Duplicates()
    e = normalise_email(pd.Series(["Jane.Doe+shop@Gmail.com ", "jane.doe@example.com", "nope", None]), d)
    assert e.tolist()[:3] == ["janedoe@gmail.com", "jane.doe@example.com", None] or pd.isna(e.iloc[2])
    p = normalise_phone(pd.Series(["+1 (415) 555-0101", "415.555.0101", "0044 20 7946 0000", "12"]), d)
    assert p.tolist()[:3] == ["+14155550101", "+14155550101", "+442079460000"]
    assert pd.isna(p.iloc[3])
    strict = Duplicates(ignore_plus_tags=False, ignore_gmail_dots=False)
    assert normalise_email(pd.Series(["j.a+x@gmail.com"]), strict).tolist() == ["j.a+x@gmail.com"]


def test_duplicate_groups_are_transitive() -> None:
    c = pd.DataFrame(
        {
            "email": ["a@x.com", "A@x.com", "b@x.com", "z@x.com"],
            "phone": [None, "4155550101", "+14155550101", None],
        }
    )
    assert duplicate_groups(c, Duplicates()).tolist() == [0, 0, 0, 3]


@pytest.mark.parametrize("in_time_order", [True, False])
def test_window_sums_are_the_masked_sums_bit_for_bit(tmp_path: Path, in_time_order: bool) -> None:
    """Orders in time order have their window sums taken over the table's last rows only: the
    same sums, bit for bit, as summing every order with those outside the window as zero (cent
    values, whose sums depend on the order they are added in)."""
    import numpy as np

    rng = np.random.default_rng(11)
    m, n = 4000, 150
    at = pd.Timestamp("2026-06-30") - pd.to_timedelta(rng.uniform(0, 800, m), unit="D").round("s")
    at = at.sort_values() if in_time_order else at
    revenue = rng.uniform(1, 300, m).round(2)
    orders = pd.DataFrame(
        {
            "order_id": [f"O{i}" for i in range(m)],
            "customer_id": [f"C{c}" for c in rng.integers(0, n, m)],
            "ordered_at": at.strftime("%Y-%m-%dT%H:%M:%S"),
            "revenue": revenue,
            "discount": np.where(rng.random(m) < 0.4, rng.uniform(0, 30, m).round(2), 0.0),
            "refunded": np.where(rng.random(m) < 0.1, (revenue * 0.3).round(2), 0.0),
        }
    )
    orders.to_csv(tmp_path / "orders.csv", index=False)
    store = load(tmp_path)
    f = signals_of(tmp_path).frame
    o = store.orders
    code = store.order_customer_rows()
    window = (o["ordered_at"] > store.as_of - pd.Timedelta(days=365)).to_numpy()
    cw = window & o["counts"].to_numpy(bool)
    net, disc = o["net_revenue"].to_numpy(float), o["discount"].to_numpy(float)

    def masked(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.bincount(code, weights=np.where(mask, values, 0), minlength=len(f))

    gross = masked(net + disc, cw)
    rate = np.divide(masked(disc, cw), gross, out=np.zeros(len(f)), where=gross > 0)
    assert 0 < window.sum() < m
    assert np.array_equal(f["net_revenue_window"].to_numpy(float), masked(net, window))
    assert np.array_equal(f["discount_rate_window"].to_numpy(float), rate)

"""The value score that ranks customers for VIP / near-VIP, and the candidates it was chosen from.

Every score reads the signals frame (juno.signals) and returns one float per row, higher is more
valuable; customers with no counted order score 0. The candidates stay here so that
`juno backtest` can show, on any store, how each would have ranked the future (docs/backtest.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

ScoreFn = Callable[[pd.DataFrame, int, pd.Timestamp], np.ndarray]


def _num(frame: pd.DataFrame, col: str) -> np.ndarray:
    return np.asarray(np.nan_to_num(frame[col].to_numpy(float), nan=0.0), dtype=float)


def _recency(frame: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    """Days since the last counted order (window length + 1 for customers without one)."""
    # Whole days, as the signals' recency_days: the same number SQL and Shopify filters use.
    days = np.floor(((as_of - pd.to_datetime(frame["last_order_at"])) / pd.Timedelta(days=1)).to_numpy(float))
    return np.where(np.isnan(days), np.inf, np.maximum(days, 0.0))


def _tenure(frame: pd.DataFrame, as_of: pd.Timestamp) -> np.ndarray:
    days = ((as_of - pd.to_datetime(frame["first_order_at"])) / pd.Timedelta(days=1)).to_numpy(float)
    return np.where(np.isnan(days), 0.0, np.maximum(days, 0.0))


def window_value(frame: pd.DataFrame, window_days: int, as_of: pd.Timestamp) -> np.ndarray:
    """The naive baseline: value (net revenue or margin) in the review window."""
    return np.asarray(np.maximum(_num(frame, "value_window"), 0.0), dtype=float)


def recency_decay(frame: pd.DataFrame, window_days: int, as_of: pd.Timestamp) -> np.ndarray:
    """Window value halved for every quarter-window since the last order."""
    half_life = max(window_days / 4.0, 1.0)
    decay = np.power(0.5, np.minimum(_recency(frame, as_of), 10 * window_days) / half_life)
    return np.asarray(window_value(frame, window_days, as_of) * decay, dtype=float)


def value_x_frequency(frame: pd.DataFrame, window_days: int, as_of: pd.Timestamp) -> np.ndarray:
    """Window value times the number of orders in the window."""
    return np.asarray(window_value(frame, window_days, as_of) * _num(frame, "orders_window"), dtype=float)


def lifetime_per_month(frame: pd.DataFrame, window_days: int, as_of: pd.Timestamp) -> np.ndarray:
    """Lifetime value per month since the first order (at least one month)."""
    months = np.maximum(_tenure(frame, as_of) / 30.4, 1.0)
    return np.asarray(np.maximum(_num(frame, "value_lifetime"), 0.0) / months, dtype=float)


def expected_value(frame: pd.DataFrame, window_days: int, as_of: pd.Timestamp) -> np.ndarray:
    """Expected value over the next half window: order rate x P(still active) x average order value.

    A BG/NBD-free heuristic. The order rate is the customer's lifetime orders per day of tenure,
    shrunk toward the store's rate (one pseudo-order spread over the store's median tenure) so a
    single recent order does not read as a daily habit. "Still active" is the chance that an
    active customer buying at that rate would have stayed silent this long, exp(-rate x recency),
    mixed 50/50 with the prior that a customer has quietly left.
    """
    orders = _num(frame, "orders_lifetime")
    value = np.maximum(_num(frame, "value_lifetime"), 0.0)
    tenure = _tenure(frame, as_of)
    recency = _recency(frame, as_of)
    buyers = orders > 0
    if not buyers.any():
        return np.zeros(len(frame))
    prior_days = max(float(np.median(tenure[buyers])), 30.0)
    rate = (orders + 1.0) / (tenure + prior_days)
    silent = np.exp(-rate * np.where(np.isfinite(recency), recency, 0.0))
    p_active = silent / (silent + 1.0)
    aov = np.divide(value, orders, out=np.zeros(len(frame)), where=buyers)
    horizon = window_days / 2.0
    return np.asarray(np.where(buyers, rate * horizon * p_active * aov, 0.0), dtype=float)


CANDIDATES: dict[str, ScoreFn] = {
    "window_value": window_value,
    "recency_decay": recency_decay,
    "value_x_frequency": value_x_frequency,
    "lifetime_per_month": lifetime_per_month,
    "expected_value": expected_value,
}

DEFAULT = "recency_decay"


def value_score(frame: pd.DataFrame, window_days: int, as_of: pd.Timestamp) -> np.ndarray:
    """Juno's value score per customer (higher ranks first): see docs/backtest.md for the choice."""
    return CANDIDATES[DEFAULT](frame, window_days, as_of)

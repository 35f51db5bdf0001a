"""Each cohort's rule as SQL (PRODUCT.md 9): it runs as is in DuckDB over the input tables in the
generic contract (orders, order_lines, customers) and returns exactly the cohort's members (before
precedence). Every share-based cut is resolved to the number this run computed, and replenishment
embeds the run's cycle lengths. `juno.segments` puts it beside the Shopify query and the tag import.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from juno.cohorts import RULES, Context
from juno.config import Config
from juno.parse import positions

if TYPE_CHECKING:
    from juno.pipeline import RunResult

DAY_S = 86400
# Columns the SQL reads; optional ones absent from an extract must exist as NULL columns.
SQL_COLUMNS = {
    "orders": (
        "order_id",
        "customer_id",
        "ordered_at",
        "revenue",
        "discount",
        "refunded",
        "cancelled",
        "cancelled_at",
        "discount_code",
        "cost",
    ),
    "order_lines": ("order_id", "sku", "category", "quantity", "cost"),
    "customers": ("customer_id", "tags", "country"),
}


# ---------------------------------------------------------------------------------------------
# Literals
# ---------------------------------------------------------------------------------------------


def num_literal(v: float) -> str:
    """A numeric SQL / ShopifyQL literal that round-trips (no exponent for ordinary values)."""
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def cut_literal(v: float) -> str:
    # Value sums are compared rounded to 4 decimals on both sides, so that summation order
    # (numpy vs the database) cannot move a customer sitting exactly at the cut.
    return num_literal(round(v, 4))


def money_literal(v: float) -> str:
    # No customer has positive value when a cut is infinite: a bound nobody reaches says so.
    return num_literal(round(v, 2)) if math.isfinite(v) else "999999999999"


def str_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def days_literal(v: float) -> str:
    return f"{max(math.floor(v), 0)}d"

# ---------------------------------------------------------------------------------------------
# SQL
# ---------------------------------------------------------------------------------------------


def _margin_sql(cost_from: str | None) -> tuple[str, str, str]:
    """(cost column of ord, extra CTE, join) for value = margin; cost from orders or order lines."""
    if cost_from == "orders":
        return "TRY_CAST(cost AS DOUBLE) AS cost,", "", ""
    if cost_from == "lines":
        cte = """line_cost AS (
  -- Orders carry no cost: the cost of goods is the sum of their lines' cost x quantity.
  SELECT
    TRIM(CAST(order_id AS VARCHAR)) AS order_id,
    SUM(TRY_CAST(cost AS DOUBLE) * COALESCE(TRY_CAST(quantity AS DOUBLE), 1)) AS line_cost
  FROM order_lines
  GROUP BY TRIM(CAST(order_id AS VARCHAR))
),
"""
        return "", cte, "\n  LEFT JOIN line_cost lc ON lc.order_id = TRIM(CAST(orders.order_id AS VARCHAR))"
    return "CAST(NULL AS DOUBLE) AS cost,", "", ""


def _base_ctes(
    as_of_s: float, window_s: float, cost_from: str | None = None, window_days: int = 365
) -> str:
    """Orders typed as Juno's validation types them, and the per-customer signals the rules use.

    `cost_from` ("orders" or "lines") makes the value margin: what was kept minus the cost of
    goods, reduced in proportion to partial refunds; None keeps net revenue.
    """
    cost_col, cost_cte, cost_join = _margin_sql(cost_from)
    if cost_from == "lines":
        cost_col = "lc.line_cost AS cost,"
    value = "margin" if cost_from else "net"
    return f"""{cost_cte}ord AS (
  SELECT
    TRIM(CAST(orders.order_id AS VARCHAR)) AS order_id,
    TRIM(CAST(customer_id AS VARCHAR)) AS customer_id,
    epoch(CAST(ordered_at AS TIMESTAMPTZ)) AS t,
    {cost_col}
    COALESCE(TRY_CAST(revenue AS DOUBLE), 0) AS revenue,
    GREATEST(COALESCE(TRY_CAST(discount AS DOUBLE), 0), 0) AS discount,
    GREATEST(COALESCE(TRY_CAST(refunded AS DOUBLE), 0), 0) AS refunded,
    COALESCE(LOWER(TRIM(CAST(cancelled AS VARCHAR))) IN ('true', 't', 'yes', 'y', '1', '1.0'), FALSE)
      OR NULLIF(TRIM(CAST(cancelled_at AS VARCHAR)), '') IS NOT NULL AS cancelled,
    NULLIF(TRIM(CAST(discount_code AS VARCHAR)), '') IS NOT NULL AS has_code
  FROM orders{cost_join}
),
n AS (
  SELECT
    *,
    NOT (cancelled OR (refunded > 0 AND refunded >= revenue - 0.005)) AS counts
  FROM ord
),
o AS (
  -- Cancelled and fully refunded orders count zero; partial refunds come off.
  SELECT
    order_id,
    customer_id,
    t,
    t > {num_literal(window_s)} AS in_window,
    discount,
    discount > 0 OR has_code AS has_discount,
    counts,
    CASE WHEN counts THEN GREATEST(revenue - refunded, 0) ELSE 0 END AS net,
    CASE
      WHEN counts AND cost IS NOT NULL THEN GREATEST(revenue - refunded, 0)
        - cost * CASE WHEN revenue > 0 THEN GREATEST(revenue - refunded, 0) / revenue ELSE 0 END
      ELSE 0
    END AS margin
  FROM n
  WHERE customer_id IS NOT NULL AND t <= {num_literal(as_of_s)}
),
sig AS (
  SELECT
    customer_id,
    SUM(CASE WHEN counts THEN 1 ELSE 0 END) AS orders_lifetime,
    SUM(CASE WHEN counts AND in_window THEN 1 ELSE 0 END) AS orders_window,
    ROUND(SUM({value}), 4) AS value_lifetime,
    ROUND(SUM(CASE WHEN in_window THEN {value} ELSE 0 END), 4) AS value_window,
    SUM(CASE WHEN in_window THEN {value} ELSE 0 END) AS value_window_raw,
    SUM(CASE WHEN counts AND in_window AND has_discount THEN 1 ELSE 0 END) AS discounted_window,
    SUM(CASE WHEN counts AND in_window THEN discount ELSE 0 END) AS discount_window,
    SUM(CASE WHEN counts AND in_window THEN net + discount ELSE 0 END) AS gross_window,
    FLOOR(({num_literal(as_of_s)} - MAX(CASE WHEN counts THEN t END)) / {DAY_S}) AS recency_days
  FROM o
  GROUP BY customer_id
),
s AS (
  SELECT
    *,
    CASE WHEN orders_window > 0 THEN discounted_window * 1.0 / orders_window ELSE 0 END
      AS discount_share_window,
    CASE WHEN gross_window > 0 THEN discount_window / gross_window ELSE 0 END AS discount_rate_window,
    -- Juno's value score (juno/score.py): window value halved every quarter window since the last order.
    ROUND(GREATEST(value_window_raw, 0) * POWER(0.5, LEAST(COALESCE(recency_days, {10 * window_days}),
      {10 * window_days}) / {num_literal(max(window_days / 4.0, 1.0))}), 4) AS value_score
  FROM sig
)"""


def _population_cte(config: Config) -> str:
    """Customers out of scope: excluded tags, or outside the country list when one is given."""
    tags = [t.lower() for t in config.population.exclude_tags]
    norm = r"',' || REGEXP_REPLACE(LOWER(TRIM(CAST(tags AS VARCHAR))), '\s*,\s*', ',', 'g') || ','"
    tag_hit = " OR ".join(f"POSITION({str_literal(',' + t + ',')} IN {norm}) > 0" for t in tags) or "FALSE"
    if config.population.countries:
        wanted = ", ".join(str_literal(c.upper()) for c in config.population.countries)
        return f"""eligible AS (
  SELECT TRIM(CAST(customer_id AS VARCHAR)) AS customer_id
  FROM customers
  WHERE UPPER(TRIM(CAST(country AS VARCHAR))) IN ({wanted})
    AND NOT COALESCE({tag_hit}, FALSE)
)"""
    return f"""excluded AS (
  SELECT TRIM(CAST(customer_id AS VARCHAR)) AS customer_id
  FROM customers
  WHERE customer_id IS NOT NULL AND COALESCE({tag_hit}, FALSE)
)"""


def _in_population(config: Config, alias: str) -> str:
    if config.population.countries:
        return f"{alias}.customer_id IN (SELECT customer_id FROM eligible)"
    return f"{alias}.customer_id NOT IN (SELECT customer_id FROM excluded)"


def _not_discount_dependent(ctx: Context) -> str:
    th = ctx.th
    return (
        f"NOT (s.discount_share_window >= {num_literal(th.discount_share_min)}"
        f" OR s.discount_rate_window >= {num_literal(th.discount_rate_min)})"
    )


def _rank_column(cid: str) -> str:
    """The value VIP / near-VIP rank on: the value score when the rule uses one, else window value."""
    return "s.value_score" if "value_score" in RULES[cid].signals_used else "s.value_window"


def _where(cid: str, ctx: Context) -> str:
    th, r = ctx.th, ctx.resolved
    if cid == "vip":
        if not math.isfinite(r["vip_cut"]):
            return "FALSE"
        return (
            f"{_rank_column(cid)} >= {cut_literal(r['vip_cut'])}\n  AND s.orders_window >= {th.vip_min_orders}"
            f"\n  AND s.recency_days <= {th.active_days}\n  AND {_not_discount_dependent(ctx)}"
        )
    if cid == "near_vip":
        if not math.isfinite(r["near_vip_cut"]):
            return "FALSE"
        rank = _rank_column(cid)
        upper = f"\n  AND {rank} < {cut_literal(r['vip_cut'])}" if math.isfinite(r["vip_cut"]) else ""
        return (
            f"{rank} >= {cut_literal(r['near_vip_cut'])}{upper}\n  AND s.recency_days <= {th.active_days}"
        )
    if cid == "lapsed_high_value":
        if not math.isfinite(r["high_value_cut"]):
            return "FALSE"
        return (
            f"s.value_lifetime >= {cut_literal(r['high_value_cut'])}"
            f"\n  AND s.recency_days > GREATEST({num_literal(th.lapse_multiple)} * COALESCE(g.median_gap_days, 0),"
            f" {th.lapse_min_days})\n  AND s.recency_days < {th.lost_days}"
        )
    if cid == "discount_risk":
        return (
            f"s.orders_window >= {th.discount_min_orders}"
            f"\n  AND (s.discount_share_window >= {num_literal(th.discount_share_min)}"
            f" OR s.discount_rate_window >= {num_literal(th.discount_rate_min)})"
        )
    if cid == "first_to_second":
        return (
            f"s.orders_lifetime = 1\n  AND s.recency_days >= {th.first_order_min_days}"
            f"\n  AND s.recency_days <= {num_literal(r['second_order_window'])}"
        )
    raise KeyError(cid)


_GAPS_CTE = """gaps AS (
  SELECT customer_id, (t - LAG(t) OVER (PARTITION BY customer_id ORDER BY t)) / 86400.0 AS gap
  FROM o
  WHERE counts
),
g AS (
  SELECT customer_id, PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY gap) AS median_gap_days
  FROM gaps
  WHERE gap IS NOT NULL
  GROUP BY customer_id
)"""


def _signal_sql(cid: str, ctx: Context, config: Config, base: str) -> str:
    ctes = [base, _population_cte(config)]
    join = ""
    if cid == "lapsed_high_value":
        ctes.append(_GAPS_CTE)
        join = "\nLEFT JOIN g ON g.customer_id = s.customer_id"
    return (
        "WITH " + ",\n".join(ctes) + "\n"
        "SELECT s.customer_id, s.orders_window, s.value_window, s.value_lifetime, s.recency_days\n"
        f"FROM s{join}\nWHERE {_where(cid, ctx)}\n  AND {_in_population(config, 's')}\n"
        "ORDER BY s.customer_id"
    )


CycleRow = tuple[str, str, str | None, float]


def _first_categories(p: pd.DataFrame, wanted: np.ndarray) -> dict[str, str | None]:
    """The category of the first purchase row of each SKU (those in `wanted` at least)."""
    sku_cat: dict[str, str | None] = {}
    if len(p) and "sku" in p and len(wanted) and isinstance(p["sku"].dtype, pd.StringDtype):
        # The first purchase row of each SKU that has a cycle: one Arrow lookup, then numbers.
        pos = positions(p["sku"], pd.Index(wanted))
        rows_hit = np.flatnonzero(pos >= 0)
        found, first = np.unique(pos[rows_hit], return_index=True)
        cats = p["category"].take(rows_hit[first]).tolist()
        for k, cat in zip(found.tolist(), cats, strict=True):
            sku_cat[str(wanted[k])] = None if pd.isna(cat) else str(cat)
    elif len(p) and "sku" in p and len(wanted):
        first_rows = p.dropna(subset=["sku"]).drop_duplicates("sku")
        for sku, cat in zip(first_rows["sku"].tolist(), first_rows["category"].tolist(), strict=True):
            sku_cat[str(sku)] = None if pd.isna(cat) else str(cat)
    return sku_cat


def cycle_rows_of(result: RunResult) -> list[CycleRow]:
    """(level, product, category, cycle days) of every replenishable product in this run."""
    cl = result.classification
    assert cl is not None
    table = cl.cycles.table
    if table.empty:
        return []
    rep = table[table["replenishable"].astype(bool)]
    wanted = rep.loc[rep["level"] != "category", "product"].astype(str).unique()
    # Classification already knows each SKU's first category (no purchase frame needed).
    known = getattr(cl.cycles, "sku_categories", None)
    sku_cat = known if known is not None else _first_categories(cl.cycles.purchases, wanted)
    rows: list[CycleRow] = []
    for r in rep.sort_values(["level", "product"]).itertuples():
        product = str(r.product)
        category = product if r.level == "category" else sku_cat.get(product)
        rows.append((str(r.level), product, category, float(str(r.median_days))))
    return rows


def _replenishment_sql(
    result: RunResult, ctx: Context, config: Config, base: str, as_of_s: float, rows: list[CycleRow]
) -> str:
    if not rows:
        return (
            "-- No product has a reliable reorder cycle in this run, so nobody is due.\n"
            "SELECT CAST(NULL AS VARCHAR) AS customer_id WHERE 1 = 0"
        )
    th = ctx.th
    values = ",\n    ".join(
        f"({str_literal(lv)}, {str_literal(pr)}, "
        f"{('CAST(NULL AS VARCHAR)' if cat is None else str_literal(cat))}, {num_literal(days)})"
        for lv, pr, cat, days in rows
    )
    return f"""WITH {base},
{_population_cte(config)},
cycle (level, product, category, cycle_days) AS (
  -- The store's median reorder interval per replenishable product, as estimated by this run.
  VALUES
    {values}
),
p AS (
  -- Distinct purchase days (UTC) of counted orders, per product.
  SELECT
    o.customer_id,
    NULLIF(LOWER(TRIM(CAST(l.category AS VARCHAR))), '') AS category,
    NULLIF(TRIM(CAST(l.sku AS VARCHAR)), '') AS sku,
    FLOOR(o.t / {DAY_S}) * {DAY_S} AS day_s
  FROM o
  JOIN order_lines l ON TRIM(CAST(l.order_id AS VARCHAR)) = o.order_id
  WHERE o.counts
),
last_purchase AS (
  SELECT 'category' AS level, customer_id, category AS product, MAX(day_s) AS last_s
  FROM p WHERE category IS NOT NULL GROUP BY customer_id, category
  UNION ALL
  SELECT 'sku' AS level, customer_id, sku AS product, MAX(day_s) AS last_s
  FROM p WHERE sku IS NOT NULL GROUP BY customer_id, sku
),
due AS (
  -- Expected reorder date between as_of - {num_literal(th.overdue_fraction)} x cycle
  -- and as_of + {th.lead_days} days.
  SELECT lp.customer_id, c.category, lp.last_s
  FROM last_purchase lp
  JOIN cycle c ON c.level = lp.level AND c.product = lp.product
  WHERE lp.last_s + TRUNC(c.cycle_days * {DAY_S})
      >= {num_literal(as_of_s)} - c.cycle_days * {num_literal(th.overdue_fraction)} * {DAY_S}
    AND lp.last_s + TRUNC(c.cycle_days * {DAY_S}) <= {num_literal(as_of_s + th.lead_days * DAY_S)}
),
category_last AS (
  SELECT customer_id, category, MAX(day_s) AS last_s
  FROM p WHERE category IS NOT NULL GROUP BY customer_id, category
)
SELECT DISTINCT d.customer_id
FROM due d
LEFT JOIN category_last cl ON cl.customer_id = d.customer_id AND cl.category = d.category
WHERE (cl.last_s IS NULL OR cl.last_s <= d.last_s)  -- no later purchase in its category
  AND {_in_population(config, 'd')}
ORDER BY d.customer_id"""


def sql_for(cid: str, result: RunResult, cycle_rows: list[CycleRow] | None = None) -> str:
    """One DuckDB-ready query returning the cohort's members (customer_id first)."""
    cl = result.classification
    assert cl is not None and result.store is not None
    ctx = cl.ctx
    config = result.config
    as_of = result.store.as_of
    as_of_s = (as_of - pd.Timestamp("1970-01-01")) / pd.Timedelta(seconds=1)
    window_s = as_of_s - config.window_days * DAY_S
    header = (
        f"-- Juno segment: {cid}, run as of {as_of:%Y-%m-%d %H:%M:%S} UTC\n"
        f"-- Rule: {RULES[cid].rule_text(ctx)}\n"
        "-- Tables (generic contract): "
        + "; ".join(f"{t}({', '.join(c)})" for t, c in SQL_COLUMNS.items())
        + ".\n-- Optional columns your extract lacks must exist as NULL. Naive timestamps are read in the"
        " session time zone; Juno reads them as UTC.\n"
    )
    cost_from = None
    if result.signals is not None and result.signals.value_column == "margin":
        orders_cost = result.store.orders["cost"].notna().any()
        cost_from = "orders" if orders_cost else "lines"
    base = _base_ctes(as_of_s, window_s, cost_from, config.window_days)
    if cid == "replenishment_ready":
        rows = cycle_rows_of(result) if cycle_rows is None else cycle_rows
        body = _replenishment_sql(result, ctx, config, base, as_of_s, rows)
    else:
        body = _signal_sql(cid, ctx, config, base)
    return header + body + "\n"

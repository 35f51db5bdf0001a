"""Segment logic to paste: each cohort's rule as a Shopify segment query and as SQL (PRODUCT.md 9).

The SQL runs as is in DuckDB over the input tables in the generic contract (orders, order_lines,
customers) and returns exactly the cohort's members (before precedence): every share-based cut is
resolved to the number this run computed, and replenishment embeds the run's cycle lengths.
Shopify's segment language cannot say "top 10% in the last 365 days", "discount share" or "due by
the store's own reorder cycle": those queries are the closest approximation, and a customer
tag-import CSV loads the exact members instead.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from juno.cohorts import RULES, Context
from juno.config import Config
from juno.parse import positions, take_increasing

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
TAG_IMPORT_COLUMNS = ["First Name", "Last Name", "Email", "Phone", "Tags"]


@dataclass(frozen=True)
class Segment:
    """One cohort's paste-able logic."""

    cohort: str
    shopify_query: str
    shopify_exact: bool
    shopify_note: str
    shopify_tag: str | None  # the tag the import CSV adds, when the query is not exact
    shopify_tag_query: str | None
    sql: str
    sql_exact: bool
    sql_note: str


# ---------------------------------------------------------------------------------------------
# Literals
# ---------------------------------------------------------------------------------------------


def _num(v: float) -> str:
    """A numeric SQL / ShopifyQL literal that round-trips (no exponent for ordinary values)."""
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def _cut(v: float) -> str:
    # Value sums are compared rounded to 4 decimals on both sides, so that summation order
    # (numpy vs the database) cannot move a customer sitting exactly at the cut.
    return _num(round(v, 4))


def _money(v: float) -> str:
    # No customer has positive value when a cut is infinite: a bound nobody reaches says so.
    return _num(round(v, 2)) if math.isfinite(v) else "999999999999"


def _str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _days(v: float) -> str:
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
    t > {_num(window_s)} AS in_window,
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
  WHERE customer_id IS NOT NULL AND t <= {_num(as_of_s)}
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
    FLOOR(({_num(as_of_s)} - MAX(CASE WHEN counts THEN t END)) / {DAY_S}) AS recency_days
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
      {10 * window_days}) / {_num(max(window_days / 4.0, 1.0))}), 4) AS value_score
  FROM sig
)"""


def _population_cte(config: Config) -> str:
    """Customers out of scope: excluded tags, or outside the country list when one is given."""
    tags = [t.lower() for t in config.population.exclude_tags]
    norm = r"',' || REGEXP_REPLACE(LOWER(TRIM(CAST(tags AS VARCHAR))), '\s*,\s*', ',', 'g') || ','"
    tag_hit = " OR ".join(f"POSITION({_str(',' + t + ',')} IN {norm}) > 0" for t in tags) or "FALSE"
    if config.population.countries:
        wanted = ", ".join(_str(c.upper()) for c in config.population.countries)
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
        f"NOT (s.discount_share_window >= {_num(th.discount_share_min)}"
        f" OR s.discount_rate_window >= {_num(th.discount_rate_min)})"
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
            f"{_rank_column(cid)} >= {_cut(r['vip_cut'])}\n  AND s.orders_window >= {th.vip_min_orders}"
            f"\n  AND s.recency_days <= {th.active_days}\n  AND {_not_discount_dependent(ctx)}"
        )
    if cid == "near_vip":
        if not math.isfinite(r["near_vip_cut"]):
            return "FALSE"
        rank = _rank_column(cid)
        upper = f"\n  AND {rank} < {_cut(r['vip_cut'])}" if math.isfinite(r["vip_cut"]) else ""
        return (
            f"{rank} >= {_cut(r['near_vip_cut'])}{upper}\n  AND s.recency_days <= {th.active_days}"
        )
    if cid == "lapsed_high_value":
        if not math.isfinite(r["high_value_cut"]):
            return "FALSE"
        return (
            f"s.value_lifetime >= {_cut(r['high_value_cut'])}"
            f"\n  AND s.recency_days > GREATEST({_num(th.lapse_multiple)} * COALESCE(g.median_gap_days, 0),"
            f" {th.lapse_min_days})\n  AND s.recency_days < {th.lost_days}"
        )
    if cid == "discount_risk":
        return (
            f"s.orders_window >= {th.discount_min_orders}"
            f"\n  AND (s.discount_share_window >= {_num(th.discount_share_min)}"
            f" OR s.discount_rate_window >= {_num(th.discount_rate_min)})"
        )
    if cid == "first_to_second":
        return (
            f"s.orders_lifetime = 1\n  AND s.recency_days >= {th.first_order_min_days}"
            f"\n  AND s.recency_days <= {_num(r['second_order_window'])}"
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


def _cycle_rows(result: RunResult) -> list[CycleRow]:
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
        f"({_str(lv)}, {_str(pr)}, {('CAST(NULL AS VARCHAR)' if cat is None else _str(cat))}, {_num(days)})"
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
  -- Expected reorder date between as_of - {_num(th.overdue_fraction)} x cycle
  -- and as_of + {th.lead_days} days.
  SELECT lp.customer_id, c.category, lp.last_s
  FROM last_purchase lp
  JOIN cycle c ON c.level = lp.level AND c.product = lp.product
  WHERE lp.last_s + TRUNC(c.cycle_days * {DAY_S})
      >= {_num(as_of_s)} - c.cycle_days * {_num(th.overdue_fraction)} * {DAY_S}
    AND lp.last_s + TRUNC(c.cycle_days * {DAY_S}) <= {_num(as_of_s + th.lead_days * DAY_S)}
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
        rows = _cycle_rows(result) if cycle_rows is None else cycle_rows
        body = _replenishment_sql(result, ctx, config, base, as_of_s, rows)
    else:
        body = _signal_sql(cid, ctx, config, base)
    return header + body + "\n"


# ---------------------------------------------------------------------------------------------
# Shopify
# ---------------------------------------------------------------------------------------------


def _population_shopify(config: Config) -> list[str]:
    out = [f"customer_tags NOT CONTAINS {_str(t)}" for t in config.population.exclude_tags]
    if config.population.countries:
        # customer_countries holds every country of a customer's addresses: the nearest filter.
        countries = config.population.countries
        either = " OR ".join(f"customer_countries CONTAINS {_str(c.upper())}" for c in countries)
        out.append(f"({either})")
    return out


def shopify_for(
    cid: str, result: RunResult, cycle_rows: list[CycleRow] | None = None
) -> tuple[str, bool, str]:
    """(query, exact, note): Shopify segment query language, thresholds resolved to numbers."""
    cl = result.classification
    assert cl is not None
    ctx = cl.ctx
    th, r = ctx.th, ctx.resolved
    config = result.config
    money = "amount_spent is lifetime gross spend, not net revenue in the window"
    parts: list[str]
    exact = False
    scored = "value_score" in RULES["vip"].signals_used
    if scored:
        # The score never exceeds the window value, so amount_spent >= cut keeps every member.
        money += "; the recency-weighted value score cannot be expressed (the cut is a lower bound)"
    if cid == "vip":
        parts = [
            f"amount_spent >= {_money(r['vip_cut'])}",
            f"number_of_orders >= {th.vip_min_orders}",
            f"last_order_date >= -{th.active_days}d",
        ]
        note = f"Approximation: {money}; discount dependence cannot be expressed."
    elif cid == "near_vip":
        parts = [f"amount_spent >= {_money(r['near_vip_cut'])}"]
        if not scored:
            parts.append(f"amount_spent < {_money(r['vip_cut'])}")
        parts.append(f"last_order_date >= -{th.active_days}d")
        note = f"Approximation: {money}" + ("; 'not VIP' cannot be expressed." if scored else ".")
    elif cid == "lapsed_high_value":
        parts = [
            f"amount_spent >= {_money(r['high_value_cut'])}",
            f"last_order_date < -{th.lapse_min_days}d",
            f"last_order_date > -{th.lost_days}d",
        ]
        note = (
            "Approximation: silence is measured against a fixed "
            f"{th.lapse_min_days} days, not {th.lapse_multiple:g} x each customer's own median gap."
        )
    elif cid == "discount_risk":
        parts = [
            f"number_of_orders >= {th.discount_min_orders}",
            f"last_order_date >= -{config.window_days}d",
        ]
        note = (
            "Approximation: Shopify cannot filter on discount share or discount rate; this query only "
            "finds repeat buyers active in the window."
        )
    elif cid == "first_to_second":
        parts = [
            "number_of_orders = 1",
            f"last_order_date <= -{th.first_order_min_days}d",
            f"last_order_date >= -{_days(r['second_order_window'])}",
        ]
        exact = True
        note = (
            "Exact rule; Shopify counts days from today (Juno from as_of) and its order count may "
            "include cancelled or fully refunded orders."
        )
    elif cid == "replenishment_ready":
        every = _cycle_rows(result) if cycle_rows is None else cycle_rows
        rows = [row for row in every if row[0] == "category"]
        clauses = []
        for _, product, _, days in rows:
            newest = days - th.lead_days
            oldest = days * (1 + th.overdue_fraction)
            clauses.append(
                f"products_purchased MATCHES (tag = {_str(product)},"
                f" date BETWEEN -{_days(math.ceil(oldest))} AND -{_days(newest)})"
            )
        parts = ["(" + " OR ".join(clauses) + ")"] if clauses else ["number_of_orders < 0"]
        note = (
            "Approximation: assumes products carry their category as a product tag; SKU-level cycles "
            "and 'no later purchase of it' cannot be expressed."
        )
    else:
        raise KeyError(cid)
    query = " AND ".join(parts + _population_shopify(config))
    return query, exact, note


def _tag_name(cid: str, result: RunResult) -> str:
    assert result.store is not None
    return f"juno-{cid.replace('_', '-')}-{result.store.as_of:%Y%m%d}"


def _row_aligned(a: pd.Series, b: pd.Series) -> bool:
    """The same customer ids in the same order (one Arrow comparison)."""
    if len(a) != len(b):
        return False
    x, y = _chunked(pa.array(a, from_pandas=True)), _chunked(pa.array(b, from_pandas=True))
    if x.type != y.type:
        try:
            y = y.cast(x.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return False
    return bool(x.equals(y))  # chunk by chunk, however each side is chunked: no combined copy


def _chunked(a: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    return a if isinstance(a, pa.ChunkedArray) else pa.chunked_array([a])


def _take_rows(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """`frame.take(rows)` for increasing `rows`. A text column held in chunks (a file read in
    blocks) is taken chunk by chunk: Arrow's take over a chunked column first copies it whole
    (~40 MB per column and cohort at a million customers)."""
    out = {}
    for col in frame.columns:
        s = frame[col]
        if isinstance(s.dtype, pd.StringDtype) and s.dtype.storage == "pyarrow":
            out[col] = pd.Series(pd.array(take_increasing(pa.array(s), rows), dtype=s.dtype), name=col)
        else:
            out[col] = s.take(rows).reset_index(drop=True)
    return pd.DataFrame(out, index=pd.RangeIndex(len(rows)))


def tag_import(cid: str, result: RunResult, tag: str) -> pd.DataFrame:
    """Shopify customer-import rows for the cohort's exact members (existing tags kept)."""
    from juno.render import escape_text

    cl, store = result.classification, result.store
    assert cl is not None and store is not None and result.signals is not None
    mask = cl.memberships[cid].mask
    ids = result.signals.frame["customer_id"]
    if _row_aligned(store.customers["customer_id"], ids):
        # The usual case (signals have one row per store customer, in the same order): members
        # by position, not by a string index over every customer.
        used = [c for c in ("first_name", "last_name", "email", "phone", "tags") if c in store.customers]
        members = _take_rows(store.customers[used], np.flatnonzero(mask))
    else:
        cust = store.customers.set_index("customer_id")
        members = cust.reindex(pd.Index(ids.to_numpy()[mask], dtype="string"))

    def col(name: str) -> pd.Series:
        if name in members:
            return members[name].astype("string").fillna("").reset_index(drop=True)
        return pd.Series("", index=range(len(members)), dtype="string")

    existing = col("tags")
    tags = existing.where(existing == "", existing + ", ") + tag
    frame = pd.DataFrame(
        {
            "First Name": col("first_name"),
            "Last Name": col("last_name"),
            "Email": col("email"),
            "Phone": col("phone"),
            "Tags": tags,
        }
    )
    contactable = (frame["Email"] != "") | (frame["Phone"] != "")
    frame = frame[contactable.to_numpy(bool)].reset_index(drop=True)
    out = pd.DataFrame({c: escape_text(frame[c]) for c in frame.columns}, index=frame.index)  # csv_frame
    # A bare phone number ('+1 619 555 0132') is harmless to a spreadsheet and Shopify's importer
    # needs it unprefixed; anything else in the column is escaped like every other cell.
    plain_phone = frame["Phone"].str.fullmatch(r"\+?[0-9 ()./-]+", na=False).to_numpy(bool)
    out["Phone"] = out["Phone"].where(~plain_phone, frame["Phone"])
    return out


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def build(result: RunResult) -> list[Segment]:
    """Every built cohort's Shopify query and SQL."""
    cl = result.classification
    assert cl is not None
    merged = result.config.duplicates.merge
    rows = _cycle_rows(result) if "replenishment_ready" in cl.memberships else []
    out = []
    for cid in cl.memberships:
        query, exact, note = shopify_for(cid, result, rows)
        tag = None if exact else _tag_name(cid, result)
        out.append(
            Segment(
                cohort=cid,
                shopify_query=query,
                shopify_exact=exact,
                shopify_note=note,
                shopify_tag=tag,
                shopify_tag_query=None if tag is None else f"customer_tags CONTAINS {_str(tag)}",
                sql=sql_for(cid, result, rows),
                sql_exact=not merged,
                sql_note=(
                    "duplicates.merge is on: Juno computes signals on merged identities, which this SQL "
                    "does not replicate"
                    if merged
                    else "same membership as this run (thresholds resolved to this run's numbers)"
                ),
            )
        )
    return out


def write(result: RunResult, folder: Path) -> None:
    """Write segments.json and segments/<cohort>.sql, .shopify.txt (and tag imports) into the run."""
    from juno.render import write_text_csv

    if result.classification is None:
        return
    segments = build(result)
    sub = folder / "segments"
    sub.mkdir(exist_ok=True)
    doc = []
    for seg in segments:
        entry = asdict(seg)
        (sub / f"{seg.cohort}.sql").write_text(seg.sql, encoding="utf-8")
        lines = [
            f"# Juno segment {seg.cohort}: paste into Shopify admin > Customers > Segments",
            f"# {'exact' if seg.shopify_exact else 'approximation'}: {seg.shopify_note}",
        ]
        if seg.shopify_tag:
            lines.append(
                f"# exact members: import {seg.cohort}_shopify_tags.csv (Customers > Import, overwrite"
                f" matching customers), then use: {seg.shopify_tag_query}"
            )
        text = "\n".join([*lines, seg.shopify_query, ""])
        (sub / f"{seg.cohort}.shopify.txt").write_text(text, encoding="utf-8")
        if seg.shopify_tag:
            rows = tag_import(seg.cohort, result, seg.shopify_tag)
            name = f"{seg.cohort}_shopify_tags.csv"
            write_text_csv(rows[TAG_IMPORT_COLUMNS], sub / name)
            members = int(np.asarray(result.classification.memberships[seg.cohort].mask).sum())
            entry["shopify_tag_import"] = f"segments/{name}"
            entry["shopify_tag_import_rows"] = len(rows)
            entry["members_without_email_or_phone"] = members - len(rows)
        entry["sql_file"] = f"segments/{seg.cohort}.sql"
        doc.append(entry)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    (folder / "segments.json").write_text(text, encoding="utf-8")

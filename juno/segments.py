"""Segment logic to paste: each cohort's rule as a Shopify segment query and as SQL (PRODUCT.md 9).

The SQL (`juno.segment_sql`) runs as is in DuckDB over the input tables in the generic contract
and returns exactly the cohort's members (before precedence). Shopify's segment language cannot
say "top 10% in the last 365 days", "discount share" or "due by the store's own reorder cycle":
those queries are the closest approximation, and a customer tag-import CSV loads the exact
members instead.
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
import pyarrow.compute as pc

from juno.cohorts import RULES
from juno.config import Config
from juno.parse import take_increasing
from juno.segment_sql import CycleRow, cycle_rows_of, days_literal, money_literal, sql_for, str_literal

if TYPE_CHECKING:
    from juno.pipeline import RunResult

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
# Shopify
# ---------------------------------------------------------------------------------------------


def _population_shopify(config: Config) -> list[str]:
    out = [f"customer_tags NOT CONTAINS {str_literal(t)}" for t in config.population.exclude_tags]
    if config.population.countries:
        # customer_countries holds every country of a customer's addresses: the nearest filter.
        countries = config.population.countries
        either = " OR ".join(f"customer_countries CONTAINS {str_literal(c.upper())}" for c in countries)
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
            f"amount_spent >= {money_literal(r['vip_cut'])}",
            f"number_of_orders >= {th.vip_min_orders}",
            f"last_order_date >= -{th.active_days}d",
        ]
        note = f"Approximation: {money}; discount dependence cannot be expressed."
    elif cid == "near_vip":
        parts = [f"amount_spent >= {money_literal(r['near_vip_cut'])}"]
        if not scored:
            parts.append(f"amount_spent < {money_literal(r['vip_cut'])}")
        parts.append(f"last_order_date >= -{th.active_days}d")
        note = f"Approximation: {money}" + ("; 'not VIP' cannot be expressed." if scored else ".")
    elif cid == "lapsed_high_value":
        parts = [
            f"amount_spent >= {money_literal(r['high_value_cut'])}",
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
            f"last_order_date >= -{days_literal(r['second_order_window'])}",
        ]
        exact = True
        note = (
            "Exact rule; Shopify counts days from today (Juno from as_of) and its order count may "
            "include cancelled or fully refunded orders."
        )
    elif cid == "replenishment_ready":
        every = cycle_rows_of(result) if cycle_rows is None else cycle_rows
        rows = [row for row in every if row[0] == "category"]
        clauses = []
        for _, product, _, days in rows:
            newest = days - th.lead_days
            oldest = days * (1 + th.overdue_fraction)
            clauses.append(
                f"products_purchased MATCHES (tag = {str_literal(product)},"
                f" date BETWEEN -{days_literal(math.ceil(oldest))} AND -{days_literal(newest)})"
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
    from juno.render import escape_formulas, large_text, text_scalar

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

    # Arrow kernels on the members' text (a few hundred thousand rows per cohort at a million
    # customers): pandas' string methods took ~3x as long, on the write step's main thread.
    def col(name: str) -> pa.Array:
        if name not in members:
            return pa.array([""] * len(members), pa.large_string())
        a = large_text(pa.array(members[name].astype("string")))
        return a.fill_null("") if a.null_count else a

    email, phone, existing = col("email"), col("phone"), col("tags")
    # Existing tags kept, the cohort's tag added: "a, b" -> "a, b, <tag>"; none -> "<tag>".
    tags = pc.if_else(
        pc.equal(pc.binary_length(existing), 0),
        text_scalar(tag),
        pc.binary_join_element_wise(existing, text_scalar(", " + tag), text_scalar("")),
    )
    columns = dict(zip(TAG_IMPORT_COLUMNS, [col("first_name"), col("last_name"), email, phone, tags], strict=True))
    contactable = pc.or_(pc.greater(pc.binary_length(email), 0), pc.greater(pc.binary_length(phone), 0))
    if not pc.all(contactable).as_py():
        columns = {k: v.filter(contactable) for k, v in columns.items()}
    # A bare phone number ('+1 619 555 0132') is harmless to a spreadsheet and Shopify's importer
    # needs it unprefixed; anything else in the column is escaped like every other cell.
    raw_phone = columns["Phone"]
    out = {k: escape_formulas(v) for k, v in columns.items()}
    plain_phone = pc.match_substring_regex(raw_phone, r"^\+?[0-9 ()./-]+$")
    out["Phone"] = pc.if_else(plain_phone, raw_phone, out["Phone"])
    n = len(raw_phone)
    return pd.DataFrame(
        {k: pd.Series(pd.array(v, dtype=pd.StringDtype()), name=k) for k, v in out.items()},
        index=pd.RangeIndex(n),
    )


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def build(result: RunResult) -> list[Segment]:
    """Every built cohort's Shopify query and SQL."""
    cl = result.classification
    assert cl is not None
    merged = result.config.duplicates.merge
    rows = cycle_rows_of(result) if "replenishment_ready" in cl.memberships else []
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
                shopify_tag_query=None if tag is None else f"customer_tags CONTAINS {str_literal(tag)}",
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

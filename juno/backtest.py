"""Backtest: classify on the history up to a cutoff, then measure each cohort on what came after.

read -> split at the cutoff -> classify the past -> measure the future -> rank

The past is rebuilt from the raw tables with every post-cutoff row removed before validation, so
nothing that happened after the cutoff can reach signals, thresholds, cycles or flags. The future
is the validated orders after the cutoff, up to the horizon. See docs/backtest.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from juno.classify import Classification, customer_table, run_classification
from juno.config import Config
from juno.errors import ConfigError
from juno.parse import clean_text, parse_datetime
from juno.score import CANDIDATES, DEFAULT, value_score
from juno.signals import Signals, compute_signals
from juno.sources import read_store
from juno.sources.base import RawTable, SourceResult
from juno.tables import raw_column
from juno.validate import Store, validate

TOP_SHARES = (0.05, 0.10, 0.20)
DAY = pd.Timedelta(days=1)


# ---------------------------------------------------------------------------------------------
# The past: raw tables as they stood at the cutoff
# ---------------------------------------------------------------------------------------------


def _dates(frame: pd.DataFrame, col: str) -> pd.Series:
    if col not in frame.columns:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    return parse_datetime(frame[col])[0]


def _after(frame: pd.DataFrame, col: str, cutoff: pd.Timestamp) -> np.ndarray:
    """True where the column holds a parseable date after the cutoff (blank/bad cells: False)."""
    return np.asarray((_dates(frame, col) > cutoff).fillna(False), dtype=bool)


def _set(frame: pd.DataFrame, col: str, mask: np.ndarray, value: object) -> None:
    if col in frame.columns and mask.any():
        frame[col] = frame[col].astype(object).mask(mask, value)


def past_source(source: SourceResult, cutoff: pd.Timestamp) -> SourceResult:
    """The raw tables as they stood at `cutoff`: later rows removed, later status changes undone."""
    tables: dict[str, RawTable] = {}
    orders = source.tables["orders"].frame
    late = _after(orders, "ordered_at", cutoff)
    kept = orders[~late].copy()
    # A cancellation recorded after the cutoff was not known at the cutoff.
    later_cancel = _after(kept, "cancelled_at", cutoff)
    _set(kept, "cancelled_at", later_cancel, pd.NA)
    _set(kept, "cancelled", later_cancel, "false")
    tables["orders"] = RawTable("orders", kept)

    kept_ids = set(clean_text(raw_column(kept, "order_id")).dropna())
    late_ids = set(clean_text(raw_column(orders[late], "order_id")).dropna()) - kept_ids
    kept_customers = set(clean_text(raw_column(kept, "customer_id")).dropna())
    kept_emails = set(clean_text(raw_column(kept, "email")).str.lower().dropna())

    for name, raw in source.tables.items():
        f = raw.frame
        if name == "orders":
            continue
        if name == "order_lines":
            f = f[~clean_text(raw_column(f, "order_id")).isin(late_ids).to_numpy(bool)]
        elif name == "support_tickets":
            f = f[~_after(f, "opened_at", cutoff)].copy()
            reopened = _after(f, "closed_at", cutoff)
            _set(f, "closed_at", reopened, pd.NA)
            _set(f, "status", reopened, "open")
        elif name == "subscriptions":
            f = f[~_after(f, "started_at", cutoff)].copy()
            still = _after(f, "cancelled_at", cutoff)
            _set(f, "cancelled_at", still, pd.NA)
            _set(f, "status", still, "active")
        elif name == "customers":
            has_order = clean_text(raw_column(f, "customer_id")).isin(kept_customers) | clean_text(
                raw_column(f, "email")
            ).str.lower().isin(kept_emails)
            f = f[~_after(f, "created_at", cutoff) | has_order.to_numpy(bool)]
        tables[name] = RawTable(name, f)
    return SourceResult(
        kind=source.kind,
        tables=tables,
        files=source.files,
        notes=list(source.notes),
        rejected=source.rejected,
    )


@dataclass
class Past:
    """The classification Juno would have produced at the cutoff."""

    store: Store
    signals: Signals
    classification: Classification
    customers: pd.DataFrame


def classify_past(source: SourceResult, config: Config, cutoff: pd.Timestamp) -> Past:
    """Validate, signal and classify the history up to the cutoff only."""
    cfg = config.model_copy(update={"as_of": cutoff.to_pydatetime()})
    store = validate(past_source(source, cutoff), cfg)
    sig = compute_signals(store, cfg, history=True)
    cl = run_classification(store, sig, cfg)
    return Past(store=store, signals=sig, classification=cl, customers=customer_table(sig, cl))


# ---------------------------------------------------------------------------------------------
# The future and the measures
# ---------------------------------------------------------------------------------------------


@dataclass
class Future:
    """Per past customer (signals order): what they did after the cutoff, within the horizon."""

    all_revenue: float  # every counted order in the horizon, new customers' included
    revenue: np.ndarray
    orders: np.ndarray
    discounted_orders: np.ndarray
    orders_frame: pd.DataFrame  # counted future orders: c, ordered_at, order_id
    lines: pd.DataFrame | None  # order_id, category of those orders


def measure_future(full: Store, past: Past, cutoff: pd.Timestamp, horizon_days: int, merge: bool) -> Future:
    f = past.signals.frame
    n = len(f)
    ids = pd.Index(f["customer_id"])
    o = full.orders
    t = o["ordered_at"]
    sel = o[((t > cutoff) & (t <= cutoff + horizon_days * DAY)).to_numpy(bool)]
    code = ids.get_indexer(sel["customer_id"])
    if merge:
        root = f["merged_into"].fillna(f["customer_id"]).to_numpy(object)
        code = np.where(code >= 0, ids.get_indexer(pd.Index(root)).take(np.maximum(code, 0)), -1)
    known = code >= 0  # orders of customers unknown at the cutoff (new customers) are not theirs
    counts = sel["counts"].to_numpy(bool) & known
    c = code[known]

    def agg(values: np.ndarray) -> np.ndarray:
        return np.bincount(c, weights=values[known].astype(float), minlength=n)

    counted = sel[counts]
    frame = pd.DataFrame(
        {
            "c": code[counts],
            "ordered_at": counted["ordered_at"].to_numpy(),
            "order_id": counted["order_id"].to_numpy(),
        }
    )
    lines = None
    if full.lines is not None:
        lines = full.lines.loc[full.lines["order_id"].isin(frame["order_id"]), ["order_id", "category"]]
    return Future(
        all_revenue=float(sel["net_revenue"].to_numpy(float)[sel["counts"].to_numpy(bool)].sum()),
        revenue=agg(np.where(counts, sel["net_revenue"].to_numpy(float), 0.0)),
        orders=agg(counts.astype(float)),
        discounted_orders=agg((counts & sel["has_discount"].to_numpy(bool)).astype(float)),
        orders_frame=frame,
        lines=lines,
    )


def _rate(mask: np.ndarray, future: Future) -> float:
    return float((future.orders[mask] > 0).mean()) if mask.any() else 0.0


def _per_customer(mask: np.ndarray, future: Future) -> float:
    return float(future.revenue[mask].mean()) if mask.any() else 0.0


def _check(
    metric: str, value: float, versus: str, versus_mask: np.ndarray, versus_value: float
) -> dict[str, Any]:
    return {
        "metric": metric,
        "value": round(value, 4),
        "versus": versus,
        "versus_size": int(versus_mask.sum()),
        "versus_value": round(versus_value, 4),
    }


def _window_hits(rows: pd.DataFrame, fo: pd.DataFrame, fo_cat: pd.DataFrame) -> set[int]:
    """Customers of `rows` (c, category, end) with a future order of that category by `end`
    (any future order by `end` when the category is unknown)."""
    m = rows.merge(fo_cat, on=["c", "category"], how="inner")
    hits = set(m.loc[m["ordered_at"] <= m["end"], "c"].astype(int))
    m2 = rows[rows["category"].isna()].merge(fo, on="c", how="inner")
    return hits | set(m2.loc[m2["ordered_at"] <= m2["end"], "c"].astype(int))


def _replenishment_check(
    past: Past, future: Future, members: np.ndarray, base: np.ndarray, cutoff: pd.Timestamp
) -> dict[str, Any]:
    """Bought the due category within lead_days + overdue_fraction (0.2) x cycle of the cutoff,
    against other buyers of the same replenishable categories who were not due."""
    cl = past.classification
    th = cl.ctx.th
    due = cl.cycles.due
    due = due[members[due["c"].to_numpy(int)]]
    cyc = cl.cycles.table.set_index(["level", "product"])["median_days"]
    cycle = cyc.reindex(pd.MultiIndex.from_arrays([due["level"], due["product"]])).to_numpy(float)
    window = th.lead_days + th.overdue_fraction * cycle
    fo = future.orders_frame
    cats = (
        future.lines.dropna(subset=["category"]).drop_duplicates()
        if future.lines is not None
        else pd.DataFrame({"order_id": pd.Series(dtype=object), "category": pd.Series(dtype=object)})
    )
    fo_cat = fo.merge(cats, on="order_id", how="inner")
    rows = pd.DataFrame(
        {
            "c": due["c"].to_numpy(int),
            "category": due["category"].to_numpy(object),
            "end": cutoff + pd.to_timedelta(window, unit="D"),
        }
    )
    size = int(members.sum())
    rate = len(_window_hits(rows, fo, fo_cat)) / size if size else 0.0

    # Versus: base customers who bought a replenishable category before and were not due for it.
    tab = cl.cycles.table
    cat_cycle = tab[(tab["level"] == "category") & tab["replenishable"].astype(bool)].set_index("product")[
        "median_days"
    ]
    p = cl.cycles.purchases
    others = np.zeros(len(members), dtype=bool)
    if len(p) and len(cat_cycle):
        pc = p[["c", "category"]].dropna().drop_duplicates()
        pc = pc[pc["category"].isin(cat_cycle.index)]
        pc = pc[(base & ~members)[pc["c"].to_numpy(int)]]
        others[pc["c"].to_numpy(int)] = True
        if len(pc):
            vs_window = th.lead_days + th.overdue_fraction * pc["category"].map(cat_cycle).to_numpy(float)
            vs_rows = pd.DataFrame(
                {
                    "c": pc["c"].to_numpy(int),
                    "category": pc["category"].to_numpy(object),
                    "end": cutoff + pd.to_timedelta(vs_window, unit="D"),
                }
            )
            vs_rate = len(_window_hits(vs_rows, fo, fo_cat)) / int(others.sum())
            return _check(
                "due_window_buy_rate",
                rate,
                "other buyers of those categories, not due (same windows)",
                others,
                vs_rate,
            )
    median_window = float(np.median(window)) if len(window) else float(th.lead_days)
    base_end = cutoff + pd.Timedelta(days=median_window)
    base_buyers = set(fo.loc[fo["ordered_at"] <= base_end, "c"].astype(int))
    base_rate = len(base_buyers & set(np.flatnonzero(base))) / int(base.sum()) if base.any() else 0.0
    return _check(
        "due_window_buy_rate",
        rate,
        f"base, any order within {median_window:.0f} days (the median due window)",
        base,
        base_rate,
    )


def _cohort_check(
    cid: str, past: Past, future: Future, members: np.ndarray, base: np.ndarray, cutoff: pd.Timestamp
) -> dict[str, Any] | None:
    f = past.signals.frame
    if cid == "replenishment_ready":
        return _replenishment_check(past, future, members, base, cutoff)
    if cid == "first_to_second":
        others = base & (f["orders_lifetime"].to_numpy() == 1) & ~members
        return _check(
            "second_order_rate",
            _rate(members, future),
            "other one-order customers",
            others,
            _rate(others, future),
        )
    if cid == "lapsed_high_value":
        cut = past.classification.ctx.resolved["high_value_cut"]
        hv = base & (f["value_lifetime"].to_numpy(float) >= cut) & ~members
        return _check(
            "return_rate", _rate(members, future), "other high-value customers", hv, _rate(hv, future)
        )
    if cid == "discount_risk":

        def share(mask: np.ndarray) -> float:
            n = future.orders[mask].sum()
            return float(future.discounted_orders[mask].sum() / n) if n else 0.0

        return _check("discounted_order_share", share(members), "base", base, share(base))
    return None


def capture(score: np.ndarray, future_revenue: np.ndarray, share: float) -> float:
    """Share of future revenue held by the top `share` of customers by score (ties: input order)."""
    n = len(score)
    total = float(future_revenue.sum())
    if n == 0 or total <= 0:
        return 0.0
    k = max(math.ceil(share * n), 1)
    order = np.lexsort((np.arange(n), -score))
    return float(future_revenue[order[:k]].sum() / total)


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


@dataclass
class BacktestResult:
    cutoff: pd.Timestamp
    horizon_days: int
    customers: int
    base: dict[str, Any]
    cohorts: list[dict[str, Any]]
    ranking: list[dict[str, Any]]
    score: str
    candidates: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": self.cutoff.strftime("%Y-%m-%d"),
            "horizon_days": self.horizon_days,
            "horizon_end": (self.cutoff.normalize() + self.horizon_days * DAY).strftime("%Y-%m-%d"),
            "customers": self.customers,
            "base": self.base,
            "cohorts": self.cohorts,
            "ranking": self.ranking,
            "score": self.score,
            "score_candidates": self.candidates,
            "notes": self.notes,
        }


def _cutoff(value: str | pd.Timestamp) -> pd.Timestamp:
    """A date means the end of that day (as `as_of` does)."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ConfigError("--cutoff is not a date", expected="YYYY-MM-DD", examples=[str(value)]) from exc
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if ts == ts.normalize() and (not isinstance(value, str) or len(value.strip()) <= 10):
        ts = ts + pd.Timedelta(hours=23, minutes=59, seconds=59)
    return ts


def backtest(
    store: str | Path,
    cutoff: str | pd.Timestamp,
    *,
    horizon_days: int | None = None,
    config: Config | None = None,
    config_dir: Path | None = None,
    source: SourceResult | None = None,
) -> BacktestResult:
    """Classify on the history up to `cutoff` and measure every cohort over the horizon after it."""
    config = config or Config()
    cut = _cutoff(cutoff)
    if source is None:
        source = read_store(Path(store), config.mapping, config_dir)
    full = validate(source, config.model_copy(update={"as_of": None}))
    first, last = full.orders["ordered_at"].min(), full.orders["ordered_at"].max()
    if not first < cut < last:
        raise ConfigError(
            "the cutoff must fall inside the order history, with orders on both sides",
            expected=f"a date between {first:%Y-%m-%d} and {last:%Y-%m-%d}",
            examples=[f"{cut:%Y-%m-%d}"],
        )
    if horizon_days is None:
        horizon_days = max(math.ceil((last - cut) / DAY), 1)
    if horizon_days < 1:
        raise ConfigError("--horizon-days must be at least 1", examples=[str(horizon_days)])
    past = classify_past(source, config, cut)
    future = measure_future(full, past, cut, horizon_days, config.duplicates.merge)

    f = past.signals.frame
    base = past.classification.ctx.eligible & (f["orders_lifetime"].to_numpy() >= 1)
    n_base = int(base.sum())
    total_rev = float(future.revenue[base].sum())
    base_rpc = _per_customer(base, future)
    base_out = {
        "future_buy_rate": round(_rate(base, future), 4),
        "future_revenue_per_customer": round(base_rpc, 2),
        "future_revenue": round(total_rev, 2),
        "future_orders": int(future.orders[base].sum()),
        # New customers (first order after the cutoff) and excluded records: not in any cohort.
        "future_revenue_outside_base": round(future.all_revenue - total_rev, 2),
    }
    cohorts: list[dict[str, Any]] = []
    for cid in [c for c in config.precedence if c in past.classification.memberships]:
        # Membership before precedence: the `cohorts` column of customers.csv.
        members = base & past.classification.memberships[cid].mask
        rpc = _per_customer(members, future)
        row: dict[str, Any] = {
            "cohort": cid,
            "size": int(members.sum()),
            "future_buy_rate": round(_rate(members, future), 4),
            "future_revenue_per_customer": round(rpc, 2),
            "future_revenue_share": round(float(future.revenue[members].sum()) / total_rev, 4)
            if total_rev
            else 0.0,
            "revenue_lift": round(rpc / base_rpc, 2) if base_rpc else None,
        }
        check = _cohort_check(cid, past, future, members, base, cut) if members.any() else None
        if check is not None:
            row["check"] = check
        cohorts.append(row)

    fb = f[base]
    rev_b = future.revenue[base]
    # The naive baseline ranks by past revenue in the review window, whatever `value` is set to.
    baseline = np.nan_to_num(fb["net_revenue_window"].to_numpy(float), nan=0.0)
    scores = {name: fn(fb, config.window_days, past.signals.as_of) for name, fn in CANDIDATES.items()}
    juno_score = value_score(fb, config.window_days, past.signals.as_of)
    ranking = [
        {
            "top_share": s,
            "capture": round(capture(juno_score, rev_b, s), 4),
            "baseline_capture": round(capture(baseline, rev_b, s), 4),
        }
        for s in TOP_SHARES
    ]
    candidates = [
        {"score": name, "captures": [round(capture(sc, rev_b, s), 4) for s in TOP_SHARES]}
        for name, sc in scores.items()
    ]
    notes = []
    worse = [r for r in ranking if r["capture"] < r["baseline_capture"]]
    if worse:
        notes.append(
            "Juno's value score did NOT beat the naive baseline (top share by past revenue) at "
            + ", ".join(
                f"top {r['top_share']:.0%} ({r['capture']:.1%} vs {r['baseline_capture']:.1%})" for r in worse
            )
            + " on this store."
        )
    if total_rev <= 0:
        notes.append("the base bought nothing in the horizon: shares and lifts are not meaningful")
    empty = [c["cohort"] for c in cohorts if c["size"] == 0]
    if empty:
        notes.append("no members at the cutoff: " + ", ".join(empty))
    for c in cohorts:
        if 0 < c["size"] < config.thresholds.min_cohort_size:
            notes.append(f"{c['cohort']}: {c['size']} members, too few for firm conclusions")
    return BacktestResult(
        cutoff=cut,
        horizon_days=horizon_days,
        customers=n_base,
        base=base_out,
        cohorts=cohorts,
        ranking=ranking,
        score=DEFAULT,
        candidates=candidates,
        notes=notes,
    )


def render_table(result: BacktestResult) -> str:
    """The backtest as a plain-text report."""
    d = result.to_dict()
    b = d["base"]
    lines = [
        f"Backtest: classified on history up to {d['cutoff']}, measured over the next"
        f" {d['horizon_days']} days (to {d['horizon_end']})",
        f"Base: {d['customers']:,} customers with an order before the cutoff; "
        f"{b['future_buy_rate']:.1%} bought again,"
        f" {b['future_revenue_per_customer']:,.2f} future net revenue each",
        f"Future net revenue: {b['future_revenue']:,.2f} from the base;"
        f" {b['future_revenue_outside_base']:,.2f} more from new customers (outside every cohort)",
        "",
        f"{'cohort':<20} {'size':>7} {'buy rate':>9} {'rev/cust':>10} {'rev share':>10} {'lift':>6}",
    ]
    for c in d["cohorts"]:
        lift = f"{c['revenue_lift']:.2f}" if c["revenue_lift"] is not None else "n/a"
        lines.append(
            f"{c['cohort']:<20} {c['size']:>7,} {c['future_buy_rate']:>9.1%}"
            f" {c['future_revenue_per_customer']:>10,.2f} {c['future_revenue_share']:>10.1%} {lift:>6}"
        )
    checks = [c for c in d["cohorts"] if "check" in c]
    if checks:
        lines += ["", "Does each cohort mean what it says?"]
        for c in checks:
            k = c["check"]
            lines.append(
                f"  {c['cohort']:<20} {k['metric'].replace('_', ' ')} {k['value']:.1%}"
                f" vs {k['versus_value']:.1%} for {k['versus']} (n={k['versus_size']:,})"
            )
    lines += [
        "",
        f"Value ranking (score: {d['score']}): share of future revenue captured by the top customers",
        f"{'top':>6} {'juno':>8} {'baseline':>9}",
    ]
    for r in d["ranking"]:
        lines.append(f"{r['top_share']:>6.0%} {r['capture']:>8.1%} {r['baseline_capture']:>9.1%}")
    lines += ["", "Candidate scores (capture at top " + " / ".join(f"{s:.0%}" for s in TOP_SHARES) + "):"]
    for c in d["score_candidates"]:
        mark = " (default)" if c["score"] == d["score"] else ""
        lines.append(f"  {c['score']:<20} " + " / ".join(f"{v:.1%}" for v in c["captures"]) + mark)
    if d["notes"]:
        lines += ["", "Notes:"] + [f"  - {n}" for n in d["notes"]]
    return "\n".join(lines)

"""brief.html: the brief, the cohort table and charts in one self-contained, printable page.

No network: the charts are inline SVG drawn here (geometry) and in the template (elements), with
no script, font or stylesheet from elsewhere. Every value reaches the page through an
autoescaping Jinja2 environment of its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import numpy as np
import pandas as pd

from juno.brief import Brief
from juno.narrative.template import fmt_money, fmt_n, fmt_pct

if TYPE_CHECKING:
    from juno.pipeline import RunResult

# One colour per cohort (colour-blind-friendly Okabe-Ito hues) and per hold-back flag.
COHORT_COLOURS = {
    "lapsed_high_value": "#D55E00",
    "vip": "#0072B2",
    "replenishment_ready": "#009E73",
    "near_vip": "#56B4E9",
    "discount_risk": "#E69F00",
    "first_to_second": "#CC79A7",
}
NONE_COLOUR = "#9AA0A6"
FLAG_COLOURS = {
    "no_consent": "#6C757D",
    "recent_support_issue": "#D55E00",
    "recent_purchase": "#56B4E9",
    "subscription_conflict": "#E69F00",
    "duplicate_record": "#CC79A7",
}
GRID_X = 30  # recency bins at most
X_STEPS = (7, 14, 30, 60, 90, 180, 365)  # days per recency bin: the first that fits
GRID_Y = 14  # value bins (log scale)


@dataclass
class Bar:
    label: str
    colour: str
    size_share: float
    value_share: float
    size: int
    value: float


@dataclass
class Segment:
    flag: str
    colour: str
    count: int
    x: float
    width: float


@dataclass
class HeldRow:
    cohort: str
    held: int
    size: int
    segments: list[Segment]


@dataclass
class Cell:
    x: int
    y: int
    colour: str
    opacity: float
    title: str


@dataclass
class Grid:
    """Customers binned by recency (x) and lifetime value (y, log), coloured by primary cohort."""

    cells: list[Cell] = field(default_factory=list)
    x_ticks: list[tuple[int, str]] = field(default_factory=list)
    y_ticks: list[tuple[int, str]] = field(default_factory=list)
    customers: int = 0
    columns: int = GRID_X
    legend: list[tuple[str, str]] = field(default_factory=list)


def _bars(brief: Brief) -> list[Bar]:
    return [
        Bar(
            label=c.cohort,
            colour=COHORT_COLOURS.get(c.cohort, NONE_COLOUR),
            size_share=c.share_of_customers,
            value_share=c.value_share,
            size=c.size,
            value=c.value_window,
        )
        for c in sorted(brief.facts.cohorts, key=lambda c: int(c.priority[1:]))
    ]


def _held(brief: Brief) -> tuple[list[HeldRow], int]:
    rows = []
    cohorts = sorted(brief.facts.cohorts, key=lambda c: int(c.priority[1:]))
    top = max([sum(b.count for b in c.held_back_by_flag) for c in cohorts] + [1])
    for c in cohorts:
        x = 0.0
        segs = []
        for b in c.held_back_by_flag:
            w = b.count / top
            segs.append(Segment(b.flag, FLAG_COLOURS.get(b.flag, NONE_COLOUR), b.count, x, w))
            x += w
        rows.append(HeldRow(c.cohort, c.held_back, c.size, segs))
    return rows, top


def _cell_counts(xb: np.ndarray, yb: np.ndarray, prim: pd.Series, keep: np.ndarray) -> pd.DataFrame:
    """Customers per (x, y, primary cohort) cell, sorted by the three: what
    `DataFrame({x, y, p}).groupby([x, y, p], sort=True).size()` gives, counted over integer keys
    (the cohort as its rank among the sorted names) instead of grouping a million strings."""
    codes, names = pd.factorize(prim, sort=True)
    code = codes[keep].astype(np.int64)
    k = len(names)
    key = (xb.astype(np.int64) * GRID_Y + yb.astype(np.int64)) * k + code
    # Counted over the grid's few cells (x < GRID_X, y < GRID_Y), not by sorting the keys.
    per_cell = np.bincount(key, minlength=GRID_X * GRID_Y * k)
    cells = np.flatnonzero(per_cell)
    n = per_cell[cells]
    return pd.DataFrame(
        {
            "x": cells // (GRID_Y * k),
            "y": cells // k % GRID_Y,
            "p": np.asarray(names, dtype=object)[cells % k],
            "n": n.astype(np.int64),
        }
    )


def _grid(customers: pd.DataFrame | None) -> Grid:
    """A fixed-size 2D histogram, so the page stays small whatever the number of customers."""
    grid = Grid()
    if customers is None or not len(customers):
        return grid
    rec = pd.to_numeric(customers["recency_days"], errors="coerce").to_numpy(float)
    val = pd.to_numeric(customers["value_lifetime"], errors="coerce").to_numpy(float)
    keep = np.isfinite(rec) & np.isfinite(val) & (val > 0) & (customers["status"] != "excluded").to_numpy()
    if not keep.any():
        return grid
    rec, val = rec[keep], val[keep]
    prim = customers["primary_cohort"].astype("string").fillna("")
    x_max = max(float(np.nanmax(rec)), 1.0)
    x_step = next((s for s in X_STEPS if (x_max + 1) / s <= GRID_X), X_STEPS[-1])
    grid.columns = min(math.ceil((x_max + 1) / x_step), GRID_X)
    xb = np.minimum((rec // x_step).astype(int), grid.columns - 1)
    lv = np.log10(val)
    lo, hi = math.floor(float(lv.min())), math.ceil(float(lv.max()) + 1e-9)
    hi = max(hi, lo + 1)
    yb = np.minimum(((lv - lo) / (hi - lo) * GRID_Y).astype(int), GRID_Y - 1)
    if xb.min() >= 0:
        counts = _cell_counts(xb, yb, prim, keep)
    else:  # negative recency (orders after as_of): group as they are
        frame = pd.DataFrame({"x": xb, "y": yb, "p": prim.to_numpy(object)[keep]})
        counts = frame.groupby(["x", "y", "p"], sort=True).size().rename("n").reset_index()
    total = counts.groupby(["x", "y"])["n"].transform("sum")
    # The dominant primary cohort per cell; unclassified only when no cohort is present.
    counts["rank"] = np.where(counts["p"] == "", 0, 1)
    best = counts.sort_values(["x", "y", "rank", "n", "p"], ascending=[True, True, False, False, True])
    best = best.assign(total=total.reindex(best.index)).drop_duplicates(["x", "y"])
    top = float(best["total"].max())
    cols = [best[k].tolist() for k in ("x", "y", "p", "n", "total")]
    for x, y, p, n, cell_total in zip(*cols, strict=True):
        name = str(p) or "unclassified"
        grid.cells.append(
            Cell(
                x=int(x),
                y=int(y),
                colour=COHORT_COLOURS.get(str(p), NONE_COLOUR),
                opacity=round(0.25 + 0.75 * math.log1p(cell_total) / math.log1p(top), 3),
                title=f"{int(cell_total):,} customers; most: {name} ({int(n):,})",
            )
        )
    every = max(grid.columns // 6, 1)
    grid.x_ticks = [(i, f"{i * x_step}d") for i in range(0, grid.columns + 1, every)]
    grid.y_ticks = [
        (round((k - lo) / (hi - lo) * GRID_Y), fmt_money(10.0**k)) for k in range(lo, hi + 1)
    ]
    grid.customers = int(keep.sum())
    present = {c.colour for c in grid.cells}
    grid.legend = [(c, col) for c, col in COHORT_COLOURS.items() if col in present]
    if NONE_COLOUR in present:
        grid.legend.append(("unclassified", NONE_COLOUR))
    return grid


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """HTML templates: autoescape on, whatever a string holds."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("juno", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["n"] = fmt_n
    env.filters["pct"] = fmt_pct
    env.filters["money"] = fmt_money
    return env


def render(brief: Brief, customers: pd.DataFrame | None = None) -> str:
    """The whole page as one string."""
    held, held_top = _held(brief)
    cohorts = sorted(brief.facts.cohorts, key=lambda c: int(c.priority[1:]))
    return environment().get_template("brief.html.j2").render(
        brief=brief,
        n=brief.narrative,
        f=brief.facts,
        s=brief.facts.scope,
        p=brief.provenance,
        cohorts=cohorts,
        colours=COHORT_COLOURS,
        bars=_bars(brief),
        held=held,
        held_top=held_top,
        flag_colours=FLAG_COLOURS,
        grid=_grid(customers),
        grid_y=GRID_Y,
    )


def write(result: RunResult, folder: Path) -> None:
    """Write brief.html into the run folder being built."""
    if result.brief is None:
        return
    html = render(result.brief, result.customers)
    (folder / "brief.html").write_text(html, encoding="utf-8")

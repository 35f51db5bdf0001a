"""The template narrative: Jinja2 macros fill the same `Narrative` model the LLM fills."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2

from juno.brief import CampaignPriority, CohortLine, Facts, Narrative, ReviewPriority


def fmt_n(v: float) -> str:
    return f"{v:,.0f}"


def fmt_pct(v: float) -> str:
    return f"{v * 100:.0f}%"


def fmt_money(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("juno", "templates"),
        autoescape=False,  # Markdown/plain text; HTML renderers use their own escaping environment
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["n"] = fmt_n
    env.filters["pct"] = fmt_pct
    env.filters["money"] = fmt_money
    return env


def _macros() -> Any:
    return environment().get_template("narrative.j2").module


def _one_line(s: str) -> str:
    return " ".join(str(s).split())


def template_narrative(facts: Facts) -> Narrative:
    """Deterministic words from the facts alone."""
    m = _macros()
    by_id = {c.cohort: c for c in facts.cohorts}
    campaigns = [
        CampaignPriority(
            cohort=cid,
            action=by_id[cid].action,
            timing=by_id[cid].timing,
            why=_one_line(m.campaign_why(by_id[cid])),
        )
        for cid in facts.campaign_priorities
    ]
    review = [
        ReviewPriority(cohort=c.cohort, text=_one_line(m.review_text(c)))
        for c in sorted(facts.cohorts, key=lambda c: (-c.held_back, c.cohort))
        if c.held_back > 0
    ][:4]
    lines = [
        CohortLine(
            cohort=c.cohort, narrative=_one_line(m.cohort_line(c)), risk_note=_one_line(m.risk_note(c))
        )
        for c in facts.cohorts
    ]
    return Narrative(
        headline=_one_line(m.headline(facts)),
        summary=_one_line(m.summary(facts)),
        campaign_priorities=campaigns,
        review_priorities=review,
        cohort_lines=lines,
        caveats=caveats(facts),
    )


def caveats(facts: Facts) -> list[str]:
    """Data caveats, from the facts (margin, thin cohorts, short history, rejected rows)."""
    out: list[str] = []
    if facts.margin_incomplete:
        if facts.margin_coverage == 0:
            out.append("No cost data: margin is unknown, so margin-sensitive conclusions are incomplete.")
        else:
            out.append(
                f"Cost is known for {fmt_pct(facts.margin_coverage)} of revenue: margin-sensitive"
                " conclusions (discount_risk, margin value) are incomplete."
            )
    if facts.consent_known_share < 0.5:
        out.append(
            f"Email consent is unknown for {fmt_pct(1 - facts.consent_known_share)} of customers"
            " (no consent column in the input): they are held back as no_consent until consent is known."
        )
    thin = [c.cohort for c in facts.cohorts if c.thin]
    if thin:
        out.append("Thin cohorts (pilot or merge before a full send): " + ", ".join(thin) + ".")
    if facts.history_days < 180:
        out.append(f"Only {fmt_n(facts.history_days)} days of history: lapse and replenishment need 180.")
    if facts.rejected_rows:
        top = ", ".join(f"{r.count:,} {r.reason}" for r in facts.rejected_by_reason[:3])
        out.append(f"{fmt_n(facts.rejected_rows)} input rows were rejected ({top}); see rejected_rows.csv.")
    if facts.replenishment_note:
        out.append(facts.replenishment_note + ".")
    return out

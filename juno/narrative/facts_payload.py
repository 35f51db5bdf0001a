"""The aggregate-only JSON the model is given: built from `Facts` and nothing else.

Only the brief's `Facts` can reach a prompt, and `Facts` holds no customer-level value, so no
customer id, email, name, phone, address, note, tag or ticket text can travel by construction.
Free text is still capped and scrubbed of anything that looks like an email address, and
catalogue strings (product and category names, which the store's staff typed) are capped
harder: they are data for the model to quote, never instructions.
"""

from __future__ import annotations

import re
from typing import Any

from juno.brief import CohortFacts, Facts

CATALOGUE_MAX = 60
TEXT_MAX = 300

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def clean_text(value: str, limit: int = TEXT_MAX) -> str:
    """One line, no control characters, no email address, at most `limit` characters."""
    text = _CONTROL.sub(" ", value)
    text = _EMAIL.sub("[email removed]", text)
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def catalogue_text(value: str) -> str:
    """A catalogue string as quoted data: capped at CATALOGUE_MAX characters."""
    return clean_text(value, CATALOGUE_MAX)


def _pct(share: float) -> float:
    return round(share * 100, 1)


def _money(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _cohort(c: CohortFacts) -> dict[str, Any]:
    return {
        "cohort": clean_text(c.cohort, 40),
        "title": clean_text(c.title, 80),
        "size": c.size,
        "share_of_customers_pct": _pct(c.share_of_customers),
        "value_in_window": _money(c.value_window),
        "margin_in_window": _money(c.margin_window),
        "share_of_store_value_pct": _pct(c.value_share),
        "rule": clean_text(c.rule),
        "value_signal": clean_text(c.value_signal),
        "customer_experience_risk": clean_text(c.risk),
        "recommended_action": clean_text(c.action, 200),
        "allowed_actions": [clean_text(a, 80) for a in c.allowed_actions],
        "outreach_ready": c.outreach_ready,
        "held_back": c.held_back,
        "held_back_by_flag": [
            {"flag": clean_text(f.flag, 60), "count": f.count} for f in c.held_back_by_flag
        ],
        "secondary_members": c.secondary_members,
        "priority": clean_text(c.priority, 10),
        "priority_score": round(c.priority_score, 2),
        "timing": clean_text(c.timing, 120),
        "confidence": c.confidence,
        "confidence_reasons": [clean_text(r) for r in c.confidence_reasons],
        "stability_pct": _pct(c.stability),
        "thin": c.thin,
        "margin_incomplete": c.margin_incomplete,
    }


def facts_payload(facts: Facts) -> dict[str, Any]:
    """The deterministic facts as the JSON the model reads (aggregates only)."""
    s = facts.scope
    return {
        "scope": {
            "store": clean_text(s.store, 80),
            "source": clean_text(s.source, 40),
            "as_of": clean_text(s.as_of, 40),
            "window_days": s.window_days,
            "value_definition": clean_text(s.value, 40),
            "currency": None if s.currency is None else clean_text(s.currency, 8),
            "population": clean_text(s.population),
            "consent": clean_text(s.consent),
            "history_days": facts.history_days,
        },
        "counts": {
            "customers_in": facts.customers_in,
            "customers_classified": facts.customers_classified,
            "customers_unclassified": facts.customers_unclassified,
            "customers_excluded": facts.customers_excluded,
            "orders_used": facts.orders_used,
            "rejected_rows": facts.rejected_rows,
            "duplicate_groups": facts.duplicate_groups,
            "vip_excluded_discount_dependent": facts.vip_excluded_discount_dependent,
            "cohorts": len(facts.cohorts),
            "campaign_priorities": len(facts.campaign_priorities),
        },
        "margin": {
            "coverage_pct": _pct(facts.margin_coverage),
            "incomplete": facts.margin_incomplete,
        },
        "rejected_by_reason": [
            {"reason": clean_text(r.reason, 80), "count": r.count} for r in facts.rejected_by_reason
        ],
        "cohorts": [_cohort(c) for c in facts.cohorts],
        "campaign_priorities": [clean_text(c, 40) for c in facts.campaign_priorities],
        "replenishment_cycles": [
            {
                "level": clean_text(c.level, 20),
                "catalogue_name": catalogue_text(c.product),
                "median_days": round(c.median_days, 1),
                "reorder_pairs": c.pairs,
                "replenishable": c.replenishable,
                "reason": clean_text(c.reason, 120),
            }
            for c in facts.cycles
        ],
        "replenishment_note": None
        if facts.replenishment_note is None
        else clean_text(facts.replenishment_note),
        "data_caveats": [clean_text(n) for n in facts.data_notes],
    }

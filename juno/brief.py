"""The brief's data model: deterministic facts, the narrative's words, and how they were drafted.

The template and the model both fill `Narrative`; renderers only render a `Brief`.
`Narrative` satisfies strict structured outputs (every field required, no free-form dicts).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Confidence = Literal["high", "medium", "low"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FlagCount(_Model):
    flag: str
    count: int


class CohortFacts(_Model):
    """One row of the cohort table: every number is computed by code."""

    cohort: str
    title: str
    size: int
    share_of_customers: float
    value_window: float
    margin_window: float | None
    value_share: float
    rule: str
    definition: str = Field(
        default="", description="the rule's configuration (stable while the config is unchanged)"
    )
    value_signal: str
    risk: str
    action: str
    allowed_actions: list[str]
    outreach_ready: int
    held_back: int
    held_back_by_flag: list[FlagCount]
    secondary_members: int = Field(description="members whose primary cohort is another one")
    priority: str
    priority_score: float
    timing: str
    confidence: Confidence
    confidence_reasons: list[str]
    stability: float
    thin: bool
    margin_incomplete: bool


class Scope(_Model):
    store: str
    source: str
    as_of: str
    as_of_source: str
    window_days: int
    value: str
    currency: str | None
    population: str
    consent: str
    cohorts: list[str]
    precedence: list[str]


class CycleFact(_Model):
    level: str
    product: str
    median_days: float
    pairs: int
    replenishable: bool
    reason: str


class ReasonCount(_Model):
    reason: str
    count: int


class Facts(_Model):
    """Aggregates only: no customer-level value ever enters this model."""

    scope: Scope
    customers_in: int
    customers_classified: int
    customers_unclassified: int
    customers_excluded: int
    orders_used: int
    history_days: int
    margin_coverage: float
    consent_known_share: float = Field(
        default=1.0, description="share of customers whose email consent is known"
    )
    margin_incomplete: bool
    rejected_rows: int
    rejected_by_reason: list[ReasonCount]
    duplicate_groups: int
    vip_excluded_discount_dependent: int
    cycles: list[CycleFact]
    replenishment_note: str | None
    cohorts: list[CohortFacts]
    campaign_priorities: list[str] = Field(description="cohort ids, best first, at most 3")
    data_notes: list[str]


class CampaignPriority(_Model):
    """One of the top campaign priorities, worded for a reviewer."""

    cohort: str = Field(description="a cohort id from the facts' campaign_priorities")
    action: str = Field(description="one of that cohort's allowed_actions, verbatim")
    timing: str = Field(description="when to run it, from the cohort's timing")
    why: str = Field(description="one or two sentences: the value at stake and who is ready")


class ReviewPriority(_Model):
    """Who is held back from a cohort and why, for the reviewer to check."""

    cohort: str = Field(description="a cohort id from the facts")
    text: str = Field(description="one or two sentences on the held-back members and the reason")


class CohortLine(_Model):
    """The brief's one line about a cohort."""

    cohort: str = Field(description="a cohort id from the facts")
    narrative: str = Field(description="one sentence: size, value and the recommended action")
    risk_note: str = Field(description="one short sentence on the customer-experience risk")


class Narrative(_Model):
    """The words of the brief; the only part a model may write."""

    headline: str = Field(description="one line, the single most important finding")
    summary: str = Field(description="two to four sentences for the store owner")
    campaign_priorities: list[CampaignPriority] = Field(description="at most 3, best first")
    review_priorities: list[ReviewPriority]
    cohort_lines: list[CohortLine] = Field(description="exactly one per cohort in the facts")
    caveats: list[str] = Field(description="data caveats, one short sentence each")


class Provenance(_Model):
    method: Literal["template", "model"]
    model: str | None
    attempts: int
    reason: str


class Brief(_Model):
    draft: bool = True
    juno_version: str
    facts: Facts
    narrative: Narrative
    provenance: Provenance

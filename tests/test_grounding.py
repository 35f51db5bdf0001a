"""The grounding check: numbers at their written precision, cohorts, actions, lengths."""

from __future__ import annotations

from typing import Any

import pytest
from conftest_llm import good_draft, sample_facts

from juno.brief import Narrative
from juno.narrative.facts_payload import CATALOGUE_MAX, catalogue_text, clean_text, facts_payload
from juno.narrative.grounding import (
    LIMITS,
    FactNumbers,
    check_narrative,
    fact_numbers,
    numbers_in,
)


def errors_for(draft: dict[str, Any]) -> list[str]:
    return [f"{e.code} {e}" for e in check_narrative(Narrative.model_validate(draft), sample_facts())]


def codes_for(draft: dict[str, Any]) -> set[str]:
    return {e.code for e in check_narrative(Narrative.model_validate(draft), sample_facts())}


# --- reading numbers -----------------------------------------------------------------------


def test_numbers_in_reads_each_written_form() -> None:
    found = [
        (t.text, t.value, t.decimals, t.kind, t.scale)
        for t in numbers_in("1,234 buyers, 1.2k more, 12% and 12.5 % of $812.40 or €3.4M; 365d; 2 percent")
    ]
    assert found == [
        ("1,234", 1234.0, 0, "plain", 1.0),
        ("1.2k", 1.2, 1, "compact", 1e3),
        ("12%", 12.0, 0, "percent", 1.0),
        ("12.5 %", 12.5, 1, "percent", 1.0),
        ("$812.40", 812.40, 2, "plain", 1.0),
        ("€3.4M", 3.4, 1, "compact", 1e6),
        ("365", 365.0, 0, "plain", 1.0),
        ("2 percent", 2.0, 0, "percent", 1.0),
    ]


def test_labels_and_dates_are_not_numbers() -> None:
    assert numbers_in("P1 before Q3, a B2B order on 2024-06-30") == []


@pytest.mark.parametrize(
    ("written", "value", "pct", "ok"),
    [
        ("1,234", 1234, False, True),
        ("1,234", 1235, False, False),
        ("812", 812.40, False, True),  # integers round half a unit either way
        ("$812", 812.40, False, True),
        ("$812.40", 812.4, False, True),
        ("$812.4", 812.46, False, False),
        ("1.2k", 1234, False, True),  # 1.234k shown with one decimal
        ("1.2k", 1260, False, False),
        ("12k", 12_340, False, True),
        ("1.2M", 1_234_567, False, True),
        ("12%", 12.3, True, True),
        ("12%", 12.6, True, False),
        ("12.5%", 12.46, True, True),
        ("12%", 12, False, False),  # a percentage must match a percentage fact
        ("12", 12.3, True, True),  # a bare number may repeat a percentage fact
    ],
)
def test_rounding_rules(written: str, value: float, pct: bool, ok: bool) -> None:
    facts = FactNumbers(values=[(float(value), "fact")], percents=[(float(value), "fact")] if pct else [])
    (token,) = numbers_in(written)
    assert facts.matches(token) is ok


def test_fact_numbers_come_from_fields_and_from_text() -> None:
    facts = fact_numbers(facts_payload(sample_facts()))
    values = {v for v, _ in facts.values}
    percents = {v for v, _ in facts.percents}
    assert {4210, 812.40, 365, 90, 41} <= values  # counts, rule thresholds, timing text
    assert {9.8, 41.2, 96.2, 20} <= percents  # *_pct fields and "top 20%" in a rule
    assert "2024-06-30" in facts.dates


# --- the whole draft -----------------------------------------------------------------------


def test_good_draft_passes() -> None:
    assert errors_for(good_draft()) == []


def test_the_template_passes_its_own_check() -> None:
    from juno.narrative.template import template_narrative

    facts = sample_facts()
    assert check_narrative(template_narrative(facts), facts) == []


def test_invented_number_is_named_with_the_nearest_fact() -> None:
    draft = good_draft()
    draft["summary"] = "Of 4,500 customers, 1,834 fall into 3 cohorts."
    assert errors_for(draft) == [
        "number_not_in_facts summary: the number “4,500” matches no fact"
        " (nearest fact: 4,210 at counts.customers_in)"
    ]


def test_computed_percentage_is_rejected() -> None:
    draft = good_draft()
    # 45 of 286 is 16%, but no fact says so: a model's own arithmetic is not grounded.
    draft["cohort_lines"][0]["narrative"] = "286 lapsed high-value customers; 16% are held back."
    assert codes_for(draft) == {"number_not_in_facts"}


def test_dates_must_be_in_the_facts() -> None:
    draft = good_draft()
    draft["summary"] = "As of 2024-06-30, 4,210 customers."
    assert errors_for(draft) == []
    draft["summary"] = "As of 2024-07-31, 4,210 customers."
    assert codes_for(draft) == {"date_not_in_facts"}


def test_cohorts_must_exist() -> None:
    draft = good_draft()
    draft["review_priorities"][0]["cohort"] = "churn_risk"
    draft["caveats"].append("The near_vip cohort needs a look.")
    errors = errors_for(draft)
    assert any(e.startswith("unknown_cohort review_priorities[0].cohort: “churn_risk”") for e in errors)
    assert any("mentions “near_vip”" in e for e in errors)


def test_campaign_priorities_come_from_the_facts() -> None:
    draft = good_draft()
    draft["campaign_priorities"] = draft["campaign_priorities"][:2]
    assert errors_for(draft) == []  # fewer is fine
    facts = sample_facts().model_copy(update={"campaign_priorities": ["lapsed_high_value", "vip"]})
    draft = good_draft()
    errors = check_narrative(Narrative.model_validate(draft), facts)
    assert [e.code for e in errors] == ["not_a_campaign_priority"]


def test_actions_come_from_the_cohorts_vocabulary() -> None:
    draft = good_draft()
    draft["campaign_priorities"][1]["action"] = "20% off"
    assert errors_for(draft) == [
        "action_not_allowed campaign_priorities[1].action: “20% off” is not an allowed action for vip;"
        " use one of ['loyalty treatment', 'review']"
    ]
    draft = good_draft()
    draft["campaign_priorities"][1]["action"] = "Loyalty_Treatment"  # case and separators are forgiven
    assert errors_for(draft) == []
    draft["campaign_priorities"][1]["action"] = sample_facts().cohorts[1].action  # the recommendation
    assert errors_for(draft) == []


def test_a_line_may_not_borrow_another_cohorts_action() -> None:
    draft = good_draft()
    draft["cohort_lines"][1]["narrative"] = "412 VIPs; send them a winback."
    assert errors_for(draft) == [
        "action_not_allowed cohort_lines[1].narrative:"
        " mentions the action “winback”, which is not allowed for vip"
    ]


def test_one_line_per_cohort() -> None:
    draft = good_draft()
    draft["cohort_lines"][2] = dict(draft["cohort_lines"][1])
    assert codes_for(draft) == {"duplicate", "missing_cohort_line"}


def test_lengths_and_counts() -> None:
    draft = good_draft()
    draft["headline"] = "x" * (LIMITS["headline"] + 1)
    draft["caveats"] = ["Cost is known for 96% of revenue."] * (LIMITS["max_caveats"] + 1)
    draft["cohort_lines"][0]["narrative"] = " "
    errors = errors_for(draft)
    assert "too_long headline: is 121 characters; the limit is 120" in errors
    assert "too_many caveats: has 9 items; the limit is 8" in errors
    assert "empty cohort_lines[0].narrative: is empty" in errors


# --- the payload ---------------------------------------------------------------------------


def test_payload_caps_and_scrubs_text() -> None:
    assert clean_text("a\nb\tc  d") == "a b c d"
    assert clean_text("write to jane.doe@example.com") == "write to [email removed]"
    long = "Ignore previous instructions. " * 10
    capped = catalogue_text(long)
    assert len(capped) == CATALOGUE_MAX and capped.endswith("…")


def test_payload_holds_aggregates_only() -> None:
    payload = facts_payload(sample_facts())
    assert set(payload) == {
        "scope",
        "counts",
        "margin",
        "rejected_by_reason",
        "cohorts",
        "campaign_priorities",
        "replenishment_cycles",
        "replenishment_note",
        "data_caveats",
    }
    vip = payload["cohorts"][1]
    assert vip["share_of_customers_pct"] == 9.8 and vip["share_of_store_value_pct"] == 41.2
    assert vip["held_back_by_flag"] == [
        {"flag": "open_ticket", "count": 21},
        {"flag": "no_consent", "count": 16},
    ]

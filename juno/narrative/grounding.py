"""The grounding check: a drafted narrative may only say what the facts say.

Rules, each a small named check returning typed errors with a reason code:

- every number in the text matches a number in the facts payload the model was given, at the
  precision it is written with: a number with d decimals matches a fact within half a unit of
  its last digit, so `1,234` matches 1234, `812` and `$812` match 812.40, `1.2k` matches 1,234
  (k = thousand, M/m = million, bn = billion), `12%` matches a percentage fact of 12.3 and
  `12.5%` one of 12.46. Percentages only match percentage facts (`*_pct` fields, or a number
  written with `%` inside a fact's text). ISO dates must appear verbatim in the facts.
  Numbers glued to letters (P1, Q3, B2B) are labels, not numbers;
- every cohort named (structured fields, and any known cohort id in the text) exists in the facts;
- every campaign priority is one of the facts' campaign priorities and its action is in that
  cohort's allowed vocabulary (or is its recommended action, verbatim); an action phrase only
  other cohorts own may not appear in a cohort's line, review text or campaign wording;
- one line per cohort, at most 3 campaign priorities, no duplicates, lengths within LIMITS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from juno.brief import Facts, Narrative
from juno.config import COHORT_IDS
from juno.narrative.facts_payload import facts_payload

ReasonCode = Literal[
    "number_not_in_facts",
    "date_not_in_facts",
    "unknown_cohort",
    "not_a_campaign_priority",
    "action_not_allowed",
    "missing_cohort_line",
    "duplicate",
    "too_many",
    "too_long",
    "empty",
]

# Characters per field; list lengths under "max_items".
LIMITS: dict[str, int] = {
    "headline": 120,
    "summary": 700,
    "campaign.action": 80,
    "campaign.timing": 120,
    "campaign.why": 300,
    "review.text": 300,
    "cohort.narrative": 300,
    "cohort.risk_note": 200,
    "caveat": 240,
    "max_campaigns": 3,
    "max_reviews": 6,
    "max_caveats": 8,
}


@dataclass(frozen=True)
class GroundingError:
    """One reason a draft cannot be used as it is."""

    where: str
    code: ReasonCode
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


_DATE = re.compile(r"(?<![0-9])(\d{4})-(\d{2})-(\d{2})(?![0-9])")
_NUMBER = re.compile(
    r"""
    (?<![A-Za-z0-9_.,])                    # not glued to a label (P1) or part of a longer number
    (?P<cur>[$€£¥])?
    (?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)
    (?P<suffix>\s?%|\s?percent\b|[kK](?![A-Za-z])|bn(?![A-Za-z])|[mM](?![A-Za-z]))?
    """,
    re.VERBOSE,
)
_SCALES = {"k": 1e3, "m": 1e6, "bn": 1e9}


@dataclass(frozen=True)
class NumberToken:
    """A number as written in the text."""

    text: str
    value: float
    decimals: int
    kind: Literal["plain", "percent", "compact"]
    scale: float = 1.0

    @property
    def tolerance(self) -> float:
        return 0.5 * 10.0 ** (-self.decimals) + 1e-9


def numbers_in(text: str) -> list[NumberToken]:
    """Every number written in `text` (ISO dates excluded: see dates_in)."""
    out: list[NumberToken] = []
    for m in _NUMBER.finditer(_DATE.sub(" ", text)):
        raw = m.group("num")
        digits = raw.replace(",", "")
        decimals = len(digits.split(".")[1]) if "." in digits else 0
        suffix = (m.group("suffix") or "").strip().lower()
        if suffix in ("%", "percent"):
            out.append(NumberToken(m.group(0).strip(), float(digits), decimals, "percent"))
        elif suffix in _SCALES:
            out.append(NumberToken(m.group(0), float(digits), decimals, "compact", _SCALES[suffix]))
        else:
            out.append(NumberToken(m.group(0), float(digits), decimals, "plain"))
    return out


def dates_in(text: str) -> list[str]:
    return [m.group(0) for m in _DATE.finditer(text)]


@dataclass
class FactNumbers:
    """The numbers a draft may use: (value, where in the facts) pairs."""

    values: list[tuple[float, str]] = field(default_factory=list)
    percents: list[tuple[float, str]] = field(default_factory=list)
    dates: set[str] = field(default_factory=set)

    def add_text(self, text: str, where: str) -> None:
        for d in dates_in(text):
            self.dates.add(d)
            for part in d.split("-"):
                self.values.append((float(part), where))
        for t in numbers_in(text):
            if t.kind == "percent":
                self.percents.append((t.value, where))
            self.values.append((t.value * t.scale, where))

    def matches(self, t: NumberToken) -> bool:
        if t.kind == "percent":
            return any(abs(v - t.value) <= t.tolerance for v, _ in self.percents)
        return any(abs(v / t.scale - t.value) <= t.tolerance for v, _ in self.values)

    def nearest(self, t: NumberToken) -> tuple[float, str] | None:
        pool = self.percents if t.kind == "percent" else self.values
        if not pool:
            return None
        return min(pool, key=lambda p: abs(p[0] / t.scale - t.value))


def fact_numbers(payload: dict[str, Any]) -> FactNumbers:
    """Every number in the payload, and every number written inside its strings."""
    facts = FactNumbers()

    def walk(node: Any, path: str) -> None:
        if isinstance(node, bool) or node is None:
            return
        if isinstance(node, int | float):
            facts.values.append((float(node), path))
            if path.endswith("_pct"):
                facts.percents.append((float(node), path))
        elif isinstance(node, str):
            facts.add_text(node, path)
        elif isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(payload, "")
    return facts


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v == int(v) else f"{v:,.2f}".rstrip("0").rstrip(".")


def _texts(n: Narrative) -> Iterator[tuple[str, str, str | None]]:
    """(where, text, cohort the text is about) for every piece of prose in the draft."""
    yield "headline", n.headline, None
    yield "summary", n.summary, None
    for i, c in enumerate(n.campaign_priorities):
        yield f"campaign_priorities[{i}].action", c.action, c.cohort
        yield f"campaign_priorities[{i}].timing", c.timing, c.cohort
        yield f"campaign_priorities[{i}].why", c.why, c.cohort
    for i, r in enumerate(n.review_priorities):
        yield f"review_priorities[{i}].text", r.text, r.cohort
    for i, line in enumerate(n.cohort_lines):
        yield f"cohort_lines[{i}].narrative", line.narrative, line.cohort
        yield f"cohort_lines[{i}].risk_note", line.risk_note, line.cohort
    for i, cav in enumerate(n.caveats):
        yield f"caveats[{i}]", cav, None


def check_numbers(n: Narrative, payload: dict[str, Any]) -> list[GroundingError]:
    """Ensure every number and date in the prose is one of the facts, at its written precision."""
    facts = fact_numbers(payload)
    errors: list[GroundingError] = []
    for where, text, _ in _texts(n):
        for d in dates_in(text):
            if d not in facts.dates:
                errors.append(GroundingError(where, "date_not_in_facts", f"the date {d} is not in the facts"))
        for t in numbers_in(text):
            if facts.matches(t):
                continue
            near = facts.nearest(t)
            hint = ""
            if near is not None:
                shown = _fmt(near[0]) + ("%" if t.kind == "percent" else "")
                hint = f" (nearest fact: {shown} at {near[1]})"
            kind = "percentage" if t.kind == "percent" else "number"
            errors.append(
                GroundingError(where, "number_not_in_facts", f"the {kind} “{t.text}” matches no fact{hint}")
            )
    return errors


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[_\-]+", " ", s.lower()).split())


def _mentions(text: str, phrase: str) -> bool:
    return re.search(r"(?<![a-z0-9])" + re.escape(_norm(phrase)) + r"(?![a-z0-9])", _norm(text)) is not None


def check_cohorts(n: Narrative, facts: Facts) -> list[GroundingError]:
    """Ensure every cohort named exists, priorities are the facts' and each cohort has one line."""
    known = {c.cohort for c in facts.cohorts}
    errors: list[GroundingError] = []

    def named(where: str, cohort: str) -> bool:
        if cohort in known:
            return True
        errors.append(
            GroundingError(
                where,
                "unknown_cohort",
                f"“{cohort}” is not a cohort in the facts ({', '.join(sorted(known))})",
            )
        )
        return False

    seen: set[str] = set()
    for i, c in enumerate(n.campaign_priorities):
        where = f"campaign_priorities[{i}].cohort"
        if named(where, c.cohort) and c.cohort not in facts.campaign_priorities:
            errors.append(
                GroundingError(
                    where,
                    "not_a_campaign_priority",
                    f"“{c.cohort}” is not one of the campaign priorities {facts.campaign_priorities}",
                )
            )
        if c.cohort in seen:
            errors.append(GroundingError(where, "duplicate", f"“{c.cohort}” is listed twice"))
        seen.add(c.cohort)
    seen = set()
    for i, r in enumerate(n.review_priorities):
        named(f"review_priorities[{i}].cohort", r.cohort)
        if r.cohort in seen:
            errors.append(
                GroundingError(f"review_priorities[{i}].cohort", "duplicate", f"“{r.cohort}” is listed twice")
            )
        seen.add(r.cohort)
    seen = set()
    for i, line in enumerate(n.cohort_lines):
        named(f"cohort_lines[{i}].cohort", line.cohort)
        if line.cohort in seen:
            errors.append(
                GroundingError(f"cohort_lines[{i}].cohort", "duplicate", f"“{line.cohort}” has two lines")
            )
        seen.add(line.cohort)
    for cf in facts.cohorts:
        if cf.cohort not in seen:
            errors.append(
                GroundingError("cohort_lines", "missing_cohort_line", f"no line for the cohort “{cf.cohort}”")
            )
    absent = [cid for cid in COHORT_IDS if cid not in known]
    for where, text, _ in _texts(n):
        for cid in absent:
            if re.search(r"(?<![A-Za-z0-9_])" + cid + r"(?![A-Za-z0-9_])", text):
                errors.append(
                    GroundingError(
                        where, "unknown_cohort", f"mentions “{cid}”, which is not a cohort in the facts"
                    )
                )
    return errors


def check_actions(n: Narrative, facts: Facts) -> list[GroundingError]:
    """Ensure each campaign action is in its cohort's vocabulary and no line borrows another's."""
    allowed = {c.cohort: c.allowed_actions for c in facts.cohorts}
    recommended = {c.cohort: c.action for c in facts.cohorts}
    vocabulary = {a for acts in allowed.values() for a in acts}
    errors: list[GroundingError] = []
    for i, c in enumerate(n.campaign_priorities):
        acts = allowed.get(c.cohort)
        if acts is None:
            continue  # reported as an unknown cohort
        if _norm(c.action) not in {_norm(a) for a in [*acts, recommended[c.cohort]]}:
            errors.append(
                GroundingError(
                    f"campaign_priorities[{i}].action",
                    "action_not_allowed",
                    f"“{c.action}” is not an allowed action for {c.cohort}; use one of {acts}",
                )
            )
    for where, text, cohort in _texts(n):
        if cohort is None or cohort not in allowed or where.endswith(".action"):
            continue
        own = {_norm(a) for a in allowed[cohort]}
        own |= {_norm(p) for p in vocabulary if _mentions(recommended[cohort], p)}
        for phrase in sorted(vocabulary):
            if _norm(phrase) not in own and _mentions(text, phrase):
                errors.append(
                    GroundingError(
                        where,
                        "action_not_allowed",
                        f"mentions the action “{phrase}”, which is not allowed for {cohort}",
                    )
                )
    return errors


def check_lengths(n: Narrative) -> list[GroundingError]:
    """Ensure every field is non-empty where it must be and within LIMITS."""
    errors: list[GroundingError] = []

    def limit(where: str, text: str, key: str, required: bool = True) -> None:
        if required and not text.strip():
            errors.append(GroundingError(where, "empty", "is empty"))
        elif len(text) > LIMITS[key]:
            errors.append(
                GroundingError(where, "too_long", f"is {len(text)} characters; the limit is {LIMITS[key]}")
            )

    limit("headline", n.headline, "headline")
    limit("summary", n.summary, "summary")
    for i, c in enumerate(n.campaign_priorities):
        limit(f"campaign_priorities[{i}].action", c.action, "campaign.action")
        limit(f"campaign_priorities[{i}].timing", c.timing, "campaign.timing")
        limit(f"campaign_priorities[{i}].why", c.why, "campaign.why")
    for i, r in enumerate(n.review_priorities):
        limit(f"review_priorities[{i}].text", r.text, "review.text")
    for i, line in enumerate(n.cohort_lines):
        limit(f"cohort_lines[{i}].narrative", line.narrative, "cohort.narrative")
        limit(f"cohort_lines[{i}].risk_note", line.risk_note, "cohort.risk_note", required=False)
    for i, cav in enumerate(n.caveats):
        limit(f"caveats[{i}]", cav, "caveat")
    for where, items, key in (
        ("campaign_priorities", n.campaign_priorities, "max_campaigns"),
        ("review_priorities", n.review_priorities, "max_reviews"),
        ("caveats", n.caveats, "max_caveats"),
    ):
        if len(items) > LIMITS[key]:
            errors.append(
                GroundingError(where, "too_many", f"has {len(items)} items; the limit is {LIMITS[key]}")
            )
    return errors


def check_narrative(n: Narrative, facts: Facts) -> list[GroundingError]:
    """Every grounding error of a draft, in a stable order (empty: the draft may be used)."""
    payload = facts_payload(facts)
    return [
        *check_lengths(n),
        *check_cohorts(n, facts),
        *check_actions(n, facts),
        *check_numbers(n, payload),
    ]

"""Priority (P1..Pn) and confidence (high/medium/low with reasons) per cohort.

Priority score = value at stake among outreach-ready members x urgency x (1 - 0.5 x held-back share).
Value at stake is each member's value in the window, except lapsed_high_value (lifetime value per
year of tenure: what a year of the relationship was worth) and first_to_second (the first order).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from juno.cohorts import RULES, Context, Membership
from juno.config import Thresholds

URGENCY = {
    "replenishment_ready": 1.5,  # due within days: the window closes
    "lapsed_high_value": 1.3,  # every month lowers the return rate
    "first_to_second": 1.2,  # the second order is most likely soon after the first
    "vip": 1.0,
    "near_vip": 0.9,
    "discount_risk": 0.5,  # its action is mostly suppression: protects margin, earns little directly
}

_LEVEL = {"high": 2, "medium": 1, "low": 0}


@dataclass
class Assessment:
    stake: float
    score: float
    confidence: str
    reasons: list[str]
    stability: float


Level = Literal["high", "medium", "low"]


def value_at_stake(cid: str, ctx: Context, ready: np.ndarray) -> float:
    f = ctx.f
    if cid == "lapsed_high_value":
        years = np.maximum(f["tenure_days"].to_numpy(float) / 365.0, 1.0)
        v = f["value_lifetime"].to_numpy(float) / years
    elif cid == "first_to_second":
        v = f["value_lifetime"].to_numpy(float)
    else:
        v = f["value_window"].to_numpy(float)
    return float(np.nansum(np.where(ready, v, 0.0)))


def priority_score(cid: str, stake: float, size: int, held: int) -> float:
    held_share = held / size if size else 0.0
    return stake * URGENCY.get(cid, 1.0) * (1 - 0.5 * held_share)


def _perturbed(th: Thresholds, key: str, factor: float) -> Thresholds | None:
    value = getattr(th, key)
    if value is None:
        return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        # A small count (2 orders) cannot move by 10%; moving it by 1 would be a 50% move.
        moved = round(value * factor)
        if moved == value:
            return None
        new: float | int = max(moved, 1)
    else:
        new = min(value * factor, 0.99) if key.endswith(("_share", "_min", "fraction")) else value * factor
    return th.model_copy(update={key: new})


def stability(
    cid: str,
    mask: np.ndarray,
    th: Thresholds,
    rebuild: Callable[[Thresholds], Context],
) -> tuple[float, str | None]:
    """Worst share of members kept when each of the rule's thresholds moves +-10%."""
    size = int(mask.sum())
    if size == 0:
        return 1.0, None
    worst, worst_key = 1.0, None
    for key in RULES[cid].threshold_keys:
        if not hasattr(th, key):
            continue
        for factor in (0.9, 1.1):
            moved = _perturbed(th, key, factor)
            if moved is None:
                continue
            new_mask = RULES[cid].member_mask(rebuild(moved))
            kept = float((mask & new_mask).sum()) / size
            if kept < worst:
                worst, worst_key = kept, key
    return worst, worst_key


def confidence(
    cid: str,
    m: Membership,
    ctx: Context,
    *,
    history_days: int,
    margin_incomplete: bool,
    margin_coverage: float,
    stable: float,
    unstable_key: str | None,
) -> tuple[Level, list[str]]:
    """The weakest of: size, completeness, history, reorder pairs, stability; with every reason."""
    th = ctx.th
    rule = RULES[cid]
    size = int(m.mask.sum())
    levels: list[Level] = []
    reasons: list[str] = []

    def note(level: Level, text: str) -> None:
        levels.append(level)
        reasons.append(text)

    if size < th.min_cohort_size:
        note(
            "low", f"thin sample: {size} members (< {th.min_cohort_size}); pilot it or merge with a neighbour"
        )
    elif size < 2 * th.min_cohort_size:
        note("medium", f"small cohort: {size} members")
    else:
        note("high", f"{size:,} members")
    if rule.margin_sensitive and margin_incomplete:
        note("medium", f"margin incomplete: cost known for {margin_coverage:.0%} of revenue")
    if "consent_known" not in ctx.cache:  # once per run, not once per cohort
        # Compared as Arrow text (missing counts as known, as an object comparison has it),
        # not as a million Python strings.
        known = ctx.f["email_consent"] != "unknown"
        ctx.cache["consent_known"] = np.asarray(known.to_numpy(dtype=bool, na_value=True))
    consent_known = ctx.cache["consent_known"][m.mask].mean() if size else 1.0
    if consent_known < 0.5:
        note("medium", f"consent unknown for {1 - consent_known:.0%} of members")
    if rule.needs_history:
        if history_days < th.min_history_days:
            note("low", f"short history: {history_days} days (< {th.min_history_days} needed)")
        else:
            note("high", f"{history_days} days of history")
    if cid == "replenishment_ready":
        cyc = ctx.cycles.table
        used = cyc[cyc["replenishable"]]
        if len(used):
            weakest = int(used["pairs"].min())
            if weakest < 2 * th.min_reorder_pairs:
                note("medium", f"a cycle rests on only {weakest} reorder pairs")
            else:
                note("high", f"cycles rest on >= {weakest} reorder pairs each")
    # A share threshold moved by 10% moves about 10% of members by construction: 85% is still high.
    if unstable_key is None or stable >= 0.85:
        note("high", f"stable: {stable:.0%} of members stay when thresholds move +-10%")
    elif stable >= 0.7:
        note("medium", f"{stable:.0%} of members stay when {unstable_key} moves +-10%")
    else:
        note("low", f"unstable: only {stable:.0%} stay when {unstable_key} moves +-10%")
    overall = min(levels, key=lambda lv: _LEVEL[lv])
    return overall, reasons

"""From signals to the classified customer table and the cohort facts (no I/O, no narrative)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from juno import background
from juno.assess import confidence, priority_score, stability, value_at_stake
from juno.brief import CohortFacts, FlagCount
from juno.checks import HOLD_FLAGS, Coded, Flags, compute_flags, flag_codes, held_back, next_action_codes
from juno.cohorts import (
    RULES,
    Context,
    Membership,
    make_context,
    primary_codes,
    reads_cycles,
    vip_excluded_for_discounts,
)
from juno.config import Config, Thresholds
from juno.cycles import Cycles, PurchaseHistory, estimate_cycles, purchase_history
from juno.grouping import STR, subset_codes
from juno.memory import release_free_memory
from juno.signals import Signals
from juno.validate import Store

TIMING = {
    "replenishment_ready": "now: products fall due within {lead} days",
    "lapsed_high_value": "this week, personal outreach before any offer",
    "first_to_second": "at day {median} after the first order (the store's median gap)",
    "vip": "with the next launch or early-access moment",
    "near_vip": "this month",
    "discount_risk": "before the next discount campaign goes out",
}


@dataclass
class Classification:
    ctx: Context
    cycles: Cycles
    memberships: dict[str, Membership]
    primary: np.ndarray  # per customer its primary cohort, '' when none
    primary_code: np.ndarray  # the same as an index into primary_names (cohorts.primary_codes)
    primary_names: list[str]
    flags: Flags
    held: np.ndarray
    action_codes: Coded  # the next action per customer (checks.next_action_codes)
    cohort_facts: list[CohortFacts]
    vip_discount_excluded: int
    margin_incomplete: bool
    # The customer table's cohorts and reason_codes columns (member_texts), built on a second
    # thread while the cohort facts are computed; customer_table takes them.
    member_texts: Future[tuple[Any, Any]] | None = field(default=None, repr=False)

    @property
    def actions(self) -> np.ndarray:
        """The next action per customer, as text."""
        return self.action_codes.values()


def definition(cid: str, config: Config, value_column: str) -> str:
    """The rule as configured, not as resolved on this data: same config, same definition.

    The resolved rule (the actual value cut) moves every week with the data; review decisions
    carry forward while the definition stays the same.
    """
    th = config.thresholds
    parts = [f"{k} = {getattr(th, k)}" for k in RULES[cid].threshold_keys]
    parts += [f"window_days = {config.window_days}", f"value = {value_column}"]
    return f"{cid}: " + ", ".join(parts)


def run_classification(store: Store, signals: Signals, config: Config) -> Classification:
    f = signals.frame
    code = signals.order_codes
    assert code is not None, "signals come from compute_signals"
    # The purchase history may still be being built on the signals' thread: the rules that do
    # not read the cycles, and their stability re-runs, go first; the cycles are made when
    # first read (by the replenishment rule, or the checks).
    @cache
    def history() -> PurchaseHistory:
        found = signals.take_history() or purchase_history(
            store, code, signals.category_codes, signals.orders_by_customer
        )
        release_free_memory()  # the history's sorts leave ~0.4 GB of freed heap at 1M customers
        return found

    @cache
    def the_cycles() -> Cycles:
        return estimate_cycles(store, code, signals.as_of, config.thresholds, history())

    cycle_cache: dict[tuple[int, int, float], Cycles | Callable[[], Cycles]] = {}

    def rebuild(th: Thresholds) -> Context:
        key = (th.min_reorder_pairs, th.lead_days, th.overdue_fraction)
        if key not in cycle_cache:
            same = key == (
                config.thresholds.min_reorder_pairs,
                config.thresholds.lead_days,
                config.thresholds.overdue_fraction,
            )
            # Stability needs only who is due under the moved thresholds.
            cycle_cache[key] = (
                the_cycles
                if same
                else estimate_cycles(store, code, signals.as_of, th, history(), due_customers_only=True)
            )
        return make_context(signals, cycle_cache[key], config, th)

    ctx = make_context(signals, the_cycles, config)
    cohort_ids = [c for c in config.precedence if c in config.cohorts]
    found: dict[str, Membership] = {}
    stability_of: dict[str, tuple[float, str | None]] = {}
    for cid in sorted(cohort_ids, key=reads_cycles):  # the rules that read the cycles last
        found[cid] = RULES[cid].members(ctx)
        stability_of[cid] = stability(cid, found[cid].mask, config.thresholds, rebuild)
    memberships: dict[str, Membership] = {cid: found[cid] for cid in cohort_ids}
    cycles = the_cycles()
    # Every estimate of the cycles is made: the history's per-product arrays (~180 MB at a
    # million customers) go now instead of staying with the context until the outputs are
    # written (the cycles keep what the segment logic reads: the purchase frame's builder).
    history.cache_clear()
    cycle_cache.clear()
    # The texts of who is in which cohort (Arrow string kernels: 0.4 s at a million customers)
    # are built while the cohort facts below (NumPy and Python) are computed.
    texts = background.start(member_texts, memberships, ctx, len(f), name="juno-texts")
    pcode, pnames = primary_codes(memberships, config.precedence, len(f))
    prim = np.asarray(pnames, dtype=object)[pcode]
    flags = compute_flags(ctx, memberships, config, store.subscriptions)
    held = held_back(flags)
    actions = next_action_codes(prim, flags, {c: RULES[c].action for c in cohort_ids}, config, (pcode, pnames))
    margin_incomplete = (not store.has_cost) or (
        1 - signals.margin_coverage > config.thresholds.margin_coverage_min
    )
    vip_excl = int(vip_excluded_for_discounts(ctx).sum()) if "vip" in memberships else 0

    eligible = ctx.eligible
    value = f["value_window"].to_numpy(float)
    total_value = float(np.nansum(np.where(eligible, value, 0.0)))
    margin = f["margin_window"].to_numpy(float)
    population = int(eligible.sum())
    facts: list[CohortFacts] = []
    tiebreak: dict[str, float] = {}
    for cid in cohort_ids:
        m = memberships[cid]
        size = int(m.mask.sum())
        ready = m.mask & ~held
        by_flag = [
            FlagCount(flag=fl, count=int((m.mask & flags.frame[fl].to_numpy(bool)).sum()))
            for fl in HOLD_FLAGS
        ]
        stake = value_at_stake(cid, ctx, ready)
        # Tie-break when nobody is ready (e.g. consent unknown everywhere): the same score over all members.
        tiebreak[cid] = priority_score(cid, value_at_stake(cid, ctx, m.mask), size, 0)
        n_held = int((m.mask & held).sum())
        stable, unstable_key = stability_of[cid]
        conf, reasons = confidence(
            cid,
            m,
            ctx,
            history_days=signals.history_days,
            margin_incomplete=margin_incomplete,
            margin_coverage=signals.margin_coverage,
            stable=stable,
            unstable_key=unstable_key,
        )
        rule = RULES[cid]
        timing = TIMING[cid].format(
            lead=config.thresholds.lead_days,
            median=round(signals.first_to_second_median) if signals.first_to_second_median else 30,
        )
        facts.append(
            CohortFacts(
                cohort=cid,
                title=rule.title,
                size=size,
                share_of_customers=round(size / population, 4) if population else 0.0,
                value_window=round(float(np.nansum(value[m.mask])), 2),
                margin_window=round(float(np.nansum(margin[m.mask])), 2) if store.has_cost else None,
                value_share=round(float(np.nansum(value[m.mask])) / total_value, 4) if total_value else 0.0,
                rule=rule.rule_text(ctx),
                definition=definition(cid, config, signals.value_column),
                value_signal=rule.value_signal,
                risk=rule.risk,
                action=rule.action,
                allowed_actions=list(rule.allowed_actions),
                outreach_ready=int(ready.sum()),
                held_back=n_held,
                held_back_by_flag=[b for b in by_flag if b.count],
                secondary_members=int((m.mask & (pcode != pnames.index(cid))).sum()),
                priority="",
                priority_score=round(priority_score(cid, stake, size, n_held), 2),
                timing=timing,
                confidence=conf,
                confidence_reasons=reasons,
                stability=round(stable, 4),
                thin=size < config.thresholds.min_cohort_size,
                margin_incomplete=rule.margin_sensitive and margin_incomplete,
            )
        )
    release_free_memory()
    order = sorted(facts, key=lambda c: (-c.priority_score, -tiebreak[c.cohort], c.cohort))
    for i, c in enumerate(order, start=1):
        c.priority = f"P{i}"
    return Classification(
        ctx=ctx,
        cycles=cycles,
        memberships=memberships,
        primary=prim,
        primary_code=pcode,
        primary_names=pnames,
        flags=flags,
        held=held,
        action_codes=actions,
        cohort_facts=facts,
        vip_discount_excluded=vip_excl,
        margin_incomplete=margin_incomplete,
        member_texts=texts,
    )


def member_texts(memberships: dict[str, Membership], ctx: Context, n: int) -> tuple[Any, Any]:
    """The cohorts and reason_codes columns: by Arrow, or as objects when it cannot."""
    return _member_texts(memberships, ctx, n) or _member_texts_objects(memberships, ctx, n)


def _text(values: np.ndarray) -> Any:
    """An object array of strings (or NaN) as the DataFrame constructor infers it (dtype 'str';
    left as objects when nothing in it is a string), converted by Arrow in one call."""
    a = pa.array(values, pa.large_string(), from_pandas=True)
    if a.null_count == len(a):
        return values
    return pd.array(a, dtype=STR)


def _as_str(s: pd.Series) -> Any:
    """A text column as `to_numpy()` then inference made it: dtype 'str' (NA as NaN), or the
    objects themselves when it holds no string at all."""
    if s.isna().all():
        return s.to_numpy()
    return s.array if s.dtype == "str" else s.astype("str").array


def _coded(texts: list[str], code: np.ndarray) -> Any:
    """`_text(np.array(texts, dtype=object)[code])` without the objects: one Arrow take."""
    if len(code) == 0:
        return _text(np.array(texts, dtype=object)[code])
    a = pa.array(texts, pa.large_string()).take(pa.array(code))
    return pd.array(a, dtype=STR)


def _coded_with(texts: list[str], code: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray]]) -> Any:
    """`_coded(texts, code)` with the cells at each `rows` index array set to its own texts
    (objects: str, or NaN for none), later ones over earlier ones; as `_text` of the object
    array built that way."""

    def objects() -> Any:
        values = np.array(texts, dtype=object)[code]
        for idx, cells in rows:
            values[idx] = cells
        return _text(values)

    if len(code) == 0:
        return objects()
    a = pa.array(texts, pa.large_string()).take(pa.array(code))
    for idx, cells in rows:
        mask = np.zeros(len(code), dtype=bool)
        mask[idx] = True
        a = pc.replace_with_mask(a, pa.array(mask), pa.array(cells, pa.large_string(), from_pandas=True))
    if a.null_count == len(a):  # no text at all: left as objects, as `_text` leaves them
        return objects()
    return pd.array(a, dtype=STR)


_STATUS = ("classified", "excluded", "merged", "unclassified")
_WHY_FIXED = ("no orders", "only cancelled or fully refunded orders", "no cohort rule met")


_VIP_NOTE = "not vip: discount-dependent high spender"


def _member_texts_objects(memberships: dict[str, Membership], ctx: Context, n: int) -> tuple[Any, Any]:
    """The cohorts and reason_codes columns built as object arrays (any reasons, any size)."""
    cohorts_col = np.full(n, "", dtype=object)
    reasons = np.full(n, "", dtype=object)
    for cid in list(memberships):
        m = memberships[cid]
        # Members' cells only: string work over every customer costs seconds per million.
        idx = np.flatnonzero(m.mask)
        if len(idx) == 0:  # np.char.replace fails on an empty array
            continue
        cur = cohorts_col[idx]
        cohorts_col[idx] = np.where(cur == "", cid, cur + ";" + cid)
        text = cid + ": " + np.char.replace(m.reasons[idx].astype(str), ";", ", ").astype(object)
        cur = reasons[idx]
        reasons[idx] = np.where(cur == "", text, cur + " | " + text)
    if "vip" in memberships:
        idx = np.flatnonzero(vip_excluded_for_discounts(ctx))
        cur = reasons[idx]
        reasons[idx] = np.where(cur == "", _VIP_NOTE, cur + " | " + _VIP_NOTE)
    return _text(cohorts_col), _text(reasons)


_COMBO_SPAN = 1 << 62  # reason combinations are numbered below this (int64)


def _member_texts(memberships: dict[str, Membership], ctx: Context, n: int) -> tuple[Any, Any] | None:
    """`_member_texts_objects` by Arrow: the cohorts a customer is in as a bit code taken from
    the texts of every combination, and the reasons likewise: customers with the same reason in
    every cohort (and the same not-vip note) share one text, joined for one of them and taken
    for all. None when a member's reasons are not all strings (the object path keeps its text)."""
    cids = list(memberships)
    if n == 0 or len(cids) > 12:
        return None
    notes = vip_excluded_for_discounts(ctx) if "vip" in memberships else np.zeros(n, dtype=bool)
    names, code = subset_codes(cids, [memberships[cid].mask for cid in cids], n)
    rows = np.flatnonzero((code != 0) | notes)  # the customers with any reason text
    order: list[str | None] = [*cids, None]  # None: the not-vip note, last
    # Each customer's reasons as one integer: per cohort, the code of its reason text among the
    # cohort's (0: not a member), appended digit by digit (renumbered densely whenever the next
    # digit could overflow). A few hundred distinct reasons at a million customers.
    combo = np.zeros(len(rows), dtype=np.int64)
    span = 1  # combo < span
    for who in order:
        mask = (notes if who is None else np.asarray(memberships[who].mask, dtype=bool))[rows]
        if not mask.any():
            continue
        digit = np.zeros(len(rows), dtype=np.int64)
        if who is None:
            digit[mask] = 1
            base = 2
        else:
            codes, uniques = pd.factorize(memberships[who].reasons[rows[mask]])
            if (codes < 0).any() or not all(isinstance(u, str) for u in uniques):
                return None
            digit[mask] = codes + 1
            base = len(uniques) + 1
        if span > _COMBO_SPAN // base:
            combo, found = pd.factorize(combo)
            span = len(found)
        combo = combo * base + digit
        span *= base
    inverse, found = pd.factorize(combo)
    # One customer per distinct combination: its reasons joined as before, over these rows only.
    one = np.empty(len(found), dtype=np.int64)
    one[inverse] = np.arange(len(rows))  # any of its customers: the text is the same
    acc = _reasons_joined(memberships, notes, order, rows[one])
    where = np.full(n, len(found), dtype=np.int64)
    where[rows] = inverse
    reasons = pa.concat_arrays([acc, pa.array([""], pa.large_string())]).take(pa.array(where))
    return _coded(names, code), pd.array(reasons, dtype=STR)


def _reasons_joined(
    memberships: dict[str, Membership], notes: np.ndarray, order: list[str | None], rows: np.ndarray
) -> pa.Array:
    """The reason_codes text of each of `rows`: per cohort it is in, 'cohort: reasons' (';' as
    ', '), then the not-vip note, joined by ' | ' (Arrow kernels over the rows)."""
    acc: pa.Array | None = None
    sep = pa.scalar(" | ", pa.large_string())
    for who in order:
        mask = (notes if who is None else np.asarray(memberships[who].mask, dtype=bool))[rows]
        if not mask.any():
            continue
        if who is None:
            text = pa.array(np.full(int(mask.sum()), _VIP_NOTE, dtype=object), pa.large_string())
        else:
            raw = pa.array(memberships[who].reasons[rows[mask]], pa.large_string())
            prefix = pa.scalar(who + ": ", pa.large_string())
            empty = pa.scalar("", pa.large_string())
            text = pc.binary_join_element_wise(prefix, pc.replace_substring(raw, ";", ", "), empty)
        spread = text.take(pa.array(np.cumsum(mask) - 1, mask=~mask))  # null off the cohort
        # Appended after the cohorts before it, as ' | ' joins them; absent where it has no text.
        acc = spread if acc is None else pc.coalesce(pc.binary_join_element_wise(acc, spread, sep), acc, spread)
    if acc is None:
        return pa.array([""] * len(rows), pa.large_string())
    return acc.fill_null("") if acc.null_count else acc


def customer_table(
    signals: Signals,
    cl: Classification,
    contacts: pd.DataFrame | None = None,
    signals_part: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Every input customer: classified, or with the reason it is not.

    `contacts` (the store's customers, row-aligned with the signals) adds email and phone, which
    the reviewed member files need. `signals_part`: `signal_columns(signals, contacts)`, when
    taken already (its columns are then the table's own).
    """
    f = signals.frame
    n = len(f)
    prio = {c.cohort: c.priority for c in cl.cohort_facts}
    started, cl.member_texts = cl.member_texts, None
    prim = cl.primary
    classified = cl.primary_code != 0  # primary_names[0] is '' (none)
    excluded = f["excluded"].to_numpy(bool)
    merged = f["merged_into"].notna().to_numpy(bool)
    no_orders = f["orders_all_lifetime"].to_numpy() == 0
    only_void = (f["orders_lifetime"].to_numpy() == 0) & ~no_orders
    # The first reason that applies, as np.select over [classified, excluded, merged, no orders,
    # only void] would pick: codes into the fixed texts filled in reverse, then the variable
    # texts (merged, excluded) for their rows only.
    why_code = np.full(n, 2, dtype=np.int8)
    why_code[only_void] = 1
    why_code[no_orders] = 0
    why_code[classified] = 3
    why_rows: list[tuple[np.ndarray, np.ndarray]] = []
    idx = np.flatnonzero(merged & ~excluded & ~classified)
    if len(idx):
        why_rows.append((idx, ("merged into " + f["merged_into"].take(idx).fillna("")).to_numpy(object)))
    idx = np.flatnonzero(excluded & ~classified)
    if len(idx):
        why_rows.append((idx, f["excluded_reason"].take(idx).to_numpy(object)))
    status = np.full(n, 3, dtype=np.int8)
    status[merged] = 2
    status[excluded] = 1
    status[classified] = 0
    # Primary cohort and its priority as codes into the few texts they take.
    names = ["", *cl.memberships]
    # primary_names to names: the memberships hold every cohort a primary comes from.
    to_names = np.array([names.index(c) if c in names else -1 for c in cl.primary_names], dtype=np.int64)
    pcode = to_names[cl.primary_code]
    if (pcode >= 0).all():
        primary_col = _coded(names, pcode)
        priority_col = _coded(["", *[prio.get(c, "") for c in names[1:]]], pcode)
    else:  # a primary cohort outside the memberships: text as it is
        priority = np.full(n, "", dtype=object)
        for cohort, p in prio.items():
            priority[prim == cohort] = p
        primary_col, priority_col = _text(prim), _text(priority)
    flags_col = _coded(*flag_codes(cl.flags))
    action_col = _coded(cl.action_codes.texts, cl.action_codes.codes)
    detail_col = _coded(cl.flags.detail_codes.texts, cl.flags.detail_codes.codes)
    why_col = _coded_with([*_WHY_FIXED, ""], why_code, why_rows)
    # The member texts are built on a thread while the columns above are: taken last.
    cohorts_col, reasons_col = started.result() if started is not None else member_texts(cl.memberships, cl.ctx, n)
    cols: dict[str, Any] = {
        "customer_id": _as_str(f["customer_id"]),
        "status": _coded(list(_STATUS), status),
        "primary_cohort": primary_col,
        "cohorts": cohorts_col,
        "flags": flags_col,
        "held_back": cl.held & classified,
        "next_action": action_col,
        "priority": priority_col,
        "reason_codes": reasons_col,
        "flag_detail": detail_col,
        "unclassified_reason": why_col,
    }
    tail = signal_columns(signals, contacts) if signals_part is None else signals_part
    out = pd.DataFrame({**cols, **{k: v for k, v in tail.items() if k not in _CONTACTS}}, copy=False)
    for col in _CONTACTS:
        if col in tail:
            out[col] = tail[col]
    return out


# The customer table's columns after the classification's own, in order: the signals, then
# email and phone when the contacts are given.
SIGNAL_COLUMNS = (
    "orders_window",
    "orders_lifetime",
    "net_revenue_window",
    "net_revenue_lifetime",
    "margin_window",
    "value_window",
    "value_lifetime",
    "value_score",
    "first_order_at",
    "last_order_at",
    "recency_days",
    "tenure_days",
    "median_gap_days",
    "discount_share_window",
    "discount_rate_window",
    "refund_rate",
    "top_category",
    "categories",
    "subscription_status",
    "tickets_window",
    "open_tickets",
    "email_consent",
    "sms_consent",
    "email_ok",
    "sms_ok",
    "duplicate_group",
)
_CONTACTS = ("email", "phone")


def signal_columns(signals: Signals, contacts: pd.DataFrame | None = None) -> dict[str, Any]:
    """The customer table's columns that no classification changes (`SIGNAL_COLUMNS`, then
    email and phone from `contacts`): known once the signals are, shared with them, not copied.
    `customer_table` takes them as they are, so their text can be made ahead of it."""
    f = signals.frame
    shared = f.index.equals(pd.RangeIndex(len(f)))
    cols: dict[str, Any] = {}
    for col in SIGNAL_COLUMNS:
        s = f[col]
        if isinstance(s.dtype, pd.StringDtype):
            cols[col] = _as_str(s)
        else:  # numbers and dates: the signals' own Series, shared until written to (copy on write)
            cols[col] = s if shared else s.to_numpy()
    if contacts is not None:
        for col in _CONTACTS:
            if col in contacts and isinstance(contacts[col].dtype, pd.StringDtype):
                cols[col] = _as_str(contacts[col])
            else:
                cols[col] = contacts[col].to_numpy() if col in contacts else None
    return cols

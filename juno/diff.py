"""Run-to-run diff: who moved between cohorts, who joined and left, which VIPs are lapsing.

Reads two run folders (customers.csv, cohorts.csv, run.json, and review.toml when present), so a
weekly review starts from what changed. Computes plain data; `render_markdown` only formats it.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from juno.config import COHORT_IDS
from juno.errors import JunoError
from juno.render import FORMULA_START

NONE = "(none)"
SAMPLE = 20


@dataclass
class RunSnapshot:
    """The parts of a run folder a diff needs."""

    path: Path
    as_of: str
    customers: pd.DataFrame  # customer_id, status, primary_cohort, cohorts (list), value_window, ...
    cohorts: pd.DataFrame  # cohorts.csv indexed by cohort
    decisions: dict[str, dict[str, str]]  # cohort -> decision/action/channel/notes (review.toml)


@dataclass
class CohortChange:
    cohort: str
    size_old: int | None
    size_new: int | None
    value_old: float | None
    value_new: float | None
    held_back_old: int | None
    held_back_new: int | None
    ready_old: int | None
    ready_new: int | None
    priority_old: str | None
    priority_new: str | None
    confidence_old: str | None
    confidence_new: str | None
    rule_changed: bool
    built_old: bool
    built_new: bool
    joined: int
    left: int
    joined_sample: list[str] = field(default_factory=list)
    left_sample: list[str] = field(default_factory=list)
    joined_ids: list[str] | None = None
    left_ids: list[str] | None = None


@dataclass
class LapsingVip:
    customer_id: str
    value_window_old: float | None
    now: str  # lapsed_high_value or (none)
    recency_days_new: float | None
    reason_new: str  # why the customer is in no cohort now ('' when lapsed_high_value)


@dataclass
class DecisionChange:
    cohort: str
    field: str
    old: str
    new: str


@dataclass
class RunDiff:
    old: str
    new: str
    old_as_of: str
    new_as_of: str
    customers_old: int
    customers_new: int
    only_in_old: int
    only_in_new: int
    labels: list[str]
    matrix: list[list[int]]  # rows: old primary cohort, columns: new primary cohort
    moved: int  # customers whose primary cohort changed (including to or from none)
    cohorts: list[CohortChange]
    vips_lapsing: list[LapsingVip]
    decisions: list[DecisionChange]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _unescape(s: pd.Series) -> pd.Series:
    """Undo the spreadsheet-formula escaping that customers.csv applies to text cells."""
    t = s.astype("string").fillna("")
    escaped = t.str.startswith("'") & t.str.slice(1, 2).isin(list(FORMULA_START))
    return t.where(~escaped, t.str.slice(1))


def _read_decisions(path: Path) -> dict[str, dict[str, str]]:
    """review.toml's per-cohort decisions, or nothing when absent or unreadable (never fatal)."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    cohorts = data.get("cohorts")
    if not isinstance(cohorts, dict):
        return {}
    out: dict[str, dict[str, str]] = {}
    for cid, entry in cohorts.items():
        if isinstance(entry, dict):
            out[str(cid)] = {
                k: str(entry[k]) for k in ("decision", "action", "channel", "notes") if k in entry
            }
    return out


def load_run(folder: str | Path) -> RunSnapshot:
    """Read a run folder; a missing or malformed file is a JunoError naming it."""
    path = Path(folder)
    need = ["customers.csv", "cohorts.csv", "run.json"]
    missing = [n for n in need if not (path / n).is_file()]
    if missing:
        raise JunoError(
            f"{path} is not a Juno run folder (missing {', '.join(missing)})",
            file=str(path),
            expected="a folder written by `juno run` holding customers.csv, cohorts.csv and run.json",
        )
    try:
        info = json.loads((path / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise JunoError(f"run.json cannot be read: {exc}", file=str(path / "run.json")) from exc
    cust = pd.read_csv(path / "customers.csv", dtype="string", keep_default_na=False)
    for col in ("customer_id", "primary_cohort", "cohorts"):
        if col not in cust.columns:
            raise JunoError(
                "customers.csv lacks a column Juno writes",
                file=str(path / "customers.csv"),
                column=col,
                expected="customers.csv as written by `juno run`",
            )
    cust["customer_id"] = _unescape(cust["customer_id"])
    cust["cohort_list"] = cust["cohorts"].str.split(";").map(lambda v: [c for c in v if c])
    for col in ("value_window", "recency_days"):
        if col in cust.columns:
            cust[col] = pd.to_numeric(cust[col], errors="coerce")
    cohorts = pd.read_csv(path / "cohorts.csv", dtype="string", keep_default_na=False)
    if "cohort" not in cohorts.columns:
        raise JunoError(
            "cohorts.csv lacks the cohort column", file=str(path / "cohorts.csv"), column="cohort"
        )
    return RunSnapshot(
        path=path,
        as_of=str(info.get("as_of", "")),
        customers=cust.set_index("customer_id", drop=False),
        cohorts=cohorts.set_index("cohort", drop=False),
        decisions=_read_decisions(path / "review.toml"),
    )


def _cell(frame: pd.DataFrame, cohort: str, col: str) -> str | None:
    if cohort not in frame.index or col not in frame.columns:
        return None
    v = frame.at[cohort, col]
    return None if v is None or v is pd.NA or str(v) == "" else str(v)


def _at(frame: pd.DataFrame, row: str, col: str) -> float | None:
    """A numeric cell, or None when the row, the column or the value is missing."""
    if row not in frame.index or col not in frame.columns:
        return None
    v = pd.to_numeric(pd.Series([frame.at[row, col]]), errors="coerce").iloc[0]
    return None if pd.isna(v) else float(v)


def _int(v: str | None) -> int | None:
    return None if v is None else int(float(v))


def _float(v: str | None) -> float | None:
    return None if v is None else float(v)


def _members(snap: RunSnapshot, cohort: str) -> set[str]:
    has = snap.customers["cohort_list"].map(lambda cs: cohort in cs).to_numpy(bool)
    return set(snap.customers.index[has])


def diff_runs(old: RunSnapshot, new: RunSnapshot, *, all_ids: bool = False) -> RunDiff:
    """Everything that changed between two runs, as data."""
    present = [c for c in COHORT_IDS if c in set(old.cohorts.index) | set(new.cohorts.index)]
    labels = [*present, NONE]
    ids = old.customers.index.union(new.customers.index)
    p_old = old.customers["primary_cohort"].reindex(ids).fillna("").replace("", NONE)
    p_new = new.customers["primary_cohort"].reindex(ids).fillna("").replace("", NONE)
    # Cohorts outside the known list (should not happen) still show up rather than vanish.
    p_old = p_old.where(p_old.isin(labels), NONE)
    p_new = p_new.where(p_new.isin(labels), NONE)
    cross = pd.crosstab(p_old, p_new).reindex(index=labels, columns=labels, fill_value=0)
    matrix = [[int(v) for v in row] for row in cross.to_numpy()]

    changes = []
    for c in present:
        was, now = _members(old, c), _members(new, c)
        joined, left = sorted(now - was), sorted(was - now)
        changes.append(
            CohortChange(
                cohort=c,
                size_old=_int(_cell(old.cohorts, c, "size")),
                size_new=_int(_cell(new.cohorts, c, "size")),
                value_old=_float(_cell(old.cohorts, c, "value_window")),
                value_new=_float(_cell(new.cohorts, c, "value_window")),
                held_back_old=_int(_cell(old.cohorts, c, "held_back")),
                held_back_new=_int(_cell(new.cohorts, c, "held_back")),
                ready_old=_int(_cell(old.cohorts, c, "outreach_ready")),
                ready_new=_int(_cell(new.cohorts, c, "outreach_ready")),
                priority_old=_cell(old.cohorts, c, "priority"),
                priority_new=_cell(new.cohorts, c, "priority"),
                confidence_old=_cell(old.cohorts, c, "confidence"),
                confidence_new=_cell(new.cohorts, c, "confidence"),
                rule_changed=_cell(old.cohorts, c, "definition") != _cell(new.cohorts, c, "definition"),
                built_old=c in old.cohorts.index,
                built_new=c in new.cohorts.index,
                joined=len(joined),
                left=len(left),
                joined_sample=joined[:SAMPLE],
                left_sample=left[:SAMPLE],
                joined_ids=joined if all_ids else None,
                left_ids=left if all_ids else None,
            )
        )

    vips_before = sorted(_members(old, "vip"))
    now_lists: dict[str, list[str]] = dict(
        zip(new.customers.index.tolist(), new.customers["cohort_list"].tolist(), strict=True)
    )
    reasons: dict[str, str] = (
        dict(zip(new.customers.index.tolist(), new.customers["unclassified_reason"].tolist(), strict=True))
        if "unclassified_reason" in new.customers
        else {}
    )
    lapsing = []
    for cid in vips_before:
        now_list = now_lists.get(cid, [])
        if "lapsed_high_value" in now_list or not now_list:
            if now_list:
                why = ""
            elif cid not in now_lists:
                why = "not in the new run"
            else:
                why = str(reasons.get(cid, ""))
            lapsing.append(
                LapsingVip(
                    customer_id=cid,
                    value_window_old=_at(old.customers, cid, "value_window"),
                    now="lapsed_high_value" if "lapsed_high_value" in now_list else NONE,
                    recency_days_new=_at(new.customers, cid, "recency_days"),
                    reason_new=why,
                )
            )
    lapsing.sort(key=lambda v: (-(v.value_window_old or 0.0), v.customer_id))

    decisions = []
    for c in sorted(set(old.decisions) | set(new.decisions), key=lambda c: (c not in present, c)):
        a, b = old.decisions.get(c, {}), new.decisions.get(c, {})
        for key in ("decision", "action", "channel"):
            if key in a and key in b and a[key] != b[key]:
                decisions.append(DecisionChange(c, key, a[key], b[key]))

    return RunDiff(
        old=str(old.path),
        new=str(new.path),
        old_as_of=old.as_of,
        new_as_of=new.as_of,
        customers_old=len(old.customers),
        customers_new=len(new.customers),
        only_in_old=int((~old.customers.index.isin(new.customers.index)).sum()),
        only_in_new=int((~new.customers.index.isin(old.customers.index)).sum()),
        labels=labels,
        matrix=matrix,
        moved=int((p_old.to_numpy() != p_new.to_numpy()).sum()),
        cohorts=changes,
        vips_lapsing=lapsing,
        decisions=decisions,
    )


def diff(old: str | Path, new: str | Path, *, all_ids: bool = False) -> RunDiff:
    """Compare two run folders."""
    return diff_runs(load_run(old), load_run(new), all_ids=all_ids)


# ---------------------------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------------------------


def _n(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "–"
    d = b - a
    return "0" if d == 0 else f"{d:+,.0f}"


def _rule_state(c: CohortChange) -> str:
    if not c.built_old:
        return "not built before"
    if not c.built_new:
        return "not built now"
    return "changed" if c.rule_changed else "same"


def _change(a: str | None, b: str | None) -> str:
    return (b or "–") if a == b else f"{a or '–'} → {b or '–'}"


def _ids(sample: list[str], total: int, show: int = 8) -> str:
    if not sample:
        return ""
    more = " …" if total > show else ""
    return " (" + ", ".join(_md(i) for i in sample[:show]) + more + ")"


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(d: RunDiff) -> str:
    out = [
        f"# Juno diff: {_md(d.old_as_of)} → {_md(d.new_as_of)}",
        "",
        f"Old run `{_md(d.old)}` ({d.customers_old:,} customers), new run `{_md(d.new)}`"
        f" ({d.customers_new:,} customers); {d.only_in_new:,} customers only in the new run,"
        f" {d.only_in_old:,} only in the old. {d.moved:,} customers changed primary cohort.",
        "",
        *(
            ["> The old run is dated after the new one: check the order of the arguments.", ""]
            if d.old_as_of and d.new_as_of and d.old_as_of > d.new_as_of
            else []
        ),
        "## Migration of primary cohorts (rows: old, columns: new)",
        "",
        "| old \\ new | " + " | ".join(d.labels) + " | total |",
        "|---|" + "---:|" * (len(d.labels) + 1),
    ]
    for i, (label, row) in enumerate(zip(d.labels, d.matrix, strict=True)):
        cells = [f"**{v:,}**" if i == j and v else f"{v:,}" for j, v in enumerate(row)]
        out.append(f"| {label} | " + " | ".join(cells) + f" | {sum(row):,} |")
    totals = np.asarray(d.matrix, dtype=int).sum(axis=0) if d.matrix else []
    out.append("| total | " + " | ".join(f"{int(v):,}" for v in totals) + f" | {int(sum(totals)):,} |")
    out += [
        "",
        "## Cohorts",
        "",
        "| cohort | size | Δ size | value | Δ value | held back | Δ held | ready | joined | left | priority |"
        " confidence | rule |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for c in d.cohorts:
        prio = _change(c.priority_old, c.priority_new)
        conf = _change(c.confidence_old, c.confidence_new)
        out.append(
            f"| {c.cohort} | {_n(c.size_new)} | {_delta(c.size_old, c.size_new)} | {_n(c.value_new)}"
            f" | {_delta(c.value_old, c.value_new)} | {_n(c.held_back_new)}"
            f" | {_delta(c.held_back_old, c.held_back_new)} | {_n(c.ready_new)} | {c.joined:,} | {c.left:,}"
            f" | {prio} | {conf} | {_rule_state(c)} |"
        )
    out += ["", "## New and departed members", ""]
    for c in d.cohorts:
        if not (c.joined or c.left):
            continue
        out.append(
            f"- **{c.cohort}**: +{c.joined:,} joined{_ids(c.joined_sample, c.joined)};"
            f" −{c.left:,} left{_ids(c.left_sample, c.left)}"
        )
    if not any(c.joined or c.left for c in d.cohorts):
        out.append("- No membership changes.")
    out += ["", f"## VIPs lapsing ({len(d.vips_lapsing):,})", ""]
    if d.vips_lapsing:
        out += [
            "| customer | value in window (old) | now | days since last order | why |",
            "|---|---:|---|---:|---|",
        ]
        for v in d.vips_lapsing[:50]:
            out.append(
                f"| {_md(v.customer_id)} | {_n(v.value_window_old)} | {v.now} | {_n(v.recency_days_new)}"
                f" | {_md(v.reason_new)} |"
            )
        if len(d.vips_lapsing) > 50:
            out.append(f"\n{len(d.vips_lapsing) - 50:,} more in `--json`.")
    else:
        out.append("No VIP of the old run is lapsed or out of every cohort now.")
    if d.decisions:
        out += ["", "## Review decisions that changed", ""]
        out += [f"- **{x.cohort}** {x.field}: {_md(x.old)} → {_md(x.new)}" for x in d.decisions]
    return "\n".join(out) + "\n"


def render_json(d: RunDiff) -> str:
    return json.dumps(d.to_dict(), indent=2, ensure_ascii=False) + "\n"

"""From a reviewed run to `final/`: the final brief and member files for approved cohorts.

Files only: nothing is sent to any platform. Refuses while a cohort is pending or when the run's
inputs or files no longer match the fingerprint the decisions were made on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date as Date
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from juno.brief import Brief
from juno.outputs import write_atomically
from juno.render import escape_cells, render_brief_md, write_json
from juno.review import (
    CohortReview,
    Reach,
    Review,
    ReviewError,
    config_sha256,
    load_review,
    primary_members,
    reach,
    reachable_mask,
    read_customers,
)
from juno.sources.csvfiles import sha256_file

FINAL_DIR = "final"
ORDER = {"approve": 0, "hold": 1, "reject": 2, "pending": 3}
# Which contact column the generic file carries per channel.
CONTACT = {
    "email": ["email"],
    "sms": ["phone"],
    "paid_audience": ["email", "phone"],
    "onsite": ["email"],
}
SHOPIFY_COLUMNS = ["Email", "Tags"]
KLAVIYO_COLUMNS = ["Email", "juno_cohort", "juno_next_action", "juno_priority"]


class FingerprintError(ReviewError):
    """The run's inputs or files changed since the decisions were made."""


class NotReadyError(ReviewError):
    """The review is not complete enough to finalize."""


def _input_location(recorded: str, store_given: str, store_abs: str) -> Path:
    """Where an input file recorded at run time lives now (paths in run.json are as given)."""
    p = Path(recorded).expanduser()
    if p.is_absolute() or not store_abs:
        return p
    try:
        return Path(store_abs) / p.relative_to(Path(store_given).expanduser())
    except ValueError:
        return p


def fingerprint_problems(run: Path, review: Review) -> list[str]:
    """Every way the run folder no longer matches its fingerprint (empty when it does)."""
    info_path = run / "run.json"
    if not info_path.is_file():
        return ["run.json is missing"]
    info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
    fp = review.fingerprint
    problems: list[str] = []
    if fp.juno_version != info.get("juno_version"):
        problems.append(
            f"Juno version: review.toml says {fp.juno_version}, run.json {info.get('juno_version')}"
        )
    if fp.config_sha256 != config_sha256(info.get("config", {})):
        problems.append("the config in run.json differs from the one the review was written for")
    recorded = {str(f["path"]): str(f["sha256"]) for f in info.get("inputs", [])}
    if recorded != fp.inputs:
        problems.append("the input files listed in run.json differ from review.toml's fingerprint")
    for name, sha in recorded.items():
        where = _input_location(name, str(info.get("store", "")), fp.store)
        if not where.is_file():
            problems.append(f"input file missing: {where}")
        elif sha256_file(where) != sha:
            problems.append(f"input file changed since the run: {where}")
    for name, sha in fp.outputs.items():
        target = run / name
        if not target.is_file():
            problems.append(f"run file missing: {name}")
        elif sha256_file(target) != sha:
            problems.append(f"run file changed since the run: {name}")
    return problems


def check_ready(run: Path, review: Review) -> None:
    """Refuse to finalize a review that is incomplete or made on other data."""
    if review.pending:
        raise NotReadyError(
            f"{len(review.pending)} cohort(s) still pending: " + ", ".join(review.pending),
            file=str(run / "review.toml"),
            hint="set decision to approve, hold or reject for each cohort",
        )
    for c in review.cohorts.values():
        if c.decision in ("hold", "reject") and not c.notes.strip():
            raise NotReadyError(
                f"{c.cohort} is on {c.decision} without a reason",
                file=str(run / "review.toml"),
                hint=f"say why in notes under [cohorts.{c.cohort}]",
            )
        if c.decision == "approve" and not c.action.strip():
            raise NotReadyError(f"{c.cohort} is approved with an empty action", file=str(run / "review.toml"))
    problems = fingerprint_problems(run, review)
    if problems:
        raise FingerprintError(
            "the run folder no longer matches the data its review was made on",
            file=str(run),
            examples=problems,
            hint="run `juno run` again on the current inputs (use --previous to carry decisions forward)",
        )


# ---------------------------------------------------------------- member files


PHONE_COLUMNS = ("phone", "Phone Number")
# A phone number such as +44 20 7946 0000 starts with `+` but cannot call a function: escaping it
# would break the number for the platform that imports it.
PLAIN_PHONE = r"^\+[0-9 ().\-]{4,30}$"


def _frame(columns: dict[str, Any]) -> pd.DataFrame:
    """Every cell text and formula-escaped: these files open in spreadsheets and platforms."""
    out = pd.DataFrame(columns)
    for col in out.columns:
        text = out[col].astype(str)
        escaped = escape_cells(text).fillna("")
        if col in PHONE_COLUMNS:
            escaped = escaped.where(~text.str.fullmatch(PLAIN_PHONE), text)
        out[col] = escaped
    return out


def _csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n")


def member_files(
    customers: pd.DataFrame, entry: CohortReview, priority: str, folder: Path, tag_date: str
) -> dict[str, Any]:
    """Write the three member files of an approved cohort; return the counts and file names."""
    members = primary_members(customers, entry.cohort)
    _, _, ok = reachable_mask(members, entry.channel)
    reached = members[ok]
    n = len(reached)

    def col(name: str) -> pd.Series:
        return reached[name] if name in reached else pd.Series([""] * n, index=reached.index, dtype=str)

    generic: dict[str, Any] = {"customer_id": reached["customer_id"]}
    for c in CONTACT[entry.channel]:
        generic[c] = col(c)
    generic |= {
        "cohort": [entry.cohort] * n,
        "next_action": [entry.action] * n,
        "priority": [priority] * n,
    }
    base = entry.cohort
    files = {"generic": f"members/{base}.csv"}
    _csv(_frame(generic), folder / files["generic"])
    # Shopify and Klaviyo match profiles on the e-mail address: rows without one cannot be used.
    has_email = col("email").astype(str).str.strip() != ""
    if entry.channel not in ("email", "sms"):
        # Klaviyo list uploads can subscribe profiles: only e-mail-consented members go there.
        klaviyo_rows = reached[has_email & col("email_ok").astype(str).str.lower().eq("true")]
    else:
        klaviyo_rows = reached[has_email] if entry.channel == "email" else reached
    tag = f"juno-{entry.cohort.replace('_', '-')}, juno-{tag_date}"
    with_email = reached[has_email]
    files["shopify"] = f"members/{base}_shopify_customer_tags.csv"
    _csv(
        _frame({"Email": with_email["email"], "Tags": [tag] * len(with_email)}),
        folder / files["shopify"],
    )
    k = len(klaviyo_rows)
    klaviyo: dict[str, Any] = {}
    if entry.channel == "sms":  # Klaviyo wants the identifier first: the phone number for SMS
        klaviyo["Phone Number"] = klaviyo_rows["phone"] if "phone" in klaviyo_rows else [""] * k
    klaviyo |= {
        "Email": klaviyo_rows["email"] if "email" in klaviyo_rows else [""] * k,
        "juno_cohort": [entry.cohort] * k,
        "juno_next_action": [entry.action] * k,
        "juno_priority": [priority] * k,
    }
    files["klaviyo"] = f"members/{base}_klaviyo_profiles.csv"
    _csv(_frame(klaviyo), folder / files["klaviyo"])
    return {
        "files": files,
        "rows": {"generic": n, "shopify": len(with_email), "klaviyo": k},
    }


# ---------------------------------------------------------------- the final brief


@dataclass
class Decision:
    cohort: str
    priority: str
    decision: str
    action: str
    channel: str
    timing: str
    notes: str
    carried_from: str
    reach: Reach
    files: dict[str, str]
    rows: dict[str, int]


def final_brief(brief: Brief, review: Review) -> Brief:
    """The draft's facts and words, with campaign priorities cut to approved cohorts in the
    reviewer's wording, and the DRAFT mark off."""
    approved = {c.cohort: c for c in review.cohorts.values() if c.decision == "approve"}
    narrative = brief.narrative.model_copy(deep=True)
    narrative.campaign_priorities = [
        p.model_copy(update={"action": approved[p.cohort].action, "timing": approved[p.cohort].timing})
        for p in narrative.campaign_priorities
        if p.cohort in approved
    ]
    return brief.model_copy(update={"draft": False, "narrative": narrative})


def final_headline(decisions: list[Decision]) -> str:
    """A headline that cannot contradict the decisions: what goes out, to how many."""
    approved = [d for d in decisions if d.decision == "approve"]
    if not approved:
        return "Nothing approved for outreach"
    parts = [f"{d.cohort} ({_fmt(d.reach.reachable)} by {d.channel})" for d in approved]
    rest = {w: sum(d.decision == w for d in decisions) for w in ("hold", "reject")}
    tail = ", ".join(f"{n} {'held' if w == 'hold' else 'rejected'}" for w, n in rest.items() if n)
    return "Approved: " + ", ".join(parts) + (f"; {tail}" if tail else "")


def _fmt(n: int) -> str:
    return f"{n:,}"


def decisions_md(decisions: list[Decision], reviewer: str, day: str) -> str:
    lines = [f"## Review decisions ({reviewer}, {day})", ""]
    approved = [d for d in decisions if d.decision == "approve"]
    other = [d for d in decisions if d.decision != "approve"]
    if not approved:
        lines.append("No cohort was approved: no member files were written.")
    for d in approved:
        r = d.reach
        excl = [f"{_fmt(r.held_back)} held back"]
        if d.channel != "none":
            excl.append(f"{_fmt(r.no_consent)} without consent or address for {d.channel}")
        lines.append(
            f"- **{d.cohort}** ({d.priority}) — **approved**: {d.action}. *Channel:* {d.channel};"
            f" *when:* {d.timing}. Reaches {_fmt(r.reachable)} of {_fmt(r.members)} primary members"
            f" ({'; '.join(excl)})."
            + (f" Notes: {d.notes}" if d.notes else "")
            + (f" (decision carried from {d.carried_from})" if d.carried_from else "")
        )
        if d.files:
            listed = [f"`{p}` ({_fmt(d.rows[k])} rows)" for k, p in d.files.items()]
            lines.append("  Files: " + ", ".join(listed))
    if other:
        lines += ["", "Not going out:", ""]
    for d in other:
        word = {"hold": "held", "reject": "rejected"}.get(d.decision, d.decision)
        lines.append(
            f"- **{d.cohort}** ({d.priority}) — **{word}**: {d.notes}"
            + (f" (decision carried from {d.carried_from})" if d.carried_from else "")
        )
    lines += [
        "",
        "Member files hold primary members only (one message per customer), with held-back and"
        " non-consenting customers removed. Nothing was sent to any platform. Shopify and Klaviyo files"
        " match on e-mail: rows without an address are left out of them; check how your import treats"
        " existing tags and list consent before uploading.",
    ]
    return "\n".join(lines) + "\n"


def decisions_html(decisions: list[Decision], reviewer: str, day: str) -> str:
    """The review section of brief.html, escaped here because it is added after rendering."""
    items = []
    for d in sorted(decisions, key=lambda d: ORDER[d.decision]):
        if d.decision == "approve":
            text = (
                f"approved: {d.action} — channel {d.channel}, when: {d.timing}; reaches"
                f" {_fmt(d.reach.reachable)} of {_fmt(d.reach.members)} primary members"
                + (f". Notes: {d.notes}" if d.notes else "")
            )
        else:
            text = f"{'held' if d.decision == 'hold' else 'rejected'}: {d.notes}"
        items.append(f"<li><strong>{escape(d.cohort)}</strong> ({escape(d.priority)}) — {escape(text)}</li>")
    return (
        '\n<section class="review-decisions" aria-label="Review decisions">\n'
        f"<h2>Review decisions</h2>\n<p>Reviewed by {escape(reviewer)} on {escape(day)}."
        " Member files were written for approved cohorts; nothing was sent anywhere.</p>\n"
        "<ul>\n" + "\n".join(items) + "\n</ul>\n</section>\n"
    )


def _html(final: Brief, decisions: list[Decision], reviewer: str, day: str) -> str | None:
    """brief.html through the HTML renderer when this Juno has one, with the review added."""
    from juno import report_html

    render = getattr(report_html, "render", None)
    if not callable(render):
        return None
    page = str(render(final))
    section = decisions_html(decisions, reviewer, day)
    cut = page.find("</header>")
    if cut < 0:
        return page.replace("</main>", section + "</main>")
    return page[: cut + 9] + section + page[cut + 9 :]


def finalize(run: Path, reviewer: str, day: Date | None = None) -> Path:
    """Check the review, then write RUN/final/ atomically; returns the final folder."""
    if not reviewer.strip():
        raise NotReadyError("a reviewer name is required", hint="--reviewer NAME")
    review = load_review(run)
    check_ready(run, review)
    when = (day or Date.today()).isoformat()
    brief = Brief.model_validate_json((run / "brief.json").read_text(encoding="utf-8"))
    prio = {c.cohort: c.priority for c in brief.facts.cohorts}
    customers = read_customers(run)
    needs_contact = any(c.decision == "approve" and c.channel != "none" for c in review.cohorts.values())
    if needs_contact and not {"email", "phone"} <= set(customers.columns):
        raise ReviewError(
            "customers.csv has no email/phone columns: member files cannot be written",
            file=str(run / "customers.csv"),
            hint="run `juno run` again with this version of Juno",
        )
    entries = sorted(
        review.cohorts.values(), key=lambda c: (ORDER[c.decision], int(prio.get(c.cohort, "P999")[1:]))
    )
    final = final_brief(brief, review)

    def write(tmp: Path) -> None:
        decisions: list[Decision] = []
        for c in entries:
            files: dict[str, Any] = {"files": {}, "rows": {}}
            if c.decision == "approve" and c.channel != "none":
                files = member_files(customers, c, prio.get(c.cohort, ""), tmp, when)
            decisions.append(
                Decision(
                    cohort=c.cohort,
                    priority=prio.get(c.cohort, ""),
                    decision=c.decision,
                    action=c.action,
                    channel=c.channel,
                    timing=c.timing,
                    notes=c.notes,
                    carried_from=c.carried_from,
                    reach=reach(customers, c.cohort, c.channel),
                    files=files["files"],
                    rows=files["rows"],
                )
            )
        final.narrative.headline = final_headline(decisions)
        text = render_brief_md(final, {"reviewer": reviewer, "date": when})
        section = decisions_md(decisions, reviewer, when)
        # Decisions come first, where the draft's campaign priorities begin.
        cut = text.find("\n## ")
        text = text[:cut] + "\n" + section + text[cut:] if cut >= 0 else text + section
        (tmp / "brief.md").write_text(text, encoding="utf-8")
        page = _html(final, decisions, reviewer, when)
        if page is not None:
            (tmp / "brief.html").write_text(page, encoding="utf-8")
        write_json(
            {
                "reviewer": reviewer,
                "date": when,
                "date_source": "--date" if day else "today (the machine's local date)",
                "run": str(run),
                "fingerprint": asdict(review.fingerprint),
                "decisions": [asdict(d) for d in decisions],
            },
            tmp / "decisions.json",
        )

    out = run / FINAL_DIR
    write_atomically(out, write, force=True)
    return out

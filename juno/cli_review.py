"""`juno review RUN` and `juno finalize RUN --reviewer NAME`: print, and call the library."""

from __future__ import annotations

from datetime import date as Date
from pathlib import Path
from typing import Annotated

import typer

from juno.errors import JunoError

RunArg = Annotated[Path, typer.Argument(help="a run folder written by `juno run`")]


def review_cmd(run: RunArg) -> None:
    """Show each cohort's decision, what is pending, and whom each channel would reach."""
    from juno.finalize import fingerprint_problems
    from juno.review import load_review, reach, read_customers, run_cohorts

    review = load_review(run)
    customers = read_customers(run)
    prio = dict(zip(run_cohorts(run)["cohort"], run_cohorts(run)["priority"], strict=True))
    typer.echo(f"Review of {run} — reviewer: {review.reviewer or '(not set)'}")
    typer.echo(
        f"  {'prio':<4} {'cohort':<20} {'decision':<8} {'channel':<13} {'members':>8} {'held':>7}"
        f" {'no consent':>10} {'reach':>7}"
    )
    for c in review.cohorts.values():
        r = reach(customers, c.cohort, c.channel)
        carried = "  (carried)" if c.carried_from else ""
        typer.echo(
            f"  {prio.get(c.cohort, ''):<4} {c.cohort:<20} {c.decision:<8} {c.channel:<13} {r.members:>8,}"
            f" {r.held_back:>7,} {r.no_consent:>10,} {r.reachable:>7,}{carried}"
        )
        if r.held_by_flag:
            typer.echo("       held: " + ", ".join(f"{v:,} {k}" for k, v in r.held_by_flag.items()))
    typer.echo(
        "  members = customers whose primary cohort it is; reach = members minus held back"
        " (flags) minus those without consent/address for the channel."
    )
    if review.pending:
        typer.echo(f"Pending ({len(review.pending)}): " + ", ".join(review.pending))
        typer.echo(f"  edit {run / 'review.toml'}, then `juno finalize {run} --reviewer NAME`")
    else:
        typer.echo(f"Nothing pending: `juno finalize {run} --reviewer NAME` writes {run / 'final'}/")
    problems = fingerprint_problems(run, review)
    if problems:
        typer.echo("Fingerprint: MISMATCH — finalize will refuse:")
        for p in problems:
            typer.echo(f"  - {p}")
    else:
        typer.echo("Fingerprint: the inputs and run files match what the review was written for.")


def finalize_cmd(
    run: RunArg,
    reviewer: Annotated[str, typer.Option("--reviewer", help="who reviewed the decisions")],
    day: Annotated[
        str | None, typer.Option("--date", help="review date YYYY-MM-DD (default: today)")
    ] = None,
) -> None:
    """Write RUN/final/: the final brief and member files for approved cohorts (files only)."""
    from juno.finalize import finalize

    when: Date | None = None
    if day is not None:
        try:
            when = Date.fromisoformat(day)
        except ValueError:
            raise JunoError("--date must be YYYY-MM-DD", examples=[day]) from None
    out = finalize(run, reviewer, when)
    typer.echo(f"wrote {out}/ (reviewed by {reviewer}; nothing was sent anywhere)")
    for p in sorted(out.rglob("*")):
        if p.is_file():
            typer.echo(f"  {p.relative_to(out)}")


def register(app: typer.Typer) -> None:
    """Add `review` and `finalize` to the app."""
    app.command("review")(review_cmd)
    app.command("finalize")(finalize_cmd)

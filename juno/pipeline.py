"""The pipeline as an ordered list of named steps, run and timed by one loop.

load -> validate -> signals -> classify -> facts -> narrative -> write
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from juno import __version__, background
from juno.brief import Brief, CycleFact, Facts, Narrative, Provenance, ReasonCount, Scope
from juno.classify import Classification, customer_table, run_classification, signal_columns
from juno.config import Config
from juno.narrative import draft_narrative
from juno.outputs import write_atomically
from juno.render import (
    CellsAhead,
    cohorts_frame,
    render_brief_md,
    render_cohorts_md,
    write_csv,
    write_json,
)
from juno.signals import Signals, compute_signals, identity_columns
from juno.sources import read_store
from juno.sources.base import SourceResult
from juno.validate import Store, validate


@dataclass
class RunResult:
    """Everything a run produced, for notebooks and for the CLI."""

    config: Config
    store_path: Path
    store: Store | None = None
    signals: Signals | None = None
    classification: Classification | None = None
    customers: pd.DataFrame | None = None
    brief: Brief | None = None
    out: Path | None = None
    timings: dict[str, float] = field(default_factory=dict)
    previous: Path | None = None  # an earlier run folder whose review decisions carry forward
    # customers.csv's signal columns as text, made during classification (see write_run)
    customers_ahead: CellsAhead | None = field(default=None, repr=False)

    @property
    def cohorts(self) -> pd.DataFrame:
        assert self.brief is not None
        return cohorts_frame(self.brief.facts.cohorts)


def _population_text(config: Config) -> str:
    parts = []
    if config.population.exclude_tags:
        parts.append("excluding tags " + ", ".join(config.population.exclude_tags))
    if config.population.countries:
        parts.append("countries " + ", ".join(config.population.countries))
    return "; ".join(parts) or "all customers"


def build_facts(result: RunResult) -> Facts:
    store, sig, cl = result.store, result.signals, result.classification
    assert store is not None and sig is not None and cl is not None and result.customers is not None
    config = result.config
    cust = result.customers
    rej = store.rejected["reason"].value_counts()
    rejected_by = [
        ReasonCount(reason=str(k), count=int(v))
        for k, v in sorted(rej.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    ready = [c for c in cl.cohort_facts if c.outreach_ready > 0]
    campaign = [c.cohort for c in sorted(ready, key=lambda c: int(c.priority[1:]))][:3]
    cycles = cl.cycles.table
    cyc_facts = [
        CycleFact(
            level=str(r.level),
            product=str(r.product)[:60],
            median_days=round(float(r.median_days), 1),  # type: ignore[arg-type]
            pairs=int(r.pairs),  # type: ignore[arg-type]
            replenishable=bool(r.replenishable),
            reason=str(r.reason),
        )
        for r in cycles.sort_values(["level", "product"]).itertuples()
        if r.level == "category" or r.replenishable
    ]
    repl_note = None
    if "replenishment_ready" in config.cohorts:
        if cl.cycles.reason_none:
            repl_note = "No replenishment cohort: " + cl.cycles.reason_none
        else:
            non = [c for c in cyc_facts if c.level == "category" and not c.replenishable]
            if non:
                repl_note = "No replenishment cycle for " + ", ".join(
                    f'"{c.product}" ({c.reason})' for c in non[:4]
                )
    history = sig.history_days
    dup_groups = int(sig.frame["duplicate_group"].dropna().nunique())
    status = cust["status"]
    scope = Scope(
        store=result.store_path.name or str(result.store_path),
        source=store.source_kind,
        as_of=store.as_of.strftime("%Y-%m-%d %H:%M"),
        as_of_source=store.as_of_source,
        window_days=config.window_days,
        value=sig.value_column.replace("_", " "),
        currency=store.currency,
        population=_population_text(config),
        consent=(
            f"{config.consent.primary_channel} needs {'/'.join(config.consent.email_requires)};"
            f" otherwise {config.consent.fallback_channel.replace('_', ' ')}"
        ),
        cohorts=[c for c in config.precedence if c in config.cohorts],
        precedence=list(config.precedence),
    )
    notes = list(store.notes)
    if config.value == "margin" and sig.value_column != "margin":
        notes.append("value = margin was asked for but no cost is known: net revenue is used")
    return Facts(
        scope=scope,
        customers_in=len(cust),
        customers_classified=int((status == "classified").sum()),
        customers_unclassified=int((status == "unclassified").sum()),
        customers_excluded=int(status.isin(["excluded", "merged"]).sum()),
        orders_used=int(store.orders["counts"].sum()),
        history_days=history,
        margin_coverage=round(sig.margin_coverage, 4),
        consent_known_share=round(float((sig.frame["email_consent"] != "unknown").mean()), 4),
        margin_incomplete=cl.margin_incomplete,
        rejected_rows=len(store.rejected),
        rejected_by_reason=rejected_by,
        duplicate_groups=dup_groups,
        vip_excluded_discount_dependent=cl.vip_discount_excluded,
        cycles=cyc_facts,
        replenishment_note=repl_note,
        cohorts=cl.cohort_facts,
        campaign_priorities=campaign,
        data_notes=notes,
    )


def run_info(result: RunResult) -> dict[str, Any]:
    store, brief = result.store, result.brief
    assert store is not None and brief is not None and result.customers is not None
    rej = store.rejected
    return {
        "juno_version": __version__,
        "store": str(result.store_path),
        "source": store.source_kind,
        "as_of": store.as_of.isoformat(),
        "config": result.config.model_dump(mode="json"),
        "inputs": [
            {"path": f.path, "table": f.table, "format": f.format, "sha256": f.sha256, "rows": f.rows}
            for f in store.files
        ],
        "rows_read": store.rows_read,
        "customers": {
            "in": brief.facts.customers_in,
            "classified": brief.facts.customers_classified,
            "unclassified": brief.facts.customers_unclassified,
            "excluded_or_merged": brief.facts.customers_excluded,
        },
        "rejected": {
            "rows": len(rej),
            "by_reason": {r.reason: r.count for r in brief.facts.rejected_by_reason},
            "revenue": round(float(pd.to_numeric(rej["revenue"], errors="coerce").fillna(0).sum()), 2),
        },
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "narrative": brief.provenance.model_dump(),
    }


def write_run(result: RunResult, out: Path, force: bool = False) -> None:
    brief, store = result.brief, result.store
    assert brief is not None and store is not None and result.customers is not None

    def write(tmp: Path) -> None:
        # customers.csv (320 MB at a million customers) is written on a second thread while the
        # other outputs are; the last extra writer (review.toml, which fingerprints the outputs)
        # waits for it. An error on either side still fails the whole write.
        with ThreadPoolExecutor(max_workers=1) as pool:
            customers_csv = pool.submit(
                write_csv, result.customers, tmp / "customers.csv", result.customers_ahead  # type: ignore[arg-type]
            )
            write_csv(result.cohorts, tmp / "cohorts.csv")
            (tmp / "cohorts.md").write_text(render_cohorts_md(brief), encoding="utf-8")
            (tmp / "brief.md").write_text(render_brief_md(brief), encoding="utf-8")
            write_json(brief.model_dump(mode="json"), tmp / "brief.json")
            write_csv(store.rejected, tmp / "rejected_rows.csv")
            hooks = extra_writers()
            for hook in hooks[:-1]:
                hook(result, tmp)
            customers_csv.result()
        for hook in hooks[-1:]:
            hook(result, tmp)
        write_json(run_info(result), tmp / "run.json")

    write_atomically(out, write, force=force)
    result.out = out


def extra_writers() -> list[Callable[[RunResult, Path], None]]:
    """Outputs owned by other modules: HTML brief, segment logic, review.toml. The last one may
    read the outputs before it (review.toml fingerprints them): it runs once all are written."""
    from juno import report_html, review, segments

    return [report_html.write, segments.write, review.write]


def run(
    store: str | Path,
    out: str | Path | None = None,
    *,
    config: Config | None = None,
    narrative: str | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    source: SourceResult | None = None,
    config_dir: Path | None = None,
    previous: str | Path | None = None,
) -> RunResult:
    """The whole job: from a store folder to a reviewed-ready draft (written to `out` when given)."""
    config = config or Config()
    result = RunResult(config=config, store_path=Path(store), previous=Path(previous) if previous else None)
    state: dict[str, Any] = {"source": source}
    narrative_words: dict[str, tuple[Narrative, Provenance]] = {}

    def load() -> None:
        if state["source"] is None:
            state["source"] = read_store(Path(store), config.mapping, config_dir, defer=True)
            state["read_here"] = True

    def validate_step() -> None:
        def identity(customers: pd.DataFrame) -> None:
            # The duplicate identities need only the customers: found on a second thread while
            # validation waits for the order lines (a wait that leaves a core idle).
            state["identity"] = background.start(identity_columns, customers, config, name="juno-identity")

        # A source read here is ours: validation drops each raw table as soon as it is typed.
        result.store = validate(
            state["source"], config, consume=state.get("read_here", False), customers_final=identity
        )
        state["source"] = None  # the raw string tables: free them before the later steps peak
        result.store.compact()  # joined ids and settled audit columns dropped, SKU/category as codes

    def signals_step() -> None:
        assert result.store is not None
        result.signals = compute_signals(result.store, config, history=True, identity=state.pop("identity", None))

    def classify_step() -> None:
        assert result.store is not None and result.signals is not None
        contacts = result.store.customers
        signals_part = signal_columns(result.signals, contacts)
        if out is not None:
            # customers.csv's signal columns turned into text on a second thread once
            # classification asks for the purchase history: its waiting for it and its last
            # part leave that core idle.
            result.customers_ahead = CellsAhead(signals_part, len(result.signals.frame))
            result.customers_ahead.start(when=result.signals.history_asked)
        result.classification = run_classification(result.store, result.signals, config)
        result.customers = customer_table(
            result.signals, result.classification, contacts=contacts, signals_part=signals_part
        )

    def narrative_step() -> None:
        facts = build_facts(result)
        narrative_words["n"] = draft_narrative(facts, config.narrative, narrative)
        words, prov = narrative_words["n"]
        result.brief = Brief(juno_version=__version__, facts=facts, narrative=words, provenance=prov)

    def write_step() -> None:
        if out is not None:
            write_run(result, Path(out), force=force)

    steps: list[tuple[str, Callable[[], None]]] = [
        ("load", load),
        ("validate", validate_step),
        ("signals", signals_step),
        ("classify", classify_step),
        ("brief", narrative_step),
        ("write", write_step),
    ]
    try:
        for name, step in steps:
            if progress:
                progress(name)
            t0 = time.perf_counter()
            step()
            result.timings[name] = time.perf_counter() - t0
    finally:
        if result.customers_ahead is not None:  # written, or never will be: drop the text
            result.customers_ahead.close()
            result.customers_ahead = None
    return result


def stderr_progress(name: str) -> None:
    print(f"juno: {name}...", file=sys.stderr, flush=True)

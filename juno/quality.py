"""`juno check`: what was read, what was rejected, and whether the store can be used."""

from __future__ import annotations

from pathlib import Path

from juno.config import Config
from juno.errors import JunoError
from juno.signals import compute_signals
from juno.sources import read_store
from juno.validate import validate


def quality_report(store_path: Path, config: Config, config_dir: Path | None) -> tuple[str, bool]:
    """The data-quality report as text, and whether a run can use the store."""
    source = read_store(store_path, config.mapping, config_dir)
    store = validate(source, config)
    sig = compute_signals(store, config)
    f = sig.frame
    th = config.thresholds
    lines = [f"Juno data check: {store_path} ({source.kind} input)", ""]
    lines.append("Tables found:")
    for fi in store.files:
        lines.append(f"  {fi.table:<16} {fi.path}  ({fi.rows:,} rows, {fi.format})")
    for t in ("order_lines", "customers", "support_tickets", "subscriptions"):
        if t not in source.tables:
            lines.append(f"  {t:<16} (absent: optional)")
    lines.append("")
    lines.append("Rows read / used / rejected:")
    rej = store.rejected
    used = {
        "orders": len(store.orders),
        "order_lines": len(store.lines) if store.lines is not None else 0,
        "customers": int(store.customers["in_customers_file"].sum()),
        "support_tickets": len(store.tickets) if store.tickets is not None else 0,
        "subscriptions": len(store.subscriptions) if store.subscriptions is not None else 0,
    }
    for t, n in store.rows_read.items():
        r = int((rej["table"] == t).sum())
        lines.append(f"  {t:<16} read {n:>9,}  used {used.get(t, 0):>9,}  rejected {r:>7,}")
    if len(rej):
        lines.append("  rejected by reason:")
        counts = rej.groupby(["table", "reason"]).size().sort_values(ascending=False)
        for (t, reason), n in zip(counts.index.tolist(), counts.tolist(), strict=True):
            lines.append(f"    {n:>7,}  {t}: {reason}")
    lines.append("")
    orders = store.orders
    first, last = orders["ordered_at"].min(), orders["ordered_at"].max()
    lines.append(f"Customers: {len(f):,} ({int((f['orders_lifetime'] > 0).sum()):,} with a counted order)")
    lines.append(f"Orders: {len(orders):,} ({int((~orders['counts']).sum()):,} cancelled or fully refunded)")
    lines.append(
        f"Date range: {first:%Y-%m-%d} to {last:%Y-%m-%d}; as_of {store.as_of:%Y-%m-%d %H:%M} ({store.as_of_source})"
    )
    lines.append(f"Currency: {store.currency or 'not given'}")
    cov = sig.margin_coverage
    if store.has_cost:
        ok = 1 - cov <= th.margin_coverage_min
        lines.append(
            f"Margin coverage: cost known for {cov:.1%} of net revenue"
            + ("" if ok else f" — margin incomplete (> {th.margin_coverage_min:.0%} missing)")
        )
    else:
        lines.append(
            "Margin coverage: no cost column — margin unknown, margin-sensitive conclusions incomplete"
        )
    known = f["email_consent"] != "unknown"
    lines.append(
        f"Consent: email known for {known.mean():.0%} of customers; "
        f"{int(f['email_ok'].sum()):,} can receive marketing email, {int(f['sms_ok'].sum()):,} SMS"
    )
    if "consent_unrecognised" in store.customers:
        bad = int(store.customers["consent_unrecognised"].sum())
        if bad:
            lines.append(f"  {bad:,} consent values outside the vocabulary were read as 'unknown'")
    groups = f["duplicate_group"].dropna()
    lines.append(
        f"Duplicates: {groups.nunique():,} groups covering {len(groups):,} customer records"
        f" ({'merged' if config.duplicates.merge else 'flagged, not merged'})"
    )
    hist = sig.history_days
    enough = hist >= th.min_history_days
    lines.append(
        f"History: {hist:,} days"
        + (
            ""
            if enough
            else f" — shorter than the {th.min_history_days} days"
            " that lapse and replenishment need: those cohorts get low confidence"
        )
    )
    excluded = int(f["excluded"].sum())
    if excluded:
        lines.append(f"Population: {excluded:,} customers excluded by the population filter")
    if store.notes:
        lines.append("")
        lines.append("Data notes:")
        lines.extend(f"  - {n}" for n in store.notes)
    lines.append("")
    usable = len(orders) > 0
    lines.append("Usable: yes" if usable else "Usable: no")
    return "\n".join(lines), usable


__all__ = ["JunoError", "quality_report"]

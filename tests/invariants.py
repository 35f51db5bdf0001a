"""Reconciliation invariants every run must satisfy, checked on examples, corpus and fuzz runs.

- customers: customers.csv holds exactly the distinct input customers (customers file and
  order rows, used or rejected), once each;
- rows: per table, rows read = rows used + rows rejected;
- revenue: over the orders table, the parseable revenue of all rows = revenue of used orders +
  revenue of rejected orders;
- determinism: the same input gives the same bytes in cohorts.csv and customers.csv.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from juno.parse import parse_number
from juno.pipeline import RunResult, run
from juno.render import FORMULA_START, write_csv
from juno.sources import SourceResult, read_store

INVARIANTS = ("customers", "rows", "revenue", "determinism")


def _clean(s: pd.Series) -> pd.Series:
    t = s.astype("string").str.strip().str.removeprefix("'")
    return t.mask(t == "")


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name]
    return pd.Series(pd.NA, index=frame.index, dtype="string")


def input_customers(source: SourceResult) -> set[str]:
    """Distinct customers named by the input: the customers table, then every order row."""
    ids: set[str] = set()
    email_to_id: dict[str, str] = {}
    if "customers" in source.tables:
        f = source.tables["customers"].frame
        cid = _clean(_column(f, "customer_id"))
        ids |= set(cid.dropna())
        for email, c in zip(_clean(_column(f, "email")).str.lower(), cid, strict=True):
            if not pd.isna(email) and not pd.isna(c):
                email_to_id.setdefault(str(email), str(c))
    f = source.tables["orders"].frame
    email = _clean(_column(f, "email")).str.lower()
    cid = _clean(_column(f, "customer_id"))
    cid = cid.fillna(email.map(email_to_id).astype("string")).fillna(email)
    return ids | set(cid.dropna())


def _used_rows(result: RunResult) -> dict[str, int]:
    store = result.store
    assert store is not None
    return {
        "orders": len(store.orders),
        "order_lines": len(store.lines) if store.lines is not None else 0,
        "customers": int(store.customers["in_customers_file"].fillna(False).astype(bool).sum()),
        "support_tickets": len(store.tickets) if store.tickets is not None else 0,
        "subscriptions": len(store.subscriptions) if store.subscriptions is not None else 0,
    }


def _unescape(s: pd.Series) -> pd.Series:
    risky = s.str.startswith("'") & s.str[1:2].isin(list(FORMULA_START))
    return s.where(~risky, s.str[1:])


def check_customers(result: RunResult, source: SourceResult, out: Path | None) -> None:
    assert result.customers is not None
    expected = input_customers(source)
    got = result.customers["customer_id"].astype("string")
    assert got.is_unique, "a customer appears twice in customers.csv"
    missing, extra = expected - set(got), set(got) - expected
    assert not missing and not extra, f"customers lost: {sorted(missing)[:5]}; invented: {sorted(extra)[:5]}"
    no_reason = (result.customers["status"] != "classified") & (
        result.customers["unclassified_reason"].fillna("").astype(str) == ""
    )
    assert not no_reason.any(), "an unclassified customer has no reason"
    if out is not None:
        written = pd.read_csv(out / "customers.csv", dtype=str, keep_default_na=False)
        assert len(written) == len(expected)
        assert set(_unescape(written["customer_id"].astype("string"))) == expected
        info = json.loads((out / "run.json").read_text(encoding="utf-8"))
        assert info["customers"]["in"] == len(expected)


def check_rows(result: RunResult, source: SourceResult, out: Path | None) -> None:
    store = result.store
    assert store is not None
    rejected = store.rejected["table"].value_counts()
    used = _used_rows(result)
    for table, read in store.rows_read.items():
        lost = read - used[table] - int(rejected.get(table, 0))
        assert lost == 0, f"{table}: {read} read, {used[table]} used, {int(rejected.get(table, 0))} rejected"
    if source.kind == "generic":
        for table, read in store.rows_read.items():
            assert read == sum(f.rows for f in store.files if f.table == table), table
    if out is not None:
        written = pd.read_csv(out / "rejected_rows.csv", dtype=str, keep_default_na=False)
        assert len(written) == len(store.rejected)
        assert (written["reason"] != "").all() and (written["file"] != "").all()
        info = json.loads((out / "run.json").read_text(encoding="utf-8"))
        assert info["rows_read"] == store.rows_read
        assert info["rejected"]["rows"] == len(store.rejected)


def check_revenue(result: RunResult, source: SourceResult) -> None:
    store = result.store
    assert store is not None
    values, _ = parse_number(_column(source.tables["orders"].frame, "revenue"))
    total = math.fsum(values.dropna())
    used = math.fsum(store.orders["revenue"].dropna())
    rej = store.rejected[store.rejected["table"] == "orders"]["revenue"]
    rejected = math.fsum(pd.to_numeric(rej, errors="coerce").dropna())
    assert math.isclose(total, used + rejected, rel_tol=1e-9, abs_tol=0.005), (total, used, rejected)


def check_determinism(result: RunResult, out: Path, scratch: Path, config_dir: Path | None = None) -> None:
    """Run again in memory, render the two files and compare bytes with the written run."""
    again = run(result.store_path, config=result.config, narrative="template", config_dir=config_dir)
    assert again.customers is not None
    scratch.mkdir(parents=True, exist_ok=True)
    write_csv(again.cohorts, scratch / "cohorts.csv")
    write_csv(again.customers, scratch / "customers.csv")
    for name in ("cohorts.csv", "customers.csv"):
        assert (scratch / name).read_bytes() == (out / name).read_bytes(), f"{name} differs between runs"


def check_all(
    result: RunResult, out: Path | None = None, scratch: Path | None = None, config_dir: Path | None = None
) -> list[str]:
    """Every invariant on one run; returns the names checked (determinism needs out and scratch)."""
    source = read_store(result.store_path, result.config.mapping, config_dir)
    check_customers(result, source, out)
    check_rows(result, source, out)
    check_revenue(result, source)
    checked = ["customers", "rows", "revenue"]
    if out is not None and scratch is not None:
        check_determinism(result, out, scratch, config_dir)
        checked.append("determinism")
    return checked

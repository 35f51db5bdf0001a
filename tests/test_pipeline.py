"""End to end on the bundled example store, plus atomic output and reconciliation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_store

import juno
from juno.checks import HOLD_FLAGS
from juno.config import COHORT_IDS, Config
from juno.errors import OutputError

EXAMPLE = Path(__file__).parents[1] / "examples" / "store"
FILES = [
    "cohorts.csv",
    "cohorts.md",
    "customers.csv",
    "brief.md",
    "brief.json",
    "rejected_rows.csv",
    "run.json",
]


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "example"
    juno.run(EXAMPLE, out, narrative="template")
    return out


def test_writes_every_output(example_run: Path) -> None:
    for name in FILES:
        assert (example_run / name).is_file(), name
    assert not list(example_run.parent.glob(".example.tmp-*"))


def test_every_cohort_and_flag_has_members(example_run: Path) -> None:
    cohorts = pd.read_csv(example_run / "cohorts.csv")
    assert set(cohorts["cohort"]) == set(COHORT_IDS)
    assert (cohorts["size"] > 0).all(), cohorts[["cohort", "size"]]
    customers = pd.read_csv(example_run / "customers.csv", dtype=str, keep_default_na=False)
    flags = customers["flags"].str.split(";").explode()
    for flag in HOLD_FLAGS:
        assert (flags == flag).sum() > 0, flag
    assert (cohorts["thin_sample"].astype(str) == "False").any()


def test_customers_reconcile_with_the_input(example_run: Path) -> None:
    customers = pd.read_csv(example_run / "customers.csv", dtype=str, keep_default_na=False)
    orders = pd.read_csv(EXAMPLE / "orders.csv", dtype=str, keep_default_na=False)
    listed = pd.read_csv(EXAMPLE / "customers.csv", dtype=str, keep_default_na=False)
    distinct = set(listed["customer_id"]) | set(orders["customer_id"]) - {""}
    assert len(customers) == len(distinct)
    assert set(customers["customer_id"]) == distinct
    assert customers["customer_id"].is_unique
    unclassified = customers[customers["status"] != "classified"]
    assert (unclassified["unclassified_reason"] != "").all()
    run = json.loads((example_run / "run.json").read_text())
    assert run["customers"]["in"] == len(customers)
    rows = {i["table"]: i["rows"] for i in run["inputs"]}
    assert rows["orders"] == len(orders)


def test_two_runs_are_byte_identical(example_run: Path, tmp_path: Path) -> None:
    juno.run(EXAMPLE, tmp_path / "again", narrative="template")
    for name in ("cohorts.csv", "customers.csv", "cohorts.md", "brief.md", "rejected_rows.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (example_run / name).read_bytes(), name


def test_cohort_table_reads_well(example_run: Path) -> None:
    md = (example_run / "cohorts.md").read_text()
    assert "value score >= " in md and "orders 365d >= 2" in md and "Confidence:" in md and "P1" in md
    brief = (example_run / "brief.md").read_text()
    assert brief.startswith("# DRAFT")
    assert "Written from the template" in brief
    assert "not VIP because they nearly always buy on discount" in brief


def test_removing_cost_marks_margin_incomplete(tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(EXAMPLE, store)
    for name in ("orders.csv", "order_lines.csv"):
        df = pd.read_csv(store / name, dtype=str, keep_default_na=False)
        df.drop(columns=["cost"]).to_csv(store / name, index=False)
    res = juno.run(store, tmp_path / "out", narrative="template")
    assert res.brief is not None
    assert res.brief.facts.margin_incomplete
    dr = next(c for c in res.brief.facts.cohorts if c.cohort == "discount_risk")
    assert dr.margin_incomplete
    table = pd.read_csv(tmp_path / "out" / "cohorts.csv")
    assert table.set_index("cohort").loc["discount_risk", "margin_incomplete"]
    assert "margin" in (tmp_path / "out" / "brief.md").read_text().lower()
    assert "No cost data" in (tmp_path / "out" / "brief.md").read_text()


def _tiny(tmp_path: Path) -> Path:
    return write_store(
        tmp_path / "tiny", orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\n"
    )


def test_failed_run_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import juno.pipeline

    def boom(*a: object, **k: object) -> str:
        raise RuntimeError("injected")

    monkeypatch.setattr(juno.pipeline, "render_brief_md", boom)
    with pytest.raises(RuntimeError):
        juno.run(_tiny(tmp_path), tmp_path / "out", narrative="template")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def test_rerun_replaces_a_run_folder_but_refuses_a_foreign_one(tmp_path: Path) -> None:
    store = _tiny(tmp_path)
    juno.run(store, tmp_path / "out", narrative="template")
    juno.run(store, tmp_path / "out", narrative="template")
    foreign = tmp_path / "docs"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    with pytest.raises(OutputError):
        juno.run(store, foreign, narrative="template")
    assert (foreign / "thesis.docx").read_text() == "precious"
    juno.run(store, foreign, narrative="template", force=True)
    assert (foreign / "run.json").exists()


def test_formula_cells_are_escaped(tmp_path: Path) -> None:
    store = write_store(
        tmp_path / "s",
        orders='order_id,customer_id,ordered_at,revenue\nO1,=HYPERLINK("x"),2025-01-01,10\nO2,@SUM(A1),2025-01-02,5\n',
    )
    juno.run(store, tmp_path / "out", narrative="template")
    text = (tmp_path / "out" / "customers.csv").read_text()
    assert "'=HYPERLINK" in text and "'@SUM(A1)" in text


def test_python_api_returns_typed_results(tmp_path: Path) -> None:
    res = juno.run(_tiny(tmp_path), config=Config(), narrative="template")
    assert res.out is None and res.brief is not None and res.customers is not None
    assert list(res.cohorts["cohort"]) and set(res.timings) >= {"load", "validate", "signals", "classify"}


def test_background_work_gives_its_result_or_its_error() -> None:
    """What background.start runs hands back its result, or raises its error where it is taken;
    its thread ends with it (nothing left running for the process to wait on)."""
    import threading

    from juno import background

    done = background.start(sum, [1, 2, 3], name="juno-test")
    assert done.result(timeout=10) == 6

    def fail() -> None:
        raise ValueError("bad input")

    failed = background.start(fail, name="juno-test")
    with pytest.raises(ValueError, match="bad input"):
        failed.result(timeout=10)
    for t in threading.enumerate():
        if t.name.startswith("juno-test"):
            t.join(timeout=10)
            assert not t.is_alive()

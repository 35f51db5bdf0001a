"""`juno diff`: two runs of one small store at different as_of dates."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import random_store
from typer.testing import CliRunner

import juno
from juno.cli import app
from juno.config import Config
from juno.diff import NONE, diff, render_markdown
from juno.errors import JunoError


def small_store(folder: Path, n: int = 300, seed: int = 8) -> Path:
    return random_store(folder, n, seed)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("diff")
    store = small_store(base / "store")
    old, new = base / "old", base / "new"
    juno.run(store, old, config=Config(as_of=date(2026, 2, 28)), narrative="template")
    juno.run(store, new, narrative="template")
    return old, new


def _members(run: Path) -> tuple[pd.DataFrame, dict[str, set[str]]]:
    cust = pd.read_csv(run / "customers.csv", dtype=str, keep_default_na=False)
    sets: dict[str, set[str]] = {}
    for cid, cohorts in zip(cust["customer_id"], cust["cohorts"], strict=True):
        for c in filter(None, cohorts.split(";")):
            sets.setdefault(c, set()).add(cid)
    return cust, sets


def test_migration_matrix_and_members(runs: tuple[Path, Path]) -> None:
    old, new = runs
    d = diff(old, new)
    cust_old, sets_old = _members(old)
    cust_new, sets_new = _members(new)
    assert d.labels[-1] == NONE
    m = np.asarray(d.matrix)
    assert m.sum() == len(set(cust_old["customer_id"]) | set(cust_new["customer_id"]))
    old_primary = cust_old["primary_cohort"].replace("", NONE).value_counts()
    new_primary = cust_new["primary_cohort"].replace("", NONE).value_counts()
    for i, label in enumerate(d.labels):
        assert m[i].sum() == old_primary.get(label, 0)
        assert m[:, i].sum() == new_primary.get(label, 0)
    assert d.moved == m.sum() - np.trace(m)
    assert d.moved > 0
    cohorts_new = pd.read_csv(new / "cohorts.csv").set_index("cohort")
    cohorts_old = pd.read_csv(old / "cohorts.csv").set_index("cohort")
    for c in d.cohorts:
        was, now = sets_old.get(c.cohort, set()), sets_new.get(c.cohort, set())
        assert c.joined == len(now - was) and c.left == len(was - now)
        assert set(c.joined_sample) <= now - was
        assert c.size_new == cohorts_new.at[c.cohort, "size"]
        assert c.size_old == cohorts_old.at[c.cohort, "size"]
        assert c.held_back_new == cohorts_new.at[c.cohort, "held_back"]


def test_vips_lapsing(runs: tuple[Path, Path]) -> None:
    old, new = runs
    d = diff(old, new)
    _, sets_old = _members(old)
    cust_new, sets_new = _members(new)
    in_none = set(cust_new.loc[cust_new["cohorts"] == "", "customer_id"])
    expected = {
        c for c in sets_old.get("vip", set()) if c in sets_new.get("lapsed_high_value", set()) | in_none
    }
    assert {v.customer_id for v in d.vips_lapsing} == expected
    for v in d.vips_lapsing:
        assert v.now in ("lapsed_high_value", NONE)
        assert (v.reason_new != "") == (v.now == NONE)


def test_markdown_and_cli(runs: tuple[Path, Path]) -> None:
    old, new = runs
    md = render_markdown(diff(old, new))
    assert "## Migration of primary cohorts" in md and "| (none) |" in md and "VIPs lapsing" in md
    runner = CliRunner()
    res = runner.invoke(app, ["diff", str(old), str(new)])
    assert res.exit_code == 0, res.output
    assert res.output == md
    res = runner.invoke(app, ["diff", str(old), str(new), "--json", "--ids"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["labels"][-1] == NONE and len(data["matrix"]) == len(data["labels"])
    assert all(len(c["joined_ids"]) == c["joined"] for c in data["cohorts"])


def test_review_decisions(runs: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    old, new = runs
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(old, a)
    shutil.copytree(new, b)
    (a / "review.toml").write_text('[cohorts.vip]\ndecision = "pending"\nchannel = "email"\n')
    (b / "review.toml").write_text('[cohorts.vip]\ndecision = "approve"\nchannel = "sms"\n')
    d = diff(a, b)
    assert {(x.cohort, x.field, x.old, x.new) for x in d.decisions} == {
        ("vip", "decision", "pending", "approve"),
        ("vip", "channel", "email", "sms"),
    }
    assert "Review decisions that changed" in render_markdown(d)
    (b / "review.toml").write_text("this is [not toml")
    assert diff(a, b).decisions == []


def test_not_a_run_folder(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    with pytest.raises(JunoError, match="not a Juno run folder"):
        diff(tmp_path, runs[1])

"""brief.html: self-contained, escaped, charts drawn; checked in a real headless browser when present."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import random_store

import juno
from juno.pipeline import RunResult
from juno.report_html import GRID_X, GRID_Y, _grid, render

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def small_store(folder: Path, n: int = 300, seed: int = 5) -> Path:
    # A catalogue string that tries to inject markup must come out as text.
    return random_store(folder, n, seed, max_orders=8, staff_tags=True, category="<script>alert(1)</script>")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    base = tmp_path_factory.mktemp("html")
    return juno.run(small_store(base / "store"), base / "run", narrative="template")


def test_written_self_contained_and_escaped(run: RunResult) -> None:
    assert run.out is not None and run.brief is not None
    html = (run.out / "brief.html").read_text(encoding="utf-8")
    assert "DRAFT" in html and run.brief.narrative.headline.split(":")[0] in html
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(", html, re.I)
    assert "<link" not in html.lower()
    assert html.count("<svg") == 3
    for c in run.brief.facts.cohorts:
        assert c.cohort in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "@media print" in html


def test_autoescape(run: RunResult) -> None:
    assert run.brief is not None
    evil = "<img src=x onerror=alert(1)>"
    words = run.brief.narrative.model_copy(update={"headline": evil, "caveats": [evil]})
    brief = run.brief.model_copy(update={"narrative": words})
    html = render(brief, run.customers)
    assert evil not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_grid_stays_small_for_a_big_base() -> None:
    rng = np.random.default_rng(1)
    n = 200_000
    customers = pd.DataFrame(
        {
            "status": "classified",
            "primary_cohort": rng.choice(["vip", "near_vip", "", "first_to_second"], n),
            "recency_days": rng.integers(0, 900, n).astype(float),
            "value_lifetime": rng.lognormal(4, 1.2, n),
        }
    )
    grid = _grid(customers)
    assert 0 < len(grid.cells) <= GRID_X * GRID_Y
    assert grid.customers == n
    assert len({(c.x, c.y) for c in grid.cells}) == len(grid.cells)


def _browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _png_is_drawn(path: Path) -> bool:
    """True when the PNG decodes to more than a blank page (many distinct byte values)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    raw = zlib.decompress(idat)
    return len(set(raw)) > 40


@pytest.mark.skipif(_browser() is None, reason="no headless chromium installed")
def test_in_headless_browser(run: RunResult, tmp_path: Path) -> None:
    browser = _browser()
    assert browser is not None and run.out is not None
    page = (run.out / "brief.html").resolve().as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--virtual-time-budget=3000", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", page], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<svg") == 3
    assert dom.stdout.count("<rect") > 20
    assert "Cohort table" in dom.stdout
    shot = tmp_path / "brief.png"
    res = subprocess.run(
        [*common, f"--screenshot={shot}", "--window-size=1280,2000", page],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert shot.exists() and shot.stat().st_size > 10_000
    assert _png_is_drawn(shot)


def test_final_page_without_customer_table(run: RunResult) -> None:
    """finalize renders the reviewed brief alone: no DRAFT mark, no empty chart."""
    assert run.brief is not None
    html = render(run.brief.model_copy(update={"draft": False}))
    assert "DRAFT" not in html and "FINAL" in html
    assert html.count("<svg") == 2

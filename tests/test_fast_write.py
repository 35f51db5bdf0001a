"""The fast paths of the customer table and of writing the outputs give exactly what the plain
implementations they replaced give (like tests/test_outputs_stable.py: no timings, only equality).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import juno.render
from juno.render import csv_frame, float_cells, format_floats, write_csv

TRICKY_TEXT = [
    "plain", "", None, "a,b", 'say "hi"', "two\nlines", "cr\r", "\rx", "=1+2", "+1 619 555", "-3",
    "@a", "\tx", "'quoted", '=a,"b"', "é,ü", "a;b", " lead", "trail ",
]


def _reference_bytes(frame: pd.DataFrame) -> bytes:
    """What write_csv wrote first: pandas' to_csv of csv_frame's text."""
    return csv_frame(frame).to_csv(index=False, lineterminator="\n", na_rep="").encode("utf-8")


def _tricky_frame(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    at = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(-(10**10), 10**10, n), unit="ms")
    floats = np.r_[
        [0.0, -0.0, -0.00004, 0.00005, -0.00005, 0.00015, 0.12345, 1.00005, 2.5, 123.45675, 1e9 - 0.00005],
        rng.normal(0, 1000, n),
    ][:n]
    frame = pd.DataFrame(
        {
            "id": pd.Series([f"C{i}" for i in range(n)], dtype="str"),
            "text": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="str"),
            "string": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="string"),
            "obj": pd.Series(rng.choice(np.array([1, 2.5, "x,y", None, np.nan, "=z", True], dtype=object), n)),
            "value": floats,
            "share": np.where(rng.random(n) < 0.2, np.nan, rng.random(n)),
            "at_ns": at,
            "at_s": at.astype("datetime64[s]"),
            "at_us": at.astype("datetime64[us]"),
            "at_tz": at.tz_localize("UTC"),
            "n": rng.integers(-(10**12), 10**12, n),
            "small": rng.integers(0, 9, n).astype(np.int8),
            "nullable": pd.array(np.where(rng.random(n) < 0.3, None, rng.integers(0, 99, n)), dtype="Int64"),
            "ok": rng.random(n) < 0.5,
            "last": pd.Series(rng.choice(np.array(TRICKY_TEXT, dtype=object), n), dtype="str"),
        }
    )
    frame.loc[::7, "at_ns"] = pd.NaT
    frame.loc[::5, "at_s"] = pd.NaT
    frame.loc[::3, "at_tz"] = pd.NaT
    return frame


@pytest.mark.parametrize("slice_rows", [1 << 17, 97])
def test_write_csv_matches_pandas_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slice_rows: int) -> None:
    monkeypatch.setattr(juno.render, "_SLICE", slice_rows)
    frame = _tricky_frame(1_000)
    path = tmp_path / "t.csv"
    write_csv(frame, path)
    assert path.read_bytes() == _reference_bytes(frame)


def test_write_csv_edge_shapes(tmp_path: Path) -> None:
    frames = [
        pd.DataFrame({"a": pd.Series(["", None, "x"], dtype="str"), "b": [np.nan, np.inf, -np.inf]}),
        pd.DataFrame({"a": ["", ""], "b": ["", ""]}),
        pd.DataFrame({"a": [1e15, -3.2e12], 'odd "name",': [True, False]}),
        pd.DataFrame({"only": ["", "x,y"]}),
        pd.DataFrame({"a": pd.Series([], dtype="str"), "b": pd.Series([], dtype=float)}),
        _tricky_frame(50).iloc[10:30],  # a frame that does not start at row 0
    ]
    for i, frame in enumerate(frames):
        path = tmp_path / f"{i}.csv"
        write_csv(frame, path)
        assert path.read_bytes() == _reference_bytes(frame), i


def test_float_cells_match_format_floats() -> None:
    rng = np.random.default_rng(3)
    v = np.r_[
        rng.normal(0, 1000, 20_000),
        rng.normal(0, 1, 20_000),
        np.round(rng.normal(0, 100, 20_000), 2),
        rng.integers(-(10**6), 10**6, 10_000).astype(float) / 10_000,
        [0.0, -0.0, -0.00004, 0.00005, 999_999_999.99994, -999_999_999.99994, np.nan],
    ]
    got = float_cells(v).fill_null("").to_numpy(zero_copy_only=False)
    assert (got == format_floats(v)).all()
    huge = np.array([1e9, 1e15, np.inf, np.nan, 1.5])
    assert (float_cells(huge).fill_null("").to_numpy(zero_copy_only=False) == format_floats(huge)).all()

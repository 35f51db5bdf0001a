"""Tiny stores written inline, so each case is readable in its test."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from juno.config import Config, config_from_dict
from juno.signals import Signals, compute_signals
from juno.sources.generic import read_generic
from juno.validate import Store, validate


def write_store(folder: Path, **tables: str) -> Path:
    """write_store(tmp, orders="order_id,customer_id,...\\n...") -> folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in tables.items():
        (folder / f"{name}.csv").write_text(text.strip() + "\n", encoding="utf-8")
    return folder


def load(folder: Path, config: Config | None = None) -> Store:
    return validate(read_generic(folder), config or Config())


def signals_of(folder: Path, config: Config | None = None) -> Signals:
    cfg = config or Config()
    return compute_signals(load(folder, cfg), cfg)


def cfg(**kw: object) -> Config:
    return config_from_dict(dict(kw))


def row(frame: pd.DataFrame, customer_id: str) -> pd.Series:
    return frame.set_index("customer_id").loc[customer_id]

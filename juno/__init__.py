"""Juno: ecommerce customer data in, reviewed lifecycle cohorts and a short action brief out."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from juno.pipeline import RunResult


def run(*args: Any, **kwargs: Any) -> RunResult:
    """Run the pipeline from Python; see `juno.pipeline.run`."""
    from juno.pipeline import run as _run

    return _run(*args, **kwargs)


__all__ = ["__version__", "run"]

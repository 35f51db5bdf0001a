"""Placeholder: filled by its issue. Called by the pipeline's write step."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from juno.pipeline import RunResult


def write(result: RunResult, folder: Path) -> None:
    """Write this module's files into the run folder being built."""

"""Placeholder: the `juno diff` command(s), registered on the Typer app by cli.py."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""

"""The `juno diff` command: parse arguments, call juno.diff, print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""

    @app.command("diff")
    def diff_cmd(
        old: Annotated[Path, typer.Argument(help="the earlier run folder")],
        new: Annotated[Path, typer.Argument(help="the later run folder")],
        as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of Markdown")] = False,
        all_ids: Annotated[
            bool, typer.Option("--ids", help="with --json: every joined and departed id, not a sample")
        ] = False,
    ) -> None:
        """Compare two runs: migration between cohorts, new and departed members, VIPs lapsing."""
        from juno.diff import diff, render_json, render_markdown

        result = diff(old, new, all_ids=all_ids)
        typer.echo(render_json(result) if as_json else render_markdown(result), nl=False)

"""The `juno backtest` command: parse arguments, call juno.backtest, print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""

    @app.command("backtest")
    def backtest_cmd(
        store: Annotated[Path, typer.Argument(help="store folder (CSV/Parquet tables or Shopify exports)")],
        cutoff: Annotated[
            str, typer.Option("--cutoff", help="classify on history up to this date (YYYY-MM-DD)")
        ],
        horizon_days: Annotated[
            int | None,
            typer.Option(
                "--horizon-days", help="days to measure after the cutoff (default: to the last order)"
            ),
        ] = None,
        config: Annotated[
            Path | None, typer.Option("--config", "-c", help="juno.toml (default: STORE/juno.toml)")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the result as JSON")] = False,
    ) -> None:
        """Classify on the past, measure each cohort and the value ranking on the future."""
        from juno.backtest import backtest, render_table
        from juno.config import load_config

        cfg_path = config
        if cfg_path is None and store.is_dir() and (store / "juno.toml").is_file():
            cfg_path = store / "juno.toml"
        cfg = load_config(cfg_path)
        result = backtest(
            store,
            cutoff,
            horizon_days=horizon_days,
            config=cfg,
            config_dir=cfg_path.parent if cfg_path else None,
        )
        if as_json:
            typer.echo(json.dumps(result.to_dict(), indent=2))
        else:
            typer.echo(render_table(result))

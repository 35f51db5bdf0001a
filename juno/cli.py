"""The console script: parse arguments, call the library, print. Nothing else lives here."""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from juno import __version__
from juno.config import COHORT_IDS, default_config_text, load_config
from juno.errors import ConfigError, JunoError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Juno: turn store exports into reviewed lifecycle cohorts and a short action brief.",
    pretty_exceptions_enable=False,
)

@dataclass
class _State:
    # A finished run, kept: its arrays are left for the process's exit to free (juno.entry).
    finished_run: object | None = None


state = _State()

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="juno.toml (default: STORE/juno.toml if present)")
]


def _config_path(store: Path, config: Path | None) -> Path | None:
    if config is not None:
        return config
    candidate = store / "juno.toml"
    return candidate if store.is_dir() and candidate.is_file() else None


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="where to write juno.toml")] = Path("."),
    force: Annotated[bool, typer.Option(help="overwrite an existing juno.toml")] = False,
) -> None:
    """Write a commented juno.toml holding every key at its default."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "juno.toml"
    if target.exists() and not force:
        raise JunoError("juno.toml already exists", file=str(target), hint="use --force to overwrite")
    target.write_text(default_config_text(), encoding="utf-8")
    typer.echo(f"wrote {target}")


@app.command()
def check(
    store: Annotated[Path, typer.Argument(help="store folder (CSV/Parquet tables or Shopify exports)")],
    config: ConfigOpt = None,
) -> None:
    """Validate the inputs and print a data-quality report. Exit 0 when usable, 2 when not."""
    from juno.quality import quality_report

    cfg_path = _config_path(store, config)
    cfg = load_config(cfg_path)
    report, usable = quality_report(store, cfg, cfg_path.parent if cfg_path else None)
    typer.echo(report)
    if not usable:
        raise typer.Exit(2)


@app.command("run")
def run_cmd(
    store: Annotated[Path, typer.Argument(help="store folder (CSV/Parquet tables or Shopify exports)")],
    out: Annotated[Path, typer.Option("--out", "-o", help="run folder to write")] = Path("out"),
    config: ConfigOpt = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="evaluation date YYYY-MM-DD")] = None,
    narrative: Annotated[str | None, typer.Option("--narrative", help="auto | model | template")] = None,
    cohorts: Annotated[
        str | None, typer.Option("--cohorts", help="comma-separated cohort ids to build")
    ] = None,
    show_prompt: Annotated[
        bool, typer.Option("--show-prompt", help="print the exact model request and exit")
    ] = False,
    force: Annotated[bool, typer.Option(help="replace an --out folder that is not a Juno run")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress on stderr")] = False,
    previous: Annotated[
        Path | None, typer.Option("--previous", help="earlier run folder: carry review decisions forward")
    ] = None,
) -> None:
    """Classify customers, check them, and write the cohort table and the draft brief."""
    from juno.pipeline import run, stderr_progress

    cfg_path = _config_path(store, config)
    cfg = load_config(cfg_path)
    update: dict[str, object] = {}
    if as_of:
        from juno.config import config_from_dict

        update["as_of"] = config_from_dict({"as_of": as_of}, "--as-of").as_of
    if cohorts:
        wanted = [c.strip() for c in cohorts.split(",") if c.strip()]
        bad = [c for c in wanted if c not in COHORT_IDS]
        if bad:
            raise ConfigError(
                f"unknown cohort(s) in --cohorts: {', '.join(bad)}",
                expected="any of " + ", ".join(COHORT_IDS),
            )
        update["cohorts"] = wanted
    if narrative is not None and narrative not in ("auto", "model", "template"):
        raise ConfigError("--narrative must be auto, model or template", examples=[narrative])
    if update:
        cfg = cfg.model_copy(update=update)
    if show_prompt:
        from juno.narrative.model import show_prompt as render_request

        result = run(
            store, None, config=cfg, narrative="template", config_dir=cfg_path.parent if cfg_path else None
        )
        assert result.brief is not None
        typer.echo(render_request(result.brief.facts, cfg.narrative))
        return
    result = run(
        store,
        out,
        config=cfg,
        narrative=narrative,
        force=force,
        progress=None if quiet else stderr_progress,
        config_dir=cfg_path.parent if cfg_path else None,
        previous=previous,
    )
    if not quiet:
        assert result.brief is not None
        f = result.brief.facts
        typer.echo(
            f"{f.customers_in:,} customers: {f.customers_classified:,} classified into "
            f"{len(f.cohorts)} cohorts; narrative: {result.brief.provenance.method}. Wrote {out}/"
        )
        for c in sorted(f.cohorts, key=lambda c: int(c.priority[1:])):
            typer.echo(
                f"  {c.priority:<3} {c.cohort:<20} {c.size:>7,}  ready {c.outreach_ready:>7,}"
                f"  held {c.held_back:>6,}  confidence {c.confidence}"
            )
    state.finished_run = result


@app.command()
def version() -> None:
    """Print Juno's version."""
    typer.echo(__version__)


def _register_commands() -> None:
    """Commands that live in their own modules (one small module per command)."""
    from juno import cli_backtest, cli_diff, cli_review

    for module in (cli_backtest, cli_diff, cli_review):
        module.register(app)


_register_commands()


def _usage_error(exc: Exception) -> bool:
    """Click's usage errors (bad option, missing argument) print themselves and exit 2."""
    from typer import _click  # typer vendors click under this name

    if isinstance(exc, _click.exceptions.ClickException):
        exc.show()
        return True
    return False


def main() -> None:
    """Entry point: user errors exit 2 with a message, bugs exit 1 with a traceback."""
    try:
        app(standalone_mode=False)
    except JunoError as exc:
        print(f"juno: error: {exc.render()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click usage errors carry their own exit code
        if _usage_error(exc):
            sys.exit(2)
        traceback.print_exc()
        print("juno: internal error (a bug): please report it with the traceback above", file=sys.stderr)
        sys.exit(1)

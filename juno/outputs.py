"""The run folder, written atomically: a temporary sibling folder renamed at the end."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from juno.errors import OutputError

MARKER = "run.json"


def write_atomically(out: Path, write: Callable[[Path], None], force: bool = False) -> None:
    """Call `write(tmp)` then move tmp to `out`; on any failure nothing is left at `out`."""
    out = out.expanduser()
    if out.exists():
        if not out.is_dir():
            raise OutputError("the output path exists and is not a folder", file=str(out))
        contents = [p for p in out.iterdir()]
        if contents and not (out / MARKER).exists() and not force:
            raise OutputError(
                "the output folder exists and is not a Juno run folder; refusing to replace it",
                file=str(out),
                hint="choose another --out, or pass --force to replace it",
            )
    parent = out.parent if str(out.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    except OSError as exc:
        raise OutputError(f"cannot write the output folder: {exc.strerror}", file=str(out)) from None
    try:
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=parent))
            out.rename(old / "run")
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, LookupError):  # jinja2.TemplateNotFound is an OSError too: a bug, not a disk
            raise
        raise OutputError(
            f"cannot write the output folder: {exc.strerror or exc}", file=str(out)
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

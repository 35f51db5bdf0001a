"""The README cannot drift: its commands are CI's, its config reference lists every key."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from juno.config import Config

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", README.split("---")[0])


def test_first_screen_has_exactly_two_commands() -> None:
    cmds = _commands()
    assert len(cmds) == 2
    assert "juno run examples/store" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert _commands()[1] in ci


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _keys(ann, f"{name}.")
        else:
            out.append(prefix + name)
    return out


def test_config_reference_lists_every_key() -> None:
    missing = [k for k in _keys(Config) if f"`{k}`" not in README]
    assert not missing

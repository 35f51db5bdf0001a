"""JSON Schemas exported from the Pydantic models, checked in under schemas/ (a test keeps them in sync)."""

from __future__ import annotations

import json
from pathlib import Path

from juno.brief import Brief

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas"


def brief_schema_text() -> str:
    return json.dumps(Brief.model_json_schema(), indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path = SCHEMAS_DIR) -> None:
    """Regenerate the checked-in schemas: `python -m juno.schemas`."""
    (folder / "brief.schema.json").write_text(brief_schema_text(), encoding="utf-8")


if __name__ == "__main__":
    write_schemas()

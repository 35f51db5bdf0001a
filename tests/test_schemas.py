import json
from pathlib import Path

from juno.brief import Brief
from juno.schemas import SCHEMAS_DIR, brief_schema_text


def test_brief_schema_is_in_sync() -> None:
    assert (SCHEMAS_DIR / "brief.schema.json").read_text() == brief_schema_text(), (
        "schemas/brief.schema.json is stale: run `python -m juno.schemas`"
    )


def test_example_brief_validates_against_the_model(tmp_path: Path) -> None:
    import juno

    juno.run(Path(__file__).parents[1] / "examples" / "store", tmp_path / "o", narrative="template")
    data = json.loads((tmp_path / "o" / "brief.json").read_text())
    brief = Brief.model_validate(data)
    assert brief.draft and brief.provenance.method == "template"

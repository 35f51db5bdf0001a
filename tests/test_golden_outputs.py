"""Every output byte of the bundled examples, pinned by sha256 (issue 8: speed work changes nothing).

The hashes in golden_outputs.json were recorded from the code before the scale rewrite. A change
that moves them must be a deliberate output change: re-record with
`JUNO_UPDATE_GOLDEN=1 pytest tests/test_golden_outputs.py` and say why in the commit.
run.json is left out (it holds timings).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from juno.config import Config, load_config
from juno.pipeline import run

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden_outputs.json"
UCI = ROOT.parent / "shared" / "data" / "online_retail_sample.csv"


def _config(case: str) -> tuple[Path, Config, Path | None]:
    # Relative paths: review.toml records the input paths as given, and a clone lives anywhere.
    store = Path("examples") / "store"
    if case == "store":
        return store, Config(), None
    if case == "store_merge_margin":
        return store, Config.model_validate({"duplicates": {"merge": True}, "value": "margin"}), None
    if case == "store_earlier_as_of":
        cfg = Config.model_validate({"as_of": "2025-06-30", "population": {"exclude_tags": ["loyalty"]}})
        return store, cfg, None
    if case == "shopify":
        return Path("examples") / "shopify", Config(), None
    if case == "online_retail":
        toml = Path("examples") / "online_retail" / "juno.toml"
        return Path("examples") / "online_retail", load_config(toml), toml.parent
    raise AssertionError(case)


CASES = ["store", "store_merge_margin", "store_earlier_as_of", "shopify", "online_retail"]


def _digests(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != "run.json":
            data = p.read_bytes()
            if p.name == "review.toml":  # it names the store folder and its files by absolute path
                data = data.replace(str(ROOT).encode(), b"<repository>")
                data = data.replace(str(UCI.parent.resolve()).encode(), b"<shared data>")
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


@pytest.mark.parametrize("case", CASES)
def test_outputs_match_recorded_bytes(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    if case == "online_retail" and not UCI.exists():
        pytest.skip("../shared/data is not beside the repository")
    store, cfg, config_dir = _config(case)
    run(store, tmp_path / "out", config=cfg, narrative="template", config_dir=config_dir)
    got = _digests(tmp_path / "out")
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("JUNO_UPDATE_GOLDEN"):
        recorded[case] = got
        GOLDEN.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
        return
    assert case in recorded, "no recorded hashes: run with JUNO_UPDATE_GOLDEN=1 once"
    changed = sorted(k for k in set(got) | set(recorded[case]) if got.get(k) != recorded[case].get(k))
    assert not changed, f"{case}: output bytes changed in {changed}"

"""Outputs under faults: a failure in any step leaves no partial run folder, a foreign folder is
refused unless --force, an unwritable or full destination gives a clear error (exit 2)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import write_store

import juno
import juno.pipeline
from juno import report_html, review, segments
from juno.errors import OutputError

ORDERS = (
    "order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\nO2,C2,2025-03-01,20\nO3,C1,2025-05-01,5\n"
)

# (module, attribute) of every function a pipeline step calls, in step order.
STEP_FUNCTIONS = [
    (juno.pipeline, "read_store"),  # load
    (juno.pipeline, "validate"),  # validate
    (juno.pipeline, "compute_signals"),  # signals
    (juno.pipeline, "run_classification"),  # classify
    (juno.pipeline, "customer_table"),  # classify
    (juno.pipeline, "build_facts"),  # brief
    (juno.pipeline, "draft_narrative"),  # brief
    (juno.pipeline, "write_csv"),  # write: cohorts.csv, customers.csv, rejected_rows.csv
    (juno.pipeline, "render_cohorts_md"),  # write
    (juno.pipeline, "render_brief_md"),  # write
    (juno.pipeline, "write_json"),  # write: brief.json, run.json
    (report_html, "write"),  # write: brief.html
    (segments, "write"),  # write: segments.json, segments/
    (review, "write"),  # write: review.toml
    (juno.pipeline, "run_info"),  # write: run.json, last
]


class Injected(RuntimeError):
    pass


def _boom(*args: Any, **kwargs: Any) -> Any:
    raise Injected("injected fault")


def _store(tmp_path: Path) -> Path:
    return write_store(tmp_path / "store", orders=ORDERS)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name != "store")


@pytest.mark.parametrize("module,name", STEP_FUNCTIONS, ids=[f"{m.__name__}.{n}" for m, n in STEP_FUNCTIONS])
def test_a_fault_in_any_step_leaves_no_run_folder(
    module: Any, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    monkeypatch.setattr(module, name, _boom)
    with pytest.raises(Injected):
        juno.run(store, tmp_path / "out", narrative="template")
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "module,name", STEP_FUNCTIONS[-8:], ids=[f"{m.__name__}.{n}" for m, n in STEP_FUNCTIONS[-8:]]
)
def test_a_failed_rerun_keeps_the_previous_run_whole(
    module: Any, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    out = tmp_path / "out"
    juno.run(store, out, narrative="template")
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    monkeypatch.setattr(module, name, _boom)
    with pytest.raises(Injected):
        juno.run(store, out, narrative="template")
    after = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    assert _leftovers(tmp_path) == ["out"]


def test_a_full_disk_is_a_clear_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    real = Path.write_text

    def full(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "brief.md":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OutputError) as info:
        juno.run(store, tmp_path / "out", narrative="template")
    assert "No space left on device" in info.value.message
    assert info.value.file == str(tmp_path / "out")
    assert _leftovers(tmp_path) == []


def test_a_failing_final_rename_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store(tmp_path)

    def denied(self: Path, target: Any) -> Path:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "rename", denied)
    with pytest.raises(OutputError) as info:
        juno.run(store, tmp_path / "out", narrative="template")
    assert "Permission denied" in info.value.message
    assert _leftovers(tmp_path) == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "juno", "run", *args, "-q", "--narrative", "template"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENAI_API_KEY": ""},
    )


def test_cli_refuses_a_foreign_folder_unless_forced(tmp_path: Path) -> None:
    store = _store(tmp_path)
    foreign = tmp_path / "reports"
    foreign.mkdir()
    (foreign / "q3.xlsx").write_bytes(b"precious")
    proc = _cli(str(store), "--out", str(foreign))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not a Juno run folder" in proc.stderr and "--force" in proc.stderr
    assert [p.name for p in foreign.iterdir()] == ["q3.xlsx"]
    proc = _cli(str(store), "--out", str(foreign), "--force")
    assert proc.returncode == 0, proc.stderr
    assert (foreign / "run.json").is_file() and not (foreign / "q3.xlsx").exists()


def test_an_empty_folder_is_used_without_force(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (tmp_path / "empty").mkdir()
    juno.run(store, tmp_path / "empty", narrative="template")
    assert (tmp_path / "empty" / "run.json").is_file()


def test_an_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    store = _store(tmp_path)
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(OutputError) as info:
        juno.run(store, tmp_path / "out", narrative="template", force=True)
    assert "not a folder" in info.value.message
    assert (tmp_path / "out").read_text() == "not a folder"


def test_cli_unwritable_destination_exits_2(tmp_path: Path) -> None:
    # Tests run as root, which ignores chmod: a path under a regular file cannot be created by anyone.
    store = _store(tmp_path)
    blocker = tmp_path / "blocker.txt"
    blocker.write_text("x")
    proc = _cli(str(store), "--out", str(blocker / "out"))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "cannot write the output folder" in proc.stderr and str(blocker / "out") in proc.stderr


def test_cli_a_bug_exits_1_with_a_traceback(tmp_path: Path) -> None:
    store = _store(tmp_path)
    code = (
        "import sys, juno.pipeline as p, juno.cli as c\n"
        "def boom(*a, **k): raise RuntimeError('injected')\n"
        "p.compute_signals = boom\n"
        f"sys.argv = ['juno', 'run', {str(store)!r}, '--out', {str(tmp_path / 'out')!r}, '-q']\n"
        "c.main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "internal error" in proc.stderr
    assert not (tmp_path / "out").exists()

"""Before against after: the pipeline of a git commit (A) and of the working tree (B), alternated.

    .venv/bin/python bench/abba.py bench/data/c1000000/parquet                 # HEAD against the working tree
    .venv/bin/python bench/abba.py bench/data/c1000000/parquet --base 6c04809 --rounds 4
    .venv/bin/python bench/abba.py bench/data/c1000000/parquet --env-b OMP_NUM_THREADS=1   # same code, B's setting

On this VM a run moves by a second either way with what ran just before it, and the machine's
speed drifts over an hour (bench/README.md, rounds 9 and 10), so one run of each, or runs of one
side after the other's, decide nothing. Each round runs A, B, B, A, each a fresh process set up as
the `juno` command sets itself up (juno.entry), the store's files read first so that both find
them in the page cache, outputs written to a temporary folder. A's `juno` package is the
commit's (`git archive`), loaded in place of the installed working tree; the dependencies are the
ones installed. Prints every run's total and step times (in process: no interpreter start) and
per side the fastest, median and slowest; read the difference against the spread.

`--command` times the whole `juno run` command instead (`python -m juno run`, the tree first on
PYTHONPATH), from its start to its exit as `bench/run.py` does: for a change to what happens
before the first step or after the last (imports, the interpreter's start, the exit), which the
in-process totals do not see.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
tree, store, out = sys.argv[1], sys.argv[2], sys.argv[3]
# The working tree is installed in editable mode: drop its import hook so that `tree` is used.
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, tree)
import juno
assert juno.__file__.startswith(tree), (juno.__file__, tree)
from juno.entry import prepare_process
prepare_process()
from juno.pipeline import run
marks = []
run(store, out, narrative="template", progress=lambda step: marks.append((step, time.perf_counter())))
marks.append(("end", time.perf_counter()))
steps = {a[0]: round(b[1] - a[1], 3) for a, b in zip(marks, marks[1:])}
print(json.dumps({"total": round(marks[-1][1] - marks[0][1], 3), "steps": steps}))
sys.stdout.flush()
import os; os._exit(0)
"""


def warm(store: Path) -> None:
    for path in sorted(store.iterdir()):
        if path.is_file():
            with path.open("rb") as fh:
                while fh.read(16 << 20):
                    pass


def one_run(tree: Path, store: Path, env: dict[str, str]) -> dict[str, object]:
    warm(store)
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(tree), str(store), str(Path(tmp) / "out")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        sys.exit(f"a run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def one_command(tree: Path, store: Path, env: dict[str, str]) -> dict[str, object]:
    """The whole `juno run` command, in the `juno` command's own process setup: wall seconds from
    its start to its exit, and run.json's step timings."""
    from run import timed  # bench/run.py, which times its commands the same way

    warm(store)
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH", "")])))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "juno", "run", str(store), "--out", str(out), "--narrative", "template", "--quiet"]
        seconds = timed(cmd, env).seconds
        steps = json.loads((out / "run.json").read_text())["timings_s"]
    return {"total": round(seconds, 3), "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--base", default="HEAD", help="git commit for side A (default HEAD)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of A, B, B, A (default 3)")
    parser.add_argument("--env-b", action="append", default=[], metavar="KEY=VALUE", help="set for side B only")
    parser.add_argument("--command", action="store_true",
                        help="time the whole `juno run` command (start to exit), not the pipeline in process")
    args = parser.parse_args()
    store = args.store.resolve()
    if not store.is_dir():
        parser.error(f"{store} is not a store folder (bench/run.py generates them under bench/data)")
    env_a = dict(os.environ)
    env_b = dict(os.environ)
    for item in args.env_b:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env-b {item}: expected KEY=VALUE")
        env_b[key] = value

    with tempfile.TemporaryDirectory() as tmp:
        tree_a = Path(tmp) / "a"
        tree_a.mkdir()
        archive = subprocess.run(["git", "archive", args.base, "juno"], cwd=ROOT, capture_output=True, check=False)
        if archive.returncode != 0:
            parser.error(f"--base {args.base}: {archive.stderr.decode(errors='replace').strip()}")
        subprocess.run(["tar", "-x", "-C", str(tree_a)], input=archive.stdout, check=True)
        sides = {"A": (tree_a, env_a), "B": (ROOT, env_b)}
        setting = f" with {' '.join(args.env_b)}" if args.env_b else ""
        timed = "whole commands, start to exit" if args.command else "the pipeline in process"
        print(f"A: {args.base}   B: working tree{setting}   store: {store}   timed: {timed}")
        totals: dict[str, list[float]] = {"A": [], "B": []}
        for _ in range(args.rounds):
            for side in "ABBA":
                tree, env = sides[side]
                got = (one_command if args.command else one_run)(tree, store, env)
                steps = got["steps"]
                assert isinstance(steps, dict)
                total = float(got["total"])  # type: ignore[arg-type]
                totals[side].append(total)
                shown = "  ".join(f"{k} {v:.2f}" for k, v in steps.items() if k not in ("start", "load", "brief"))
                print(f"{side}  total {total:6.2f}   {shown}", flush=True)
    for side in "AB":
        t = sorted(totals[side])
        print(f"{side}: fastest {t[0]:.2f}  median {statistics.median(t):.2f}  slowest {t[-1]:.2f}  ({len(t)} runs)")
    faster = sum(b < min(totals["A"]) for b in totals["B"])
    print(f"B runs faster than every A run: {faster} of {len(totals['B'])}")


if __name__ == "__main__":
    main()

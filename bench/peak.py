"""Peak memory of `juno run` per pipeline step, in a plain run and with its threads slowed.

    .venv/bin/python bench/peak.py bench/data/c1000000/csv                # plain and sampled, 3 runs each
    .venv/bin/python bench/peak.py bench/data/c1000000/csv --runs 6 --modes sampled

Each run is a fresh process set up as the `juno` command sets itself up (juno.entry), running
the pipeline with the template narrative. A thread reads the resident set every few milliseconds
and keeps the highest value per step. In "sampled" mode it also formats every thread's stack at
each new high, as a sampling profiler would: that holds the GIL and slows the pipeline's own
threads at the moments memory grows. A peak that holds only under lucky thread timing shows up
here, not in `bench/run.py` (round 5: the 1M CSV write step, ~2,270 MiB plain, 2,537-2,730 MiB
sampled before Arrow's jemalloc decay was shortened). Check every change that adds concurrency
or moves work between threads with both modes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, threading, time, traceback
from juno.entry import prepare_process
prepare_process()
from juno.pipeline import run

store, out, sampled = sys.argv[1], sys.argv[2], sys.argv[3] == "sampled"
step = ["start"]
best = {}

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20

def sample():
    while True:
        r, s = rss_mib(), step[0]
        if r > best.get(s, 0):
            best[s] = r
            if sampled:
                for frame in list(sys._current_frames().values()):
                    traceback.format_stack(frame)
        time.sleep(0.002 if sampled else 0.005)

threading.Thread(target=sample, daemon=True).start()
run(store, out, narrative="template", force=True, progress=lambda name: step.__setitem__(0, name))
step[0] = "end"
time.sleep(0.02)
best["ru_maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
print("PEAKS " + json.dumps(best))
"""

STEPS = ("validate", "signals", "classify", "write")


def one_run(store: Path, mode: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory(prefix="juno-peak-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(store), str(Path(tmp) / "out"), mode],
            capture_output=True, text=True, check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"juno failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("PEAKS "))
    peaks: dict[str, int] = json.loads(line[len("PEAKS "):])
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="plain,sampled", help="plain, sampled or both (comma-separated)")
    parser.add_argument("--budget-mib", type=int, default=2384, help="2.5 GB in MiB; runs above it are marked")
    args = parser.parse_args()
    print(f"{args.store}: peak RSS in MiB per step (resident set sampled every 2-5 ms)")
    print(f"{'mode':8s} {'run':>3s} " + " ".join(f"{s:>9s}" for s in STEPS) + f" {'maxrss':>9s}")
    for mode in args.modes.split(","):
        over = 0
        for i in range(1, args.runs + 1):
            peaks = one_run(args.store, mode)
            top = peaks["ru_maxrss"]
            over += top > args.budget_mib
            cells = " ".join(f"{peaks.get(s, 0):9,d}" for s in STEPS)
            print(f"{mode:8s} {i:3d} {cells} {top:9,d}{'  over budget' if top > args.budget_mib else ''}")
        print(f"{mode}: {over} of {args.runs} runs over {args.budget_mib:,} MiB")


if __name__ == "__main__":
    main()

"""Where one run's time goes: each step's wall time, CPU and page faults, and the CPU of functions.

    .venv/bin/python bench/cpu.py bench/data/c1000000/parquet
    .venv/bin/python bench/cpu.py bench/data/c1000000/parquet --fn classify.stability --fn segments.tag_import

One run of the pipeline (template narrative, outputs written to a temporary folder) in this
process, set up as the `juno` command sets itself up (juno.entry). Per step: wall seconds, user
and system CPU seconds of the whole process (all threads), minor page faults and the peak RSS so
far. `--fn module.name` (a module of the `juno` package) also reports that function's calls:
their wall time and their own thread's CPU time (`time.thread_time`), and the threads they ran
on. The function is wrapped where it is looked up, so one imported by name into another module
(`from juno.assess import stability` in juno.classify) is given as that module's:
`classify.stability`. Thread CPU time, unlike a sampling profiler's counts, does not count a
thread waiting for the GIL (round 10: py-spy put 1.0 s on the segment files, their thread CPU
was 0.35 s). Thread faults are the calling thread's minor page faults during the calls (fresh
pages it touched; Linux only): work Arrow hands to its own thread pool, such as decoding a
Parquet file, is not counted there.

Read one run's figures beside another's only on the same machine state; for a before/after,
use `bench/abba.py`.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import itertools
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _thread_faults() -> int:
    """Minor page faults of the calling thread so far (Linux: RUSAGE_THREAD; elsewhere 0)."""
    who = getattr(resource, "RUSAGE_THREAD", None)
    return resource.getrusage(who).ru_minflt if who is not None else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--fn", action="append", default=[], help="module.name of a juno function to time")
    args = parser.parse_args()

    sys.path.insert(0, ROOT)
    from juno.entry import prepare_process

    prepare_process()
    from juno import pipeline

    # Per call: wall s, its thread's CPU s, its thread's page faults, the thread's name.
    calls: dict[str, list[tuple[float, float, int, str]]] = {}

    def wrap(target: str) -> None:
        module_name, _, name = target.rpartition(".")
        try:
            module = importlib.import_module(f"juno.{module_name}")
            fn: Callable[..., Any] = getattr(module, name)
        except (ImportError, AttributeError):
            parser.error(f"--fn {target}: no such function in the juno package (e.g. cycles.purchase_history)")

        @functools.wraps(fn)
        def timed(*a: Any, **k: Any) -> Any:
            wall, cpu, faults = time.perf_counter(), time.thread_time(), _thread_faults()
            try:
                return fn(*a, **k)
            finally:
                calls.setdefault(target, []).append(
                    (
                        time.perf_counter() - wall,
                        time.thread_time() - cpu,
                        _thread_faults() - faults,
                        threading.current_thread().name,
                    )
                )

        setattr(module, name, timed)

    for target in args.fn:
        wrap(target)

    marks: list[tuple[str, float, resource.struct_rusage]] = []

    def mark(step: str) -> None:
        marks.append((step, time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)))

    with tempfile.TemporaryDirectory() as tmp:
        mark("start")
        pipeline.run(args.store, os.path.join(tmp, "out"), narrative="template", progress=mark)
        mark("end")
    print(f"{'step':10s} {'wall s':>7s} {'user s':>7s} {'sys s':>6s} {'faults':>9s} {'peak MiB':>9s}")
    for (step, t0, r0), (_, t1, r1) in itertools.pairwise(marks):
        print(
            f"{step:10s} {t1 - t0:7.2f} {r1.ru_utime - r0.ru_utime:7.2f} {r1.ru_stime - r0.ru_stime:6.2f}"
            f" {r1.ru_minflt - r0.ru_minflt:9d} {r1.ru_maxrss >> 10:9d}"
        )
    (_, t0, r0), (_, t1, r1) = marks[0], marks[-1]
    print(
        f"{'total':10s} {t1 - t0:7.2f} {r1.ru_utime - r0.ru_utime:7.2f} {r1.ru_stime - r0.ru_stime:6.2f}"
        f" {r1.ru_minflt - r0.ru_minflt:9d}"
    )
    for target in args.fn:
        got = calls.get(target, [])
        threads = ", ".join(sorted({t for _, _, _, t in got}))
        print(
            f"{target:32s} calls {len(got):3d}  wall {sum(w for w, _, _, _ in got):6.3f} s"
            f"  thread CPU {sum(c for _, c, _, _ in got):6.3f} s"
            f"  thread faults {sum(f for _, _, f, _ in got):8d}  ({threads or 'not called'})"
        )
    sys.stdout.flush()
    os._exit(0)  # as the `juno` command ends a run: no teardown of gigabytes of arrays


if __name__ == "__main__":
    main()

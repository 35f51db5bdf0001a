"""When each thread of one run uses the cores: CPU per time slice, per step, with the busiest threads.

    .venv/bin/python bench/timeline.py bench/data/c1000000/parquet
    .venv/bin/python bench/timeline.py bench/data/c1000000/parquet --slice 0.1 --top 4

One run of the pipeline (template narrative, outputs written to a temporary folder) in this
process, set up as the `juno` command sets itself up (juno.entry). A sampling thread reads every
thread's CPU time from /proc (user + system, in clock ticks) every 20 ms. For each time slice it
prints the step running, the CPU the process used against what the cores could give (2 cores x
the slice), and the threads that used most, by their Python names (Arrow's and jemalloc's own
threads by their system names). A slice well under the cores' capacity is a core left idle; on a
machine where both cores are busy throughout, only less CPU shortens the run (bench/README.md,
rounds 9-13). Linux only (/proc). The sampler's own reads cost ~1% of a core.

A summary per step follows: wall seconds, CPU seconds and idle core-seconds (cores x wall - CPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Native thread id -> (system name, CPU seconds so far), for every thread of this process."""
    out: dict[int, tuple[str, float]] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(") ")
        fields = rest.split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("store")
    parser.add_argument("--slice", type=float, default=0.25, help="seconds per printed line")
    parser.add_argument("--top", type=int, default=3, help="threads named per line")
    args = parser.parse_args()
    if not os.path.isdir("/proc/self/task"):
        parser.error("needs Linux's /proc")

    sys.path.insert(0, ROOT)
    from juno.entry import prepare_process

    prepare_process()
    from juno import pipeline
    from juno.config import Config

    cores = len(os.sched_getaffinity(0))
    python_names: dict[int, str] = {}
    samples: list[tuple[float, str, dict[int, tuple[str, float]]]] = []
    step = ["start"]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for t in threading.enumerate():
                if t.native_id is not None:
                    python_names[t.native_id] = t.name
            samples.append((time.perf_counter(), step[0], thread_cpu()))
            done.wait(0.02)
        samples.append((time.perf_counter(), step[0], thread_cpu()))

    sampler = threading.Thread(target=sample, name="timeline-sampler", daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline.run(
            args.store, os.path.join(tmp, "out"), config=Config(), narrative="template",
            progress=lambda name: step.__setitem__(0, name),
        )
        done.set()
        sampler.join()
    own = threading.get_native_id()

    def label(tid: int, name: str) -> str:
        if tid == own:
            return "main"
        return python_names.get(tid, name)

    print(f"{'at s':>6}  {'step':<9} {'CPU':>5} / {'cores':<5} threads")
    by_step: dict[str, list[float]] = {}
    start_at, start_cpu = samples[0][0], samples[0][2]
    prev_at, prev_cpu = start_at, start_cpu
    for at, name, cpu in samples[1:]:
        used = {tid: cpu[tid][1] - prev_cpu.get(tid, (n, 0.0))[1] for tid, (n, _) in cpu.items()}
        entry = by_step.setdefault(name, [0.0, 0.0])
        entry[0] += at - prev_at
        entry[1] += sum(used.values())
        prev_at, prev_cpu = at, cpu
        if at - start_at >= args.slice or at == samples[-1][0]:
            spent = {tid: cpu[tid][1] - start_cpu.get(tid, (n, 0.0))[1] for tid, (n, _) in cpu.items()}
            total = sum(spent.values())
            top = sorted(((v, label(tid, cpu[tid][0])) for tid, v in spent.items() if v > 0), reverse=True)
            names = "  ".join(f"{n} {v:.2f}" for v, n in top[: args.top])
            print(f"{start_at - t0:6.2f}  {name:<9} {total:5.2f} / {cores * (at - start_at):<5.2f} {names}")
            start_at, start_cpu = at, cpu
    print(f"\n{'step':<9} {'wall s':>7} {'CPU s':>6} {'idle core-s':>12}")
    for name, (wall, cpu_s) in by_step.items():
        print(f"{name:<9} {wall:7.2f} {cpu_s:6.2f} {max(cores * wall - cpu_s, 0.0):12.2f}")


if __name__ == "__main__":
    main()

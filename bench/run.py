"""Scale benchmark (PRODUCT.md section 10): Juno end to end against a bare DuckDB pass.

    .venv/bin/python bench/run.py                 # 100k, 1M (Parquet and CSV), 3M (Parquet)
    .venv/bin/python bench/run.py --sizes 1000000 --formats parquet

For every store size and format, side by side in one run:

- the floor: DuckDB reads the same files and writes, as Parquet, per customer the order count,
  revenue sum and first and last order date, and per customer and category the last purchase
  date (order lines joined to orders);
- Juno: `juno run --narrative template --quiet` on the same folder, as a subprocess.

Each command runs in its own process; wall time and that process's peak RSS come from
os.wait4. Both run `--runs` times (default 2), alternated, and each one's fastest run counts;
the peak RSS shown is the highest of Juno's runs. Stores are generated once with
examples/generate_store.py into bench/data/ (git-ignored) and reused. This is a script, not a
test: the machine's load makes timings noisy, so read the ratio Juno / floor, measured back to
back, rather than the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
PYTHON = sys.executable
SUBSCRIPTION_SHARE = 0.1  # ~100k subscriptions per 1M customers (the generator's default is 2.5%)

FLOOR = """
import sys, duckdb
folder, fmt, out = sys.argv[1], sys.argv[2], sys.argv[3]
def src(t):
    if fmt == "parquet":
        return f"read_parquet('{folder}/{t}.parquet')"
    return f"read_csv('{folder}/{t}.csv', header=true)"
con = duckdb.connect()
con.execute(f'''COPY (SELECT customer_id, count(*) AS orders, sum(revenue) AS revenue,
                             min(ordered_at) AS first_order_at, max(ordered_at) AS last_order_at
                      FROM {src("orders")} GROUP BY customer_id)
                TO '{out}/customers.parquet' (FORMAT parquet)''')
con.execute(f'''COPY (SELECT o.customer_id, l.category, max(o.ordered_at) AS last_purchase_at
                      FROM {src("order_lines")} l JOIN {src("orders")} o USING (order_id)
                      GROUP BY o.customer_id, l.category)
                TO '{out}/categories.parquet' (FORMAT parquet)''')
"""


@dataclass
class Measure:
    seconds: float
    peak_mb: float
    user_s: float = 0.0  # CPU seconds in user code
    sys_s: float = 0.0  # CPU seconds in the kernel (page faults on fresh memory, mostly)


def timed(cmd: list[str], env: dict[str, str] | None = None) -> Measure:
    """Run `cmd` (in `env`, when given), return its wall time and its own peak RSS (os.wait4
    reports per child)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode()[-2000:]}")
    return Measure(seconds, usage.ru_maxrss / 1024, usage.ru_utime, usage.ru_stime)  # maxrss: KiB


def store_dir(customers: int, fmt: str) -> Path:
    return DATA / f"c{customers}" / fmt


def ensure_store(customers: int, fmts: list[str]) -> None:
    """Generate the store once (both formats in one go when both are missing); reuse it after."""
    missing = [f for f in fmts if not (store_dir(customers, f) / f"orders.{f}").exists()]
    if not missing:
        return
    tmp = DATA / f"c{customers}" / "tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    fmt = missing[0] if len(missing) == 1 else "both"
    print(f"generating {customers:,} customers ({fmt}) ...", flush=True)
    t0 = time.perf_counter()
    subprocess.run(
        [PYTHON, str(ROOT / "examples" / "generate_store.py"), "--customers", str(customers),
         "--subscription-share", str(SUBSCRIPTION_SHARE), "--format", fmt, "--out", str(tmp)],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for f in missing:
        dest = store_dir(customers, f)
        dest.mkdir(parents=True, exist_ok=True)
        for p in tmp.glob(f"*.{f}"):
            p.replace(dest / p.name)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"  generated in {time.perf_counter() - t0:.0f} s (not part of the timings)", flush=True)


def store_rows(customers: int) -> dict[str, int]:
    for fmt in ("parquet", "csv"):
        folder = store_dir(customers, fmt)
        if (folder / "orders.parquet").exists():
            return {p.stem: pq.read_metadata(p).num_rows for p in sorted(folder.glob("*.parquet"))}
    folder = store_dir(customers, "csv")
    return {p.stem: sum(1 for _ in p.open("rb")) - 1 for p in sorted(folder.glob("*.csv"))}


def machine() -> str:
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    load = os.getloadavg()[0]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {mem_gb:.0f} GB memory, "
        f"Python {platform.python_version()}, load average at start {load:.1f}"
    )


def compile_juno() -> str:
    """Compile the juno package's bytecode (__pycache__, git-ignored), as `pip install` does for
    an installed package and as Python does on a package's first import. Where
    PYTHONDONTWRITEBYTECODE is set (this sandbox sets it), Python never writes it, and every
    `juno run` compiled Juno's ~12k lines of source again: ~0.07 s a run, which no installed
    copy pays. Python still reads bytecode that exists, and recompiles a module whose source
    changed since."""
    import compileall

    ok = compileall.compile_dir(ROOT / "juno", quiet=1)
    note = "" if not os.environ.get("PYTHONDONTWRITEBYTECODE") else " (PYTHONDONTWRITEBYTECODE is set here)"
    return f"Juno's bytecode compiled first, as an installed copy has it{note}" + ("" if ok else ": FAILED")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    ap.add_argument("--formats", nargs="+", default=["parquet", "csv"], choices=["parquet", "csv"])
    ap.add_argument("--csv-max", type=int, default=1_000_000,
                    help="largest store also measured as CSV (3M as CSV would pass 10 minutes)")
    ap.add_argument("--runs", type=int, default=2,
                    help="the floor and Juno each run this many times, alternated (floor, Juno, floor,"
                    " Juno, ...), and each one's fastest run counts: both are measured the same way, and"
                    " a run slowed by the machine (seconds either way on a shared VM) counts for neither")
    ap.add_argument("--no-compile", action="store_true",
                    help="leave Juno's bytecode as it is (see `compile_juno`)")
    args = ap.parse_args(argv)

    print(machine(), flush=True)
    if not args.no_compile:
        print(compile_juno(), flush=True)
    rows_out = []
    for customers in args.sizes:
        fmts = [f for f in args.formats if f == "parquet" or customers <= args.csv_max]
        ensure_store(customers, fmts)
        rows = store_rows(customers)
        orders = rows["orders"]
        print(
            f"\n{customers:,} customers: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()),
            flush=True,
        )
        for fmt in fmts:
            folder = store_dir(customers, fmt)
            with tempfile.TemporaryDirectory(prefix="juno-bench-") as tmp:
                floor_out = Path(tmp) / "floor"
                floor_out.mkdir()
                floors, junos, steps_of = [], [], []
                for i in range(max(args.runs, 1)):
                    floors.append(timed([PYTHON, "-c", FLOOR, str(folder), fmt, str(floor_out)]))
                    out = Path(tmp) / f"run{i}"
                    junos.append(
                        timed([PYTHON, "-m", "juno", "run", str(folder), "--out", str(out),
                               "--narrative", "template", "--quiet"])
                    )
                    steps_of.append(json.loads((out / "run.json").read_text())["timings_s"])
                    shutil.rmtree(out)
                floor = min(floors, key=lambda m: m.seconds)
                best = min(range(len(junos)), key=lambda i: junos[i].seconds)
                juno, steps = junos[best], steps_of[best]
                peak = max(m.peak_mb for m in junos)  # memory: the highest of every run
            ratio = juno.seconds / floor.seconds
            per_m = juno.seconds / (orders / 1e6)
            rows_out.append((customers, fmt, orders, floor, juno, peak, ratio, per_m))
            print(
                f"  {fmt:8s} floor {floor.seconds:7.1f} s ({floor.peak_mb:6.0f} MB)"
                f"   juno {juno.seconds:7.1f} s ({peak:6.0f} MB peak RSS)"
                f"   ratio {ratio:4.2f}   juno {per_m:5.1f} s per million orders",
                flush=True,
            )
            print("           juno steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
                  + f"; CPU user {juno.user_s:.1f} s, system {juno.sys_s:.1f} s", flush=True)
            if len(junos) > 1:
                print("           every run: floor " + ", ".join(f"{m.seconds:.1f}" for m in floors)
                      + " s; juno " + ", ".join(f"{m.seconds:.1f}" for m in junos)
                      + f" s (peaks {', '.join(f'{m.peak_mb:,.0f}' for m in junos)} MB)", flush=True)

    print("\n| customers | format | orders | floor s | Juno s | Juno / floor | Juno peak RSS MB"
          " | Juno s per 1M orders | Juno CPU user / system s | user s per 1M orders |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for customers, fmt, orders, floor, juno, peak, ratio, per_m in rows_out:
        print(
            f"| {customers:,} | {fmt} | {orders:,} | {floor.seconds:.1f} | {juno.seconds:.1f} |"
            f" {ratio:.2f} | {peak:,.0f} | {per_m:.1f} | {juno.user_s:.1f} / {juno.sys_s:.1f} |"
            f" {juno.user_s / (orders / 1e6):.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

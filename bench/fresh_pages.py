"""What a fresh page of memory costs on this machine, by how much the process has touched.

    .venv/bin/python bench/fresh_pages.py            # 1, 2, 4 GiB
    .venv/bin/python bench/fresh_pages.py 1 4 6

Each size runs in a new process that fills one NumPy array of that many bytes (every page
touched once, 4 KiB pages as the `juno` command uses them) and reports the page faults and the
kernel time they took. No Juno code runs. On a VM that hands freed memory back to its host
(virtio-balloon free page reporting), each fresh page is also a host fault, and that cost can
grow with the footprint: the benchmark's 3M-customer run touches ~18 GB of fresh pages in all
(6 GB at a time), so its kernel time says as much about the machine as about Juno. Run it next
to bench/run.py to read the 3M figures.
"""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
import resource, sys, time
import numpy as np
n = int(float(sys.argv[1]) * (1 << 30)) // 8
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
a = np.ones(n)
r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
faults = r1.ru_minflt - r0.ru_minflt
system = r1.ru_stime - r0.ru_stime
print(f"{sys.argv[1]:>5} GiB  {t1 - t0:6.2f} s  {faults:9,d} faults  {system:6.2f} s system"
      f"  {system / max(faults, 1) * 1e6:6.1f} us per fault")
"""


def main(sizes: list[str]) -> None:
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}  # 4 KiB pages, as the juno command runs
    for size in sizes:
        subprocess.run([sys.executable, "-c", CHILD, size], env=env, check=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["1", "2", "4"])

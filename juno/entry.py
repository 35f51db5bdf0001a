"""The `juno` command's process entry: allocator settings that must precede numpy and pyarrow.

Where transparent huge pages are on "madvise" (a common server default), numpy asks for huge
pages on every large array and the kernel may stall compacting memory for each one; pyarrow's
default mimalloc pool does likewise. On a 1M-customer store that tripled the system time of a run
(36 s -> 19 s wall without, same output bytes; bench/README.md). A user's own setting wins.
These only take effect before numpy/pyarrow are imported, hence this module: the console script
and `python -m juno` start here. It also lets glibc reuse freed heap for large arrays instead of
fresh mappings (`juno.memory.keep_freed_heap`) and has Arrow's jemalloc return freed pages after
250 ms instead of a second (`juno.memory.shorten_arrow_decay`). `juno.run()` from Python leaves
the host process alone.
"""

from __future__ import annotations

import os
import sys


def prepare_process() -> None:
    """The allocator settings, for any process that wants to run the pipeline as `juno` does
    (bench/peak.py); call it before anything imports numpy or pyarrow."""
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
    # Juno makes no BLAS call; numpy's OpenBLAS would still start a thread per core at import,
    # and those spin for ~0.1 s of CPU while the run's own threads start (bench/README.md).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from juno.memory import keep_freed_heap, shorten_arrow_decay

    keep_freed_heap()
    shorten_arrow_decay()


def main() -> None:
    prepare_process()
    from juno import cli

    cli.main()
    if cli.state.finished_run is not None:
        # A finished `juno run` holds a couple of gigabytes of arrays at a million customers:
        # freeing them one by one and tearing down the interpreter take ~0.1-0.2 s that the
        # kernel's release of the whole process does not need. Everything the run wrote is
        # closed and in place; only the standard streams may still hold text.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

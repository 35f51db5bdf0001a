"""Hand freed heap memory back to the operating system between the core's big steps.

glibc keeps memory freed by medium-sized numpy arrays (up to 32 MB) in the process heap; after
a step that made many of them (signals at 1M customers leaves ~0.4 GB this way) the next step's
large arrays come on top of it in the peak RSS. `malloc_trim` returns it. The `juno` command
also lets the heap serve large arrays (`keep_freed_heap`). Elsewhere (not glibc) these do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 (not glibc: no such symbol)
    except (OSError, AttributeError):
        return None
    return libc


def release_free_memory() -> None:
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_USER_SETTINGS = (
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_ARENA_MAX",
    "GLIBC_TUNABLES",
)


def keep_freed_heap(trim_above: int = 256 << 20) -> bool:
    """Serve large arrays from the heap and keep up to `trim_above` bytes of it free between them.

    By default glibc gives every array over 32 MB its own mapping and unmaps it when freed, so a
    step's next array of the same size starts on fresh pages, each a page fault (on a VM that
    reports freed pages to its host, an expensive one): a 1M-customer run took ~2.8M faults and
    8 s of system time. Reused heap took that to ~2.0M faults and ~1.2 s off the run, for ~45 MB
    more peak memory; `release_free_memory` still trims the heap between the big steps.

    One heap (arena) for every thread: by default each thread that allocates gets its own, and
    memory freed in one is never reused by another. With the purchase history built on a second
    thread during the signals step, the two steps' arrays then stacked up (1M Parquet: up to
    2,304 MiB, against 2,196-2,216 sharing one arena, with ~10% fewer page faults). The arrays
    are large and few, so threads do not wait on each other's allocations.

    Skipped where the user tuned malloc themselves (MALLOC_* or GLIBC_TUNABLES) and off glibc.
    True when applied.
    """
    libc = _libc()
    if libc is None or any(name in os.environ for name in _USER_SETTINGS):
        return False
    return (
        bool(libc.mallopt(_M_MMAP_MAX, 0))
        and bool(libc.mallopt(_M_TRIM_THRESHOLD, trim_above))
        and bool(libc.mallopt(_M_ARENA_MAX, 1))
    )


# Arrow's jemalloc keeps freed pages for this long before it returns them (its default is 1 s).
ARROW_DECAY_MS = 250


def shorten_arrow_decay(ms: int = ARROW_DECAY_MS) -> bool:
    """Let Arrow's jemalloc return freed pages after `ms` instead of a second.

    While customers.csv is written, its slice builders churn through Arrow buffers; when those
    threads are slowed (a sampler holding the GIL, a busy machine), the freed pages jemalloc
    keeps can take a 1M CSV run past 2.5 GB (~2,270 MiB plain). In one interleaved comparison
    under a stack-sampling thread, 6 of 6 runs passed 2.5 GB at 1 s and 1 of 6 at 250 ms; in a
    later one, 1 of 9 and 2 of 10 (bench/README.md). It also lowers the sampled validation peak
    by ~130 MiB, for ~2% more time (more pages faulted afresh). Skipped where the user configured
    jemalloc (JE_ARROW_MALLOC_CONF) or Arrow uses another allocator. True when applied.
    """
    if "JE_ARROW_MALLOC_CONF" in os.environ:
        return False
    import pyarrow as pa

    if pa.default_memory_pool().backend_name != "jemalloc":
        return False
    pa.jemalloc_set_decay_ms(ms)
    return True

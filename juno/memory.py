"""Hand freed heap memory back to the operating system between the core's big steps.

glibc keeps memory freed by medium-sized numpy arrays (up to 32 MB) in the process heap; after
a step that made many of them (signals at 1M customers leaves ~0.4 GB this way) the next step's
large arrays come on top of it in the peak RSS. `malloc_trim` returns it. Elsewhere (not glibc)
this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
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

"""Work started on a thread of its own while the caller goes on.

The pipeline's large steps are NumPy and Arrow calls that let go of the GIL, so a second thread
uses the machine's second core: the next table is read while one is typed, the purchase history
is built while the signals are finished, the cohort texts while the cohort facts are computed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def start(fn: Callable[..., T], *args: Any, name: str = "juno") -> Future[T]:
    """`fn(*args)` started now on a thread that ends with it; its result (or its error) comes
    from the returned future. Nothing waits for it unless the caller does."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)

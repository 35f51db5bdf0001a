"""Large output files (customers.csv is 320 MB at a million customers) written past the page cache.

A buffered write copies every byte into page-cache pages the kernel must first find. On a cloud
microVM whose free memory goes back to the host (virtio free page reporting, as on the Firecracker
machine of bench/README.md) each fresh page is a host fault: writing 320 MB took 2.8 s of system
time there, against 0.14 s with O_DIRECT, which hands the bytes to the disk straight from an
aligned buffer of ours. Where O_DIRECT is missing (macOS, Windows) or refused (some file systems),
the file is written the ordinary way. The price: an O_DIRECT write waits for the disk, so on a
disk slower than Juno formats text (~150 MB/s) the write waits where a buffered one would not;
`JUNO_DIRECT_IO=0` in the environment writes through the page cache always.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # Windows, which has no O_DIRECT either
    fcntl = None  # type: ignore[assignment]

_ALIGN = 4096  # O_DIRECT wants buffer, length and file offset in multiples of the block size
_STAGE = 8 << 20  # bytes gathered in the aligned buffer per direct write


class LargeFile:
    """A binary file opened for writing: `write` then `close` (or a `with` block). Same bytes as
    `open(path, "wb")` would write, sent to the disk by O_DIRECT where the system takes it."""

    def __init__(self, path: Path) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
        wanted = os.environ.get("JUNO_DIRECT_IO", "1") != "0"  # 0: always the page cache
        direct = getattr(os, "O_DIRECT", 0) if fcntl is not None and wanted else 0
        self._fd = -1
        if direct:
            try:
                self._fd = os.open(path, flags | direct, 0o666)
            except OSError:
                self._fd = -1
        self._direct = self._fd >= 0
        if not self._direct:
            self._fd = os.open(path, flags, 0o666)
        # Anonymous mappings are page aligned, as O_DIRECT needs its buffer to be.
        self._stage = mmap.mmap(-1, _STAGE) if self._direct else None
        self._used = 0

    @property
    def direct(self) -> bool:
        """Whether the bytes still go past the page cache."""
        return self._direct

    def write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self._stage is None:
            self._write_view(view)
            return
        while len(view):
            n = min(len(view), _STAGE - self._used)
            self._stage[self._used : self._used + n] = view[:n]
            self._used += n
            view = view[n:]
            if self._used == _STAGE:
                self._send(_STAGE)

    def _send(self, n: int) -> None:
        """Write the first `n` staged bytes (a multiple of _ALIGN unless direct writing is off)."""
        assert self._stage is not None
        view = memoryview(self._stage)[:n]
        self._write_view(view)
        view.release()
        self._stage.move(0, n, self._used - n)
        self._used -= n

    def _write_view(self, view: memoryview) -> None:
        """All of `view` to the file, short writes continued."""
        while len(view):
            try:
                done = os.write(self._fd, view)
            except OSError as exc:
                if exc.errno != errno.EINVAL or not self._direct:
                    raise
                # Refused on this file system after all (or after a short write, off the
                # block size): a refused write wrote nothing; the rest goes buffered.
                self._buffered()
                continue
            view = view[done:]

    def _buffered(self) -> None:
        if self._direct and fcntl is not None:
            flags = fcntl.fcntl(self._fd, fcntl.F_GETFL)
            fcntl.fcntl(self._fd, fcntl.F_SETFL, flags & ~os.O_DIRECT)
            self._direct = False

    def close(self, flush: bool = True) -> None:
        """Write what is staged (unless `flush` is False: the file is being abandoned) and close."""
        if self._fd < 0:
            return
        try:
            if flush and self._stage is not None and self._used:
                whole = self._used - self._used % _ALIGN
                if whole and self._direct:
                    self._send(whole)
                self._buffered()  # the last partial block cannot go direct
                self._send(self._used)
        finally:
            os.close(self._fd)
            self._fd = -1
            if self._stage is not None:
                # A view of it may be held by the error being raised: then it is freed with that.
                with contextlib.suppress(BufferError):
                    self._stage.close()
                self._stage = None

    def __enter__(self) -> LargeFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # After an error the file is incomplete anyway: no flush that could raise over it.
        self.close(flush=kind is None)

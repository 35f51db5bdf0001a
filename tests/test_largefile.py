"""LargeFile writes the same bytes as open(path, "wb"), whether O_DIRECT is taken, refused at open,
or refused part way through."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest

import juno.largefile
from juno.largefile import LargeFile


def _pieces(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    sizes = [0, 1, 4095, 4096, 4097, 8191, 3, 20_000, 0, 12_288, 70_001, 5]
    rng.shuffle(sizes)
    return [rng.randbytes(n) for n in sizes]


@pytest.fixture(autouse=True)
def small_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two blocks per staged write: every path (full stage, split piece, tail) runs on small data.
    monkeypatch.setattr(juno.largefile, "_STAGE", 8192)


def _write(path: Path, pieces: list[bytes]) -> bool:
    with LargeFile(path) as fh:
        for p in pieces:
            fh.write(memoryview(p) if len(p) % 2 else p)
        return fh.direct


def test_same_bytes_as_a_plain_write(tmp_path: Path) -> None:
    for seed in range(5):
        pieces = _pieces(seed)
        _write(tmp_path / "a.csv", pieces)
        with (tmp_path / "b.csv").open("wb") as fh:
            for p in pieces:
                fh.write(p)
        assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # An existing file is replaced, not appended to or left longer.
    _write(tmp_path / "a.csv", [b"short"])
    assert (tmp_path / "a.csv").read_bytes() == b"short"


def test_direct_io_refused_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_direct(path: str, flags: int, mode: int = 0o777) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, mode)

    monkeypatch.setattr(os, "open", no_direct)
    pieces = _pieces(11)
    assert _write(tmp_path / "a.csv", pieces) is False
    assert (tmp_path / "a.csv").read_bytes() == b"".join(pieces)


@pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT on this system")
def test_direct_io_refused_part_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that refuses a direct write after some succeeded: the rest goes buffered."""
    probe = tmp_path / "probe"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o666))
    except OSError:
        pytest.skip("this file system refuses O_DIRECT")
    real_write = os.write
    calls = {"n": 0}

    def flaky(fd: int, data: memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", flaky)
    pieces = _pieces(12)
    with LargeFile(tmp_path / "a.csv") as fh:
        assert fh.direct
        for p in pieces:
            fh.write(p)
        assert not fh.direct  # switched off at the refused write
    assert (tmp_path / "a.csv").read_bytes() == b"".join(pieces)


def test_other_write_errors_are_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space"), LargeFile(tmp_path / "a.csv") as fh:
        fh.write(b"x" * 20_000)


def test_direct_io_can_be_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUNO_DIRECT_IO", "0")
    pieces = _pieces(13)
    assert _write(tmp_path / "a.csv", pieces) is False
    assert (tmp_path / "a.csv").read_bytes() == b"".join(pieces)


def test_an_error_inside_the_block_is_not_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leaving the block on an error closes the file without flushing what is staged, so a
    failing flush (a full disk) cannot replace the error that stopped the writing."""

    def full(fd: int, data: memoryview) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(KeyError), LargeFile(tmp_path / "a.csv") as fh:
        fh.write(b"x" * 5000)  # staged (direct) or written (buffered) before the disk fills
        monkeypatch.setattr(os, "write", full)
        raise KeyError("formatting failed")

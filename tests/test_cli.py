"""The console script as a user meets it: exit codes and messages, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_store

JUNO = [sys.executable, "-m", "juno"]


def juno(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*JUNO, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_init_writes_a_commented_config(tmp_path: Path) -> None:
    r = juno("init", str(tmp_path))
    assert r.returncode == 0
    text = (tmp_path / "juno.toml").read_text()
    assert "vip_share = 0.1" in text and "# " in text
    assert juno("init", str(tmp_path)).returncode == 2  # no silent overwrite


def test_check_on_a_folder_without_orders_exits_2(tmp_path: Path) -> None:
    write_store(tmp_path, customers="customer_id\nC1\n")
    r = juno("check", str(tmp_path))
    assert r.returncode == 2
    assert "no orders table" in r.stderr and "Traceback" not in r.stderr


def test_check_on_orders_without_ordered_at_exits_2(tmp_path: Path) -> None:
    write_store(tmp_path, orders="order_id,customer_id,revenue\nO1,C1,10\n")
    r = juno("check", str(tmp_path))
    assert r.returncode == 2
    assert "ordered_at" in r.stderr and "orders.csv" in r.stderr and "Traceback" not in r.stderr


def test_check_on_a_file_that_is_not_a_table_exits_2(tmp_path: Path) -> None:
    (tmp_path / "orders.csv").write_bytes(b"\x00\x01\x02PK\x03\x04 zip bytes")
    r = juno("check", str(tmp_path))
    assert r.returncode == 2
    assert "not a text table" in r.stderr and "Traceback" not in r.stderr


def test_check_reports_a_usable_store(tmp_path: Path) -> None:
    write_store(
        tmp_path,
        orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\nO2,,2025-01-02,5\n",
    )
    r = juno("check", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "Usable: yes" in r.stdout and "rejected" in r.stdout and "History" in r.stdout


def test_unknown_config_key_exits_2(tmp_path: Path) -> None:
    write_store(tmp_path, orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\n")
    (tmp_path / "juno.toml").write_text("[thresholds]\nvip_shar = 0.2\n")
    r = juno("run", str(tmp_path), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "vip_share" in r.stderr


def test_bad_cohort_option_exits_2(tmp_path: Path) -> None:
    write_store(tmp_path, orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\n")
    r = juno("run", str(tmp_path), "--out", str(tmp_path / "o"), "--cohorts", "vip,whales")
    assert r.returncode == 2 and "whales" in r.stderr


def test_console_entry_sets_allocator_defaults_before_numpy_and_arrow_load() -> None:
    """juno.entry (console script, python -m juno) turns off huge-page requests and picks jemalloc,
    unless the user set them; it must run before numpy/pyarrow are imported to take effect."""
    code = (
        "import os, sys\n"
        "sys.argv = ['juno', '--help']\n"
        "from juno.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "import pyarrow as pa\n"
        "print('RESULT', os.environ['NUMPY_MADVISE_HUGEPAGE'], pa.default_memory_pool().backend_name,"
        " os.environ['OPENBLAS_NUM_THREADS'])\n"
    )
    settings = ("NUMPY_MADVISE_HUGEPAGE", "ARROW_DEFAULT_MEMORY_POOL", "OPENBLAS_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in settings}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "RESULT 0 jemalloc 1"
    env["ARROW_DEFAULT_MEMORY_POOL"] = "system"
    env["OPENBLAS_NUM_THREADS"] = "2"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == "RESULT 0 system 2"


def test_console_entry_shortens_arrow_decay_unless_configured() -> None:
    """juno.entry has Arrow's jemalloc return freed pages after 250 ms (the write step's peak
    under slowed threads; bench/README.md), but not when Arrow uses another allocator or the
    user configured jemalloc themselves."""
    code = (
        "import sys\n"
        "import pyarrow as pa\n"
        "calls = []\n"
        "pa.jemalloc_set_decay_ms = calls.append\n"
        "sys.argv = ['juno', '--help']\n"
        "from juno.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('RESULT', calls)\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in ("ARROW_DEFAULT_MEMORY_POOL", "JE_ARROW_MALLOC_CONF")}
    cases = [
        ({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}, "RESULT [250]"),
        ({"ARROW_DEFAULT_MEMORY_POOL": "system"}, "RESULT []"),
        ({"ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "JE_ARROW_MALLOC_CONF": "dirty_decay_ms:500"}, "RESULT []"),
    ]
    for extra, want in cases:
        env = {**base, **extra}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        assert out.stdout.strip().splitlines()[-1] == want, extra


# What a fresh process with the juno command's malloc settings (or without them: mode 'off')
# sees of glibc's heap, through mallinfo2; each check appends its lines and prints a RESULT.
_MALLINFO = (
    "import ctypes, sys, threading\n"
    "import numpy as np\n"
    "from juno.memory import _libc, keep_freed_heap\n"
    "class Info(ctypes.Structure):\n"
    "    _fields_ = [(n, ctypes.c_size_t) for n in ('arena', 'ordblks', 'smblks', 'hblks', 'hblkhd',"
    " 'usmblks', 'fsmblks', 'uordblks', 'fordblks', 'keepcost')]\n"
    "libc = _libc()\n"
    "if libc is None or not hasattr(libc, 'mallinfo2'):\n"
    "    print('RESULT skip'); sys.exit()\n"
    "libc.mallinfo2.restype = Info\n"
    "applied = keep_freed_heap() if sys.argv[1] == 'on' else False\n"
)
_MAPPED = (
    "before = libc.mallinfo2().hblks\n"
    "a = np.ones(8 << 20)  # 64 MB: glibc maps arrays over 32 MB on their own\n"
    "print('RESULT', applied, libc.mallinfo2().hblks - before)\n"
)
_ONE_ARENA = (
    "a = np.ones(2 << 20); del a  # 16 MB freed in the main thread's heap\n"
    "before = libc.mallinfo2().arena\n"
    "t = threading.Thread(target=lambda: np.ones(2 << 20)); t.start(); t.join()\n"
    "print('RESULT', applied, (libc.mallinfo2().arena - before) >= 16 << 20)\n"
)


def _heap_result(check: str, mode: str, extra: dict[str, str] | None = None) -> str:
    """The RESULT line of `_MALLINFO` + `check` in a fresh process: no malloc settings from this
    environment, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    cmd = [sys.executable, "-c", _MALLINFO + check, mode]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**env, **(extra or {})}, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_keep_freed_heap_serves_large_arrays_from_the_heap() -> None:
    """The juno command lets glibc serve large arrays from the (reused) heap instead of fresh
    mappings; a user's own malloc settings win."""
    if _heap_result(_MAPPED, "off") == "RESULT skip":
        pytest.skip("not glibc")  # mallinfo2 counts the mapped blocks
    assert _heap_result(_MAPPED, "off") == "RESULT False 1"  # the default: the array got its own mapping
    assert _heap_result(_MAPPED, "on") == "RESULT True 0"
    user = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_MAX_": "65536"}
    assert _heap_result(_MAPPED, "on", user) == "RESULT False 1"


def test_keep_freed_heap_shares_one_heap_between_threads() -> None:
    """Memory a thread frees is reused by the others (one arena): an array made on a second
    thread takes the heap the main thread freed instead of a heap of its own."""
    if _heap_result(_ONE_ARENA, "off") == "RESULT skip":
        pytest.skip("not glibc")
    assert _heap_result(_ONE_ARENA, "off") == "RESULT False True"  # the default: the thread's own heap grew
    assert _heap_result(_ONE_ARENA, "on") == "RESULT True False"


def test_a_finished_run_leaves_its_arrays_to_the_process_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`juno run` ends the process once its outputs are written and the streams flushed, without
    freeing the run's arrays one by one (juno.entry); a failed run and other commands end as
    usual. In a subprocess, piped stdout still carries the whole summary."""
    from juno import cli, entry

    write_store(
        tmp_path / "store",
        orders="order_id,customer_id,ordered_at,revenue\nO1,C1,2025-01-01,10\nO2,C1,2025-03-01,20\n",
    )
    exits: list[int] = []

    class Exited(Exception):
        pass

    def fake_exit(code: int) -> None:
        exits.append(code)
        raise Exited

    monkeypatch.setattr(entry, "prepare_process", lambda: None)  # leave this process's malloc alone
    monkeypatch.setattr(os, "_exit", fake_exit)
    monkeypatch.setattr(cli.state, "finished_run", None)
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["juno", "run", str(tmp_path / "store"), "--out", str(out), "--quiet"])
    with pytest.raises(Exited):
        entry.main()
    assert exits == [0] and (out / "customers.csv").is_file() and (out / "run.json").is_file()
    assert cli.state.finished_run is not None  # still held when the process ends

    monkeypatch.setattr(cli.state, "finished_run", None)
    monkeypatch.setattr(sys, "argv", ["juno", "version"])
    entry.main()  # returns: nothing was run
    assert exits == [0]

    r = juno("run", str(tmp_path / "store"), "--out", str(tmp_path / "out2"))
    assert r.returncode == 0 and "customers: " in r.stdout and "Wrote" in r.stdout

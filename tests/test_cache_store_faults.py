"""Cache faults that must cost the cache, never the job (issue 16.11): a file-size limit, a
symbolic link (or a file) where an entry should be, a writer that was stopped holding the lock."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from paramcorr import cache_store
from paramcorr.cache_store import CacheStore, EntryWriter

DATA = np.arange(40_000, dtype=np.float32).reshape(10_000, 4)  # 160 KB


def build(writer: EntryWriter) -> dict:
    writer.put("x", DATA)
    return {"rows": len(DATA)}


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    monkeypatch.setattr(cache_store, "_VERIFIED", set())
    monkeypatch.setattr(cache_store, "_UNUSABLE_SAID", set())


def test_a_file_size_limit_runs_without_the_cache(tmp_path):
    # A real RLIMIT_FSIZE (as `ulimit -f` or a batch system sets it): numpy reports the refused
    # bytes as a short write without an errno; Python ignores SIGXFSZ, so write() says EFBIG.
    code = textwrap.dedent(f"""
        import logging, resource, sys
        import numpy as np
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        from paramcorr.cache_store import CacheStore
        def build(writer):
            writer.put("x", np.zeros((10_000, 4), np.float32))
            return {{}}
        for key in ("a", "b"):
            print(CacheStore({str(tmp_path)!r}, "test cache").fetch(key, build))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None"]
    said = done.stderr.strip().splitlines()
    assert len(said) == 1 and "test cache off" in said[0] and "running without it" in said[0]
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "a").exists()


@pytest.mark.parametrize("damage", ["link to a directory", "dangling link", "file"])
def test_a_damaged_entry_that_is_a_link_or_a_file_is_replaced(tmp_path, damage, caplog):
    store = CacheStore(tmp_path / "cache", "test cache")
    store.root.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("not the cache's")
    entry = store.entry("k")
    if damage == "link to a directory":
        entry.symlink_to(elsewhere)
    elif damage == "dangling link":
        entry.symlink_to(tmp_path / "gone")
    else:
        entry.write_text("half an entry")

    with caplog.at_level(logging.WARNING, logger="paramcorr.cache_store"):
        arrays, meta, hit = store.fetch("k", build)
    assert hit is False and np.array_equal(arrays["x"], DATA) and meta == {"rows": 10_000}
    assert entry.is_dir() and not entry.is_symlink()
    assert (elsewhere / "keep.txt").read_text() == "not the cache's"  # link removed, not followed
    assert any("recomputing" in r.getMessage() for r in caplog.records)
    assert store.fetch("k", build)[2] is True  # and from now on a hit


HOLD_LOCK = textwrap.dedent("""
    import os, signal, sys, time
    from paramcorr.cache_store import CacheStore
    with CacheStore(sys.argv[1], "test cache")._lock("k"):
        print("locked", flush=True)
        if sys.argv[2] == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        time.sleep(120)
""")


def _hold_lock(root: Path, how: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(root), how],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def _fetch_bounded(root: Path, limit_s: float = 30.0) -> tuple[object, float]:
    """fetch() in a thread, so a wait that never ends fails the test instead of hanging it
    (the holder is killed afterwards, which ends any wait). Returns (result, seconds)."""
    out: list = []

    def fetch() -> None:
        started = time.monotonic()
        found = CacheStore(root, "test cache").fetch("k", build)
        out.append((found, time.monotonic() - started))

    thread = threading.Thread(target=fetch, daemon=True)
    thread.start()
    thread.join(limit_s)
    return out[0] if out else ("still waiting", limit_s)


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_stopped_writer_is_not_waited_for(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(cache_store, "STOPPED_WRITER_GRACE_S", 1.0, raising=False)
    tmp_path.joinpath("cache").mkdir()
    child = _hold_lock(tmp_path / "cache", "stop")
    try:
        deadline = time.monotonic() + 30
        while _state(child.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(child.pid) == "T"
        with caplog.at_level(logging.INFO, logger="paramcorr.cache_store"):
            found, waited = _fetch_bounded(tmp_path / "cache")
    finally:
        child.kill()
        os.kill(child.pid, signal.SIGCONT)
        child.wait(timeout=30)
    assert found is None and 1.0 <= waited < 20  # the job computes without the cache
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == [f"test cache entry k: its writer (pid {child.pid} on "
                    f"{os.uname().nodename}) is stopped; running without the cache"]
    assert not (tmp_path / "cache" / "k").exists()


def test_a_writer_holding_the_lock_too_long_is_waited_for_a_bounded_time(tmp_path, monkeypatch,
                                                                         caplog):
    monkeypatch.setattr(cache_store, "LOCK_WAIT_S", 1.5, raising=False)
    tmp_path.joinpath("cache").mkdir()
    child = _hold_lock(tmp_path / "cache", "run")
    try:
        with caplog.at_level(logging.WARNING, logger="paramcorr.cache_store"):
            found, _ = _fetch_bounded(tmp_path / "cache")
    finally:
        child.kill()
        child.wait(timeout=30)
    assert found is None
    assert len(caplog.records) == 1 and f"(pid {child.pid} on" in caplog.records[0].getMessage()
    # Once the writer is gone, the entry is built and used as usual.
    assert CacheStore(tmp_path / "cache", "test cache").fetch("k", build)[2] is False

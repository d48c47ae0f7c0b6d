"""The verified cache store: what is trusted, what is recomputed, locks, temps, no cache dir."""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from paramcorr import cache_store
from paramcorr.cache_store import CacheStore, EntryWriter

DATA = np.arange(4000, dtype=np.float32).reshape(1000, 4)


def builder(calls: list[int], data: np.ndarray = DATA):
    def build(writer: EntryWriter) -> dict:
        calls.append(1)
        writer.put("x", data)
        streamed = writer.open("y", (len(data),), np.int64)
        streamed[:] = np.arange(len(data))
        return {"rows": len(data)}
    return build


def rows_agree(arrays: dict, meta: dict) -> str | None:
    return None if arrays["x"].shape == (1000, 4) and meta["rows"] == 1000 else "wrong rows"


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    # Each test behaves as a new process: nothing verified or said before.
    monkeypatch.setattr(cache_store, "_VERIFIED", set())
    monkeypatch.setattr(cache_store, "_UNUSABLE_SAID", set())


def test_an_entry_is_built_once_then_read_back_equal(tmp_path):
    calls: list[int] = []
    store = CacheStore(tmp_path, "test cache")
    arrays, meta, hit = store.fetch("k", builder(calls), rows_agree)
    assert (hit, meta, len(calls)) == (False, {"rows": 1000}, 1)
    arrays, meta, hit = store.fetch("k", builder(calls), rows_agree, mmap=True)
    assert hit and len(calls) == 1
    assert np.array_equal(arrays["x"], DATA) and np.array_equal(arrays["y"], np.arange(1000))
    assert isinstance(arrays["x"], np.memmap)


def _data_offset(path: Path) -> int:
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        return handle.tell()


def test_damaged_bytes_in_the_middle_of_the_data_are_found_and_rebuilt(tmp_path, caplog):
    calls: list[int] = []
    store = CacheStore(tmp_path, "test cache")
    store.fetch("k", builder(calls), rows_agree)
    path = tmp_path / "k" / "x.npy"
    raw = bytearray(path.read_bytes())
    middle = _data_offset(path) + (len(raw) - _data_offset(path)) // 2
    raw[middle] ^= 0xFF  # the header stays intact: only a checksum can tell
    path.write_bytes(bytes(raw))
    assert np.load(path).shape == DATA.shape and not np.array_equal(np.load(path), DATA)
    cache_store._VERIFIED.clear()  # another process: nothing verified yet
    with caplog.at_level(logging.WARNING, logger="paramcorr.cache_store"):
        arrays, _, hit = store.fetch("k", builder(calls), rows_agree)
    assert hit is False and len(calls) == 2 and np.array_equal(arrays["x"], DATA)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "checksum mismatch in x" in lines[0] and "recomputing" in lines[0]


def test_an_entry_the_check_rejects_is_rebuilt_not_a_failure_forever(tmp_path):
    calls: list[int] = []
    store = CacheStore(tmp_path, "test cache")
    wrong = np.zeros((999, 4), np.float32)  # a consistent entry of the wrong shape
    store.fetch("k", builder(calls, wrong))
    arrays, _, hit = store.fetch("k", builder(calls), rows_agree)
    assert hit is False and arrays["x"].shape == (1000, 4) and len(calls) == 2
    assert store.fetch("k", builder(calls), rows_agree)[2] is True


@pytest.mark.parametrize("damage", ["manifest", "header", "missing"])
def test_entries_that_do_not_match_their_manifest_are_rebuilt(tmp_path, damage):
    calls: list[int] = []
    store = CacheStore(tmp_path, "test cache")
    store.fetch("k", builder(calls))
    entry = tmp_path / "k"
    if damage == "manifest":
        manifest = json.loads((entry / "manifest.json").read_text())
        manifest["key"] = "another"
        (entry / "manifest.json").write_text(json.dumps(manifest))
    elif damage == "header":  # same bytes, another shape in the header
        np.save(entry / "x.npy", DATA.reshape(2000, 2))
    else:
        (entry / "y.npy").unlink()
    cache_store._VERIFIED.clear()
    arrays, _, hit = store.fetch("k", builder(calls))
    assert hit is False and len(calls) == 2 and arrays["x"].shape == (1000, 4)


def test_an_unusable_cache_dir_means_no_cache_said_once(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, logger="paramcorr.cache_store"):
        for _ in range(3):
            assert CacheStore(blocker / "cache", "test cache").fetch("k", builder(calls)) is None
    assert calls == [] and len(caplog.records) == 1
    assert "running without it" in caplog.records[0].getMessage()


def test_a_full_disk_while_writing_means_no_cache_and_no_temp_left(tmp_path, monkeypatch, caplog):
    def full(self, name, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EntryWriter, "put", full)
    with caplog.at_level(logging.WARNING, logger="paramcorr.cache_store"):
        for key in ("a", "b"):
            assert CacheStore(tmp_path, "test cache").fetch(key, builder([])) is None
    assert len(caplog.records) == 1 and "No space left" in caplog.records[0].getMessage()
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "a").exists()


def test_temps_of_dead_writers_are_removed_and_a_live_writers_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    stale = tmp_path / f".other.{host}.{dead.pid}.tmp"
    own_key = tmp_path / f".k.{host}.{os.getppid()}.tmp"  # this key: we hold its lock
    live = tmp_path / f".other2.{host}.{os.getppid()}.tmp"  # a live writer of another key
    for tmp in (stale, own_key, live):
        tmp.mkdir()
        (tmp / "x.npy").write_bytes(b"partial")
    CacheStore(tmp_path, "test cache").fetch("k", builder([]))
    assert not stale.exists() and not own_key.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["k", "k.lock", live.name])


def _fill(root: str, log: str) -> None:
    def build(writer: EntryWriter) -> dict:
        with open(log, "a") as handle:
            handle.write("built\n")
        time.sleep(1.0)  # long enough that the others arrive while it computes
        writer.put("x", DATA)
        return {"rows": 1000}

    arrays, _, _ = CacheStore(Path(root), "test cache").fetch("k", build, rows_agree)
    assert np.array_equal(arrays["x"], DATA)


def test_parallel_jobs_wait_for_one_writer_and_read_its_entry(tmp_path):
    log = tmp_path / "builds.txt"
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_fill, args=(str(tmp_path / "cache"), str(log)))
             for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert log.read_text() == "built\n"  # one process computed, the others waited and read


def test_a_streamed_array_that_does_not_fit_is_no_cache_not_a_crash(tmp_path, monkeypatch):
    # A sparse memory map on a full disk would die of SIGBUS mid-write; the blocks are
    # allocated first, so a full disk is an ENOSPC before any write.
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    assert CacheStore(tmp_path, "test cache").fetch("k", builder([])) is None
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "k").exists()

"""How a cache entry is stored and when it is trusted: one place for both caches.

An entry is a directory ``<root>/<key>/`` holding one ``.npy`` file per named array (numpy's
own format: dtype and shape in its header, the data memory-mappable) and ``manifest.json``
with each array's dtype, shape and sha256, plus what the caller says the entry stands for
(``meta``). An entry is only used after

- the manifest names this key and the arrays' headers agree with it (dtype, shape);
- each array's bytes hash to the recorded sha256 (once per file version per process: a sweep
  runs many jobs in one process);
- the caller's ``check`` agrees (e.g. row counts and labels of the split it stands for).

Anything else is recomputed and replaced, with one log line. Writers take a lock per key
(``fcntl.flock`` on ``<key>.lock``), so one process computes while parallel jobs wait and then
read. The holder writes its host and pid into the lock file; a waiter says whom it waits for,
and stops waiting (runs without the cache, one log line) when that writer is stopped
(Ctrl-Z, ``scontrol suspend``) for :data:`STOPPED_WRITER_GRACE_S`, or after :data:`LOCK_WAIT_S`.
An entry is built in ``.<key>.<host>.<pid>.tmp/`` and renamed into place, so a reader sees a
whole entry or none. A temp dir of a killed writer is removed by the next writer of that
key (holding the lock, no live writer of it can exist) or by any writer once its pid is gone.
If the cache directory cannot be written (read-only, full, a file-size limit), the caller is told
(``None``) and runs without the cache; that is logged once per directory. An entry that is not
a directory this cache wrote (a symbolic link, a file) is damaged: replaced, never followed.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from paramcorr.files import read_regular_file

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
# A temp dir from another host (shared file system) is only removed when this old.
FOREIGN_TEMP_MAX_AGE_S = 6 * 3600
# How long a job waits for another process writing the same entry before it computes without
# the cache (a big feature extraction takes long; a hung writer must not hold every job).
LOCK_WAIT_S = 2 * 3600.0
# A writer on this host that is stopped (state T in /proc) this long is not waited for.
STOPPED_WRITER_GRACE_S = 30.0
# While waiting, a log line this often naming the writer.
LOCK_REPORT_S = 300.0
# A manifest holds arrays' specs and a small meta: larger is damage.
MAX_MANIFEST_BYTES = 16 * 2**20
# Errors that say the cache cannot be written here (full, quota, file-size limit, read-only):
# the job runs without it.
CANNOT_WRITE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EROFS,
                          errno.EPERM})

Check = Callable[[dict[str, np.ndarray], dict[str, Any]], str | None]

_VERIFIED: set[tuple[str, int, int, int, str]] = set()
_UNUSABLE_SAID: set[str] = set()


class CacheWriteError(OSError):
    """Writing an entry's file stopped short: numpy reports a full disk or a file-size limit
    as a short write ("N requested and M written"), without an errno."""


class LockWaitGiveUp(Exception):
    """Another process holds the entry's lock and is stopped, or held it too long."""


class EntryWriter:
    """What a builder fills: arrays given whole (:meth:`put`) or streamed (:meth:`open`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.arrays: dict[str, np.ndarray] = {}

    def put(self, name: str, array: np.ndarray) -> None:
        try:
            np.save(self.directory / f"{name}.npy", np.ascontiguousarray(array),
                    allow_pickle=False)
        except OSError as err:
            if err.errno is not None:
                raise
            raise CacheWriteError(errno.EFBIG, f"short write ({err}): full disk or file-size "
                                  "limit") from err

    def open(self, name: str, shape: tuple[int, ...], dtype: np.dtype | str) -> np.memmap:
        """A writable memory map of ``shape``; fill it in place (flushed on commit)."""
        path = self.directory / f"{name}.npy"
        array = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(dtype), shape=shape)
        # The file is sparse: on a full disk, writing through the map would kill the process
        # (SIGBUS). Allocating its blocks now turns that into ENOSPC here.
        fd = os.open(path, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        self.arrays[name] = array
        return array


class CacheStore:
    """Verified entries under ``root``; ``what`` names the cache in log lines."""

    def __init__(self, root: Path, what: str) -> None:
        self.root = Path(root)
        self.what = what

    # --- the protocol -------------------------------------------------------------------

    def fetch(self, key: str, build: Callable[[EntryWriter], dict[str, Any]],
              check: Check | None = None, mmap: bool = False
              ) -> tuple[dict[str, np.ndarray], dict[str, Any], bool] | None:
        """The entry's arrays and meta, and whether it was already there (a hit).

        ``build`` fills an :class:`EntryWriter` and returns the entry's ``meta``. Returns
        ``None`` when the cache directory cannot be used; the caller then runs without it.
        """
        if not self._usable():
            return None
        found = self._read(key, check, mmap, say=False)
        if found is not None:
            return (*found, True)
        for _ in range(3):  # an entry removed by someone else right after it was written
            try:
                with self._lock(key):
                    # Another process may have written it while this one waited for the lock.
                    found = self._read(key, check, mmap, say=True)
                    if found is not None:
                        return (*found, True)
                    self._clean_temps(key)
                    self._write(key, build)
                    found = self._read(key, check, mmap, say=True)
            except LockWaitGiveUp:
                return None
            except OSError as err:
                if err.errno not in CANNOT_WRITE:
                    raise
                self._say_unusable(err)
                return None
            if found is not None:
                return (*found, False)
        raise RuntimeError(f"{self.what} entry {key} vanished or failed verification right "
                           "after it was written, three times")

    # --- reading and verifying ----------------------------------------------------------

    def entry(self, key: str) -> Path:
        return self.root / key

    def _read(self, key: str, check: Check | None, mmap: bool, say: bool
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        directory = self.entry(key)
        if not os.path.lexists(directory):
            return None
        if directory.is_symlink() or not directory.is_dir():
            reason = "is not a directory this cache wrote (a symbolic link or a file)"
        else:
            try:
                arrays, meta = self._load(key, directory, mmap)
                reason = check(arrays, meta) if check is not None else None
            except Exception as err:  # noqa: BLE001 - a damaged entry is recomputed
                reason = f"unreadable ({type(err).__name__}: {str(err)[:200]})"
        if reason is None:
            return arrays, meta
        if say:  # said once, by the process that replaces it
            log.warning("%s entry %s %s; recomputing it", self.what, key, reason)
        return None

    def _load(self, key: str, directory: Path, mmap: bool
              ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        manifest = json.loads(read_regular_file(directory / MANIFEST, MAX_MANIFEST_BYTES))
        if manifest.get("format") != FORMAT or manifest.get("key") != key:
            raise ValueError("manifest is for another key or format")
        arrays = {}
        for name, spec in manifest["arrays"].items():
            path = directory / f"{name}.npy"
            if path.is_symlink() or not path.is_file():  # a FIFO would block np.load
                raise ValueError(f"{name}.npy is not a regular file")
            array = np.load(path, mmap_mode="c" if mmap else None, allow_pickle=False)
            if str(array.dtype) != spec["dtype"] or list(array.shape) != spec["shape"]:
                raise ValueError(f"{name} is {array.dtype}{list(array.shape)}, the manifest "
                                 f"says {spec['dtype']}{spec['shape']}")
            self._verify_digest(path, array, spec["sha256"], name)
            arrays[name] = array
        return arrays, manifest.get("meta", {})

    @staticmethod
    def _verify_digest(path: Path, array: np.ndarray, expected: str, name: str) -> None:
        stat = path.stat()
        version = (str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, expected)
        if version in _VERIFIED:
            return
        if _digest(array) != expected:
            raise ValueError(f"checksum mismatch in {name} (damaged data)")
        _VERIFIED.add(version)

    # --- writing ------------------------------------------------------------------------

    def _write(self, key: str, build: Callable[[EntryWriter], dict[str, Any]]) -> None:
        tmp = self.root / f".{key}.{socket.gethostname()}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            writer = EntryWriter(tmp)
            meta = build(writer)
            for array in writer.arrays.values():
                array.flush()
            writer.arrays.clear()
            specs = {}
            for path in sorted(tmp.glob("*.npy")):
                array = np.load(path, mmap_mode="r", allow_pickle=False)
                specs[path.stem] = {"dtype": str(array.dtype), "shape": list(array.shape),
                                    "sha256": _digest(array)}
                del array
            manifest = {"format": FORMAT, "key": key, "arrays": specs, "meta": meta,
                        "written": time.time()}
            (tmp / MANIFEST).write_text(json.dumps(manifest, sort_keys=True))
            target = self.entry(key)
            # A damaged or stale entry is replaced under the lock; a link or a file in its
            # place is removed itself, never what it points to.
            if target.is_symlink() or (os.path.lexists(target) and not target.is_dir()):
                target.unlink()
            elif target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
            for name, spec in specs.items():  # hashed just now: not again in this process
                stat = (target / f"{name}.npy").stat()
                _VERIFIED.add((str(target / f"{name}.npy"), stat.st_ino, stat.st_size,
                               stat.st_mtime_ns, spec["sha256"]))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        """Hold ``<key>.lock`` (released by the kernel if this process dies), after waiting
        for its holder as the module doc says; raises LockWaitGiveUp when it stops waiting."""
        path = self.root / f"{key}.lock"
        with open(path, "a+") as handle:
            self._acquire(handle.fileno(), path, key)
            try:
                try:  # who holds it, for the log lines of those who wait
                    os.ftruncate(handle.fileno(), 0)
                    os.pwrite(handle.fileno(), f"{socket.gethostname()} {os.getpid()}\n"
                              .encode(), 0)
                except OSError:
                    pass  # a full disk: the lock holds all the same
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _acquire(self, fd: int, path: Path, key: str) -> None:
        start = time.monotonic()
        next_report = start + 2.0  # a short wait says nothing
        stopped_since: float | None = None
        pause = 0.05
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            now = time.monotonic()
            host, pid = _holder(path)
            stopped = host == socket.gethostname() and pid is not None and _stopped(pid)
            stopped_since = (stopped_since or now) if stopped else None
            who = f"pid {pid} on {host}" if pid is not None else "another process"
            if stopped_since is not None and now - stopped_since >= STOPPED_WRITER_GRACE_S:
                log.warning("%s entry %s: its writer (%s) is stopped; running without the "
                            "cache", self.what, key, who)
                raise LockWaitGiveUp(key)
            if now - start >= LOCK_WAIT_S:
                log.warning("%s entry %s: its writer (%s) has held it %.0f s; running without "
                            "the cache", self.what, key, who, now - start)
                raise LockWaitGiveUp(key)
            if now >= next_report:
                log.info("%s entry %s: waiting for its writer (%s%s)", self.what, key, who,
                         ", stopped" if stopped else "")
                next_report = now + LOCK_REPORT_S
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _clean_temps(self, key: str) -> None:
        """Remove temp dirs killed writers left: this key's (we hold its lock) and dead pids'."""
        host = socket.gethostname()
        for tmp in self.root.glob(".*.tmp"):
            parts = tmp.name[1:-4].rsplit(".", 2)
            if len(parts) != 3:
                continue
            tmp_key, tmp_host, pid = parts
            if tmp_key == key or (tmp_host == host and pid.isdigit()
                                  and not _alive(int(pid))) or (
                    tmp_host != host and _age_s(tmp) > FOREIGN_TEMP_MAX_AGE_S):
                shutil.rmtree(tmp, ignore_errors=True)

    # --- an unusable directory ----------------------------------------------------------

    def _usable(self) -> bool:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "not writable", str(self.root))
        except OSError as err:
            self._say_unusable(err)
            return False
        return True

    def _say_unusable(self, err: OSError) -> None:
        if str(self.root) not in _UNUSABLE_SAID:
            _UNUSABLE_SAID.add(str(self.root))
            log.warning("%s off: cannot write %s (%s); running without it", self.what,
                        self.root, err.strerror or err)


def _digest(array: np.ndarray) -> str:
    digest = hashlib.sha256()
    flat = array.reshape(-1).view(np.uint8) if array.size else np.zeros(0, np.uint8)
    step = 1 << 26
    for start in range(0, flat.size, step):  # in chunks: a memory map stays paged out
        digest.update(memoryview(np.ascontiguousarray(flat[start:start + step])))
    return digest.hexdigest()


def _holder(path: Path) -> tuple[str | None, int | None]:
    """The host and pid a lock file names (None, None if it names none)."""
    try:
        host, pid = read_regular_file(path, 4096).decode().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None, None


def _stopped(pid: int) -> bool:
    """Is ``pid`` (on this host) stopped by a signal or a debugger (Linux /proc)?"""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) state ...": comm may hold spaces and parentheses, the state follows the last.
    return stat.rpartition(")")[2].split()[:1] in (["T"], ["t"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age_s(path: Path) -> float:
    newest = max((p.stat().st_mtime for p in [path, *path.rglob("*")]), default=0.0)
    return time.time() - newest

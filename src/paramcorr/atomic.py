"""One writer per file and per job directory.

Atomic writes: a reader (or a crash) sees the old file or the whole new one. Job locks: a
job directory is worked on by one process at a time, whichever launch started it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

LOCK_NAME = ".job.lock"
# ``.<name>.<pid>-<random>.tmp``: the pid says whose temp file it is (see remove_stale_temps).
_TEMP = re.compile(r"^\..+\.(?:(?P<pid>\d+)-)?[^.]+\.tmp$")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temp file beside ``path`` to write; renamed onto ``path`` if the block succeeds.

    The temp name is ``.<name>.<pid>-<random>.tmp`` in the same directory (a rename is only
    atomic within one file system); :func:`remove_stale_temps` clears what a ``kill -9``
    between write and rename leaves behind, and only that.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-",
                               suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600 whatever the umask, and some writers (safetensors)
        # make a file of their own there; the result is an ordinary output (a record,
        # weights), with the mode the umask gives any new file, so a group-shared sweep
        # dir's co-workers can read it.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def current_umask() -> int:
    """This process's umask, read without changing it where Linux says it (``/proc``)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable read sets it, so set it back
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temps(directory: Path) -> int:
    """Delete the temp files (``.<name>.*.tmp``) that killed writers left in ``directory``.

    A temp file whose pid is a live process is another writer's, in the middle of its
    write, and is left alone; so is anything not named like a temp file. Temp files without
    a pid (older versions) are removed: call this only where no other writer can be, i.e.
    in a job directory under its :func:`job_lock`.
    """
    removed = 0
    for tmp in Path(directory).glob(".*.tmp"):
        match = _TEMP.match(tmp.name)
        if match is None:
            continue
        pid = match.group("pid")
        if pid is not None and int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


class OutputError(Exception):
    """The output directory cannot be written (read-only, full, not a directory): one line."""

    def __init__(self, directory: Path, err: OSError) -> None:
        reason = err.strerror or str(err) or type(err).__name__
        super().__init__(f"cannot write to output directory {directory}: {reason}; free space "
                         "or choose another with paths.output_root=<dir>")


@contextmanager
def writing_to(directory: Path) -> Iterator[None]:
    """Turn an OSError of the block (output writes only) into :class:`OutputError`."""
    try:
        yield
    except OSError as err:
        raise OutputError(directory, err) from err


class JobBusy(Exception):
    """Another process holds the job directory's lock; ``str(err)`` says which."""


def _open_lock_file(path: Path) -> TextIO:
    """``path`` opened for reading and writing, created if missing, never through a link.

    A symlink planted at ``path`` is not followed (its target would be truncated and
    written): it is removed and a plain lock file made in its place. Only the link goes;
    its target is untouched.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP or not os.path.islink(path):
            raise
        os.unlink(path)
        try:
            fd = os.open(path, flags | os.O_EXCL, 0o666)
        except FileExistsError:  # a concurrent launch made the plain file first: share it
            fd = os.open(path, flags, 0o666)
    return os.fdopen(fd, "r+")


@contextmanager
def job_lock(directory: Path) -> Iterator[None]:
    """Hold ``directory``'s job lock for the block, or raise :class:`JobBusy` at once
    (:class:`OutputError` if the lock file cannot be written).

    An exclusive ``fcntl.flock`` on ``<directory>/.job.lock``: the kernel releases it when the
    holder exits, however it ends (``kill -9`` included), so a lock is never stale. The lock
    file stays (deleting it would let a third process lock a new file while the second holds
    the old one). A second launch of the same sweep does not wait: it skips the job, which the
    first launch finishes (see README, "One job, one runner").
    """
    path = Path(directory) / LOCK_NAME
    with writing_to(directory):
        handle = _open_lock_file(path)
    try:
        with writing_to(directory):
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise JobBusy(f"{directory} is being run by {holder}") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
            handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()

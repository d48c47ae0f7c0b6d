"""Reading a small file that anyone could have replaced: only a regular file, only so much.

A run record or a cache manifest is a few kilobytes. A FIFO of that name would block a plain
``open`` until a writer came (forever); a link to ``/dev/zero`` would be read without end. Both
are refused here as an :class:`OSError`, which callers already treat as "unreadable".
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class NotARegularFileError(OSError):
    """The path is a FIFO, a device, a socket or a directory, or larger than allowed."""


def read_regular_file(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of ``path`` (links followed) if it is a regular file of at most ``max_bytes``.

    Opened non-blocking, so a FIFO answers at once instead of waiting for a writer.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFileError(errno.EINVAL, "not a regular file (a FIFO, device, "
                                       "socket or directory)", str(path))
        if info.st_size > max_bytes:
            raise NotARegularFileError(errno.EFBIG, f"{info.st_size} bytes, more than the "
                                       f"{max_bytes} a file of this kind can hold", str(path))
        chunks = []
        left = max_bytes + 1  # the file may grow after the stat
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise NotARegularFileError(errno.EFBIG, f"more than the {max_bytes} bytes a file "
                                       "of this kind can hold", str(path))
        return b"".join(chunks)
    finally:
        os.close(fd)

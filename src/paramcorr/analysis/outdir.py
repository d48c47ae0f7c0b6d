"""The analysis output directory (``--out``): refused early, with one line, if unusable.

The statistics take minutes on a large sweep; an ``--out`` that cannot be written must fail
before them, not after.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from paramcorr.errors import UserError


class OutDirError(UserError):
    """``--out`` names a place the analysis cannot write."""


def check_out_dir(out_dir: Path) -> None:
    """Refuse ``out_dir`` if it cannot become a writable directory; creates nothing.

    Cheap (a few stats), so it runs before the records are read. Some refusals only show
    when writing (a read-only mount seen as writable by root, /proc): :func:`make_out_dir`.
    """
    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise OutDirError(f"--out {out_dir} exists and is not a directory; "
                          "give a new or existing directory")
    existing = out_dir
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OutDirError(f"--out {out_dir} cannot be created: {existing} is not a directory; "
                          "give another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutDirError(f"--out {out_dir} cannot be written: {existing} is not writable; "
                          "give another --out")


def make_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` and prove a file can be written there; one-line OutDirError if not."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir, prefix=".write-test."):
            pass
    except OSError as err:
        raise OutDirError(f"--out {out_dir} cannot be written ({err.strerror or err}); "
                          "give another --out") from err
    return out_dir

"""What a run reads besides its config: the dataset's files and the weights file.

A config names its inputs (``data.root``, ``model.weights=<path>``) but does not hold them:
the same config on a re-pretrained weights file or on a folder with new images is another
run. :func:`input_identity` says what the inputs are, cheaply (a listing with sizes and
modification times, not a decode; one read of the weights file per version per process), so
a job can compare it with its finished record before deciding to skip.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def file_digest(path: Path) -> str:
    """sha256 of a file's content, computed once per version of the file per process."""
    stat = path.stat()
    return _digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(weights: str) -> str | None:
    """``sha256:<hex>`` of a weights file; None for ``random``/``imagenet`` (named by the
    config and timm's version) or a path that is not a readable file (the job reports it)."""
    if weights in ("random", "imagenet"):
        return None
    path = Path(str(weights)).expanduser()
    try:
        return "sha256:" + file_digest(path) if path.is_file() else None
    except OSError:
        return None


def _listing(base: Path, digest: Any, label: str) -> int:
    """Feed every file below ``base`` (relative path, size, mtime) to ``digest``; count them."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            try:
                stat = os.stat(full)
            except OSError:  # a dangling link: it is listed, as missing
                stat = None
            rel = os.path.relpath(full, base)
            digest.update(json.dumps([label, rel, stat and stat.st_size,
                                      stat and stat.st_mtime_ns]).encode())
            count += 1
    return count


def data_fingerprint(data: DictConfig) -> str | None:
    """A fingerprint of the dataset's content, from a listing (no image is opened).

    ``imagefolder``: every file below ``data.root`` and ``data.generalization_root``, by path
    relative to its root, size and modification time, so an added, removed, replaced or
    touched file changes it, while moving the whole tree does not. ``digits``: scikit-learn's
    embedded array is fixed, so the data config's own values. None when ``data.root`` is not a
    directory (the job fails with its own message).
    """
    digest = hashlib.sha256()
    if data.name != "imagefolder":
        values = OmegaConf.to_container(data, resolve=True)
        digest.update(json.dumps(values, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:32]
    if not data.get("root"):
        return None
    root = Path(str(data.root)).expanduser()
    if not root.is_dir():
        return None
    _listing(root, digest, "root")
    gen = data.get("generalization_root")
    if gen:
        gen_root = Path(str(gen)).expanduser()
        if not gen_root.is_dir():
            return None
        _listing(gen_root, digest, "gen")
    return digest.hexdigest()[:32]


def data_root(data: DictConfig) -> str | None:
    """The resolved dataset root for the record (None for embedded data)."""
    if data.name != "imagefolder" or not data.get("root"):
        return None
    return str(Path(str(data.root)).expanduser().resolve())


def input_identity(cfg: DictConfig) -> dict[str, Any]:
    """The record's ``inputs`` block: data root, its fingerprint, the weights file's digest."""
    return {"data_root": data_root(cfg.data), "data_fingerprint": data_fingerprint(cfg.data),
            "weights_digest": weights_digest(str(cfg.model.weights))}


def sweep_segment(dataset: str, root: str | None, generalization_root: str | None) -> str:
    """The sweep directory's data segment: ``/<root name>-<hash>`` for an image folder.

    Sweeps of one ``name`` on different data (another ``data.root`` or
    ``data.generalization_root``) get different sweep directories, so they never set each
    other's records aside; the same command (same roots) resumes the same directory.
    ``digits`` has no segment: ``outputs/multirun/<name>`` as documented.
    """
    if dataset != "imagefolder" or not root:
        return ""
    resolved = [str(Path(str(r)).expanduser().resolve()) if r else None
                for r in (root, generalization_root)]
    digest = hashlib.sha256(json.dumps(resolved).encode()).hexdigest()[:8]
    return f"/{Path(resolved[0]).name or 'root'}-{digest}"

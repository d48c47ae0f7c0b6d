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
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torchvision.datasets.folder import IMG_EXTENSIONS

from paramcorr.errors import UserError
from paramcorr.record import identity_values


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


# Where ImageFolder finds images below ``data.root``: these split folders only (anything
# else below the root, such as outputs or a cache, is not read and not fingerprinted).
SPLIT_DIRS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageFile:
    """One file ImageFolder would load: its path as ImageFolder joins it, size and mtime.

    ``size`` and ``mtime_ns`` are None for a link that leads nowhere (listed, as missing: the
    image check counts it as unreadable).
    """

    path: str
    rel: str
    size: int | None
    mtime_ns: int | None


@dataclass(frozen=True)
class SplitListing:
    """The images of one split root (``root/train``, a generalization root, ...) by class dir,
    in ImageFolder's order, found the way its ``make_dataset`` finds them:
    ``os.walk(class_dir, followlinks=True)``, files with one of its extensions."""

    root: str
    classes: dict[str, tuple[ImageFile, ...]]

    def files(self) -> list[ImageFile]:
        return [f for name in sorted(self.classes) for f in self.classes[name]]

    def signature(self) -> str:
        """Class dir names and every image's relative path, size and mtime (no decode)."""
        digest = hashlib.sha256()
        for name in sorted(self.classes):
            digest.update(json.dumps(["class", name]).encode())
            for f in self.classes[name]:
                digest.update(json.dumps([f.rel, f.size, f.mtime_ns]).encode())
        return digest.hexdigest()


class LinkCycle(UserError):
    """A directory link leads back to a directory it is inside of (endless for ImageFolder)."""


def _inode(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _walk_class(class_dir: str, rel_base: str, excluded: frozenset[tuple[int, int]]
                ) -> tuple[ImageFile, ...]:
    """Images below ``class_dir``, through links as ImageFolder follows them, in its order.

    A directory that is (a link to) one of its own ancestors would be walked without end
    (or, for a link to ``/``, through the whole file system first): :class:`LinkCycle`.
    A directory in ``excluded`` (outputs, caches) is not entered.
    """
    # The class dir and every folder above it, to the file system's root: a link to any of
    # them (even to ``/``) is a cycle, named at the link itself.
    real = Path(os.path.realpath(class_dir))
    ancestors: dict[str, frozenset[tuple[int, int]]] = {
        class_dir: frozenset(_inode(str(d)) for d in (real, *real.parents))}
    found: list[tuple[str, list[str]]] = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        above = ancestors.pop(dirpath)
        keep = []
        for name in dirnames:
            full = os.path.join(dirpath, name)
            try:
                inode = _inode(full)
            except OSError:
                continue  # vanished or unreadable: os.walk would skip it as well
            if inode in above:
                raise LinkCycle(f"{full} leads back to {os.path.realpath(full)}, a folder it "
                                "is inside of (a link cycle); remove or replace that link")
            if inode in excluded:
                continue
            ancestors[full] = above | {inode}
            keep.append(name)
        dirnames[:] = keep
        found.append((dirpath, sorted(filenames)))
    files = []
    for dirpath, filenames in sorted(found):  # torchvision: sorted(os.walk(...)), sorted names
        for name in filenames:
            if not name.lower().endswith(IMG_EXTENSIONS):
                continue
            full = os.path.join(dirpath, name)
            try:
                stat = os.stat(full)
                size, mtime = stat.st_size, stat.st_mtime_ns
            except OSError:
                size = mtime = None
            rel = os.path.join(rel_base, os.path.relpath(full, class_dir))
            files.append(ImageFile(full, rel, size, mtime))
    return tuple(files)


# Listings made inside :func:`listing_once`, by (split root, excluded dirs): a job lists its
# folders once however many parts (identity, class check, loading, fingerprint) ask.
_LISTINGS: dict[tuple[str, frozenset[tuple[int, int]]], SplitListing] | None = None


@contextmanager
def listing_once() -> Iterator[None]:
    """Within this block, each split root is listed once (one job); outside, every call lists
    afresh (files may change between jobs)."""
    global _LISTINGS
    outer = _LISTINGS
    _LISTINGS = {} if outer is None else outer
    try:
        yield
    finally:
        _LISTINGS = outer


def list_split(root: Path | str, excluded: frozenset[tuple[int, int]] = frozenset()
               ) -> SplitListing:
    """The images below each class dir of ``root`` (its sub-directories, links followed)."""
    key = (str(root), excluded)
    if _LISTINGS is not None and key in _LISTINGS:
        return _LISTINGS[key]
    classes = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and _inode(entry.path) not in excluded:  # is_dir follows links
            classes[entry.name] = _walk_class(os.path.join(str(root), entry.name), entry.name,
                                              excluded)
    listing = SplitListing(str(root), classes)
    if _LISTINGS is not None:
        _LISTINGS[key] = listing
    return listing


def excluded_dirs(paths: DictConfig | None) -> frozenset[tuple[int, int]]:
    """The run's own output and cache directories (as inodes): never part of the data, even
    when they lie inside ``data.root``."""
    if paths is None:
        return frozenset()
    found = set()
    for key in ("output_root", "cache_dir"):
        value = OmegaConf.select(paths, key, default=None, throw_on_resolution_failure=False)
        if value:
            with suppress(OSError):  # not created yet: nothing of it to skip
                found.add(_inode(str(Path(str(value)).expanduser())))
    return frozenset(found)


def data_fingerprint(data: DictConfig, paths: DictConfig | None = None) -> str | None:
    """A fingerprint of the dataset's content, from a listing (no image is opened).

    ``imagefolder``: what ImageFolder would load: class dir names and every image (its
    extensions) below ``train/``, ``val/``, ``test/`` of ``data.root`` and below
    ``data.generalization_root``, by path relative to its root, size and modification time,
    links followed as ImageFolder follows them. An added, removed, replaced or touched image
    changes it; a stray non-image file (``.DS_Store``), outputs or a cache inside the root
    (``paths``) do not, and moving the whole tree does not either. ``digits``:
    scikit-learn's embedded array is fixed, so the data config's own values, less its
    result-neutral keys (:func:`paramcorr.record.identity_values`). None when there is no
    ``train/`` to list, or a link cycle (the job fails with its own message); nothing is
    walked before that is known.
    """
    digest = hashlib.sha256()
    if data.name != "imagefolder":
        digest.update(json.dumps(identity_values(data, "data."), sort_keys=True,
                                 default=str).encode())
        return digest.hexdigest()[:32]
    if not data.get("root"):
        return None
    root = Path(str(data.root)).expanduser()
    if not (root / "train").is_dir():
        return None
    excluded = excluded_dirs(paths)
    bases = [(split, root / split) for split in SPLIT_DIRS if (root / split).is_dir()]
    gen = data.get("generalization_root")
    if gen:
        gen_root = Path(str(gen)).expanduser()
        if not gen_root.is_dir():
            return None
        bases.append(("gen", gen_root))
    try:
        for label, base in bases:
            digest.update(json.dumps([label, list_split(base, excluded).signature()]).encode())
    except (UserError, OSError):
        return None
    return digest.hexdigest()[:32]


def data_root(data: DictConfig) -> str | None:
    """The resolved dataset root for the record (None for embedded data)."""
    if data.name != "imagefolder" or not data.get("root"):
        return None
    return str(Path(str(data.root)).expanduser().resolve())


def input_identity(cfg: DictConfig) -> dict[str, Any]:
    """The record's ``inputs`` block: data root, its fingerprint, the weights file's digest."""
    return {"data_root": data_root(cfg.data),
            "data_fingerprint": data_fingerprint(cfg.data, cfg.get("paths")),
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

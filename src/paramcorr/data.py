"""Datasets: the embedded digits set and the user's ImageFolder, as train/val/test/gen splits.

``digits`` lives in memory as normalized tensors (no per-sample PIL work per epoch).
``imagefolder`` decodes with worker processes and timm's transforms for the backbone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
import shutil
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from timm.data import create_transform
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, TensorDataset
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as tvf
from tqdm.auto import tqdm

from paramcorr.atomic import atomic_path
from paramcorr.cpus import available_cpus
from paramcorr.errors import UserError
from paramcorr.inputs import SplitListing, excluded_dirs, list_split

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "gen")


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    test: Dataset
    gen: Dataset | None
    # The training samples without random augmentation, for the eval-mode train_acc pass.
    train_eval: Dataset
    class_names: list[str]
    # Whether training samples are randomly transformed (then cached features are not valid).
    augmented: bool
    # What determines the tensors the backbone sees, per split: the feature-cache key.
    fingerprint: dict[str, Any]
    bad_images_skipped: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def get(self, split: str) -> Dataset | None:
        return getattr(self, split)


def build_data(cfg: DictConfig, data_config: dict[str, Any],
               paths: DictConfig | None = None) -> DataSplits:
    """The splits for ``cfg`` (the ``data`` node), preprocessed as ``data_config`` says.

    ``paths`` (the config's ``paths`` node): its output and cache dirs are never read as data,
    and image checks are remembered under its ``cache_dir`` (without it, in this process).
    """
    if cfg.name == "digits":
        return _digits(cfg, data_config)
    if cfg.name == "imagefolder":
        return _imagefolder(cfg, data_config, paths)
    raise UserError(f"unknown dataset data.name={cfg.name!r}; use data=digits or data=imagefolder")


def check_classes(cfg: DictConfig) -> list[Any] | None:
    """``data.classes`` as a list, refused if an element has the wrong type or repeats.

    digits: labels, ints among load_digits' targets. imagefolder: folder names (strings, or
    ints standing for names like ``7``). A repeated class would train a head with a phantom
    output that no image carries.
    """
    if cfg.classes is None:
        return None
    raw = cfg.classes
    items = OmegaConf.to_container(raw) if OmegaConf.is_config(raw) else list(raw)
    digits = cfg.name == "digits"
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int if digits else int | str):
            kind = "a digit label (an int)" if digits else "a class folder name"
            raise UserError(f"data.classes={items}: {item!r} is not {kind}; "
                            f"e.g. data.classes={'[5,6,7]' if digits else '[cat,dog]'}")
    repeated = [c for c, n in Counter(str(c) for c in items).items() if n > 1]
    if repeated:
        raise UserError(f"data.classes={items} names {repeated[0]} more than once; "
                        "list each class once")
    if digits:
        known = digit_labels()
        if set(items) - set(known) or len(items) < 2:
            raise UserError(f"data.classes={items} must name at least two digits among "
                            f"{known[0]}..{known[-1]}")
    return items


def count_classes(cfg: DictConfig) -> int:
    """How many classes the data will have, before it is loaded (the head needs it first)."""
    return len(class_names(cfg))


def class_names(cfg: DictConfig) -> list[str]:
    """The data's class names (:attr:`DataSplits.class_names`), before it is loaded."""
    classes = check_classes(cfg)
    if classes is not None:
        return [str(c) for c in classes]
    if cfg.name == "digits":
        return [str(d) for d in digit_labels()]
    return _class_dirs(_train_dir(cfg))


# --- digits -------------------------------------------------------------------------------


@functools.cache
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    return load_digits(return_X_y=True)


def digit_labels() -> list[int]:
    """The labels of scikit-learn's digits set (0..9), read from the data."""
    return sorted(int(d) for d in set(_load_digits()[1]))


# --- digits -------------------------------------------------------------------------------


class AugmentedTensors(Dataset):
    """In-memory images with a random transform per sample (only when data.augment=true)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


# Each class needs a sample in train, val and test.
MIN_PER_CLASS = 3


def _stratified_split(labels: np.ndarray, val_fraction: float, test_fraction: float,
                      seed: int, class_names: list[str], where: str,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train/val/test indices with every class in every part, or a UserError saying why.

    ``where`` names the images being split (e.g. a train/ folder), for the message.
    """
    counts = np.bincount(labels, minlength=len(class_names))
    few = [(class_names[i], int(n)) for i, n in enumerate(counts) if n < MIN_PER_CLASS]
    if few:
        name, n = few[0]
        raise UserError(
            f"class {name!r} has {n} image(s) in {where}; a stratified train/val/test split "
            f"needs at least {MIN_PER_CLASS} per class: add images, give val/ and test/ "
            "folders, or leave the class out of data.classes")
    index = np.arange(len(labels))
    try:
        rest, test = train_test_split(index, test_size=test_fraction, stratify=labels,
                                      random_state=seed)
    except ValueError as err:
        raise _split_error("data.test_fraction", test_fraction, len(class_names), where,
                           err) from err
    val_share = val_fraction / (1.0 - test_fraction)
    try:
        train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest],
                                      random_state=seed)
    except ValueError as err:
        raise _split_error("data.val_fraction", val_fraction, len(class_names), where,
                           err) from err
    return np.sort(train), np.sort(val), np.sort(test)


def _split_error(key: str, value: float, classes: int, where: str,
                 err: ValueError) -> UserError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return UserError(f"{key}={value} cannot split {where} into parts holding each of its "
                     f"{classes} classes ({reason}); raise {key} or add images")


def _digits_shift(images: torch.Tensor, rotation_deg: float, noise_std: float,
                  seed: int) -> torch.Tensor:
    """The generalization set: a fixed rotation plus seeded Gaussian noise, clamped to [0, 1]."""
    rotated = tvf.rotate(images, angle=rotation_deg,
                         interpolation=tvf.InterpolationMode.BILINEAR)
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed + 1))
    return (rotated + noise_std * noise).clamp(0.0, 1.0)


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _digits(cfg: DictConfig, data_config: dict[str, Any]) -> DataSplits:
    pixels, labels = _load_digits()
    wanted = check_classes(cfg) or digit_labels()
    keep = np.isin(labels, wanted)
    pixels, labels = pixels[keep], labels[keep]
    relabel = {digit: i for i, digit in enumerate(wanted)}
    targets = torch.tensor([relabel[d] for d in labels], dtype=torch.long)

    size = data_config["input_size"][-1]
    # The set lives in memory as float32 RGB, about twice over (resized and normalized).
    needed = 2 * len(labels) * 3 * size * size * 4
    if needed > _memory_bytes():
        raise UserError(f"data.image_size={size} makes the in-memory digits set "
                        f"{needed / 2**30:.0f} GiB, more than this machine's "
                        f"{_memory_bytes() / 2**30:.0f} GiB; use a smaller data.image_size")
    images = torch.tensor(pixels, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                             align_corners=False).clamp(0.0, 1.0)
    images = images.expand(-1, 3, -1, -1).contiguous()
    train_idx, val_idx, test_idx = _stratified_split(
        targets.numpy(), cfg.val_fraction, cfg.test_fraction, cfg.split_seed,
        [str(d) for d in wanted], "the digits set")
    gen_images = _digits_shift(images[test_idx], cfg.shift_rotation_deg, cfg.shift_noise_std,
                               cfg.split_seed)

    mean = torch.tensor(data_config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data_config["std"]).view(1, 3, 1, 1)

    def normalized(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean) / std).contiguous()

    train_x = normalized(images[train_idx])
    train_eval = TensorDataset(train_x, targets[train_idx])
    if cfg.augment:
        train: Dataset = AugmentedTensors(
            train_x, targets[train_idx], v2.RandomAffine(degrees=10, translate=(0.1, 0.1)))
    else:
        train = train_eval
    fingerprint = {
        "dataset": "digits", "classes": wanted, "split_seed": cfg.split_seed,
        "val_fraction": cfg.val_fraction, "test_fraction": cfg.test_fraction, "size": size,
        "mean": list(data_config["mean"]), "std": list(data_config["std"]),
        "shift": [cfg.shift_rotation_deg, cfg.shift_noise_std],
    }
    return DataSplits(
        train=train,
        val=TensorDataset(normalized(images[val_idx]), targets[val_idx]),
        test=TensorDataset(normalized(images[test_idx]), targets[test_idx]),
        gen=TensorDataset(normalized(gen_images), targets[test_idx]),
        train_eval=train_eval,
        class_names=[str(d) for d in wanted],
        augmented=bool(cfg.augment),
        fingerprint=fingerprint,
    )


# --- imagefolder --------------------------------------------------------------------------


def _image_is_readable(path: str) -> bool:
    """Whether ``path`` decodes completely (a truncated JPEG passes verify(), not load())."""
    try:
        if os.path.getsize(path) == 0:
            return False
        with Image.open(path) as image:
            image.verify()  # structure and checksums, without decoding
        with Image.open(path) as image:
            image.load()  # every pixel
        return True
    except Exception:  # noqa: BLE001 - any decoder failure means the file is unusable
        return False


# Image checks by listing signature, in this process; on disk they are remembered under
# ``paths.cache_dir/image_checks`` (CHECKS_DIR), so that the jobs of a sweep, in one process
# or one process each (Slurm, submitit), decode a dataset version once between them.
_CHECKS: dict[str, frozenset[str]] = {}
CHECKS_DIR = "image_checks"
_CHECK_FORMAT = 1


def _check_key(listing: SplitListing) -> str:
    payload = {"listing": listing.signature(), "format": _CHECK_FORMAT}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _remembered_bad(path: Path, listing: SplitListing) -> frozenset[str] | None:
    """The unreadable images (relative paths) a check of this listing found, if stored."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    rels = {f.rel for f in listing.files()}
    bad = stored.get("bad") if isinstance(stored, dict) else None
    if (not isinstance(bad, list) or stored.get("images") != len(rels)
            or not all(isinstance(r, str) and r in rels for r in bad)):
        return None  # damaged or not this listing's: check again
    return frozenset(bad)


def _remember(path: Path, listing: SplitListing, bad: frozenset[str]) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps({"root": listing.root, "images": len(listing.files()),
                                       "bad": sorted(bad)}))
    except OSError as err:  # a read-only cache: checked again by the next process
        log.info("image check of %s not remembered (%s): %s", listing.root, path.parent,
                 err.strerror or err)


def _scan_images(listing: SplitListing, policy: str, check_dir: Path | None
                 ) -> tuple[set[str], int]:
    """Readable image paths of ``listing``; a bad one is an error naming it, or skipped.

    Every image is fully decoded once per version of the listing (names, sizes, mtimes), so
    that what the loaders, workers or the feature cache read later is known to decode; the
    result is remembered in this process and in ``check_dir`` (see README, reliability).
    """
    key = _check_key(listing)
    files = listing.files()
    if key not in _CHECKS:
        stored = check_dir / f"{key}.json" if check_dir is not None else None
        bad = _remembered_bad(stored, listing) if stored is not None else None
        if bad is None:
            with ThreadPoolExecutor(max_workers=min(16, available_cpus() * 2)) as pool:
                readable = list(tqdm(pool.map(_image_is_readable, [f.path for f in files]),
                                     total=len(files), desc=f"checking images in {listing.root}",
                                     leave=False, disable=len(files) < 5000))
            bad = frozenset(f.rel for f, ok in zip(files, readable, strict=True) if not ok)
            if stored is not None:
                _remember(stored, listing, bad)
        _CHECKS[key] = bad
    bad = _CHECKS[key]
    bad_paths = [f.path for f in files if f.rel in bad]
    if bad_paths and policy == "error":
        more = f" (and {len(bad_paths) - 1} more)" if len(bad_paths) > 1 else ""
        raise UserError(f"unreadable image {bad_paths[0]}{more} (it does not fully decode); "
                        "remove it or set "
                        "data.on_bad_image=skip to skip and count such files")
    return {f.path for f in files if f.rel not in bad}, len(bad_paths)


def _class_dirs(root: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def _folder(root: Path, class_names: list[str], transform: Any, good: set[str],
            listing: SplitListing) -> Dataset:
    """ImageFolder over ``listing``'s images of ``class_names`` that are in ``good``: the
    same samples, in the same order, as its own walk (links followed), without walking again."""

    class Folder(ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            return class_names, {c: i for i, c in enumerate(class_names)}

        def make_dataset(self, directory: str, class_to_idx: dict[str, int],
                         *args: Any, **kwargs: Any) -> list[tuple[str, int]]:
            samples = [(f.path, class_to_idx[name]) for name in sorted(class_to_idx)
                       for f in listing.classes.get(name, ()) if f.path in good]
            present = {index for _, index in samples}
            if len(present) < len(class_to_idx):  # as torchvision says it
                raise FileNotFoundError("Found no valid file for some classes")
            return samples

    try:
        return Folder(str(root), transform=transform)
    except FileNotFoundError as err:
        empty = [c for c in class_names if not any(p.startswith(f"{root / c}{os.sep}")
                                                   for p in good)]
        raise UserError(f"class dir(s) {empty or class_names} under {root} hold no readable "
                        "image; every class dir needs at least one") from err


def _check_split_classes(name: str, root: Path, expected: list[str]) -> None:
    found = _class_dirs(root)
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        raise UserError(
            f"class dirs of {name} ({root}) differ from train/: missing {missing or 'none'}, "
            f"extra {extra or 'none'}; every split needs the same class names")


def _train_dir(cfg: DictConfig) -> Path:
    """``data.root``/train, or a UserError saying which part is missing."""
    value = OmegaConf.select(cfg, "root", default=None)
    if not value:
        raise UserError("data=imagefolder needs data.root=<dir with train/ (and val/, test/)>")
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root not found: {root}")
    if not (root / "train").is_dir():
        raise UserError(f"no train/ dir in data.root={root}; expected root/train/<class>/*")
    return root / "train"


def _imagefolder(cfg: DictConfig, data_config: dict[str, Any],
                 paths: DictConfig | None) -> DataSplits:
    wanted = check_classes(cfg)
    train_dir = _train_dir(cfg)  # validated before anything is walked
    excluded = excluded_dirs(paths)
    cache_dir = OmegaConf.select(paths, "cache_dir", default=None) if paths is not None else None
    check_dir = Path(str(cache_dir)).expanduser() / CHECKS_DIR if cache_dir else None
    listings: dict[str, SplitListing] = {}
    root = train_dir.parent
    all_classes = _class_dirs(train_dir)
    class_names = all_classes if wanted is None else [str(c) for c in wanted]
    unknown = sorted(set(class_names) - set(all_classes))
    if unknown:
        raise UserError(f"data.classes names {unknown}, not class dirs of {train_dir} "
                        f"(it has {all_classes}); fix data.classes or set data.classes=null")
    if len(class_names) < 2:
        raise UserError(f"{train_dir} has {len(class_names)} class dir(s) {class_names}; "
                        "a classifier needs at least two")

    eval_tf = create_transform(**_transform_args(data_config), is_training=False)
    train_tf = create_transform(**_transform_args(data_config), is_training=True) \
        if cfg.augment else eval_tf
    skipped = 0

    def load(split_root: Path, transform: Any, label: str) -> Dataset:
        nonlocal skipped
        listing = listings[label] = list_split(split_root, excluded)
        used = SplitListing(listing.root, {c: listing.classes.get(c, ()) for c in class_names})
        good, bad = _scan_images(used, cfg.on_bad_image, check_dir)
        skipped += bad
        dataset = _folder(split_root, class_names, transform, good, listing)
        counts = np.bincount(np.asarray(dataset.targets, dtype=int), minlength=len(class_names))
        empty = [class_names[i] for i, n in enumerate(counts) if n == 0]
        if empty:
            raise UserError(f"class dir(s) {empty} under {split_root} hold no readable image")
        return dataset

    train_full = load(train_dir, train_tf, "train")
    splits: dict[str, Dataset] = {}
    for split in ("val", "test"):
        if (root / split).is_dir():
            if cfg.classes is None:
                _check_split_classes(f"{split}/", root / split, class_names)
            splits[split] = load(root / split, eval_tf, split)
    notes = []
    train: Dataset = train_full
    train_view = train_full if train_tf is eval_tf else _folder(
        train_dir, class_names, eval_tf, {path for path, _ in train_full.samples},
        listings["train"])
    train_eval: Dataset = train_view
    missing = [s for s in ("val", "test") if s not in splits]
    if missing:
        # Split the missing parts off train/, stratified and seeded, as documented.
        labels = np.asarray(train_full.targets)
        train_idx, val_idx, test_idx = _stratified_split(
            labels, cfg.val_fraction, cfg.test_fraction, cfg.split_seed, class_names,
            str(train_dir))
        carved = {"val": val_idx, "test": test_idx}
        keep = train_idx
        for split in ("val", "test"):
            if split in missing:
                splits[split] = Subset(train_view, carved[split].tolist())
            else:
                keep = np.concatenate([keep, carved[split]])
        train = Subset(train_full, np.sort(keep).tolist())
        train_eval = Subset(train_view, np.sort(keep).tolist())
        notes.append(f"split {', '.join(missing)} off train/ (seed {cfg.split_seed})")
    gen = None
    if cfg.generalization_root:
        gen_root = Path(cfg.generalization_root).expanduser()
        if not gen_root.is_dir():
            raise UserError(f"data.generalization_root not found: {gen_root}")
        _check_split_classes("data.generalization_root", gen_root, class_names)
        gen = load(gen_root, eval_tf, "gen")
    fingerprint = {
        "dataset": "imagefolder", "root": str(root.resolve()), "classes": class_names,
        "files": _listings_hash(listings),
        "split_seed": cfg.split_seed, "fractions": [cfg.val_fraction, cfg.test_fraction],
        "transform": repr(eval_tf),
    }
    return DataSplits(train=train, val=splits["val"], test=splits["test"], gen=gen,
                      train_eval=train_eval, class_names=class_names, augmented=bool(cfg.augment),
                      fingerprint=fingerprint, bad_images_skipped=skipped, notes=notes)


def _transform_args(data_config: dict[str, Any]) -> dict[str, Any]:
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return {k: data_config[k] for k in keys if k in data_config}


def _listings_hash(listings: dict[str, SplitListing]) -> str:
    """Names, sizes and mtimes of every image read: a changed image changes the cache key."""
    digest = hashlib.sha256()
    for label in sorted(listings):
        digest.update(json.dumps([label, listings[label].root,
                                  listings[label].signature()]).encode())
    return digest.hexdigest()


# --- loaders ------------------------------------------------------------------------------


def default_num_workers(dataset: Dataset) -> int:
    """Loader workers when ``data.num_workers`` is null: none for in-memory tensors, else one
    per available CPU but one (for the training process), at most 8."""
    if isinstance(dataset, TensorDataset | AugmentedTensors):
        return 0
    inner = dataset.dataset if isinstance(dataset, Subset) else dataset
    if isinstance(inner, TensorDataset | AugmentedTensors):
        return 0
    return max(1, min(8, available_cpus() - 1))


# Batches a worker keeps ready (DataLoader's prefetch_factor default).
_PREFETCH = 2


def fit_shared_memory(workers: int, sample_bytes: int, batch_size: int,
                      shm_free: int | None) -> int:
    """Workers whose ready batches fit in half of /dev/shm (workers hand batches over there).

    A float32 batch of 256 images at 299 px is 274 MB; 8 workers x 2 ready batches exceed
    Docker's default 64 MB /dev/shm many times, and the loader then dies with a bus error.
    """
    if workers == 0 or shm_free is None:
        return workers
    per_worker = sample_bytes * batch_size * _PREFETCH
    return max(0, min(workers, int(shm_free // 2 // max(per_worker, 1))))


def _shm_free() -> int | None:
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator whose state depends on (seed, epoch) alone (numpy's SeedSequence mixes)."""
    entropy = np.random.SeedSequence([seed % 2**63, epoch]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))


class SeededOrder(Sampler):
    """Each epoch's shuffled order, and a seed per sample, from (``seed``, epoch) alone.

    A DataLoader's own shuffle draws from one generator that its iterators also draw worker
    seeds from, once per epoch without persistent workers and once in all with them: the
    batches then depended on the worker count and on the (cached or not) loader path. Here
    nothing else draws from it. Lightning calls :meth:`set_epoch` before each training epoch
    (as for a DistributedSampler); without it, each pass is the next epoch.

    ``with_seeds``: yield ``(index, sample_seed)`` for :class:`SeededSamples`, so a random
    transform draws the same numbers for a sample in a given epoch in whichever worker.
    """

    def __init__(self, size: int, seed: int, with_seeds: bool = False) -> None:
        self.size, self.seed, self.with_seeds = size, seed, with_seeds
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Any]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        generator = _epoch_generator(self.seed, epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        if not self.with_seeds:
            yield from order
            return
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator).tolist()
        yield from ((index, seeds[index]) for index in order)


class SeededSamples(Dataset):
    """``dataset`` indexed by ``(index, sample_seed)``: the process's CPU random state (torch,
    ``random``, numpy: what timm's and torchvision's random transforms draw from) is seeded
    for the sample and restored after, in the main process or a worker alike."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        torch.default_generator.manual_seed(seed)  # CPU only: a CUDA generator is left alone
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            return self.dataset[index]
        finally:
            torch.set_rng_state(saved[0])
            random.setstate(saved[1])
            np.random.set_state(saved[2])


def make_loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
                num_workers: int | None = None, pin_memory: bool = False) -> DataLoader:
    """A loader whose batches depend on ``seed`` and the epoch alone (see :class:`SeededOrder`):
    the same with 0 or N workers, persistent or not, cached inputs or decoded ones.

    The last training batch is dropped only when it would hold one sample, which BatchNorm
    in train mode cannot normalize. Workers persist across epochs (Lightning's validation
    loader is iterated every epoch; the job's evaluation reuses it), and are only as many as
    /dev/shm can hold batches for. Every loader has a generator of its own for its worker
    seeds, so iterating one never moves the global random state (dropout draws from it).
    """
    workers = default_num_workers(dataset) if num_workers is None else num_workers
    if workers > 0 and len(dataset) > 0:
        sample = dataset[0][0]
        sample_bytes = sample.nbytes if isinstance(sample, torch.Tensor) else 0
        fitted = fit_shared_memory(workers, sample_bytes, batch_size, _shm_free())
        if fitted < workers:
            log.warning(
                "%d loader workers instead of %d: their batches would not fit in /dev/shm "
                "(raise it, e.g. docker --shm-size=8g, or lower data.batch_size / "
                "data.eval_batch_size / data.num_workers)", fitted, workers)
            workers = fitted
    sampler = None
    if shuffle:
        # Tensors index without randomness; anything else (decoding, a random transform)
        # gets a seed per sample.
        seeded = not isinstance(dataset, TensorDataset)
        sampler = SeededOrder(len(dataset), seed, with_seeds=seeded)
        if seeded:
            dataset = SeededSamples(dataset)
    drop_last = shuffle and len(dataset) > batch_size and len(dataset) % batch_size == 1
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                      generator=torch.Generator().manual_seed(seed),
                      num_workers=workers, pin_memory=pin_memory, drop_last=drop_last,
                      persistent_workers=workers > 0)

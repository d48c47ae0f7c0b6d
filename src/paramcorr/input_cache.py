"""Decoded-input cache for image folders: decode and transform each split once, as uint8.

timm's evaluation transform is ``Resize -> CenterCrop -> ToTensor -> Normalize``. Without
augmentation its output is the same tensor every epoch of every job, so each split is run
once through everything before ``ToTensor`` and stored as the uint8 image at the model's
input size (memory-mapped ``.npy`` under ``paths.cache_dir/inputs``, via
:mod:`paramcorr.cache_store`: checksummed, locked per key, verified against the split's size
and labels). Training and evaluation then read uint8 batches, and :class:`InputNorm` does
ToTensor's ``/255`` and Normalize's ``(x - mean) / std`` on the device, on the batch, with
the same float32 operations in the same order, so the model sees bit-identical inputs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset
from torchvision import transforms as T

from paramcorr.cache_store import CacheStore, EntryWriter
from paramcorr.config import TriState
from paramcorr.data import SPLITS, AugmentedTensors, DataSplits, make_loader

log = logging.getLogger(__name__)


class CachedImages(TensorDataset):
    """A split's uint8 images (N, 3, H, W; memory-mapped) and labels."""


class InputNorm(nn.Module):
    """uint8 batches -> ToTensor (``/255``) and Normalize, on whatever device the batch is on.

    Float inputs pass through untouched (they were normalised by the loader's transform).
    """

    def __init__(self, mean: Any, std: Any) -> None:
        super().__init__()
        # Not persistent: checkpoints hold the model's weights only, as without the cache.
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        # torchvision's to_tensor: .to(float32).div(255); normalize: .sub_(mean).div_(std):
        # the same operations in the same order (bit-identical), in place on one new tensor.
        return x.to(torch.float32).div_(255).sub_(self.mean).div_(self.std)


def dataset_labels(dataset: Dataset) -> np.ndarray | None:
    """A split's labels in order, without decoding an image (None when that is not possible)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy()
    if isinstance(dataset, AugmentedTensors):
        return dataset.labels.numpy()
    if isinstance(dataset, Subset):
        inner = dataset_labels(dataset.dataset)
        return None if inner is None else inner[np.asarray(dataset.indices, dtype=np.int64)]
    targets = getattr(dataset, "targets", None)
    return None if targets is None else np.asarray(targets, dtype=np.int64)


def split_transform(transform: Any) -> tuple[Any, list[float], list[float]] | None:
    """(the PIL part of timm's eval transform, mean, std), or None if it is not that shape."""
    steps = list(getattr(transform, "transforms", []))
    if len(steps) < 3 or not isinstance(steps[-1], T.Normalize):
        return None
    if type(steps[-2]).__name__ not in ("ToTensor", "MaybeToTensor"):
        return None
    if any(not isinstance(s, T.Resize | T.CenterCrop) for s in steps[:-2]):
        return None  # anything random or unknown: not provably the same tensor every epoch
    normalize = steps[-1]
    return (T.Compose([*steps[:-2], T.PILToTensor()]), list(map(float, normalize.mean)),
            list(map(float, normalize.std)))


def _folder_of(dataset: Dataset) -> Any:
    return dataset.dataset if isinstance(dataset, Subset) else dataset


def _raw_view(dataset: Dataset, pil_part: Any) -> Dataset:
    """The same samples, transformed up to (not including) ToTensor: uint8 CHW tensors."""
    if isinstance(dataset, Subset):
        return Subset(_raw_view(dataset.dataset, pil_part), dataset.indices)
    view = copy.copy(dataset)
    view.transform = pil_part
    return view


def cache_key(fingerprint: dict[str, Any], split: str) -> str:
    payload = {"kind": "inputs", "data": fingerprint, "split": split, "format": 1}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def cached_splits(splits: DataSplits, setting: TriState, max_gb: float, cache_dir: Path,
                  input_size: tuple[int, int, int], num_workers: int | None = None
                  ) -> tuple[DataSplits, InputNorm, dict[str, Any]] | None:
    """``splits`` served from the input cache, the normalisation the model then needs, and
    what happened (for the record); or None (with one log line) when it is not used.

    ``setting`` is ``data.cache_inputs`` (:class:`paramcorr.config.TriState`): ``auto`` uses
    the cache when possible, ``true`` refuses when it is not possible, ``false`` never gets
    here.
    """
    off = setting.cannot

    if splits.fingerprint.get("dataset") != "imagefolder":
        return None  # in-memory data: nothing to decode
    if splits.augmented:
        off("data.augment=true transforms the training images randomly every epoch")
        return None
    parts = split_transform(getattr(_folder_of(splits.train_eval), "transform", None))
    if parts is None:
        off("the transform is not Resize/CenterCrop -> ToTensor -> Normalize")
        return None
    pil_part, mean, std = parts
    wanted = {s: splits.train_eval if s == "train" else splits.get(s) for s in SPLITS
              if splits.get(s) is not None}
    pixels = int(np.prod(input_size))
    need_gb = sum(len(d) for d in wanted.values()) * pixels / 1e9
    if need_gb > max_gb:
        off(f"the splits need {need_gb:.1f} GB as uint8, over data.cache_max_gb={max_gb:g}")
        return None
    store = CacheStore(Path(cache_dir), "input cache")
    served: dict[str, CachedImages] = {}
    hits = {}
    for split, dataset in wanted.items():
        truth = dataset_labels(dataset)

        def build(writer: EntryWriter, dataset: Dataset = dataset) -> dict[str, Any]:
            images = writer.open("images", (len(dataset), *input_size), np.uint8)
            labels = np.empty(len(dataset), dtype=np.int64)
            loader = make_loader(_raw_view(dataset, pil_part), 64, shuffle=False,
                                 num_workers=num_workers)
            start = 0
            for x, y in loader:
                images[start:start + len(y)] = x.numpy()
                labels[start:start + len(y)] = y.numpy()
                start += len(y)
            writer.put("labels", labels)
            return {"count": len(dataset)}

        def check(arrays: dict[str, np.ndarray], meta: dict[str, Any],
                  dataset: Dataset = dataset, truth: np.ndarray | None = truth) -> str | None:
            images, labels = arrays.get("images"), arrays.get("labels")
            if images is None or labels is None:
                return "lacks images or labels"
            expected = [len(dataset), *input_size]
            if list(images.shape) != expected or list(labels.shape) != expected[:1]:
                return f"has images of shape {list(images.shape)}; the split needs {expected}"
            if truth is not None and not np.array_equal(labels, truth):
                return "holds labels that are not the split's"
            return None

        found = store.fetch(cache_key(splits.fingerprint, split), build, check, mmap=True)
        if found is None:  # the cache dir cannot be written: said once, decode as today
            if setting.required:
                log.warning("data.cache_inputs=true but %s is not writable; decoding every "
                            "epoch", cache_dir)
            return None
        arrays, _, hits[split] = found
        served[split] = CachedImages(torch.from_numpy(arrays["images"]),
                                     torch.from_numpy(arrays["labels"]))
    cached = replace(splits, train=served["train"], train_eval=served["train"],
                     val=served["val"], test=served["test"], gen=served.get("gen"))
    return cached, InputNorm(mean, std), {"hit": hits, "gb": round(need_gb, 3)}

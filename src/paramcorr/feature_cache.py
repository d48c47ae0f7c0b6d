"""Frozen-feature cache: a frozen backbone's pooled features, computed once per key.

With ``freeze=base`` and no random augmentation, every epoch of every job of a sweep pushes
the same images through the same frozen network. The features that reach the classifier
(``forward_head(..., pre_logits=True)`` in eval mode) are computed once, stored under a
content hash of everything that determines them, and the head trains on them. Storage,
verification, locking and fallbacks are :mod:`paramcorr.cache_store`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from paramcorr.cache_store import CacheStore, EntryWriter
from paramcorr.data import SPLITS, DataSplits, make_loader
from paramcorr.input_cache import dataset_labels
from paramcorr.inputs import file_digest

log = logging.getLogger(__name__)


def weights_identity(weights: str, seed: int, pretrained_tag: str | None,
                     weights_key: str | None = None) -> str:
    """What makes the backbone's weights what they are, for the cache key.

    A file's digest, and which of its state dicts was loaded (``model.weights_key``).
    """
    if weights == "random":
        return f"random:seed={seed}"
    if weights == "imagenet":
        return f"imagenet:{pretrained_tag}"
    key = f":{weights_key}" if weights_key else ""
    return "file:" + file_digest(Path(weights)) + key


def cache_key(model_name: str, weights_id: str, data_fingerprint: dict[str, Any],
              precision: str) -> str:
    payload = {"model": model_name, "weights": weights_id, "data": data_fingerprint,
               "precision": precision, "timm": timm.__version__, "format": 2}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def head_is_separable(model: nn.Module, sample: torch.Tensor) -> bool:
    """True when classifier(pre_logits(x)) is the model's output, so caching is equivalent."""
    with torch.inference_mode():
        full = model(sample)
        split = model.get_classifier()(pre_logits(model, sample))
    return full.shape == split.shape and torch.allclose(full, split, rtol=1e-4, atol=1e-5)


def _compute(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device,
             autocast_dtype: torch.dtype | None, channels_last: bool,
             prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
             num_workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    loader = make_loader(dataset, batch_size, shuffle=False, num_workers=num_workers,
                         pin_memory=device.type == "cuda")
    features, labels = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                enabled=autocast_dtype is not None):
        # A big ImageFolder through a large backbone takes a while: show it.
        for x, y in tqdm(loader, desc="computing frozen features", leave=False,
                         disable=len(loader) < 50):
            x = x.to(device, non_blocking=True)
            if prepare is not None:  # uint8 from the input cache: normalised here, on device
                x = prepare(x)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            features.append(pre_logits(model, x).float().cpu())
            labels.append(y)
    return torch.cat(features), torch.cat(labels)


def load_or_compute(model: nn.Module, splits: DataSplits, key: str, cache_dir: Path,
                    batch_size: int, device: torch.device,
                    autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
                    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    num_workers: int | None = None
                    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], bool | None]:
    """Features and labels per split (train, val, test, gen), and whether the cache had them.

    ``train`` holds the un-augmented training samples (the cache is only used without
    augmentation, so ``train`` and the eval-mode ``train_eval`` pass are the same tensors).
    An entry is used only if its checksums, its shapes (rows = the split's size, columns =
    this backbone's feature width) and its labels (those of the split) agree; otherwise it
    is recomputed. The hit flag is ``None`` when the cache directory cannot be written (the
    features are then computed for this job alone). ``num_workers``: loader workers of the
    extraction pass (data.num_workers; None sizes them to the machine).
    """
    wanted = [s for s in SPLITS if splits.get(s) is not None]
    datasets = {s: splits.train_eval if s == "train" else splits.get(s) for s in wanted}
    model.eval()
    sample = datasets["train"][0][0].unsqueeze(0).to(device)
    with torch.inference_mode():
        width = list(pre_logits(model, prepare(sample) if prepare else sample).shape[1:])

    def compute() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        model.eval()
        return {s: _compute(model, datasets[s], batch_size, device, autocast_dtype,
                            channels_last, prepare, num_workers) for s in wanted}

    def build(writer: EntryWriter) -> dict[str, Any]:
        for split, (features, labels) in compute().items():
            writer.put(f"{split}.features", features.numpy())
            writer.put(f"{split}.labels", labels.numpy())
        return {"counts": {s: len(d) for s, d in datasets.items()}}

    def check(arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> str | None:
        for split, dataset in datasets.items():
            features, labels = arrays.get(f"{split}.features"), arrays.get(f"{split}.labels")
            if features is None or labels is None:
                return f"lacks the {split} split"
            expected = [len(dataset), *width]
            if list(features.shape) != expected or list(labels.shape) != expected[:1]:
                return (f"has {split} features of shape {list(features.shape)}, labels "
                        f"{list(labels.shape)}; this split needs {expected}")
            truth = dataset_labels(dataset)
            if truth is not None and not np.array_equal(labels, truth):
                return f"holds labels that are not the {split} split's"
        return None

    found = CacheStore(cache_dir, "feature cache").fetch(key, build, check)
    if found is None:
        return compute(), None
    arrays, _, hit = found
    return {s: (torch.from_numpy(arrays[f"{s}.features"]),
                torch.from_numpy(arrays[f"{s}.labels"])) for s in wanted}, hit

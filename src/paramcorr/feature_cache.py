"""Frozen-feature cache: a frozen backbone's pooled features, computed once per key.

With ``freeze=base`` and no random augmentation, every epoch of every job of a sweep pushes
the same images through the same frozen network. The features that reach the classifier
(``forward_head(..., pre_logits=True)`` in eval mode) are computed once, stored on disk as
safetensors under a content hash of everything that determines them, and the head trains on
them. Entries are written to a temp file and renamed, so concurrent writers leave one valid
entry and a reader never sees half a file; an entry that fails to load is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from paramcorr.atomic import atomic_path
from paramcorr.data import SPLITS, DataSplits, make_loader
from paramcorr.inputs import file_digest

log = logging.getLogger(__name__)


def weights_identity(weights: str, seed: int, pretrained_tag: str | None) -> str:
    """What makes the backbone's weights what they are, for the cache key."""
    if weights == "random":
        return f"random:seed={seed}"
    if weights == "imagenet":
        return f"imagenet:{pretrained_tag}"
    return "file:" + file_digest(Path(weights))


def cache_key(model_name: str, weights_id: str, data_fingerprint: dict[str, Any],
              precision: str) -> str:
    import timm

    payload = {"model": model_name, "weights": weights_id, "data": data_fingerprint,
               "precision": precision, "timm": timm.__version__, "format": 1}
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
             autocast_dtype: torch.dtype | None, channels_last: bool
             ) -> tuple[torch.Tensor, torch.Tensor]:
    loader = make_loader(dataset, batch_size, shuffle=False, pin_memory=device.type == "cuda")
    features, labels = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                enabled=autocast_dtype is not None):
        # A big ImageFolder through a large backbone takes a while: show it.
        for x, y in tqdm(loader, desc="computing frozen features", leave=False,
                         disable=len(loader) < 50):
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            features.append(pre_logits(model, x).float().cpu())
            labels.append(y)
    return torch.cat(features), torch.cat(labels)


def load_or_compute(model: nn.Module, splits: DataSplits, key: str, cache_dir: Path,
                    batch_size: int, device: torch.device,
                    autocast_dtype: torch.dtype | None = None, channels_last: bool = False
                    ) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], bool]:
    """Features and labels per split (train, val, test, gen), and whether the cache had them.

    ``train`` holds the un-augmented training samples (the cache is only used without
    augmentation, so ``train`` and the eval-mode ``train_eval`` pass are the same tensors).
    """
    path = cache_dir / f"{key}.safetensors"
    wanted = [s for s in SPLITS if splits.get(s) is not None]
    if path.is_file():
        try:
            tensors = load_file(str(path))
            if all(f"{s}.features" in tensors for s in wanted):
                return {s: (tensors[f"{s}.features"], tensors[f"{s}.labels"]) for s in wanted}, True
            log.warning("feature cache entry %s lacks splits; recomputing", path.name)
        except Exception as err:  # noqa: BLE001 - a damaged entry is recomputed, never trusted
            log.warning("feature cache entry %s unreadable (%s); recomputing", path.name, err)
    model.eval()
    result = {}
    for split in wanted:
        dataset = splits.train_eval if split == "train" else splits.get(split)
        result[split] = _compute(model, dataset, batch_size, device, autocast_dtype,
                                 channels_last)
    tensors = {}
    for split, (features, labels) in result.items():
        tensors[f"{split}.features"] = features.contiguous()
        tensors[f"{split}.labels"] = labels.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return result, False

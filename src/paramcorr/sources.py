"""What a run's classifier trains and is evaluated on: images through the model, or the
frozen backbone's cached features through its head (freeze=base, LP-FT's probe).

Each function returns what it established; the job records it (paramcorr.job).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset, TensorDataset

from paramcorr import backbones, device, feature_cache, input_cache, strategies
from paramcorr.config import TriState
from paramcorr.data import DataSplits

log = logging.getLogger(__name__)


@dataclass
class Inputs:
    """What the classifier trains and is evaluated on: images, or cached frozen features."""

    net: torch.nn.Module
    # Whether the module holds the frozen parts in eval mode (a head alone has none).
    hold_frozen: bool
    train: Dataset
    evaluate: dict[str, Dataset]
    # uint8 batches from the input cache -> the model's normalised float input, on device.
    input_norm: torch.nn.Module | None = None
    features: bool = False


@dataclass
class Sources:
    """What each phase of a schedule trains on: cached features for a head-only phase where
    the feature cache applies, images through the model otherwise (None: no phase needs it)."""

    images: Inputs | None
    features: Inputs | None

    def for_phase(self, phase: strategies.Phase) -> Inputs:
        if phase.head_only and self.features is not None:
            return self.features
        assert self.images is not None  # built whenever a phase trains through the model
        return self.images


@dataclass
class FeatureRun:
    """How the cached features were had: the cache entry, and what getting them cost."""

    key: str
    hit: bool
    seconds: float
    # Peak device memory of computing them (None on a cache hit: nothing was computed).
    peak_mem_mb: float | None


def wants_cache(cfg: DictConfig, splits: DataSplits, model: torch.nn.Module,
                phases: list[strategies.Phase]) -> bool:
    """freeze.cache_features: auto = where equivalent; true = must (else a one-line refusal);
    false = never. It applies to head-only phases (freeze=base, LP-FT's probe): the others
    train the backbone."""
    setting = TriState.of(cfg, "freeze.cache_features", "feature cache",
                          "train through the backbone", "training through the backbone", log)
    if not any(phase.head_only for phase in phases) or not setting.wanted:
        return False
    if splits.augmented:
        return setting.cannot("data.augment=true changes the inputs every epoch")
    sample = splits.train_eval[0][0].unsqueeze(0)
    model.eval()
    if not feature_cache.head_is_separable(model, sample):
        return setting.cannot(f"{cfg.model.name}'s output is not its classifier applied to "
                              "its pooled features")
    return True


def cached_inputs(cfg: DictConfig, model: torch.nn.Module, splits: DataSplits, features: bool
                  ) -> tuple[DataSplits, torch.nn.Module | None, dict[str, Any] | None]:
    """The splits from the decoded-input cache (data.cache_inputs) where it is used, the
    module that turns its uint8 batches into the model's input, and the cache entry used."""
    setting = TriState.of(cfg, "data.cache_inputs", "input cache", "decode every epoch",
                          "decoding every epoch", input_cache.log)
    if not setting.decide(auto=not features):
        return splits, None, None  # off, or (auto) nothing to gain: the head trains on features
    input_size = tuple(backbones.data_config(model, cfg.data.image_size)["input_size"])
    served = input_cache.cached_splits(splits, setting, cfg.data.cache_max_gb,
                                       Path(cfg.paths.cache_dir) / "inputs", input_size,
                                       cfg.data.num_workers)
    if served is None:
        return splits, None, None
    cached, norm, info = served
    return cached, norm, info


def image_inputs(model: torch.nn.Module, splits: DataSplits,
                 input_norm: torch.nn.Module | None) -> Inputs:
    """Images through the whole model, evaluated on every split."""
    evaluate_sets = {"train": splits.train_eval, "val": splits.val, "test": splits.test}
    if splits.gen is not None:
        evaluate_sets["gen"] = splits.gen
    return Inputs(model, True, splits.train, evaluate_sets, input_norm)


def feature_inputs(cfg: DictConfig, model: torch.nn.Module, splits: DataSplits,
                   dev: device.DeviceSetup, input_norm: torch.nn.Module | None
                   ) -> tuple[Inputs, FeatureRun]:
    """The frozen backbone's features of every split through its head: one cache entry per
    backbone, weights and data, whichever strategy's phase trains on it."""
    started = time.perf_counter()
    model.to(dev.device)
    key = feature_cache.cache_key(
        cfg.model.name,
        feature_cache.weights_identity(cfg.model.weights, cfg.seed,
                                       model.pretrained_cfg.get("tag"), cfg.model.weights_key),
        splits.fingerprint, dev.precision)
    features, hit = feature_cache.load_or_compute(
        model, splits, key, Path(cfg.paths.cache_dir) / "features", cfg.data.eval_batch_size,
        dev.device, dev.autocast, dev.channels_last,
        prepare=input_norm.to(dev.device) if input_norm is not None else None,
        num_workers=cfg.data.num_workers)
    seconds = time.perf_counter() - started
    run = FeatureRun(key, hit, seconds, None if hit else device.peak_memory_mb(dev.device))
    datasets = {split: TensorDataset(*tensors) for split, tensors in features.items()}
    return Inputs(model.get_classifier(), False, datasets["train"], datasets,
                  features=True), run

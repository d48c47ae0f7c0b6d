"""One run of the study: config -> data, backbone, freeze -> fit -> evaluate -> result.json.

:func:`run_job` never raises for a problem of the run itself (unless ``strict=true``): it
writes a ``failed`` record with a one-line reason, so a sweep goes on. A directory that
already holds a finished record of the same config is skipped.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import resource
import time
import traceback
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, TensorDataset

from paramcorr import backbones, depth, feature_cache, freezing, loggers
from paramcorr.config import validate
from paramcorr.data import DataSplits, build_data, make_loader
from paramcorr.errors import UserError
from paramcorr.record import (
    METRIC_KEYS,
    RECORD_NAME,
    build_record,
    config_hash,
    is_finished,
    read_record,
    remove_stale_temps,
    set_aside,
    write_record,
)

log = logging.getLogger("paramcorr")


@dataclass
class _Progress:
    """What a run has established so far: kept in the record even if a later step fails."""

    params: dict[str, int] | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    diverged: bool = False


def optimizer_name(cfg: DictConfig) -> str:
    target = str(OmegaConf.select(cfg, "optimizer._target_", default="?"))
    return target.rsplit(".", 1)[-1].lower()


def run_axes(cfg: DictConfig) -> dict[str, Any]:
    """The record's ``run`` block, from the config alone (so a failed run has it too)."""
    freeze = cfg.freeze.strategy
    classes = cfg.data.classes
    return {
        "model": cfg.model.name,
        "weights": cfg.model.weights,
        "freeze": freeze,
        "frozen_stages": cfg.freeze.stages if freeze == "partial" else None,
        "optimizer": optimizer_name(cfg),
        "lr": _number_or_none(OmegaConf.select(cfg, "optimizer.lr", default=None,
                                               throw_on_resolution_failure=False)),
        "seed": cfg.seed,
        "dataset": cfg.data.name,
        "num_classes": len(classes) if classes is not None else None,
        "epochs": cfg.trainer.get("max_epochs"),
        "batch_size": cfg.data.batch_size,
        "image_size": cfg.data.image_size,
        "eval_weights": cfg.eval_weights,
    }


def _number_or_none(value: Any) -> float | None:
    """A finite float for the record, or None (lr=0 is a number; nan/inf/text are not JSON)."""
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def count_classes(data_cfg: DictConfig) -> int:
    """How many classes the data will have, before it is loaded (the head needs it first)."""
    if data_cfg.classes is not None:
        return len(data_cfg.classes)
    if data_cfg.name == "digits":
        return 10
    value = OmegaConf.select(data_cfg, "root", default=None)
    if not value:
        raise UserError("data=imagefolder needs data.root=<dir with train/ (and val/, test/)>")
    root = Path(str(value)).expanduser()
    if not root.is_dir():
        raise UserError(f"data.root not found: {root}")
    if not (root / "train").is_dir():
        raise UserError(f"no train/ dir in data.root={root}; expected root/train/<class>/*")
    return sum(1 for entry in os.scandir(root / "train") if entry.is_dir())


@contextmanager
def quiet_lightning():
    """Lightning's banners and timm's load notes would drown a sweep's one line per job."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning", "timm")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*is smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        # freeze=base holds the frozen backbone in eval mode on purpose.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)


def _autocast_dtype(precision: Any) -> torch.dtype | None:
    text = str(precision)
    if "bf16" in text:
        return torch.bfloat16
    if text.startswith("16"):
        return torch.float16
    return None


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # ru_maxrss is in KiB on Linux: the process's peak so far (a sweep shares one process).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class _Inputs:
    """What the classifier trains and is evaluated on: images, or cached frozen features."""

    net: torch.nn.Module
    # Whether the module holds the frozen parts in eval mode (a head alone has none).
    hold_frozen: bool
    train: Dataset
    evaluate: dict[str, Dataset]
    # uint8 batches from the input cache -> the model's normalised float input, on device.
    input_norm: torch.nn.Module | None = None
    features: bool = False


def _build(cfg: DictConfig, progress: _Progress) -> tuple[torch.nn.Module, DataSplits]:
    """Backbone (weights, head for the classes), data for its input size, freeze, counts."""
    import lightning as L

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    num_classes = count_classes(cfg.data)
    progress.run["num_classes"] = num_classes
    model = backbones.create_backbone(cfg.model.name, cfg.model.weights, num_classes,
                                      drop_rate=cfg.model.drop_rate)
    dcfg = backbones.data_config(model, cfg.data.image_size)
    size = dcfg["input_size"][-1]
    progress.run["image_size"] = size
    backbones.check_input_size(model, cfg.model.name, size)
    splits = build_data(cfg.data, dcfg)
    progress.run["num_classes"] = splits.num_classes
    progress.extra["data"] = {"train": len(splits.train), "val": len(splits.val),
                              "test": len(splits.test),
                              "gen": len(splits.gen) if splits.gen is not None else 0,
                              "bad_images_skipped": splits.bad_images_skipped,
                              "notes": splits.notes}
    freezing.apply_freeze(model, cfg.freeze.strategy, cfg.freeze.stages, cfg.model.name)
    progress.run["num_groups"] = freezing.number_of_groups(model)
    progress.params = freezing.count_parameters(model).as_dict()
    return model, splits


def _make_trainer(cfg: DictConfig, output_dir: Path) -> tuple[Any, Any, Any]:
    """The Lightning Trainer, its logger, and the best-epoch checkpoint (eval_weights=best)."""
    import lightning as L
    from hydra.utils import instantiate

    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    callbacks: list[Any] = []
    checkpoint = None
    if cfg.eval_weights == "best":
        from lightning.pytorch.callbacks import ModelCheckpoint

        checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", filename="best",
                                     monitor="val_acc", mode="max", save_top_k=1,
                                     save_weights_only=True)
        callbacks.append(checkpoint)
        trainer_kwargs["enable_checkpointing"] = True
    logger = instantiate(cfg.logger) if cfg.logger else False
    trainer = L.Trainer(**trainer_kwargs, logger=logger, callbacks=callbacks,
                        default_root_dir=str(output_dir))
    return trainer, logger, checkpoint


def _inputs(cfg: DictConfig, model: torch.nn.Module, splits: DataSplits, progress: _Progress,
            device: torch.device, autocast: torch.dtype | None, channels_last: bool) -> _Inputs:
    """Images through the model, or (freeze=base, cache on) features through the head."""
    use_cache = _wants_cache(cfg, splits, model)
    progress.extra["cached_features"] = use_cache
    splits, input_norm = _cached_inputs(cfg, model, splits, progress, use_cache)
    if not use_cache:
        evaluate = {"train": splits.train_eval, "val": splits.val, "test": splits.test}
        if splits.gen is not None:
            evaluate["gen"] = splits.gen
        return _Inputs(model, True, splits.train, evaluate, input_norm)
    started = time.perf_counter()
    model.to(device)
    key = feature_cache.cache_key(
        cfg.model.name,
        feature_cache.weights_identity(cfg.model.weights, cfg.seed,
                                       model.pretrained_cfg.get("tag")),
        splits.fingerprint, str(cfg.trainer.get("precision")))
    features, hit = feature_cache.load_or_compute(
        model, splits, key, Path(cfg.paths.cache_dir) / "features", cfg.data.eval_batch_size,
        device, autocast, channels_last,
        prepare=input_norm.to(device) if input_norm is not None else None)
    progress.timing["features_s"] = time.perf_counter() - started
    progress.extra["feature_cache"] = {"key": key, "hit": hit}
    datasets = {split: TensorDataset(*tensors) for split, tensors in features.items()}
    return _Inputs(model.get_classifier(), False, datasets["train"], datasets, features=True)


def _cached_inputs(cfg: DictConfig, model: torch.nn.Module, splits: DataSplits,
                   progress: _Progress, features: bool
                   ) -> tuple[DataSplits, torch.nn.Module | None]:
    """The splits from the decoded-input cache (data.cache_inputs), where it is used."""
    from paramcorr import input_cache

    mode = str(cfg.data.cache_inputs).lower()
    if mode == "false" or (features and mode == "auto"):
        return splits, None  # off, or nothing to gain: the head trains on cached features
    input_size = tuple(backbones.data_config(model, cfg.data.image_size)["input_size"])
    served = input_cache.cached_splits(splits, mode, cfg.data.cache_max_gb,
                                       Path(cfg.paths.cache_dir) / "inputs", input_size,
                                       cfg.data.num_workers)
    if served is None:
        return splits, None
    cached, norm, info = served
    progress.extra["input_cache"] = info
    return cached, norm


def _evaluate(module: torch.nn.Module, inputs: _Inputs, cfg: DictConfig, num_classes: int,
              device: torch.device, autocast: torch.dtype | None) -> dict[str, float]:
    """Eval-mode metrics on every split, and the train-test gaps."""
    from paramcorr.evaluation import evaluate

    module.to(device).eval()
    metrics: dict[str, float] = {}
    for split, dataset in inputs.evaluate.items():
        loader = make_loader(dataset, cfg.data.eval_batch_size, shuffle=False,
                             num_workers=cfg.data.num_workers,
                             pin_memory=device.type == "cuda")
        result = evaluate(module, loader, num_classes, device, autocast)
        metrics[f"{split}_acc"] = result["acc"]
        metrics[f"{split}_loss"] = result["loss"]
        if split in ("test", "gen"):
            metrics[f"{split}_f1"] = result["f1"]
    metrics["gap_acc"] = metrics["train_acc"] - metrics["test_acc"]
    metrics["gap_loss"] = metrics["test_loss"] - metrics["train_loss"]
    return metrics


def _fit_and_evaluate(cfg: DictConfig, output_dir: Path, progress: _Progress) -> None:
    from hydra.utils import instantiate

    from paramcorr.classifier import ClassifierModule, epoch_loader

    model, splits = _build(cfg, progress)
    trainer, logger, checkpoint = _make_trainer(cfg, output_dir)
    device = trainer.strategy.root_device
    autocast = _autocast_dtype(cfg.trainer.get("precision"))
    channels_last = cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    inputs = _inputs(cfg, model, splits, progress, device, autocast, channels_last)

    net = torch.compile(inputs.net) if cfg.compile else inputs.net
    pin = device.type == "cuda"
    train_loader = make_loader(inputs.train, cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                               num_workers=cfg.data.num_workers, pin_memory=pin)
    # A head on cached features: one Lightning step per epoch, same batches (classifier.py).
    epochs = epoch_loader(train_loader, trainer) if inputs.features else None
    if inputs.features:
        progress.extra["head_epoch_steps"] = epochs is not None
    module = ClassifierModule(net, instantiate(cfg.optimizer), splits.num_classes,
                              strategy=cfg.freeze.strategy, channels_last=channels_last,
                              hold_frozen=inputs.hold_frozen, input_norm=inputs.input_norm,
                              epoch_steps=epochs is not None)
    progress.params["in_optimizer"] = sum(
        p.numel() for p in module.net.parameters() if p.requires_grad)
    train_loader = epochs or train_loader
    val_loader = make_loader(inputs.evaluate["val"], cfg.data.eval_batch_size, shuffle=False,
                             num_workers=cfg.data.num_workers, pin_memory=pin)
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    fit_s = time.perf_counter() - started
    progress.diverged = module.diverged
    progress.timing.update(fit_s=fit_s, train_samples_per_s=module.samples_trained / fit_s
                           if fit_s > 0 else 0.0)
    if checkpoint is not None and checkpoint.best_model_path and not module.diverged:
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        progress.extra["evaluated_epoch"] = "best"

    started = time.perf_counter()
    metrics = _evaluate(module, inputs, cfg, splits.num_classes, device, autocast)
    progress.metrics.update(metrics)
    progress.timing["eval_s"] = time.perf_counter() - started
    progress.timing["peak_mem_mb"] = _peak_mem_mb(device)
    if any(metrics[k] != metrics[k] for k in ("train_loss", "test_loss")):
        progress.diverged = True
    loggers.log_final(logger, metrics, progress.params, progress.run, trainer.global_step)
    if cfg.save_weights:
        backbones.save_checkpoint(model.cpu(), output_dir / "model.safetensors",
                                  metadata={"architecture": cfg.model.name})


def _wants_cache(cfg: DictConfig, splits: DataSplits, model: torch.nn.Module) -> bool:
    """freeze.cache_features: auto = where equivalent; true = must (else a one-line refusal);
    false = never. It applies to freeze=base only (other strategies train the backbone)."""
    mode = str(cfg.freeze.cache_features).lower()
    if cfg.freeze.strategy != "base" or mode == "false":
        return False

    def off(reason: str) -> bool:
        if mode == "true":
            raise UserError(f"freeze.cache_features=true but {reason}; set "
                            "freeze.cache_features=auto (or false) to train through the backbone")
        log.info("feature cache off: %s", reason)
        return False

    if splits.augmented:
        return off("data.augment=true changes the inputs every epoch")
    sample = splits.train_eval[0][0].unsqueeze(0)
    model.eval()
    if not feature_cache.head_is_separable(model, sample):
        return off(f"{cfg.model.name}'s output is not its classifier applied to its pooled "
                   "features")
    return True


def _error_message(err: BaseException, cfg: DictConfig, output_dir: Path) -> str:
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, torch.OutOfMemoryError | MemoryError):
        return (f"out of memory at data.batch_size={cfg.data.batch_size}; lower data.batch_size "
                "(or data.image_size)")
    (output_dir / "error.log").write_text(traceback.format_exc())
    first = (str(err).strip().splitlines() or [""])[0][:300]
    return f"{type(err).__name__}: {first} (traceback in {output_dir / 'error.log'})"


def summary_line(record: dict[str, Any]) -> str:
    run, metrics = record.get("run") or {}, record.get("metrics") or {}
    params = record.get("params") or {}
    trainable = params.get("trainable")
    acc = metrics.get("test_acc")
    seconds = (record.get("timing") or {}).get("total_s", 0.0)
    lr = run.get("lr")
    parts = [
        f"{run.get('model', '?')}", f"freeze={run.get('freeze', '?')}"
        + (f"({run['frozen_stages']})" if run.get("frozen_stages") is not None else ""),
        f"{run.get('optimizer', '?')} lr={lr:g}" if lr is not None
        else f"{run.get('optimizer', '?')} lr=?",
        f"trainable={trainable:,}" if trainable is not None else "trainable=?",
        f"test_acc={acc:.3f}" if acc is not None else "test_acc=n/a",
        f"{seconds:.1f}s", record["status"],
    ]
    line = " | ".join(parts)
    if record.get("error"):
        line += f": {record['error']}"
    return line


_long_lived_frozen = False


def _release_job_memory() -> None:
    """Free what a job built (Lightning's trainer holds reference cycles) before the next.

    A full collection scans every object of torch, timm and Lightning and costs a few tenths
    of a second, as much as a whole cached job. After the first job, what survived a full
    collection is long-lived (modules, caches), so it is frozen out of later collections,
    which then scan only what later jobs create.
    """
    global _long_lived_frozen
    gc.collect()
    if not _long_lived_frozen:
        gc.freeze()
        _long_lived_frozen = True


def run_job(cfg: DictConfig, output_dir: Path) -> dict[str, Any]:
    """Run one configuration into ``output_dir/result.json`` and return the record."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    not_applicable = depth.skip_if_out_of_range(cfg, output_dir)
    if not_applicable is not None:  # a depth sweep's stage this backbone lacks: no record
        return not_applicable
    record_path = output_dir / RECORD_NAME
    remove_stale_temps(output_dir)  # a killed earlier attempt's half-written files
    chash = config_hash(cfg)
    existing = read_record(record_path)
    if is_finished(existing, chash):
        log.info("skip (already %s): %s", existing["status"], output_dir)
        existing["skipped"] = True
        return existing
    if existing is not None or record_path.exists():
        moved = set_aside(record_path, existing or {"status": "unreadable"})
        log.info("earlier record kept as %s", moved.name)

    progress = _Progress()
    started = time.perf_counter()
    error = None
    try:
        progress.run = run_axes(cfg)
        validate(cfg)
        with quiet_lightning():
            _fit_and_evaluate(cfg, output_dir, progress)
    except Exception as err:  # noqa: BLE001 - every failure becomes the run's record
        if cfg.get("strict", False):
            raise
        error = _error_message(err, cfg, output_dir)
    finally:
        _release_job_memory()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    progress.timing["total_s"] = time.perf_counter() - started
    status = "failed" if error else ("diverged" if progress.diverged else "completed")
    metrics = {k: progress.metrics.get(k) for k in METRIC_KEYS}
    metrics.update({k: v for k, v in progress.metrics.items() if k not in metrics})
    timing = {"fit_s": 0.0, "eval_s": 0.0, "train_samples_per_s": 0.0, **progress.timing}
    record = build_record(status=status, run=progress.run or {}, params=progress.params,
                          metrics=metrics, timing=timing, config_hash=chash, error=error,
                          extra=progress.extra)
    write_record(record_path, record)
    (log.error if error else log.info)(summary_line(record))
    return record

"""Pretraining: train backbones on a source task and save timm-compatible checkpoints.

This is how offline users (and the demo) get pretrained weights without a model hub: the
saved ``<out_dir>/<model>.safetensors`` loads with ``model.weights=<path>``, through timm's
own file path, with a fresh head for the target classes.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from paramcorr import backbones, training
from paramcorr.classifier import ClassifierModule
from paramcorr.config import validate_data, validate_optimizer, validate_trainer
from paramcorr.data import build_data, count_classes, make_loader
from paramcorr.device import setup as device_setup
from paramcorr.evaluation import evaluate
from paramcorr.loggers import quiet_lightning

log = logging.getLogger(__name__)


def checkpoint_path(out_dir: str | Path, model_name: str) -> Path:
    return Path(out_dir) / f"{model_name}.safetensors"


def pretrain_one(cfg: DictConfig, model_name: str, path: Path) -> float:
    """Train ``model_name`` from random weights on ``cfg.data``; save it; return val accuracy."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = backbones.create_backbone(model_name, "random", count_classes(cfg.data))
    dcfg = backbones.data_config(model, cfg.data.image_size)
    backbones.check_input_size(model, model_name, dcfg["input_size"][-1])
    splits = build_data(cfg.data, dcfg)
    module = ClassifierModule(model, instantiate(cfg.optimizer), splits.num_classes)
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    # trainer=gpu says precision=auto: resolved for this device (paramcorr.device).
    trainer_kwargs["precision"] = device_setup(cfg.trainer, None).precision
    # Small nets at 32px swing from epoch to epoch; keep the best epoch by validation.
    with tempfile.TemporaryDirectory(dir=path.parent.parent) as scratch:
        trainer, best = training.make_trainer(trainer_kwargs, Path(scratch), keep_best=True,
                                              checkpoint_dir=Path(scratch))
        fitted = training.fit(trainer, best, module,
                              make_loader(splits.train, cfg.data.batch_size, shuffle=True,
                                          seed=cfg.seed),
                              make_loader(splits.val, cfg.data.eval_batch_size, shuffle=False))
    device = trainer.strategy.root_device
    module.to(device).eval()
    val = evaluate(module, make_loader(splits.val, cfg.data.eval_batch_size, shuffle=False),
                   splits.num_classes, device)
    model.cpu()
    backbones.save_checkpoint(model, path, metadata={
        "architecture": model_name, "source": f"{cfg.data.name} classes {list(splits.class_names)}",
        "image_size": str(dcfg["input_size"][-1]), "val_acc": f"{val['acc']:.4f}",
        "epochs": str(fitted.epochs),  # trained, not configured (max_time may stop early)
    })
    return val["acc"]


def pretrain_all(cfg: DictConfig) -> list[Path]:
    """Pretrain every model in ``cfg.models`` that has no checkpoint yet (or all: overwrite)."""
    validate_optimizer(cfg)
    validate_data(cfg.data)
    validate_trainer(cfg.trainer)
    for name in cfg.models:
        backbones.check_model_name(name)
    paths = []
    for i, name in enumerate(cfg.models, start=1):
        path = checkpoint_path(cfg.out_dir, name)
        paths.append(path)
        if path.is_file() and not cfg.overwrite:
            log.info("[%d/%d] %s: reusing %s", i, len(cfg.models), name, path)
            continue
        # Said before the minutes a backbone takes on a CPU, not only after them.
        log.info("[%d/%d] %s: pretraining on %s classes %s (up to %s epochs)...", i,
                 len(cfg.models), name, cfg.data.name, list(cfg.data.classes or []),
                 cfg.trainer.get("max_epochs"))
        started = time.perf_counter()
        with quiet_lightning():
            val_acc = pretrain_one(cfg, name, path)
        log.info("[%d/%d] %s: pretrained on %s classes %s, val_acc=%.3f, %.1fs -> %s", i,
                 len(cfg.models), name, cfg.data.name, list(cfg.data.classes or []), val_acc,
                 time.perf_counter() - started, path)
    return paths

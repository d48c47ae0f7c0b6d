"""One phase of a run's training schedule: its Trainer, its module with a fresh optimizer,
and the fit. Each function returns what it established; the job records it (paramcorr.job).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from paramcorr import device, strategies, training
from paramcorr.classifier import ClassifierModule, epoch_loader
from paramcorr.data import make_loader
from paramcorr.sources import Inputs


def make_trainer(cfg: DictConfig, output_dir: Path, precision: str,
                 max_epochs: int | None = None, last: bool = True) -> tuple[Any, Any, Any]:
    """The Lightning Trainer, its logger, and the best-epoch checkpoint (eval_weights=best).

    For one phase of a strategy's schedule: ``max_epochs`` its epochs (None: the config's);
    only the ``last`` phase logs and keeps the best epoch (the weights that are evaluated).
    """
    logger = instantiate(cfg.logger) if cfg.logger and last else False
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs["precision"] = precision  # resolved for this device (trainer=gpu: auto)
    if max_epochs is not None:
        trainer_kwargs["max_epochs"] = max_epochs
    trainer, checkpoint = training.make_trainer(
        trainer_kwargs, output_dir, logger=logger,
        keep_best=last and str(cfg.eval_weights).lower() == "best")
    return trainer, logger, checkpoint


def train_batches(cfg: DictConfig, inputs: Inputs, trainer: Any,
                  dev: device.DeviceSetup) -> tuple[Any, bool | None]:
    """A phase's training batches, and (on cached features) whether they go as one Lightning
    step per epoch, the same batches (classifier.EpochLoader); None on images."""
    loader = make_loader(inputs.train, cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                         num_workers=cfg.data.num_workers, pin_memory=dev.device.type == "cuda")
    if not inputs.features:
        return loader, None
    epochs = epoch_loader(loader, trainer)
    return (epochs, True) if epochs is not None else (loader, False)


@dataclass
class PhaseModule:
    """A phase ready to fit: the module (a fresh optimizer over what ``strategy`` set
    trainable), what it trains on, and its training batches (:func:`train_batches`)."""

    module: ClassifierModule
    strategy: strategies.Strategy
    inputs: Inputs
    train: Any

    @property
    def in_optimizer(self) -> int:
        """Elements of the parameters the optimizer holds (those requiring grad)."""
        return sum(p.numel() for p in self.module.net.parameters() if p.requires_grad)


def phase_module(cfg: DictConfig, strategy: strategies.Strategy, inputs: Inputs, train: Any,
                 epoch_steps: bool, num_classes: int, dev: device.DeviceSetup) -> PhaseModule:
    """The module for a phase that trains the parameters ``strategy`` has set trainable."""
    module = ClassifierModule(inputs.net, instantiate(cfg.optimizer), num_classes,
                              strategy=strategy, channels_last=dev.channels_last,
                              hold_frozen=inputs.hold_frozen, input_norm=inputs.input_norm,
                              epoch_steps=epoch_steps,
                              train_forward=device.compile_for_training(inputs.net)
                              if cfg.compile else None)
    return PhaseModule(module, strategy, inputs, train)


def fit_phase(prepared: PhaseModule, trainer: Any, checkpoint: Any,
              val_loader: Any) -> training.FitResult:
    """Train ``prepared`` (the best epoch reloaded where ``checkpoint`` keeps one)."""
    return training.fit(trainer, checkpoint, prepared.module, prepared.train, val_loader)

"""Fitting a Lightning module: one Trainer / best-checkpoint / reload sequence for every phase
of a job (pretraining runs jobs too, see paramcorr.pretraining)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader


@dataclass
class FitResult:
    """What training did, read from the Trainer after it stopped."""

    fit_s: float
    # Full epochs completed and optimizer steps taken: fewer than configured when training
    # stopped early (trainer.max_time, trainer.max_steps, divergence). A last epoch cut
    # short is not counted (Lightning's current_epoch counts it); its steps are.
    epochs: int
    steps: int
    # Whether the best-by-validation weights were reloaded (keep_best, and a validation
    # epoch saved a checkpoint).
    best_loaded: bool


def make_trainer(trainer_kwargs: dict[str, Any], root_dir: Path, *, logger: Any = False,
                 keep_best: bool = False) -> tuple[L.Trainer, ModelCheckpoint | None]:
    """The Trainer and, with ``keep_best``, the checkpoint of the best epoch by ``val_acc``.

    Built before :func:`fit` because its device decides where features are computed first.
    """
    kwargs = dict(trainer_kwargs)
    checkpoint = None
    callbacks: list[Any] = []
    if keep_best:
        checkpoint = ModelCheckpoint(dirpath=root_dir / "checkpoints",
                                     filename="best", monitor="val_acc", mode="max",
                                     save_top_k=1, save_weights_only=True)
        callbacks.append(checkpoint)
        kwargs["enable_checkpointing"] = True
    trainer = L.Trainer(**kwargs, logger=logger, callbacks=callbacks,
                        default_root_dir=str(root_dir))
    return trainer, checkpoint


def fit(trainer: L.Trainer, checkpoint: ModelCheckpoint | None, module: L.LightningModule,
        train_loader: DataLoader, val_loader: DataLoader) -> FitResult:
    """Train ``module``; then, if a best checkpoint was kept, load its weights back.

    A diverged module (``module.diverged``) keeps its last finite weights: its best epoch
    would hide the collapse the record reports.
    """
    started = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    fit_s = time.perf_counter() - started
    best_loaded = False
    if (checkpoint is not None and checkpoint.best_model_path
            and not getattr(module, "diverged", False)):
        # weights_only: a checkpoint is data, never code (see backbones for user files).
        state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
        module.load_state_dict(state["state_dict"])
        best_loaded = True
    return FitResult(fit_s=fit_s, epochs=_full_epochs(trainer), steps=trainer.global_step,
                     best_loaded=best_loaded)


def _full_epochs(trainer: L.Trainer) -> int:
    epochs = trainer.current_epoch
    last = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    if epochs > 0 and last < trainer.num_training_batches:
        epochs -= 1  # the last epoch stopped before its last batch
    return epochs

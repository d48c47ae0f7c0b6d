"""The Lightning module that fine-tunes a classifier (a timm model, or its head on features)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import lightning as L
import torch
import torchmetrics
from torch import nn
from torch.nn import functional as F

from paramcorr.freezing import hold_frozen_in_eval

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of ``net`` with the optimizer ``optimizer_factory`` builds.

    ``strategy`` keeps frozen parts in eval mode whenever Lightning switches to train mode.
    A non-finite training loss marks the run ``diverged`` and stops training at once.
    """

    def __init__(self, net: nn.Module, optimizer_factory: OptimizerFactory, num_classes: int,
                 strategy: str = "none", channels_last: bool = False,
                 train_forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        self.net = net
        # A compiled view of ``net`` for training steps only (compile=true; see
        # paramcorr.device.compile_for_training). Kept out of the module tree, so parameters
        # and checkpoints see ``net`` once.
        self.__dict__["train_forward"] = train_forward
        self.optimizer_factory = optimizer_factory
        self.strategy = strategy
        self.channels_last = channels_last
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        self.diverged = False
        self.samples_trained = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if mode:
            hold_frozen_in_eval(self.net, self.strategy)
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning keeps whatever modes modules are in when training starts; make sure the
        # frozen parts are in eval mode every epoch, whoever switched them.
        self.train()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor],
                      batch_idx: int) -> torch.Tensor | None:
        x, y = batch
        if self.train_forward is not None:
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = self.train_forward(x)
        else:
            logits = self(x)
        loss = F.cross_entropy(logits, y)
        if not math.isfinite(loss.item()):
            self.diverged = True
            self.trainer.should_stop = True
            return None  # skip the step: non-finite gradients would only spread the NaNs
        self.samples_trained += len(y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_acc", self.val_acc, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory([p for p in self.net.parameters() if p.requires_grad])

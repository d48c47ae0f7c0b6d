"""The Lightning module that fine-tunes a classifier (a timm model, or its head on features)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import lightning as L
import torch
import torchmetrics
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.trainer.connectors.data_connector import _parse_num_batches
from lightning.pytorch.trainer.states import RunningStage
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data._utils.collate import default_collate

from paramcorr.strategies import Strategy, resolve

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

# How often (in optimizer steps) the device-side non-finite flag is read on the host: reading
# it every step would synchronise CPU and GPU every step.
DIVERGENCE_CHECK_EVERY = 32


class ClassifierModule(L.LightningModule):
    """Cross-entropy training of ``net`` with the optimizer ``optimizer_factory`` builds.

    ``hold_frozen`` keeps the parts ``strategy`` freezes in eval mode whenever Lightning
    switches to train mode (off for a head trained on cached features: it has no frozen
    parts). ``input_norm`` turns uint8 batches (the input cache) into the model's float input.

    A non-finite training loss marks the run ``diverged``: the check stays on the device
    (that step's gradients are zeroed, so no NaN reaches the weights, and so are all later
    steps'), it is read every :data:`DIVERGENCE_CHECK_EVERY` steps and at epoch end, and
    training stops then.
    """

    def __init__(self, net: nn.Module, optimizer_factory: OptimizerFactory, num_classes: int,
                 strategy: str | Strategy = "none", channels_last: bool = False,
                 hold_frozen: bool = True,
                 input_norm: nn.Module | None = None, epoch_steps: bool = False,
                 train_forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        # epoch_steps: the train loader is an EpochLoader (a head on cached features).
        self.automatic_optimization = not epoch_steps
        self.net = net
        # A compiled view of ``net`` for training steps only (compile=true; see
        # paramcorr.device.compile_for_training). Kept out of the module tree, so parameters
        # and checkpoints see ``net`` once.
        self.__dict__["train_forward"] = train_forward
        self.optimizer_factory = optimizer_factory
        self.strategy = resolve(strategy)
        self.hold_frozen = hold_frozen
        self.channels_last = channels_last
        self.input_norm = input_norm
        self.val_acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")
        self.diverged = False
        self.samples_trained = 0
        self._nonfinite: torch.Tensor | None = None  # sticky, on the device
        self._steps = 0

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm is not None:
            x = self.input_norm(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self._prepare(x))

    def _train_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.train_forward is None:
            return self(x)
        return self.train_forward(self._prepare(x))

    def train(self, mode: bool = True) -> ClassifierModule:
        super().train(mode)
        if mode and self.hold_frozen:
            self.strategy.hold_in_eval(self.net)
        return self

    def on_train_epoch_start(self) -> None:
        # Lightning keeps whatever modes modules are in when training starts; make sure the
        # frozen parts are in eval mode every epoch, whoever switched them.
        self.train()

    def _flag(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad

    def _diverged_now(self) -> bool:
        """Read the device flag (a host sync); stop training if a loss was non-finite."""
        if self._nonfinite is not None and bool(self._nonfinite):
            self.diverged = True
            self.trainer.should_stop = True
        return self.diverged

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        if isinstance(batch, EpochOfBatches):
            return self._train_epoch(batch)
        x, y = batch
        loss = F.cross_entropy(self._train_logits(x), y)
        self._flag(loss)
        self.samples_trained += len(y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        _zero_grads_if(self._nonfinite, optimizer)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._steps += 1
        if self._steps % DIVERGENCE_CHECK_EVERY == 0:
            self._diverged_now()

    def on_train_epoch_end(self) -> None:
        self._diverged_now()

    def _train_epoch(self, epoch: EpochOfBatches) -> None:
        """One epoch of a head on cached features, as one Lightning step (manual optimization).

        The same loader, batches, forward, loss, zero_grad/backward/step as the per-batch
        path, without Lightning's per-step machinery around a step that costs microseconds.
        """
        optimizer = self.optimizers()
        raw = optimizer.optimizer
        total = torch.zeros((), device=self.device)
        seen = 0
        for x, y in epoch:
            x = x.to(self.device, non_blocking=True)
            y = y.to(self.device, non_blocking=True)
            loss = F.cross_entropy(self._train_logits(x), y)
            self._flag(loss)
            raw.zero_grad(set_to_none=True)
            loss.backward()
            _zero_grads_if(self._nonfinite, raw)
            raw.step()
            total += loss.detach() * len(y)
            seen += len(y)
            self.samples_trained += len(y)
            self._steps += 1
            if self._steps % DIVERGENCE_CHECK_EVERY == 0 and self._diverged_now():
                break
        # Lightning counts optimizer steps through its wrapper; the raw steps count here.
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        progress.total.ready += epoch.steps
        progress.total.completed += epoch.steps
        if seen:
            self.log("train_loss", total / seen, on_step=False, on_epoch=True, batch_size=seen)
        return None

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.val_acc(logits, y)
        self.log("val_loss", F.cross_entropy(logits, y), on_epoch=True, batch_size=len(y))
        self.log("val_acc", self.val_acc, on_epoch=True, batch_size=len(y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory([p for p in self.net.parameters() if p.requires_grad])


def _zero_grads_if(flag: torch.Tensor | None, optimizer: torch.optim.Optimizer) -> None:
    """Zero every gradient when ``flag`` (on the device) says a loss was non-finite."""
    if flag is None:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                # In place, writing only when the flag is set: no copy of the gradients.
                p.grad.masked_fill_(flag, 0.0)


class EpochOfBatches:
    """One epoch of ``loader``'s batches (at most ``limit``), handed over as one step."""

    def __init__(self, loader: DataLoader, limit: int) -> None:
        self.loader, self.limit = loader, limit
        self.steps = 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.steps = 0
        for i, batch in enumerate(self._batches()):
            if i >= self.limit:
                break
            self.steps += 1
            yield batch

    def _batches(self) -> Iterator[Any]:
        dataset = self.loader.dataset
        if not (isinstance(dataset, TensorDataset) and self.loader.collate_fn is default_collate
                and self.loader.num_workers == 0):
            yield from self.loader
            return
        # The loader's own batches of indices (its sampler draws them from the seed and the
        # epoch alone, see paramcorr.data.SeededOrder), gathered from the tensors in one
        # index per batch instead of per-sample collation: the same values, at a fraction of
        # the cost.
        for index in self.loader.batch_sampler:
            rows = torch.as_tensor(index)
            yield tuple(t[rows] for t in dataset.tensors)


class EpochLoader:
    """A train "loader" of one item per epoch: Lightning runs one step per epoch with it."""

    def __init__(self, loader: DataLoader, limit: int) -> None:
        self.epoch = EpochOfBatches(loader, limit)
        # Lightning sets the epoch of a train loader's sampler before each epoch (its
        # _set_sampler_epoch reads ``.sampler``): this one's, as for the loader itself.
        self.sampler = loader.sampler

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[EpochOfBatches]:
        yield self.epoch


def epoch_loader(loader: DataLoader, trainer: L.Trainer) -> EpochLoader | None:
    """``loader`` as one step per epoch for ``trainer``, or None where that would differ.

    The per-batch path's batches are kept exactly: the same loader is iterated each epoch,
    cut at ``trainer.limit_train_batches`` read the way Lightning reads it. Settings that act
    within an epoch (gradient clipping or accumulation, max_steps, max_time, mid-epoch
    validation, fp16 loss scaling) need Lightning's per-batch loop: None.
    """
    if (trainer.gradient_clip_val or trainer.accumulate_grad_batches != 1
            or trainer.max_steps != -1 or trainer.val_check_interval != 1.0
            or trainer.overfit_batches or str(trainer.precision) == "16-mixed"
            or any(isinstance(c, Timer) for c in trainer.callbacks)):
        return None
    limit = _parse_num_batches(RunningStage.TRAINING, len(loader), trainer.limit_train_batches)
    if limit < 1:
        return None
    # The wrapper is one item long: Lightning's own limit must not cut it to zero.
    trainer.limit_train_batches = 1.0
    return EpochLoader(loader, int(limit))

"""Eval-mode metrics: micro accuracy, macro F1 and mean cross-entropy over a split, a run's
metrics over every split, and what non-finite ones say about the run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torchmetrics
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from paramcorr.data import make_loader
from paramcorr.record import finite_number


def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], loader: DataLoader,
             num_classes: int, device: torch.device,
             autocast_dtype: torch.dtype | None = None) -> dict[str, float]:
    """``acc`` (micro), ``f1`` (macro) and ``loss`` (mean cross-entropy) of ``forward``.

    The caller puts the model in eval mode; this runs under ``torch.inference_mode``.
    """
    acc = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro").to(device)
    f1 = torchmetrics.classification.MulticlassF1Score(num_classes, average="macro").to(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    with torch.inference_mode(), torch.autocast(device.type, dtype=autocast_dtype or torch.float32,
                                                enabled=autocast_dtype is not None):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            logits = forward(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            count += len(y)
            # NaN logits would make argmax arbitrary; metrics then say what the argmax says.
            acc.update(logits, y)
            f1.update(logits, y)
    if count == 0:
        return {"acc": float("nan"), "f1": float("nan"), "loss": float("nan")}
    return {"acc": acc.compute().item(), "f1": f1.compute().item(),
            "loss": (loss_sum / count).item()}


def evaluate_splits(module: torch.nn.Module, datasets: dict[str, Dataset], num_classes: int,
                    device: torch.device, autocast: torch.dtype | None, batch_size: int,
                    num_workers: int | None,
                    loaders: dict[str, Any] | None = None) -> dict[str, float]:
    """Eval-mode metrics of ``module`` on every split of ``datasets``, and the train-test gaps.

    ``loaders``: loaders already made for a split (fit's validation loader, whose workers
    persist), reused instead of forking new workers.
    """
    module.to(device).eval()
    metrics: dict[str, float] = {}
    for split, dataset in datasets.items():
        loader = (loaders or {}).get(split) or make_loader(
            dataset, batch_size, shuffle=False, num_workers=num_workers,
            pin_memory=device.type == "cuda")
        result = evaluate(module, loader, num_classes, device, autocast)
        metrics[f"{split}_acc"] = result["acc"]
        metrics[f"{split}_loss"] = result["loss"]
        if split in ("test", "gen"):
            metrics[f"{split}_f1"] = result["f1"]
    metrics["gap_acc"] = metrics["train_acc"] - metrics["test_acc"]
    metrics["gap_loss"] = metrics["test_loss"] - metrics["train_loss"]
    return metrics


@dataclass(frozen=True)
class Verdict:
    """What non-finite metrics say about a run (:func:`judge_metrics`)."""

    # The model collapsed on its own training data: the run diverged.
    diverged: bool = False
    # Why the run cannot be completed although it did not diverge (None: it can).
    non_finite: str | None = None


def judge_metrics(metrics: dict[str, float]) -> Verdict:
    """No non-finite metric ends ``completed``.

    Non-finite on the training split (the eval-mode pass over it): the model collapsed on
    its own training data, i.e. diverged. Non-finite elsewhere while the training split
    evaluates finite: that split's inputs (or the model's outputs on them) are not numbers,
    which is no outcome of the hyperparameters: ``failed``, naming the metrics.
    """
    bad = [k for k, v in metrics.items() if finite_number(v) is None]
    if not bad:
        return Verdict()
    if any(k.startswith("train_") for k in bad):
        return Verdict(diverged=True)
    splits = sorted({k.split("_")[0] for k in bad} - {"gap"})
    return Verdict(non_finite=f"non-finite {', '.join(bad)} while the training split "
                              f"evaluates finite: the {'/'.join(splits)} inputs or outputs "
                              "are not numbers (check the data, e.g. data.shift_noise_std)")

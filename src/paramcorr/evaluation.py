"""Eval-mode metrics over a split: micro accuracy, macro F1 and mean cross-entropy."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchmetrics
from torch.nn import functional as F
from torch.utils.data import DataLoader


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

"""Metrics against scikit-learn on the same predictions."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score, log_loss
from torch.utils.data import DataLoader, TensorDataset

from paramcorr.evaluation import evaluate


def test_metrics_equal_scikit_learn() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(203, 4, generator=generator) * 2
    labels = torch.randint(0, 4, (203,), generator=generator)
    labels[:50] = logits[:50].argmax(1)  # better than chance, imbalanced per class
    loader = DataLoader(TensorDataset(logits, labels), batch_size=17)
    result = evaluate(lambda x: x, loader, num_classes=4, device=torch.device("cpu"))
    predicted = logits.argmax(1).numpy()
    probabilities = torch.softmax(logits.double(), 1).numpy()
    assert np.isclose(result["acc"], accuracy_score(labels, predicted), atol=1e-6)
    assert np.isclose(result["f1"], f1_score(labels, predicted, average="macro"), atol=1e-6)
    assert np.isclose(result["loss"], log_loss(labels, probabilities, labels=range(4)), atol=1e-5)

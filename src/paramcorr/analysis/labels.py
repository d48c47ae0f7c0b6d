"""Names for readers: what figures, LaTeX tables and the report call a metric, a strategy,
an optimizer or a learning rate (the CSVs keep the code names).

Declared once here; plots.py, latex.py and report.py read them.
"""

from __future__ import annotations

import math

from paramcorr.analysis.vocab import format_value, is_number
from paramcorr.strategy_names import STRATEGY_TERMS

# The result record's metrics (docs/record.md gives their exact definitions).
METRIC_LABELS = {
    "test_acc": "Test accuracy",
    "test_f1": "Test macro F1",
    "gen_acc": "Generalization accuracy",
    "gen_f1": "Generalization macro F1",
    "gap_acc": "Accuracy gap (train \u2212 test)",
    "gap_loss": "Loss gap (test \u2212 train)",
    "train_acc": "Train accuracy",
    "train_loss": "Train loss",
    "val_acc": "Validation accuracy",
    "val_loss": "Validation loss",
    "test_loss": "Test loss",
    "gen_loss": "Generalization loss",
    # Derived by the analysis (Taori et al. 2020): logit(gen_acc) above its linear fit on
    # logit(test_acc) over the analysis' configurations.
    "effective_robustness": "Effective robustness",
}

# Strategies' reader names are the strategies' own vocabulary (paramcorr.strategy_names),
# plus the analysis' pooled slice.
STRATEGY_LABELS = {**{t.name: t.label for t in STRATEGY_TERMS},
                   "pooled": "pooled over strategies"}

# Table headers, where the full names would not fit a column.
METRIC_SHORT = {"test_acc": "Test acc.", "test_f1": "Test F1", "gen_acc": "Gen. acc.",
                "gen_f1": "Gen. F1", "gap_acc": "Acc. gap"}
STRATEGY_SHORT = {"pooled": "pooled"}

OPTIMIZER_LABELS = {"adam": "Adam", "sgd": "SGD", "adamw": "AdamW"}

TRAINABLE_LABEL = "Trainable parameters"


def metric_label(metric: str, short: bool = False) -> str:
    if short and metric in METRIC_SHORT:
        return METRIC_SHORT[metric]
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def strategy_label(strategy: object, short: bool = False) -> str:
    if short and str(strategy) in STRATEGY_SHORT:
        return STRATEGY_SHORT[str(strategy)]
    return STRATEGY_LABELS.get(str(strategy), str(strategy))


def optimizer_label(optimizer: object) -> str:
    return OPTIMIZER_LABELS.get(str(optimizer), str(optimizer))


def lr_math(lr: object) -> str:
    """A learning rate as math-mode source (no dollars): ``10^{-3}`` for a power of ten,
    ``3 \\times 10^{-4}`` for a round mantissa, else the value as runs.csv writes it."""
    if not is_number(lr):
        return str(lr)
    value = float(lr)
    if value <= 0:
        return format_value("lr", value)
    exponent = math.floor(math.log10(value))
    mantissa = value / 10**exponent
    if math.isclose(mantissa, round(mantissa), rel_tol=1e-9):
        mantissa = round(mantissa)
        power = f"10^{{{exponent}}}"
        return power if mantissa == 1 else f"{mantissa} \\times {power}"
    return format_value("lr", value)

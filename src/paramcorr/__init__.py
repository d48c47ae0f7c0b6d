"""paramcorr: how trainable parameters relate to a fine-tuned classifier's accuracy, F1 and
generalization.

Notebook API::

    import paramcorr
    runs = paramcorr.load_runs("outputs/multirun/demo")
    runs.groupby(["freeze", "optimizer"])["test_acc"].mean()

``import paramcorr`` stays light: pandas and the analysis load on the first call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load_runs"]


def load_runs(*sweep_dirs: str | Path) -> pd.DataFrame:
    """Every run below ``sweep_dirs`` as one table: the rows and columns of ``runs.csv``.

    One row per run (its result.json): the run axes, parameter counts, ``log10_trainable``,
    metrics, ``effective_robustness``, ``status`` and ``run_dir``; unreadable files are
    skipped as the analysis skips them. Raises :class:`paramcorr.errors.UserError` for a
    missing directory or one without records.
    """
    from paramcorr.analysis.collect import check_sweep_dirs, collect_runs
    from paramcorr.analysis.strategy_stats import add_effective_robustness

    collection = collect_runs(check_sweep_dirs([Path(d) for d in sweep_dirs]))
    runs = collection.runs
    # The derived column runs.csv has too (same function as the analysis).
    add_effective_robustness(runs, list(collection.metrics), collection.run_axes)
    return runs

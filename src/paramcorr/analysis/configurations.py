"""The unit of inference: a configuration = every run axis except the seed.

Seeds of one configuration share their x exactly and, in real fine-tuning, a configuration
effect, so they are repeated measures, not independent runs. Tests and bootstrap CIs on
runs would count every seed as new evidence (about 22% false positives at nominal 5% with
three seeds, see tests/test_analysis_claims.py). The confirmatory statistics therefore use one
point per configuration: the mean of each metric over its usable runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from paramcorr.analysis.collect import KNOWN_RUN_AXES
from paramcorr.analysis.vocab import USED_STATUSES, X  # noqa: F401  (X re-exported)
from paramcorr.record import Status

RUNS_PREFIX = "n_runs:"  # per-metric count of runs behind a configuration mean


def config_axes(runs: pd.DataFrame, run_axes: list[str] | None = None) -> list[str]:
    """The columns that identify a configuration: the run axes present, minus ``seed``."""
    axes = run_axes if run_axes is not None else [a for a in KNOWN_RUN_AXES if a in runs]
    extra = ["sweep"] if "sweep" in runs and "sweep" not in axes else []  # stacked simulations
    return [*extra, *(a for a in axes if a != "seed" and a in runs)]


def configuration_means(runs: pd.DataFrame, metrics: list[str],
                        run_axes: list[str] | None = None,
                        statuses: tuple[str, ...] = USED_STATUSES) -> pd.DataFrame:
    """One row per configuration with usable runs: its axes, x, and each metric's mean.

    A run is usable when its status is in ``statuses`` and its x is finite; a metric's mean
    is over the usable runs where that metric is finite (``n_runs:<metric>`` counts them;
    NaN when none). ``n_runs`` / ``n_diverged`` count the usable runs and the diverged ones
    among them; ``status`` is ``diverged`` when any of them diverged, so the table can be
    sliced like the runs table.
    """
    keys = config_axes(runs, run_axes)
    x = runs[X].to_numpy(dtype=float)
    keep = runs["status"].isin(statuses).to_numpy() & np.isfinite(x)
    data = runs.loc[keep, [*keys, X, *metrics]].copy()
    values = data[list(metrics)].to_numpy(dtype=float, copy=True)
    values[~np.isfinite(values)] = np.nan  # an infinite score is no score
    data[list(metrics)] = values
    data["_diverged"] = (runs.loc[keep, "status"] == Status.DIVERGED).to_numpy()
    for col in ("params_total", "params_trainable"):
        if col in runs:
            data[col] = pd.to_numeric(runs.loc[keep, col], errors="coerce").astype(float)
    if data.empty:
        cols = [*keys, X, *metrics, "n_runs", "n_diverged", "status"]
        return pd.DataFrame(columns=cols)
    groups = data.groupby(keys, dropna=False, sort=True) if keys else \
        data.groupby(np.zeros(len(data), dtype=int))
    # x is the configuration's own (its runs share the parameter count): taken, not
    # averaged, so equal counts stay bit-identical across configurations.
    agg = pd.concat([groups[[X]].first(), groups[list(metrics)].mean()], axis=1)
    counts = groups[list(metrics)].count().add_prefix(RUNS_PREFIX)
    out = pd.concat([agg, counts], axis=1)
    for col in ("params_total", "params_trainable"):
        if col in data:
            out[col] = groups[col].first()
    out["n_runs"] = groups.size()
    out["n_diverged"] = groups["_diverged"].sum().astype(int)
    out["status"] = np.where(out["n_diverged"] > 0, Status.DIVERGED, Status.COMPLETED)
    out = out.reset_index(drop=not keys)
    return out.reset_index(drop=True)

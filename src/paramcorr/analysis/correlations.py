"""The correlation table (correlations.csv): every scope x metric x method x unit, with
Pearson's Fisher-z CIs, the rank correlations' bootstrap CIs, correction families and
power."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from paramcorr.analysis.configurations import RUNS_PREFIX, configuration_means
from paramcorr.analysis.corrections import adjust_pvalues, families
from paramcorr.analysis.power import add_power
from paramcorr.analysis.rank_stats import bootstrap_ci, bootstrap_rng
from paramcorr.analysis.vocab import (
    CONFIDENCE,
    CORR_COLUMNS,
    METHODS,
    SCOPE_AXES,
    X,
    scopes,
    used_mask,
)


def _correlate(x: np.ndarray, y: np.ndarray, method: str, n_boot: int,
               rng: np.random.Generator) -> dict:
    if method == "pearson":
        res = stats.pearsonr(x, y)
        ci = res.confidence_interval(CONFIDENCE)
        return {"r": float(res.statistic), "p": float(res.pvalue), "ci_low": float(ci.low),
                "ci_high": float(ci.high), "n_resamples": 0, "ci_method": "Fisher z"}
    res = stats.spearmanr(x, y) if method == "spearman" else stats.kendalltau(x, y)
    low, high, n_res, ci_method = bootstrap_ci(x, y, method, n_boot, rng)
    return {"r": float(res.statistic), "p": float(res.pvalue), "ci_low": low,
            "ci_high": high, "n_resamples": n_res, "ci_method": ci_method}


# In memory the table also holds the scope's axes as columns (never parsed back out of the
# scope string), the runs behind each row, and the power columns.
EXTRA_COLUMNS = ["n_runs", *SCOPE_AXES, "n_resamples", "ci_method", "critical_r", "r80",
                 "alpha_holm", "r80_holm"]


# Run-level rows count seeds as independent points (pseudo-replication): exploratory, and
# their bootstrap CIs cost most of a large analysis, so they are drawn only on request.
NO_RUN_CI = "none: run-level row (exploratory); --run-cis draws it"


def _unit_rows(frame: pd.DataFrame, metrics: list[str], unit: str, n_boot: int, seed: int,
               progress=None) -> list[dict]:
    """Rows of one unit (runs, or configuration means) for every scope x metric x method."""
    used = used_mask(frame)
    x_all = frame[X].to_numpy(dtype=float)
    y_all = {m: frame[m].to_numpy(dtype=float) for m in metrics}
    runs_behind = {m: (frame[RUNS_PREFIX + m].to_numpy(dtype=float)
                       if RUNS_PREFIX + m in frame else None) for m in metrics}
    finite_x = np.isfinite(x_all)
    rows = []
    scope_list = scopes(frame)
    for i, scope in enumerate(scope_list):
        base = scope.mask & used & finite_x
        axes = {a: scope.axes.get(a) for a in SCOPE_AXES}
        for metric in metrics:
            keep = base & np.isfinite(y_all[metric])
            x, y = x_all[keep], y_all[metric][keep]
            n = int(keep.sum())
            behind = runs_behind[metric]
            n_runs = n if behind is None else int(behind[keep].sum())
            defined = n >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
            for method in METHODS:
                row = {"scope": scope.name, "x": X, "y": metric, "method": method, "n": n,
                       "r": math.nan, "p": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                       "unit": unit, "n_runs": n_runs, **axes, "n_resamples": 0,
                       "ci_method": ""}
                if defined:
                    rng = bootstrap_rng(seed, scope.name, metric, method, unit)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        row.update(_correlate(x, y, method, n_boot, rng))
                rows.append(row)
        if progress is not None and (i + 1) % 10 == 0:
            progress(f"correlations ({unit}s): {i + 1}/{len(scope_list)} scopes")
    return rows


def correlation_table(runs: pd.DataFrame, metrics: list[str], n_boot: int = 1000,
                      seed: int = 0, progress=None,
                      run_axes: list[str] | None = None, run_cis: bool = False,
                      configs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (scope, x, y, method, unit): CORR_COLUMNS plus EXTRA_COLUMNS.

    ``unit=run``: one point per run; ``unit=configuration``: one point per configuration
    (``run_axes`` minus seed; default: the known run axes present), the metric averaged
    over its usable runs, so a bootstrap resamples configurations. A slice uses every
    non-failed run with finite x and y. Under 3 points or a constant variable: a row with
    ``n`` and empty statistics. ``p_holm`` / ``p_bh`` are corrected within ``family``.
    Spearman / Kendall bootstrap CIs of ``unit=run`` rows only with ``run_cis`` (they are
    pseudo-replicated, exploratory, and most of the cost); otherwise ``ci_method`` says why
    they are empty. ``configs``: ``configuration_means(runs, metrics, run_axes)`` when the
    caller has it already (the analysis computes it once for every table).
    """
    rows = _unit_rows(runs, metrics, "run", n_boot if run_cis else 0, seed, progress)
    if not run_cis and n_boot > 0:
        for row in rows:
            if row["method"] != "pearson" and row["ci_method"].startswith("none"):
                row["ci_method"] = NO_RUN_CI
    if configs is None:
        configs = configuration_means(runs, list(metrics), run_axes)
    rows += _unit_rows(configs, metrics, "configuration", n_boot, seed, progress)
    table = pd.DataFrame(rows, columns=[c for c in CORR_COLUMNS
                                        if c not in ("p_holm", "p_bh", "family")]
                         + [c for c in EXTRA_COLUMNS if c not in CORR_COLUMNS])
    table["family"] = families(table)
    table = adjust_pvalues(table)
    return add_power(table)


def pearson_fields(x: np.ndarray, y: np.ndarray, min_n: int = 3) -> dict[str, float]:
    """scipy's Pearson r, p and 95% CI as row fields; NaN where not estimable (fewer than
    ``min_n`` points, or a constant x or y)."""
    if len(x) < min_n or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": math.nan, "p": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(CONFIDENCE)
    return {"r": float(res.statistic), "p": float(res.pvalue), "ci_low": float(ci.low),
            "ci_high": float(ci.high)}

"""Tables built from the correlation table and the runs: the paper's table (paper_table.csv),
divergence as an outcome (divergence.csv) and the seed spread (seed_spread.csv)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from paramcorr.analysis.configurations import configuration_means
from paramcorr.analysis.correlations import pearson_fields
from paramcorr.analysis.models import strategy_vs_count
from paramcorr.analysis.vocab import (
    CELL_AXES,
    CONFIRMATORY_METRICS,
    MODEL_METRICS,
    X,
    scopes,
    used_mask,
)
from paramcorr.record import Status

# --- the paper's table -----------------------------------------------------------------

PAPER_FIELDS = ("n", "n_runs", "r", "p", "ci_low", "ci_high", "p_holm")


def paper_table(corr: pd.DataFrame, runs: pd.DataFrame, metrics: list[str],
                run_axes: list[str] | None = None, configs: pd.DataFrame | None = None,
                completed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows optimizer x lr (pooled, then within each freeze strategy), on configurations.

    Per metric: Pearson n (configurations), n_runs, r, p, CI, p_holm (within the row's
    confirmatory family); the same r / p without diverged runs (``r_completed``,
    ``p_completed``: the sensitivity check); per row the diverged runs, the critical |r|
    and the |r| detected with 80% power (uncorrected and at the family's Holm alpha).
    Pooled rows also get the strategy-vs-count columns of ``strategy_vs_count``.
    ``configs`` / ``completed``: the configuration means of the usable / completed runs
    (``configuration_means``, at least the paper metrics) when the caller has them; the
    rows of a configuration table do not depend on which metrics it averages.
    """
    wanted = [m for m in CONFIRMATORY_METRICS if m in metrics]
    conf = corr[(corr["method"] == "pearson") & (corr["unit"] == "configuration")]
    pear = conf.set_index(["scope", "y"])
    if completed is None:
        completed = configuration_means(runs, wanted, run_axes, statuses=(Status.COMPLETED,))
    sens = _pearson_by_scope(completed, wanted)
    if configs is None:
        configs = configuration_means(runs, wanted, run_axes)
    separation = strategy_vs_count(configs, wanted).set_index(["scope", "y"])
    used = runs[used_mask(runs)]
    rows = []
    for scope in scopes(configs):
        if not scope.is_cell:
            continue
        row = {"strategy": scope.axes.get("freeze", "pooled"),
               "optimizer": scope.axes["optimizer"], "lr": float(scope.axes["lr"]),
               "scope": scope.name}
        in_scope = np.ones(len(used), dtype=bool)
        for axis, value in scope.axes.items():
            in_scope &= (used[axis] == value).to_numpy()
        row["n_configs"] = int(scope.mask.sum())
        row["n_runs"] = int(in_scope.sum())
        row["n_diverged"] = int((used["status"].to_numpy()[in_scope] == Status.DIVERGED).sum())
        for m in wanted:
            hit = pear.loc[(scope.name, m)] if (scope.name, m) in pear.index else None
            for col in PAPER_FIELDS:
                row[f"{m}_{col}"] = hit[col] if hit is not None else math.nan
            r, p = sens.get((scope.name, m), (math.nan, math.nan))
            row[f"{m}_r_completed"], row[f"{m}_p_completed"] = r, p
            for col in ("r_strategy", "p_strategy", "partial_strategy", "partial_architecture"):
                row[f"{m}_{col}"] = (separation.at[(scope.name, m), col]
                                     if (scope.name, m) in separation.index else math.nan)
        hit = conf[(conf["scope"] == scope.name) & conf["y"].isin(wanted)]
        first = hit.iloc[0] if len(hit) else None
        for col in ("critical_r", "r80", "alpha_holm", "r80_holm", "family"):
            row[col] = first[col] if first is not None else math.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        table["_pooled"] = table["strategy"] != "pooled"
        table = table.sort_values(["_pooled", "strategy", *CELL_AXES], kind="stable")
        table = table.drop(columns="_pooled").reset_index(drop=True)
    return table


def _pearson_by_scope(frame: pd.DataFrame, metrics: list[str]) -> dict:
    """{(scope, metric): (r, p)} of Pearson on ``frame`` (cells only)."""
    out = {}
    if frame.empty:
        return out
    used = used_mask(frame)
    x_all = frame[X].to_numpy(dtype=float)
    for scope in scopes(frame):
        if "optimizer" not in scope.axes:
            continue
        for m in metrics:
            y_all = frame[m].to_numpy(dtype=float)
            keep = scope.mask & used & np.isfinite(x_all) & np.isfinite(y_all)
            x, y = x_all[keep], y_all[keep]
            if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                res = stats.pearsonr(x, y)
                out[(scope.name, m)] = (float(res.statistic), float(res.pvalue))
    return out


def divergence_table(runs: pd.DataFrame, run_axes: list[str] | None = None,
                     configs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Divergence as an outcome, per pooled scope (all, each optimizer x lr cell).

    ``n_runs`` usable runs of which ``n_diverged`` diverged (``rate``); across
    configurations, Pearson r (Fisher-z 95% CI, p) of each configuration's share of
    diverged runs with log10 trainable: does training more parameters diverge more often?
    ``configs``: the configuration means of the usable runs when the caller has them (only
    their axes, x and run counts are read).
    """
    if configs is None:
        configs = configuration_means(runs, [], run_axes)
    rows = []
    if configs.empty:
        return pd.DataFrame(columns=["scope", "n_configs", "n_runs", "n_diverged", "rate",
                                     "r", "ci_low", "ci_high", "p"])
    share = (configs["n_diverged"] / configs["n_runs"]).to_numpy(dtype=float)
    x_all = configs[X].to_numpy(dtype=float)
    for scope in scopes(configs):
        if "freeze" in scope.axes:
            continue
        keep = scope.mask
        x, y = x_all[keep], share[keep]
        n_runs = int(configs["n_runs"].to_numpy()[keep].sum())
        n_div = int(configs["n_diverged"].to_numpy()[keep].sum())
        row = {"scope": scope.name, "n_configs": int(keep.sum()), "n_runs": n_runs,
               "n_diverged": n_div, "rate": n_div / n_runs if n_runs else math.nan,
               **pearson_fields(x, y, min_n=4)}
        rows.append(row)
    return pd.DataFrame(rows)


def seed_spread(runs: pd.DataFrame, run_axes: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean, SD and n per configuration (run axes minus seed) where seeds repeat."""
    keys = [a for a in run_axes if a != "seed" and a in runs]
    wanted = [m for m in MODEL_METRICS if m in metrics]
    if "seed" not in runs or not keys or not wanted:
        return pd.DataFrame()
    frame = runs.loc[used_mask(runs), [*keys, "seed", *wanted]]
    groups = frame.groupby(keys, dropna=False, sort=True)
    sizes = groups["seed"].nunique()
    if not (sizes >= 2).any():
        return pd.DataFrame()
    agg = groups[wanted].agg(["mean", "std", "count"])
    agg.columns = [f"{m}_{s.replace('count', 'n').replace('std', 'sd')}" for m, s in agg.columns]
    agg.insert(0, "n_seeds", sizes)
    return agg[sizes >= 2].reset_index()

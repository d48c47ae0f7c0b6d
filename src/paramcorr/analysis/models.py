"""Models beyond the paper's correlations: strategy versus count, partial and
repeated-measures correlation within architecture, and the regression with optimizer x lr
interaction. Every fit is statsmodels OLS."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import patsy
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.anova import anova_lm

from paramcorr.analysis.power import f_test_power
from paramcorr.analysis.vocab import (
    CELL_AXES,
    CONFIDENCE,
    MODEL_METRICS,
    SCOPE_AXES,
    X,
    format_value,
    is_number,
    scopes,
    used_mask,
)
from paramcorr.strategy_names import HEAD_ONLY


def strategy_vs_count(configs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Separate *which strategy* from *how many trainable parameters*, per pooled scope.

    On configurations: ``r_strategy`` is Pearson r of a fine-tuned indicator (1 unless
    freeze=base, i.e. the backbone trains) with the metric; ``partial_strategy`` is the
    partial r of log10 trainable given the strategy (OLS ``y ~ x + C(freeze)``) and
    ``partial_architecture`` given the architecture (``y ~ x + C(model)``); p-values from
    the same t tests. NaN where not estimable (one strategy, no within-model variation).
    """
    rows = []
    if configs.empty or "freeze" not in configs:
        return pd.DataFrame(columns=["scope", "y", "n", "r_strategy", "p_strategy",
                                     "partial_strategy", "p_partial_strategy",
                                     "partial_architecture", "p_partial_architecture"])
    used = used_mask(configs)
    x_all = configs[X].to_numpy(dtype=float)
    tuned = (~configs["freeze"].isin(HEAD_ONLY)).to_numpy(dtype=float)
    for scope in scopes(configs):
        if "freeze" in scope.axes:
            continue
        for m in metrics:
            y_all = configs[m].to_numpy(dtype=float)
            keep = scope.mask & used & np.isfinite(x_all) & np.isfinite(y_all)
            sub = configs[keep]
            x, y, z = x_all[keep], y_all[keep], tuned[keep]
            row = {"scope": scope.name, "y": m, "n": int(keep.sum()), "r_strategy": math.nan,
                   "p_strategy": math.nan, "partial_strategy": math.nan,
                   "p_partial_strategy": math.nan, "partial_architecture": math.nan,
                   "p_partial_architecture": math.nan}
            if len(y) >= 3 and np.ptp(y) > 0 and np.ptp(z) > 0:
                res = stats.pearsonr(z, y)
                row.update(r_strategy=float(res.statistic), p_strategy=float(res.pvalue))
            for name, factor in (("strategy", "freeze"), ("architecture", "model")):
                # No usable value (e.g. gen_* of a sweep without a generalization set):
                # nothing to estimate, and factorize's codes would be empty.
                if factor not in sub or len(y) == 0:
                    continue
                codes = pd.factorize(sub[factor])[0]
                dummies = (codes[:, None] == np.arange(1, codes.max() + 1)[None, :])
                exog = np.column_stack([np.ones(len(y)), x, dummies.astype(float)])
                if (len(y) > exog.shape[1] and np.ptp(y) > 0
                        and np.linalg.matrix_rank(exog) == exog.shape[1]):
                    r, p, _ = _partial_r(y, exog)
                    row[f"partial_{name}"], row[f"p_partial_{name}"] = r, p
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class _Slice:
    """One scope x metric: the usable runs' x, y, architecture codes and size covariate."""

    scope: str
    axes: dict
    metric: str
    x: np.ndarray
    y: np.ndarray
    model: np.ndarray
    size: np.ndarray

    @property
    def n_models(self) -> int:
        return len(np.unique(self.model))

    def varies_within_model(self) -> bool:
        """Does x take two or more values inside at least one architecture?"""
        order = np.lexsort((self.x, self.model))
        m, x = self.model[order], self.x[order]
        return bool(np.any((m[1:] == m[:-1]) & (x[1:] != x[:-1])))

    def dummies(self) -> np.ndarray:
        """Treatment-coded architecture indicators (first present level dropped)."""
        present = np.unique(self.model)
        return (self.model[:, None] == present[None, 1:]).astype(float)


def _slices(runs: pd.DataFrame, metrics: list[str]):
    """Every scope x outcome for the beyond-paper models (MODEL_METRICS present)."""
    if "model" not in runs:
        return
    codes, _ = pd.factorize(runs["model"])  # -1 where the model is missing
    total = pd.to_numeric(runs.get("params_total"), errors="coerce").to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        size = np.where(total > 0, np.log10(total), np.nan)
    x_all = runs[X].to_numpy(dtype=float)
    base = used_mask(runs) & np.isfinite(x_all) & (codes >= 0)
    for scope in scopes(runs):
        for metric in (m for m in MODEL_METRICS if m in metrics):
            y_all = runs[metric].to_numpy(dtype=float)
            keep = scope.mask & base & np.isfinite(y_all)
            axes = {a: scope.axes.get(a) for a in SCOPE_AXES}
            yield _Slice(scope.name, axes, metric, x_all[keep], y_all[keep], codes[keep],
                         size[keep])


def _partial_r(y: np.ndarray, exog: np.ndarray) -> tuple[float, float, float]:
    """Partial r of column 1 of exog from the OLS t value, with its p and residual df."""
    fit = sm.OLS(y, exog).fit()
    t, df = float(fit.tvalues[1]), float(fit.df_resid)
    return t / math.sqrt(t * t + df), float(fit.pvalues[1]), df


def partial_correlations(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Partial r of log10 trainable with each outcome, controlling for architecture.

    Architecture as a factor: OLS ``y ~ x + C(model)``, r = t / sqrt(t^2 + df_resid) for x
    (the partial correlation; p from the same t test). Architecture size as a covariate:
    the same with log10 total parameters. Not applicable when x does not vary within any
    architecture (factor), or is collinear with size (covariate).
    """
    rows = []
    for sl in _slices(runs, metrics):
        n = len(sl.x)
        ones = np.ones(n)
        for control in ("architecture", "architecture size"):
            row = {"scope": sl.scope, **sl.axes, "x": X, "y": sl.metric, "control": control,
                   "n": n,
                   "n_models": sl.n_models, "df": math.nan, "r": math.nan, "p": math.nan,
                   "applicable": False}
            if control == "architecture":
                exog = np.column_stack([ones, sl.x, sl.dummies()])
                ok = sl.varies_within_model()
            else:
                exog = np.column_stack([ones, sl.x, sl.size])
                ok = bool(np.isfinite(sl.size).all()) and n > 3 and \
                    np.linalg.matrix_rank(exog) == 3
            if ok and n > exog.shape[1] and np.ptp(sl.y) > 0:
                r, p, df = _partial_r(sl.y, exog)
                row.update(df=df, r=r, p=p, applicable=True)
            rows.append(row)
    return pd.DataFrame(rows)


def rm_correlations(runs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Repeated-measures correlation (rmcorr) with architecture as the subject.

    ANCOVA ``y ~ C(model) + x``; r_rm = sign(b) * sqrt(SS_x / (SS_x + SS_resid)) with SS_x
    and its p from statsmodels' ``anova_lm`` comparing it with ``y ~ C(model)`` (x entered
    last: the type-II sum of squares); b (with its 95% CI) is the common
    within-architecture slope per decade of trainable parameters. Applicable where at
    least one architecture has two or more distinct trainable counts.
    """
    rows = []
    for sl in _slices(runs, metrics):
        n = len(sl.x)
        row = {"scope": sl.scope, **sl.axes, "x": X, "y": sl.metric, "n": n,
               "n_models": sl.n_models,
               "df": math.nan, "r_rm": math.nan, "p": math.nan, "slope": math.nan,
               "slope_ci_low": math.nan, "slope_ci_high": math.nan, "applicable": False}
        if sl.varies_within_model() and n > sl.n_models + 1 and np.ptp(sl.y) > 0:
            subject = np.column_stack([np.ones(n), sl.dummies()])
            restricted = sm.OLS(sl.y, subject).fit()
            full = sm.OLS(sl.y, np.column_stack([subject, sl.x])).fit()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = anova_lm(restricted, full)
            ss_x, ss_res = float(table["ss_diff"].iloc[1]), float(full.ssr)
            b = float(full.params[-1])
            if ss_x >= 0 and ss_x + ss_res > 0 and is_number(b):
                low, high = full.conf_int(1 - CONFIDENCE)[-1]
                row.update(df=float(full.df_resid),
                           r_rm=math.copysign(math.sqrt(ss_x / (ss_x + ss_res)), b),
                           p=float(table["Pr(>F)"].iloc[1]), slope=b,
                           slope_ci_low=float(low), slope_ci_high=float(high),
                           applicable=True)
        rows.append(row)
    return pd.DataFrame(rows)


def _cells(frame: pd.DataFrame) -> pd.Series:
    keys = [a for a in ("optimizer", "lr_str") if a in frame]
    if not keys:
        return pd.Series("all", index=frame.index)
    label = frame[keys[0]].astype(str)
    for key in keys[1:]:
        label = label + " " + frame[key].astype(str)
    return label


def regression(runs: pd.DataFrame, metrics: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """OLS of each outcome on log10 trainable with optimizer x lr interaction.

    Fits ``y ~ log10_trainable * C(optimizer) * C(lr_str)`` (patsy design, statsmodels OLS)
    on the runs of cells where x varies, and the equivalent cell-means form
    ``y ~ 0 + C(cell) + C(cell):x`` for the per-cell slopes. The F test (``anova_lm``
    against a common slope, ``y ~ 0 + C(cell) + x``) asks whether the slope is the same in
    every cell; ``f_power_medium`` is that F test's power against Cohen's medium f^2 = 0.15,
    so "no detectable difference" can be read with the power it had. Returns
    (coefficients with 95% CIs, per-cell slopes).
    """
    axes = [a for a in CELL_AXES if a in runs]
    frame = runs.loc[used_mask(runs), [X, *axes, *(m for m in MODEL_METRICS if m in metrics)]]
    frame = frame[np.isfinite(frame[X].to_numpy(dtype=float))].dropna(subset=axes)
    if "lr" in frame:
        frame = frame.assign(lr_str=[format_value("lr", v) for v in frame["lr"]])
    frame = frame.assign(cell=_cells(frame))
    factors = [f"C({a})" for a in ("optimizer", "lr_str")
               if a in frame and frame[a].nunique() >= 2]
    formula = "y ~ " + " * ".join([X, *factors])
    designs: dict[bytes, tuple] = {}
    coef_rows, slope_rows = [], []
    for metric in (m for m in MODEL_METRICS if m in metrics):
        keep = np.isfinite(frame[metric].to_numpy(dtype=float))
        sub = frame[keep]
        varies = (sub.groupby("cell")[X].transform("nunique") >= 2).to_numpy()
        sub, key = sub[varies], (keep.tobytes(), varies.tobytes())
        if len(sub) < 3:
            continue
        if key not in designs:  # outcomes usually share rows: build each design once
            designs[key] = _regression_designs(sub, formula)
        interaction, cell_means, common, cells = designs[key]
        if len(sub) <= cell_means.shape[1]:
            continue  # no residual degrees of freedom: nothing to estimate an error from
        y = sub[metric].to_numpy(dtype=float)
        slopes_fit = sm.OLS(y, cell_means).fit()
        same = _same_slope(y, common, slopes_fit, len(cells))
        coef_rows += _coefficient_rows(metric, y, interaction, slopes_fit, cells, formula,
                                       same)
        slope_rows += _slope_rows(metric, sub, cells, slopes_fit)
    return pd.DataFrame(coef_rows), pd.DataFrame(slope_rows)


def _same_slope(y: np.ndarray, common: np.ndarray, slopes_fit, n_cells: int) -> dict:
    """The F test of one common slope against a slope per cell, and its power (medium f^2)."""
    out = dict(p_same_slope=math.nan, f_df_num=math.nan, f_df_denom=math.nan,
               f_power_medium=math.nan)
    if n_cells > 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = anova_lm(sm.OLS(y, common).fit(), slopes_fit)
        df_num, df_denom = float(table["df_diff"].iloc[1]), float(table["df_resid"].iloc[1])
        out.update(p_same_slope=float(table["Pr(>F)"].iloc[1]), f_df_num=df_num,
                   f_df_denom=df_denom, f_power_medium=f_test_power(df_num, df_denom))
    return out


def _coefficient_rows(metric: str, y: np.ndarray, interaction: pd.DataFrame, slopes_fit,
                      cells: list, formula: str, same: dict) -> list[dict]:
    """regression.csv rows of one outcome: the interaction model's coefficients."""
    # A missing optimizer x lr combination leaves the factorial design singular;
    # then the cell-means form (same fit) is the one reported.
    full_rank = np.linalg.matrix_rank(interaction.to_numpy()) == interaction.shape[1]
    fit = sm.OLS(y, interaction).fit() if full_rank else slopes_fit
    model = formula if full_rank else f"y ~ 0 + C(cell) + C(cell):{X}"
    ci = np.asarray(fit.conf_int(1 - CONFIDENCE))
    names = list(interaction.columns) if full_rank else [
        f"{kind}[{c}]" for c in cells for kind in ("C(cell)", f"{X}:C(cell)")]
    coef, se, t, p = (np.asarray(v) for v in (fit.params, fit.bse, fit.tvalues, fit.pvalues))
    return [{"y": metric, "model": model, "term": term, "coef": coef[i], "se": se[i],
             "t": t[i], "p": p[i], "ci_low": ci[i, 0], "ci_high": ci[i, 1],
             "n": int(fit.nobs), "r2": fit.rsquared, **same}
            for i, term in enumerate(names)]


def _slope_rows(metric: str, sub: pd.DataFrame, cells: list, slopes_fit) -> list[dict]:
    """regression_slopes.csv rows of one outcome: each cell's slope with its CI."""
    ci = slopes_fit.conf_int(1 - CONFIDENCE)
    rows = []
    for i, cell in enumerate(cells):
        first = sub[sub["cell"] == cell].iloc[0]
        j = 2 * i + 1
        rows.append({
            "y": metric, "optimizer": first.get("optimizer"),
            "lr": float(first["lr"]) if "lr" in sub else math.nan,
            "n": int((sub["cell"] == cell).sum()), "slope": slopes_fit.params[j],
            "ci_low": ci[j, 0], "ci_high": ci[j, 1], "p": slopes_fit.pvalues[j]})
    return rows


def _regression_designs(sub: pd.DataFrame, formula: str) -> tuple:
    """The interaction design (patsy, named terms) and the cell-means designs."""
    rhs = formula.split("~", 1)[1]
    interaction = patsy.dmatrix(rhs, sub, return_type="dataframe")
    cells = sorted(sub["cell"].unique())
    onehot = (sub["cell"].to_numpy()[:, None] == np.array(cells)[None, :]).astype(float)
    x = sub[X].to_numpy(dtype=float)
    cell_means = np.empty((len(sub), 2 * len(cells)))
    cell_means[:, 0::2] = onehot
    cell_means[:, 1::2] = onehot * x[:, None]
    common = np.column_stack([onehot, x])
    return interaction, cell_means, common, cells

"""Correlations of trainable parameters with outcomes, and the statistics beyond the paper.

Every p-value, confidence interval and model fit comes from scipy / statsmodels. The only
numerics written here are the bootstrap *statistics* for Spearman and Kendall: batched
versions of rank correlation that scipy does not vectorize (``kendalltau(axis=...)`` loops
over resamples in Python). They are tested equal to ``scipy.stats.spearmanr`` /
``kendalltau`` on each resample and are handed to ``scipy.stats.bootstrap``.
"""

from __future__ import annotations

import math
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import patsy
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.anova import anova_lm

from paramcorr.analysis.configurations import RUNS_PREFIX, configuration_means
from paramcorr.analysis.power import critical_r, detectable_r, f_test_power
from paramcorr.analysis.vocab import (  # noqa: F401  (re-exported: importers read them here)
    ALPHA,
    CELL_AXES,
    CONFIDENCE,
    CONFIRMATORY_METRICS,
    EXPLORATORY,
    FREEZE_ORDER,
    METHODS,
    MODEL_METRICS,
    POOLED,
    SCOPE_AXES,
    UNITS,
    Scope,
    X,
    format_value,
    is_cell,
    is_number,
    levels,
    scopes,
    strategy_family,
    used_mask,
)
from paramcorr.record import Status
from paramcorr.strategy_names import HEAD_ONLY

CORR_COLUMNS = ["scope", "x", "y", "method", "n", "r", "p", "ci_low", "ci_high",
                "p_holm", "p_bh", "unit", "family"]

# Bootstrap cost control: a CI costs about n * n_resamples. Slices with n > BOOT_WORK /
# n_boot get fewer resamples (never under BOOT_MIN_RESAMPLES). They are the large slices,
# whose CIs are narrow, so the Monte-Carlo error of the endpoints stays small in absolute
# terms (about 0.27 bootstrap SDs at 100 resamples, e.g. +-0.003 in r at n = 10,000).
BOOT_WORK = 200_000
BOOT_MIN_RESAMPLES = 100
BCA_MAX_N = 300  # BCa's jackknife is O(n^2); beyond this percentile CIs are used
DEGENERATE_MAX_SHARE = 0.1  # more undefined resamples than this: no CI at all
BATCH_CELLS = 500_000  # working elements per vectorized call: bounds memory, stays in cache


# --- batched rank statistics fed to scipy.stats.bootstrap -----------------------------

def _as_rows(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.intp, copy=False).reshape(-1, np.shape(a)[-1])


def _counts(codes: np.ndarray, k: int) -> np.ndarray:
    """Per-row counts of each code in [0, k): shape (rows, k)."""
    m = codes.shape[0]
    flat = (codes + (np.arange(m) * k)[:, None]).ravel()
    return np.bincount(flat, minlength=m * k).reshape(m, k)


def spearman_codes(cx: np.ndarray, cy: np.ndarray, kx: int, ky: int) -> np.ndarray:
    """Spearman's rho along the last axis of dense-rank codes (kx, ky distinct levels).

    Average ranks come from counting (no sort): a code's midrank is the number of smaller
    codes in the row plus (its count + 1) / 2.
    """
    lead = np.shape(cx)[:-1]
    x, y = _as_rows(cx), _as_rows(cy)
    n = x.shape[1]
    centre = (n + 1) / 2.0  # midranks always sum to n * centre
    stats_xy = []
    for codes, k in ((x, kx), (y, ky)):
        counts = _counts(codes, k)
        mid = np.cumsum(counts, axis=1) - (counts - 1) / 2.0
        spread = (counts * (mid - centre) ** 2).sum(axis=1)
        stats_xy.append((mid, spread))
    (mid_x, sxx), (mid_y, syy) = stats_xy
    rx = np.take_along_axis(mid_x, x, axis=1)
    ry = np.take_along_axis(mid_y, y, axis=1)
    sxy = np.einsum("ij,ij->i", rx, ry) - n * centre * centre
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = sxy / np.sqrt(sxx * syy)
    return rho.reshape(lead)


def kendall_codes(cx: np.ndarray, cy: np.ndarray, kx: int, ky: int) -> np.ndarray:
    """Kendall's tau-b along the last axis of dense-rank codes, via per-row contingency tables.

    Cost is O(kx * ky) per row, cheap because x (trainable parameters) takes few values.
    """
    lead = np.shape(cx)[:-1]
    x, y = _as_rows(cx), _as_rows(cy)
    m, n = x.shape
    table = _counts(x * ky + y, kx * ky).reshape(m, kx, ky)
    rows, cols = table.sum(axis=2), table.sum(axis=1)
    # later[g, l]: how many have an x level above g and y level l. A loop over the few x
    # levels beats a strided cumsum over axis 1; integer arithmetic throughout (exact, fast).
    later = np.empty_like(table)
    later[:, -1] = 0
    for g in range(kx - 2, -1, -1):
        np.add(later[:, g + 1], table[:, g + 1], out=later[:, g])
    # Pair (i at g,l) with j above in x: concordant if y_j > y_i, discordant if below, so
    # S = sum table * (above - below) = sum table * (total_g - 2 * upto + later)
    s = np.einsum("bgl,bgl->b", table, later)
    upto = np.cumsum(later, axis=2, out=later)
    s += (rows * upto[:, :, -1]).sum(axis=1) - 2 * np.einsum("bgl,bgl->b", table, upto)
    n0 = n * (n - 1) / 2.0
    ties_x = (rows * (rows - 1)).sum(axis=1) / 2.0
    ties_y = (cols * (cols - 1)).sum(axis=1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = s / np.sqrt((n0 - ties_x) * (n0 - ties_y))
    return tau.reshape(lead)


def n_resamples_for(n: int, n_boot: int) -> int:
    """Resamples for a slice of n runs: n_boot, cut so n * resamples <= BOOT_WORK for big n."""
    return int(min(n_boot, max(BOOT_MIN_RESAMPLES, BOOT_WORK // max(n, 1))))


def bootstrap_ci(x: np.ndarray, y: np.ndarray, method: str, n_boot: int,
                 rng: np.random.Generator) -> tuple[float, float, int, str]:
    """95% bootstrap CI of Spearman's rho or Kendall's tau-b (pairs resampled).

    Returns (low, high, n_resamples, ci_method). BCa for n <= BCA_MAX_N, else percentile.
    Resamples where the statistic is undefined (constant x or y) are dropped when rare;
    when common, the CI is left empty.
    """
    if n_boot <= 0:
        return math.nan, math.nan, 0, "none: no resamples requested"
    cx, cy = np.unique(x, return_inverse=True), np.unique(y, return_inverse=True)
    kx, ky = len(cx[0]), len(cy[0])
    codes = (cx[1].astype(np.intp), cy[1].astype(np.intp))
    n = len(x)
    fn = spearman_codes if method == "spearman" else kendall_codes
    if method == "kendall" and kx > ky:  # the contingency table is cheaper tall than wide
        codes, kx, ky = codes[::-1], ky, kx

    def statistic(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return fn(a, b, kx, ky)

    n_res = n_resamples_for(n, n_boot)
    per_row = (kx * ky + n) * 2 if method == "kendall" else n * 4  # working elements
    batch = max(1, int(BATCH_CELLS // max(per_row, 1)))
    ci_method = "BCa" if n <= BCA_MAX_N else "percentile"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap(codes, statistic, paired=True, vectorized=True,
                              n_resamples=n_res, batch=batch, method=ci_method,
                              confidence_level=CONFIDENCE, rng=rng)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (is_number(low) and is_number(high)):
        dist = res.bootstrap_distribution
        ok = dist[np.isfinite(dist)]
        if len(ok) >= (1 - DEGENERATE_MAX_SHARE) * len(dist):
            alpha = (1 - CONFIDENCE) / 2
            low, high = (float(v) for v in np.quantile(ok, [alpha, 1 - alpha]))
            ci_method = "percentile, undefined resamples dropped"
        else:
            low, high = math.nan, math.nan
            ci_method = "none: most resamples undefined"
    return low, high, n_res, ci_method


# --- correlation table ----------------------------------------------------------------

def bootstrap_rng(seed: int, scope: str, y: str, method: str,
                  unit: str = "run") -> np.random.Generator:
    """The generator for one row's bootstrap: depends on the row, not on table order."""
    key = f"{scope}|{y}|{method}" + ("" if unit == "run" else f"|{unit}")
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


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


def families(table: pd.DataFrame) -> pd.Series:
    """The correction family of each row.

    Confirmatory: the paper table, i.e. Pearson on configurations of the four paper metrics
    in the optimizer x lr cells, pooled over strategies (``confirmatory: pooled``) and within
    each strategy (``confirmatory: freeze=<s>``), one family each. Everything else, the
    run-level rows included, is one exploratory family.
    """
    confirm = (is_cell(table) & (table["unit"] == "configuration") & (table["method"] == "pearson")
               & table["y"].isin(CONFIRMATORY_METRICS))
    within = [POOLED if pd.isna(f) else strategy_family(f) for f in table["freeze"]]
    return pd.Series(np.where(confirm, within, EXPLORATORY), index=table.index)


def pearson_fields(x: np.ndarray, y: np.ndarray, min_n: int = 3) -> dict[str, float]:
    """scipy's Pearson r, p and 95% CI as row fields; NaN where not estimable (fewer than
    ``min_n`` points, or a constant x or y)."""
    if len(x) < min_n or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": math.nan, "p": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(CONFIDENCE)
    return {"r": float(res.statistic), "p": float(res.pvalue), "ci_low": float(ci.low),
            "ci_high": float(ci.high)}


def holm_adjust(p: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values of finite ``p`` (one vectorised pass).

    Equal to statsmodels' ``multipletests(p, method="holm")[1]`` (tested), without its
    ``gc.collect()`` on every call, which cost most of the correction time in a large table.
    """
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum((m - np.arange(m)) * p[order], 1.0))
    out = np.empty(m)
    out[order] = stepped
    return out


def adjust_pvalues(table: pd.DataFrame) -> pd.DataFrame:
    """Holm and Benjamini-Hochberg within each ``family`` over the rows that have a p-value.

    Without a ``family`` column the whole table is one family.
    """
    table = table.copy()
    p = table["p"].to_numpy(dtype=float)
    family = table["family"] if "family" in table else pd.Series("all", index=table.index)
    holm, bh = np.full(len(table), np.nan), np.full(len(table), np.nan)
    for _, idx in family.groupby(family, sort=False).indices.items():
        idx = idx[np.isfinite(p[idx])]
        if len(idx):
            holm[idx] = holm_adjust(p[idx])
            bh[idx] = stats.false_discovery_control(p[idx], method="bh")
    table["p_holm"], table["p_bh"] = holm, bh
    first = [c for c in CORR_COLUMNS if c in table]
    return table[first + [c for c in table.columns if c not in first]]


def family_sizes(table: pd.DataFrame) -> dict[str, int]:
    """Tests (rows with a p-value) in each family, confirmatory families first."""
    sizes = table[table["p"].notna()].groupby("family").size().to_dict()
    return dict(sorted(sizes.items(), key=lambda kv: (kv[0] == EXPLORATORY, kv[0])))


def add_power(table: pd.DataFrame) -> pd.DataFrame:
    """critical_r (just reaches p < 0.05) and r80 (detected with 80% power) per row, plus,
    for confirmatory rows, r80 at the first (strictest) Holm step alpha / m of its family."""
    table = table.copy()
    n = table["n"].to_numpy()
    table["critical_r"] = [critical_r(int(k)) for k in n]
    table["r80"] = [detectable_r(int(k)) for k in n]
    sizes = family_sizes(table)
    m = table["family"].map(sizes).to_numpy(dtype=float)
    confirm = (table["family"] != EXPLORATORY).to_numpy()
    alpha = np.where(confirm & (m > 0), ALPHA / np.where(m > 0, m, 1), np.nan)
    table["alpha_holm"] = alpha
    table["r80_holm"] = [detectable_r(int(k), float(a)) if a == a else math.nan
                         for k, a in zip(n, alpha, strict=True)]
    return table


def power_table(corr: pd.DataFrame) -> pd.DataFrame:
    """power.csv: per Pearson slice, its critical |r| and the |r| detected with 80% power."""
    pear = corr[corr["method"] == "pearson"]
    return pear[["scope", "unit", "y", "n", "n_runs", "family", "critical_r", "r80",
                 "alpha_holm", "r80_holm"]].reset_index(drop=True)


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
        table = table.sort_values(["_pooled", "strategy", "optimizer", "lr"], kind="stable")
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


# --- strategy versus count, and divergence as an outcome -------------------------------

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


# --- beyond the paper ------------------------------------------------------------------

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
        frame = frame.assign(lr_str=[repr(float(v)) for v in frame["lr"]])
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
        p_same = df_num = df_denom = f_power = math.nan
        if len(cells) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                table = anova_lm(sm.OLS(y, common).fit(), slopes_fit)
            p_same = float(table["Pr(>F)"].iloc[1])
            df_num, df_denom = float(table["df_diff"].iloc[1]), float(table["df_resid"].iloc[1])
            f_power = f_test_power(df_num, df_denom)
        # A missing optimizer x lr combination leaves the factorial design singular;
        # then the cell-means form (same fit) is the one reported.
        full_rank = np.linalg.matrix_rank(interaction.to_numpy()) == interaction.shape[1]
        fit = sm.OLS(y, interaction).fit() if full_rank else slopes_fit
        model = formula if full_rank else f"y ~ 0 + C(cell) + C(cell):{X}"
        ci = np.asarray(fit.conf_int(1 - CONFIDENCE))
        names = list(interaction.columns) if full_rank else [
            f"{kind}[{c}]" for c in cells for kind in ("C(cell)", f"{X}:C(cell)")]
        coef, se, t, p = (np.asarray(v) for v in (fit.params, fit.bse, fit.tvalues,
                                                   fit.pvalues))
        for i, term in enumerate(names):
            coef_rows.append({
                "y": metric, "model": model, "term": term, "coef": coef[i], "se": se[i],
                "t": t[i], "p": p[i], "ci_low": ci[i, 0], "ci_high": ci[i, 1],
                "n": int(fit.nobs), "r2": fit.rsquared, "p_same_slope": p_same,
                "f_df_num": df_num, "f_df_denom": df_denom, "f_power_medium": f_power})
        ci = slopes_fit.conf_int(1 - CONFIDENCE)
        for i, cell in enumerate(cells):
            first = sub[sub["cell"] == cell].iloc[0]
            j = 2 * i + 1
            slope_rows.append({
                "y": metric, "optimizer": first.get("optimizer"),
                "lr": float(first["lr"]) if "lr" in sub else math.nan,
                "n": int((sub["cell"] == cell).sum()), "slope": slopes_fit.params[j],
                "ci_low": ci[j, 0], "ci_high": ci[j, 1], "p": slopes_fit.pvalues[j]})
    return pd.DataFrame(coef_rows), pd.DataFrame(slope_rows)


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

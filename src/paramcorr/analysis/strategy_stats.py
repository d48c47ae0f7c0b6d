"""Strategies within one architecture: effective robustness, the dose-response of each
metric on log10 trainable parameters across strategies, Pareto fronts, a strategies table.

- **Effective robustness** (Taori et al. 2020, "Measuring robustness to natural distribution
  shifts"): how much better a configuration does on the shifted set than its i.i.d.
  accuracy predicts. A line is fitted to logit(gen_acc) on logit(test_acc) over all
  configurations of the analysis (configurations as units: each the mean logit of its usable
  runs; OLS, statsmodels); each run's value is its logit(gen_acc) minus the line at its
  logit(test_acc). Accuracies are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] first, so an
  accuracy of exactly 0 or 1 has a finite logit.
- **Dose-response** across strategies: per architecture, Pearson r (Fisher-z 95% CI) and OLS
  slope of each metric on log10 trainable, configurations as units, all strategies, optimizers
  and learning rates of that architecture together. Its own correction family
  (:data:`DOSE_FAMILY`, Holm and BH over its rows): exploratory, it enlarges no confirmatory
  family.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import statsmodels.api as sm
from matplotlib.lines import Line2D
from scipy import special

from paramcorr.analysis import plots
from paramcorr.analysis.configurations import configuration_means
from paramcorr.analysis.corrections import adjust_pvalues
from paramcorr.analysis.correlations import pearson_fields
from paramcorr.analysis.labels import TRAINABLE_LABEL, metric_label, strategy_label
from paramcorr.analysis.vocab import CONFIDENCE, DISPLAYED_METRICS, X, levels, used_mask
from paramcorr.strategy_names import marker

EFFECTIVE_ROBUSTNESS = "effective_robustness"
LOGIT_CLIP = 1e-3
DOSE_FAMILY = "exploratory: within-architecture dose-response across strategies"
DOSE_COLUMNS = ["model", "y", "n", "n_strategies", "r", "ci_low", "ci_high", "p", "slope",
                "slope_se", "p_holm", "p_bh", "family"]
# What the strategies table and the Pareto plots show (those present).
SHOWN_METRICS = ("test_acc", "gen_acc", EFFECTIVE_ROBUSTNESS)
# An architecture compared across strategies: more than the study's two (base, none), so the
# paper's grid alone adds no section, figure or family.
MIN_STRATEGIES = 3


def _logit(acc: pd.Series | np.ndarray) -> np.ndarray:
    return special.logit(np.clip(np.asarray(acc, dtype=float), LOGIT_CLIP, 1 - LOGIT_CLIP))


def effective_robustness(runs: pd.DataFrame, run_axes: list[str]) -> pd.Series:
    """Each run's effective robustness (NaN where not estimable); see the module doc."""
    out = pd.Series(np.nan, index=runs.index, name=EFFECTIVE_ROBUSTNESS)
    if not {"test_acc", "gen_acc"} <= set(runs.columns):
        return out
    logits = runs.assign(_lt=_logit(runs["test_acc"]), _lg=_logit(runs["gen_acc"]))
    configs = configuration_means(logits, ["_lt", "_lg"], run_axes)
    fit = configs[["_lt", "_lg"]].dropna()
    if len(fit) < 3 or fit["_lt"].nunique() < 2:
        return out
    line = sm.OLS(fit["_lg"].to_numpy(), sm.add_constant(fit["_lt"].to_numpy())).fit()
    intercept, slope = line.params
    usable = used_mask(runs)
    residual = logits["_lg"] - (intercept + slope * logits["_lt"])
    return out.where(~usable, residual).rename(EFFECTIVE_ROBUSTNESS)


def add_effective_robustness(runs: pd.DataFrame, metrics: list[str],
                             run_axes: list[str]) -> None:
    """The ``effective_robustness`` column of runs.csv, and a metric analysed like the others."""
    if "gen_acc" not in runs or EFFECTIVE_ROBUSTNESS in runs:
        return
    runs[EFFECTIVE_ROBUSTNESS] = effective_robustness(runs, run_axes)
    metrics.append(EFFECTIVE_ROBUSTNESS)


def dose_response(configs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per architecture with MIN_STRATEGIES strategies or more: r and slope of each metric on
    log10 trainable over its configurations (see the module doc)."""
    rows = []
    if configs.empty or "model" not in configs or "freeze" not in configs:
        return pd.DataFrame(columns=DOSE_COLUMNS)
    for model in levels(configs, "model"):
        sub = configs[configs["model"] == model]
        for metric in metrics:
            keep = np.isfinite(sub[X].to_numpy(float)) & np.isfinite(sub[metric].to_numpy(float))
            x, y = sub[X].to_numpy(float)[keep], sub[metric].to_numpy(float)[keep]
            row = {"model": model, "y": metric, "n": int(keep.sum()),
                   "n_strategies": int(sub.loc[keep, "freeze"].nunique()),
                   "family": DOSE_FAMILY}
            estimable = len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0
            if row["n_strategies"] >= MIN_STRATEGIES and estimable:
                ols = sm.OLS(y, sm.add_constant(x)).fit()
                row.update(**pearson_fields(x, y), slope=float(ols.params[1]),
                           slope_se=float(ols.bse[1]))
            rows.append(row)
    table = pd.DataFrame(rows).reindex(columns=DOSE_COLUMNS)
    # One family (DOSE_FAMILY), corrected as every other table is (stats.adjust_pvalues).
    return adjust_pvalues(table)[DOSE_COLUMNS] if len(table) else table


def strategies_table(configs: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Per architecture and strategy: configurations, trainable parameters (range) and the
    mean and best of each shown metric over its configurations."""
    shown = [m for m in SHOWN_METRICS if m in metrics]
    if configs.empty or "freeze" not in configs or "model" not in configs:
        return pd.DataFrame()
    rows = []
    for model in levels(configs, "model"):
        sub = configs[configs["model"] == model]
        for strategy in levels(sub, "freeze"):
            part = sub[sub["freeze"] == strategy]
            trainable = 10 ** part[X].astype(float)
            row = {"model": model, "freeze": strategy, "configurations": len(part),
                   "trainable_min": int(round(trainable.min())),
                   "trainable_max": int(round(trainable.max()))}
            for m in shown:
                row[f"{m}_mean"] = float(part[m].mean())
                row[f"{m}_best"] = float(part[m].max())
            rows.append(row)
    return pd.DataFrame(rows)


def pareto_front(trainable: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats: at most as many trainable parameters and
    a higher metric. Sorted by trainable parameters."""
    order = np.lexsort((-metric, trainable))
    front, best = [], -math.inf
    for i in order:
        if metric[i] > best:
            front.append(i)
            best = metric[i]
    return np.asarray(front, dtype=int)


def pareto_plot(configs: pd.DataFrame, metric: str, colours: dict, path: Path) -> Path | None:
    """One panel per architecture: ``metric`` vs trainable parameters (log x) per
    configuration, marker = strategy, the Pareto front drawn."""
    if configs.empty or metric not in configs or "freeze" not in configs:
        return None
    data = configs[np.isfinite(configs[metric].to_numpy(float))
                   & np.isfinite(configs[X].to_numpy(float))]
    models = [m for m in levels(data, "model")
              if data.loc[data["model"] == m, "freeze"].nunique() >= MIN_STRATEGIES]
    if not models:
        return None
    width = plots.FULL_WIDTH_IN if len(models) > 1 else plots.ONE_COLUMN_IN
    strategies = levels(data, "freeze")
    handles = [Line2D([], [], color="0.3", marker=marker(s), linestyle="",
                      label=strategy_label(s)) for s in strategies]
    handles.append(Line2D([], [], color="0.15", linestyle="--", label="Pareto front"))
    columns = min(len(models), 3)
    rows = -(-len(models) // columns)
    with matplotlib.rc_context(plots.PAPER_STYLE):
        fig = plots.paper_figure(width, plots.facet_height(rows, len(handles), width))
        axes = fig.subplots(rows, columns, squeeze=False).ravel()
        for ax, model in zip(axes, models, strict=False):
            sub = data[data["model"] == model]
            trainable = 10 ** sub[X].to_numpy(float)
            values = sub[metric].to_numpy(float)
            for strategy in strategies:
                mask = (sub["freeze"] == strategy).to_numpy()
                if mask.any():
                    ax.scatter(trainable[mask], values[mask], marker=marker(strategy), s=18,
                               color=colours.get(str(model), "0.3"), edgecolors="0.2",
                               linewidths=0.4, alpha=0.85)
            front = pareto_front(trainable, values)
            ax.step(trainable[front], values[front], where="post", color="0.15",
                    linestyle="--")
            plots.log_count_axis(ax)
            ax.set_title(str(model))
            ax.set_xlabel(TRAINABLE_LABEL)
            ax.grid(True, alpha=0.3, which="major")
        for ax in axes[len(models):]:
            ax.set_visible(False)
        for ax in axes[::columns]:
            ax.set_ylabel(metric_label(metric))
        plots.legend_below(fig, handles, width)
        return plots.save_figure(fig, path)


def _f(value: object, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if value is not None and np.isfinite(
        float(value)) else "n/a"


def report_section(dose: pd.DataFrame, table: pd.DataFrame, plots: list[Path],
                   out_dir: Path) -> list[str]:
    """The report's strategies section (empty when no architecture has MIN_STRATEGIES)."""
    if table.empty or table.groupby("model")["freeze"].nunique().max() < MIN_STRATEGIES:
        return []
    lines = ["## Strategies within each architecture", "",
             "Each row: one architecture and freeze strategy, over its configurations "
             "(optimizer x lr x strategy keys); trainable = its range of trainable parameters. "
             "`effective_robustness`: logit(gen_acc) above the line fitted to logit(gen_acc) "
             "on logit(test_acc) over all configurations (Taori et al. 2020).", ""]
    shown = [c[:-5] for c in table.columns if c.endswith("_mean")]
    headers = ["model", "strategy", "configs", "trainable", *(f"{m} mean / best" for m in shown)]
    rows = []
    for _, row in table.iterrows():
        span = (f"{row['trainable_min']:,}" if row["trainable_min"] == row["trainable_max"]
                else f"{row['trainable_min']:,}-{row['trainable_max']:,}")
        rows.append([row["model"], row["freeze"], row["configurations"], span,
                     *(f"{_f(row[f'{m}_mean'])} / {_f(row[f'{m}_best'])}" for m in shown)])
    lines += _md(headers, rows)
    spread = table.groupby("model").apply(
        lambda g: math.log10(g["trainable_max"].max() / max(g["trainable_min"].min(), 1)),
        include_groups=False)
    lines += ["", "Spread of trainable parameters within each architecture: "
              + ", ".join(f"{m} {d:.1f} decades" for m, d in spread.items()) + ".", ""]
    tested = dose[dose["r"].notna()] if len(dose) else dose
    if len(tested):
        lines += ["### Dose-response across strategies", "",
                  f"Pearson r and OLS slope (per decade of trainable parameters) of each metric "
                  f"on log10 trainable within each architecture, configurations as units; "
                  f"family `{DOSE_FAMILY}` ({len(tested)} tests, Holm).", ""]
        lines += _md(["model", "metric", "n", "strategies", f"r [{CONFIDENCE:.0%} CI]",
                      "slope (SE)", "p_holm"],
                     [[r["model"], r["y"], r["n"], r["n_strategies"],
                       f"{_f(r['r'], 2)} [{_f(r['ci_low'], 2)}, {_f(r['ci_high'], 2)}]",
                       f"{_f(r['slope'], 4)} ({_f(r['slope_se'], 4)})", f"{r['p_holm']:.2g}"]
                      for _, r in tested.iterrows()])
        lines.append("")
    for path in plots:
        rel = Path(path).relative_to(out_dir).as_posix()
        lines += [f"![{Path(path).stem}]({rel})", "",
                  f"*{Path(path).stem.partition('_')[2]} vs trainable parameters per "
                  "architecture; marker = strategy; dashed = Pareto front (no configuration "
                  "does better with as few trainable parameters).*", ""]
    return lines


def _md(headers: list[str], rows: list[list[object]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]


def write_tables(dose: pd.DataFrame, table: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    """strategy_dose_response.csv, strategies.csv and strategies.tex (where there are rows)."""
    out: dict[str, Path] = {}
    if len(dose):
        out["strategy_dose_response"] = out_dir / "strategy_dose_response.csv"
        dose.to_csv(out["strategy_dose_response"], index=False)
    if len(table):
        out["strategies"] = out_dir / "strategies.csv"
        table.to_csv(out["strategies"], index=False)
        out["strategies_tex"] = out_dir / "strategies.tex"
        out["strategies_tex"].write_text(
            # Model and strategy names come from the records: escaped (pandas), like every
            # text cell of the other .tex tables.
            table.style.hide(axis="index").format(precision=3)
            .format(escape="latex", subset=[c for c in ("model", "freeze") if c in table])
            .to_latex(
                caption="Freeze strategies per architecture: configurations, trainable "
                        "parameters, mean and best metrics over configurations.",
                label="tab:paramcorr-strategies", hrules=True, position="htbp",
                position_float="centering"), encoding="utf-8")
    return out


def analyse(configs: pd.DataFrame, metrics: list[str], colours: dict, out_dir: Path,
            plot_dir: Path) -> tuple[list[str], dict[str, Path], list[Path]]:
    """Everything of this module for one analysis: report lines, files, plots."""
    wanted = [m for m in (*DISPLAYED_METRICS, EFFECTIVE_ROBUSTNESS) if m in metrics]
    dose = dose_response(configs, wanted)
    table = strategies_table(configs, metrics)
    plot_dir.mkdir(parents=True, exist_ok=True)
    plots = [p for m in SHOWN_METRICS if m in metrics
             if (p := pareto_plot(configs, m, colours, plot_dir / f"pareto_{m}.png"))]
    files = write_tables(dose, table, out_dir)
    return report_section(dose, table, plots, out_dir), files, plots

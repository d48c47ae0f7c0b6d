"""Figures: faceted scatters, the correlation heatmap and partial-freezing dose-response.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never
pyplot: no global backend switch, headless-safe, fine inside a Hydra callback. Each is
written as PNG (embedded in report.md) and as PDF (for a paper).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from paramcorr.analysis.collect import MAIN_METRICS, plottable
from paramcorr.analysis.stats import X, format_value, is_number, levels, used_mask
from paramcorr.strategy_names import STRATEGY_TERMS

DPI = 150  # print quality at paper size; higher only costs time
# Marker and label per strategy: the strategies' one vocabulary (paramcorr.strategy_names).
MARKERS = {t.name: t.marker for t in STRATEGY_TERMS}
OTHER_MARKERS = ("d", "h", "p", "8", "<")
LABELS = {t.name: t.label for t in STRATEGY_TERMS}


def model_colours(models: list[str]) -> dict[str, tuple]:
    """One colour per architecture, fixed by sorted name so every figure agrees."""
    names = sorted({str(m) for m in models})
    cmap = matplotlib.colormaps["tab10" if len(names) <= 10 else "tab20"]
    colours = cmap.colors if isinstance(cmap, ListedColormap) else cmap(np.linspace(0, 1, 20))
    return {m: tuple(colours[i % len(colours)]) for i, m in enumerate(names)}


def _marker(freeze: str, order: list[str]) -> str:
    if freeze in MARKERS:
        return MARKERS[freeze]
    return OTHER_MARKERS[order.index(freeze) % len(OTHER_MARKERS)] if freeze in order else "o"


def _levels(frame: pd.DataFrame, axis: str) -> list:
    """The facet levels of ``axis`` (stats.levels order); [None] = one facet for all."""
    return levels(frame, axis) or [None]


def _save(fig: Figure, path: Path) -> Path:
    """PNG at DPI for the report, and the same figure as PDF beside it."""
    fig.savefig(path, dpi=DPI)
    fig.savefig(path.with_suffix(".pdf"))
    return path


def _facet_mask(runs: pd.DataFrame, opt: object, lr: object) -> np.ndarray:
    mask = np.ones(len(runs), dtype=bool)
    if opt is not None:
        mask &= (runs["optimizer"] == opt).to_numpy()
    if lr is not None:
        mask &= (runs["lr"] == lr).to_numpy()
    return mask


def _facet_title(opt: object, lr: object) -> str:
    parts = [str(opt)] if opt is not None else []
    if lr is not None:
        parts.append(f"lr={format_value('lr', lr)}")
    return ", ".join(parts) or "all runs"


def _legend_handles(colours: dict, freezes: list[str], diverged: bool) -> list[Line2D]:
    handles = [Line2D([], [], color=c, marker="o", linestyle="", markersize=7, label=m)
               for m, c in colours.items()]
    handles += [Line2D([], [], color="0.3", marker=_marker(f, freezes), linestyle="",
                       markersize=7, label=LABELS.get(f, str(f))) for f in freezes]
    if diverged:
        handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="none",
                              linestyle="", markersize=7, label="diverged (hollow)"))
    handles.append(Line2D([], [], color="black", linestyle="--", label="OLS fit"))
    return handles


def _grid_layout(fig: Figure, legend_in: float) -> None:
    """Fixed margins in inches for a facet grid: as tight as tight_layout, a fraction of the
    cost (tight_layout re-measures every tick label of every panel)."""
    w, h = fig.get_figwidth(), fig.get_figheight()
    fig.subplots_adjust(left=0.75 / w, right=1 - legend_in / w, bottom=0.55 / h,
                        top=1 - 0.85 / h, wspace=0.08, hspace=0.55)


def scatter_plot(runs: pd.DataFrame, metric: str, colours: dict, path: Path,
                 configs: pd.DataFrame | None = None) -> Path | None:
    """log10 trainable vs ``metric``: optimizer rows x lr columns, colour model, marker freeze.

    Points are runs; the dashed line and the r in each title are fitted on ``configs``
    (configuration means) when given, the unit the paper table uses.
    """
    used = used_mask(runs) & np.isfinite(runs[X].to_numpy(float)) \
        & plottable(runs[metric].to_numpy(float))
    data = runs[used]
    if data.empty:
        return None
    cfg = None
    if configs is not None and metric in configs:
        keep = used_mask(configs) & np.isfinite(configs[X].to_numpy(float)) \
            & plottable(configs[metric].to_numpy(float))
        cfg = configs[keep]
    opts, lrs = _levels(data, "optimizer"), _levels(data, "lr")
    freezes = levels(data, "freeze")
    fig = Figure(figsize=(2.9 * len(lrs) + 2.6, 2.5 * len(opts) + 0.6), dpi=DPI)
    axes = fig.subplots(len(opts), len(lrs), sharex=True, sharey=True, squeeze=False)
    alpha = 0.85 if len(data) < 500 else 0.35
    size = 26 if len(data) < 500 else 8
    for i, opt in enumerate(opts):
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            facet = data[_facet_mask(data, opt, lr)]
            # One call per marker kind (not per model): scatter calls dominate draw time.
            colour = np.array([colours.get(str(m), (0.4, 0.4, 0.4, 1.0))
                               for m in facet.get("model", pd.Series("", facet.index))])
            freeze_col = facet.get("freeze", pd.Series("none", facet.index)).astype(str)
            for (freeze, status), idx in facet.groupby([freeze_col, facet["status"]],
                                                       sort=True).indices.items():
                hollow = status == "diverged"
                # Many points: rasterized in the PDF (a vector file of 10,000 markers is
                # slow to write and to open).
                ax.scatter(facet[X].to_numpy()[idx], facet[metric].to_numpy()[idx], s=size,
                           alpha=alpha, marker=_marker(freeze, freezes), linewidths=0.8,
                           facecolors="none" if hollow else colour[idx],
                           edgecolors=colour[idx], rasterized=len(data) >= 500)
            x, y = facet[X].to_numpy(float), facet[metric].to_numpy(float)
            unit = ""
            if cfg is not None:
                points = cfg[_facet_mask(cfg, opt, lr)]
                x, y = points[X].to_numpy(float), points[metric].to_numpy(float)
                unit = f" configs ({len(facet)} runs)"
            title = _facet_title(opt, lr)
            if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                fit = stats.linregress(x, y)
                xs = np.array([x.min(), x.max()])
                ax.plot(xs, fit.intercept + fit.slope * xs, "k--", linewidth=1.2)
                title += f"\nn={len(x)}{unit}, r={fit.rvalue:.2f}"
            else:
                title += f"\nn={len(x)}{unit}"
            ax.set_title(title, fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize=8)
            if i == len(opts) - 1:
                ax.set_xlabel("log10 trainable params", fontsize=9)
            if j == 0:
                ax.set_ylabel(metric, fontsize=9)
    fig.legend(handles=_legend_handles(colours, freezes, (data["status"] == "diverged").any()),
               loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"{metric} vs trainable parameters", fontsize=11)
    _grid_layout(fig, legend_in=2.4)
    return _save(fig, path)


def _cell_groups(pear: pd.DataFrame) -> dict[str, list[str]]:
    """Paper-cell scopes (optimizer x lr) grouped: pooled first, then each freeze strategy.

    Read from the table's scope-axis columns, never parsed out of the scope string.
    """
    groups: dict[str, list[str]] = {}
    cells = pear.drop_duplicates("scope")
    cells = cells[cells["optimizer"].notna() & cells["lr"].notna()]
    pooled = cells[cells["freeze"].isna()]
    if len(pooled):
        groups["pooled over strategies"] = list(pooled["scope"])
    for freeze in levels(cells, "freeze"):
        groups[f"freeze={format_value('freeze', freeze)}"] = list(
            cells[cells["freeze"] == freeze]["scope"])
    if not groups:  # no optimizer x lr axes: show the coarser scopes instead
        groups["scopes"] = list(dict.fromkeys(pear["scope"]))
    return groups


def _cell_label(pear: pd.DataFrame, scope: str) -> str:
    row = pear[pear["scope"] == scope].iloc[0]
    if pd.isna(row["optimizer"]):
        return scope
    return f"{row['optimizer']}\nlr={format_value('lr', row['lr'])}"


def heatmap_plot(corr: pd.DataFrame, metrics: list[str], path: Path) -> Path | None:
    """Pearson r per metric (rows) and optimizer x lr cell (columns); one panel per strategy."""
    pear = corr[corr["method"] == "pearson"]
    if "unit" in pear:  # the paper table's unit
        pear = pear[pear["unit"] == "configuration"]
    if pear.empty or pear["r"].notna().sum() == 0:
        return None
    metrics = [m for m in metrics if m in set(pear["y"])]
    r_all = pear.pivot(index="y", columns="scope", values="r")
    ph_all = pear.pivot(index="y", columns="scope", values="p_holm")
    groups = _cell_groups(pear)
    ncols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / ncols)
    width = max(len(v) for v in groups.values())
    fig = Figure(figsize=(ncols * (0.75 * width + 1.6) + 1.2,
                          nrows * (0.34 * len(metrics) + 1.5) + 0.6), dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    image = None
    for ax, (title, scopes) in zip(axes.flat, groups.items(), strict=False):  # spare axes hidden
        r = r_all.reindex(index=metrics, columns=scopes)
        ph = ph_all.reindex(index=metrics, columns=scopes)
        image = ax.imshow(np.ma.masked_invalid(r.to_numpy(float)), cmap=cmap, vmin=-1,
                          vmax=1, aspect="auto")
        for i in range(len(metrics)):
            for j in range(len(scopes)):
                value = r.iat[i, j]
                if is_number(value):
                    star = "*" if is_number(ph.iat[i, j]) and ph.iat[i, j] < 0.05 else ""
                    ax.text(j, i, f"{value:.2f}{star}", ha="center", va="center", fontsize=7,
                            color="white" if abs(value) > 0.6 else "black")
        labels = [_cell_label(pear, s) for s in scopes]
        ax.set_xticks(range(len(scopes)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_yticks(range(len(metrics)))
        ax.set_yticklabels(metrics, fontsize=8)
        ax.set_title(title, fontsize=9)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_visible(False)
    fig.suptitle("Pearson r of log10 trainable params over configurations per optimizer x lr "
                 "cell (* Holm p < 0.05 in its family; grey = not estimable)", fontsize=10)
    w, h = fig.get_figwidth(), fig.get_figheight()
    fig.subplots_adjust(left=0.95 / w, right=1 - 0.2 / w, bottom=0.6 / h, top=1 - 0.65 / h,
                        wspace=0.9 / (0.75 * width + 1.6), hspace=0.75 / (0.34 * len(metrics)))
    fig.colorbar(image, ax=axes, shrink=0.8, label="r", pad=0.02)
    return _save(fig, path)


def partial_plot(runs: pd.DataFrame, metric: str, colours: dict, path: Path) -> Path | None:
    """Per architecture with partial runs: mean ``metric`` (+-SD over seeds) vs trainable."""
    if "freeze" not in runs or metric not in runs or "model" not in runs:
        return None
    used = runs[used_mask(runs) & plottable(runs[metric].to_numpy(float))
                & (runs["params_trainable"].astype(float) > 0).to_numpy()]
    models = sorted(used.loc[used["freeze"] == "partial", "model"].dropna().unique())
    if not models:
        return None
    data = used[used["model"].isin(models)]
    opts, lrs = _levels(data, "optimizer"), _levels(data, "lr")
    fig = Figure(figsize=(2.9 * len(lrs) + 2.2, 2.5 * len(opts) + 0.6), dpi=DPI)
    axes = fig.subplots(len(opts), len(lrs), sharex=True, sharey=True, squeeze=False)
    for i, opt in enumerate(opts):
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            facet = data[_facet_mask(data, opt, lr)]
            for model, grp in facet.groupby("model", sort=True):
                agg = grp.groupby(grp["params_trainable"].astype(float))[metric].agg(
                    ["mean", "std"]).sort_index()
                ax.errorbar(agg.index, agg["mean"], yerr=agg["std"].fillna(0), marker="o",
                            markersize=4, capsize=2, linewidth=1.2,
                            color=colours.get(str(model), "0.4"), label=str(model))
            ax.set_xscale("log")
            ax.set_title(_facet_title(opt, lr), fontsize=9)
            ax.grid(True, alpha=0.3, which="both")
            ax.tick_params(labelsize=8)
            if i == len(opts) - 1:
                ax.set_xlabel("trainable params (log scale)", fontsize=9)
            if j == 0:
                ax.set_ylabel(metric, fontsize=9)
    handles = [Line2D([], [], color=colours.get(m, "0.4"), marker="o", label=m) for m in models]
    fig.legend(handles=handles, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(f"Partial freezing: {metric} vs trainable params within each architecture "
                 "(mean +- SD over seeds; all strategies of that architecture)", fontsize=10)
    _grid_layout(fig, legend_in=2.0)
    return _save(fig, path)


def make_plots(runs: pd.DataFrame, corr: pd.DataFrame | None, metrics: list[str],
               plot_dir: Path, configs: pd.DataFrame | None = None) -> list[Path]:
    """Write every figure that the data supports; return the PNG paths (each has a PDF)."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    colours = model_colours(runs["model"].dropna().astype(str).tolist()
                            if "model" in runs else [])
    out: list[Path | None] = []
    for metric in (m for m in MAIN_METRICS if m in metrics):
        out.append(scatter_plot(runs, metric, colours, plot_dir / f"scatter_{metric}.png",
                                configs))
    if corr is not None:
        out.append(heatmap_plot(corr, metrics, plot_dir / "heatmap_pearson.png"))
    if "test_acc" in metrics:
        out.append(partial_plot(runs, "test_acc", colours, plot_dir / "partial_test_acc.png"))
    return [p for p in out if p is not None]

"""Figures: faceted scatters, the correlation heatmap and partial-freezing dose-response.

Figures are built with ``matplotlib.figure.Figure`` and saved through the Agg canvas, never
pyplot: no global backend switch, headless-safe, fine inside a Hydra callback. Each is
written as PNG (embedded in report.md) and as PDF (for a paper).

Every figure is drawn in one paper style (:data:`PAPER_STYLE`): TrueType (Type 42) fonts in
the PDF, as IEEE and ACM require (matplotlib's default Type 3 fonts are refused), and sizes
a paper uses as they are, one column (:data:`ONE_COLUMN_IN`) or the full text width
(:data:`FULL_WIDTH_IN`), with 7-8 pt text at that size. No figure has a title of its own:
the caption (report.md, the paper) says what it shows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import stats

from paramcorr.analysis.collect import plottable
from paramcorr.analysis.labels import (
    TRAINABLE_LABEL,
    lr_math,
    metric_label,
    optimizer_label,
    strategy_label,
)
from paramcorr.analysis.vocab import (
    ALPHA,
    DISPLAYED_METRICS,
    X,
    is_cell,
    is_number,
    levels,
    used_mask,
)
from paramcorr.record import Status
from paramcorr.strategy_names import DOSE_RESPONSE, STRATEGY_TERMS

# Writing a PDF subsets its TrueType (Type 42) fonts through fontTools, which logs every
# table it prunes or subsets at INFO ("glyf pruned", "hmtx subsetted"): under Hydra's INFO
# job logging one analysis printed hundreds of such lines. Only its warnings are ours to see.
logging.getLogger("fontTools").setLevel(logging.WARNING)

DPI = 150  # the PNGs in report.md (7 in = 1050 px); the PDFs are vector
ONE_COLUMN_IN = 3.5  # a two-column paper's column width (IEEE, ACM, NeurIPS-like)
FULL_WIDTH_IN = 7.0  # its text width
# One paper style for every figure: Type 42 fonts (pdf.fonttype/ps.fonttype 42 embed
# TrueType; 3 would embed Type 3), 8 pt labels and 7 pt ticks at the figure's printed size.
PAPER_STYLE = {
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "axes.linewidth": 0.6,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.minor.width": 0.4,
    "ytick.minor.width": 0.4,
    "lines.linewidth": 1.0,
    "lines.markersize": 4,
    "grid.linewidth": 0.4,
    "legend.handletextpad": 0.3,
    "legend.columnspacing": 1.0,
    "axes.unicode_minus": True,
}
CELL_FONT_PT = 7  # heatmap cell values
# Marker per strategy: the strategies' one vocabulary (paramcorr.strategy_names).
MARKERS = {t.name: t.marker for t in STRATEGY_TERMS}
OTHER_MARKERS = ("d", "h", "p", "8", "<")
DENSE = 500  # points beyond which markers shrink, fade and are rasterized in the PDF


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
    """The facet levels of ``axis`` (vocab.levels order); [None] = one facet for all."""
    return levels(frame, axis) or [None]


def _width(n_columns: int) -> float:
    """One column for a single panel, the full text width for more."""
    return ONE_COLUMN_IN if n_columns <= 1 else FULL_WIDTH_IN


def paper_figure(width: float, height: float) -> Figure:
    # Constrained layout fits titles, tick labels, legends and colorbars inside the figure
    # (nothing clipped) at the stated size; tight bounding boxes would change the size.
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    # An Agg canvas of its own: the layout and the PNG then share one renderer and so its
    # cache of text extents (a bare Figure makes a new renderer for each of them).
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """PNG for the report, and the same figure as PDF beside it (Type 42 fonts)."""
    engine = fig.get_layout_engine()
    engine.set(w_pad=0.02, h_pad=0.02, wspace=0.02, hspace=0.02)
    # Lay out once and keep it: each savefig would otherwise measure every tick label of
    # every panel again (half the cost of a figure). The engine alone places the axes; a
    # whole draw around it (draw_without_rendering) would only measure everything again.
    engine.execute(fig)
    # None, not "none": "none" leaves a placeholder engine, and savefig lays out (draws) the
    # whole figure once more before printing whenever the figure has any engine.
    fig.set_layout_engine(None)
    fig.savefig(path, dpi=DPI)
    fig.savefig(path.with_suffix(".pdf"))
    return path


def panel_title(ax: object, text: str) -> None:
    """A panel's title at the top of its axes (matplotlib's default place).

    Given as y=1.0, matplotlib keeps it there instead of checking, on every layout and every
    draw, whether top ticks or an offset text push it up (a full measure of the y axis per
    title, a tenth of a figure's cost). Our panels have neither: x ticks below, y values of
    metrics in [0, 1], so the default place is where that check would leave it.
    """
    ax.set_title(text, y=1.0)


def _facet_mask(runs: pd.DataFrame, opt: object, lr: object) -> np.ndarray:
    mask = np.ones(len(runs), dtype=bool)
    if opt is not None:
        mask &= (runs["optimizer"] == opt).to_numpy()
    if lr is not None:
        mask &= (runs["lr"] == lr).to_numpy()
    return mask


def cell_title(opt: object, lr: object, sep: str = ", ") -> str:
    """An optimizer x lr cell for a reader, in mathtext: 'Adam, lr $10^{-3}$'."""
    parts = [optimizer_label(opt)] if opt is not None else []
    if lr is not None:
        parts.append(f"lr ${lr_math(lr)}$")
    return sep.join(parts) or "all runs"


def _legend_handles(colours: dict, freezes: list[str], diverged: bool,
                    fit: bool = True) -> list[Line2D]:
    handles = [Line2D([], [], color=c, marker="o", linestyle="", label=m)
               for m, c in colours.items()]
    handles += [Line2D([], [], color="0.3", marker=_marker(f, freezes), linestyle="",
                       label=strategy_label(f)) for f in freezes]
    if diverged:
        handles.append(Line2D([], [], color="0.3", marker="o", markerfacecolor="none",
                              linestyle="", label="diverged (hollow)"))
    if fit:
        handles.append(Line2D([], [], color="black", linestyle="--",
                              label="OLS fit"))
    return handles


def _legend_columns(n_handles: int, width: float) -> int:
    return max(1, min(n_handles, int(width / 1.3)))


def legend_below(fig: Figure, handles: list[Line2D], width: float) -> None:
    """The legend as a band under the panels: no white gap beside them."""
    fig.legend(handles=handles, loc="outside lower center",
               ncol=_legend_columns(len(handles), width), frameon=False)


def log_count_axis(ax: object) -> None:
    """Trainable parameters as real counts on a log axis: ticks read 10^4, 10^5, ..."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10))
    ax.xaxis.set_major_formatter(matplotlib.ticker.LogFormatterSciNotation(base=10))
    # Minor ticks at 2x and 5x only: the default eight per decade triple the drawing time.
    ax.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(base=10, subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def facet_height(n_rows: int, n_handles: int, width: float) -> float:
    """Panels of 1.75 in, axis labels, and the legend band's rows."""
    legend_rows = -(-n_handles // _legend_columns(n_handles, width))
    return 1.75 * n_rows + 0.35 + 0.15 * legend_rows


def scatter_plot(runs: pd.DataFrame, metric: str, colours: dict, path: Path,
                 configs: pd.DataFrame | None = None) -> Path | None:
    """Trainable parameters (log axis) vs ``metric``: optimizer rows x lr columns, colour
    model, marker strategy.

    Points are runs; the dashed line and the r in each title are fitted on ``configs``
    (configuration means) when given, the unit the paper table uses; the fit is linear in
    log10 trainable, a straight line on the log axis.
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
    width = _width(len(lrs))
    n_handles = len(colours) + len(freezes) + 2
    fig = paper_figure(width, facet_height(len(opts), n_handles, width))
    axes = fig.subplots(len(opts), len(lrs), sharex=True, sharey=True, squeeze=False)
    alpha = 0.85 if len(data) < DENSE else 0.35
    size = 14 if len(data) < DENSE else 4
    fitted = False
    for i, opt in enumerate(opts):
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            log_count_axis(ax)
            facet = data[_facet_mask(data, opt, lr)]
            # One call per marker kind (not per model): scatter calls dominate draw time.
            colour = np.array([colours.get(str(m), (0.4, 0.4, 0.4, 1.0))
                               for m in facet.get("model", pd.Series("", facet.index))])
            freeze_col = facet.get("freeze", pd.Series("none", facet.index)).astype(str)
            counts = np.power(10.0, facet[X].to_numpy(float))
            for (freeze, status), idx in facet.groupby([freeze_col, facet["status"]],
                                                       sort=True).indices.items():
                hollow = status == Status.DIVERGED
                # Many points: rasterized in the PDF (a vector file of 10,000 markers is
                # slow to write and to open).
                ax.scatter(counts[idx], facet[metric].to_numpy()[idx], s=size,
                           alpha=alpha, marker=_marker(freeze, freezes), linewidths=0.6,
                           facecolors="none" if hollow else colour[idx],
                           edgecolors=colour[idx], rasterized=len(data) >= DENSE)
            x, y = facet[X].to_numpy(float), facet[metric].to_numpy(float)
            unit = "runs"
            if cfg is not None:
                points = cfg[_facet_mask(cfg, opt, lr)]
                x, y = points[X].to_numpy(float), points[metric].to_numpy(float)
                unit = "configurations"
            title = cell_title(opt, lr)
            if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                fit = stats.linregress(x, y)
                xs = np.array([x.min(), x.max()])
                ax.plot(10 ** xs, fit.intercept + fit.slope * xs, "k--", linewidth=0.9)
                fitted = True
                title += f"\n$r$ = {fit.rvalue:.2f}, $n$ = {len(x)} {unit}".replace(
                    "= -", "= \u2212")
            else:
                title += f"\n$n$ = {len(x)} {unit}"
            panel_title(ax, title)
            ax.grid(True, alpha=0.3)
            if i == len(opts) - 1:
                ax.set_xlabel(TRAINABLE_LABEL)
            if j == 0:
                ax.set_ylabel(metric_label(metric))
    legend_below(fig, _legend_handles(colours, freezes, (data["status"] == Status.DIVERGED).any(),
                                       fit=fitted), width)
    return save_figure(fig, path)


def _cell_groups(pear: pd.DataFrame) -> dict[str, list[str]]:
    """Paper-cell scopes (optimizer x lr) grouped: pooled first, then each freeze strategy.

    Read from the table's scope-axis columns, never parsed out of the scope string.
    """
    groups: dict[str, list[str]] = {}
    cells = pear.drop_duplicates("scope")
    cells = cells[is_cell(cells)]
    pooled = cells[cells["freeze"].isna()]
    if len(pooled):
        groups[strategy_label("pooled")] = list(pooled["scope"])
    for freeze in levels(cells, "freeze"):
        groups[strategy_label(freeze)] = list(cells[cells["freeze"] == freeze]["scope"])
    if not groups:  # no optimizer x lr axes: show the coarser scopes instead
        groups["scopes"] = list(dict.fromkeys(pear["scope"]))
    return groups


def _cell_label(pear: pd.DataFrame, scope: str) -> str:
    row = pear[pear["scope"] == scope].iloc[0]
    if pd.isna(row["optimizer"]):
        return scope
    return cell_title(row["optimizer"], row["lr"], sep="\n")


def _heatmap_panels(pear: pd.DataFrame, metrics: list[str]) -> list[tuple[str, pd.DataFrame,
                                                                          pd.DataFrame]]:
    """(title, r, p_holm) per panel worth drawing: a panel with no estimable r (a strategy
    with too few configurations per cell) is left out, and so is a strategy panel equal to
    the pooled one (a sweep of one strategy)."""
    r_all = pear.pivot(index="y", columns="scope", values="r")
    ph_all = pear.pivot(index="y", columns="scope", values="p_holm")
    panels: list[tuple[str, pd.DataFrame, pd.DataFrame]] = []
    for title, scopes in _cell_groups(pear).items():
        r = r_all.reindex(index=metrics, columns=scopes)
        if not np.isfinite(r.to_numpy(float)).any():
            continue
        labels = [_cell_label(pear, s) for s in scopes]
        same = [k for k, (_, prev, _) in enumerate(panels) if list(prev.columns) == labels
                and np.allclose(prev.to_numpy(float), r.to_numpy(float), equal_nan=True)]
        if same:  # one strategy only: the pooled panel is this strategy's, named so
            panels[same[0]] = (title, *panels[same[0]][1:])
            continue
        ph = ph_all.reindex(index=metrics, columns=scopes)
        r.columns = ph.columns = labels
        panels.append((title, r, ph))
    return panels


def heatmap_plot(corr: pd.DataFrame, metrics: list[str], path: Path) -> Path | None:
    """Pearson r per metric (rows) and optimizer x lr cell (columns); one panel per strategy
    with estimable cells (pooled first). Bold, with *: Holm p < 0.05 in its family."""
    pear = corr[corr["method"] == "pearson"]
    if "unit" in pear:  # the paper table's unit
        pear = pear[pear["unit"] == "configuration"]
    if pear.empty or pear["r"].notna().sum() == 0:
        return None
    metrics = [m for m in metrics if m in set(pear["y"])]
    panels = _heatmap_panels(pear, metrics)
    if not panels:
        return None
    n_cells = max(len(r.columns) for _, r, _ in panels)
    # Few cells: panels side by side; many: stacked, each as wide as the page allows.
    side = n_cells * len(panels) <= 6
    n_cols = len(panels) if side else 1
    width = ONE_COLUMN_IN if n_cells * n_cols <= 3 else FULL_WIDTH_IN
    row_in = 0.16 * len(metrics) + 0.45
    height = (row_in if side else row_in * len(panels)) + 0.2
    fig = paper_figure(width, height)
    ratios = [len(r.columns) for _, r, _ in panels] if side else None
    axes = fig.subplots(1 if side else len(panels), n_cols, squeeze=False,
                        gridspec_kw={"width_ratios": ratios} if ratios else None).flat
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.88")
    image = None
    for k, (ax, (title, r, ph)) in enumerate(zip(axes, panels, strict=True)):
        image = ax.imshow(np.ma.masked_invalid(r.to_numpy(float)), cmap=cmap, vmin=-1,
                          vmax=1, aspect="auto")
        for i in range(r.shape[0]):
            for j in range(r.shape[1]):
                value = r.iat[i, j]
                if not is_number(value):
                    continue
                holm = is_number(ph.iat[i, j]) and ph.iat[i, j] < ALPHA
                text = f"{value:.2f}".replace("-", "\u2212") + ("*" if holm else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=CELL_FONT_PT,
                        fontweight="bold" if holm else "normal",
                        color="white" if abs(value) > 0.6 else "black")
        ax.set_xticks(range(r.shape[1]), list(r.columns))
        ax.set_yticks(range(r.shape[0]),
                      [metric_label(m) for m in r.index] if k == 0 or not side else [])
        ax.tick_params(length=0)
        panel_title(ax, title)
    bar = fig.colorbar(image, ax=list(fig.axes), shrink=0.9, aspect=30, pad=0.01)
    bar.set_label("Pearson $r$")
    bar.ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}".replace("-", "\u2212")))
    return save_figure(fig, path)


def partial_plot(runs: pd.DataFrame, metric: str, colours: dict, path: Path) -> Path | None:
    """Per architecture with dose-response runs (partial freezing at several depths): mean
    ``metric`` (± SD over seeds) vs trainable."""
    if "freeze" not in runs or metric not in runs or "model" not in runs:
        return None
    used = runs[used_mask(runs) & plottable(runs[metric].to_numpy(float))
                & (runs["params_trainable"].astype(float) > 0).to_numpy()]
    models = sorted(used.loc[used["freeze"].isin(DOSE_RESPONSE), "model"].dropna().unique())
    if not models:
        return None
    data = used[used["model"].isin(models)]
    opts, lrs = _levels(data, "optimizer"), _levels(data, "lr")
    width = _width(len(lrs))
    fig = paper_figure(width, facet_height(len(opts), len(models), width))
    axes = fig.subplots(len(opts), len(lrs), sharex=True, sharey=True, squeeze=False)
    for i, opt in enumerate(opts):
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            facet = data[_facet_mask(data, opt, lr)]
            for model, grp in facet.groupby("model", sort=True):
                agg = grp.groupby(grp["params_trainable"].astype(float))[metric].agg(
                    ["mean", "std"]).sort_index()
                ax.errorbar(agg.index, agg["mean"], yerr=agg["std"].fillna(0), marker="o",
                            markersize=3, capsize=1.5, linewidth=0.9, elinewidth=0.6,
                            color=colours.get(str(model), "0.4"), label=str(model))
            log_count_axis(ax)
            if len(opts) * len(lrs) > 1:
                panel_title(ax, cell_title(opt, lr))
            ax.grid(True, alpha=0.3, which="major")
            if i == len(opts) - 1:
                ax.set_xlabel(TRAINABLE_LABEL)
            if j == 0:
                ax.set_ylabel(f"{metric_label(metric)} (mean \u00b1 SD)")
    handles = [Line2D([], [], color=colours.get(m, "0.4"), marker="o", label=m) for m in models]
    legend_below(fig, handles, width)
    return save_figure(fig, path)


def make_plots(runs: pd.DataFrame, corr: pd.DataFrame | None, metrics: list[str],
               plot_dir: Path, configs: pd.DataFrame | None = None) -> list[Path]:
    """Write every figure that the data supports; return the PNG paths (each has a PDF)."""
    plot_dir.mkdir(parents=True, exist_ok=True)
    colours = model_colours(runs["model"].dropna().astype(str).tolist()
                            if "model" in runs else [])
    out: list[Path | None] = []
    # The style is read when text is made and when the PDF is written: both happen inside.
    with matplotlib.rc_context(PAPER_STYLE):
        for metric in (m for m in DISPLAYED_METRICS if m in metrics):
            out.append(scatter_plot(runs, metric, colours, plot_dir / f"scatter_{metric}.png",
                                    configs))
        if corr is not None:
            out.append(heatmap_plot(corr, metrics, plot_dir / "heatmap_pearson.png"))
        if "test_acc" in metrics:
            out.append(partial_plot(runs, "test_acc", colours,
                                    plot_dir / "partial_test_acc.png"))
    return [p for p in out if p is not None]

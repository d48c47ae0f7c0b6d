"""report.md: the paper's table, the statistics beyond it, findings in words, the plots."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from paramcorr.analysis.collect import MAIN_METRICS, Collection
from paramcorr.analysis.stats import (
    BCA_MAX_N,
    BOOT_MIN_RESAMPLES,
    BOOT_WORK,
    MODEL_METRICS,
    X,
    critical_r,
    format_value,
)

ALPHA = 0.05


@dataclass
class ReportInputs:
    """Everything the report is written from."""

    collection: Collection
    corr: pd.DataFrame
    paper: pd.DataFrame
    partial: pd.DataFrame
    rm: pd.DataFrame
    coefs: pd.DataFrame
    slopes: pd.DataFrame
    seeds: pd.DataFrame
    plots: list[Path]
    csvs: list[str]
    n_boot: int
    seed: int


# --- formatting -------------------------------------------------------------------------

def _isnum(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))


def fr(v: object) -> str:
    """A correlation or coefficient: two decimals, 'n/a' when empty."""
    return f"{float(v):.2f}" if _isnum(v) else "n/a"


def fp(v: object) -> str:
    """A p-value: three decimals, scientific below 0.001."""
    if not _isnum(v):
        return "n/a"
    v = float(v)
    return f"{v:.1e}" if v < 0.001 else f"{v:.3f}"


def fnum(v: object, digits: int = 3) -> str:
    return f"{float(v):.{digits}g}" if _isnum(v) else "n/a"


def fcount(v: float) -> str:
    """A parameter count as 1.2K / 3.4M."""
    if not _isnum(v):
        return "n/a"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.0f}"


def cell_label(optimizer: object, lr: object) -> str:
    """A paper cell in words, e.g. 'adam, lr=0.001'."""
    return f"{optimizer}, lr={format_value('lr', lr)}"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _corr_phrase(row: pd.Series) -> str:
    """'r=0.81 [0.44, 0.95], n=12, p_holm=0.03'."""
    ci = f" [{fr(row['ci_low'])}, {fr(row['ci_high'])}]" if _isnum(row["ci_low"]) else ""
    return f"r={fr(row['r'])}{ci}, n={int(row['n'])}, p_holm={fp(row['p_holm'])}"


# --- sections ---------------------------------------------------------------------------

def _header(inp: ReportInputs) -> list[str]:
    col, runs = inp.collection, inp.collection.runs
    lines = ["# paramcorr analysis: trainable parameters vs accuracy, F1 and generalization", ""]
    lines.append("Sweep directories: " + ", ".join(f"`{d}`" for d in col.sweep_dirs))
    lines.append("")
    why = ", ".join(f"{n} {r}" for r, n in sorted(col.skipped.items()))
    lines += [
        f"- result.json files read: {col.n_files}; valid records: {col.n_records}"
        + (f"; skipped: {col.n_skipped} ({why})" if col.n_skipped else "; skipped: 0")
        + (f"; superseded duplicates dropped: {col.n_superseded}" if col.n_superseded else ""),
        f"- runs used in statistics: {col.n_used} ({col.count('completed')} completed, "
        f"{col.count('diverged')} diverged); failed (listed in runs.csv, not used): "
        f"{col.count('failed')}",
    ]
    for axis, label in (("optimizer", "optimizers"), ("lr", "learning rates"),
                        ("freeze", "freeze strategies"), ("seed", "seeds")):
        if axis in runs and runs[axis].notna().any():
            values = sorted(runs[axis].dropna().unique(), key=lambda v: (str(type(v)), v))
            lines.append(f"- {label}: " + ", ".join(format_value(axis, v) for v in values))
    if "model" in runs:
        used = runs[runs["status"].isin(("completed", "diverged"))]
        rows = []
        for model, grp in runs.groupby("model", sort=True):
            u = used[used["model"] == model]
            trainable = pd.to_numeric(grp["params_trainable"], errors="coerce")
            total = pd.to_numeric(grp.get("params_total", pd.Series(dtype=float)),
                                  errors="coerce")
            rows.append([str(model), fcount(total.max()),
                         f"{fcount(trainable.min())} - {fcount(trainable.max())}",
                         str(len(grp)), str(len(u))])
        lines += ["", "Architectures:", "",
                  md_table(["model", "total params", "trainable params", "runs", "used"], rows)]
    return lines


def _how_to_read(inp: ReportInputs) -> list[str]:
    n_tests = int(inp.corr["p"].notna().sum())
    return [
        "## How to read this", "",
        "Each run fine-tunes one pretrained architecture with one optimizer, learning rate "
        "(lr), freeze strategy and seed. The question is whether runs that train more "
        "parameters reach higher accuracy. The x variable is `log10_trainable`, the base-10 "
        "log of the number of trainable parameters (so +1 means ten times more). "
        "`r` is a correlation across runs in a slice (a *scope*, e.g. all runs with "
        "adam and lr=0.001): +1 means more trainable parameters always go with a higher "
        "score, 0 means no linear/rank association. Brackets hold 95% confidence intervals. "
        "`p` is the chance of an |r| this large if there were no association; because "
        f"{n_tests} correlations are tested, `p_holm` (Holm correction, strict) and `p_bh` "
        "(Benjamini-Hochberg, false-discovery rate) adjust for multiple testing. A result "
        "*survives Holm* when p_holm < 0.05. With few runs per slice only large |r| can "
        "reach significance (see 'Power'). Metrics: `test_acc`/`test_f1` are accuracy and "
        "macro F1 on the held-out test split; `gen_acc`/`gen_f1` the same on the shifted "
        "generalization set; `gap_acc` = train_acc - test_acc (overfitting).",
    ]


def _paper_rows(table: pd.DataFrame, metrics: list[str]) -> list[list[str]]:
    rows = []
    for _, row in table.iterrows():
        cells = [cell_label(row["optimizer"], row["lr"])]
        n_first = row.get(f"{metrics[0]}_n", math.nan) if metrics else math.nan
        cells.append(str(int(n_first)) if _isnum(n_first) else "0")
        for m in metrics:
            r, p, ph = row[f"{m}_r"], row[f"{m}_p"], row[f"{m}_p_holm"]
            text = f"{fr(r)} (p={fp(p)})" if _isnum(r) else "n/a"
            cells.append(f"**{text}**" if _isnum(ph) and ph < ALPHA else text)
        cells.append(fr(row["r_crit"]))
        rows.append(cells)
    return rows


def _paper_section(inp: ReportInputs) -> list[str]:
    metrics = [m for m in MAIN_METRICS if m in inp.collection.metrics]
    lines = ["## The paper's table", "",
             "Pearson r of log10 trainable parameters with each metric, one row per "
             "optimizer x learning rate. **Bold**: survives Holm correction. The last column "
             "is the smallest |r| that could reach p < 0.05 with that many runs.", ""]
    if inp.paper.empty or not metrics:
        return [*lines, "No optimizer x lr cells with usable runs.", ""]
    headers = ["cell", "n", *(f"{m} r (p)" for m in metrics), "min detectable |r|"]
    for strategy, table in inp.paper.groupby("strategy", sort=False):
        if strategy == "pooled":
            lines += ["### Pooled over freeze strategies", "",
                      "The pooled table mixes two things: *frozen vs fine-tuned* (a change of "
                      "strategy, which also changes the trainable count by orders of "
                      "magnitude) and *more parameters* (bigger architectures). A pooled r "
                      "can therefore reflect the strategy rather than parameter count; the "
                      "per-strategy tables below and the within-architecture statistics "
                      "separate the two.", ""]
        else:
            lines += [f"### Within freeze={strategy}", ""]
        lines += [md_table(headers, _paper_rows(table, metrics)), ""]
    return lines


def _findings(inp: ReportInputs) -> list[str]:
    corr, paper = inp.corr, inp.paper
    pear = corr[corr["method"] == "pearson"]
    tested = pear[pear["p"].notna()]
    lines = ["## Findings", ""]
    if tested.empty:
        return [*lines, "- No slice had 3 or more usable runs with varying values: "
                "nothing could be tested.", ""]
    survive = tested[tested["p_holm"] < ALPHA]
    n_all = int(corr["p"].notna().sum())
    lines.append(f"- {len(survive)} of {len(tested)} Pearson correlations survive Holm "
                 f"correction (family: all {n_all} tests in correlations.csv, "
                 "all three methods).")
    main = [m for m in ("test_acc", "gen_acc") if m in inp.collection.metrics]
    pooled = paper[paper["strategy"] == "pooled"] if len(paper) else paper
    by_key = pear.set_index(["scope", "y"])
    for _, row in pooled.iterrows():
        parts = []
        for m in main:
            if (row["scope"], m) in by_key.index:
                hit = by_key.loc[(row["scope"], m)]
                if _isnum(hit["r"]):
                    parts.append(f"{m} {_corr_phrase(hit)}")
                else:
                    parts.append(f"{m} not estimable (n={int(hit['n'])})")
        if parts:
            lines.append(f"- {cell_label(row['optimizer'], row['lr'])}: " + "; ".join(parts))
    main_survive = survive[survive["y"].isin(MAIN_METRICS)]
    if len(main_survive):
        names = [f"{r.y} in `{r.scope}` (r={fr(r.r)}, n={int(r.n)})"
                 for r in main_survive.head(12).itertuples()]
        more = len(main_survive) - len(names)
        lines.append("- Surviving Holm for the paper's metrics (Pearson): " + ", ".join(names)
                     + (f", and {more} more (correlations.csv)" if more > 0 else "") + ".")
    else:
        lines.append("- No Pearson correlation of the paper's metrics (test/gen accuracy and "
                     "F1) survives Holm correction in any slice.")
    others = sorted(set(survive["y"]) - set(MAIN_METRICS))
    if others:
        lines.append(f"- Other metrics with Holm survivors: {', '.join(others)} "
                     "(correlations.csv).")
    lines += _strategy_finding(pear)
    lines += _rm_finding(inp.rm)
    lines += _regression_finding(inp.coefs)
    lines += _seed_finding(inp.seeds)
    cell_n = pear[pear["scope"].str.contains("lr=") & ~pear["scope"].str.contains("freeze=")
                  & (pear["y"] == "test_acc")]["n"]
    if len(cell_n) and cell_n.max() >= 3:
        n = int(cell_n.median())
        lines.append(f"- Power: with a median of n={n} runs per optimizer x lr cell, only "
                     f"|r| >= {fr(critical_r(n))} can reach p < 0.05 (before correction).")
    return [*lines, ""]


def _strategy_finding(pear: pd.DataFrame) -> list[str]:
    sel = pear[(pear["y"] == "test_acc") & pear["r"].notna()]
    pooled = sel[sel["scope"].str.contains("lr=") & ~sel["scope"].str.contains("freeze=")]
    within = sel[sel["scope"].str.contains("lr=") & sel["scope"].str.contains("freeze=")]
    strategies = {part for scope in within["scope"] for part in scope.split(",")
                  if part.startswith("freeze=")}
    if pooled.empty or len(strategies) < 2:  # one strategy: pooled and within coincide
        return []
    return [f"- test_acc: pooled over strategies r ranges {fr(pooled['r'].min())} to "
            f"{fr(pooled['r'].max())} across cells; within a single strategy it ranges "
            f"{fr(within['r'].min())} to {fr(within['r'].max())}."]


def _rm_finding(rm: pd.DataFrame) -> list[str]:
    if rm.empty or not rm["applicable"].any():
        return ["- Within-architecture association: not applicable (no architecture was run "
                "with two or more trainable-parameter counts)."]
    hit = rm[(rm["scope"] == "all") & (rm["y"] == "test_acc") & rm["applicable"]]
    if hit.empty:
        hit = rm[rm["applicable"]].head(1)
    row = hit.iloc[0]
    return [f"- Within an architecture (`{row['scope']}`, {row['y']}, rmcorr): "
            f"r_rm={fr(row['r_rm'])}, p={fp(row['p'])}, n={int(row['n'])} runs of "
            f"{int(row['n_models'])} architectures; {fnum(row['slope'])} per tenfold more "
            f"trainable parameters [{fnum(row['slope_ci_low'])}, {fnum(row['slope_ci_high'])}]."]


def _regression_finding(coefs: pd.DataFrame) -> list[str]:
    if coefs.empty:
        return []
    out = []
    for metric, grp in coefs.groupby("y", sort=False):
        p = grp["p_same_slope"].iloc[0]
        if _isnum(p):
            verdict = "differs" if p < ALPHA else "does not detectably differ"
            out.append(f"{metric} {verdict} (F-test p={fp(p)})")
    if not out:
        return []
    return ["- Slope on log10 trainable across optimizer x lr cells (regression): "
            + "; ".join(out) + "."]


def _seed_finding(seeds: pd.DataFrame) -> list[str]:
    if seeds.empty or "test_acc_sd" not in seeds:
        return []
    sd = seeds["test_acc_sd"].dropna()
    if sd.empty:
        return []
    return [f"- Seed noise: across {len(seeds)} configurations with repeated seeds, the "
            f"seed-to-seed SD of test_acc has median {fnum(sd.median())} "
            f"(max {fnum(sd.max())})."]


def _within_architecture(inp: ReportInputs) -> list[str]:
    lines = ["### Within architecture: repeated-measures and partial correlation", "",
             "Repeated-measures correlation (rmcorr; architecture = subject): ANCOVA "
             "`y ~ C(model) + log10_trainable` (statsmodels OLS), r_rm = sign(b) * "
             "sqrt(SS_x / (SS_x + SS_resid)), p from the type-II ANOVA table. It asks: within "
             "one architecture, do runs with more trainable parameters (partial freezing, or "
             "frozen vs full fine-tuning) score higher? `slope` is the change in the metric "
             "per tenfold more trainable parameters. Controlling for architecture as a factor "
             "gives the same partial r by construction (partial_correlations.csv, control="
             "architecture, from the OLS t-value: r = t / sqrt(t^2 + df)).", ""]
    rm = inp.rm
    if rm.empty or not rm["applicable"].any():
        lines += ["**Not applicable** for these runs: in every slice each architecture has "
                  "a single trainable-parameter count, so trainable parameters are a function "
                  "of the architecture and cannot be separated from it. Run partial freezing "
                  "(`freeze=partial` with several `freeze.stages`) or both `freeze=base` and "
                  "`freeze=none` to estimate it.", ""]
    else:
        keep = rm[rm["applicable"] & rm["y"].isin(["test_acc", "gen_acc"])
                  & ~(rm["scope"].str.contains("lr=") & rm["scope"].str.contains("freeze="))]
        rows = [[f"`{r.scope}`", r.y, str(int(r.n)), str(int(r.n_models)), fr(r.r_rm), fp(r.p),
                 f"{fnum(r.slope)} [{fnum(r.slope_ci_low)}, {fnum(r.slope_ci_high)}]"]
                for r in keep.itertuples()]
        lines += [md_table(["scope", "metric", "n", "models", "r_rm", "p",
                            "slope per decade [95% CI]"], rows), ""]
        na = rm[~rm["applicable"]]["scope"].unique()
        if len(na):
            lines += [f"Not applicable in {len(na)} scopes where each architecture has one "
                      "trainable count (e.g. " + ", ".join(f"`{s}`" for s in na[:3]) + "). "
                      "All rows: rm_correlations.csv.", ""]
    part = inp.partial
    if not part.empty:
        size = part[(part["control"] == "architecture size") & part["applicable"]
                    & part["y"].isin(MAIN_METRICS)
                    & ~(part["scope"].str.contains("lr=") & part["scope"].str.contains("freeze="))]
        if len(size):
            lines += ["Partial correlation controlling for architecture *size* (log10 total "
                      "parameters as a covariate; OLS t-value of log10_trainable): does the "
                      "trainable count matter beyond how big the network is?", ""]
            wide = size.pivot(index="scope", columns="y", values="r").reindex(
                index=list(dict.fromkeys(size["scope"])))
            pw = size.pivot(index="scope", columns="y", values="p").reindex(index=wide.index)
            metrics = [m for m in MAIN_METRICS if m in wide.columns]
            rows = [[f"`{s}`", *(f"{fr(wide.at[s, m])} (p={fp(pw.at[s, m])})" for m in metrics)]
                    for s in wide.index]
            lines += [md_table(["scope", *(f"{m} partial r" for m in metrics)], rows), ""]
    return lines


def _regression_section(inp: ReportInputs) -> list[str]:
    lines = ["### Regression with optimizer x lr interaction", "",
             "OLS `y ~ log10_trainable * C(optimizer) * C(lr)` per metric (statsmodels; all "
             "used runs). Below: the slope of each metric on log10 trainable parameters in "
             "each optimizer x lr cell (change per tenfold more trainable parameters, 95% "
             "CI), from the equivalent cell-means fit; the F-test asks whether the slope is "
             "the same in every cell. Full coefficient table: regression.csv.", ""]
    if inp.slopes.empty:
        return [*lines, "Not estimable: trainable parameters do not vary within any cell.", ""]
    metrics = list(dict.fromkeys(inp.slopes["y"]))
    cells = inp.slopes.drop_duplicates(["optimizer", "lr"])[["optimizer", "lr"]]
    rows = []
    for c in cells.itertuples():
        row = [cell_label(c.optimizer, c.lr)]
        for m in metrics:
            hit = inp.slopes[(inp.slopes["y"] == m) & (inp.slopes["optimizer"] == c.optimizer)
                             & (inp.slopes["lr"] == c.lr)]
            row.append("n/a" if hit.empty else
                       f"{fnum(hit['slope'].iloc[0])} [{fnum(hit['ci_low'].iloc[0])}, "
                       f"{fnum(hit['ci_high'].iloc[0])}]")
        rows.append(row)
    lines += [md_table(["cell", *metrics], rows), ""]
    if not inp.coefs.empty:
        fits = inp.coefs.groupby("y", sort=False).first()
        rows = [[m, str(int(f.n)), fnum(f.r2), fp(f.p_same_slope)] for m, f in fits.iterrows()]
        lines += [md_table(["metric", "n", "R^2", "p (same slope in every cell)"], rows), ""]
    return lines


def _seed_section(inp: ReportInputs) -> list[str]:
    lines = ["### Seed spread", "",
             "Runs that differ only in the seed: mean, SD and n per configuration "
             "(seed_spread.csv). Summary of the SDs:", ""]
    seeds = inp.seeds
    if seeds.empty:
        return [*lines[:2], "No configuration was run with more than one seed.", ""]
    rows = []
    for m in MODEL_METRICS:
        if f"{m}_sd" not in seeds:
            continue
        sd, mean = seeds[f"{m}_sd"].dropna(), seeds[f"{m}_mean"].dropna()
        rows.append([m, str(len(sd)), fnum(sd.median()), fnum(sd.max()), fnum(mean.std())])
    lines += [md_table(["metric", "configs", "median seed SD", "max seed SD",
                        "SD of config means"], rows), ""]
    return lines


def _power_section(inp: ReportInputs) -> list[str]:
    pear = inp.corr[(inp.corr["method"] == "pearson") & (inp.corr["n"] >= 3)]
    lines = ["### Power", "",
             "The smallest |r| that reaches two-sided p < 0.05 with n runs (critical r of "
             "the t test, df = n - 2, before any multiple-testing correction):", ""]
    if pear.empty:
        return [*lines, "No slice has 3 or more runs.", ""]
    groups = pear.groupby("n")["scope"].nunique().sort_index()
    rows = [[str(int(n)), str(int(k)), fr(critical_r(int(n)))] for n, k in groups.items()]
    if len(rows) > 15:
        rows = rows[:7] + [["...", "...", "..."]] + rows[-7:]
    return [*lines, md_table(["n", "slices", "min detectable |r|"], rows), ""]


def _method_section(inp: ReportInputs) -> list[str]:
    boot = inp.corr[inp.corr["n_resamples"] > 0]
    lines = ["### Methods", "",
             "- Pearson r and p: `scipy.stats.pearsonr`; 95% CI by Fisher z "
             "(`confidence_interval`).",
             "- Spearman and Kendall (tau-b) r and p: `scipy.stats.spearmanr` / `kendalltau`; "
             f"95% CI: `scipy.stats.bootstrap`, pairs resampled, seed {inp.seed}, BCa for "
             f"n <= {BCA_MAX_N} runs, percentile above.",
             "- Holm and Benjamini-Hochberg: `statsmodels.stats.multitest.multipletests` over "
             "every row of correlations.csv that has a p-value.",
             f"- A slice uses completed and diverged runs with a finite {X} and metric; failed "
             "runs are never used. Under 3 runs or a constant variable: empty statistics."]
    if inp.n_boot <= 0:
        lines.append("- Spearman and Kendall CIs were not computed (--n-boot 0).")
    if len(boot):
        used = boot["n_resamples"]
        full = boot[used >= inp.n_boot]
        cut = boot[used < inp.n_boot]
        text = (f"- Bootstrap resamples: {inp.n_boot} requested; all {len(full)} bootstrap "
                "CIs used the full count.")
        if len(cut):
            text = f"- Bootstrap resamples: {inp.n_boot} requested"
            if len(full):
                text += f"; used in full for {len(full)} CIs (slices of n <= " \
                        f"{int(full['n'].max())})"
            text += (f"; {int(cut['n_resamples'].min())}-{int(cut['n_resamples'].max())} for "
                     f"the {len(cut)} CIs of larger slices (n={int(cut['n'].min())}-"
                     f"{int(cut['n'].max())}): n x resamples is capped at {BOOT_WORK:,} "
                     f"(never under {BOOT_MIN_RESAMPLES} resamples) to bound run time. Large "
                     "slices have narrow CIs, so the Monte-Carlo error of the endpoints stays "
                     "small (about 0.27 bootstrap SDs at 100 resamples).")
        lines.append(text)
        dropped = boot["ci_method"].str.contains("dropped").sum()
        none = boot["ci_method"].str.startswith("none").sum()
        if dropped or none:
            lines.append(f"- Resamples with a constant variable have no rank correlation: "
                         f"{dropped} CIs were computed from the defined resamples "
                         "(percentile); "
                         f"{none} left empty because most resamples were undefined.")
    return [*lines, ""]


def _plots_section(inp: ReportInputs, out_dir: Path) -> list[str]:
    lines = ["## Plots", ""]
    captions = {
        "scatter": "log10 trainable parameters vs {m}; rows optimizer, columns lr; colour = "
                   "architecture, marker = freeze strategy, dashed = OLS fit per panel.",
        "heatmap": "Pearson r per metric (rows) and optimizer x lr cell (columns), pooled "
                   "and within each freeze strategy; * = Holm p < 0.05.",
        "partial": "Partial freezing: test_acc vs trainable parameters within each "
                   "architecture.",
    }
    existing = [p for p in inp.plots if Path(p).exists()]
    if not existing:
        return [*lines, "No plots: no usable runs.", ""]
    for path in existing:
        rel = Path(path).relative_to(out_dir).as_posix()
        stem = Path(path).stem
        kind = stem.split("_")[0]
        caption = captions.get(kind, stem).format(m=stem.partition("_")[2])
        lines += [f"![{stem}]({rel})", "", f"*{caption}*", ""]
    return lines


def _files_section(inp: ReportInputs) -> list[str]:
    return ["## Files", "", *(f"- `{name}`" for name in inp.csvs), ""]


def render(inp: ReportInputs, out_dir: Path) -> str:
    """The whole report as markdown."""
    lines = _header(inp) + [""] + _how_to_read(inp) + [""] + _findings(inp)
    lines += _paper_section(inp)
    lines += ["## Beyond the paper", ""]
    lines += _within_architecture(inp) + _regression_section(inp) + _seed_section(inp)
    lines += _power_section(inp) + _method_section(inp)
    lines += _plots_section(inp, out_dir) + _files_section(inp)
    return "\n".join(lines).rstrip() + "\n"


def write_report(inp: ReportInputs, out_dir: Path) -> Path:
    path = out_dir / "report.md"
    path.write_text(render(inp, out_dir), encoding="utf-8")
    return path

"""report.md: a three-line short answer, the study's claims and verdicts, then the paper's
table, the statistics beyond it, findings in words generated from the numbers, and the plots.

Formatting only: the tables come from the analysis driver, and every count or aggregate the
prose states from :mod:`paramcorr.analysis.summaries` (``ReportInputs.numbers``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from paramcorr.analysis.claims import FAMILIES
from paramcorr.analysis.claims_text import claim_sentences, claims_section
from paramcorr.analysis.collect import Collection
from paramcorr.analysis.escape import md_code, md_text

# The formatters are re-exported: report.fr and friends were read here before formatting.py.
from paramcorr.analysis.formatting import (  # noqa: F401
    cell_label,
    fcount,
    fnum,
    fp,
    fpct,
    fr,
    md_table,
    n_phrase,
)
from paramcorr.analysis.power import REFERENCE_F2
from paramcorr.analysis.rank_stats import BCA_MAX_N, BOOT_MIN_RESAMPLES, BOOT_WORK
from paramcorr.analysis.summaries import HEADER_AXES, ReportNumbers, config_rows
from paramcorr.analysis.vocab import (
    ALPHA,
    CELL_AXES,
    CONFIDENCE,
    DISPLAYED_METRICS,
    EXPLORATORY,
    POOLED,
    X,
    format_value,
    is_cell,
    is_number,
)


@dataclass
class ReportInputs:
    """Everything the report is written from (rm / partial / coefs / slopes carry a
    ``unit`` column; the report reads their configuration rows)."""

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
    # The counts and aggregates the prose states (summaries.summarize, computed once).
    numbers: ReportNumbers
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    configs: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The strategies section, rendered by paramcorr.analysis.strategy_stats.
    strategies: list[str] = field(default_factory=list)


def _corr_phrase(row: pd.Series) -> str:
    """'r=0.81 [0.44, 0.95], 12 configurations (36 runs), p_holm=0.03'."""
    ci = f" [{fr(row['ci_low'])}, {fr(row['ci_high'])}]" if is_number(row["ci_low"]) else ""
    return f"r={fr(row['r'])}{ci}, {n_phrase(row['n'], row['n_runs'])}, " \
           f"p_holm={fp(row['p_holm'])}"


# --- sections ---------------------------------------------------------------------------

def _claims_section(inp: ReportInputs) -> list[str]:
    return claims_section(inp.claims, inp.numbers.n_configs, inp.numbers.n_config_runs)


def _short_answer(inp: ReportInputs) -> list[str]:
    """Three lines before anything else: each claim's verdict and what drove it (the same
    generated sentences the claims section gives in words)."""
    if inp.claims.empty:
        return []
    return ["## Short answer", "", *claim_sentences(inp.claims), ""]


def _pooled_budgets(numbers: ReportNumbers) -> list[str]:
    """A line naming the epoch budgets when runs with different ones are pooled."""
    column, budgets = numbers.budget_column, numbers.budgets
    if len(budgets) < 2:
        return []
    return [f"- epoch budgets pooled in this analysis: {', '.join(map(str, budgets))} "
            f"(`{column}` in runs.csv; analyse them apart to compare like with like)"]


def _header(inp: ReportInputs) -> list[str]:
    col, numbers = inp.collection, inp.numbers
    lines = ["## The sweep", "",
             "Sweep directories: " + ", ".join(md_code(d) for d in col.sweep_dirs), ""]
    why = ", ".join(f"{n} {r}" for r, n in sorted(col.skipped.items()))
    lines += [
        f"- result.json files read: {col.n_files}; valid records: {col.n_records}"
        + (f"; skipped: {col.n_skipped} ({why})" if col.n_skipped else "; skipped: 0")
        + (f"; superseded duplicates dropped: {col.n_superseded}" if col.n_superseded else ""),
        f"- runs used in statistics: {col.n_used} ({col.count('completed')} completed, "
        f"{col.count('diverged')} diverged); failed (listed in runs.csv, not used): "
        f"{col.count('failed')}",
        f"- configurations (run axes except the seed) with usable runs: {len(inp.configs)}",
        *_pooled_budgets(numbers),
    ]
    for axis, label in HEADER_AXES:
        if axis in numbers.axis_values:
            lines.append(f"- {label}: " + ", ".join(md_text(format_value(axis, v))
                                                   for v in numbers.axis_values[axis]))
    if "model" in col.runs:
        rows = [[md_text(a.model), fcount(a.total),
                 f"{fcount(a.trainable_min)} - {fcount(a.trainable_max)}", str(a.runs),
                 str(a.used)] for a in numbers.architectures.itertuples()]
        lines += ["", "Architectures:", "",
                  md_table(["model", "total params", "trainable params", "runs", "used"], rows)]
    return [*lines, ""]


def _claim_families(sizes: dict[str, int]) -> str:
    """Which family each claim's tests use, and the combined rate of the confirmatory
    tables (each holds its own 5%; together they do not)."""
    confirm = [k for k in sizes if k != EXPLORATORY]
    text = "; the claims use: " + "; ".join(f"{k} — {v}" for k, v in FAMILIES.items())
    if len(confirm) > 1:
        k = len(confirm)
        text += (f". Each of the {k} confirmatory tables holds its familywise error rate at "
                 f"{ALPHA:.0%}; the chance that some table rejects a true null is at most "
                 f"{min(1.0, k * ALPHA):.0%} (Bonferroni bound), "
                 f"{1 - (1 - ALPHA) ** k:.0%} were the tables independent")
    return text


def _how_to_read(inp: ReportInputs) -> list[str]:
    sizes = inp.numbers.family_sizes
    fam = "; ".join(f"{md_code(k)}: {v} tests" for k, v in sizes.items()) + _claim_families(sizes)
    return [
        "## How to read this", "",
        "Each run fine-tunes one pretrained architecture with one optimizer, learning rate "
        "(lr), freeze strategy and seed. The question is whether configurations that train "
        f"more parameters reach higher accuracy. The x variable is `{X}`, the "
        "base-10 log of the number of trainable parameters (so +1 means ten times more). "
        "`r` is a correlation in a slice (a *scope*, e.g. adam with lr=0.001): +1 means more "
        "trainable parameters always go with a higher score, 0 no linear/rank association. "
        f"Brackets hold {CONFIDENCE:.0%} confidence intervals. The **unit** is the "
        "configuration (all run "
        "axes except the seed, scores averaged over seeds); correlations.csv also keeps "
        "run-level rows (`unit=run`), which are exploratory only because seeds of a "
        "configuration are not independent. `p` is the chance of an |r| this large with no "
        "association; `p_holm` (Holm, strict) and `p_bh` (Benjamini-Hochberg) correct it "
        "within a declared **family**: the paper table on configurations is confirmatory "
        "(pooled over strategies, and within each strategy, one family each), everything "
        f"else is exploratory. Family sizes: {fam}. A result *survives Holm* when "
        f"p_holm < {ALPHA}. Metrics: `test_acc`/`test_f1` are accuracy and macro F1 on the "
        "held-out test split; `gen_acc`/`gen_f1` the same on the shifted generalization set; "
        "`gap_acc` = train_acc - test_acc (overfitting).", ""]


def _paper_rows(table: pd.DataFrame, metrics: list[str]) -> list[list[str]]:
    rows = []
    for _, row in table.iterrows():
        cells = [cell_label(row["optimizer"], row["lr"]),
                 n_phrase(row["n_configs"], row["n_runs"]).replace(" configurations", "")
                 .replace(" runs", ""), str(int(row["n_diverged"]))]
        for m in metrics:
            r, p, ph = row[f"{m}_r"], row[f"{m}_p"], row[f"{m}_p_holm"]
            text = f"{fr(r)} (p={fp(p)})" if is_number(r) else "n/a"
            cells.append(f"**{text}**" if is_number(ph) and ph < ALPHA else text)
        cells += [fr(row["critical_r"]), fr(row["r80"]), fr(row["r80_holm"])]
        rows.append(cells)
    return rows


def _paper_section(inp: ReportInputs) -> list[str]:
    metrics = [m for m in DISPLAYED_METRICS if m in inp.collection.metrics]
    lines = ["## The paper's table", "",
             "Pearson r of log10 trainable parameters with each metric over configurations, "
             "one row per optimizer x learning rate; `n` = configurations (runs), `div` = "
             "diverged runs among them. **Bold**: survives Holm within the table's "
             f"confirmatory family. `critical |r|`: the |r| that just reaches p < {ALPHA} (a true "
             "r of that size is found only about half the time); `|r| 80%`: the true |r| "
             f"detected with 80% power at alpha {ALPHA}; `|r| 80% Holm`: the same at the family's "
             "strictest Holm step (alpha / m).", ""]
    if inp.paper.empty or not metrics:
        return [*lines, "No optimizer x lr cells with usable runs.", ""]
    headers = ["cell", "n (runs)", "div", *(f"{m} r (p)" for m in metrics), "critical |r|",
               "|r| 80%", "|r| 80% Holm"]
    sizes = inp.numbers.family_sizes
    for strategy, table in inp.paper.groupby("strategy", sort=False):
        family = table["family"].iloc[0]
        size = sizes.get(family, 0) if isinstance(family, str) else 0
        if strategy == "pooled":
            lines += ["### Pooled over freeze strategies", "",
                      f"Family `{POOLED}`: {size} tests. The pooled table mixes two things: "
                      "*frozen vs fine-tuned* (a change of strategy, which also changes the "
                      "trainable count by orders of magnitude) and *more parameters* (bigger "
                      "architectures). The table after it separates the two.", ""]
        else:
            lines += [f"### Within freeze={md_text(strategy)}", "",
                      f"Family {md_code(family)}: {size} tests.",
                      ""]
        lines += [md_table(headers, _paper_rows(table, metrics)), ""]
        if strategy == "pooled":
            lines += _strategy_table(table, metrics) + _sensitivity_table(table, metrics)
    return lines


def _strategy_table(table: pd.DataFrame, metrics: list[str]) -> list[str]:
    lines = ["#### Strategy or count?", "",
             "Beside each pooled r: `r strategy`, Pearson r of a fine-tuned indicator (1 unless "
             "freeze=base) with the metric; `partial given strategy`, the partial r of log10 "
             "trainable given the strategy; `partial given arch`, given the architecture (OLS t "
             "values, configurations). A pooled r that vanishes given the strategy measures "
             "frozen vs fine-tuned, not the parameter count.", ""]
    rows = []
    for _, row in table.iterrows():
        for m in metrics:
            rows.append([cell_label(row["optimizer"], row["lr"]), md_text(m), fr(row[f"{m}_r"]),
                         fr(row[f"{m}_r_strategy"]), fr(row[f"{m}_partial_strategy"]),
                         fr(row[f"{m}_partial_architecture"])])
    return [*lines, md_table(["cell", "metric", "pooled r", "r strategy", "partial given strategy",
                              "partial given arch"], rows), ""]


def _sensitivity_table(table: pd.DataFrame, metrics: list[str]) -> list[str]:
    if not (table["n_diverged"] > 0).any():
        return ["No run diverged, so the confirmatory results need no sensitivity check.", ""]
    rows = []
    for _, row in table.iterrows():
        rows.append([cell_label(row["optimizer"], row["lr"]), str(int(row["n_diverged"])),
                     *(f"{fr(row[f'{m}_r'])} -> {fr(row[f'{m}_r_completed'])} "
                       f"(p={fp(row[f'{m}_p_completed'])})" for m in metrics)])
    return ["#### Sensitivity: without diverged runs", "",
            "The same Pearson r on configurations rebuilt from completed runs only "
            "(diverged runs dropped; a configuration with no completed run drops out).", "",
            md_table(["cell", "diverged runs", *(f"{m}: all -> completed" for m in metrics)],
                     rows), ""]


def _findings(inp: ReportInputs) -> list[str]:
    numbers = inp.numbers
    lines = ["## Findings", "", "Generated from the numbers above and below; each claim's "
             "sentence follows its verdict.", ""]
    pooled = numbers.pooled
    if pooled.empty or pooled["p"].notna().sum() == 0:
        return [*lines, "- No configuration slice had 3 or more usable points with varying "
                "values: nothing could be tested.", ""]
    if len(inp.claims):
        lines.append("- The study's claims: their verdicts, in words, open this report.")
    sizes = numbers.family_sizes
    for family, k in numbers.survivors.items():
        lines.append(f"- {md_code(family)}: {k} of {sizes[family]} confirmatory tests survive "
                     "Holm.")
    if numbers.exploratory_slices:
        lines.append(f"- Exploratory (Pearson, configurations): {numbers.exploratory_bh} of "
                     f"{numbers.exploratory_slices} slices "
                     f"have BH-adjusted p < {ALPHA} (family of "
                     f"{sizes.get(EXPLORATORY, 0)} tests, all methods and units).")
    paper = inp.paper[inp.paper["strategy"] == "pooled"] if len(inp.paper) else inp.paper
    for _, row in paper.iterrows():
        parts = []
        for m in ("test_acc", "gen_acc"):
            if f"{m}_r" in row and is_number(row[f"{m}_r"]):
                hit = pooled[(pooled["scope"] == row["scope"]) & (pooled["y"] == m)].iloc[0]
                parts.append(f"{m} {_corr_phrase(hit)}")
        if parts:
            lines.append(f"- {cell_label(row['optimizer'], row['lr'])}: " + "; ".join(parts))
    lines += _strategy_finding(inp.paper)
    lines += _divergence_finding(inp.divergence, inp.paper)
    lines += _rm_finding(numbers)
    lines += _regression_finding(inp.coefs)
    lines += _seed_finding(inp.seeds, numbers.seed_summary)
    cells = inp.paper[inp.paper["strategy"] == "pooled"] if len(inp.paper) else inp.paper
    if len(cells):
        row = cells.iloc[len(cells) // 2]
        lines.append(f"- Power: with {n_phrase(row['n_configs'], row['n_runs'])} per cell, "
                     f"|r| >= {fr(row['critical_r'])} reaches p < {ALPHA}, a true |r| of "
                     f"{fr(row['r80'])} is found with 80% power, and {fr(row['r80_holm'])} at "
                     "the confirmatory Holm threshold.")
    return [*lines, ""]


def _strategy_finding(paper: pd.DataFrame) -> list[str]:
    if paper.empty or "test_acc_r_strategy" not in paper:
        return []
    pooled = paper[(paper["strategy"] == "pooled") & paper["test_acc_r_strategy"].notna()]
    if pooled.empty:
        return []
    r, z = pooled["test_acc_r"], pooled["test_acc_r_strategy"]
    part = pooled["test_acc_partial_strategy"]
    return [f"- Strategy or count (test_acc, pooled cells): the fine-tuned indicator alone "
            f"correlates {fr(z.min())} to {fr(z.max())} with test accuracy, log10 trainable "
            f"{fr(r.min())} to {fr(r.max())}; given the strategy, the partial r of log10 "
            f"trainable is {fr(part.min())} to {fr(part.max())}."]


def _divergence_finding(div: pd.DataFrame, paper: pd.DataFrame) -> list[str]:
    if div.empty:
        return []
    total = div[div["scope"] == "all"]
    if total.empty or not total["n_diverged"].iloc[0]:
        return ["- Divergence: no usable run diverged."]
    t = total.iloc[0]
    ci = f" [{fr(t['ci_low'])}, {fr(t['ci_high'])}]" if is_number(t["ci_low"]) else ""
    cells = div[div["scope"] != "all"]
    worst = cells.sort_values("rate", ascending=False).iloc[0] if len(cells) else None
    return [f"- Divergence: {int(t['n_diverged'])} of {int(t['n_runs'])} runs diverged "
            f"({fpct(t['rate'])})"
            + (f", most in {md_code(worst['scope'])} ({fpct(worst['rate'])})" if worst is not None
               else "")
            + f"; across configurations the diverged share correlates r = {fr(t['r'])}{ci} "
              "with log10 trainable. Diverged runs stay in the statistics (their collapse is "
              "an outcome); the sensitivity table shows the confirmatory r without them."]


def _rm_finding(numbers: ReportNumbers) -> list[str]:
    signs = numbers.rm_signs
    if not signs.n_cells:
        return ["- Within-architecture association: not applicable (no architecture was run "
                "with two or more trainable-parameter counts in a cell)."]
    text = (f"- Within an architecture (rmcorr per optimizer x lr cell, test_acc, "
            f"configurations): the slope is positive in {signs.positive} of {signs.n_cells} "
            f"cells ({signs.sig_positive} with p < {ALPHA}) and negative in {signs.negative} "
            f"({signs.sig_negative} with p < {ALPHA})")
    if signs.positive and signs.negative:
        text += "; the cells disagree in sign, so no pooled within-architecture slope is given."
    else:
        text += f"; per-cell r_rm ranges {fr(signs.r_min)} to {fr(signs.r_max)}."
    return [text]


def _regression_finding(coefs: pd.DataFrame) -> list[str]:
    coefs = config_rows(coefs)
    if coefs.empty:
        return []
    out = []
    for metric, grp in coefs.groupby("y", sort=False):
        p, power = grp["p_same_slope"].iloc[0], grp["f_power_medium"].iloc[0]
        if is_number(p):
            if p < ALPHA:
                out.append(f"{metric}: the slopes differ between cells (F-test p={fp(p)})")
            else:
                out.append(f"{metric}: no detectable difference between cells (F-test "
                           f"p={fp(p)}; power against a medium difference, f^2 = "
                           f"{REFERENCE_F2}: {fpct(power)})")
    if not out:
        return []
    return ["- Slope on log10 trainable across optimizer x lr cells (regression on "
            "configurations): " + "; ".join(out) + "."]


def _seed_finding(seeds: pd.DataFrame, summary: pd.DataFrame) -> list[str]:
    hit = summary[summary["metric"] == "test_acc"] if len(summary) else summary
    if hit.empty or not hit["configs"].iloc[0]:
        return []
    row = hit.iloc[0]
    return [f"- Seed noise: across {len(seeds)} configurations with repeated seeds, the "
            f"seed-to-seed SD of test_acc has median {fnum(row['median_sd'])} "
            f"(max {fnum(row['max_sd'])})."]


def _within_architecture(inp: ReportInputs) -> list[str]:
    lines = ["### Within architecture: repeated-measures and partial correlation", "",
             "Repeated-measures correlation (rmcorr; architecture = subject) on configurations, "
             "one per optimizer x lr cell (cells are never pooled: their slopes may differ in "
             f"sign): ANCOVA `y ~ C(model) + {X}` (statsmodels OLS), r_rm = sign(b) "
             "* sqrt(SS_x / (SS_x + SS_resid)), p from the type-II ANOVA table. It asks: within "
             "one architecture, do configurations with more trainable parameters (partial "
             "freezing, or frozen vs full fine-tuning) score higher? `slope` is the change in "
             "the metric per tenfold more trainable parameters. Controlling for architecture "
             "as a factor gives the same partial r by construction (partial_correlations.csv). "
             "Run-level rows of both are in the CSVs (`unit=run`), exploratory.", ""]
    rm = config_rows(inp.rm)
    if rm.empty or not rm["applicable"].any():
        lines += ["**Not applicable** for these runs: in every slice each architecture has "
                  "a single trainable-parameter count, so trainable parameters are a function "
                  "of the architecture and cannot be separated from it. Run partial freezing "
                  "(`freeze=partial` with several `freeze.stages`) or both `freeze=base` and "
                  "`freeze=none` to estimate it.", ""]
    else:
        keep = inp.numbers.rm_cells
        keep = keep[keep["y"].isin(["test_acc", "gen_acc"])]
        rows = [[cell_label(r.optimizer, r.lr), md_text(r.y), str(int(r.n)), str(int(r.n_models)),
                 fr(r.r_rm), fp(r.p),
                 f"{fnum(r.slope)} [{fnum(r.slope_ci_low)}, {fnum(r.slope_ci_high)}]"]
                for r in keep.itertuples()]
        if rows:
            lines += [md_table(["cell", "metric", "configurations", "models", "r_rm", "p",
                                f"slope per decade [{CONFIDENCE:.0%} CI]"], rows), ""]
        na = rm[~rm["applicable"]]["scope"].unique()
        if len(na):
            lines += [f"Not applicable in {len(na)} scopes where each architecture has one "
                      "trainable count (e.g. " + ", ".join(md_code(s) for s in na[:3]) + "). "
                      "All rows: rm_correlations.csv.", ""]
    part = config_rows(inp.partial)
    if not part.empty:
        size = part[(part["control"] == "architecture size") & part["applicable"]
                    & part["y"].isin(DISPLAYED_METRICS) & ~(is_cell(part) & part["freeze"].notna())]
        if len(size):
            lines += ["Partial correlation controlling for architecture *size* (log10 total "
                      f"parameters as a covariate; OLS t-value of {X}; "
                      "configurations): does the trainable count matter beyond how big the "
                      "network is?", ""]
            wide = size.pivot(index="scope", columns="y", values="r").reindex(
                index=list(dict.fromkeys(size["scope"])))
            pw = size.pivot(index="scope", columns="y", values="p").reindex(index=wide.index)
            metrics = [m for m in DISPLAYED_METRICS if m in wide.columns]
            rows = [[md_code(s), *(f"{fr(wide.at[s, m])} (p={fp(pw.at[s, m])})" for m in metrics)]
                    for s in wide.index]
            lines += [md_table(["scope", *(f"{m} partial r" for m in metrics)], rows), ""]
    return lines


def _regression_section(inp: ReportInputs) -> list[str]:
    lines = ["### Regression with optimizer x lr interaction", "",
             f"OLS `y ~ {X} * C(optimizer) * C(lr)` per metric (statsmodels) on "
             "configurations. Below: the slope of each metric on log10 trainable parameters "
             "in each optimizer x lr cell (change per tenfold more trainable parameters, "
             f"{CONFIDENCE:.0%} "
             "CI), from the equivalent cell-means fit; the F-test asks whether the slope is "
             "the same in every cell, and its power says how large a difference it could "
             f"see (Cohen's f^2 = {REFERENCE_F2}). Full coefficient table: regression.csv "
             "(both units).", ""]
    slopes, coefs = config_rows(inp.slopes), config_rows(inp.coefs)
    if slopes.empty:
        return [*lines, "Not estimable: trainable parameters do not vary within any cell.", ""]
    metrics = list(dict.fromkeys(slopes["y"]))
    cells = slopes.drop_duplicates(list(CELL_AXES))[list(CELL_AXES)]
    rows = []
    for c in cells.itertuples():
        row = [cell_label(c.optimizer, c.lr)]
        for m in metrics:
            hit = slopes[(slopes["y"] == m) & (slopes["optimizer"] == c.optimizer)
                         & (slopes["lr"] == c.lr)]
            row.append("n/a" if hit.empty else
                       f"{fnum(hit['slope'].iloc[0])} [{fnum(hit['ci_low'].iloc[0])}, "
                       f"{fnum(hit['ci_high'].iloc[0])}]")
        rows.append(row)
    lines += [md_table(["cell", *metrics], rows), ""]
    if not coefs.empty:
        fits = coefs.groupby("y", sort=False).first()
        rows = [[m, str(int(f.n)), fnum(f.r2), fp(f.p_same_slope), fpct(f.f_power_medium)]
                for m, f in fits.iterrows()]
        lines += [md_table(["metric", "configurations", "R^2", "p (same slope in every cell)",
                            "F-test power (medium)"], rows), ""]
    return lines


def _divergence_section(inp: ReportInputs) -> list[str]:
    lines = ["### Divergence as an outcome", "",
             "Diverged runs (non-finite loss) per scope, and across configurations the "
             f"Pearson r (Fisher-z {CONFIDENCE:.0%} CI) of each configuration's diverged "
             "share with log10 "
             "trainable parameters (divergence.csv).", ""]
    div = inp.divergence
    if div.empty:
        return [*lines, "No usable runs.", ""]
    rows = [[md_code(r.scope), str(r.n_configs), str(r.n_runs), str(r.n_diverged), fpct(r.rate),
             f"{fr(r.r)} [{fr(r.ci_low)}, {fr(r.ci_high)}]" if is_number(r.r) else "n/a",
             fp(r.p)] for r in div.itertuples()]
    return [*lines, md_table(["scope", "configurations", "runs", "diverged", "rate",
                              f"r with log10 trainable [{CONFIDENCE:.0%} CI]", "p"], rows), ""]


def _seed_section(inp: ReportInputs) -> list[str]:
    lines = ["### Seed spread", "",
             "Runs that differ only in the seed: mean, SD and n per configuration "
             "(seed_spread.csv). Summary of the SDs:", ""]
    seeds = inp.seeds
    if seeds.empty:
        return [*lines[:2], "No configuration was run with more than one seed.", ""]
    rows = [[r.metric, str(r.configs), fnum(r.median_sd), fnum(r.max_sd), fnum(r.sd_of_means)]
            for r in inp.numbers.seed_summary.itertuples()]
    lines += [md_table(["metric", "configs", "median seed SD", "max seed SD",
                        "SD of config means"], rows), ""]
    return lines


def _power_section(inp: ReportInputs) -> list[str]:
    groups = inp.numbers.power_groups
    lines = ["### Power", "",
             "Per slice size n (configurations or runs): the critical |r| (the |r| that just "
             f"reaches two-sided p < {ALPHA}, t test with df = n - 2: a true r of that size is "
             "detected only about half the time) and the |r| detected with 80% power at alpha "
             f"{ALPHA} (pingouin `power_corr`). For the confirmatory families the 80%-power |r| "
             "at the strictest Holm step (alpha / m) is in the paper table and power.csv.", ""]
    if groups.empty:
        return [*lines, "No slice has 3 or more points.", ""]
    rows = [[r.unit, str(int(r.n)), str(int(r.slices)), fr(r.critical_r), fr(r.r80)]
            for r in groups.itertuples()]
    if len(rows) > 15:
        rows = rows[:7] + [["...", "...", "...", "...", "..."]] + rows[-7:]
    return [*lines, md_table(["unit", "n", "slices", "critical |r|", "|r| at 80% power"], rows),
            ""]


def _method_section(inp: ReportInputs) -> list[str]:
    boot = inp.numbers.bootstrap
    lines = ["### Methods", "",
             f"- Pearson r and p: `scipy.stats.pearsonr`; {CONFIDENCE:.0%} CI by Fisher z "
             "(`confidence_interval`).",
             "- Spearman and Kendall (tau-b) r and p: `scipy.stats.spearmanr` / `kendalltau`; "
             f"{CONFIDENCE:.0%} CI: `scipy.stats.bootstrap`, pairs resampled (configurations for "
             f"`unit=configuration`), seed {inp.seed}, BCa for n <= {BCA_MAX_N}, percentile "
             "above.",
             "- Holm (one vectorised step-down pass, tested equal to statsmodels' "
             "`multipletests`) and Benjamini-Hochberg (`scipy.stats.false_discovery_control`) "
             "within each family of correlations.csv (column `family`).",
             "- Power: `pingouin.power_corr`; F-test power: `statsmodels` `FTestPower`.",
             f"- A slice uses completed and diverged runs with a finite {X} and metric; failed "
             "runs are never used. A configuration's score is the mean over its usable runs. "
             "Under 3 points or a constant variable: empty statistics."]
    if inp.n_boot <= 0:
        lines.append("- Spearman and Kendall CIs were not computed (--n-boot 0).")
    if boot.no_run_ci:
        lines.append(f"- The {boot.no_run_ci} Spearman / Kendall rows on runs (`unit=run`: "
                     "exploratory, seeds are not independent) have no bootstrap CI; "
                     "`--run-cis` draws them.")
    if boot.any:
        text = (f"- Bootstrap resamples: {inp.n_boot} requested; all {boot.n_full} bootstrap "
                "CIs used the full count.")
        if boot.n_cut:
            text = f"- Bootstrap resamples: {inp.n_boot} requested"
            if boot.n_full:
                text += f"; used in full for {boot.n_full} CIs (slices of n <= " \
                        f"{boot.full_max_n})"
            text += (f"; {boot.cut_min_resamples}-{boot.cut_max_resamples} for "
                     f"the {boot.n_cut} CIs of larger slices (n={boot.cut_min_n}-"
                     f"{boot.cut_max_n}): n x resamples is capped at {BOOT_WORK:,} "
                     f"(never under {BOOT_MIN_RESAMPLES} resamples) to bound run time. Large "
                     "slices have narrow CIs, so the Monte-Carlo error of the endpoints stays "
                     "small (about 0.27 bootstrap SDs at 100 resamples).")
        lines.append(text)
        if boot.dropped or boot.empty:
            lines.append(f"- Resamples with a constant variable have no rank correlation: "
                         f"{boot.dropped} CIs were computed from the defined resamples "
                         "(percentile); "
                         f"{boot.empty} left empty because most resamples were undefined.")
    return [*lines, ""]


def _plots_section(inp: ReportInputs, out_dir: Path) -> list[str]:
    lines = ["## Plots", "", "Every figure is also written as PDF beside the PNG.", ""]
    captions = {
        "scatter": "log10 trainable parameters vs {m}; rows optimizer, columns lr; colour = "
                   "architecture, marker = freeze strategy, hollow = diverged; dashed = OLS "
                   "fit on configuration means per panel (r and n in the title).",
        "heatmap": "Pearson r over configurations per metric (rows) and optimizer x lr cell "
                   f"(columns), pooled and within each freeze strategy; * = Holm p < {ALPHA} "
                   "within the confirmatory family.",
        "partial": "Partial freezing: test_acc vs trainable parameters within each "
                   "architecture.",
    }
    existing = [p for p in inp.plots if Path(p).exists()]
    if not existing:
        return [*lines[:2], "No plots: no usable runs.", ""]
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
    """The whole report as markdown: the claims and their verdicts open it."""
    lines = ["# paramcorr analysis: trainable parameters vs accuracy, F1 and generalization",
             ""]
    lines += _short_answer(inp) + _claims_section(inp) + _header(inp) + _how_to_read(inp)
    lines += _findings(inp)
    lines += _paper_section(inp)
    lines += ["## Beyond the paper", ""]
    lines += _within_architecture(inp) + _regression_section(inp) + _divergence_section(inp)
    lines += _seed_section(inp) + _power_section(inp) + _method_section(inp)
    lines += inp.strategies
    lines += _plots_section(inp, out_dir) + _files_section(inp)
    return "\n".join(lines).rstrip() + "\n"


def write_report(inp: ReportInputs, out_dir: Path) -> Path:
    path = out_dir / "report.md"
    path.write_text(render(inp, out_dir), encoding="utf-8")
    return path

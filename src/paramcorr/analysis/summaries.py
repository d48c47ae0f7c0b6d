"""The numbers report.md states in words, computed once by the analysis driver.

report.py only formats: every count, grouping and aggregate it prints beyond a single
table cell is computed here from the analysis's tables (the correlation table, the runs,
the configurations, the model fits) and handed to it in :class:`ReportNumbers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from paramcorr.analysis.claims import pooled_rows
from paramcorr.analysis.corrections import family_sizes
from paramcorr.analysis.correlations import NO_RUN_CI
from paramcorr.analysis.vocab import (
    ALPHA,
    EXPLORATORY,
    MODEL_METRICS,
    USED_STATUSES,
    is_cell,
)

# The run axes the report's header lists the values of, with their words.
HEADER_AXES = (("optimizer", "optimizers"), ("lr", "learning rates"),
               ("freeze", "freeze strategies"), ("seed", "seeds"))


@dataclass
class BootstrapCounts:
    """How the correlation table's bootstrap CIs were drawn (the methods section)."""

    n_boot: int
    no_run_ci: int = 0  # run-level rank rows left without a CI (no --run-cis)
    n_full: int = 0  # CIs that used every requested resample
    full_max_n: int = 0  # the largest slice among those
    n_cut: int = 0  # CIs of large slices with fewer resamples (BOOT_WORK cap)
    cut_min_resamples: int = 0
    cut_max_resamples: int = 0
    cut_min_n: int = 0
    cut_max_n: int = 0
    dropped: int = 0  # CIs computed from the defined resamples only
    empty: int = 0  # CIs left empty: most resamples undefined

    @property
    def any(self) -> bool:
        return self.n_full + self.n_cut > 0


@dataclass
class RmSigns:
    """Within-architecture slopes (rmcorr, test_acc, pooled cells): signs and ranges."""

    n_cells: int = 0
    positive: int = 0
    negative: int = 0
    sig_positive: int = 0
    sig_negative: int = 0
    r_min: float = float("nan")
    r_max: float = float("nan")


@dataclass
class ReportNumbers:
    """Everything report.md counts or aggregates, computed once (see :func:`summarize`)."""

    family_sizes: dict[str, int] = field(default_factory=dict)
    # Per confirmatory family: tests that survive Holm at ALPHA.
    survivors: dict[str, int] = field(default_factory=dict)
    exploratory_bh: int = 0  # Pearson configuration slices with p_bh < ALPHA
    exploratory_slices: int = 0  # of that many
    n_configs: int = 0
    n_config_runs: int = 0
    axis_values: dict[str, list] = field(default_factory=dict)
    architectures: pd.DataFrame = field(default_factory=pd.DataFrame)
    budget_column: str = ""
    budgets: list[int] = field(default_factory=list)
    seed_summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    power_groups: pd.DataFrame = field(default_factory=pd.DataFrame)
    bootstrap: BootstrapCounts = field(default_factory=lambda: BootstrapCounts(0))
    # The confirmatory pooled family (claims.pooled_rows): the findings quote its rows.
    pooled: pd.DataFrame = field(default_factory=pd.DataFrame)
    rm_cells: pd.DataFrame = field(default_factory=pd.DataFrame)
    rm_signs: RmSigns = field(default_factory=RmSigns)


def config_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """A stacked table's configuration rows (the report's unit); as is without ``unit``."""
    if frame.empty or "unit" not in frame:
        return frame
    return frame[frame["unit"] == "configuration"]


def _survivors(corr: pd.DataFrame, sizes: dict[str, int]) -> dict[str, int]:
    out = {}
    for family in sizes:
        if family == EXPLORATORY:
            continue
        rows = corr[(corr["family"] == family) & corr["p"].notna()]
        out[family] = int((rows["p_holm"] < ALPHA).sum())
    return out


def _axis_values(runs: pd.DataFrame) -> dict[str, list]:
    out = {}
    for axis, _ in HEADER_AXES:
        if axis in runs and runs[axis].notna().any():
            out[axis] = sorted(runs[axis].dropna().unique(), key=lambda v: (str(type(v)), v))
    return out


def architectures(runs: pd.DataFrame) -> pd.DataFrame:
    """Per architecture: total parameters, the trainable range, runs and usable runs."""
    if "model" not in runs:
        return pd.DataFrame()
    used = runs[runs["status"].isin(USED_STATUSES)]
    rows = []
    for model, grp in runs.groupby("model", sort=True):
        trainable = pd.to_numeric(grp["params_trainable"], errors="coerce")
        total = pd.to_numeric(grp.get("params_total", pd.Series(dtype=float)), errors="coerce")
        rows.append({"model": model, "total": total.max(), "trainable_min": trainable.min(),
                     "trainable_max": trainable.max(), "runs": len(grp),
                     "used": len(used[used["model"] == model])})
    return pd.DataFrame(rows, columns=["model", "total", "trainable_min", "trainable_max",
                                       "runs", "used"])


def _budgets(runs: pd.DataFrame) -> tuple[str, list[int]]:
    """The epoch-budget column and its distinct values (several: runs of different budgets
    are pooled)."""
    column = "epochs_configured" if "epochs_configured" in runs else "epochs"
    if column not in runs:
        return "", []
    return column, sorted({int(v) for v in pd.to_numeric(runs[column], errors="coerce").dropna()})


def seed_summary(seeds: pd.DataFrame) -> pd.DataFrame:
    """Per metric over configurations with repeated seeds: median and max seed SD, and the
    SD of the configuration means."""
    rows = []
    if seeds.empty:
        return pd.DataFrame()
    for m in MODEL_METRICS:
        if f"{m}_sd" not in seeds:
            continue
        sd, mean = seeds[f"{m}_sd"].dropna(), seeds[f"{m}_mean"].dropna()
        rows.append({"metric": m, "configs": len(sd), "median_sd": sd.median(),
                     "max_sd": sd.max(), "sd_of_means": mean.std()})
    return pd.DataFrame(rows)


def power_groups(corr: pd.DataFrame) -> pd.DataFrame:
    """Pearson slices of 3 or more points grouped by unit and n: critical |r| and r80."""
    pear = corr[(corr["method"] == "pearson") & (corr["n"] >= 3)]
    if pear.empty:
        return pd.DataFrame()
    return pear.groupby(["unit", "n"]).agg(slices=("scope", "nunique"),
                                           critical_r=("critical_r", "first"),
                                           r80=("r80", "first")).reset_index()


def bootstrap_counts(corr: pd.DataFrame, n_boot: int) -> BootstrapCounts:
    """How many CIs used all requested resamples, how many fewer, how many degenerate."""
    out = BootstrapCounts(n_boot)
    if "ci_method" in corr:
        out.no_run_ci = int((corr["ci_method"] == NO_RUN_CI).sum())
    boot = corr[corr["n_resamples"] > 0]
    if boot.empty:
        return out
    used = boot["n_resamples"]
    full, cut = boot[used >= n_boot], boot[used < n_boot]
    out.n_full, out.n_cut = len(full), len(cut)
    if len(full):
        out.full_max_n = int(full["n"].max())
    if len(cut):
        out.cut_min_resamples = int(cut["n_resamples"].min())
        out.cut_max_resamples = int(cut["n_resamples"].max())
        out.cut_min_n, out.cut_max_n = int(cut["n"].min()), int(cut["n"].max())
    out.dropped = int(boot["ci_method"].str.contains("dropped").sum())
    out.empty = int(boot["ci_method"].str.startswith("none").sum())
    return out


def rm_cells(rm: pd.DataFrame) -> pd.DataFrame:
    """Applicable rmcorr rows of pooled optimizer x lr cells, on configurations."""
    rm = config_rows(rm)
    if rm.empty:
        return rm
    return rm[rm["applicable"] & is_cell(rm, pooled=True)]


def rm_signs(cells: pd.DataFrame) -> RmSigns:
    """Signs of the within-architecture test_acc slopes over the pooled cells."""
    cells = cells[cells["y"] == "test_acc"] if len(cells) else cells
    if cells.empty:
        return RmSigns()
    pos, neg = cells[cells["slope"] > 0], cells[cells["slope"] < 0]
    return RmSigns(n_cells=len(cells), positive=len(pos), negative=len(neg),
                   sig_positive=int((pos["p"] < ALPHA).sum()),
                   sig_negative=int((neg["p"] < ALPHA).sum()),
                   r_min=cells["r_rm"].min(), r_max=cells["r_rm"].max())


def summarize(corr: pd.DataFrame, runs: pd.DataFrame, configs: pd.DataFrame,
              seeds: pd.DataFrame, rm: pd.DataFrame, n_boot: int) -> ReportNumbers:
    """The report's numbers from the analysis's tables (each computed once, here)."""
    sizes = family_sizes(corr)
    explo = corr[(corr["family"] == EXPLORATORY) & (corr["method"] == "pearson")
                 & (corr["unit"] == "configuration") & corr["p"].notna()]
    n_configs = len(configs) if len(configs) else 0
    column, budgets = _budgets(runs)
    cells = rm_cells(rm)
    return ReportNumbers(
        family_sizes=sizes, survivors=_survivors(corr, sizes),
        exploratory_bh=int((explo["p_bh"] < ALPHA).sum()), exploratory_slices=len(explo),
        n_configs=n_configs,
        n_config_runs=int(configs["n_runs"].sum()) if n_configs and "n_runs" in configs
        else 0,
        axis_values=_axis_values(runs), architectures=architectures(runs),
        budget_column=column, budgets=budgets, seed_summary=seed_summary(seeds),
        power_groups=power_groups(corr), bootstrap=bootstrap_counts(corr, n_boot),
        rm_cells=cells, rm_signs=rm_signs(cells), pooled=pooled_rows(corr))

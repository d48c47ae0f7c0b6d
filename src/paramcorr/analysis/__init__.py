"""Analysis of a sweep's result.json records: runs table, correlations, report, plots.

``run_analysis`` is the single entry point, used by ``scripts/analyze.py`` and callable
from a Hydra ``on_multirun_end`` callback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from threadpoolctl import threadpool_limits

from paramcorr.analysis import strategy_stats
from paramcorr.analysis.claims import CLAIMS_COLUMNS, evaluate_claims
from paramcorr.analysis.collect import Collection, NoRecordsError, check_sweep_dirs, collect_runs
from paramcorr.analysis.configurations import configuration_means
from paramcorr.analysis.correlations import correlation_table
from paramcorr.analysis.latex import write_latex
from paramcorr.analysis.models import partial_correlations, regression, rm_correlations
from paramcorr.analysis.outdir import OutDirError, check_out_dir, make_out_dir
from paramcorr.analysis.plots import make_plots, model_colours
from paramcorr.analysis.power import power_table
from paramcorr.analysis.report import ReportInputs, write_report
from paramcorr.analysis.summaries import summarize
from paramcorr.analysis.tables import divergence_table, paper_table, seed_spread
from paramcorr.analysis.vocab import CORR_COLUMNS
from paramcorr.long_lived import frozen_during
from paramcorr.record import Status

__all__ = ["AnalysisResult", "NoRecordsError", "OutDirError", "run_analysis"]

log = logging.getLogger("paramcorr.analysis")

# Our own figure names: removed before plotting so a re-run never leaves stale figures.
PLOT_PATTERNS = tuple(f"{kind}_*.{ext}" for kind in ("scatter", "heatmap", "partial", "pareto")
                      for ext in ("png", "pdf"))


@dataclass
class AnalysisResult:
    """What an analysis read and wrote."""

    out_dir: Path
    summary: str
    n_files: int
    n_records: int
    n_used: int
    n_completed: int
    n_diverged: int
    n_failed: int
    n_skipped: int
    skipped: dict[str, int]
    files: dict[str, Path] = field(default_factory=dict)
    plots: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # The same phases in CPU time (process_time): on a shared machine the wall times above
    # mostly measure the other load.
    cpu_timings: dict[str, float] = field(default_factory=dict)


def _write_csvs(out_dir: Path, frames: dict) -> dict[str, Path]:
    paths = {}
    for name, frame in frames.items():
        path = out_dir / f"{name}.csv"
        frame.to_csv(path, index=False)
        paths[name] = path
    return paths


def _stack(parts: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Tables computed per unit (run, configuration) stacked with a ``unit`` column."""
    kept = [part.assign(unit=unit) for unit, part in parts.items() if len(part)]
    return pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()


def run_analysis(sweep_dirs: list[Path], out_dir: Path | None = None, n_boot: int = 1000,
                 seed: int = 0, run_cis: bool = False,
                 claim_c_lr: float | None = None) -> AnalysisResult:
    """Collect every result.json below ``sweep_dirs`` and write the analysis to ``out_dir``.

    ``out_dir`` defaults to ``<first sweep dir>/analysis``. Raises NoRecordsError (a
    UserError) when no readable record exists, OutDirError (one too) before any statistics
    when ``out_dir`` cannot be written. ``run_cis``: bootstrap CIs for the run-level
    (exploratory) rows too; ``claim_c_lr``: the Adam learning rate claim c tests.
    """
    # The fits are many small least-squares problems: threaded BLAS only adds contention
    # (10x slower on a busy 2-core machine), so BLAS runs single-threaded here. The imported
    # libraries' objects are left out of the collections the analysis triggers (they were a
    # tenth of its time at 10,000 records).
    with threadpool_limits(limits=1, user_api="blas"), frozen_during():
        return _run(sweep_dirs, out_dir, n_boot, seed, run_cis, claim_c_lr)


class _Phases:
    """Wall and CPU time per phase of the analysis (``with phases("name"): ...``)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        # CPU time too: on a shared machine the wall times mostly measure the other load.
        self.cpu_timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.process_time()
        yield
        self.timings[name] = time.perf_counter() - start
        self.cpu_timings[name] = time.process_time() - cpu


@dataclass
class _Tables:
    """Every table of one analysis, computed once and passed down to the writers, the plots
    and the report (none of them recomputes a statistic)."""

    configs: pd.DataFrame  # configuration means of the usable runs
    completed: pd.DataFrame  # the same of the completed runs only (sensitivity)
    corr: pd.DataFrame
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)
    paper: pd.DataFrame = field(default_factory=pd.DataFrame)
    partial: pd.DataFrame = field(default_factory=pd.DataFrame)
    rm: pd.DataFrame = field(default_factory=pd.DataFrame)
    coefs: pd.DataFrame = field(default_factory=pd.DataFrame)
    slopes: pd.DataFrame = field(default_factory=pd.DataFrame)
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)
    seeds: pd.DataFrame = field(default_factory=pd.DataFrame)


def _correlations(col: Collection, n_boot: int, seed: int, run_cis: bool) -> _Tables:
    runs, metrics = col.runs, col.metrics
    log.info("correlations: %d metrics x 3 methods x 2 units (bootstrap n=%d)", len(metrics),
             n_boot)
    # The configuration means, once for every table that reads them.
    configs = configuration_means(runs, metrics, col.run_axes)
    completed = configuration_means(runs, metrics, col.run_axes, statuses=(Status.COMPLETED,))
    corr = correlation_table(runs, metrics, n_boot=n_boot, seed=seed, progress=log.info,
                             run_axes=col.run_axes, run_cis=run_cis, configs=configs)
    return _Tables(configs=configs, completed=completed, corr=corr)


def _beyond(col: Collection, t: _Tables, seed: int, claim_c_lr: float | None) -> None:
    """The claims and the statistics beyond the paper, into ``t``."""
    runs, metrics, configs = col.runs, col.metrics, t.configs
    log.info("claims and beyond the paper: partial/rm correlations, regression, divergence")
    t.claims, t.comparisons = evaluate_claims(t.corr, configs, seed=seed,
                                              completed=t.completed, claim_c_lr=claim_c_lr)
    t.paper = paper_table(t.corr, runs, metrics, col.run_axes, configs=configs,
                          completed=t.completed)
    units = {"run": runs, **({"configuration": configs} if len(configs) else {})}
    t.partial = _stack({u: partial_correlations(f, metrics) for u, f in units.items()})
    t.rm = _stack({u: rm_correlations(f, metrics) for u, f in units.items()})
    fits = {u: regression(f, metrics) for u, f in units.items()}
    t.coefs = _stack({u: fit[0] for u, fit in fits.items()})
    t.slopes = _stack({u: fit[1] for u, fit in fits.items()})
    t.divergence = divergence_table(runs, col.run_axes, configs=configs)
    t.seeds = seed_spread(runs, col.run_axes, metrics)


def _write_tables(col: Collection, t: _Tables, out_dir: Path) -> dict[str, Path]:
    frames = {"runs": col.runs, "correlations": t.corr[CORR_COLUMNS],
              "claims": t.claims[CLAIMS_COLUMNS],
              "claim_b_comparisons": t.comparisons, "paper_table": t.paper,
              "partial_correlations": t.partial, "rm_correlations": t.rm,
              "regression": t.coefs, "regression_slopes": t.slopes,
              "divergence": t.divergence, "seed_spread": t.seeds, "power": power_table(t.corr)}
    files = _write_csvs(out_dir, frames)
    files.update(write_latex(t.paper, t.claims, col.metrics, out_dir))
    return files


def _figures(col: Collection, t: _Tables, out_dir: Path,
             files: dict[str, Path]) -> tuple[list[Path], list[Path], list[str]]:
    """The figures (stale ones of ours removed first) and the strategies section: (plots,
    strategy plots, strategy report lines); the strategies' files go into ``files``."""
    runs = col.runs
    log.info("plots")
    plot_dir = out_dir / "plots"
    for pattern in PLOT_PATTERNS:
        for stale in plot_dir.glob(pattern):
            stale.unlink()
    plots = make_plots(runs, t.corr, col.metrics, plot_dir, configs=t.configs)
    strategy_lines, strategy_files, strategy_plots = strategy_stats.analyse(
        t.configs, col.metrics, model_colours(runs["model"].dropna().astype(str).tolist()
                                              if "model" in runs else []), out_dir, plot_dir)
    files.update(strategy_files)
    return plots, strategy_plots, strategy_lines


def _run(sweep_dirs: list[Path], out_dir: Path | None, n_boot: int, seed: int,
         run_cis: bool = False, claim_c_lr: float | None = None) -> AnalysisResult:
    sweep_dirs = check_sweep_dirs(sweep_dirs)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dirs[0] / "analysis"
    check_out_dir(out_dir)  # fail fast, before reading; make_out_dir proves it after
    phase = _Phases()

    with phase("collect"):
        col: Collection = collect_runs(sweep_dirs, out_dirs=[out_dir, out_dir / "plots"])
    make_out_dir(out_dir)  # before any statistics: an unwritable --out must not cost them
    log.info("collected %d records (%d used) below %s", col.n_records, col.n_used,
             ", ".join(map(str, sweep_dirs)))
    strategy_stats.add_effective_robustness(col.runs, col.metrics, col.run_axes)

    with phase("correlations"):
        t = _correlations(col, n_boot, seed, run_cis)
    with phase("beyond"):
        _beyond(col, t, seed, claim_c_lr)
    with phase("write_csv"):
        files = _write_tables(col, t, out_dir)
    with phase("plots"):
        plots, strategy_plots, strategy_lines = _figures(col, t, out_dir, files)
    with phase("report"):
        numbers = summarize(t.corr, col.runs, t.configs, t.seeds, t.rm, n_boot)
        inputs = ReportInputs(collection=col, corr=t.corr, paper=t.paper, partial=t.partial,
                              rm=t.rm, coefs=t.coefs, slopes=t.slopes, seeds=t.seeds,
                              plots=plots, csvs=[p.name for p in files.values()],
                              n_boot=n_boot, seed=seed, numbers=numbers, claims=t.claims,
                              divergence=t.divergence, configs=t.configs,
                              strategies=strategy_lines)
        files["report"] = write_report(inputs, out_dir)
    log.info("wrote %s", out_dir)
    return AnalysisResult(
        out_dir=out_dir, summary=col.summary(), n_files=col.n_files, n_records=col.n_records,
        n_used=col.n_used, n_completed=col.count(Status.COMPLETED),
        n_diverged=col.count(Status.DIVERGED), n_failed=col.count(Status.FAILED),
        n_skipped=col.n_skipped, skipped=dict(col.skipped), files=files,
        plots=plots + strategy_plots, timings=phase.timings, cpu_timings=phase.cpu_timings)

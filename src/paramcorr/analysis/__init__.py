"""Analysis of a sweep's result.json records: runs table, correlations, report, plots.

``run_analysis`` is the single entry point, used by ``scripts/analyze.py`` and callable
from a Hydra ``on_multirun_end`` callback.
"""

from __future__ import annotations

import logging
import time
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
    # (10x slower on a busy 2-core machine), so BLAS runs single-threaded here.
    with threadpool_limits(limits=1, user_api="blas"):
        return _run(sweep_dirs, out_dir, n_boot, seed, run_cis, claim_c_lr)


def _run(sweep_dirs: list[Path], out_dir: Path | None, n_boot: int, seed: int,
         run_cis: bool = False, claim_c_lr: float | None = None) -> AnalysisResult:
    sweep_dirs = check_sweep_dirs(sweep_dirs)
    out_dir = Path(out_dir) if out_dir is not None else sweep_dirs[0] / "analysis"
    check_out_dir(out_dir)  # fail fast, before reading; make_out_dir proves it after
    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}

    start, cpu = time.perf_counter(), time.process_time()
    col: Collection = collect_runs(sweep_dirs, out_dirs=[out_dir, out_dir / "plots"])
    timings["collect"] = time.perf_counter() - start
    cpu_timings["collect"] = time.process_time() - cpu
    make_out_dir(out_dir)  # before any statistics: an unwritable --out must not cost them
    log.info("collected %d records (%d used) below %s", col.n_records, col.n_used,
             ", ".join(map(str, sweep_dirs)))
    runs, metrics = col.runs, col.metrics
    strategy_stats.add_effective_robustness(runs, metrics, col.run_axes)

    start, cpu = time.perf_counter(), time.process_time()
    log.info("correlations: %d metrics x 3 methods x 2 units (bootstrap n=%d)", len(metrics),
             n_boot)
    # The configuration means, once for every table that reads them.
    configs = configuration_means(runs, metrics, col.run_axes)
    completed = configuration_means(runs, metrics, col.run_axes, statuses=(Status.COMPLETED,))
    corr = correlation_table(runs, metrics, n_boot=n_boot, seed=seed, progress=log.info,
                             run_axes=col.run_axes, run_cis=run_cis, configs=configs)
    timings["correlations"] = time.perf_counter() - start
    cpu_timings["correlations"] = time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    log.info("claims and beyond the paper: partial/rm correlations, regression, divergence")
    claims, comparisons = evaluate_claims(corr, configs, seed=seed, completed=completed,
                                          claim_c_lr=claim_c_lr)
    paper = paper_table(corr, runs, metrics, col.run_axes, configs=configs,
                        completed=completed)
    units = {"run": runs, **({"configuration": configs} if len(configs) else {})}
    partial = _stack({u: partial_correlations(f, metrics) for u, f in units.items()})
    rm = _stack({u: rm_correlations(f, metrics) for u, f in units.items()})
    fits = {u: regression(f, metrics) for u, f in units.items()}
    coefs = _stack({u: fit[0] for u, fit in fits.items()})
    slopes = _stack({u: fit[1] for u, fit in fits.items()})
    divergence = divergence_table(runs, col.run_axes, configs=configs)
    seeds = seed_spread(runs, col.run_axes, metrics)
    timings["beyond"] = time.perf_counter() - start
    cpu_timings["beyond"] = time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    frames = {"runs": runs, "correlations": corr[CORR_COLUMNS],
              "claims": claims[CLAIMS_COLUMNS],
              "claim_b_comparisons": comparisons, "paper_table": paper,
              "partial_correlations": partial, "rm_correlations": rm, "regression": coefs,
              "regression_slopes": slopes, "divergence": divergence, "seed_spread": seeds,
              "power": power_table(corr)}
    files = _write_csvs(out_dir, frames)
    files.update(write_latex(paper, claims, metrics, out_dir))
    timings["write_csv"] = time.perf_counter() - start
    cpu_timings["write_csv"] = time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    log.info("plots")
    plot_dir = out_dir / "plots"
    for pattern in PLOT_PATTERNS:
        for stale in plot_dir.glob(pattern):
            stale.unlink()
    plots = make_plots(runs, corr, metrics, plot_dir, configs=configs)
    strategy_lines, strategy_files, strategy_plots = strategy_stats.analyse(
        configs, metrics, model_colours(runs["model"].dropna().astype(str).tolist()
                                        if "model" in runs else []), out_dir, plot_dir)
    files.update(strategy_files)
    timings["plots"] = time.perf_counter() - start
    cpu_timings["plots"] = time.process_time() - cpu

    start, cpu = time.perf_counter(), time.process_time()
    numbers = summarize(corr, runs, configs, seeds, rm, n_boot)
    inputs = ReportInputs(collection=col, corr=corr, paper=paper, partial=partial, rm=rm,
                          coefs=coefs, slopes=slopes, seeds=seeds, plots=plots,
                          csvs=[p.name for p in files.values()], n_boot=n_boot, seed=seed,
                          numbers=numbers,
                          claims=claims, divergence=divergence, configs=configs,
                          strategies=strategy_lines)
    files["report"] = write_report(inputs, out_dir)
    timings["report"] = time.perf_counter() - start
    cpu_timings["report"] = time.process_time() - cpu
    log.info("wrote %s", out_dir)
    return AnalysisResult(
        out_dir=out_dir, summary=col.summary(), n_files=col.n_files, n_records=col.n_records,
        n_used=col.n_used, n_completed=col.count(Status.COMPLETED),
        n_diverged=col.count(Status.DIVERGED), n_failed=col.count(Status.FAILED),
        n_skipped=col.n_skipped, skipped=dict(col.skipped), files=files,
        plots=plots + strategy_plots, timings=timings, cpu_timings=cpu_timings)

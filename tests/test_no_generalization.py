"""A sweep without a generalization set (an image folder without data.generalization_root,
the README's own paper example): the analysis runs, claims a is tested as usual, claims b and
c say why they are not tested, and no statistic is made up for the missing gen_* metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis_fixtures import synthetic_records, write_sweep
from paramcorr.analysis import run_analysis
from paramcorr.analysis.claims import INCONCLUSIVE, NO_GENERALIZATION
from paramcorr.analysis.collect import collect_runs
from paramcorr.analysis.configurations import configuration_means
from paramcorr.analysis.stats import strategy_vs_count

GEN = ("gen_acc", "gen_f1")


def _records_without_gen() -> list[dict]:
    records = synthetic_records(n_runs=96)
    for record in records:
        for key in GEN:  # what a job without a generalization set records: null
            record["metrics"][key] = None
    return records


def test_strategy_vs_count_of_a_metric_with_no_value_is_empty_not_a_crash(tmp_path):
    write_sweep(tmp_path / "sweep", _records_without_gen())
    col = collect_runs([tmp_path / "sweep"])
    configs = configuration_means(col.runs, [*GEN, "test_acc"], col.run_axes)
    table = strategy_vs_count(configs, [*GEN, "test_acc"])
    gen = table[table["y"].isin(GEN)]
    assert len(gen) and (gen["n"] == 0).all()
    assert gen[["r_strategy", "partial_strategy", "partial_architecture"]].isna().all().all()
    # test_acc is still estimated: its strategy r is Pearson r of the fine-tuned indicator.
    row = table[(table["scope"] == "all") & (table["y"] == "test_acc")].iloc[0]
    usable = configs[np.isfinite(configs["test_acc"].to_numpy(dtype=float))]
    expected = stats.pearsonr((usable["freeze"] != "base").astype(float), usable["test_acc"])
    assert math.isclose(row["r_strategy"], expected.statistic, rel_tol=1e-9)


def test_analysis_without_gen_metrics_writes_everything_and_says_b_and_c_are_untested(tmp_path):
    write_sweep(tmp_path / "sweep", _records_without_gen())
    result = run_analysis([tmp_path / "sweep"], tmp_path / "out", n_boot=10)
    out = tmp_path / "out"
    assert (out / "report.md").exists() and (out / "paper_table.csv").exists()
    claims = pd.read_csv(out / "claims.csv")
    for claim in ("b", "c"):
        rows = claims[claims["claim"] == claim]
        assert len(rows) == 1  # one overall row: nothing per cell was computed
        assert rows.iloc[0]["verdict"] == INCONCLUSIVE
        assert rows.iloc[0]["reason"] == NO_GENERALIZATION
        assert rows[["estimate", "p", "p_holm"]].isna().all().all()
    # Claim a is tested as usual on test_acc: its cells carry real estimates.
    a_cells = claims[(claims["claim"] == "a") & claims["scope"].str.startswith("optimizer=")]
    assert len(a_cells) == 6 and a_cells["estimate"].notna().all()
    report = (out / "report.md").read_text()
    assert f"**b — inconclusive.** Not tested: {NO_GENERALIZATION}." in report
    assert f"**c — inconclusive.** Not tested: {NO_GENERALIZATION}." in report
    # No gen figure is drawn from no data; the test metrics' figures are.
    assert not any("gen_" in p.name for p in result.plots)
    assert (out / "plots" / "scatter_test_acc.png").exists()

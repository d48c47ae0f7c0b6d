"""Correlations and the beyond-paper statistics, checked against independent computations."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis_fixtures import make_record, synthetic_records, write_sweep
from paramcorr.analysis.collect import collect_runs
from paramcorr.analysis.configurations import configuration_means
from paramcorr.analysis.stats import (
    CORR_COLUMNS,
    NO_RUN_CI,
    bootstrap_ci,
    bootstrap_rng,
    correlation_table,
    critical_r,
    holm_adjust,
    kendall_codes,
    partial_correlations,
    regression,
    rm_correlations,
    seed_spread,
    spearman_codes,
)

METRICS = ("test_acc", "test_f1", "gen_acc", "gen_f1", "gap_acc", "test_loss")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """144 runs: 6 models x base/none x adam/sgd x 3 lrs x 2 seeds, failed and diverged mixed."""
    records = synthetic_records(144, p_failed=0.08, p_diverged=0.08, rng_seed=7)
    # a diverged run that lost every metric, and one with nulls
    records[3] = {**records[3], "status": "diverged",
                  "metrics": dict.fromkeys(records[3]["metrics"] or METRICS, None)}
    root = tmp_path_factory.mktemp("sweep")
    write_sweep(root, records)
    col = collect_runs([root])
    # run_cis: the run-level rows' bootstrap CIs are checked too (off by default: issue 17)
    corr = correlation_table(col.runs, col.metrics, n_boot=40, seed=3, run_cis=True)
    return records, col, corr


def _in_scope(record: dict, scope: str) -> bool:
    if scope == "all":
        return True
    run = record["run"]
    for part in scope.split(","):
        key, value = part.split("=", 1)
        got = repr(float(run[key])) if key == "lr" else str(run[key])
        if got != value:
            return False
    return True


def _xy(records: list[dict], scope: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The pairs a slice should use, straight from the records (not from runs.csv)."""
    xs, ys = [], []
    for rec in records:
        if rec["status"] == "failed" or not _in_scope(rec, scope):
            continue
        y = (rec["metrics"] or {}).get(metric)
        if y is None or not math.isfinite(float(y)):
            continue
        xs.append(math.log10(rec["params"]["trainable"]))
        ys.append(float(y))
    return np.array(xs), np.array(ys)


def _config_xy(records: list[dict], scope: str, metric: str):
    """Configuration means straight from the records: group by every run axis but the seed
    (plain dicts, no pandas), average the finite metric values of non-failed runs."""
    groups: dict[tuple, list] = {}
    for rec in records:
        if rec["status"] == "failed" or not _in_scope(rec, scope):
            continue
        key = tuple(sorted((k, repr(v)) for k, v in rec["run"].items() if k != "seed"))
        entry = groups.setdefault(key, [math.log10(rec["params"]["trainable"]), []])
        y = (rec["metrics"] or {}).get(metric)
        if y is not None and math.isfinite(float(y)):
            entry[1].append(float(y))
    pairs = [(x, sum(ys) / len(ys), len(ys)) for x, ys in groups.values() if ys]
    xs, ys, ns = (np.array(v) for v in zip(*pairs, strict=True)) if pairs else ([], [], [])
    return np.asarray(xs, float), np.asarray(ys, float), int(np.sum(ns))


def test_scopes_are_all_freeze_cells_and_cells_by_freeze(sweep):
    _, _, corr = sweep
    assert set(corr["unit"]) == {"run", "configuration"}
    for unit in ("run", "configuration"):
        assert list(dict.fromkeys(corr[corr["unit"] == unit]["scope"])) == \
            list(dict.fromkeys(corr["scope"]))
    corr = corr[corr["unit"] == "run"]
    scopes = list(dict.fromkeys(corr["scope"]))
    assert list(corr.columns[: len(CORR_COLUMNS)]) == CORR_COLUMNS
    cells = [f"optimizer={o},lr={lr}" for o in ("adam", "sgd")
             for lr in ("0.0001", "0.001", "0.01")]
    expected = ["all", "freeze=base", "freeze=none", *cells,
                *(f"{c},freeze={f}" for c in cells for f in ("base", "none"))]
    assert scopes == expected
    assert set(corr["method"]) == {"pearson", "spearman", "kendall"}
    assert set(corr["x"]) == {"log10_trainable"}


@pytest.mark.parametrize("unit", ["run", "configuration"])
def test_correlations_equal_scipy_in_every_scope(sweep, unit):
    records, col, corr = sweep
    checked = 0
    for row in corr[corr["unit"] == unit].itertuples():
        if unit == "run":
            x, y = _xy(records, row.scope, row.y)
            n_runs = len(x)
        else:
            x, y, n_runs = _config_xy(records, row.scope, row.y)
        assert row.n == len(x), (row.scope, row.y)
        assert row.n_runs == n_runs, (row.scope, row.y)
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            assert math.isnan(row.r) and math.isnan(row.p)
            continue
        ref = {"pearson": stats.pearsonr, "spearman": stats.spearmanr,
               "kendall": stats.kendalltau}[row.method](x, y)
        assert row.r == pytest.approx(ref.statistic, rel=1e-9, abs=1e-12)
        assert row.p == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
        if row.method == "pearson":
            ci = ref.confidence_interval(0.95)
            assert (row.ci_low, row.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)
        checked += 1
    assert checked > 300
    if unit == "configuration":  # seeds repeat: fewer configurations than runs
        pooled = corr[(corr["unit"] == unit) & (corr["scope"] == "all")]
        assert (pooled["n"] < pooled["n_runs"]).all()
    # failed runs were really in the data, and excluded
    assert col.count("failed") > 0 and col.count("diverged") > 0


def test_holm_and_bh_equal_multipletests_within_each_family(sweep):
    _, _, corr = sweep
    ok = corr["p"].notna()
    assert corr.loc[~ok, ["p_holm", "p_bh"]].isna().all().all()
    cells = [f"optimizer={o},lr={lr}" for o in ("adam", "sgd") for lr in ("0.0001", "0.001",
                                                                           "0.01")]
    expected = {"confirmatory: pooled": set(cells),
                "confirmatory: freeze=base": {f"{c},freeze=base" for c in cells},
                "confirmatory: freeze=none": {f"{c},freeze=none" for c in cells}}
    assert set(corr["family"]) == {*expected, "exploratory"}
    for family, grp in corr.groupby("family"):
        if family != "exploratory":  # the paper table: configurations, Pearson, 4 metrics
            assert set(grp["scope"]) == expected[family]
            assert set(grp["unit"]) == {"configuration"} and set(grp["method"]) == {"pearson"}
            assert sorted(set(grp["y"])) == ["gen_acc", "gen_f1", "test_acc", "test_f1"]
            assert len(grp) == 24
        g = grp[grp["p"].notna()]
        p = g["p"].to_numpy()
        assert np.allclose(g["p_holm"], multipletests(p, method="holm")[1])
        assert np.allclose(g["p_bh"], multipletests(p, method="fdr_bh")[1])
    assert (corr[corr["unit"] == "run"]["family"] == "exploratory").all()


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_bootstrap_ci_equals_scipy_bootstrap_with_scipy_statistic(method):
    """bootstrap_ci on its own: same resamples through scipy's own (looped) statistic give
    the same interval, whatever order the pairs come in."""
    rng = np.random.default_rng(11)
    x = rng.choice([4.0, 4.3, 6.4, 7.3, 8.1], 40)
    y = np.round(0.1 * x + rng.normal(0, 0.3, 40), 2)
    fn = stats.spearmanr if method == "spearman" else stats.kendalltau
    for order in (np.arange(40), rng.permutation(40)):
        xs, ys = x[order], y[order]
        low, high, n_res, how = bootstrap_ci(xs, ys, method, 60, np.random.default_rng(5))
        ref = stats.bootstrap((xs, ys), lambda a, b: fn(a, b).statistic, paired=True,
                              vectorized=False, n_resamples=60, method="BCa",
                              rng=np.random.default_rng(5))
        assert (n_res, how) == (60, "BCa")
        assert (low, high) == pytest.approx(
            (ref.confidence_interval.low, ref.confidence_interval.high), rel=1e-9)


@pytest.mark.parametrize("unit", ["run", "configuration"])
def test_table_bootstrap_ci_is_bootstrap_ci_of_the_slice(sweep, unit):
    """A table row's CI is bootstrap_ci of that slice (the runs table's or the
    configuration table's row order), with the row's own generator."""
    _, col, corr = sweep
    frame = col.runs if unit == "run" else configuration_means(col.runs, ["test_acc"],
                                                               col.run_axes)
    frame = frame[frame["status"].isin(("completed", "diverged"))]
    keep = np.isfinite(frame["test_acc"].to_numpy(float))
    x = frame["log10_trainable"].to_numpy(float)[keep]
    y = frame["test_acc"].to_numpy(float)[keep]
    for method in ("spearman", "kendall"):
        row = corr[(corr["scope"] == "all") & (corr["y"] == "test_acc")
                   & (corr["method"] == method) & (corr["unit"] == unit)].iloc[0]
        low, high, _, _ = bootstrap_ci(x, y, method, 40,
                                       bootstrap_rng(3, "all", "test_acc", method, unit))
        assert (row.ci_low, row.ci_high) == pytest.approx((low, high), rel=1e-12)


def test_holm_adjust_equals_multipletests():
    """The vectorised Holm pass (no gc.collect per call) equals statsmodels, ties and
    p-values near 1 included."""
    rng = np.random.default_rng(3)
    for m in (1, 2, 7, 500):
        p = rng.random(m) ** 3
        p[: m // 3] = p[0]  # ties
        np.testing.assert_allclose(holm_adjust(p), multipletests(p, method="holm")[1],
                                   rtol=1e-12, atol=0)
        np.testing.assert_allclose(stats.false_discovery_control(p),
                                   multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    assert holm_adjust(np.array([])).shape == (0,)


def test_run_level_rows_get_no_bootstrap_ci_unless_asked(sweep):
    _, col, with_cis = sweep
    corr = correlation_table(col.runs, col.metrics, n_boot=40, seed=3)
    rank = (corr["method"] != "pearson") & corr["r"].notna()
    run, conf = rank & (corr["unit"] == "run"), rank & (corr["unit"] == "configuration")
    assert corr.loc[run, ["ci_low", "ci_high"]].isna().all().all()
    assert (corr.loc[run, "ci_method"] == NO_RUN_CI).all() and run.any()
    assert corr.loc[conf, "ci_low"].notna().any()
    # everything else is the same table
    same = ~run
    cols = ["r", "p", "ci_low", "ci_high", "p_holm", "p_bh"]
    pd.testing.assert_frame_equal(corr.loc[same, cols], with_cis.loc[same, cols])


def test_batched_rank_statistics_equal_scipy_per_resample():
    rng = np.random.default_rng(0)
    for n in (3, 7, 40):
        x = rng.choice([3.1, 4.0, 5.5, 7.2], n)
        y = np.round(rng.random(n) * 4) / 4  # many ties
        ux, cx = np.unique(x, return_inverse=True)
        uy, cy = np.unique(y, return_inverse=True)
        idx = rng.integers(0, n, (60, n))
        rho = spearman_codes(cx[idx], cy[idx], len(ux), len(uy))
        tau = kendall_codes(cx[idx], cy[idx], len(ux), len(uy))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_rho = [stats.spearmanr(x[i], y[i]).statistic for i in idx]
            ref_tau = [stats.kendalltau(x[i], y[i]).statistic for i in idx]
        np.testing.assert_allclose(rho, ref_rho, atol=1e-12)
        np.testing.assert_allclose(tau, ref_tau, atol=1e-12)


def test_bootstrap_is_seeded_and_handles_degenerate_resamples():
    x = np.array([1.0, 1.0, 1.0, 2.0])  # a quarter of resamples have constant x
    y = np.array([0.1, 0.2, 0.3, 0.9])
    a = bootstrap_ci(x, y, "spearman", 200, np.random.default_rng(1))
    b = bootstrap_ci(x, y, "spearman", 200, np.random.default_rng(1))
    assert a == b
    low, high, n_res, how = a
    assert n_res == 200 and how.startswith("none")  # too many undefined: no CI
    assert math.isnan(low) and math.isnan(high)
    x = np.arange(30.0) % 6
    y = x + np.random.default_rng(2).normal(0, 1, 30)
    low, high, _, _ = bootstrap_ci(x, y, "kendall", 300, np.random.default_rng(1))
    assert -1 <= low < stats.kendalltau(x, y).statistic < high <= 1


def test_small_and_constant_slices_give_empty_statistics(tmp_path):
    records = [
        make_record("resnet50", optimizer="adam", lr=1e-3, seed=0, metrics={"test_acc": 0.5}),
        make_record("vgg16", optimizer="adam", lr=1e-3, seed=0, metrics={"test_acc": 0.6}),
        *(make_record(m, optimizer="sgd", lr=1e-2, seed=0, metrics={"test_acc": 0.7})
          for m in ("resnet50", "vgg16", "densenet121", "mobilenetv2_100")),
        make_record("vgg16", optimizer="sgd", lr=1e-2, seed=1, status="failed", metrics={}),
    ]
    write_sweep(tmp_path, records)
    col = collect_runs([tmp_path])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning spam either
        corr = correlation_table(col.runs, col.metrics, n_boot=20)
    small = corr[corr["scope"] == "optimizer=adam,lr=0.001"]
    constant = corr[corr["scope"] == "optimizer=sgd,lr=0.01"]
    assert set(small["n"]) == {2} and set(constant["n"]) == {4}  # runs = configurations here
    empty = ["r", "p", "ci_low", "ci_high", "p_holm", "p_bh"]
    assert small[empty].isna().all().all() and constant[empty].isna().all().all()
    assert corr[corr["scope"] == "all"]["r"].notna().all()


def test_critical_r_is_where_pearson_p_hits_alpha():
    for n in (5, 12, 40, 1000):
        r = critical_r(n)
        t = r * math.sqrt((n - 2) / (1 - r * r))
        assert 2 * stats.t.sf(t, n - 2) == pytest.approx(0.05, rel=1e-9)
    assert math.isnan(critical_r(2))


@pytest.fixture(scope="module")
def partial_sweep(tmp_path_factory):
    """Partial freezing: every architecture at several trainable counts."""
    records = synthetic_records(6 * 5 * 2 * 2 * 2, optimizers=("adam", "sgd"), lrs=(1e-3, 1e-4),
                                partial_stages=(1, 2, 3), p_failed=0.05, p_diverged=0.0,
                                rng_seed=3)
    root = tmp_path_factory.mktemp("partial")
    write_sweep(root, records)
    return records, collect_runs([root])


def test_partial_correlation_equals_residual_correlation(partial_sweep):
    _, col = partial_sweep
    part = partial_correlations(col.runs, col.metrics)
    rm = rm_correlations(col.runs, col.metrics)
    used = col.runs[col.runs["status"] != "failed"]
    for metric in ("test_acc", "gen_f1"):
        row = part[(part["scope"] == "all") & (part["y"] == metric)
                   & (part["control"] == "architecture")].iloc[0]
        dummies = pd.get_dummies(used["model"], dtype=float).to_numpy()
        resid = [v - dummies @ np.linalg.lstsq(dummies, v, rcond=None)[0]
                 for v in (used["log10_trainable"].to_numpy(), used[metric].to_numpy())]
        r = stats.pearsonr(*resid).statistic
        df = len(used) - dummies.shape[1] - 1
        t = r * math.sqrt(df / (1 - r * r))
        assert row["applicable"] and row["r"] == pytest.approx(r, rel=1e-9)
        assert row["p"] == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-6)
        # rmcorr is the same model: same r and p, slope sign agrees
        rrow = rm[(rm["scope"] == "all") & (rm["y"] == metric)].iloc[0]
        assert rrow["r_rm"] == pytest.approx(r, rel=1e-9)
        assert rrow["p"] == pytest.approx(row["p"], rel=1e-6)
        assert np.sign(rrow["slope"]) == np.sign(r) and rrow["df"] == df


def test_rmcorr_not_applicable_without_within_model_variation(sweep):
    _, col, _ = sweep
    rm = rm_correlations(col.runs, col.metrics)
    assert not rm[rm["scope"] == "freeze=base"]["applicable"].any()
    assert rm[rm["scope"] == "freeze=base"]["r_rm"].isna().all()
    assert rm[rm["scope"] == "all"]["applicable"].all()  # base vs none within a model


def test_regression_cell_slopes_equal_per_cell_least_squares(sweep):
    _, col, _ = sweep
    coefs, slopes = regression(col.runs, col.metrics)
    used = col.runs[col.runs["status"] != "failed"]
    assert {"log10_trainable", "Intercept"} <= set(coefs["term"])
    assert coefs[["ci_low", "ci_high"]].notna().all().all()
    for row in slopes[slopes["y"] == "test_acc"].itertuples():
        cell = used[(used["optimizer"] == row.optimizer) & (used["lr"] == row.lr)]
        cell = cell[np.isfinite(cell["test_acc"])]
        ref = stats.linregress(cell["log10_trainable"], cell["test_acc"])
        assert row.slope == pytest.approx(ref.slope, rel=1e-8)
        assert row.ci_low < row.slope < row.ci_high
    # the base slope of the interaction model is the slope of its reference cell
    ref_cell = slopes[(slopes["y"] == "test_acc") & (slopes["optimizer"] == "adam")
                      & (slopes["lr"] == 1e-4)]
    base = coefs[(coefs["y"] == "test_acc") & (coefs["term"] == "log10_trainable")]
    assert base["coef"].item() == pytest.approx(ref_cell["slope"].item(), rel=1e-8)


def test_seed_spread_matches_groupby(sweep):
    records, col, _ = sweep
    spread = seed_spread(col.runs, col.run_axes, col.metrics)
    frame = pd.DataFrame([{**r["run"], "test_acc": (r["metrics"] or {}).get("test_acc")}
                          for r in records if r["status"] != "failed"])
    frame["test_acc"] = pd.to_numeric(frame["test_acc"])
    ref = frame.groupby(["model", "freeze", "optimizer", "lr"])["test_acc"].agg(["mean", "std"])
    assert (spread["n_seeds"] >= 2).all() and len(spread) > 0
    for row in spread.itertuples():
        want = ref.loc[(row.model, row.freeze, row.optimizer, row.lr)]
        assert row.test_acc_mean == pytest.approx(want["mean"])
        if not math.isnan(want["std"]):
            assert row.test_acc_sd == pytest.approx(want["std"])

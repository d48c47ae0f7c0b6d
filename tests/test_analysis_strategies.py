"""Strategies in the analysis: effective robustness against an independent computation, the
within-architecture dose-response, the Pareto front, and the report's strategies section."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from paramcorr.analysis import run_analysis
from paramcorr.analysis.collect import collect_runs
from paramcorr.analysis.configurations import configuration_means
from paramcorr.analysis.strategy_stats import (
    DOSE_FAMILY,
    EFFECTIVE_ROBUSTNESS,
    LOGIT_CLIP,
    add_effective_robustness,
    dose_response,
    pareto_front,
)
from paramcorr.analysis.synthetic import make_record, write_sweep

# resnet18-like counts per strategy (trainable), and option keys that make configurations.
ARMS = [("base", 2_565, {}), ("bitfit", 12_000, {}), ("norm", 12_100, {}),
        ("lora", 40_000, {"lora_rank": 1}), ("lora", 160_000, {"lora_rank": 4}),
        ("surgical", 2_400_000, {"surgical_block": 4}), ("lpft", 11_200_000,
                                                           {"probe_epochs": 1}),
        ("none", 11_200_000, {})]


def _records() -> list[dict]:
    rng = np.random.default_rng(3)
    out = []
    for model, shift in (("resnet18", 0.0), ("convnext_atto", 0.05)):
        for freeze, trainable, axes in ARMS:
            for lr in (1e-3, 1e-2):
                for seed in (0, 1):
                    test = float(np.clip(0.5 + 0.04 * np.log10(trainable) + shift
                                         + rng.normal(0, 0.02), 0, 1))
                    gen = float(np.clip(test - 0.2 + rng.normal(0, 0.03), 0, 1))
                    metrics = dict.fromkeys(("train_acc", "train_loss", "val_acc", "val_loss",
                                             "test_f1", "test_loss", "gen_f1", "gap_acc",
                                             "gap_loss"), 0.5)
                    metrics.update(test_acc=test, gen_acc=gen)
                    rec = make_record(model, freeze, "adam", lr, seed, trainable=trainable,
                                      metrics=metrics, total=11_200_000, **axes)
                    rec["config_hash"] += repr(sorted(axes.items()))
                    out.append(rec)
    out[0]["metrics"]["test_acc"] = 1.0  # an exact 1: clipped, still a finite logit
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("strategies")
    write_sweep(root, _records())
    return root


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p / (1 - p))


def test_effective_robustness_equals_an_independent_computation(sweep) -> None:
    col = collect_runs([sweep])
    runs = col.runs
    add_effective_robustness(runs, col.metrics, col.run_axes)
    assert EFFECTIVE_ROBUSTNESS in col.metrics
    # Independent: configurations by hand (every axis but seed, from the records), the line
    # by numpy's polyfit, the residual per run.
    keys = ["model", "freeze", "lr", "lora_rank", "surgical_block", "probe_epochs"]
    frame = runs.assign(lt=_logit(runs["test_acc"].to_numpy()),
                        lg=_logit(runs["gen_acc"].to_numpy()))
    means = frame.groupby(keys, dropna=False)[["lt", "lg"]].mean()
    assert len(means) == 2 * len(ARMS) * 2
    slope, intercept = np.polyfit(means["lt"], means["lg"], 1)
    expected = frame["lg"] - (intercept + slope * frame["lt"])
    np.testing.assert_allclose(runs[EFFECTIVE_ROBUSTNESS], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.slow
def test_analysis_writes_the_strategies_outputs(sweep, tmp_path) -> None:
    result = run_analysis([sweep], tmp_path / "out", n_boot=50)
    runs = pd.read_csv(result.files["runs"])
    assert runs[EFFECTIVE_ROBUSTNESS].notna().all()
    # Analysed like a metric: correlation rows, the dose-response, the report.
    corr = pd.read_csv(result.files["correlations"])
    assert (corr["y"] == EFFECTIVE_ROBUSTNESS).any()
    report = result.files["report"].read_text()
    assert "## Strategies within each architecture" in report
    assert "plots/pareto_test_acc.png" in report and "decades" in report
    assert (tmp_path / "out" / "plots" / "pareto_test_acc.png").exists()
    assert (tmp_path / "out" / "strategies.tex").exists()
    table = pd.read_csv(result.files["strategies"])
    assert set(table["freeze"]) == {a[0] for a in ARMS}


def test_dose_response_per_architecture_matches_scipy(sweep) -> None:
    from scipy import stats

    col = collect_runs([sweep])
    configs = configuration_means(col.runs, col.metrics, col.run_axes)
    table = dose_response(configs, ["test_acc"])
    assert set(table["family"]) == {DOSE_FAMILY}
    for model, row in table.set_index("model").iterrows():
        sub = configs[configs["model"] == model]
        res = stats.linregress(sub["log10_trainable"], sub["test_acc"])
        assert row["n"] == len(sub) == len(ARMS) * 2
        assert row["r"] == pytest.approx(res.rvalue) and row["slope"] == pytest.approx(res.slope)
        assert row["slope_se"] == pytest.approx(res.stderr)
        assert row["r"] > 0.5  # the synthetic dose-response is there
    p = table["p"].to_numpy()
    assert table["p_holm"].to_numpy() == pytest.approx(np.minimum(
        1, np.maximum.accumulate(np.sort(p) * (len(p) - np.arange(len(p)))))[np.argsort(
            np.argsort(p))])


def test_pareto_front_keeps_only_undominated_points() -> None:
    trainable = np.array([10, 100, 100, 1000, 50, 5000])
    metric = np.array([0.5, 0.6, 0.7, 0.65, 0.4, 0.9])
    assert pareto_front(trainable, metric).tolist() == [0, 2, 5]

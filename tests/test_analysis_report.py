"""End to end: run_analysis and the analyze.py CLI write the report, tables and plots."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from analysis_fixtures import make_record, synthetic_records, write_junk, write_sweep
from paramcorr.analysis import run_analysis
from paramcorr.analysis.claims import CLAIMS_COLUMNS
from paramcorr.analysis.stats import CORR_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    sweep = tmp_path_factory.mktemp("sweep")
    write_sweep(sweep, synthetic_records(144, rng_seed=2))
    write_junk(sweep)
    result = run_analysis([sweep], None, n_boot=30, seed=1)
    return sweep, result


def test_writes_the_four_outputs_and_extras(analysed):
    sweep, result = analysed
    out = sweep / "analysis"
    assert result.out_dir == out
    for name in ("runs.csv", "correlations.csv", "report.md", "paper_table.csv",
                 "partial_correlations.csv", "rm_correlations.csv", "regression.csv",
                 "seed_spread.csv"):
        assert (out / name).is_file(), name
    assert list(pd.read_csv(out / "correlations.csv").columns) == CORR_COLUMNS
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == result.n_records == 144
    assert {"run_dir", "log10_trainable", "status"} <= set(runs.columns)
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["heatmap_pearson.png", "scatter_gen_acc.png", "scatter_gen_f1.png",
                    "scatter_test_acc.png", "scatter_test_f1.png"]  # no partial runs
    for png in (out / "plots").glob("*.png"):
        assert Image.open(png).info["dpi"][0] >= 150
        pdf = png.with_suffix(".pdf")  # every figure also as PDF, for a paper
        assert pdf.read_bytes()[:5] == b"%PDF-"
    assert result.n_skipped == 6 and result.n_used + result.n_failed == 144
    corr = pd.read_csv(out / "correlations.csv")
    assert set(corr["unit"]) == {"run", "configuration"}
    assert corr["family"].str.contains("confirmatory").any()
    assert set(corr["family"]) - {"exploratory"} <= {f for f in corr["family"]
                                                     if "confirmatory" in f}
    claims = pd.read_csv(out / "claims.csv")
    assert list(claims.columns) == CLAIMS_COLUMNS
    assert set(claims["claim"]) == {"a", "b", "c"}
    assert set(claims["verdict"]) <= {"supported", "contradicted", "inconclusive"}
    for tex in ("paper_table.tex", "claims.tex"):
        text = (out / tex).read_text()
        assert "\\begin{tabular}" in text and "\\bottomrule" in text
    assert "inconclusive" in (out / "claims.tex").read_text()
    power = pd.read_csv(out / "power.csv")
    assert {"critical_r", "r80", "r80_holm"} <= set(power.columns)


def test_report_names_every_paper_cell_and_embeds_only_existing_images(analysed):
    sweep, result = analysed
    text = (result.out_dir / "report.md").read_text()
    runs = pd.read_csv(result.out_dir / "runs.csv")
    for (opt, lr), _ in runs.groupby(["optimizer", "lr"]):
        assert f"{opt}, lr={float(lr)!r}" in text
    for section in ("## How to read this", "## Findings", "## The paper's table",
                    "### Within freeze=base", "### Within freeze=none", "### Seed spread",
                    "### Power", "### Regression", "rmcorr", "### Divergence",
                    "#### Strategy or count?", "### Decision rules"):
        assert section in text
    # the report opens with a short answer, then the claims: the verdicts, then their rules
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[:2] == ["## Short answer", "## The study's claims"]
    claims = text.split("## The sweep")[0]
    assert claims.index("### Verdicts") < claims.index("### Decision rules")
    for claim in ("a", "b", "c"):
        assert f"- **{claim} — " in claims  # a generated sentence per claim
    # each sentence once: Findings points to the claims instead of repeating them
    sentences = [line for line in text.splitlines() if line.startswith("- **") and " — " in line]
    assert len(sentences) == 3 and all(text.count(s) == 1 for s in sentences)
    assert "without diverged" in claims  # the verdict re-derived without diverged runs
    # the family line says which family each claim uses, and the combined rate
    family_line = next(line for line in text.splitlines() if "Family sizes" in line)
    assert all(f"{k} — " in family_line for k in "abc")
    assert "Bonferroni" in family_line
    assert "configurations (" in claims and "min detectable" not in text
    assert "critical |r|" in text and "80%" in text
    assert "confirmatory: pooled" in text and "tests" in text  # family sizes stated
    assert "frozen vs fine-tuned" in text and "more parameters" in text
    embedded = IMAGE.findall(text)
    assert embedded and all((result.out_dir / p).is_file() for p in embedded)
    assert {Path(p).name for p in embedded} == {p.name for p in result.plots}
    assert all(p.startswith("plots/") for p in embedded)
    assert str(sweep) in text and "144" in text


@pytest.mark.slow
def test_partial_freezing_plot_only_with_partial_runs_and_stale_plots_removed(tmp_path):
    sweep = tmp_path / "partial"
    write_sweep(sweep, synthetic_records(60, models=("resnet50", "vgg16"), lrs=(1e-3,),
                                         partial_stages=(1, 2), rng_seed=4))
    out = tmp_path / "out"
    result = run_analysis([sweep], out, n_boot=20)
    assert (out / "plots" / "partial_test_acc.png") in result.plots
    assert "plots/partial_test_acc.png" in (out / "report.md").read_text()

    base_only = tmp_path / "base"
    write_sweep(base_only, synthetic_records(24, models=("resnet50", "vgg16", "densenet121"),
                                             freezes=("base",), lrs=(1e-3,), rng_seed=5))
    result = run_analysis([base_only], out, n_boot=20)
    text = (out / "report.md").read_text()
    assert not (out / "plots" / "partial_test_acc.png").exists()
    assert "partial_test_acc" not in text
    assert "**Not applicable**" in text  # no within-architecture variation


def test_all_failed_and_axisless_records_still_give_a_report(tmp_path):
    write_sweep(tmp_path / "failed", [make_record(seed=s, status="failed", metrics={})
                                      for s in range(3)])
    result = run_analysis([tmp_path / "failed"], tmp_path / "out1", n_boot=10)
    assert result.n_used == 0 and result.plots == []
    assert "nothing could be tested" in (tmp_path / "out1" / "report.md").read_text()

    bare = []
    for i, model in enumerate(("a", "b", "c", "d")):
        rec = make_record(model, trainable=10 ** (i + 3), metrics={"test_acc": 0.5 + i / 10})
        for key in ("optimizer", "lr", "freeze", "seed"):
            del rec["run"][key]
        bare.append(rec)
    write_sweep(tmp_path / "bare", bare)
    result = run_analysis([tmp_path / "bare"], tmp_path / "out2", n_boot=10)
    corr = pd.read_csv(tmp_path / "out2" / "correlations.csv")
    assert set(corr["scope"]) == {"all"} and corr["n"].eq(4).all()
    assert (tmp_path / "out2" / "report.md").is_file()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "analyze.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


@pytest.mark.slow
def test_cli_writes_outputs_and_prints_one_summary_line(tmp_path):
    write_sweep(tmp_path / "a", synthetic_records(30, rng_seed=1))
    write_sweep(tmp_path / "b", synthetic_records(30, rng_seed=2, lrs=(1e-5,)), 100)
    out = tmp_path / "out"
    proc = _cli(str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--n-boot", "20",
                "--seed", "4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "60 records" in lines[0]
    for name in ("runs.csv", "correlations.csv", "report.md"):
        assert (out / name).is_file()
    assert list((out / "plots").glob("*.png"))
    assert len(pd.read_csv(out / "runs.csv")) == 60  # union of the two sweeps


def test_cli_on_empty_dir_fails_with_one_line(tmp_path):
    proc = _cli(str(tmp_path))
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "no readable result.json found" in err[0]
    assert "check the path" in err[0]

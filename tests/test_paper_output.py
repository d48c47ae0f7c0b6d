"""Paper-ready output: figures a venue accepts (Type 42 fonts, column sizes, reader labels,
no empty heatmap panels) and LaTeX tables that compile in a plain article."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis_fixtures import synthetic_records, write_sweep
from paramcorr.analysis import run_analysis
from paramcorr.analysis.labels import lr_math
from paramcorr.analysis.latex import scope_text
from paramcorr.analysis.plots import (
    FULL_WIDTH_IN,
    ONE_COLUMN_IN,
    PAPER_STYLE,
    _heatmap_panels,
)

MEDIA_BOX = re.compile(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small sweep: 3 backbones, base / none / partial, Adam and SGD at one lr."""
    sweep = tmp_path_factory.mktemp("small")
    write_sweep(sweep, synthetic_records(
        24, models=("resnet50", "mobilenetv2_100", "densenet121"), lrs=(1e-3,),
        partial_stages=(2,), p_failed=0, p_diverged=0))
    return run_analysis([sweep], None, n_boot=0)


def _type3_fonts(pdf: bytes) -> int:
    return len(re.findall(rb"/Subtype\s*/Type3", pdf))


def test_the_type3_check_sees_matplotlibs_default_fonts(tmp_path):
    """The check below can fail: matplotlib's default (pdf.fonttype 3) is caught by it."""
    fig = Figure(figsize=(2, 2))
    fig.subplots().set_xlabel("Test accuracy")
    with matplotlib.rc_context({"pdf.fonttype": 3}):
        fig.savefig(tmp_path / "t3.pdf")
    assert _type3_fonts((tmp_path / "t3.pdf").read_bytes()) > 0


def test_every_pdf_embeds_truetype_at_a_paper_width(small):
    pdfs = [p.with_suffix(".pdf") for p in small.plots]
    assert {p.stem for p in pdfs} >= {"scatter_test_acc", "heatmap_pearson",
                                      "partial_test_acc"}
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert _type3_fonts(data) == 0, pdf.name
        assert b"/FontFile2" in data, pdf.name  # TrueType font programs embedded
        width_pt = float(MEDIA_BOX.search(data).group(1))
        assert width_pt / 72 in (ONE_COLUMN_IN, FULL_WIDTH_IN), (pdf.name, width_pt)
    assert PAPER_STYLE["pdf.fonttype"] == PAPER_STYLE["ps.fonttype"] == 42
    assert 7 <= PAPER_STYLE["font.size"] <= 9


def test_pdffonts_lists_no_type3_where_poppler_is_installed(small):
    if shutil.which("pdffonts") is None:
        pytest.skip("poppler's pdffonts is not installed")
    for png in small.plots:
        out = subprocess.run(["pdffonts", str(png.with_suffix(".pdf"))], capture_output=True,
                             text=True, check=True).stdout
        fonts = out.splitlines()[2:]
        assert fonts and not any("Type 3" in line for line in fonts), out


def _pearson_rows(r_by_scope: dict[str, float], freeze: dict[str, object]) -> pd.DataFrame:
    rows = []
    for scope, r in r_by_scope.items():
        opt, lr = scope.split(",")[:2]
        rows.append({"scope": scope, "y": "test_acc", "r": r, "p_holm": 0.5,
                     "optimizer": opt.split("=")[1], "lr": float(lr.split("=")[1]),
                     "freeze": freeze[scope]})
    return pd.DataFrame(rows)


def test_heatmap_leaves_out_empty_and_duplicate_panels():
    # A small sweep: within each strategy a cell has too few configurations (no r).
    pear = _pearson_rows(
        {"optimizer=adam,lr=0.001": 0.5, "optimizer=adam,lr=0.001,freeze=base": np.nan,
         "optimizer=adam,lr=0.001,freeze=none": np.nan},
        {"optimizer=adam,lr=0.001": None, "optimizer=adam,lr=0.001,freeze=base": "base",
         "optimizer=adam,lr=0.001,freeze=none": "none"})
    assert [title for title, _, _ in _heatmap_panels(pear, ["test_acc"])] == [
        "pooled over strategies"]
    # One strategy only (a depth sweep): its panel equals the pooled one, shown once, named.
    pear = _pearson_rows(
        {"optimizer=adam,lr=0.001": 0.3, "optimizer=adam,lr=0.001,freeze=partial": 0.3},
        {"optimizer=adam,lr=0.001": None, "optimizer=adam,lr=0.001,freeze=partial": "partial"})
    assert [title for title, _, _ in _heatmap_panels(pear, ["test_acc"])] == [
        "partial freezing"]


def test_learning_rates_and_scopes_read_as_a_paper_writes_them():
    assert lr_math(1e-3) == "10^{-3}" and lr_math(0.01) == "10^{-2}"
    assert lr_math(3e-4) == "3 \\times 10^{-4}"
    assert scope_text("optimizer=sgd,lr=0.0001,freeze=none") == \
        "SGD, lr $10^{-4}$, full fine-tuning"
    assert scope_text("every optimizer x lr cell") == "every optimizer x lr cell"


def _outside_math(tex: str) -> str:
    return re.sub(r"\$[^$]*\$", "", tex)


def test_latex_source_is_escaped_with_math_relations_and_true_minus(small):
    out = small.out_dir
    paper = (out / "paper_table.tex").read_text()
    claims = (out / "claims.tex").read_text()
    for tex in (paper, claims):
        text = _outside_math(tex)
        assert "<" not in text and ">" not in text  # "p ¡ 0.05" in a plain article
        assert not re.search(r"(?<!\\)_", text)  # raw underscores do not compile
        assert not re.search(r"(?<!\\)%", text)  # a raw % comments out the rest
        assert not re.search(r"(?<![\w$])-\d", text)  # numbers only in math: true minus
    assert "$p < 0.05$" in paper
    assert "frozen base" in paper and "full fine-tuning" in paper
    assert "partial freezing" in paper and " none " not in paper
    assert "Pearson $r$" in paper and "Estimate" in claims and "Statistic" in claims
    values = pd.read_csv(out / "paper_table.csv")
    negative = values["gen_acc_r"][values["gen_acc_r"] < 0]
    if len(negative):  # a negative r is written in math mode, e.g. $-0.42$
        assert f"${negative.iloc[0]:.2f}$" in paper


def test_latex_compiles_in_a_plain_article(small, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("no TeX installation (pdflatex) on this machine")
    for name in ("paper_table.tex", "claims.tex"):
        shutil.copy(small.out_dir / name, tmp_path / name)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\input{paper_table.tex}\n\\input{claims.tex}\n\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           "doc.tex"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "doc.pdf", "-"], cwd=tmp_path,
                              capture_output=True, text=True, check=True).stdout
        assert "¡" not in text and "p < 0.05" in text


def test_report_leads_with_a_short_answer_of_three_verdicts(small):
    text = (small.out_dir / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Short answer"
    answer = text.split("## Short answer", 1)[1].split("\n## ", 1)[0]
    verdicts = [line for line in answer.splitlines() if line.startswith("- **")]
    assert [v[4] for v in verdicts] == ["a", "b", "c"]
    assert "nan%" not in text


def test_report_names_pooled_epoch_budgets(tmp_path):
    from analysis_fixtures import make_record, write_record

    for i, (epochs, model) in enumerate([(5, "resnet50"), (10, "resnet50"),
                                         (5, "densenet121"), (10, "vgg16")]):
        record = make_record(model, seed=i)
        record["run"]["epochs"] = record["run"]["epochs_configured"] = epochs
        write_record(tmp_path / "sweep" / str(i), record)
    result = run_analysis([tmp_path / "sweep"], tmp_path / "out", n_boot=0)
    text = (result.out_dir / "report.md").read_text()
    assert "epoch budgets pooled in this analysis: 5, 10" in text


def test_pdf_font_subsetting_logs_nothing_at_info(tmp_path, caplog):
    """Writing the PDFs subsets their TrueType fonts through fontTools, which logs every
    table it prunes at INFO ('glyf pruned', 'hmtx subsetted'): under Hydra's INFO logging
    that was hundreds of lines per analysis. None of them may reach the root logger."""
    sweep = tmp_path / "sweep"
    write_sweep(sweep, synthetic_records(12, models=("resnet50", "densenet121"), lrs=(1e-3,),
                                         p_failed=0, p_diverged=0))
    caplog.set_level(logging.INFO)  # the root logger at INFO, as Hydra's job logging sets it
    result = run_analysis([sweep], tmp_path / "out", n_boot=0)
    assert any(p.with_suffix(".pdf").exists() for p in result.plots)
    assert any(r.name.startswith("paramcorr") for r in caplog.records)  # INFO does reach it
    noise = [r for r in caplog.records if r.name.startswith("fontTools")]
    assert not noise, f"{len(noise)} fontTools records, e.g. {noise[0].getMessage()!r}"

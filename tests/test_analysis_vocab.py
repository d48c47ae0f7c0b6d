"""The analysis's vocabulary is stated once (issue 18): vocab.py is the ground floor, the
other modules import from it, and metric roles keep displayed metrics out of the
confirmatory families."""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import paramcorr.analysis as analysis_pkg
from paramcorr.analysis import stats, vocab
from paramcorr.analysis.corrections import families

ANALYSIS = Path(analysis_pkg.__file__).parent
# synthetic.py writes records (its own lr / metric literals are data, not vocabulary).
OWN_VOCAB = {"vocab.py", "synthetic.py"}


def test_vocab_imports_nothing_from_the_analysis_package():
    tree = ast.parse((ANALYSIS / "vocab.py").read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names]
    assert not [m for m in imported if m and m.startswith("paramcorr.analysis")]


def _code_literals(path: Path) -> list[str]:
    """String and number literals outside docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(first.value.lineno)
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type in (tokenize.STRING, tokenize.NUMBER) and tok.start[0] not in docstrings:
            out.append(tok.string)
    return out


@pytest.mark.parametrize("path", sorted(p for p in ANALYSIS.glob("*.py")
                                        if p.name not in OWN_VOCAB), ids=lambda p: p.name)
def test_no_module_restates_the_vocabulary(path):
    literals = _code_literals(path)
    assert "0.05" not in literals and "0.95" not in literals  # vocab.ALPHA / CONFIDENCE
    assert not [s for s in literals if "log10_trainable" in s]  # vocab.X
    # ... nor in the prose it writes (report, LaTeX): formatted from ALPHA / CONFIDENCE.
    assert not [s for s in literals if s[:1] in "\"'fF" and any(
        text in s for text in ("0.05", "95%", "95\\\\%"))]
    tree = ast.parse(path.read_text())
    assigned = {t.id for node in ast.walk(tree) if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)}
    assert not assigned & {"ALPHA", "CONFIDENCE", "X", "SCOPE_AXES", "MAIN_METRICS",
                           "USED_STATUSES"}


def test_cell_predicate():
    frame = pd.DataFrame({"optimizer": ["adam", "adam", None, "sgd"],
                          "lr": [1e-3, np.nan, np.nan, 1e-2],
                          "freeze": [None, None, "base", "none"]})
    assert vocab.is_cell(frame).tolist() == [True, False, False, True]
    assert vocab.is_cell(frame, pooled=True).tolist() == [True, False, False, False]
    mask = np.ones(1, dtype=bool)
    assert vocab.Scope("x", {"optimizer": "adam", "lr": 1e-3}, mask).is_cell
    assert vocab.Scope("x", {"optimizer": "adam", "lr": 1e-3, "freeze": "base"}, mask).is_cell
    assert not vocab.Scope("x", {"optimizer": "adam"}, mask).is_cell
    assert not vocab.Scope("all", {}, mask).is_cell


def test_a_displayed_metric_never_joins_a_confirmatory_family():
    """Only CONFIRMATORY_METRICS define the confirmatory families: gap_acc (a model metric)
    on configurations in a paper cell stays exploratory."""
    rows = [{"optimizer": "adam", "lr": 1e-3, "freeze": f, "unit": "configuration",
             "method": "pearson", "y": y}
            for f in (None, "base") for y in ("test_acc", "gap_acc")]
    got = families(pd.DataFrame(rows)).tolist()
    assert got == [vocab.POOLED, vocab.EXPLORATORY, "confirmatory: freeze=base",
                   vocab.EXPLORATORY]
    assert "gap_acc" not in vocab.CONFIRMATORY_METRICS


def test_stats_keeps_the_names_importers_read():
    """paramcorr.analysis.stats stays a facade over the split modules."""
    for name in ("CORR_COLUMNS", "NO_RUN_CI", "X", "ALPHA", "CONFIDENCE", "POOLED",
                 "EXPLORATORY", "MODEL_METRICS", "bootstrap_ci", "bootstrap_rng",
                 "correlation_table", "critical_r", "holm_adjust", "kendall_codes",
                 "spearman_codes", "partial_correlations", "regression", "rm_correlations",
                 "seed_spread", "divergence_table", "paper_table", "strategy_vs_count",
                 "is_number", "levels", "format_value", "pearson_fields", "adjust_pvalues",
                 "family_sizes", "power_table", "used_mask", "scopes"):
        assert hasattr(stats, name), name
    assert stats.X == vocab.X == "log10_trainable"
    assert (stats.ALPHA, stats.CONFIDENCE) == (0.05, 0.95)

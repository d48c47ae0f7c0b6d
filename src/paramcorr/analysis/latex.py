"""Paper-ready LaTeX tables (pandas Styler): the paper table and the claims.

Each file is a ``table`` float that compiles in a plain ``article`` with
``\\usepackage{booktabs}`` and nothing else. Text cells are escaped by pandas
(``escape="latex"``); numbers are written in math mode, so a negative reads with a true minus
sign, and right-aligned with a fixed number of decimals, so their decimal points line up. A
significance mark hangs to the right of its number (``\\rlap``) and leaves that alignment
alone. Strategies, optimizers and metrics carry the names readers use (labels.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paramcorr.analysis.labels import lr_math, metric_label, optimizer_label, strategy_label
from paramcorr.analysis.vocab import ALPHA, CONFIDENCE, DISPLAYED_METRICS, is_number

NOT_AVAILABLE = "n/a"
PREAMBLE = "\\usepackage{booktabs}"  # what a document needs to \input these tables


def math_number(value: object, decimals: int = 2) -> str:
    """``$-0.52$``: math mode for a true minus sign; 'n/a' when not a number."""
    if not is_number(value):
        return NOT_AVAILABLE
    return f"${float(value):.{decimals}f}$"


def math_p(value: object) -> str:
    """A p-value: three decimals, ``$<0.001$`` below."""
    if not is_number(value):
        return NOT_AVAILABLE
    return "$<0.001$" if float(value) < 0.001 else f"${float(value):.3f}$"


def _starred(number: str, significant: bool) -> str:
    return f"{number}\\rlap{{$^{{*}}$}}" if significant else number


def _r_cell(r: object, p_holm: object) -> str:
    return _starred(math_number(r), is_number(p_holm) and float(p_holm) < ALPHA)


def scope_text(scope: object) -> str:
    """A scope for readers: 'optimizer=adam,lr=0.001' -> 'Adam, lr $10^{-3}$'.

    Display only (the CSVs keep the scope as written); a scope that is not key=value pairs
    (e.g. 'every optimizer x lr cell') stays as words. Returns LaTeX (escaped text).
    """
    text = str(scope)
    pairs = [part.split("=", 1) for part in text.split(",")]
    if not all(len(p) == 2 for p in pairs):
        return _escape(text)
    words = {"optimizer": lambda v: _escape(optimizer_label(v)),
             "freeze": lambda v: _escape(strategy_label(v)),
             "lr": lambda v: f"lr ${lr_math(float(v))}$"}
    return ", ".join(words.get(k, lambda v, k=k: _escape(f"{k}={v}"))(v) for k, v in pairs)


def _escape(text: str) -> str:
    """Escape a text for LaTeX through pandas' own escaping (the tables' header, caption)."""
    frame = pd.DataFrame({"x": [text]})
    styled = frame.style.format(escape="latex").hide(axis="index").hide(axis="columns")
    row = next(line for line in styled.to_latex().splitlines() if line.endswith("\\\\"))
    return row.removesuffix("\\\\").strip()


def paper_frame(paper: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The paper table as displayed: strategy, optimizer, lr, configurations (runs),
    diverged runs, Pearson r per metric (* where it survives Holm in its family)."""
    wanted = [m for m in DISPLAYED_METRICS if m in metrics]
    rows = []
    for _, row in paper.iterrows():
        out = {("", "Strategy"): strategy_label(row["strategy"], short=True),
               ("", "Optimizer"): optimizer_label(row["optimizer"]),
               ("", "lr"): f"${lr_math(row['lr'])}$",
               ("", "$n$ (runs)"):
                   f"{int(row['n_configs'])} ({int(row['n_runs'])})",
               ("", "Div."): str(int(row["n_diverged"]))}
        for m in wanted:
            out[(R_HEADER, metric_label(m, short=True))] = _r_cell(row[f"{m}_r"],
                                                                   row[f"{m}_p_holm"])
        rows.append(out)
    frame = pd.DataFrame(rows)
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    return frame


R_HEADER = "Pearson $r$"


def claims_frame(claims: pd.DataFrame) -> pd.DataFrame:
    """One row per claim and scope: what was estimated (its own statistic: a correlation,
    or for claim b a difference of correlations), its 95% CI, Holm p, power and verdict."""
    def ci(lo: object, hi: object) -> str:
        if not (is_number(lo) and is_number(hi)):
            return NOT_AVAILABLE
        return f"$[{float(lo):.2f}, {float(hi):.2f}]$"

    return pd.DataFrame({
        "Claim": claims["claim"].astype(str),
        "Scope": [scope_text(s) for s in claims["scope"]],
        "Statistic": claims["statistic"].astype(str),
        "Estimate": [math_number(v) for v in claims["estimate"]],
        f"{CONFIDENCE * 100:.0f}\\% CI": [ci(lo, hi) for lo, hi
                                           in zip(claims["ci_low"], claims["ci_high"],
                                                  strict=True)],
        "$p$ (Holm)": [math_p(v) for v in claims["p_holm"]],
        "Power": [f"${float(v):.0%}$".replace("%", "\\%") if is_number(v) else NOT_AVAILABLE
                  for v in claims["power"]],
        "Verdict": claims["verdict"].astype(str)})


def _to_latex(frame: pd.DataFrame, text_columns: list, latex_columns: list, caption: str,
              label: str, wrap: dict | None = None, size: str = "small") -> str:
    """``frame`` as a booktabs table: text columns escaped by pandas and, like the columns
    already in LaTeX, left-aligned; the (math-mode) number columns right-aligned. ``wrap``:
    columns set in a paragraph box of the given width (long text)."""
    wrap = {c: f"p{{{width}}}" for c, width in (wrap or {}).items()}
    left = [*text_columns, *latex_columns]
    align = "".join(wrap.get(c, "l" if c in left else "r") for c in frame.columns)
    styler = frame.style.hide(axis="index")
    for column in text_columns:
        # pandas escapes first, then formats: a minus between words becomes a true one, and
        # a wrapped column is set ragged-right (justified narrow boxes leave holes).
        ragged = "\\raggedright " if column in wrap else ""
        styler = styler.format(lambda text, ragged=ragged: ragged + text.replace(" - ", " $-$ "),
                               escape="latex", subset=[column])
    for column in latex_columns:
        if column in wrap:
            styler = styler.format(lambda text: "\\raggedright " + text, subset=[column])
    text = styler.to_latex(caption=caption, label=label, hrules=True, position="htbp",
                           position_float="centering", column_format=align,
                           multicol_align="c")
    # Tables in papers are set a size smaller than the text, with tighter columns.
    return text.replace("\\centering\n",
                        f"\\centering\n\\{size}\n\\setlength{{\\tabcolsep}}{{4pt}}\n", 1)


def write_latex(paper: pd.DataFrame, claims: pd.DataFrame, metrics: list[str],
                out_dir: Path) -> dict[str, Path]:
    """paper_table.tex and claims.tex (booktabs rules: needs \\usepackage{booktabs})."""
    out: dict[str, Path] = {}
    if len(paper):
        path = out_dir / "paper_table.tex"
        frame = paper_frame(paper, metrics)
        path.write_text(_to_latex(
            frame, [("", "Strategy"), ("", "Optimizer")], [],
            "Pearson $r$ of $\\log_{10}$ trainable parameters with each metric over "
            "configurations (a configuration's score is the mean over its seeds), per "
            "freeze strategy, optimizer and learning rate. $n$ (runs): configurations "
            "and the runs they average; Div.: runs among them whose loss became "
            "non-finite. $^{*}$: Holm-corrected "
            f"$p < {ALPHA}$ within the table's confirmatory family.",
            "tab:paramcorr-paper"), encoding="utf-8")
        out["paper_table_tex"] = path
    if len(claims):
        path = out_dir / "claims.tex"
        path.write_text(_to_latex(
            claims_frame(claims), ["Claim", "Statistic", "Verdict"], ["Scope"],
            "The study's three claims tested on configurations. Estimate: the statistic "
            "named in its row (a Pearson $r$, or for claim b a difference of two "
            "correlations); the last row of each claim is its overall verdict.",
            "tab:paramcorr-claims",
            wrap={"Scope": "0.12\\linewidth", "Statistic": "0.2\\linewidth"},
            size="footnotesize"),
            encoding="utf-8")
        out["claims_tex"] = path
    return out

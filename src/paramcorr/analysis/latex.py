"""Paper-ready LaTeX tables (pandas Styler): the paper table and the claims."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from paramcorr.analysis.collect import MAIN_METRICS
from paramcorr.analysis.stats import format_value, is_number

ALPHA = 0.05


def _r_cell(r: object, p_holm: object) -> str:
    if not is_number(r):
        return "n/a"
    text = f"{float(r):.2f}"
    return f"\\textbf{{{text}}}" if is_number(p_holm) and p_holm < ALPHA else text


def paper_frame(paper: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The paper table as displayed: strategy, cell, n configurations (runs), r per metric
    (bold where it survives Holm within its confirmatory family)."""
    wanted = [m for m in MAIN_METRICS if m in metrics]
    rows = []
    for _, row in paper.iterrows():
        out = {"strategy": row["strategy"], "optimizer": row["optimizer"],
               "lr": format_value("lr", row["lr"]),
               "n (runs)": f"{int(row['n_configs'])} ({int(row['n_runs'])})",
               "diverged": int(row["n_diverged"])}
        for m in wanted:
            out[m.replace("_", " ")] = _r_cell(row[f"{m}_r"], row[f"{m}_p_holm"])
        rows.append(out)
    return pd.DataFrame(rows)


def claims_frame(claims: pd.DataFrame) -> pd.DataFrame:
    def num(v: object, fmt: str) -> str:
        return format(float(v), fmt) if is_number(v) else "n/a"

    return pd.DataFrame({
        "claim": claims["claim"],
        "scope": claims["scope"].str.replace("_", " "),
        "estimate [95\\% CI]": [
            f"{num(e, '.2f')} [{num(lo, '.2f')}, {num(hi, '.2f')}]" if is_number(lo)
            else num(e, ".2f")
            for e, lo, hi in zip(claims["estimate"], claims["ci_low"], claims["ci_high"],
                                 strict=True)],
        "p (Holm)": [num(v, ".2g") for v in claims["p_holm"]],
        "power": [num(v, ".0%").replace("%", "\\%") for v in claims["power"]],
        "verdict": claims["verdict"]})


# Cells that hold text from the records (anyone's file): escaped, so a model or optimizer
# named ``a_b & {c}`` prints as written instead of breaking the table.
RECORD_TEXT_COLUMNS = ("strategy", "optimizer", "scope")


def _to_latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    text = [c for c in frame.columns if c in RECORD_TEXT_COLUMNS]
    return frame.style.hide(axis="index").format(escape="latex", subset=text).to_latex(
        caption=caption, label=label, hrules=True, position="htbp", position_float="centering")


def write_latex(paper: pd.DataFrame, claims: pd.DataFrame, metrics: list[str],
                out_dir: Path) -> dict[str, Path]:
    """paper_table.tex and claims.tex (booktabs rules: needs \\usepackage{booktabs})."""
    out: dict[str, Path] = {}
    if len(paper):
        path = out_dir / "paper_table.tex"
        path.write_text(_to_latex(
            paper_frame(paper, metrics),
            "Pearson r of log10 trainable parameters with each metric over configurations "
            "(bold: Holm-corrected p < 0.05 within the confirmatory family).",
            "tab:paramcorr-paper"), encoding="utf-8")
        out["paper_table_tex"] = path
    if len(claims):
        path = out_dir / "claims.tex"
        path.write_text(_to_latex(claims_frame(claims),
                                  "The study's claims tested on configurations.",
                                  "tab:paramcorr-claims"), encoding="utf-8")
        out["claims_tex"] = path
    return out

"""Numbers and tables as report.md writes them: correlations, p-values, percentages,
parameter counts, cells and markdown tables."""

from __future__ import annotations

from paramcorr.analysis.escape import md_cell, md_text
from paramcorr.analysis.vocab import format_value, is_number


def fr(v: object) -> str:
    """A correlation or coefficient: two decimals, 'n/a' when empty."""
    return f"{float(v):.2f}" if is_number(v) else "n/a"


def fp(v: object) -> str:
    """A p-value: three decimals, scientific below 0.001."""
    if not is_number(v):
        return "n/a"
    v = float(v)
    return f"{v:.1e}" if v < 0.001 else f"{v:.3f}"


def fnum(v: object, digits: int = 3) -> str:
    return f"{float(v):.{digits}g}" if is_number(v) else "n/a"


def fpct(v: object) -> str:
    return f"{float(v):.0%}" if is_number(v) else "n/a"


def fcount(v: float) -> str:
    """A parameter count as 1.2K / 3.4M."""
    if not is_number(v):
        return "n/a"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.0f}"


def cell_label(optimizer: object, lr: object) -> str:
    """A paper cell in words, e.g. 'adam, lr=0.001'."""
    return f"{md_text(optimizer)}, lr={format_value('lr', lr)}"


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(md_cell(str(c)) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def n_phrase(n: object, n_runs: object) -> str:
    """'12 configurations (36 runs)'."""
    if not is_number(n):
        return "0 configurations"
    return f"{int(n)} configurations ({int(n_runs) if is_number(n_runs) else '?'} runs)"

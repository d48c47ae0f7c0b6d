"""The study's claims in words: the claims, their decision rules, and the sentences and
report section that state each verdict.

Rendering only. The rules themselves are applied in :mod:`paramcorr.analysis.claims`;
every sentence here is formatted from a claim row's structured fields (``DETAIL_COLUMNS``),
never parsed out of its ``reason`` prose.
"""

from __future__ import annotations

import pandas as pd

from paramcorr.analysis.claims import (
    CI_RESAMPLES,
    CLAIM_B_FAMILY,
    CONTRADICTED,
    DIFF_RESAMPLES,
    NO_GENERALIZATION,
    SUPPORTED,
)
from paramcorr.analysis.escape import md_code
from paramcorr.analysis.formatting import fnum, fp, fpct, fr, md_table, n_phrase
from paramcorr.analysis.power import REFERENCE_R
from paramcorr.analysis.vocab import ALPHA, CONFIDENCE, is_number

CLAIMS = {
    "a": "trainable parameters correlate positively with test accuracy at every learning "
         "rate, for each optimizer",
    "b": "for generalization (gen_acc, gen_f1), more trainable parameters do not guarantee "
         "a higher score",
    "c": "with Adam at the smallest learning rate, the correlation with generalization "
         "becomes positive",
}

RULES = {
    "a": "Per optimizer x lr cell, Pearson r of log10 trainable parameters with test_acc "
         f"over configurations. A cell *supports* a when r > 0 with p < {ALPHA}, uncorrected: "
         "'every cell is positive' is an intersection-union test, which rejects its null "
         "(some cell is not positive) only when every cell rejects, so its error rate is at "
         "most that of one cell test and a correction across cells would only cost power. "
         f"A cell *contradicts* a when r < 0 with p < {ALPHA} after Holm over the cells: 'some "
         "cell is negative' is a union, which does need the correction. Claim a is "
         "supported when every cell supports it, contradicted when any cell contradicts "
         "it, inconclusive otherwise. The summary row shows the smallest cell r and the "
         "largest cell p (the intersection-union p), or the contradicting cell.",
    "b": "Per cell and generalization metric (gen_acc paired with test_acc, gen_f1 with "
         "test_f1): the gen correlation r_gen (Pearson, Holm within `confirmatory: pooled`) "
         f"and the difference r_gen - r_test, with a {CONFIDENCE:.0%} CI from a paired "
         "bootstrap over "
         f"configurations ({CI_RESAMPLES} resamples, percentile) and a two-sided p from a "
         "paired permutation test (gen and test scores, standardized, swapped within "
         f"configurations; exact up to 13 configurations, else {DIFF_RESAMPLES} "
         f"permutations), Holm-corrected over every cell x metric comparison (family "
         f"`{CLAIM_B_FAMILY}`). A cell *supports* b when, for some gen metric, either "
         "(falls) r_gen is significantly negative (Holm) and gen also falls relative to "
         f"test (r_gen - r_test < 0 with uncorrected p < {ALPHA}: a collapse that takes test "
         "accuracy down with it says nothing about generalization in particular), or (lags) "
         f"r_gen is not significantly positive (uncorrected p >= {ALPHA} or r_gen <= 0) and is "
         "significantly smaller than r_test (Holm). It *contradicts* b when, for both gen "
         "metrics, r_gen is significantly positive (Holm). Claim b is supported when some "
         "cell supports it, contradicted when every cell contradicts it, inconclusive "
         "otherwise. A row's estimate, CI and p are those of the statistic that decided it. "
         "The permutation p cannot fall below 2 / 2^n with n configurations: where even "
         "that cannot pass Holm, the lag test *cannot be tested* at this n and its power "
         "is 0. The share of discordant pairs (configurations with more trainable "
         "parameters but a lower gen score) is reported beside it.",
    "c": "The Adam cell at the study's smallest learning rate, lr=0.0001 (another only when "
         "named with --claim-c-lr; without such a cell c is not tested). For gen_acc and "
         "gen_f1: Pearson r of log10 trainable parameters over the cell's configurations, "
         "and its contrast with every other optimizer x lr cell: the difference of Fisher "
         "z = atanh(r) between this cell and each other cell, a two-sided normal test with "
         "variance 1 / (n1 - 3) + 1 / (n2 - 3) (the cells hold different configurations, "
         "so the correlations are independent). *Supported* when, for both gen metrics, "
         f"the cell's r is positive with p < {ALPHA} and greater than every other cell's with "
         f"p < {ALPHA}: 'becomes positive' is a contrast, and each part must hold, an "
         "intersection-union test needing no correction. *Contradicted* when, for some gen "
         "metric, the cell's r is significantly negative or significantly smaller than "
         "every other cell's (Holm over these up to four tests: a union), *inconclusive* "
         "otherwise. The row shows the test that decided (for a support, the weakest "
         "part).",
}
POWER_NOTE = (f"`power`: the probability that the test behind the verdict detects a true "
              f"|r| = {REFERENCE_R} at the alpha it was tested at (for claim c's contrast: a "
              f"difference of atanh({REFERENCE_R}) in Fisher z); claim a's summary row shows "
              "the smallest of its cells'. A low value makes an inconclusive verdict "
              "uninformative rather than evidence of no effect. 0 where the test cannot "
              "reach significance at this n; empty for claim b's permutation test "
              f"otherwise. `p_holm`: the p compared with {ALPHA} after the claim's own "
              "correction (equal to p where the rule needs none).")


def claims_section(claims: pd.DataFrame, n_cfg: int, n_runs: int) -> list[str]:
    """report.md's claims section: the claims, their verdicts table, the decision rules."""
    lines = ["## The study's claims", "",
             "The 2023 study concluded three things. Each is tested here on **configurations** "
             "(every run axis except the seed; a configuration's score is the mean over its "
             f"usable seeds): this sweep has {n_phrase(n_cfg, n_runs)}. Seeds of one "
             "configuration are repeated measures, not independent evidence.", ""]
    for key, text in CLAIMS.items():
        lines.append(f"- **{key}**: {text}.")
    # The verdicts first, then the rules that produced them (the short answer above already
    # says each verdict in words; it is not repeated here).
    lines += ["", "### Verdicts", ""]
    if claims.empty:
        lines += ["No claim could be evaluated.", ""]
    else:
        rows = []
        for r in claims.itertuples():
            ci = f" [{fr(r.ci_low)}, {fr(r.ci_high)}]" if is_number(r.ci_low) else ""
            without = (r.verdict_without_diverged
                       if isinstance(r.verdict_without_diverged, str) else "n/a")
            rows.append([r.claim, md_code(r.scope), f"{fr(r.estimate)}{ci}", fp(r.p_holm),
                         fpct(r.power), f"**{r.verdict}**", without, r.reason])
        lines += [md_table(["claim", "scope", f"estimate [{CONFIDENCE:.0%} CI]", "p_holm", "power",
                            "verdict", "without diverged", "reason"], rows), "",
                  "Statistic per row: claims.csv (`statistic`); LaTeX: claims.tex.", ""]
    lines += ["### Decision rules (fixed before the numbers)", ""]
    lines += [f"- **{key}**: {rule}" for key, rule in RULES.items()]
    lines += ["", POWER_NOTE, ""]
    return lines


def _summary_row(claims: pd.DataFrame, claim: str) -> pd.Series | None:
    hit = claims[claims["claim"] == claim]
    return hit.iloc[-1] if len(hit) else None


def _cell_rows(claims: pd.DataFrame, claim: str) -> pd.DataFrame:
    """A claim's per-cell rows (every row but its last, the summary)."""
    hit = claims[claims["claim"] == claim]
    return hit.iloc[:-1]


def _and_list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _p_text(row: pd.Series) -> str:
    """'p = 0.012' or, where the claim corrected it, 'p_holm = 0.03'."""
    if is_number(row["p_holm"]) and is_number(row["p"]) and row["p_holm"] != row["p"]:
        return f"p_holm = {fp(row['p_holm'])}"
    return f"p = {fp(row['p'])}"


def _divergence_note(claims: pd.DataFrame, claim: str) -> str:
    """Where leaving the diverged runs out changes a verdict: which, and how many runs."""
    if "verdict_without_diverged" not in claims:
        return ""
    rows = claims[claims["claim"] == claim]
    changed = rows[rows["verdict_without_diverged"].notna()
                   & (rows["verdict_without_diverged"] != rows["verdict"])]
    if changed.empty:
        return ""
    summary = rows.iloc[-1]
    parts = []
    for r in changed.itertuples():
        where = "overall" if r.Index == summary.name else f"in {r.label}"
        runs = int(r.n_diverged) if is_number(r.n_diverged) else 0
        parts.append(f"{where} it would be {r.verdict_without_diverged} without the {runs} "
                     f"diverged run{'s' if runs != 1 else ''}")
    return " Decided by divergence: " + "; ".join(parts) + "."


def _sentence_a(claims: pd.DataFrame, a: pd.Series) -> str:
    cells = _cell_rows(claims, "a")
    pos = cells[cells["verdict"] == SUPPORTED]
    neg = cells[cells["verdict"] == CONTRADICTED]
    if a["verdict"] == SUPPORTED:
        return (f"- **a — supported.** In all {len(cells)} optimizer x lr cells, "
                "configurations with more trainable parameters reach a higher test accuracy "
                f"(every cell p < {fnum(a['alpha'])}; smallest r = {fr(a['estimate'])}).")
    if a["verdict"] == CONTRADICTED:
        where = _and_list([f"{r.label} (r = {fr(r.estimate)}, p_holm = {fp(r.p_holm)})"
                           for r in neg.itertuples()])
        return (f"- **a — contradicted.** Test accuracy falls significantly as trainable "
                f"parameters grow in {where}; the claim needs a positive correlation in every "
                "cell.")
    if a["route"] == "no cells":
        return "- **a — inconclusive.** No optimizer x lr cell has test accuracy to test."
    return (f"- **a — inconclusive.** {len(pos)} of {len(cells)} cells show a significant "
            "positive correlation with test accuracy and none a significant negative one; "
            f"the rest are not significant (lowest per-cell power to detect r = {REFERENCE_R} "
            f"at alpha {fnum(a['alpha'])}: {fpct(a['power'])}).")


def _b_cell_text(r) -> str:
    if r.route == "falls":
        return (f"in {r.label} {r.metric} falls significantly as trainable parameters grow "
                f"(r = {fr(r.estimate)}, p_holm = {fp(r.p_holm)}) and falls relative to test "
                "accuracy")
    ci = f" [{fr(r.ci_low)}, {fr(r.ci_high)}]" if is_number(r.ci_low) else ""
    return (f"in {r.label} {r.metric} is not significantly positive and its correlation lies "
            f"significantly below the test score's (r_gen - r_test = {fr(r.estimate)}{ci}, "
            f"p_holm = {fp(r.p_holm)})")


def _sentence_b(claims: pd.DataFrame, b: pd.Series) -> str:
    cells = _cell_rows(claims, "b")
    if b["verdict"] == SUPPORTED:
        hold = cells[cells["verdict"] == SUPPORTED]
        return ("- **b — supported.** More trainable parameters do not guarantee a better "
                "generalization score: " + "; ".join(_b_cell_text(r) for r in hold.itertuples())
                + ".")
    if b["verdict"] == CONTRADICTED:
        return ("- **b — contradicted.** In every cell both generalization scores rise "
                f"significantly with trainable parameters (weakest: {b['label']}, "
                f"{b['metric']} r = {fr(b['estimate'])}, p_holm = {fp(b['p_holm'])}).")
    if b["reason"] == NO_GENERALIZATION:
        return f"- **b — inconclusive.** Not tested: {NO_GENERALIZATION}."
    if b["route"] == "no cells":
        return "- **b — inconclusive.** No cell has both generalization and test scores."
    text = ("- **b — inconclusive.** No cell shows generalization falling or lagging test "
            "accuracy significantly, and not every cell shows it rising significantly.")
    untestable = cells[cells["route"] == "untestable"]
    if len(untestable):
        sizes = sorted({int(n) for n in untestable["n_min"] if is_number(n)})
        p_min = untestable["p_min"].min()
        text += (f" In {len(untestable)} of {len(cells)} cells the lag test cannot be tested "
                 f"with {' or '.join(map(str, sizes))} configurations: its smallest attainable "
                 f"p ({fp(p_min)}) cannot pass Holm, so its power is 0.")
    return text


def _sentence_c(c: pd.Series) -> str:
    label, route = c["label"], c["route"]
    if route == "not tested":
        if c["reason"] == NO_GENERALIZATION:
            return f"- **c — inconclusive.** Not tested: {NO_GENERALIZATION}."
        if c["scope"] == "optimizer=adam":
            return (f"- **c — not tested.** The sweep has no Adam cell at {label} (the "
                    "study's smallest learning rate unless `--claim-c-lr` names another).")
        return f"- **c — not tested.** {label} has no generalization score or no other cell."
    also = ""
    if len(c["elsewhere"]):
        others = list(c["elsewhere"])
        also = (f" Generalization also rises significantly in {len(others)} other "
                f"cell{'s' if len(others) != 1 else ''}: {_and_list(others)}.")
    ci = f" [{fr(c['ci_low'])}, {fr(c['ci_high'])}]" if is_number(c["ci_low"]) else ""
    if route == "greater":
        body = (f"In {label} the correlation of trainable parameters with both "
                "generalization scores is significantly positive and significantly above "
                f"every other cell's (weakest part: {c['statistic']}, {fr(c['estimate'])}{ci}, "
                f"{_p_text(c)}).")
    elif route == "negative":
        body = (f"In {label} {c['metric']} falls significantly with trainable parameters "
                f"(r = {fr(c['estimate'])}{ci}, {_p_text(c)}).")
    elif route == "smaller":
        body = (f"In {label} the correlation with {c['metric']} lies significantly below "
                f"every other cell's (closest: {c['other']}, Fisher z difference "
                f"{fr(c['estimate'])}{ci}, {_p_text(c)}).")
    elif route == "not positive":
        body = (f"In {label} the correlation with {c['metric']} is not significantly "
                f"positive (r = {fr(c['estimate'])}{ci}, {_p_text(c)}; power to detect "
                f"r = {REFERENCE_R}: {fpct(c['power'])}).")
    else:
        body = (f"In {label} the correlation with generalization is positive but not "
                f"significantly above every other cell's ({c['metric']}, closest: "
                f"{c['other']}, Fisher z difference {fr(c['estimate'])}{ci}, {_p_text(c)}): "
                "it does not *become* positive there.")
    return f"- **c — {c['verdict']}.** {body}{also}"


def claim_sentences(claims: pd.DataFrame) -> list[str]:
    """One plain sentence per claim, formatted from its structured fields only."""
    out = []
    for key, sentence in (("a", lambda s: _sentence_a(claims, s)),
                          ("b", lambda s: _sentence_b(claims, s)), ("c", _sentence_c)):
        row = _summary_row(claims, key)
        if row is not None:
            out.append(sentence(row) + _divergence_note(claims, key))
    return out

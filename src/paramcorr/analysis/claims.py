"""The 2023 study's three claims, tested on a sweep with decision rules fixed in advance.

Every claim is decided on configurations (all run axes but the seed; see
``configurations``), in the optimizer x lr cells pooled over freeze strategies: the
confirmatory family ``confirmatory: pooled`` of correlations.csv, Holm-corrected within it.
The verdicts are one of supported / contradicted / inconclusive; ``RULES`` states each
decision rule in words (the report prints them before the numbers) and ``decide_*`` apply
exactly those rules.
"""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from paramcorr.analysis.power import ALPHA, REFERENCE_R, power_to_detect
from paramcorr.analysis.stats import (
    CONFIDENCE,
    POOLED,
    X,
    format_value,
    is_number,
    levels,
    used_mask,
)

CLAIMS_COLUMNS = ["claim", "scope", "statistic", "estimate", "ci_low", "ci_high", "p",
                  "p_holm", "power", "verdict", "reason"]
SUPPORTED, CONTRADICTED, INCONCLUSIVE = "supported", "contradicted", "inconclusive"
EVERY_CELL, SOME_CELL = "every optimizer x lr cell", "some optimizer x lr cell"
GEN_PAIRS = (("gen_acc", "test_acc"), ("gen_f1", "test_f1"))
# Permutations for the test of r(gen) - r(test) (exact up to 13 configurations): the
# smallest p, about 1e-4, is far below the strictest Holm threshold of a 6-cell sweep. The
# bootstrap only draws the CI, which needs fewer resamples.
# Claims b and c need a generalization set; a sweep without one (an image folder without
# data.generalization_root) gets this reason instead of statistics on no data.
NO_GENERALIZATION = ("no generalization set: no usable run has gen_acc or gen_f1 (for image "
                     "folders set data.generalization_root=DIR, a folder with the same classes "
                     "from another distribution)")
DIFF_RESAMPLES = 9999
CI_RESAMPLES = 1999

CLAIMS = {
    "a": "trainable parameters correlate positively with test accuracy at every learning "
         "rate, for each optimizer",
    "b": "for generalization (gen_acc, gen_f1), more trainable parameters do not guarantee "
         "a higher score",
    "c": "with Adam at the smallest learning rate, the correlation with generalization is "
         "positive",
}

RULES = {
    "a": "Per optimizer x lr cell, Pearson r of log10 trainable parameters with test_acc "
         "over configurations. A cell *supports* a when r > 0 with Holm-corrected p < 0.05 "
         "(family `confirmatory: pooled`), *contradicts* it when r < 0 with Holm p < 0.05, "
         "and is *inconclusive* otherwise. Claim a is supported when every cell supports "
         "it, contradicted when any cell contradicts it, inconclusive otherwise (the summary "
         "row's p is the largest cell p: the intersection-union test of 'every cell').",
    "b": "Per cell and generalization metric (gen_acc paired with test_acc, gen_f1 with "
         "test_f1): the gen correlation r_gen (as in a) and the difference r_gen - r_test, "
         f"with a 95% CI from a paired bootstrap over configurations ({CI_RESAMPLES} "
         "resamples, percentile) and a two-sided p from a paired permutation test (gen and "
         "test scores, standardized, swapped within configurations; exact up to 13 "
         f"configurations, else {DIFF_RESAMPLES} permutations), Holm-corrected over "
         "every cell x metric comparison. A cell *supports* b when, for some gen metric, r_gen is "
         "significantly negative (Holm), or r_gen is not significantly positive "
         "(uncorrected p >= 0.05 or r_gen <= 0) and is significantly smaller than r_test "
         "(Holm). It *contradicts* b when, for both gen metrics, r_gen is significantly "
         "positive (Holm). Claim b is supported "
         "when some cell supports it, contradicted when every cell contradicts it, "
         "inconclusive otherwise. The share of discordant pairs (configurations with more "
         "trainable parameters but a lower gen score) is reported beside it.",
    "c": "In the Adam cell with the smallest learning rate, Pearson r of log10 trainable "
         "parameters with gen_acc and with gen_f1 over configurations. *Supported* when "
         "both are positive with Holm p < 0.05, *contradicted* when either is negative with "
         "Holm p < 0.05, *inconclusive* otherwise (estimate, CI and p are those of the "
         "weaker of the two). The same test in every other cell says whether this is the "
         "only cell where it holds.",
}
POWER_NOTE = (f"`power`: the probability that the test behind the verdict detects a true "
              f"|r| = {REFERENCE_R} at the alpha it was tested at (alpha / m, the first Holm "
              "step of the family of m tests): a low value makes an inconclusive verdict "
              "uninformative rather than evidence of no effect. Empty for claim b's "
              "bootstrap comparisons.")


def _row(claim: str, scope: str, statistic: str, **values: object) -> dict:
    row = dict.fromkeys(CLAIMS_COLUMNS, math.nan)
    row.update(claim=claim, scope=scope, statistic=statistic, **values)
    return row


def _cells(pooled: pd.DataFrame) -> list[tuple[object, float, str]]:
    """(optimizer, lr, scope) of every optimizer x lr cell, in the report's order."""
    cells = pooled.drop_duplicates("scope")
    out = []
    for opt in levels(cells, "optimizer"):
        for lr in levels(cells[cells["optimizer"] == opt], "lr"):
            scope = cells[(cells["optimizer"] == opt) & (cells["lr"] == lr)]["scope"].iloc[0]
            out.append((opt, float(lr), scope))
    return out


def _nanmin(values: list[float]) -> float:
    finite = [v for v in values if is_number(v)]
    return min(finite) if finite else math.nan


def _label(opt: object, lr: float) -> str:
    return f"{opt}, lr={format_value('lr', lr)}"


def _n_phrase(row: pd.Series) -> str:
    return f"n={int(row['n'])} configurations ({int(row['n_runs'])} runs)"


def _sig(row: pd.Series, sign: int) -> bool:
    return (is_number(row["r"]) and is_number(row["p_holm"]) and row["p_holm"] < ALPHA
            and np.sign(row["r"]) == sign)


def _power(row: pd.Series) -> float:
    alpha = row["alpha_holm"]
    return power_to_detect(int(row["n"]), REFERENCE_R, float(alpha)) if is_number(alpha) \
        else math.nan


# --- claim a -----------------------------------------------------------------------------

def decide_a(rows: list[pd.Series]) -> tuple[list[str], str]:
    """Per-cell verdicts and the overall verdict of claim a (RULES['a'])."""
    per_cell = [SUPPORTED if _sig(r, 1) else CONTRADICTED if _sig(r, -1) else INCONCLUSIVE
                for r in rows]
    if per_cell and all(v == SUPPORTED for v in per_cell):
        return per_cell, SUPPORTED
    return per_cell, CONTRADICTED if CONTRADICTED in per_cell else INCONCLUSIVE


def _claim_a(pooled: pd.DataFrame, cells: list) -> list[dict]:
    stat = "pearson r(log10_trainable, test_acc), configurations"
    hits = [pooled[(pooled["scope"] == scope) & (pooled["y"] == "test_acc")]
            for _, _, scope in cells]
    if not cells or any(h.empty for h in hits):
        return [_row("a", EVERY_CELL, stat, verdict=INCONCLUSIVE,
                     reason="no optimizer x lr cell with test_acc to test")]
    rows = [h.iloc[0] for h in hits]
    per_cell, overall = decide_a(rows)
    out = []
    for (_, _, scope), row, verdict in zip(cells, rows, per_cell, strict=True):
        power = _power(row)
        if not is_number(row["r"]):
            reason = f"not estimable: {_n_phrase(row)}, fewer than 3 or a constant variable"
        elif verdict == INCONCLUSIVE:
            reason = (f"r={row['r']:.2f}, {_n_phrase(row)}: not significant after Holm "
                      f"(p_holm={row['p_holm']:.3g}); power to detect r={REFERENCE_R}: "
                      f"{power:.0%}")
        else:
            reason = (f"r={row['r']:.2f}, {_n_phrase(row)}: significantly "
                      f"{'positive' if verdict == SUPPORTED else 'negative'} after Holm "
                      f"(p_holm={row['p_holm']:.2g})")
        out.append(_row("a", scope, stat, estimate=row["r"], ci_low=row["ci_low"],
                        ci_high=row["ci_high"], p=row["p"], p_holm=row["p_holm"],
                        power=power, verdict=verdict, reason=reason))
    weakest = min(range(len(rows)), key=lambda i: rows[i]["r"] if is_number(rows[i]["r"])
                  else -math.inf)
    counts = {v: per_cell.count(v) for v in (SUPPORTED, CONTRADICTED, INCONCLUSIVE)}
    against = [_label(o, lr) for (o, lr, _), v in zip(cells, per_cell, strict=True)
               if v == CONTRADICTED]
    reason = (f"{counts[SUPPORTED]} of {len(cells)} cells significantly positive, "
              f"{counts[CONTRADICTED]} significantly negative"
              + (f" ({'; '.join(against)})" if against else "")
              + f", {counts[INCONCLUSIVE]} inconclusive")
    p_all = [r["p"] for r in rows]
    ph_all = [r["p_holm"] for r in rows]
    out.append(_row("a", EVERY_CELL, "smallest cell r (p: largest cell p)",
                    estimate=rows[weakest]["r"], ci_low=rows[weakest]["ci_low"],
                    ci_high=rows[weakest]["ci_high"],
                    p=max(p_all) if all(map(is_number, p_all)) else math.nan,
                    p_holm=max(ph_all) if all(map(is_number, ph_all)) else math.nan,
                    power=_nanmin([r["power"] for r in out]), verdict=overall, reason=reason))
    return out


# --- claim b -----------------------------------------------------------------------------

def _corr_difference(x: np.ndarray, gen: np.ndarray, test: np.ndarray,
                     rng: np.random.Generator) -> tuple[float, float, float, float]:
    """r(x, gen) - r(x, test) over configurations: estimate, 95% CI, p.

    CI: paired bootstrap over configurations (scipy.stats.bootstrap, percentile). p: a
    paired permutation test (scipy.stats.permutation_test, exact up to 2^13 configurations)
    that swaps the standardized gen and test scores within configurations, exchangeable
    when both correlate equally with x. In simulations at n = 12 configurations the
    percentile-bootstrap p rejected a true null in ~8% of cells at 5%, the permutation p in
    ~6%, so the test uses the permutation p.
    """
    def statistic(a, g, t, axis=-1):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (stats.pearsonr(a, g, axis=axis).statistic
                    - stats.pearsonr(a, t, axis=axis).statistic)

    def swapped(g, t, axis=-1):
        return statistic(x, g, t, axis=axis)

    estimate = float(statistic(x, gen, test))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((x, gen, test), statistic, paired=True, vectorized=True,
                              n_resamples=CI_RESAMPLES, method="percentile",
                              confidence_level=CONFIDENCE, rng=rng)
        perm = stats.permutation_test((stats.zscore(gen), stats.zscore(test)), swapped,
                                      permutation_type="samples", vectorized=True,
                                      n_resamples=DIFF_RESAMPLES, rng=rng)
    dist = res.bootstrap_distribution
    dist = dist[np.isfinite(dist)]  # resamples with a constant variable have no r
    low, high = math.nan, math.nan
    if len(dist) >= 0.9 * CI_RESAMPLES:
        low, high = (float(v) for v in np.quantile(dist, [(1 - CONFIDENCE) / 2,
                                                          (1 + CONFIDENCE) / 2]))
    return estimate, low, high, float(perm.pvalue)


def discordant_share(x: np.ndarray, y: np.ndarray) -> float:
    """Among pairs with different x, the share where the larger x has the strictly lower y."""
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu(np.ones_like(dx, dtype=bool), 1) & (dx != 0)
    if not upper.any():
        return math.nan
    return float(((dx * dy)[upper] < 0).sum() / upper.sum())


def _comparisons(pooled: pd.DataFrame, configs: pd.DataFrame, cells: list,
                 seed: int) -> pd.DataFrame:
    """Every cell x (gen, test) pair: r_gen and its tests, the bootstrap difference."""
    rows = []
    usable = configs[used_mask(configs)] if len(configs) else configs
    for opt, lr, scope in cells:
        sub = usable[(usable["optimizer"] == opt) & (usable["lr"] == lr)]
        for gen, test in GEN_PAIRS:
            hit = pooled[(pooled["scope"] == scope) & (pooled["y"] == gen)]
            if hit.empty or gen not in sub or test not in sub:
                continue
            g = hit.iloc[0]
            row = {"scope": scope, "optimizer": opt, "lr": lr, "gen": gen, "test": test,
                   "r_gen": g["r"], "p_gen": g["p"], "p_holm_gen": g["p_holm"], "n": g["n"],
                   "n_runs": g["n_runs"], "diff": math.nan, "ci_low": math.nan,
                   "ci_high": math.nan, "p_diff": math.nan, "discordant": math.nan}
            data = sub[[X, gen, test]].to_numpy(dtype=float)
            data = data[np.isfinite(data).all(axis=1)]
            if len(data) >= 4 and np.ptp(data, axis=0).min() > 0:
                rng = np.random.default_rng([seed, zlib.crc32(f"{scope}|{gen}".encode())])
                diff, low, high, p = _corr_difference(*data.T, rng)
                row.update(diff=diff, ci_low=low, ci_high=high, p_diff=p,
                           discordant=discordant_share(data[:, 0], data[:, 1]))
            rows.append(row)
    table = pd.DataFrame(rows)
    if len(table):
        p = table["p_diff"].to_numpy(dtype=float)
        ok = np.isfinite(p)
        table["p_holm_diff"] = np.nan
        if ok.any():
            table.loc[ok, "p_holm_diff"] = multipletests(p[ok], method="holm")[1]
    return table


def decide_b(comp: pd.DataFrame) -> tuple[dict[str, str], str, dict[str, str]]:
    """Per-cell verdicts (by scope), the overall verdict of claim b (RULES['b']) and, per
    cell, which part of the rule decided it."""
    def sig(v: object) -> bool:
        return is_number(v) and v < ALPHA

    comp = comp.assign(
        neg=[sig(ph) and r < 0 for r, ph in zip(comp["r_gen"], comp["p_holm_gen"],
                                                strict=True)],
        pos_holm=[sig(ph) and r > 0 for r, ph in zip(comp["r_gen"], comp["p_holm_gen"],
                                                     strict=True)],
        pos_raw=[sig(p) and r > 0 for r, p in zip(comp["r_gen"], comp["p_gen"], strict=True)],
        lags=[sig(ph) and d < 0 for d, ph in zip(comp["diff"], comp["p_holm_diff"],
                                                 strict=True)])
    per_cell, why = {}, {}
    for scope, grp in comp.groupby("scope", sort=False):
        falls = grp[grp["neg"]]
        lags = grp[~grp["pos_raw"] & grp["lags"]]
        fails = len(grp) == len(GEN_PAIRS) and grp["pos_holm"].all()
        if len(falls):
            per_cell[scope] = SUPPORTED
            why[scope] = f"{falls['gen'].iloc[0]} falls significantly as trainable grows"
        elif len(lags):
            c = lags.iloc[0]
            per_cell[scope] = SUPPORTED
            why[scope] = (f"{c['gen']} is not significantly positive and its correlation is "
                          f"significantly below {c['test']}'s")
        elif fails:
            per_cell[scope] = CONTRADICTED
            why[scope] = "both generalization scores rise significantly"
        else:
            per_cell[scope] = INCONCLUSIVE
            why[scope] = "no significant fall, lag or rise of generalization"
    verdicts = list(per_cell.values())
    if SUPPORTED in verdicts:
        return per_cell, SUPPORTED, why
    if verdicts and all(v == CONTRADICTED for v in verdicts):
        return per_cell, CONTRADICTED, why
    return per_cell, INCONCLUSIVE, why


def _b_phrase(c: pd.Series) -> str:
    diff = (f"r_gen - r_test = {c['diff']:.2f} [{c['ci_low']:.2f}, {c['ci_high']:.2f}], "
            f"p_holm={c['p_holm_diff']:.2g}" if is_number(c["diff"]) and is_number(c["ci_low"])
            else "difference not estimable")
    disc = f"; discordant pairs {c['discordant']:.0%}" if is_number(c["discordant"]) else ""
    r_gen = f"r={c['r_gen']:.2f} (p={c['p_gen']:.2g}, p_holm={c['p_holm_gen']:.2g})" \
        if is_number(c["r_gen"]) else "r not estimable"
    return f"{c['gen']}: {r_gen}; {diff}{disc}"


def _claim_b(pooled: pd.DataFrame, configs: pd.DataFrame, cells: list,
             seed: int) -> tuple[list[dict], pd.DataFrame]:
    comp = _comparisons(pooled, configs, cells, seed)
    if comp.empty:
        return [_row("b", SOME_CELL, "r(gen) - r(test)", verdict=INCONCLUSIVE,
                     reason="no cell with both generalization and test metrics")], comp
    per_cell, overall, why = decide_b(comp)
    out = []
    for scope, grp in comp.groupby("scope", sort=False):
        # The comparison shown: the one that decides a supporting verdict, else the one
        # with the strongest evidence that gen lags test.
        order = grp.sort_values("p_holm_diff", na_position="last")
        c = order.iloc[0]
        out.append(_row("b", scope, f"r({c['gen']}) - r({c['test']}), paired bootstrap over "
                        "configurations", estimate=c["diff"], ci_low=c["ci_low"],
                        ci_high=c["ci_high"], p=c["p_diff"], p_holm=c["p_holm_diff"],
                        verdict=per_cell[scope],
                        reason=f"{why[scope]}; n={int(c['n'])} configurations "
                        f"({int(c['n_runs'])} runs); "
                        + " | ".join(_b_phrase(r) for _, r in grp.iterrows())))
    best = comp.sort_values("p_holm_diff", na_position="last").iloc[0]
    k = sum(v == SUPPORTED for v in per_cell.values())
    disc = comp["discordant"].dropna()
    reason = (f"{k} of {len(per_cell)} cells support b, "
              f"{sum(v == CONTRADICTED for v in per_cell.values())} contradict it"
              + (f"; discordant pairs per cell and metric: {disc.min():.0%} to {disc.max():.0%}"
                 if len(disc) else ""))
    out.append(_row("b", SOME_CELL, "r(gen) - r(test) with the smallest Holm p",
                    estimate=best["diff"], ci_low=best["ci_low"], ci_high=best["ci_high"],
                    p=best["p_diff"], p_holm=best["p_holm_diff"], verdict=overall,
                    reason=reason))
    return out, comp


# --- claim c -----------------------------------------------------------------------------

def decide_c(rows: list[pd.Series]) -> str:
    """Verdict of claim c in one cell from its gen_acc and gen_f1 rows (RULES['c'])."""
    if rows and all(_sig(r, 1) for r in rows):
        return SUPPORTED
    return CONTRADICTED if any(_sig(r, -1) for r in rows) else INCONCLUSIVE


def gen_positive_cells(pooled: pd.DataFrame, cells: list) -> list[tuple[object, float]]:
    """The cells where claim c's rule holds (both gen metrics significantly positive)."""
    out = []
    for opt, lr, scope in cells:
        rows = [h.iloc[0] for gen, _ in GEN_PAIRS
                if not (h := pooled[(pooled["scope"] == scope) & (pooled["y"] == gen)]).empty]
        if decide_c(rows) == SUPPORTED:
            out.append((opt, lr))
    return out


def _claim_c(pooled: pd.DataFrame, cells: list) -> list[dict]:
    stat = "pearson r(log10_trainable, gen_acc and gen_f1), configurations: the weaker"
    adam = [(o, lr, s) for o, lr, s in cells if str(o).lower() == "adam"]
    if not adam:
        return [_row("c", "optimizer=adam", stat, verdict=INCONCLUSIVE,
                     reason="no Adam runs in this sweep")]
    opt, lr, scope = min(adam, key=lambda c: c[1])
    rows = [h.iloc[0] for gen, _ in GEN_PAIRS
            if not (h := pooled[(pooled["scope"] == scope) & (pooled["y"] == gen)]).empty]
    if not rows:
        return [_row("c", scope, stat, verdict=INCONCLUSIVE,
                     reason="no generalization metric in this sweep")]
    verdict = decide_c(rows)
    weakest = min(rows, key=lambda r: r["r"] if is_number(r["r"]) else -math.inf)
    parts = [f"{r['y']}: r={r['r']:.2f} (p_holm={r['p_holm']:.2g})" if is_number(r["r"])
             else f"{r['y']}: not estimable" for r in rows]
    holds = gen_positive_cells(pooled, cells)
    others = [_label(o, v) for o, v in holds if (o, v) != (opt, lr)]
    if verdict == SUPPORTED and not others:
        only = f"{_label(opt, lr)} is the only cell where it holds"
    elif others:
        only = "it also holds in " + "; ".join(others)
    else:
        only = "it holds in no cell"
    p = [r["p"] for r in rows]
    ph = [r["p_holm"] for r in rows]
    power = _nanmin([_power(r) for r in rows])
    reason = (f"{_n_phrase(rows[0])}; " + "; ".join(parts) + f"; {only}"
              + (f"; power to detect r={REFERENCE_R}: {power:.0%}"
                 if verdict == INCONCLUSIVE and is_number(power) else ""))
    return [_row("c", scope, stat, estimate=weakest["r"], ci_low=weakest["ci_low"],
                 ci_high=weakest["ci_high"],
                 p=max(p) if all(map(is_number, p)) else math.nan,
                 p_holm=max(ph) if all(map(is_number, ph)) else math.nan, power=power,
                 verdict=verdict, reason=reason)]


# --- all claims --------------------------------------------------------------------------

def pooled_rows(corr: pd.DataFrame) -> pd.DataFrame:
    """The confirmatory pooled family: Pearson on configurations, optimizer x lr cells."""
    return corr[(corr["family"] == POOLED) & (corr["method"] == "pearson")]


def has_generalization(configs: pd.DataFrame) -> bool:
    """Whether any configuration has a finite generalization score (claims b and c need one)."""
    gens = [gen for gen, _ in GEN_PAIRS if gen in configs]
    return bool(gens) and bool(np.isfinite(configs[gens].to_numpy(dtype=float)).any())


def evaluate_claims(corr: pd.DataFrame, configs: pd.DataFrame,
                    seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """claims.csv (CLAIMS_COLUMNS) and claim b's per-cell comparison table.

    ``corr`` is correlation_table's output; ``configs`` the configuration means
    (``configuration_means``) of the same runs.
    """
    pooled = pooled_rows(corr)
    cells = _cells(pooled) if len(pooled) else []
    if has_generalization(configs):
        b_rows, comparisons = _claim_b(pooled, configs, cells, seed)
        c_rows = _claim_c(pooled, cells)
    else:
        b_rows = [_row("b", SOME_CELL, "r(gen) - r(test)", verdict=INCONCLUSIVE,
                       reason=NO_GENERALIZATION)]
        c_rows = [_row("c", "optimizer=adam", "pearson r(log10_trainable, gen_acc and "
                       "gen_f1), configurations", verdict=INCONCLUSIVE,
                       reason=NO_GENERALIZATION)]
        comparisons = pd.DataFrame()
    rows = _claim_a(pooled, cells) + b_rows + c_rows
    return pd.DataFrame(rows, columns=CLAIMS_COLUMNS), comparisons

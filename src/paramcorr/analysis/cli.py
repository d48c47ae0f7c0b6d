"""Command line of ``scripts/analyze.py``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from paramcorr.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="analyze.py",
        description="Collect result.json records below sweep directories and write runs.csv, "
                    "correlations.csv, report.md and plots/.")
    parser.add_argument("sweep_dirs", nargs="+", type=Path, metavar="SWEEP_DIR",
                        help="directories searched (at any depth) for result.json; unioned")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default: <first SWEEP_DIR>/analysis); may lie "
                             "inside a sweep: only the analysis's own files there are ignored")
    parser.add_argument("--n-boot", type=int, default=1000,
                        help="bootstrap resamples for Spearman/Kendall CIs (default 1000; "
                             "0 = no CIs)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--run-cis", action="store_true",
                        help="also bootstrap CIs for the run-level (exploratory, "
                             "pseudo-replicated) rows; slow on large sweeps")
    parser.add_argument("--claim-c-lr", type=float, default=None, metavar="LR",
                        help="the Adam learning rate claim c tests (default: the study's "
                             "smallest, 0.0001; without such a cell c is not tested)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the analysis; 0 on success, 2 with a one-line error on stderr otherwise."""
    args = build_parser().parse_args(argv)
    if args.n_boot < 0:
        print("error: --n-boot must be 0 or more", file=sys.stderr)
        return 2
    if args.claim_c_lr is not None and not args.claim_c_lr > 0:
        print("error: --claim-c-lr must be a positive learning rate, e.g. 0.0001",
              file=sys.stderr)
        return 2
    logger = logging.getLogger("paramcorr.analysis")
    if not args.quiet and not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[analyze] %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    from paramcorr.analysis import run_analysis  # heavy imports after argument errors

    try:
        result = run_analysis(args.sweep_dirs, args.out, n_boot=args.n_boot, seed=args.seed,
                              run_cis=args.run_cis, claim_c_lr=args.claim_c_lr)
    except UserError as err:  # bad sweep dirs, no records, unusable --out: before statistics
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # --out was fine at the start; writing failed later (disk full)
        where = err.filename or args.out or "the output directory"
        print(f"error: writing the analysis to {where} failed ({err.strerror or err}); "
              "free space or give another --out", file=sys.stderr)
        return 2
    print(f"{result.summary}; analysis written to {result.out_dir}")
    return 0

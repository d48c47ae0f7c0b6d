"""Analyse sweeps: python scripts/analyze.py SWEEP_DIR [SWEEP_DIR ...] --out DIR."""

from paramcorr.analysis.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

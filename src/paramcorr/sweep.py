"""Hydra callbacks for sweeps: a ``[k/N]`` progress line with ETA, and analysis at the end.

Progress is counted from the records on disk, so it is right whichever launcher runs the
jobs (in-process, joblib workers, Slurm array tasks sharing the file system).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from paramcorr.record import RECORD_NAME, read_record

log = logging.getLogger("paramcorr")
STATE_FILE = ".sweep.json"


def sweep_size(overrides: list[str], sweeper_params: dict[str, Any] | None) -> int:
    """How many jobs the basic sweeper makes of these overrides (product of sweep lengths)."""
    parser = OverridesParser.create()
    merged = dict(sweeper_params or {})
    for override in parser.parse_overrides(overrides):
        merged[override.key_or_group] = override.input_line.split("=", 1)[1]
    size = 1
    for key, value in merged.items():
        parsed = parser.parse_override(f"{key}={value}")
        if parsed.is_sweep_override():
            size *= len(list(parsed.sweep_string_iterator()))
    return size


def _finished_records(sweep_dir: Path) -> int:
    return sum(1 for p in sweep_dir.rglob(RECORD_NAME)
               if (r := read_record(p)) is not None and r.get("status"))


class SweepProgress(Callback):
    """Prints ``[k/N] elapsed, ETA`` as each job of a multirun ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        params = OmegaConf.to_container(config.hydra.sweeper.get("params") or {}, resolve=False)
        total = sweep_size(list(config.hydra.overrides.task), params)
        state = {"total": total, "started": time.time(),
                 "finished_before": _finished_records(sweep_dir)}
        (sweep_dir / STATE_FILE).write_text(json.dumps(state))
        log.info("sweep %s: %d jobs (%d records already there)", sweep_dir, total,
                 state["finished_before"])

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            state = json.loads((sweep_dir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return
        done = _finished_records(sweep_dir)
        total = max(state["total"], done)
        elapsed = time.time() - state["started"]
        new = done - state["finished_before"]
        remaining = total - done
        eta = elapsed / new * remaining if new > 0 else math.nan
        eta_text = _clock(eta) if math.isfinite(eta) else "?"
        log.info("[%d/%d] elapsed %s, ETA %s", done, total, _clock(elapsed), eta_text)


class AnalyzeOnEnd(Callback):
    """Runs the analysis on the sweep that just finished (``scripts/analyze.py`` does the same)."""

    def __init__(self, n_boot: int = 1000) -> None:
        self.n_boot = n_boot

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from paramcorr.analysis import run_analysis

        sweep_dir = Path(config.hydra.sweep.dir)
        out = sweep_dir / "analysis"
        try:
            run_analysis([sweep_dir], out, n_boot=self.n_boot)
        except Exception as err:  # noqa: BLE001 - a finished sweep's records stay usable
            log.error("analysis failed (%s); run: python scripts/analyze.py %s", err, sweep_dir)
            return
        log.info("report: %s", out / "report.md")


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

"""Hydra callbacks: output directory check, a ``[k/N]`` progress line with ETA for sweeps,
and analysis at the end.

Progress is counted from the records on disk, so it is right whichever launcher runs the
jobs (in-process, joblib workers, Slurm array tasks sharing the file system), and printed by
the process that launched the sweep.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from paramcorr.atomic import OutputError
from paramcorr.entry import check_appended_keys
from paramcorr.record import NOT_APPLICABLE_NAME, RECORD_NAME, STATUSES, find_record

log = logging.getLogger(__name__)
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
    """Jobs of the sweep that are done: a record, or a not-applicable marker (depth sweeps).

    A record file exists only once its job wrote it whole (atomic rename), so its presence
    is the count; reading and validating each one every poll would cost a big sweep dearly.
    """
    return sum(1 for _ in sweep_dir.rglob(RECORD_NAME)) + sum(
        1 for _ in sweep_dir.rglob(NOT_APPLICABLE_NAME))


def check_writable(directory: Path) -> None:
    """Raise :class:`OutputError` unless ``directory`` can be created and written.

    Probes the directory, or its nearest existing parent, with an anonymous temp file of one
    byte; creates nothing that stays.
    """
    target = Path(directory).absolute()
    existing = next((p for p in (target, *target.parents) if os.path.lexists(p)), Path("/"))
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, f"{existing} is not a directory")
        with tempfile.TemporaryFile(dir=existing) as probe:
            probe.write(b"\0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise OutputError(directory, err) from err


class OutputCheck(Callback):
    """Stops a run or sweep whose output directory cannot be written, with one line.

    Hydra itself creates the directory and writes its own files there before any job code
    runs, and fails with a traceback; this callback runs first and says which directory.
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_appended_keys(config)
        self._check(Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_appended_keys(config)
        self._check(Path(str(config.hydra.sweep.dir)))

    @staticmethod
    def _check(directory: Path) -> None:
        try:
            check_writable(directory)
        except OutputError as err:
            # SystemExit passes through Hydra's error handler: one line, exit code 1.
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None


# The sweep this process launched (set when it starts): what an interrupt reports on.
_launched: dict[str, Any] = {}


def interrupt_message(stopped: str) -> str:
    """One line for a stopped sweep (``stopped``: the word for what stopped it, from
    ``entry.STOP_SIGNALS``): how far the sweep got, and that the same command resumes it."""
    if not _launched:
        return (f"{stopped}: the run did not finish and wrote no record; run the same "
                "command again to start it over")
    sweep_dir = Path(_launched["dir"])
    done = _finished_records(sweep_dir) if sweep_dir.is_dir() else 0
    return (f"{stopped}: {done} of {_launched['total']} jobs finished (records under "
            f"{sweep_dir}); re-run the same command to resume: finished jobs are skipped")


class SweepProgress(Callback):
    """Prints ``[k/N] elapsed, ETA`` in the launching process as jobs of a multirun end.

    Jobs run in this process (the basic launcher) report from ``on_job_end``. Jobs run
    elsewhere (joblib workers, submitit local or Slurm tasks) are seen by a thread of the
    launching process that counts the records on the shared file system every ``poll_s``
    seconds, so the terminal that started the sweep shows progress whichever launcher runs it
    (a Slurm task's own log holds its job's summary line). ETA = elapsed / jobs finished in
    this launch x jobs left, which also holds for jobs running in parallel.
    """

    def __init__(self, poll_s: float = 1.0) -> None:
        self.poll_s = poll_s
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = -1
        self._printed = False

    # Launchers pickle the callbacks to ship them to workers: leave the thread behind.
    def __getstate__(self) -> dict[str, Any]:
        return {"poll_s": self.poll_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.poll_s = state["poll_s"]
        self._init_runtime()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # A sweep given only on the command line has no sweeper params (None, not a config).
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params is not None else {}
        total = sweep_size(list(config.hydra.overrides.task), params)
        state = {"total": total, "started": time.time(),
                 "finished_before": _finished_records(sweep_dir), "pid": os.getpid()}
        (sweep_dir / STATE_FILE).write_text(json.dumps(state))
        _launched.update(dir=str(sweep_dir), total=total)
        log.info("sweep %s: %d jobs (%d records already there)", sweep_dir, total,
                 state["finished_before"])
        self._last = state["finished_before"]
        self._printed = False
        self._stop.clear()
        if not _runs_jobs_in_process(config):
            # No thread otherwise: in-process jobs may fork data-loader workers.
            self._thread = threading.Thread(target=self._watch, args=(sweep_dir, state),
                                            name="sweep-progress", daemon=True)
            self._thread.start()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        state = _read_state(sweep_dir)
        # In a worker process the launching process's watcher reports; printing here too
        # would repeat every line in a shared terminal (joblib workers share its stdout).
        if state is not None and state.get("pid", os.getpid()) == os.getpid():
            self._report(sweep_dir, state)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        sweep_dir = Path(config.hydra.sweep.dir)
        state = _read_state(sweep_dir)
        if state is not None:
            # The last jobs may have ended between two polls; and a re-launch that only
            # skipped finished jobs still says where the sweep stands.
            self._report(sweep_dir, state, force=not self._printed)

    def _watch(self, sweep_dir: Path, state: dict[str, Any]) -> None:
        wait = self.poll_s
        while not self._stop.wait(wait):
            started = time.monotonic()
            try:
                self._report(sweep_dir, state)
            except Exception as err:  # noqa: BLE001 - progress must never stop a sweep
                log.debug("progress poll failed: %s", err)
            # A big sweep on a network file system: scan at most 10% of the time.
            wait = max(self.poll_s, 10 * (time.monotonic() - started))

    def _report(self, sweep_dir: Path, state: dict[str, Any], force: bool = False) -> None:
        with self._lock:
            done = _finished_records(sweep_dir)
            if done <= self._last and not force:
                return
            self._last = done
            self._printed = True
        total = max(state["total"], done)
        elapsed = time.time() - state["started"]
        new = done - state["finished_before"]
        remaining = total - done
        eta = elapsed / new * remaining if new > 0 else math.nan
        eta_text = _clock(eta) if math.isfinite(eta) else "?"
        log.info("[%d/%d] elapsed %s, ETA %s", done, total, _clock(elapsed), eta_text)


def _runs_jobs_in_process(config: DictConfig) -> bool:
    """Whether the launcher runs jobs in this process (Hydra's basic launcher)."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
    return target.endswith("BasicLauncher")


def _read_state(sweep_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((sweep_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


class AnalyzeOnEnd(Callback):
    """Runs the analysis on the sweep that just finished (``scripts/analyze.py`` does the same)."""

    def __init__(self, n_boot: int = 1000) -> None:
        self.n_boot = n_boot

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        # Imported here: pandas, scipy and statsmodels would slow every run's start, and
        # only a sweep's end needs them.
        from paramcorr.analysis import run_analysis

        sweep_dir = Path(config.hydra.sweep.dir)
        out = sweep_dir / "analysis"
        statuses = [r.status for p in sweep_dir.rglob(RECORD_NAME)
                    if (r := find_record(p)) is not None]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in STATUSES)
        log.info("sweep done: %d records (%s), one dir per job under %s", len(statuses), counts,
                 sweep_dir)
        try:
            run_analysis([sweep_dir], out, n_boot=self.n_boot)
        except Exception as err:  # noqa: BLE001 - a finished sweep's records stay usable
            log.error("analysis failed (%s); run: python scripts/analyze.py %s", err, sweep_dir)
            return
        log.info("report: %s (plots in %s)", out / "report.md", out / "plots")
        log.info("next: open the report; re-run the same command to finish missing jobs; "
                 "combine sweeps with python scripts/analyze.py %s OTHER_SWEEP --out DIR; "
                 "your own images: python scripts/train.py -m experiment=paper "
                 "data.root=/path/to/images", sweep_dir)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"

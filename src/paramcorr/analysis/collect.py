"""Collect ``result.json`` run records below sweep directories into one table."""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from paramcorr.analysis.vocab import MAIN_METRICS, USED_STATUSES, X
from paramcorr.errors import UserError
from paramcorr.record import (
    METRIC_KEYS,
    RECORD_NAME,
    RUN_AXES,
    STATUSES,
    RecordError,
    RunRecord,
    load_record,
)

log = logging.getLogger(__name__)

# Directories never searched: the default analysis output dir (ours), Hydra's bookkeeping.
SKIP_DIRS = frozenset({"analysis", ".hydra", "__pycache__", ".git"})
# The paper's four outcomes (vocab.MAIN_METRICS), the two gaps, then the rest of the
# record's metrics in its order (paramcorr.record.METRICS); extras follow.
_SHOWN_FIRST = (*MAIN_METRICS, "gap_acc", "gap_loss")
KNOWN_METRICS = (*_SHOWN_FIRST, *(m for m in METRIC_KEYS if m not in _SHOWN_FIRST))
# The record's run axes (paramcorr.record.RUN_AXES) that say what was asked for.
KNOWN_RUN_AXES = tuple(a.name for a in RUN_AXES if a.filled_by != "training")
# Keys of a record's run block that say what training did, not what was asked for (a run
# that diverged or hit trainer.max_time trained fewer epochs): columns of runs.csv, never
# axes, so they neither split a configuration nor keep a rerun from superseding its record.
RUN_OUTCOMES = tuple(a.name for a in RUN_AXES if a.filled_by == "training")
# Run axes a record gained after its first version, with the value an older record's run had:
# before ``eval_weights`` was recorded, the last epoch's weights were evaluated (a historical
# fact, not the current default, which could change). Filled in when reading, so old and new
# records of one configuration stay one configuration (else every configuration splits in two
# and its seeds count as independent configurations). ``epochs_configured`` and
# ``num_groups`` are filled by :func:`normalise_legacy_runs`.
LEGACY_AXIS_VALUES = {"eval_weights": "last"}
# Which of two records of one config wins: STATUSES lists the best outcome first.
STATUS_RANK = {status: rank for rank, status in enumerate(STATUSES)}
# The largest metric magnitude the statistics take as a score. Beyond it the sums of squares of
# a correlation overflow (and matplotlib cannot place ticks); such a value is an overflow
# (numpy's nan_to_num writes infinity as 1.8e308), so it reads as the infinity it stands for.
MAX_METRIC_MAGNITUDE = 1e150
# paramcorr.atomic's temp name for a record being written.
_RECORD_TEMP = f".{RECORD_NAME}."
# pandas' nullable Int64 holds these; a larger integer column stays as Python objects.
_INT64 = 2**63 - 1


class NoRecordsError(UserError):
    """No usable record below the given directories."""


class MixedDataError(UserError):
    """Records of runs on different data (roots, or versions of one root's files)."""


@dataclass
class Collection:
    """The runs table plus what was read, skipped and why."""

    runs: pd.DataFrame
    metrics: list[str]
    run_axes: list[str]
    sweep_dirs: list[Path]
    n_files: int = 0
    skipped: Counter = field(default_factory=Counter)
    n_temp: int = 0
    n_superseded: int = 0

    @property
    def n_records(self) -> int:
        return len(self.runs)

    def count(self, status: str) -> int:
        return int((self.runs["status"] == status).sum()) if len(self.runs) else 0

    @property
    def n_used(self) -> int:
        return int(self.runs["status"].isin(USED_STATUSES).sum()) if len(self.runs) else 0

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """One line: read, used, failed, skipped and why."""
        parts = [
            f"{self.n_files} {RECORD_NAME} read: {self.n_records} records",
            f"{self.n_used} used ({self.count('completed')} completed, "
            f"{self.count('diverged')} diverged)",
            f"{self.count('failed')} failed (listed, not used)",
        ]
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        parts.append(f"{self.n_skipped} skipped" + (f" ({why})" if why else ""))
        if self.n_superseded:
            parts.append(f"{self.n_superseded} superseded duplicates dropped")
        if self.n_temp:
            parts.append(f"{self.n_temp} temp files ignored")
        return "; ".join(parts)


def check_sweep_dirs(sweep_dirs: Iterable[Path]) -> list[Path]:
    """The sweep directories as paths; raises NoRecordsError (one line) for one that is not."""
    sweep_dirs = [Path(d) for d in sweep_dirs]
    if not sweep_dirs:
        raise NoRecordsError("no sweep directory given; pass at least one SWEEP_DIR")
    for d in sweep_dirs:
        if not d.is_dir():
            raise NoRecordsError(f"sweep dir {d} does not exist or is not a directory; "
                                 "pass the directory a multirun wrote (e.g. outputs/multirun/...)")
    return sweep_dirs


def find_result_files(sweep_dirs: list[Path],
                      out_dirs: Iterable[Path] = ()) -> tuple[list[Path], int]:
    """Every file named exactly ``result.json`` below ``sweep_dirs``, and the temp-file count.

    Temp files are a job's half-done atomic write (``.result.json.*.tmp``, ``*.tmp``).
    ``out_dirs`` hold the analysis's own outputs: there, only a record's temp files count
    (another ``*.tmp`` is the analysis's own), and everything below is searched (an ``--out``
    inside a sweep hides no run).
    """
    own = {os.path.realpath(p) for p in out_dirs}
    seen: dict[int, list[str]] = {}
    found: list[str] = []
    n_temp = 0
    for root in sweep_dirs:
        stack = [str(root)]
        while stack:
            top = stack.pop()
            try:
                entries = list(os.scandir(top))
            except OSError:
                continue
            for entry in entries:
                name = entry.name
                if entry.is_dir(follow_symlinks=False):
                    if name not in SKIP_DIRS:
                        stack.append(entry.path)
                elif name == RECORD_NAME:
                    # Overlapping sweep dirs (a parent and its child) must not double count.
                    # Inodes come free with scandir; realpath (a stat per path component) is
                    # only paid to confirm a match, which keeps a 10,000-run sweep fast.
                    same = seen.setdefault(entry.inode(), [])
                    real = os.path.realpath(entry.path) if same else None
                    if same and any(os.path.realpath(p) == real for p in same):
                        continue
                    same.append(entry.path)
                    found.append(entry.path)
                elif name.startswith((RECORD_NAME, _RECORD_TEMP)) or (
                        name.endswith(".tmp") and os.path.realpath(top) not in own):
                    n_temp += 1
    found.sort()
    return [Path(p) for p in found], n_temp


def _scalar(value: object) -> object:
    """A CSV-friendly cell: scalars pass, containers become compact JSON."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


def _number(value: object) -> float:
    """A validated metric value (number, NaN or null) as float; containers are NaN.

    A magnitude beyond :data:`MAX_METRIC_MAGNITUDE` is the infinity of its sign.
    """
    if isinstance(value, (int, float)):
        number = float(value)
        return math.copysign(math.inf, number) if abs(number) > MAX_METRIC_MAGNITUDE else number
    return math.nan


def plottable(values: np.ndarray) -> np.ndarray:
    """Where ``values`` are scores a plot (or a statistic) can place: finite, not overflowing."""
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (np.abs(values) <= MAX_METRIC_MAGNITUDE)


# Row columns that are not run axes; a run axis of the same name gets a "run_" prefix.
_ROW_FIELDS = frozenset({"run_dir", "status", "error", "config_hash", "schema", X})


def flatten(record: RunRecord, run_dir: str,
            taken: frozenset[str] = frozenset()) -> tuple[dict, list[str], list[str]]:
    """One runs.csv row from a record, plus the metric and run-axis names it holds.

    A metric whose name is ``taken`` (a run axis of any record) becomes ``metric_<name>``.
    """
    row: dict = {"run_dir": run_dir, "status": record.status, "error": record.error}
    run_keys = []
    for key, value in record.run.items():
        name = f"run_{key}" if key in _ROW_FIELDS else key
        row[name] = _scalar(value)
        run_keys.append(name)
    for key, value in (record.params or {}).items():
        row[f"params_{key}"] = value
    metric_keys = []
    for key, value in record.metrics.items():
        if isinstance(value, (dict, list)):
            continue  # e.g. a confusion matrix: not a scalar outcome
        name = f"metric_{key}" if key in row or key in taken or key in _ROW_FIELDS else key
        row[name] = _number(value)
        metric_keys.append(name)
    for key, value in record.timing.items():
        row[f"timing_{key}"] = _scalar(value)
    row["config_hash"] = record.config_hash
    row["schema"] = record.schema
    return row, metric_keys, run_keys


def _order(names: set[str], known: tuple[str, ...]) -> list[str]:
    return [k for k in known if k in names] + sorted(names - set(known))


def _dedupe(rows: list[dict], run_keys: list[str]) -> tuple[list[dict], int]:
    """Drop records superseded by a rerun of the same config (same hash and run axes).

    A rerun that completed wins over one that diverged or failed; ties go to the newer file.
    """
    best: dict[tuple, dict] = {}
    kept: list[dict] = []
    for row in rows:
        if row.get("config_hash") in (None, ""):
            kept.append(row)
            continue
        key = (row["config_hash"], *(repr(row.get(k)) for k in run_keys))
        other = best.get(key)
        if other is None or _preference(row) < _preference(other):
            best[key] = row
    n_dropped = len(rows) - len(kept) - len(best)
    out = kept + list(best.values())
    out.sort(key=lambda r: r["run_dir"])
    return out, n_dropped


def _preference(row: dict) -> tuple:
    try:
        mtime = os.stat(Path(row["run_dir"]) / RECORD_NAME).st_mtime
    except OSError:
        mtime = 0.0
    return STATUS_RANK.get(row["status"], len(STATUS_RANK)), -mtime


def _integer_columns(rows: list[dict], columns: list[str]) -> list[str]:
    """Columns whose recorded values are all ints (seed, frozen_stages, params).

    Decided on the raw JSON values: once in a DataFrame, null forces float (2 -> 2.0).
    """
    out = []
    for col in columns:
        values = [row[col] for row in rows if row.get(col) is not None]
        if values and all(type(v) is int and abs(v) <= _INT64 for v in values):
            out.append(col)
    return out


def _log_skipped(examples: dict[str, tuple[Path, RecordError]], skipped: Counter) -> None:
    """One line per reason: how many, and the first file with its detail, to go and look."""
    for reason, (path, err) in sorted(examples.items()):
        log.info("skipped %d %s: %s (e.g. %s: %s)", skipped[reason], RECORD_NAME, reason,
                 path, err)


def collect_runs(sweep_dirs: list[Path], out_dirs: Iterable[Path] = ()) -> Collection:
    """Read every record below ``sweep_dirs`` (unioned) into a runs table.

    A file that is not a usable record is skipped and counted under its reason
    (:attr:`paramcorr.record.RecordError.reason`). ``out_dirs``: see
    :func:`find_result_files`. Raises NoRecordsError when nothing usable is found.
    """
    sweep_dirs = check_sweep_dirs(sweep_dirs)
    files, n_temp = find_result_files(sweep_dirs, out_dirs)
    skipped: Counter = Counter()
    examples: dict[str, tuple[Path, RecordError]] = {}
    records: list[tuple[RunRecord, str]] = []
    axes: set[str] = set()
    for path in files:
        try:
            record = load_record(path)
        except RecordError as err:
            skipped[err.reason] += 1
            examples.setdefault(err.reason, (path, err))
            continue
        records.append((record, str(path.parent)))
    if not records:
        where = ", ".join(str(d) for d in sweep_dirs)
        detail = ""
        if files:
            path, err = examples[max(skipped, key=skipped.get)]
            detail = (f" ({len(files)} found, all skipped: "
                      + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()))
                      + f"; e.g. {path}: {err})")
        raise NoRecordsError(f"no readable {RECORD_NAME} found under {where}{detail}; "
                             "check the path points at a sweep directory")
    _log_skipped(examples, skipped)
    check_one_data_source(records)
    records = normalise_legacy_runs(records)
    for record, _ in records:
        axes.update(record.run)
    # Second pass: a metric named like any record's run axis must not share its column.
    taken = frozenset(axes)
    rows: list[dict] = []
    metric_names: set[str] = set()
    run_names: list[str] = []
    for record, run_dir in records:
        row, metric_keys, run_keys = flatten(record, run_dir, taken)
        rows.append(row)
        metric_names.update(metric_keys)
        run_names.extend(k for k in run_keys if k not in run_names)
    run_axes = _order(set(run_names) - set(RUN_OUTCOMES), KNOWN_RUN_AXES)
    outcomes = [k for k in RUN_OUTCOMES if k in run_names]
    rows, n_superseded = _dedupe(rows, run_axes)
    runs = pd.DataFrame.from_records(rows)
    metrics = _order(metric_names, KNOWN_METRICS)
    params = sorted({k for row in rows for k in row if k.startswith("params_")})
    integers = _integer_columns(rows, [*(a for a in run_axes if a != "lr"), *outcomes,
                                       *params])
    runs = _tidy(runs, metrics, run_axes, integers)
    return Collection(runs=runs, metrics=metrics, run_axes=run_axes, sweep_dirs=sweep_dirs,
                      n_files=len(files), skipped=skipped, n_temp=n_temp,
                      n_superseded=n_superseded)


def data_source(record: RunRecord) -> str | None:
    """Which data a run read, as a user names it: its data root, or an embedded dataset's name.

    None for an image-folder record written before records named their inputs (unknown).
    """
    inputs = record.extra.get("inputs")
    if isinstance(inputs, dict) and isinstance(inputs.get("data_root"), str):
        return inputs["data_root"]
    dataset = record.run.get("dataset")
    if dataset is not None and dataset != "imagefolder":
        return f"{dataset} (embedded)"
    return None


def _fingerprint(record: RunRecord) -> str | None:
    inputs = record.extra.get("inputs")
    value = inputs.get("data_fingerprint") if isinstance(inputs, dict) else None
    return value if isinstance(value, str) else None


def check_one_data_source(records: list[tuple[RunRecord, str]]) -> None:
    """Refuse (one line) records of runs on different data: they are never pooled.

    Two data roots (or an image folder and an embedded dataset) are two studies; one root
    read as two versions of its files (images added while a sweep ran) mixes runs on
    different data. Records that do not name their inputs (older ones) are not checked.
    """
    by_source: dict[str, list[str]] = {}
    fingerprints: dict[str, dict[str, int]] = {}
    for record, run_dir in records:
        source = data_source(record)
        if source is None:
            continue
        by_source.setdefault(source, []).append(run_dir)
        fingerprint = _fingerprint(record)
        if fingerprint is not None and record.run.get("dataset") == "imagefolder":
            counts = fingerprints.setdefault(source, {})
            counts[fingerprint] = counts.get(fingerprint, 0) + 1
    if len(by_source) > 1:
        listed = "; ".join(f"{source} ({len(dirs)} runs, e.g. {min(dirs)})"
                           for source, dirs in sorted(by_source.items()))
        raise MixedDataError(
            f"the sweeps ran on {len(by_source)} different data sources: {listed}; runs on "
            "different data are never pooled: analyse each one's sweep directory on its own "
            "(analyze.py SWEEP_DIR --out DIR)")
    for source, counts in fingerprints.items():
        if len(counts) > 1:
            listed = ", ".join(f"{n} runs on files {fp[:12]}"
                               for fp, n in sorted(counts.items(), key=lambda i: -i[1]))
            raise MixedDataError(
                f"the runs read {len(counts)} different versions of the files in {source} "
                f"({listed}): its files changed between runs; relaunch the sweep on the "
                "current files (it reruns the runs on the older ones), then analyse it")


def normalise_legacy_runs(records: list[tuple[RunRecord, str]]
                          ) -> list[tuple[RunRecord, str]]:
    """Records from before a run axis existed, given the value their run had.

    ``eval_weights``: see :data:`LEGACY_AXIS_VALUES`. ``epochs_configured``: an old record's
    ``epochs`` was the configured count (what training did was not recorded), so it moves
    there and ``epochs`` becomes unknown. ``num_groups`` is the backbone's: taken from other
    records of the same model when they agree on it; otherwise left empty (no record of
    that model holds it, so it splits nothing).
    """
    groups: dict[object, set] = {}
    for record, _ in records:
        if record.run.get("num_groups") is not None:
            groups.setdefault(record.run.get("model"), set()).add(record.run["num_groups"])
    out = []
    filled: Counter = Counter()
    for record, run_dir in records:
        run = record.run
        missing = [k for k in (*LEGACY_AXIS_VALUES, "epochs_configured") if k not in run]
        known = groups.get(run.get("model"), set())
        if "num_groups" not in run and len(known) == 1:
            missing.append("num_groups")
        if missing:
            run = dict(run)
            for key, value in LEGACY_AXIS_VALUES.items():
                run.setdefault(key, value)
            if "epochs_configured" not in run:
                run["epochs_configured"] = run.get("epochs")
                run["epochs"] = None
            if "num_groups" in missing:
                run["num_groups"] = next(iter(known))
            filled.update(missing)
            record = replace(record, run=run)
        out.append((record, run_dir))
    if filled:
        log.info("%s: filled in where records lack these run axes (older records), with "
                 "the value their run had", ", ".join(f"{k} ({n} records)"
                                                      for k, n in sorted(filled.items())))
    return out


def _tidy(runs: pd.DataFrame, metrics: list[str], run_axes: list[str],
          integers: list[str]) -> pd.DataFrame:
    """Column order, numeric types and the derived ``log10_trainable``."""
    if "lr" in runs:
        runs["lr"] = pd.to_numeric(runs["lr"], errors="coerce").astype(float)
    if "params_trainable" not in runs:
        runs["params_trainable"] = np.nan
    trainable = pd.to_numeric(runs["params_trainable"], errors="coerce").astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        runs[X] = np.where(trainable > 0, np.log10(trainable), np.nan)
    for m in metrics:
        runs[m] = runs[m].astype(float)
    for col in integers:  # nullable ints: written as 2, not 2.0, beside empty cells
        runs[col] = runs[col].astype("Int64")
    params = [c for c in runs.columns if c.startswith("params_")]
    first = ["run_dir", "status", "error", *run_axes, *params, X, *metrics]
    rest = [c for c in runs.columns if c not in first]
    return runs[first + rest].reset_index(drop=True)

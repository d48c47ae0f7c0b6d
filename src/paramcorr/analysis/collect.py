"""Collect ``result.json`` run records below sweep directories into one table."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from paramcorr.errors import UserError

RESULT_NAME = "result.json"
SCHEMA = 1
USED_STATUSES = ("completed", "diverged")
# Directories never searched: analysis outputs (ours) and Hydra's own bookkeeping.
SKIP_DIRS = frozenset({"analysis", ".hydra", "__pycache__", ".git"})
# The paper's four outcomes, then the rest of the contract's metrics; extras follow.
MAIN_METRICS = ("test_acc", "test_f1", "gen_acc", "gen_f1")
KNOWN_METRICS = (*MAIN_METRICS, "gap_acc", "gap_loss", "train_acc", "train_loss",
                 "val_acc", "val_loss", "test_loss")
KNOWN_RUN_AXES = ("model", "weights", "freeze", "frozen_stages", "num_groups", "optimizer",
                  "lr", "seed", "dataset", "num_classes", "epochs", "batch_size",
                  "image_size", "eval_weights")
STATUS_RANK = {"completed": 0, "diverged": 1, "failed": 2}

SKIP_INVALID = "invalid JSON"
SKIP_FOREIGN = "not a run record"
SKIP_FUTURE = "future schema"
SKIP_UNREADABLE = "unreadable"


class NoRecordsError(UserError):
    """No usable record below the given directories."""


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
        other = self.n_records - self.n_used - self.count("failed")
        parts = [
            f"{self.n_files} result.json read: {self.n_records} records",
            f"{self.n_used} used ({self.count('completed')} completed, "
            f"{self.count('diverged')} diverged)",
            f"{self.count('failed')} failed (listed, not used)",
        ]
        if other:
            parts.append(f"{other} with unknown status (listed, not used)")
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        parts.append(f"{self.n_skipped} skipped" + (f" ({why})" if why else ""))
        if self.n_superseded:
            parts.append(f"{self.n_superseded} superseded duplicates dropped")
        if self.n_temp:
            parts.append(f"{self.n_temp} temp files ignored")
        return "; ".join(parts)


def find_result_files(sweep_dirs: list[Path], exclude: list[Path] = ()) -> tuple[list[Path], int]:
    """Every file named exactly ``result.json`` below ``sweep_dirs``, and the temp-file count.

    Temp files are a job's half-done atomic write (``result.json.tmp*``, ``*.tmp``).
    """
    # Inodes come free with scandir; realpath (a stat per path component) is only paid
    # to confirm a match, which keeps a 10,000-run sweep fast.
    excluded = {os.path.realpath(p) for p in exclude if os.path.isdir(p)}
    excluded_inodes = {os.stat(p).st_ino for p in excluded}
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
                    if name in SKIP_DIRS or (entry.inode() in excluded_inodes
                                             and os.path.realpath(entry.path) in excluded):
                        continue
                    stack.append(entry.path)
                elif name == RESULT_NAME:
                    # Overlapping sweep dirs (a parent and its child) must not double count.
                    same = seen.setdefault(entry.inode(), [])
                    real = os.path.realpath(entry.path) if same else None
                    if same and any(os.path.realpath(p) == real for p in same):
                        continue
                    same.append(entry.path)
                    found.append(entry.path)
                elif name.startswith(RESULT_NAME) or name.endswith(".tmp"):
                    n_temp += 1
    found.sort()
    return [Path(p) for p in found], n_temp


def read_record(path: Path) -> dict | str:
    """The parsed record, or the reason it is skipped."""
    try:
        with open(path, "rb") as fh:
            record = json.load(fh)
    except OSError:
        return SKIP_UNREADABLE
    except ValueError:  # JSONDecodeError and UnicodeDecodeError: corrupt or half-written
        return SKIP_INVALID
    if not isinstance(record, dict) or not all(k in record for k in ("schema", "run", "params")):
        return SKIP_FOREIGN
    schema = record["schema"]
    if not isinstance(schema, int) or isinstance(schema, bool):
        return SKIP_FOREIGN
    if schema > SCHEMA:
        return SKIP_FUTURE
    if not isinstance(record["run"], dict) or not isinstance(record["params"], dict):
        return SKIP_FOREIGN
    return record


def _scalar(value: object) -> object:
    """A CSV-friendly cell: scalars pass, containers become compact JSON."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


def _number(value: object) -> float:
    """A metric value as float; anything non-numeric (None, "nan", lists) is NaN."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def flatten(record: dict, run_dir: str) -> tuple[dict, list[str], list[str]]:
    """One runs.csv row from a record, plus the metric and run-axis names it holds."""
    row: dict = {"run_dir": run_dir, "status": str(record.get("status", "unknown")),
                 "error": _scalar(record.get("error"))}
    run_keys = []
    for key, value in record["run"].items():
        row[key] = _scalar(value)
        run_keys.append(key)
    for key, value in record["params"].items():
        row[f"params_{key}"] = _scalar(value)
    metrics = record.get("metrics")
    metric_keys = []
    if isinstance(metrics, dict):
        for key, value in metrics.items():
            if isinstance(value, (dict, list)):
                continue  # e.g. a confusion matrix: not a scalar outcome
            name = key if key not in row else f"metric_{key}"
            row[name] = _number(value)
            metric_keys.append(name)
    timing = record.get("timing")
    if isinstance(timing, dict):
        for key, value in timing.items():
            row[f"timing_{key}"] = _scalar(value)
    row["config_hash"] = _scalar(record.get("config_hash"))
    row["schema"] = record["schema"]
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
        mtime = os.stat(Path(row["run_dir"]) / RESULT_NAME).st_mtime
    except OSError:
        mtime = 0.0
    return STATUS_RANK.get(row["status"], 3), -mtime


def _integer_columns(rows: list[dict], columns: list[str]) -> list[str]:
    """Columns whose recorded values are all ints (seed, frozen_stages, params).

    Decided on the raw JSON values: once in a DataFrame, null forces float (2 -> 2.0).
    """
    out = []
    for col in columns:
        values = [row[col] for row in rows if row.get(col) is not None]
        if values and all(type(v) is int for v in values):
            out.append(col)
    return out


def collect_runs(sweep_dirs: list[Path], exclude: list[Path] = ()) -> Collection:
    """Read every record below ``sweep_dirs`` (unioned) into a runs table.

    Raises NoRecordsError when nothing readable is found.
    """
    sweep_dirs = [Path(d) for d in sweep_dirs]
    for d in sweep_dirs:
        if not d.is_dir():
            raise NoRecordsError(f"sweep dir {d} does not exist or is not a directory; "
                                 "pass the directory a multirun wrote (e.g. outputs/multirun/...)")
    files, n_temp = find_result_files(sweep_dirs, exclude)
    skipped: Counter = Counter()
    rows: list[dict] = []
    metric_names: set[str] = set()
    run_names: list[str] = []
    for path in files:
        record = read_record(path)
        if isinstance(record, str):
            skipped[record] += 1
            continue
        row, metric_keys, run_keys = flatten(record, str(path.parent))
        rows.append(row)
        metric_names.update(metric_keys)
        run_names.extend(k for k in run_keys if k not in run_names)
    if not rows:
        where = ", ".join(str(d) for d in sweep_dirs)
        detail = (f" ({len(files)} found, all skipped: "
                  + ", ".join(f"{n} {r}" for r, n in sorted(skipped.items())) + ")"
                  if files else "")
        raise NoRecordsError(f"no readable result.json found under {where}{detail}; "
                             "check the path points at a sweep directory")
    rows, n_superseded = _dedupe(rows, run_names)
    runs = pd.DataFrame.from_records(rows)
    metrics = _order(metric_names, KNOWN_METRICS)
    run_axes = _order(set(run_names), KNOWN_RUN_AXES)
    params = sorted({k for row in rows for k in row if k.startswith("params_")})
    integers = _integer_columns(rows, [*(a for a in run_axes if a != "lr"), *params])
    runs = _tidy(runs, metrics, run_axes, integers)
    return Collection(runs=runs, metrics=metrics, run_axes=run_axes, sweep_dirs=sweep_dirs,
                      n_files=len(files), skipped=skipped, n_temp=n_temp,
                      n_superseded=n_superseded)


def _tidy(runs: pd.DataFrame, metrics: list[str], run_axes: list[str],
          integers: list[str]) -> pd.DataFrame:
    """Column order, numeric types and the derived ``log10_trainable``."""
    if "lr" in runs:
        runs["lr"] = pd.to_numeric(runs["lr"], errors="coerce").astype(float)
    if "params_trainable" not in runs:
        runs["params_trainable"] = np.nan
    trainable = pd.to_numeric(runs["params_trainable"], errors="coerce").astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        runs["log10_trainable"] = np.where(trainable > 0, np.log10(trainable), np.nan)
    for m in metrics:
        runs[m] = runs[m].astype(float)
    for col in integers:  # nullable ints: written as 2, not 2.0, beside empty cells
        runs[col] = runs[col].astype("Int64")
    params = [c for c in runs.columns if c.startswith("params_")]
    first = ["run_dir", "status", "error", *run_axes, *params, "log10_trainable", *metrics]
    rest = [c for c in runs.columns if c not in first]
    return runs[first + rest].reset_index(drop=True)

"""The run record, ``result.json``: its shape (DESIGN.md, schema 1), hashing and atomic I/O."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from paramcorr.atomic import atomic_path

SCHEMA = 1
RECORD_NAME = "result.json"
# Written instead of a record by a job that does not apply (see paramcorr.depth).
NOT_APPLICABLE_NAME = "not_applicable.json"
STATUSES = ("completed", "diverged", "failed")
METRIC_KEYS = ("train_acc", "train_loss", "val_acc", "val_loss", "test_acc", "test_f1",
               "test_loss", "gen_acc", "gen_f1", "gap_acc", "gap_loss")
# Keys that change where or how visibly a run happens, not what it computes (the top-level lr
# only feeds optimizer.lr, which is hashed).
_UNHASHED = ("name", "lr", "strict", "paths", "logger", "trainer.enable_progress_bar",
             "trainer.enable_model_summary", "trainer.log_every_n_steps", "data.num_workers",
             "freeze.cache_features", "freeze.out_of_range")


def config_hash(cfg: DictConfig) -> str:
    """A stable hash of everything in ``cfg`` that can change a run's result.

    Values are resolved (so ``lr=1e-2`` and ``optimizer.lr=1e-2`` hash alike); keys that only
    say where or how visibly a run happens are left out.
    """

    def resolved(node: Any, prefix: str) -> Any:
        if isinstance(node, dict):
            return {k: resolved(v, f"{prefix}{k}.") for k, v in node.items()
                    if f"{prefix}{k}" not in _UNHASHED}
        if isinstance(node, list):
            return [resolved(v, f"{prefix}{i}.") for i, v in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            return OmegaConf.select(cfg, prefix.rstrip("."), throw_on_resolution_failure=False)
        return node

    plain = resolved(OmegaConf.to_container(cfg, resolve=False), "")
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def build_record(*, status: str, run: dict[str, Any], params: dict[str, int] | None,
                 metrics: dict[str, float | None], timing: dict[str, float],
                 config_hash: str, error: str | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A schema-1 record. Non-finite metrics are stored as ``null`` (JSON has no NaN)."""
    assert status in STATUSES, status
    record = {
        "schema": SCHEMA,
        "status": status,
        "error": error,
        "run": run,
        "params": params,
        "metrics": {k: _finite_or_none(v) for k, v in metrics.items()},
        "timing": timing,
        "config_hash": config_hash,
    }
    if extra:
        record.update(extra)
    return record


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write ``record`` so that ``path`` holds either the old file or the whole new one."""
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(record, handle, indent=2, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def remove_stale_temps(directory: Path) -> int:
    """Delete the temp files (``.<name>.*.tmp``) a killed job left in its own directory.

    Atomic writers here (records, saved weights) write ``.<name>.<random>.tmp`` and rename it;
    a ``kill -9`` between the two leaves the temp file. Only the job that owns ``directory``
    calls this, before it writes anything, so no live write is touched.
    """
    removed = 0
    for tmp in Path(directory).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None if it is absent or not a readable schema-1 record."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return None
    return record


def is_finished(record: dict[str, Any] | None, config_hash: str) -> bool:
    """A completed or diverged record of the same config: re-running would only repeat it."""
    return (record is not None and record.get("config_hash") == config_hash
            and record.get("status") in ("completed", "diverged"))


def set_aside(path: Path, record: dict[str, Any]) -> Path:
    """Keep a record of another config (or a failed one) under a name analysis ignores."""
    target = path.with_name(f"result.{record.get('status', 'old')}-"
                            f"{record.get('config_hash', 'unknown')}.json.old")
    os.replace(path, target)
    return target

"""Test helpers: compose the real config tree, run the real scripts, check record shape."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from paramcorr.entry import compose_config  # noqa: F401 - re-exported for the tests
from paramcorr.record import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Tiny timm models and one short epoch: a job runs in about a second on a laptop CPU.
TINY = ["experiment=smoke", "model=test_resnet"]


def run_script(script: str, *args: str, cwd: Path, timeout: int = 600,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``scripts/<script>`` as a user would, from ``cwd`` (outputs land there)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


RUN_KEYS = {"model", "weights", "freeze", "frozen_stages", "optimizer", "lr", "seed", "dataset",
            "num_classes", "epochs", "batch_size", "image_size"}


def assert_schema_valid(record: dict) -> None:
    """The shape DESIGN.md fixes (extra keys allowed)."""
    assert record["schema"] == 1
    assert record["status"] in ("completed", "diverged", "failed")
    assert set(record["run"]) >= RUN_KEYS
    assert {"total", "trainable", "frozen"} <= set(record["params"])
    p = record["params"]
    assert p["total"] == p["trainable"] + p["frozen"]
    assert set(METRIC_KEYS) <= set(record["metrics"])
    assert {"fit_s", "eval_s", "train_samples_per_s"} <= set(record["timing"])
    assert isinstance(record["config_hash"], str) and record["config_hash"]
    if record["status"] == "completed":
        m = record["metrics"]
        assert all(isinstance(m[k], float) and math.isfinite(m[k]) for k in METRIC_KEYS)
        assert math.isclose(m["gap_acc"], m["train_acc"] - m["test_acc"], abs_tol=1e-12)
        assert math.isclose(m["gap_loss"], m["test_loss"] - m["train_loss"], abs_tol=1e-12)

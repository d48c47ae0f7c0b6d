"""Test helpers: compose the real config tree, run the real scripts, check record shape."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from paramcorr.record import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Tiny timm models and one short epoch: a job runs in about a second on a laptop CPU.
TINY = ["experiment=smoke", "model=test_resnet"]


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as a Hydra app would, with outputs under tmp."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True,
                      overrides=[f"paths.output_root={output_dir}", *overrides])
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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

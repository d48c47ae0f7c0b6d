"""Test helpers: compose the real config tree, run the real scripts, check record shape."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

from paramcorr.entry import compose_config  # noqa: F401 - re-exported for the tests
from paramcorr.record import METRIC_KEYS

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

# Tiny timm models and one short epoch: a job runs in about a second on a laptop CPU.
TINY = ["experiment=smoke", "model=test_resnet"]
# Two digit classes instead of five: 2/5 of the images to extract features from and to
# evaluate (a job evaluates every split whole), still 4 training batches of 64. For tests whose
# assertions do not depend on the class count.
TWO_CLASSES = "data.classes=[5,6]"


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
    # Three counts made separately (paramcorr.freezing.count_parameters): they must agree,
    # and the total must be that of a fresh timm model of the same architecture and head.
    assert p["total"] == p["trainable"] + p["frozen"]
    run = record["run"]
    if isinstance(run.get("num_classes"), int) and timm.is_model(run["model"]):
        with torch.device("meta"):
            fresh = timm.create_model(run["model"], num_classes=run["num_classes"])
        assert p["total"] == sum(x.numel() for x in fresh.parameters())
    assert set(METRIC_KEYS) <= set(record["metrics"])
    assert {"fit_s", "eval_s", "train_samples_per_s"} <= set(record["timing"])
    assert isinstance(record["config_hash"], str) and record["config_hash"]
    if record["status"] == "completed":
        m = record["metrics"]
        assert all(isinstance(m[k], float) and math.isfinite(m[k]) for k in METRIC_KEYS)
        assert math.isclose(m["gap_acc"], m["train_acc"] - m["test_acc"], abs_tol=1e-12)
        assert math.isclose(m["gap_loss"], m["test_loss"] - m["train_loss"], abs_tol=1e-12)


def make_tree(root: Path, splits=("train",), classes=("cat", "dog"), n: int = 6) -> Path:
    """A tiny ImageFolder tree of 16x16 PNGs."""
    rng = np.random.default_rng(0)
    for split in splits:
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def folder_config(train_config, root: Path, *extra: str):
    return train_config("data=imagefolder", f"data.root={root}", "data.classes=null",
                        "data.image_size=32", "data.num_workers=0", *extra)

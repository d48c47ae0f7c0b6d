"""What the Hydra entry points do with a composed config (the scripts only wire this up)."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


def train_task(cfg: DictConfig) -> float | None:
    """One job: run it into the Hydra output dir. A failed single run exits non-zero.

    Returns the test accuracy, so Hydra sweepers that optimize can use it.
    """
    from paramcorr.job import run_job

    hydra_cfg = HydraConfig.get()
    record = run_job(cfg, Path(hydra_cfg.runtime.output_dir))
    if record["status"] == "failed" and hydra_cfg.mode != RunMode.MULTIRUN:
        print(f"error: {record['error']}", file=sys.stderr)
        sys.exit(1)
    return (record.get("metrics") or {}).get("test_acc")


def pretrain_task(cfg: DictConfig) -> None:
    from paramcorr.errors import UserError
    from paramcorr.pretraining import pretrain_all

    try:
        pretrain_all(cfg)
    except UserError as err:
        if cfg.get("strict", False):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)

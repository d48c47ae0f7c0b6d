"""What the Hydra entry points do with a composed config (the scripts only wire this up)."""

from __future__ import annotations

import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

# The config tree of a source checkout (the scripts point Hydra at the same folder).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_config(config_name: str, overrides: list[str], output_dir: Path,
                   config_dir: Path = CONFIG_DIR) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as the Hydra app would, outside of it.

    For tests, benchmarks and notebooks: ``run_job(compose_config("train", [...], d), d)``.
    Outputs (and ``${hydra:runtime.output_dir}``) go to ``output_dir``.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from paramcorr.config import register_schemas

    register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True,
                      overrides=[f"paths.output_root={output_dir}", *overrides])
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


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

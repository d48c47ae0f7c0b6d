"""Depth sweeps: ``freeze=partial`` over every stage count of every backbone in one grid.

Each backbone has its own number of timm coarse groups ``K`` (valid ``freeze.stages``:
``0..K-1``), but Hydra's basic sweeper makes a rectangular grid. ``experiment=depth`` sweeps
``freeze.stages`` up to a ceiling above every backbone's ``K`` and sets
``freeze.out_of_range=skip``: a job whose ``stages`` the backbone does not have is *not
applicable*. It writes no ``result.json`` (so the analysis, and the statuses the record
contract fixes, never see a run that did not happen) but a ``not_applicable.json`` marker
saying why, which the sweep's ``[k/N]`` progress counts as done. ``K`` comes from the model's
own ``group_matcher``, built without weights on the meta device: no per-model table to keep.

With the default ``freeze.out_of_range=error`` an out-of-range ``stages`` stays what it is for
a single run: a user error, recorded as a ``failed`` run.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

import timm
import torch
from omegaconf import DictConfig, OmegaConf

from paramcorr import freezing, strategies
from paramcorr.record import NOT_APPLICABLE_NAME, RECORD_NAME, NotRun, find_record, set_aside

log = logging.getLogger(__name__)


@functools.cache
def number_of_groups(model_name: str) -> int:
    """How many timm coarse parameter groups ``model_name`` has (weights play no part)."""
    # The meta device allocates no memory and runs no init: vgg16 costs no 500 MB here.
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False)
    return freezing.number_of_groups(model)


def out_of_range_reason(cfg: DictConfig) -> str | None:
    """Why this job is not applicable, or None if it should run.

    Only for a strategy with a group index (``freeze.stages`` of partial, ``freeze.block`` of
    surgical) and ``freeze.out_of_range=skip``; a backbone that cannot be built here (e.g. a
    misspelt name) is left to the job, which records the error.
    """
    strategy = strategies.from_config(cfg.freeze)
    key = strategy.group_key
    if key is None or OmegaConf.select(
            cfg, "freeze.out_of_range", default="error") != "skip":
        return None
    index = strategy.options.get(key)
    try:
        groups = number_of_groups(str(cfg.model.name))
    except Exception:  # noqa: BLE001 - the real run reports it, with its own message
        return None
    if index is None or index < groups:
        return None
    return (f"{cfg.model.name} has {groups} stages (timm parameter groups), so "
            f"freeze.{key}={index} is beyond it (valid: 0..{groups - 1})")


def skip_if_out_of_range(cfg: DictConfig, output_dir: Path) -> NotRun | None:
    """Mark a not-applicable job (see module doc) and say why; None: run it.

    Called by the job under its lock; writes no record, only the marker.
    """
    reason = out_of_range_reason(cfg)
    if reason is None:
        return None
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    record_path = output_dir / RECORD_NAME
    if record_path.exists():
        # e.g. a failed record from a launch without out_of_range=skip: not a run of the study.
        moved = set_aside(record_path, find_record(record_path))
        log.info("earlier record kept as %s", moved.name)
    marker = {"status": "not_applicable", "reason": reason, "model": cfg.model.name,
              "freeze": str(cfg.freeze.strategy), "frozen_stages": cfg.freeze.stages,
              **strategies.from_config(cfg.freeze).run_axes(),
              "num_groups": number_of_groups(str(cfg.model.name)), "seed": cfg.seed}
    (output_dir / NOT_APPLICABLE_NAME).write_text(json.dumps(marker, indent=2) + "\n")
    log.info("not applicable (no result.json): %s", reason)
    return NotRun("not_applicable", reason)

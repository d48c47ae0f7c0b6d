"""Pretraining: train backbones on a source task and save timm-compatible checkpoints.

This is how offline users (and the demo) get pretrained weights without a model hub: the
saved ``<out_dir>/<model>.safetensors`` loads with ``model.weights=<path>``, through timm's
own file path, with a fresh head for the target classes.

Each backbone is pretrained by one job of the study's pipeline (:func:`paramcorr.job.run_job`)
on the train config :func:`job_config` makes from the pretraining config: random weights, the
whole model trained (``freeze=none``), the best epoch by validation evaluated and saved
(``save_weights=true``). The job runs in a scratch directory; pretraining then places its
weights at :func:`checkpoint_path` with metadata saying what they are. So every key the
pretraining config shares with a job (``data.num_workers``, ``data.cache_inputs``,
``channels_last``, ``compile``, ...) does here what it does there, and a pretrained
checkpoint holds exactly the tensors that train job saves.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file

from paramcorr import backbones
from paramcorr.atomic import writing_to
from paramcorr.config import RunSettings, TrainConfig, schema, validate
from paramcorr.data import class_names
from paramcorr.errors import UserError
from paramcorr.job import run_job, validation_missing
from paramcorr.record import NotRun, RunRecord, Status

log = logging.getLogger(__name__)

# The pretraining config's keys that mean the same in a train config, passed on as they are.
SHARED_KEYS = tuple(f.name for f in dataclasses.fields(RunSettings))


def checkpoint_path(out_dir: str | Path, model_name: str) -> Path:
    return Path(out_dir) / f"{model_name}.safetensors"


def job_config(cfg: DictConfig, model_name: str) -> DictConfig:
    """The train config of the job that pretrains ``model_name``.

    The pretraining config's :data:`SHARED_KEYS`, and: random weights, ``freeze=none``, no
    logger, the weights saved, and the best epoch by validation (small nets at 32px swing
    from epoch to epoch), or the last one where the trainer validates in no epoch.
    """
    no_best = validation_missing(cfg.trainer) is not None
    return OmegaConf.merge(schema(TrainConfig), {
        "name": "pretrain",
        **{key: cfg[key] for key in SHARED_KEYS},
        "model": {"name": model_name, "weights": "random"},
        "freeze": {"strategy": "none"},
        "logger": None,
        "eval_weights": "last" if no_best else "best",
        "save_weights": True,
    })


def pretrain_one(cfg: DictConfig, model_name: str, path: Path) -> float:
    """Pretrain ``model_name`` (the job of :func:`job_config`, in a scratch directory beside
    ``path``'s), save its weights at ``path`` and return its validation accuracy.

    A job that fails or diverges raises a one-line :class:`UserError` naming the model, and
    nothing is saved.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent.parent) as scratch:
        with _job_lines_off():
            record = run_job(job_config(cfg, model_name), Path(scratch))
        record = _finished(record, model_name, Path(scratch), path)
        weights = load_file(str(Path(scratch) / "model.safetensors"))
    val_acc = record.metrics["val_acc"]
    backbones.save_state(weights, path, metadata={
        "architecture": model_name, "source": f"{cfg.data.name} classes {class_names(cfg.data)}",
        "image_size": str(record.run["image_size"]), "val_acc": f"{val_acc:.4f}",
        "epochs": str(record.run["epochs"]),  # trained, not configured (max_time may stop early)
    })
    path.with_suffix(".error.log").unlink(missing_ok=True)  # an earlier failure's
    return val_acc


def _finished(record: RunRecord | NotRun, model_name: str, scratch: Path,
              path: Path) -> RunRecord:
    """``record`` if its job completed; else a one-line :class:`UserError` naming the model.

    The job's traceback (``error.log``, named in its error) is kept as
    ``<out_dir>/<model>.error.log``: the scratch directory goes.
    """
    if isinstance(record, NotRun):  # a fresh directory: neither finished nor busy
        raise UserError(f"pretraining {model_name}: its job did not run ({record.reason})")
    if record.status == Status.COMPLETED:
        return record
    if record.status == Status.DIVERGED:
        raise UserError(f"pretraining {model_name} diverged (its training loss became "
                        "non-finite); nothing saved; lower lr (or optimizer.lr)")
    error = (str(record.error).strip().splitlines() or ["unknown error"])[0]
    traceback = scratch / "error.log"
    if traceback.is_file() and str(traceback) in error:
        kept = path.with_suffix(".error.log")
        traceback.replace(kept)
        error = error.replace(str(traceback), str(kept))
    raise UserError(f"pretraining {model_name} failed: {error}")


@contextmanager
def _job_lines_off() -> Iterator[None]:
    """Without the job's own lines (its summary, which names the scratch directory):
    pretraining says one line per model itself, and a failure is its error."""
    job_log = logging.getLogger("paramcorr.job")
    level = job_log.level
    job_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        job_log.setLevel(level)


def pretrain_all(cfg: DictConfig) -> list[Path]:
    """Pretrain every model in ``cfg.models`` that has no checkpoint yet (or all: overwrite).

    Every model's job config is checked (:func:`paramcorr.config.validate`) before the first
    one trains.
    """
    for name in cfg.models:
        backbones.check_model_name(name)
        validate(job_config(cfg, name))
    paths = []
    for i, name in enumerate(cfg.models, start=1):
        path = checkpoint_path(cfg.out_dir, name)
        paths.append(path)
        if path.is_file() and not cfg.overwrite:
            log.info("[%d/%d] %s: reusing %s", i, len(cfg.models), name, path)
            continue
        # Said before the minutes a backbone takes on a CPU, not only after them.
        log.info("[%d/%d] %s: pretraining on %s classes %s (up to %s epochs)...", i,
                 len(cfg.models), name, cfg.data.name, list(cfg.data.classes or []),
                 cfg.trainer.get("max_epochs"))
        started = time.perf_counter()
        with writing_to(path.parent):  # e.g. out_dir under a file, or read-only: one line
            val_acc = pretrain_one(cfg, name, path)
        log.info("[%d/%d] %s: pretrained on %s classes %s, val_acc=%.3f, %.1fs -> %s", i,
                 len(cfg.models), name, cfg.data.name, list(cfg.data.classes or []), val_acc,
                 time.perf_counter() - started, path)
    return paths

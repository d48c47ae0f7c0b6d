"""One run of the study: config -> data, backbone, freeze -> fit -> evaluate -> result.json.

:func:`run_job` never raises for a problem of the run itself (unless ``strict=true``): it
writes a ``failed`` record with a one-line reason, so a sweep goes on. A directory that
already holds a finished record of the same config and inputs is skipped; one that another
process is running (its job lock is held) is skipped too. Output trouble (a read-only or full
output directory) raises :class:`paramcorr.atomic.OutputError`, one line naming the directory.

This module is the hub: the lock, the skip, the record and the errors. The steps live with
what they hold and return values: :mod:`paramcorr.sources` (images or cached features),
:mod:`paramcorr.fitting` (a phase's trainer, module and fit), :mod:`paramcorr.evaluation`
(metrics over the splits, the non-finite verdict).
"""

from __future__ import annotations

import gc
import logging
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from paramcorr import (
    backbones,
    depth,
    device,
    fitting,
    freezing,
    loggers,
    sources,
    strategies,
)
from paramcorr.atomic import JobBusy, atomic_path, job_lock, remove_stale_temps, writing_to
from paramcorr.classifier import ClassifierModule
from paramcorr.config import validate
from paramcorr.data import DataSplits, build_data, count_classes, make_loader
from paramcorr.errors import UserError, is_out_of_memory
from paramcorr.evaluation import evaluate_splits, judge_metrics
from paramcorr.inputs import input_identity, listing_once
from paramcorr.record import (
    METRIC_KEYS,
    RECORD_NAME,
    STRATEGY_AXES_IN_EVERY_RECORD,
    NotRun,
    RunRecord,
    Status,
    config_hash,
    find_record,
    finite_number,
    is_finished,
    set_aside,
    write_record,
)

log = logging.getLogger(__name__)


@dataclass
class _Draft:
    """The record in progress: what the run has established so far, kept in the record even
    if a later step fails.

    Only this module writes it (the hub, right after a step returns a fact), so what a step
    did survives an exception of the next one; :meth:`to_record` is the one place that turns
    it into the record.
    """

    run: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] | None = None
    params: dict[str, int] | None = None
    metrics: dict[str, float | None] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    # Split sizes and what loading the data noticed (skipped images, carved splits).
    data: dict[str, Any] | None = None
    # The head trained on cached backbone features (freeze=base; freeze=lpft: its probe phase,
    # each entry of ``phases`` says which), and the feature-cache entry used.
    cached_features: bool | None = None
    feature_cache: dict[str, Any] | None = None
    # Which weights were evaluated ("best" or "last"), and why not the configured ones.
    evaluated_epoch: str | None = None
    evaluated_reason: str | None = None
    # The decoded-input cache entry used (data.cache_inputs), and whether a head on cached
    # features trained one Lightning step per epoch (classifier.EpochLoader).
    input_cache: dict[str, Any] | None = None
    head_epoch_steps: bool | None = None
    # Where it ran: device type and name, resolved precision, channels_last (device.py).
    device: dict[str, Any] | None = None
    # The training loss became non-finite (the run diverged).
    diverged: bool = False
    # What the job was doing (build, features, fit, evaluate): an OOM names that batch size.
    # Set before each stage starts, read only when one raised: the one fact about a failure
    # that no step can return.
    phase: str = "build"
    # A non-finite evaluation metric that is not divergence: the run cannot be completed.
    non_finite: str | None = None
    # A schedule of several phases (freeze=lpft): each one's epochs, steps, trainable count.
    phases: list[dict[str, Any]] = field(default_factory=list)

    def status(self, error: str | None) -> Status:
        if error or self.non_finite:
            return Status.FAILED
        return Status.DIVERGED if self.diverged else Status.COMPLETED

    def to_record(self, error: str | None, chash: str) -> RunRecord:
        error = error or self.non_finite
        extra = {"inputs": self.inputs, "data": self.data, "device": self.device,
                 "cached_features": self.cached_features, "feature_cache": self.feature_cache,
                 "input_cache": self.input_cache, "head_epoch_steps": self.head_epoch_steps,
                 "evaluated_epoch": self.evaluated_epoch,
                 "evaluated_reason": self.evaluated_reason, "phases": self.phases or None}
        reached = {"params": self.params, "metrics": self.metrics, "timing": self.timing,
                   "extra": extra}
        if error:
            return RunRecord.failed(self.run, chash, error, **reached)
        return RunRecord.of_run(self.status(error), self.run, chash, **reached)


def optimizer_name(cfg: DictConfig) -> str:
    target = str(OmegaConf.select(cfg, "optimizer._target_", default="?"))
    return target.rsplit(".", 1)[-1].lower()


def run_axes(cfg: DictConfig) -> dict[str, Any]:
    """The record's ``run`` block, from the config alone (so a failed run has it too).

    ``epochs`` and ``steps`` are what training did, filled in after it (None if it never
    ended); ``epochs_configured`` is what the config asked for.
    """
    classes = cfg.data.classes
    # frozen_stages is in every record (null unless partial); a strategy's other keys only in
    # its own (see paramcorr.record.RUN_AXES).
    return {
        "model": cfg.model.name,
        "weights": cfg.model.weights,
        "freeze": cfg.freeze.strategy,
        **dict.fromkeys(STRATEGY_AXES_IN_EVERY_RECORD),
        **strategies.from_config(cfg.freeze).run_axes(),
        "optimizer": optimizer_name(cfg),
        "lr": finite_number(OmegaConf.select(cfg, "optimizer.lr", default=None,
                                               throw_on_resolution_failure=False)),
        "seed": cfg.seed,
        "dataset": cfg.data.name,
        "num_classes": len(classes) if classes is not None else None,
        "epochs": None,
        "epochs_configured": cfg.trainer.get("max_epochs"),
        "steps": None,
        "batch_size": cfg.data.batch_size,
        "image_size": cfg.data.image_size,
        "eval_weights": cfg.eval_weights,
    }


def _check_before_training(cfg: DictConfig) -> None:
    """What only the job knows to refuse: choices whose combination cannot do what they say."""
    if cfg.optimized_metric not in METRIC_KEYS:
        raise UserError(f"optimized_metric={cfg.optimized_metric!r} is not a metric of the "
                        f"record; use one of {', '.join(METRIC_KEYS)}")
    missing = validation_missing(cfg.trainer)
    if str(cfg.eval_weights).lower() == "best" and missing is not None:
        reason, remedy = missing
        raise UserError(f"eval_weights=best needs validation, but {reason}; set "
                        f"eval_weights=last or {remedy}")


def validation_missing(trainer: DictConfig) -> tuple[str, str] | None:
    """Why the ``trainer`` config validates in no epoch (so there is no best epoch), and what
    would change that; None when it validates."""
    epochs = trainer.get("max_epochs")
    every = trainer.get("check_val_every_n_epoch") or 1
    if trainer.get("limit_val_batches") in (0, 0.0):
        return "trainer.limit_val_batches=0 runs none", "allow validation batches"
    if epochs is not None and 0 < epochs < every:
        return (f"trainer.check_val_every_n_epoch={every} is more than "
                f"trainer.max_epochs={epochs}", "validate more often")
    return None


def _fit_and_evaluate(cfg: DictConfig, output_dir: Path, draft: _Draft) -> None:
    """Build, train, evaluate: each step returns what it established and this hub writes it
    into ``draft`` at once (the steps never see the draft), so a later step's failure keeps
    it in the failed record."""
    model, splits = _build(cfg, draft)
    strategy = strategies.from_config(cfg.freeze)
    phases = strategy.phases(cfg.trainer.get("max_epochs"))
    # Placed by the launcher already; CUDA starts here, on the job's device (device.py).
    dev = device.setup(cfg.trainer, cfg.channels_last)
    draft.device = dev.describe()
    trainer, logger, checkpoint = fitting.make_trainer(cfg, output_dir, dev.precision,
                                                       phases[0].epochs, last=len(phases) == 1)
    if dev.channels_last:
        model = model.to(memory_format=torch.channels_last)
    device.reset_peak_memory(dev.device)
    draft.phase = "features"
    feeds = _sources(cfg, model, splits, dev, phases, draft)
    # peak_mem_mb: this job's fit and evaluation, whether the feature cache was cold or warm.
    device.reset_peak_memory(dev.device)
    draft.phase = "fit"
    trained = _train(cfg, output_dir, model, splits, feeds, phases, dev,
                     (trainer, logger, checkpoint), draft)

    started = time.perf_counter()
    draft.phase = "evaluate"
    metrics = evaluate_splits(trained.module, trained.inputs.evaluate, splits.num_classes,
                              dev.device, dev.autocast, cfg.data.eval_batch_size,
                              cfg.data.num_workers, loaders={"val": trained.val_loader})
    draft.metrics.update(metrics)
    draft.timing["eval_s"] = time.perf_counter() - started
    draft.timing["peak_mem_mb"] = device.peak_memory_mb(dev.device)
    verdict = judge_metrics(metrics)
    draft.diverged = draft.diverged or verdict.diverged
    draft.non_finite = verdict.non_finite
    loggers.log_final(trained.logger, metrics, draft.params, draft.run,
                      trained.trainer.global_step)
    if cfg.save_weights:
        backbones.save_checkpoint(strategy.for_export(model.cpu()),
                                  output_dir / "model.safetensors",
                                  metadata={"architecture": cfg.model.name})


def _build(cfg: DictConfig, draft: _Draft) -> tuple[torch.nn.Module, DataSplits]:
    """Backbone (weights, head for the classes), data for its input size, freeze, counts.

    Each fact goes into the record as soon as it is known: a failure of the next step (no
    weights offline, an input size the backbone refuses, a freeze it cannot take) keeps it.
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    draft.run["num_classes"] = num_classes = count_classes(cfg.data)
    model = backbones.create_backbone(cfg.model.name, cfg.model.weights, num_classes,
                                      drop_rate=cfg.model.drop_rate,
                                      weights_key=cfg.model.weights_key)
    dcfg = backbones.data_config(model, cfg.data.image_size)
    draft.run["image_size"] = size = dcfg["input_size"][-1]
    backbones.check_input_size(model, cfg.model.name, size)
    splits = build_data(cfg.data, dcfg, cfg.paths)
    draft.run["num_classes"] = splits.num_classes
    draft.data = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                  "gen": len(splits.gen) if splits.gen is not None else 0,
                  "bad_images_skipped": splits.bad_images_skipped, "notes": splits.notes}
    draft.run["num_groups"] = freezing.number_of_groups(model)
    model = strategies.from_config(cfg.freeze).prepare(model, cfg.model.name)
    draft.params = freezing.count_parameters(model).as_dict()
    return model, splits


def _sources(cfg: DictConfig, model: torch.nn.Module, splits: DataSplits,
             dev: device.DeviceSetup, phases: list[strategies.Phase],
             draft: _Draft) -> sources.Sources:
    """Images through the model, and (for the head-only phases, cache on: freeze=base, LP-FT's
    probe) features through the head; whether the caches were used is recorded before the
    features are computed, so an out-of-memory there still says so."""
    use_cache = sources.wants_cache(cfg, splits, model, phases)
    draft.cached_features = use_cache
    only_features = use_cache and all(phase.head_only for phase in phases)
    splits, input_norm, draft.input_cache = sources.cached_inputs(cfg, model, splits,
                                                                  only_features)
    images = None if only_features else sources.image_inputs(model, splits, input_norm)
    if not use_cache:
        return sources.Sources(images, None)
    features, run = sources.feature_inputs(cfg, model, splits, dev, input_norm)
    draft.timing["features_s"] = run.seconds
    if run.peak_mem_mb is not None:
        draft.timing["features_peak_mem_mb"] = run.peak_mem_mb
    draft.feature_cache = {"key": run.key, "hit": run.hit}
    return sources.Sources(images, features)


@dataclass
class _Trained:
    """The last phase's module and what it trained on, and what evaluation reuses of it."""

    module: ClassifierModule
    inputs: sources.Inputs
    trainer: Any
    logger: Any
    val_loader: Any


def _train(cfg: DictConfig, output_dir: Path, model: torch.nn.Module, splits: DataSplits,
           feeds: sources.Sources, phases: list[strategies.Phase], dev: device.DeviceSetup,
           first: tuple[Any, Any, Any], draft: _Draft) -> _Trained:
    """Every phase of the strategy's schedule, each with a fresh optimizer. A phase's counts
    are recorded before it fits and its outcome after it, so a failure in a later phase keeps
    the earlier ones."""
    trainer, logger, checkpoint = first  # made before the features (their device)
    pin = dev.device.type == "cuda"
    val_loaders: dict[int, Any] = {}  # one per source (workers persist), made when first used
    fit_s, samples, epochs_done, steps_done = 0.0, 0, 0, 0
    for index, phase in enumerate(phases):
        if index > 0:
            trainer, logger, checkpoint = fitting.make_trainer(
                cfg, output_dir, dev.precision, phase.epochs, last=index == len(phases) - 1)
        if len(phases) > 1:
            # On the whole model: a head on features is the model's own classifier, so what
            # the probe trains is in the model when fine-tuning starts.
            phase.strategy.prepare(model, cfg.model.name)
        inputs = feeds.for_phase(phase)
        if id(inputs) not in val_loaders:
            val_loaders[id(inputs)] = make_loader(
                inputs.evaluate["val"], cfg.data.eval_batch_size, shuffle=False,
                num_workers=cfg.data.num_workers, pin_memory=pin)
        val_loader = val_loaders[id(inputs)]
        train, epoch_steps = fitting.train_batches(cfg, inputs, trainer, dev)
        if epoch_steps is not None:
            draft.head_epoch_steps = epoch_steps
        prepared = fitting.phase_module(cfg, phase.strategy, inputs, train, bool(epoch_steps),
                                        splits.num_classes, dev)
        draft.params["in_optimizer"] = prepared.in_optimizer
        fitted = fitting.fit_phase(prepared, trainer, checkpoint, val_loader)
        module = prepared.module
        fit_s += fitted.fit_s
        samples += module.samples_trained
        epochs_done += fitted.epochs
        steps_done += fitted.steps
        if len(phases) > 1:
            draft.phases.append({"name": phase.name, "epochs": fitted.epochs,
                                 "steps": fitted.steps,
                                 "trainable": draft.params["in_optimizer"],
                                 "fit_s": fitted.fit_s,
                                 "cached_features": inputs.features})
            if index < len(phases) - 1:
                draft.params[f"trainable_{phase.name}"] = draft.params["in_optimizer"]
        if module.diverged:
            break
    draft.diverged = module.diverged
    draft.run.update(epochs=epochs_done, steps=steps_done)
    draft.timing.update(fit_s=fit_s, train_samples_per_s=samples / fit_s if fit_s > 0 else 0.0)
    draft.evaluated_epoch = "best" if fitted.best_loaded else "last"
    if checkpoint is not None and not fitted.best_loaded:
        draft.evaluated_reason = ("diverged: its last finite weights" if module.diverged
                                  else "no validation epoch finished, so no best epoch")
    return _Trained(module, inputs, trainer, logger, val_loader)


def _error_message(err: BaseException, cfg: DictConfig, output_dir: Path,
                   phase: str = "fit") -> str:
    if isinstance(err, UserError):
        return str(err)
    if is_out_of_memory(err):
        return device.oom_message(cfg, phase)
    first = (str(err).strip().splitlines() or [""])[0][:300]
    log_path = output_dir / "error.log"
    try:
        # Atomically: a symlink planted at error.log is replaced, never written through.
        with atomic_path(log_path) as tmp:
            tmp.write_text(traceback.format_exc())
    except OSError as log_err:  # the first error stays the message; say why there is no log
        return (f"{type(err).__name__}: {first} (no traceback: could not write {log_path}: "
                f"{log_err.strerror or log_err})")
    return f"{type(err).__name__}: {first} (traceback in {log_path})"


def summary_line(record: RunRecord) -> str:
    run, metrics, params = record.run, record.metrics, record.params or {}
    trainable = params.get("trainable")
    acc = metrics.get("test_acc")
    seconds = record.timing.get("total_s", 0.0)
    lr = run.get("lr")
    parts = [
        f"{run.get('model', '?')}", f"freeze={run.get('freeze', '?')}"
        + (f"({run['frozen_stages']})" if run.get("frozen_stages") is not None else ""),
        f"{run.get('optimizer', '?')} lr={lr:g}" if lr is not None
        else f"{run.get('optimizer', '?')} lr=?",
        f"trainable={trainable:,}" if trainable is not None else "trainable=?",
        f"test_acc={acc:.3f}" if acc is not None else "test_acc=n/a",
        f"{seconds:.1f}s", record.status,
    ]
    line = " | ".join(parts)
    if record.error:
        line += f": {record.error}"
    return line


def run_job(cfg: DictConfig, output_dir: Path) -> RunRecord | NotRun:
    """Run one configuration into ``output_dir/result.json`` and return its record.

    Returns :class:`NotRun` instead when no new record is written: a finished record of the
    same config and inputs is there, another process holds the job's lock, or the job is
    not applicable (depth sweeps). Raises :class:`paramcorr.atomic.OutputError` when
    ``output_dir`` cannot be written.
    """
    output_dir = Path(output_dir)
    with writing_to(output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with job_lock(output_dir), listing_once():  # the data folders listed once per job
            return _run_locked(cfg, output_dir)
    except JobBusy as busy:  # raised on entering the lock only: the job did not start here
        log.info("skip (running in another process): %s", busy)
        return NotRun("busy", str(busy))


def _run_locked(cfg: DictConfig, output_dir: Path) -> RunRecord | NotRun:
    """:func:`run_job` once the job's lock is held: this process alone writes here."""
    with writing_to(output_dir):
        remove_stale_temps(output_dir)  # a killed earlier attempt's half-written files
        not_applicable = depth.skip_if_out_of_range(cfg, output_dir)
    if not_applicable is not None:  # a depth sweep's stage this backbone lacks: no record
        return not_applicable
    record_path = output_dir / RECORD_NAME
    draft = _Draft(inputs=input_identity(cfg))
    chash = config_hash(cfg, draft.inputs)
    existing = find_record(record_path)
    if is_finished(existing, chash):
        log.info("skip (already %s): %s", existing.status, output_dir)
        return NotRun("finished", f"already {existing.status}", existing)
    if existing is not None or record_path.exists():
        with writing_to(output_dir):
            moved = set_aside(record_path, existing)
        log.info("earlier record kept as %s", moved.name)

    started = time.perf_counter()
    error = None
    try:
        draft.run = run_axes(cfg)
        validate(cfg)
        _check_before_training(cfg)
        with loggers.quiet_lightning():
            _fit_and_evaluate(cfg, output_dir, draft)
    except Exception as err:  # noqa: BLE001 - every failure becomes the run's record
        if cfg.get("strict", False):
            raise
        error = _error_message(err, cfg, output_dir, draft.phase)
    finally:
        # Free what the job built (Lightning's trainer holds reference cycles) before the next
        # job of a sweep in this process.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    draft.timing["total_s"] = time.perf_counter() - started
    record = draft.to_record(error, chash)
    with writing_to(output_dir):
        write_record(record_path, record)
    (log.error if record.error else log.info)(summary_line(record))
    return record

"""One run of the study: config -> data, backbone, freeze -> fit -> evaluate -> result.json.

:func:`run_job` never raises for a problem of the run itself (unless ``strict=true``): it
writes a ``failed`` record with a one-line reason, so a sweep goes on. A directory that
already holds a finished record of the same config and inputs is skipped; one that another
process is running (its job lock is held) is skipped too. Output trouble (a read-only or full
output directory) raises :class:`paramcorr.atomic.OutputError`, one line naming the directory.
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
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, TensorDataset

from paramcorr import (
    backbones,
    depth,
    device,
    feature_cache,
    freezing,
    input_cache,
    loggers,
    strategies,
    training,
)
from paramcorr.atomic import JobBusy, atomic_path, job_lock, remove_stale_temps, writing_to
from paramcorr.classifier import ClassifierModule, epoch_loader
from paramcorr.config import validate
from paramcorr.data import DataSplits, build_data, count_classes, make_loader
from paramcorr.errors import UserError, is_out_of_memory
from paramcorr.evaluation import evaluate
from paramcorr.inputs import input_identity, listing_once
from paramcorr.record import (
    METRIC_KEYS,
    RECORD_NAME,
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
class _PartialRecord:
    """What a run has established so far: kept in the record even if a later step fails.

    Each field is filled by the step that knows it; :meth:`to_record` is the one place that
    turns them into the record's JSON shape.
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
    # its own (see paramcorr.strategy_names).
    return {
        "model": cfg.model.name,
        "weights": cfg.model.weights,
        "freeze": cfg.freeze.strategy,
        "frozen_stages": None,
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
    if str(cfg.eval_weights).lower() == "best":
        trainer = cfg.trainer
        epochs = trainer.get("max_epochs")
        every = trainer.get("check_val_every_n_epoch") or 1
        if trainer.get("limit_val_batches") in (0, 0.0):
            raise UserError("eval_weights=best needs validation, but "
                            "trainer.limit_val_batches=0 runs none; set eval_weights=last or "
                            "allow validation batches")
        if epochs is not None and 0 < epochs < every:
            raise UserError(f"eval_weights=best needs validation, but "
                            f"trainer.check_val_every_n_epoch={every} is more than "
                            f"trainer.max_epochs={epochs}; set eval_weights=last or validate "
                            "more often")


@dataclass
class _Inputs:
    """What the classifier trains and is evaluated on: images, or cached frozen features."""

    net: torch.nn.Module
    # Whether the module holds the frozen parts in eval mode (a head alone has none).
    hold_frozen: bool
    train: Dataset
    evaluate: dict[str, Dataset]
    # uint8 batches from the input cache -> the model's normalised float input, on device.
    input_norm: torch.nn.Module | None = None
    features: bool = False


@dataclass
class _Sources:
    """What each phase of a schedule trains on: cached features for a head-only phase where
    the feature cache applies, images through the model otherwise (None: no phase needs it)."""

    images: _Inputs | None
    features: _Inputs | None

    def for_phase(self, phase: strategies.Phase) -> _Inputs:
        if phase.head_only and self.features is not None:
            return self.features
        assert self.images is not None  # built whenever a phase trains through the model
        return self.images


def _build(cfg: DictConfig, partial: _PartialRecord) -> tuple[torch.nn.Module, DataSplits]:
    """Backbone (weights, head for the classes), data for its input size, freeze, counts."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    num_classes = count_classes(cfg.data)
    partial.run["num_classes"] = num_classes
    model = backbones.create_backbone(cfg.model.name, cfg.model.weights, num_classes,
                                      drop_rate=cfg.model.drop_rate,
                                      weights_key=cfg.model.weights_key)
    dcfg = backbones.data_config(model, cfg.data.image_size)
    size = dcfg["input_size"][-1]
    partial.run["image_size"] = size
    backbones.check_input_size(model, cfg.model.name, size)
    splits = build_data(cfg.data, dcfg, cfg.paths)
    partial.run["num_classes"] = splits.num_classes
    partial.data = {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                    "gen": len(splits.gen) if splits.gen is not None else 0,
                    "bad_images_skipped": splits.bad_images_skipped, "notes": splits.notes}
    partial.run["num_groups"] = freezing.number_of_groups(model)
    model = strategies.from_config(cfg.freeze).prepare(model, cfg.model.name)
    partial.params = freezing.count_parameters(model).as_dict()
    return model, splits


def _make_trainer(cfg: DictConfig, output_dir: Path, precision: str,
                  max_epochs: int | None = None, last: bool = True) -> tuple[Any, Any, Any]:
    """The Lightning Trainer, its logger, and the best-epoch checkpoint (eval_weights=best).

    For one phase of a strategy's schedule: ``max_epochs`` its epochs (None: the config's);
    only the ``last`` phase logs and keeps the best epoch (the weights that are evaluated).
    """
    logger = instantiate(cfg.logger) if cfg.logger and last else False
    trainer_kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_kwargs["precision"] = precision  # resolved for this device (trainer=gpu: auto)
    if max_epochs is not None:
        trainer_kwargs["max_epochs"] = max_epochs
    trainer, checkpoint = training.make_trainer(
        trainer_kwargs, output_dir, logger=logger,
        keep_best=last and str(cfg.eval_weights).lower() == "best")
    return trainer, logger, checkpoint


def _inputs(cfg: DictConfig, model: torch.nn.Module, splits: DataSplits,
            partial: _PartialRecord, dev: device.DeviceSetup,
            phases: list[strategies.Phase]) -> _Sources:
    """Images through the model, and (for the head-only phases, cache on: freeze=base, LP-FT's
    probe) features through the head: one eligibility rule and one cache entry per backbone,
    weights and data, whichever strategy's phase trains on it."""
    use_cache = _wants_cache(cfg, splits, model, phases)
    partial.cached_features = use_cache
    only_features = use_cache and all(phase.head_only for phase in phases)
    splits, input_norm = _cached_inputs(cfg, model, splits, partial, only_features)
    images = None
    if not only_features:
        evaluate_sets = {"train": splits.train_eval, "val": splits.val, "test": splits.test}
        if splits.gen is not None:
            evaluate_sets["gen"] = splits.gen
        images = _Inputs(model, True, splits.train, evaluate_sets, input_norm)
    if not use_cache:
        return _Sources(images, None)
    started = time.perf_counter()
    model.to(dev.device)
    key = feature_cache.cache_key(
        cfg.model.name,
        feature_cache.weights_identity(cfg.model.weights, cfg.seed,
                                       model.pretrained_cfg.get("tag"), cfg.model.weights_key),
        splits.fingerprint, dev.precision)
    features, hit = feature_cache.load_or_compute(
        model, splits, key, Path(cfg.paths.cache_dir) / "features", cfg.data.eval_batch_size,
        dev.device, dev.autocast, dev.channels_last,
        prepare=input_norm.to(dev.device) if input_norm is not None else None,
        num_workers=cfg.data.num_workers)
    partial.timing["features_s"] = time.perf_counter() - started
    if not hit:
        partial.timing["features_peak_mem_mb"] = device.peak_memory_mb(dev.device)
    partial.feature_cache = {"key": key, "hit": hit}
    datasets = {split: TensorDataset(*tensors) for split, tensors in features.items()}
    return _Sources(images, _Inputs(model.get_classifier(), False, datasets["train"], datasets,
                                    features=True))


def _cached_inputs(cfg: DictConfig, model: torch.nn.Module, splits: DataSplits,
                   partial: _PartialRecord, features: bool
                   ) -> tuple[DataSplits, torch.nn.Module | None]:
    """The splits from the decoded-input cache (data.cache_inputs), where it is used."""
    mode = str(cfg.data.cache_inputs).lower()
    if mode == "false" or (features and mode == "auto"):
        return splits, None  # off, or nothing to gain: the head trains on cached features
    input_size = tuple(backbones.data_config(model, cfg.data.image_size)["input_size"])
    served = input_cache.cached_splits(splits, mode, cfg.data.cache_max_gb,
                                       Path(cfg.paths.cache_dir) / "inputs", input_size,
                                       cfg.data.num_workers)
    if served is None:
        return splits, None
    cached, norm, info = served
    partial.input_cache = info
    return cached, norm


def _evaluate(module: torch.nn.Module, inputs: _Inputs, cfg: DictConfig, num_classes: int,
              device: torch.device, autocast: torch.dtype | None,
              loaders: dict[str, Any] | None = None) -> dict[str, float]:
    """Eval-mode metrics on every split, and the train-test gaps.

    ``loaders``: loaders already made for a split (fit's validation loader, whose workers
    persist), reused instead of forking new workers.
    """
    module.to(device).eval()
    metrics: dict[str, float] = {}
    for split, dataset in inputs.evaluate.items():
        loader = (loaders or {}).get(split) or make_loader(
            dataset, cfg.data.eval_batch_size, shuffle=False, num_workers=cfg.data.num_workers,
            pin_memory=device.type == "cuda")
        result = evaluate(module, loader, num_classes, device, autocast)
        metrics[f"{split}_acc"] = result["acc"]
        metrics[f"{split}_loss"] = result["loss"]
        if split in ("test", "gen"):
            metrics[f"{split}_f1"] = result["f1"]
    metrics["gap_acc"] = metrics["train_acc"] - metrics["test_acc"]
    metrics["gap_loss"] = metrics["test_loss"] - metrics["train_loss"]
    return metrics


def _judge_metrics(metrics: dict[str, float], partial: _PartialRecord) -> None:
    """No non-finite metric ends ``completed``.

    Non-finite on the training split (the eval-mode pass over it): the model collapsed on
    its own training data, i.e. diverged. Non-finite elsewhere while the training split
    evaluates finite: that split's inputs (or the model's outputs on them) are not numbers,
    which is no outcome of the hyperparameters: ``failed``, naming the metrics.
    """
    bad = [k for k, v in metrics.items() if finite_number(v) is None]
    if not bad:
        return
    if any(k.startswith("train_") for k in bad):
        partial.diverged = True
        return
    splits = sorted({k.split("_")[0] for k in bad} - {"gap"})
    partial.non_finite = (f"non-finite {', '.join(bad)} while the training split evaluates "
                          f"finite: the {'/'.join(splits)} inputs or outputs are not numbers "
                          "(check the data, e.g. data.shift_noise_std)")


def _fit_and_evaluate(cfg: DictConfig, output_dir: Path, partial: _PartialRecord) -> None:
    model, splits = _build(cfg, partial)
    strategy = strategies.from_config(cfg.freeze)
    phases = strategy.phases(cfg.trainer.get("max_epochs"))
    # Placed by the launcher already; CUDA starts here, on the job's device (device.py).
    dev = device.setup(cfg.trainer, cfg.channels_last)
    partial.device = dev.describe()
    trainer, logger, checkpoint = _make_trainer(cfg, output_dir, dev.precision,
                                                phases[0].epochs, last=len(phases) == 1)
    if dev.channels_last:
        model = model.to(memory_format=torch.channels_last)
    device.reset_peak_memory(dev.device)
    partial.phase = "features"
    sources = _inputs(cfg, model, splits, partial, dev, phases)
    # peak_mem_mb: this job's fit and evaluation, whether the feature cache was cold or warm.
    device.reset_peak_memory(dev.device)
    partial.phase = "fit"

    pin = dev.device.type == "cuda"
    val_loaders: dict[int, Any] = {}  # one per source (workers persist), made when first used
    fit_s, samples, epochs_done, steps_done = 0.0, 0, 0, 0
    for index, phase in enumerate(phases):
        if index > 0:
            trainer, logger, checkpoint = _make_trainer(cfg, output_dir, dev.precision,
                                                        phase.epochs,
                                                        last=index == len(phases) - 1)
        if len(phases) > 1:
            # On the whole model: a head on features is the model's own classifier, so what
            # the probe trains is in the model when fine-tuning starts.
            phase.strategy.prepare(model, cfg.model.name)
        inputs = sources.for_phase(phase)
        if id(inputs) not in val_loaders:
            val_loaders[id(inputs)] = make_loader(
                inputs.evaluate["val"], cfg.data.eval_batch_size, shuffle=False,
                num_workers=cfg.data.num_workers, pin_memory=pin)
        val_loader = val_loaders[id(inputs)]
        module, fitted = _fit_phase(cfg, phase.strategy, inputs, splits, trainer, checkpoint,
                                    val_loader, dev, partial)
        fit_s += fitted.fit_s
        samples += module.samples_trained
        epochs_done += fitted.epochs
        steps_done += fitted.steps
        if len(phases) > 1:
            partial.phases.append({"name": phase.name, "epochs": fitted.epochs,
                                   "steps": fitted.steps,
                                   "trainable": partial.params["in_optimizer"],
                                   "fit_s": fitted.fit_s,
                                   "cached_features": inputs.features})
            if index < len(phases) - 1:
                partial.params[f"trainable_{phase.name}"] = partial.params["in_optimizer"]
        if module.diverged:
            break
    partial.diverged = module.diverged
    partial.run.update(epochs=epochs_done, steps=steps_done)
    partial.timing.update(fit_s=fit_s, train_samples_per_s=samples / fit_s if fit_s > 0 else 0.0)
    partial.evaluated_epoch = "best" if fitted.best_loaded else "last"
    if checkpoint is not None and not fitted.best_loaded:
        partial.evaluated_reason = ("diverged: its last finite weights" if module.diverged
                                    else "no validation epoch finished, so no best epoch")

    started = time.perf_counter()
    partial.phase = "evaluate"
    metrics = _evaluate(module, inputs, cfg, splits.num_classes, dev.device, dev.autocast,
                        loaders={"val": val_loader})
    partial.metrics.update(metrics)
    partial.timing["eval_s"] = time.perf_counter() - started
    partial.timing["peak_mem_mb"] = device.peak_memory_mb(dev.device)
    _judge_metrics(metrics, partial)
    loggers.log_final(logger, metrics, partial.params, partial.run, trainer.global_step)
    if cfg.save_weights:
        backbones.save_checkpoint(strategy.for_export(model.cpu()),
                                  output_dir / "model.safetensors",
                                  metadata={"architecture": cfg.model.name})


def _fit_phase(cfg: DictConfig, strategy: strategies.Strategy, inputs: _Inputs,
               splits: DataSplits, trainer: Any, checkpoint: Any, val_loader: Any,
               dev: device.DeviceSetup, partial: _PartialRecord
               ) -> tuple[ClassifierModule, training.FitResult]:
    """Train the parameters ``strategy`` has set trainable, with a fresh optimizer."""
    train_loader = make_loader(inputs.train, cfg.data.batch_size, shuffle=True, seed=cfg.seed,
                               num_workers=cfg.data.num_workers,
                               pin_memory=dev.device.type == "cuda")
    # A head on cached features: one Lightning step per epoch, same batches (classifier.py).
    epochs = epoch_loader(train_loader, trainer) if inputs.features else None
    if inputs.features:
        partial.head_epoch_steps = epochs is not None
    module = ClassifierModule(inputs.net, instantiate(cfg.optimizer), splits.num_classes,
                              strategy=strategy, channels_last=dev.channels_last,
                              hold_frozen=inputs.hold_frozen, input_norm=inputs.input_norm,
                              epoch_steps=epochs is not None,
                              train_forward=device.compile_for_training(inputs.net)
                              if cfg.compile else None)
    partial.params["in_optimizer"] = sum(
        p.numel() for p in module.net.parameters() if p.requires_grad)
    fitted = training.fit(trainer, checkpoint, module, epochs or train_loader, val_loader)
    return module, fitted


def _wants_cache(cfg: DictConfig, splits: DataSplits, model: torch.nn.Module,
                 phases: list[strategies.Phase]) -> bool:
    """freeze.cache_features: auto = where equivalent; true = must (else a one-line refusal);
    false = never. It applies to head-only phases (freeze=base, LP-FT's probe): the others
    train the backbone."""
    mode = str(cfg.freeze.cache_features).lower()
    if not any(phase.head_only for phase in phases) or mode == "false":
        return False

    def off(reason: str) -> bool:
        if mode == "true":
            raise UserError(f"freeze.cache_features=true but {reason}; set "
                            "freeze.cache_features=auto (or false) to train through the backbone")
        log.info("feature cache off: %s", reason)
        return False

    if splits.augmented:
        return off("data.augment=true changes the inputs every epoch")
    sample = splits.train_eval[0][0].unsqueeze(0)
    model.eval()
    if not feature_cache.head_is_separable(model, sample):
        return off(f"{cfg.model.name}'s output is not its classifier applied to its pooled "
                   "features")
    return True


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
    partial = _PartialRecord(inputs=input_identity(cfg))
    chash = config_hash(cfg, partial.inputs)
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
        partial.run = run_axes(cfg)
        validate(cfg)
        _check_before_training(cfg)
        with loggers.quiet_lightning():
            _fit_and_evaluate(cfg, output_dir, partial)
    except Exception as err:  # noqa: BLE001 - every failure becomes the run's record
        if cfg.get("strict", False):
            raise
        error = _error_message(err, cfg, output_dir, partial.phase)
    finally:
        # Free what the job built (Lightning's trainer holds reference cycles) before the next
        # job of a sweep in this process.
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    partial.timing["total_s"] = time.perf_counter() - started
    record = partial.to_record(error, chash)
    with writing_to(output_dir):
        write_record(record_path, record)
    (log.error if record.error else log.info)(summary_line(record))
    return record

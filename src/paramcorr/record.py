"""The run record, ``result.json``: its shape (DESIGN.md, schema 1), hashing and atomic I/O."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from paramcorr.atomic import atomic_path
from paramcorr.files import read_regular_file
from paramcorr.strategy_names import STRATEGY_TERMS

SCHEMA = 1
RECORD_NAME = "result.json"
# Written instead of a record by a job that does not apply (see paramcorr.depth).
NOT_APPLICABLE_NAME = "not_applicable.json"


class Status(StrEnum):
    """How a run ended: the record's ``status``. A ``StrEnum``, so a member is the very text
    the record holds (``Status.COMPLETED == "completed"``, and JSON writes it as that text)."""

    COMPLETED = "completed"  # trained and evaluated, every loss finite
    DIVERGED = "diverged"    # trained and evaluated, but a training loss went non-finite
    FAILED = "failed"        # an exception ended it; the metrics are absent


# --- the record's table: what a result.json holds, declared once ----------------------------
# The job fills it (paramcorr.job), the validator checks it (RunRecord.from_dict), the
# analysis reads it and the synthetic generator writes it; the public tuples below
# (METRIC_KEYS, NUMERIC_AXES, TEXT_AXES, ...) are derived from it. Adding a metric is one
# Metric line here plus its computation; adding a run axis, one Axis line plus its value.

AxisKind = Literal["text", "number", "integer"]
FilledBy = Literal["config", "build", "training"]


@dataclass(frozen=True)
class Axis:
    """One key of the record's ``run`` block.

    ``kind``: what a value is when not null. ``number`` is any finite number (an integer
    too): the axes the validator has always checked so, whose records on disk must keep
    reading; ``integer`` is checked as an integer. ``filled_by``: ``config``, from the config
    alone (:func:`paramcorr.job.run_axes`), so a record that failed before anything ran holds
    it too (``num_classes`` and ``image_size`` are then refined once the backbone and data
    are built); ``build``, once the backbone is built (absent from a record that failed
    before); ``training``, what training did: null until it ends. ``strategy``: only the
    records of that freeze strategy hold it (its ``StrategyTerms.axes``); None: every record.
    """

    name: str
    kind: AxisKind
    filled_by: FilledBy = "config"
    strategy: str | None = None

    @property
    def always_present(self) -> bool:
        """In every record the job writes, a failed one included (null where unknown)."""
        return self.strategy is None and self.filled_by != "build"


@dataclass(frozen=True)
class Metric:
    """One key of the record's ``metrics`` block: a number, or null where not measured.

    ``core``: DESIGN.md's fixed metrics, in every record (null where unknown) and in this
    order; the others are written where they are computed.
    """

    name: str
    meaning: str
    core: bool = True


# In every record (null unless freeze=partial), unlike the other strategies' keys: the study's
# depth axis, older than the strategies that came with their own.
STRATEGY_AXES_IN_EVERY_RECORD = ("frozen_stages",)


def _strategy_axes() -> tuple[Axis, ...]:
    """Each strategy's run axes as its vocabulary declares them (paramcorr.strategy_names):
    a new strategy's keys reach the record, the validator and the analysis from there."""
    axes = {}
    for terms in STRATEGY_TERMS:
        for name, _ in terms.axes:
            kind = "text" if name in terms.text_axes else "number"
            owner = None if name in STRATEGY_AXES_IN_EVERY_RECORD else terms.name
            axes.setdefault(name, Axis(name, kind, strategy=owner))
    return tuple(axes.values())


# In the order the record holds them (paramcorr.job.run_axes); ``num_groups`` (filled once the
# backbone is built) stands where the analysis shows it, with the axes of the model.
RUN_AXES: tuple[Axis, ...] = (
    Axis("model", "text"),
    Axis("weights", "text"),
    Axis("freeze", "text"),
    *_strategy_axes(),
    # The backbone's count of timm's coarse parameter groups (the depth axis of partial and
    # surgical): known once the backbone is built (paramcorr.job, paramcorr.depth).
    Axis("num_groups", "number", "build"),
    Axis("optimizer", "text"),
    Axis("lr", "number"),
    Axis("seed", "number"),
    Axis("dataset", "text"),
    Axis("num_classes", "number"),
    Axis("epochs", "number", "training"),
    Axis("epochs_configured", "integer"),
    Axis("steps", "integer", "training"),
    Axis("batch_size", "number"),
    Axis("image_size", "number"),
    Axis("eval_weights", "text"),
)
METRICS: tuple[Metric, ...] = (
    Metric("train_acc", "accuracy of an eval-mode pass over the training split"),
    Metric("train_loss", "loss of that pass"),
    Metric("val_acc", "accuracy on the validation split"),
    Metric("val_loss", "loss on the validation split"),
    Metric("test_acc", "micro accuracy on the held-out i.i.d. test split"),
    Metric("test_f1", "macro F1 on the test split"),
    Metric("test_loss", "loss on the test split"),
    Metric("gen_acc", "accuracy on the generalization set"),
    Metric("gen_f1", "macro F1 on the generalization set"),
    Metric("gap_acc", "train_acc - test_acc"),
    Metric("gap_loss", "test_loss - train_loss"),
    Metric("gen_loss", "loss on the generalization set", core=False),
)

# Best outcome first (the analysis keeps the best of two records of one config).
STATUSES = tuple(Status)
METRIC_KEYS = tuple(m.name for m in METRICS if m.core)
# Every timing a record holds (0.0 where the run never got there); a job adds others.
TIMING_KEYS = ("fit_s", "eval_s", "train_samples_per_s")

# The one list of keys that do not change a run's result: where its files go, how visibly it
# runs, how fast its data loads, which value it reports to a sweeper. A key (or any key below
# it) listed here is left out of both the identity hash (:func:`config_hash`) and the job's
# directory name in a sweep (conf/hydra/default.yaml reads this list through the
# ``paramcorr.result_neutral_keys`` resolver, see paramcorr.entry), so changing one of them
# finds and skips the finished jobs. ``data.root`` and ``data.generalization_root`` are here
# because the identity covers what they hold (the fingerprint of their files), not where
# they are; a sweep on other data gets its own sweep directory (see conf/hydra/default.yaml).
# ``experiment`` is a preset's name, not a config key: its values are hashed where they land.
RESULT_NEUTRAL_KEYS = (
    "name", "strict", "experiment", "optimized_metric",
    "paths.output_root", "paths.cache_dir", "paths.pretrained_dir",
    "logger", "logger.tracking_uri",
    "data.root", "data.generalization_root", "data.num_workers", "data.cache_inputs",
    "data.cache_max_gb",
    "freeze.cache_features", "freeze.out_of_range",
    "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
)
# Keys that only feed another, hashed key: the top-level ``lr`` is ``optimizer.lr``'s
# default, so ``lr=1e-2`` and ``optimizer.lr=1e-2`` hash alike. Not result-neutral (it is the
# study's lr axis and names the job's directory), only redundant in the hash.
_HASH_ALIASES = ("lr",)
# The identity of a run's inputs (paramcorr.inputs) that goes into its hash; ``data_root``
# is stored in the record for the reader but is not part of the identity.
_HASHED_INPUTS = ("data_fingerprint", "weights_digest")


# How the batches of a run are drawn, part of every identity: version 2 draws each epoch's
# order and each sample's augmentation from (seed, epoch) alone (paramcorr.data.SeededOrder),
# whatever the loader, worker count or cache. Version 1's records have other batches from the
# second epoch on, so a relaunch runs them again rather than mix two orders under one hash.
BATCH_ORDER = 2


def result_neutral(key: str) -> bool:
    """``key`` (dotted, from the config's root) or one of its parents is result-neutral (or a
    hash alias): the one rule the config hash, the input fingerprints and the cache keys
    follow."""
    parts = key.split(".")
    return any(".".join(parts[:i]) in RESULT_NEUTRAL_KEYS or ".".join(parts[:i]) in
               _HASH_ALIASES for i in range(1, len(parts) + 1))


def identity_values(node: DictConfig, prefix: str = "") -> Any:
    """``node``'s values with every result-neutral key left out, interpolations resolved.

    ``prefix`` is where ``node`` sits in the config (``"data."`` for the data node), so the
    rule is applied to full key names wherever the node is hashed.
    """

    def resolved(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: resolved(v, f"{where}{k}.") for k, v in value.items()
                    if not result_neutral(f"{where}{k}")}
        if isinstance(value, list):
            return [resolved(v, f"{where}{i}.") for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:
            return OmegaConf.select(node, where[len(prefix):].rstrip("."),
                                    throw_on_resolution_failure=False)
        return value

    return resolved(OmegaConf.to_container(node, resolve=False), prefix)


def config_hash(cfg: DictConfig, inputs: dict[str, Any] | None = None) -> str:
    """A stable hash of everything in ``cfg`` that can change a run's result.

    Values are resolved (so ``lr=1e-2`` and ``optimizer.lr=1e-2`` hash alike); result-neutral
    keys are left out (:func:`identity_values`). ``inputs`` (see
    :func:`paramcorr.inputs.input_identity`) adds what the config names but does not hold: the
    dataset's fingerprint and the weights file's digest, so a re-run after either changed is
    another job. :data:`BATCH_ORDER` says how the batches were drawn.
    """
    plain: dict[str, Any] = {"config": identity_values(cfg), "batch_order": BATCH_ORDER}
    if inputs is not None:
        plain["inputs"] = {k: inputs.get(k) for k in _HASHED_INPUTS}
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finite_number(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool, NaN, inf or text).

    The one test of "is a usable number" for records, loggers and the analysis.
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _finite_or_none(value: Any) -> Any:
    """A number as JSON can hold it (non-finite: null); other values (a list) unchanged."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return finite_number(value)
    return value


def write_record(path: Path, record: RunRecord | dict[str, Any]) -> None:
    """Write ``record`` so that ``path`` holds either the old file or the whole new one.

    A plain dict is written as given (test fixtures of foreign or partial files).
    """
    data = record.to_dict() if isinstance(record, RunRecord) else record
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        json.dump(data, handle, indent=2, allow_nan=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())


def is_finished(record: RunRecord | None, config_hash: str) -> bool:
    """A completed or diverged record of the same config: re-running would only repeat it."""
    return record is not None and record.finished and record.config_hash == config_hash


def set_aside(path: Path, record: RunRecord | None) -> Path:
    """Keep a record of another config (or a failed or unreadable one) under a name analysis
    ignores: ``result.<status>-<hash>[-<n>].json.old``, never over an earlier one.

    The name is claimed with a hard link, which fails rather than replace an existing file,
    so two set-asides of records with the same status and hash both stay. The record keeps
    its ``inputs`` block, so it stays traceable to the data it ran on.
    """
    status = record.status if record is not None else "unreadable"
    chash = record.config_hash if record is not None else "unknown"
    for n in itertools.count():
        target = path.with_name(f"result.{status}-{chash}{f'-{n}' if n else ''}.json.old")
        try:
            os.link(path, target)
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links: check, then rename
            if target.exists():
                continue
            os.rename(path, target)
            return target
        os.unlink(path)
        return target
    raise AssertionError("unreachable")


# --- the record type ----------------------------------------------------------------------
# One definition of what a result.json holds, used by the job that writes it and by the
# analysis that reads it. Reading validates every field the analysis relies on, so a foreign
# or hand-edited file is skipped with a reason instead of failing the analysis.

FINISHED_STATUSES = (Status.COMPLETED, Status.DIVERGED)
# Run axes whose values are numbers (or null); the rest are text (or null).
NUMERIC_AXES = tuple(a.name for a in RUN_AXES if a.kind != "text")
TEXT_AXES = tuple(a.name for a in RUN_AXES if a.kind == "text")
PARAM_KEYS = ("total", "trainable", "frozen")
# A record is a few kilobytes (a confusion matrix of 1,000 classes: a few megabytes); a larger
# file is no record, and must not be read whole into memory.
MAX_RECORD_BYTES = 64 * 2**20
# Larger integers are not counts or axes of any run (and overflow numpy's int64).
_MAX_INT = 2**53


# Why a file is not a usable record, for the reasons with no field name. Reasons never hold the
# offending value (the detail does), so the analysis can count files per reason.
NOT_A_RECORD = "not a run record"
FUTURE_SCHEMA = "future schema"
INVALID_JSON = "invalid JSON"
UNREADABLE = "unreadable"
# Spellings of a non-finite metric that other JSON writers produce for NaN / infinity.
_NONFINITE_TEXT = frozenset({"nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"})


class RecordError(ValueError):
    """A file that is not a usable run record; ``str(err)`` is one line.

    ``reason`` says what is wrong without the offending value (e.g. ``params.trainable is not
    a count``): files are counted per reason. ``str(err)`` adds the value as ``detail``.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(f"{reason} ({detail})" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass
class RunRecord:
    """One run's ``result.json`` (DESIGN.md, schema 1). ``extra`` holds any other top-level key."""

    status: Status
    run: dict[str, Any]
    params: dict[str, int] | None
    metrics: dict[str, float | None]
    timing: dict[str, float]
    config_hash: str
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = SCHEMA

    @property
    def finished(self) -> bool:
        """Completed or diverged: re-running the same config would only repeat it."""
        return self.status in FINISHED_STATUSES

    @classmethod
    def of_run(cls, status: Status, run: dict[str, Any], config_hash: str, *,
               error: str | None = None, params: dict[str, int] | None = None,
               metrics: dict[str, Any] | None = None, timing: dict[str, float] | None = None,
               extra: dict[str, Any] | None = None) -> RunRecord:
        """The record a run writes, whatever it reached: every core metric (null where not
        measured) in the table's order, then the others; every timing of
        :data:`TIMING_KEYS` (0.0 where not reached) before the others; an ``extra`` key
        whose value is None (not established) left out.

        Metrics are stored as the file holds them (JSON has no NaN: non-finite is null), so
        the record returned is the record written.
        """
        metrics = metrics or {}
        merged = {k: metrics.get(k) for k in METRIC_KEYS}
        merged.update({k: v for k, v in metrics.items() if k not in merged})
        return cls(status=status, run=run, params=params,
                   metrics={k: finite_number(v) for k, v in merged.items()},
                   timing={**dict.fromkeys(TIMING_KEYS, 0.0), **(timing or {})},
                   config_hash=config_hash, error=error,
                   extra={k: v for k, v in (extra or {}).items() if v is not None})

    @classmethod
    def failed(cls, run: dict[str, Any], config_hash: str, error: str,
               **reached: Any) -> RunRecord:
        """A ``failed`` record naming ``error``; ``reached``: what the run established
        before it failed (``params``, ``metrics``, ``timing``, ``extra``, see :meth:`of_run`)."""
        return cls.of_run(Status.FAILED, run, config_hash, error=error, **reached)

    def __getitem__(self, key: str) -> Any:
        """A top-level key as the file holds it (``record["data"]``, ``record["metrics"]``)."""
        return self.to_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, in DESIGN.md's key order; non-finite metrics become null."""
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")
        return {
            "schema": self.schema,
            "status": self.status,
            "error": self.error,
            "run": self.run,
            "params": self.params,
            "metrics": {k: _finite_or_none(v) for k, v in self.metrics.items()},
            "timing": self.timing,
            "config_hash": self.config_hash,
            **{k: v for k, v in self.extra.items() if k not in _FIELDS},
        }

    @classmethod
    def from_dict(cls, data: Any) -> RunRecord:
        """Validate a parsed JSON object; raises :class:`RecordError` naming what is wrong.

        A failed record may lack what the run never reached (run axes, params); a completed
        or diverged one must hold the model and the three parameter counts.
        """
        if not isinstance(data, dict):
            raise RecordError(NOT_A_RECORD, f"a JSON {type(data).__name__}, not an object")
        schema = data.get("schema")
        if not _is_int(schema):
            raise RecordError(NOT_A_RECORD, "no integer 'schema'")
        if schema > SCHEMA:
            raise RecordError(FUTURE_SCHEMA, f"schema {schema}; this version reads {SCHEMA}")
        if schema != SCHEMA:
            raise RecordError("unknown schema", f"schema {schema}")
        if "status" not in data or "run" not in data:
            raise RecordError(NOT_A_RECORD, "no 'status' or no 'run'")
        status = data["status"]
        if status not in STATUSES:
            raise RecordError("unknown status", f"{_short(status)}; known: {'/'.join(STATUSES)}")
        finished = status in FINISHED_STATUSES
        run = _require_dict(data, "run")
        _check_run(run, finished)
        params = _check_params(data, finished)
        metrics = _check_metrics(data)
        timing = data.get("timing")
        if timing is None:
            timing = {}
        elif not isinstance(timing, dict):
            raise RecordError("timing is not an object", type(timing).__name__)
        config_hash = data.get("config_hash")
        if config_hash is None:
            raise RecordError("config_hash missing")
        if not isinstance(config_hash, str):
            raise RecordError("config_hash is not text", _short(config_hash))
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            raise RecordError("error is not text", _short(error))
        return cls(status=Status(status), run=run, params=params, metrics=metrics, timing=timing,
                   config_hash=config_hash, error=error, schema=schema,
                   extra={k: v for k, v in data.items() if k not in _FIELDS})


_FIELDS = frozenset({"schema", "status", "error", "run", "params", "metrics", "timing",
                     "config_hash"})


def _check_run(run: dict[str, Any], finished: bool) -> None:
    if finished and run.get("model") is None:
        raise RecordError("run.model missing")
    if run.get("model") == "":
        raise RecordError("run.model is empty")
    # Text axes first, then numbers (the order the reasons were always found in).
    for axis in sorted(RUN_AXES, key=lambda a: a.kind != "text"):
        value = run.get(axis.name)
        if value is None or _AXIS_CHECKS[axis.kind][0](value):
            continue
        raise RecordError(f"run.{axis.name} is not {_AXIS_CHECKS[axis.kind][1]}", _short(value))


def _check_params(data: dict[str, Any], finished: bool) -> dict[str, int] | None:
    if data.get("params") is None:
        if finished:
            raise RecordError("params missing")
        return None
    params = _require_dict(data, "params")
    for key in PARAM_KEYS:
        if finished and params.get(key) is None:
            raise RecordError(f"params.{key} missing")
    for key, value in params.items():
        # A failed run may stop before counting (null); a count is never negative or huge.
        if value is None and not finished:
            continue
        if not _is_int(value) or value < 0:
            raise RecordError(f"params.{key} is not a count", _short(value))
    return params


def _check_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """The metrics, with non-finite spellings ("NaN") as float NaN.

    The declared metrics (:data:`METRICS`) are numbers or null (non-finite numbers count as not
    usable, not as wrong); other keys may also hold containers (e.g. a confusion matrix), kept
    as they are.
    """
    if data.get("metrics") is None:
        return {}
    metrics = dict(_require_dict(data, "metrics"))
    for key, value in metrics.items():
        if value is None or _is_int(value) or isinstance(value, float):
            continue
        if isinstance(value, str) and value.strip().lower() in _NONFINITE_TEXT:
            metrics[key] = float(value)
        elif isinstance(value, (dict, list)) and key not in _METRIC_NAMES:
            continue
        else:
            raise RecordError(f"metrics.{key} is not a number", _short(value))
    return metrics


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= _MAX_INT


def _is_number(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


# Each axis kind: the test of a non-null value, and what the reason calls it.
_AXIS_CHECKS = {"text": (lambda v: isinstance(v, str), "text"),
                "number": (_is_number, "a number"),
                "integer": (_is_int, "an integer")}
# Declared metrics hold numbers (or null); an undeclared key may also hold a container.
_METRIC_NAMES = frozenset(m.name for m in METRICS)


def _short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_INT:
        return f"an integer of {len(str(abs(value)))} digits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _require_dict(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        raise RecordError(f"{key} missing")
    if not isinstance(value, dict):
        raise RecordError(f"{key} is not an object", type(value).__name__)
    return value


def load_record(path: Path) -> RunRecord:
    """The record at ``path``; raises :class:`RecordError` (the reason) if it is not usable.

    Only a regular file (links followed) of at most :data:`MAX_RECORD_BYTES` is read: a FIFO
    or a device of that name is unreadable at once, never waited on or read without end.
    """
    try:
        data = json.loads(read_regular_file(path, MAX_RECORD_BYTES))
    except OSError as err:
        raise RecordError(UNREADABLE, err.strerror or type(err).__name__) from err
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError: corrupt or half-written
        raise RecordError(INVALID_JSON, str(err).splitlines()[0][:80]) from err
    except RecursionError as err:  # json recurses per nesting level: [[[[...]]]]
        raise RecordError(INVALID_JSON, "nested too deeply") from err
    return RunRecord.from_dict(data)


def find_record(path: Path) -> RunRecord | None:
    """The record at ``path``, or None if there is none or it is not usable."""
    try:
        return load_record(path)
    except RecordError:
        return None


@dataclass(frozen=True)
class NotRun:
    """What a job hands back when it writes no new record (``kind``, one-line ``reason``).

    ``finished``: a finished record of the same config and inputs is there (``record``);
    ``busy``: another process holds the job's lock and is running it; ``not_applicable``: a
    depth sweep's stage the backbone lacks (see paramcorr.depth).
    """

    kind: str
    reason: str
    record: RunRecord | None = None

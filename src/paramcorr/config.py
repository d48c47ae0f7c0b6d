"""Structured config schema: every key, its type and its range, checked before any training.

The YAML files under ``conf/`` hold values; these dataclasses hold the shape. Hydra merges the
YAML onto the schema in struct mode, so a misspelt key or a wrong type fails at composition and
names the key. Ranges that a type cannot express are checked by :func:`validate`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from paramcorr.errors import UserError

FREEZE_STRATEGIES = ("base", "none", "partial")
EVAL_WEIGHTS = ("last", "best")
CACHE_MODES = ("auto", "true", "false")
OUT_OF_RANGE = ("error", "skip")
BAD_IMAGE_POLICIES = ("error", "skip")


@dataclass
class ModelConfig:
    name: str = MISSING
    # "imagenet" (timm's pretrained weights, from the hub), "random", or a checkpoint path.
    weights: str = "imagenet"
    drop_rate: float = 0.0


@dataclass
class DataConfig:
    name: str = MISSING
    # None: the backbone's own input size (timm data config).
    image_size: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    # None: sized to the machine (ImageFolder only; in-memory data needs no workers).
    num_workers: int | None = None
    augment: bool = False
    # Class subset, by label (digits) or folder name (imagefolder); None keeps all.
    classes: list[Any] | None = None
    on_bad_image: str = "error"
    split_seed: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    # digits: the generalization set is the test split rotated and noised, deterministically.
    shift_rotation_deg: float = 25.0
    shift_noise_std: float = 0.2
    # imagefolder
    root: str | None = None
    generalization_root: str | None = None
    # Decoded-input cache (imagefolder, no augmentation): auto | true | false, and its cap.
    cache_inputs: str = "auto"
    cache_max_gb: float = 50.0


@dataclass
class OptimizerConfig:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = "${lr}"  # type: ignore[assignment]  # the study's lr axis, overridable here
    weight_decay: float = 0.0


@dataclass
class AdamConfig(OptimizerConfig):
    _target_: str = "torch.optim.Adam"
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8


@dataclass
class SGDConfig(OptimizerConfig):
    _target_: str = "torch.optim.SGD"
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class FreezeConfig:
    strategy: str = "none"
    # partial: how many of timm's coarse parameter groups to freeze, from the stem on.
    stages: int | None = None
    cache_features: str = "auto"
    # partial, stages beyond the backbone's groups: error (a failed run) or skip (no record;
    # for depth sweeps, see paramcorr.depth).
    out_of_range: str = "error"


@dataclass
class PathsConfig:
    output_root: str = "outputs"
    cache_dir: str = "outputs/cache"
    pretrained_dir: str = "outputs/pretrained"


@dataclass
class TrainConfig:
    name: str = "default"
    seed: int = 0
    lr: float = 1e-3
    strict: bool = False
    eval_weights: str = "last"
    save_weights: bool = False
    channels_last: bool | None = None
    compile: bool = False
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    optimizer: Any = MISSING
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    trainer: dict[str, Any] = field(default_factory=dict)
    logger: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class PretrainConfig:
    models: list[str] = MISSING
    seed: int = 0
    lr: float = 1e-3
    strict: bool = False
    channels_last: bool | None = None
    compile: bool = False
    data: DataConfig = MISSING
    optimizer: Any = MISSING
    trainer: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)
    out_dir: str = MISSING
    overwrite: bool = False


def register_schemas() -> None:
    """Make the schemas visible to Hydra's defaults lists (call before composing)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="pretrain_schema", node=PretrainConfig)
    # Under schema/, not in the groups themselves, so they are not listed as choices.
    store.store(group="schema/data", name="data", node=DataConfig)
    store.store(group="schema/model", name="model", node=ModelConfig)
    store.store(group="schema/freeze", name="freeze", node=FreezeConfig)
    store.store(group="schema/optimizer", name="adam", node=AdamConfig)
    store.store(group="schema/optimizer", name="sgd", node=SGDConfig)


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    _require(str(value).lower() in allowed,
             f"{key}={value!r} is not one of {', '.join(allowed)}")


def trainer_arg_names() -> set[str]:
    from lightning import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def validate_optimizer(cfg: DictConfig, key: str = "optimizer") -> None:
    lr = OmegaConf.select(cfg, f"{key}.lr")
    _require(isinstance(lr, int | float) and not isinstance(lr, bool),
             f"{key}.lr={lr!r} is not a number; set e.g. {key}.lr=1e-3")
    _require(lr > 0 and lr == lr and lr != float("inf"),
             f"{key}.lr={lr} must be a positive finite number; set e.g. {key}.lr=1e-3")
    wd = OmegaConf.select(cfg, f"{key}.weight_decay", default=0.0)
    _require(wd is None or wd >= 0, f"{key}.weight_decay={wd} must be >= 0")
    momentum = OmegaConf.select(cfg, f"{key}.momentum", default=None)
    _require(momentum is None or 0 <= momentum < 1,
             f"{key}.momentum={momentum} must be in [0, 1)")


def validate_data(data: DictConfig) -> None:
    _require(data.batch_size > 0, f"data.batch_size={data.batch_size} must be > 0")
    _require(data.eval_batch_size > 0,
             f"data.eval_batch_size={data.eval_batch_size} must be > 0")
    _require(data.image_size is None or data.image_size > 0,
             f"data.image_size={data.image_size} must be > 0 (or null for the backbone's own)")
    _require(data.num_workers is None or data.num_workers >= 0,
             f"data.num_workers={data.num_workers} must be >= 0 (or null for automatic)")
    _require(0 < data.val_fraction < 1 and 0 < data.test_fraction < 1
             and data.val_fraction + data.test_fraction < 1,
             "data.val_fraction and data.test_fraction must be in (0, 1) and sum below 1")
    _choice("data.on_bad_image", data.on_bad_image, BAD_IMAGE_POLICIES)
    _choice("data.cache_inputs", data.cache_inputs, CACHE_MODES)
    _require(data.cache_max_gb >= 0, f"data.cache_max_gb={data.cache_max_gb} must be >= 0")


def validate_trainer(trainer: DictConfig) -> None:
    known = trainer_arg_names()
    for key in ("logger", "callbacks", "default_root_dir"):
        _require(key not in trainer, f"trainer.{key} is set by the job; use the logger group "
                 "or hydra.run.dir / hydra.sweep.dir instead")
    for key in trainer:
        if key not in known:
            import difflib

            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            hint = f"; did you mean {', '.join('trainer.' + c for c in close)}?" if close else ""
            raise UserError(f"trainer.{key} is not a lightning.Trainer argument{hint}")
    max_epochs = trainer.get("max_epochs")
    _require(max_epochs is None or max_epochs >= 0,
             f"trainer.max_epochs={max_epochs} must be >= 0")


def validate(cfg: DictConfig) -> None:
    """Check what types cannot: ranges and choices. Raises :class:`UserError` naming the key."""
    validate_optimizer(cfg)
    validate_data(cfg.data)
    validate_trainer(cfg.trainer)
    _choice("freeze.strategy", cfg.freeze.strategy, FREEZE_STRATEGIES)
    _choice("freeze.cache_features", cfg.freeze.cache_features, CACHE_MODES)
    _choice("freeze.out_of_range", cfg.freeze.out_of_range, OUT_OF_RANGE)
    _choice("eval_weights", cfg.eval_weights, EVAL_WEIGHTS)
    stages = cfg.freeze.stages
    if cfg.freeze.strategy == "partial":
        _require(stages is not None and stages >= 0,
                 "freeze=partial needs freeze.stages=<int >= 0> (0 trains everything)")
    _require(cfg.model.weights not in ("", None),
             "model.weights is empty; use imagenet, random or a checkpoint path")

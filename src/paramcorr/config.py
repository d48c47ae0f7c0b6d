"""Structured config schema: every key, its type and its range, checked before any training.

The dataclasses here are the one place where a key's default is stated; the YAML files under
``conf/`` hold only what a config-group option sets differently. Hydra merges the YAML onto
the schema in struct mode, so a misspelt key, a wrong type or a choice outside its
:class:`Choice` enum fails at composition and names the key: in a multirun, Hydra composes every
job's config before launching any, so such a typo stops the sweep before a job directory exists.
Ranges that a type cannot express are checked by :func:`validate`, before a model is built.

torch, timm and lightning are imported inside the checks that use them, deliberately: the
scripts import this module before Hydra composes, and a composition error or ``--help`` should
answer at once rather than after seconds of imports.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, get_args

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.nodes import EnumNode

from paramcorr.errors import UserError
from paramcorr.strategy_names import STRATEGY_ORDER


class Choice(str, Enum):
    """A config value from a fixed set: refused at composition if it is not one, exactly.

    A ``str`` subclass, so code compares it with plain strings (``strategy == "base"``), and it
    prints and JSON-encodes as its name: records and config hashes read as before.
    """

    def __str__(self) -> str:
        return str(self.value)


# The freeze group's strategies, from the one vocabulary (paramcorr.strategy_names).
FreezeStrategy = Choice("FreezeStrategy", [(name, name) for name in STRATEGY_ORDER])


class EvalWeights(Choice):
    last = "last"
    best = "best"


class OutOfRange(Choice):
    """freeze=partial with more stages than the backbone has: a failed run, or no run."""

    error = "error"
    skip = "skip"


class BadImagePolicy(Choice):
    error = "error"
    skip = "skip"


class DatasetName(Choice):
    digits = "digits"
    imagefolder = "imagefolder"


class AutoBool(Choice):
    """An honest tri-state: ``auto`` (the code decides), ``true`` (required), ``false`` (off).

    Hydra reads ``key=true`` on the command line as a bool, which OmegaConf's enum nodes refuse,
    so fields of this type get an :class:`AutoBoolNode` that also takes the bools (see
    :func:`schema`). Any other value (``maybe``, ``AUTO``) fails at composition.
    """

    auto = "auto"
    true = "true"
    false = "false"

    def decide(self, auto: bool) -> bool:
        """The setting as a bool, given what ``auto`` would choose."""
        return auto if self is AutoBool.auto else self is AutoBool.true


@dataclass(frozen=True)
class TriState:
    """An :class:`AutoBool` setting as a run decides it: the one place its rule is written.

    ``auto``: on wherever it can be, each reason it cannot be one log line; ``true``: on, and
    a one-line refusal where it cannot be; ``false``: off. The caller checks what the setting
    needs and calls :meth:`cannot` with the first reason that fails.
    """

    key: str  # e.g. "data.cache_inputs"
    value: AutoBool
    subject: str  # what is on or off, for the log line: "input cache"
    # What the run does without it: for the refusal ("to decode every epoch") and the log
    # line ("decoding every epoch").
    to_instead: str
    instead: str
    # The deciding module's logger: the log line names where the decision was made.
    said_by: logging.Logger = field(default=logging.getLogger(__name__), compare=False)

    @classmethod
    def of(cls, cfg: DictConfig, key: str, subject: str, to_instead: str, instead: str,
           said_by: logging.Logger) -> TriState:
        value = OmegaConf.select(cfg, key)
        if isinstance(value, bool):  # a plain (unchecked) config node holds Hydra's bools
            value = "true" if value else "false"
        return cls(key, AutoBool(str(value).lower()), subject, to_instead, instead, said_by)

    @property
    def wanted(self) -> bool:
        """Not ``false``: worth checking whether it can be on."""
        return self.value is not AutoBool.false

    @property
    def required(self) -> bool:
        return self.value is AutoBool.true

    def decide(self, auto: bool) -> bool:
        """On or off, given what ``auto`` chooses (:meth:`AutoBool.decide`)."""
        return self.value.decide(auto)

    def cannot(self, reason: str) -> bool:
        """It cannot be on, for ``reason``: a one-line refusal if required, else one log line
        (for ``auto``). Returns False: off."""
        if self.required:
            raise UserError(f"{self.key}=true but {reason}; set {self.key}=auto (or false) "
                            f"to {self.to_instead}")
        if self.wanted:
            self.said_by.info("%s off: %s; %s", self.subject, reason, self.instead)
        return False


class AutoBoolNode(EnumNode):
    """An :class:`AutoBool` config node that also accepts ``true`` / ``false`` as bools."""

    def __init__(self, value: Any = None, key: Any = None, parent: Any = None,
                 is_optional: bool = True, flags: dict[str, bool] | None = None) -> None:
        super().__init__(enum_type=AutoBool, value=value, key=key, parent=parent,
                         is_optional=is_optional, flags=flags)

    def _validate_and_convert_impl(self, value: Any) -> Enum:
        if isinstance(value, bool):
            return AutoBool.true if value else AutoBool.false
        return super()._validate_and_convert_impl(value)

    def __deepcopy__(self, memo: dict[int, Any]) -> AutoBoolNode:
        res = AutoBoolNode()
        self._deepcopy_impl(res, memo)
        return res


@dataclass
class ModelConfig:
    name: str = MISSING
    # "imagenet" (timm's pretrained weights, from the hub), "random", or a checkpoint path.
    weights: str = "imagenet"
    # A checkpoint file holding several state dicts (timm's training checkpoints hold
    # state_dict and state_dict_ema): which one to load. null: state_dict (or model), the
    # non-EMA weights; e.g. model.weights_key=state_dict_ema for the EMA ones.
    weights_key: str | None = None
    drop_rate: float = 0.0


@dataclass
class DataConfig:
    name: DatasetName = MISSING
    # None: the backbone's own input size (timm data config).
    image_size: int | None = None
    batch_size: int = 64
    eval_batch_size: int = 256
    # None: sized to the machine (ImageFolder only; in-memory data needs no workers).
    num_workers: int | None = None
    augment: bool = False
    # Class subset, by label (digits: ints 0-9) or folder name (imagefolder); None keeps all.
    classes: list[Any] | None = None
    # An image that cannot be fully decoded: error (naming it) or skip (and count it).
    on_bad_image: BadImagePolicy = BadImagePolicy.error
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
    cache_inputs: AutoBool = AutoBool.auto
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
    # Keras' default, as in the study; optimizer.momentum=0.9 for heavy-ball.
    momentum: float = 0.0
    nesterov: bool = False


@dataclass
class FreezeConfig:
    # Named by each freeze group option (paramcorr.strategy_names; behaviour in
    # paramcorr.strategies).
    strategy: FreezeStrategy = MISSING
    # partial: how many of timm's coarse parameter groups to freeze, from the stem on.
    stages: int | None = None
    # freeze=base (and freeze=lpft's probe phase): train the head on cached backbone features.
    # auto: when that is equivalent (no augmentation, a head separable from the backbone);
    # true: required; false: never.
    cache_features: AutoBool = AutoBool.auto
    # partial, stages beyond the backbone's groups: error (a failed run) or skip (no record;
    # for depth sweeps, see paramcorr.depth).
    out_of_range: OutOfRange = OutOfRange.error


# A strategy's own keys live in its own schema (a subclass), so the keys of every other
# strategy, and their config hashes, stay as they were.
@dataclass
class LoraFreezeConfig(FreezeConfig):
    # Adapter rank r and scale alpha (the update is scaled by alpha / r); null alpha = r.
    rank: int = 8
    alpha: float | None = None
    # A regular expression matched against whole module names (named_modules()); null = every
    # ungrouped Conv2d and Linear outside the classifier.
    target: str | None = None


@dataclass
class LpftFreezeConfig(FreezeConfig):
    # Epochs of head-only training before every parameter trains.
    probe_epochs: int = 1


@dataclass
class SurgicalFreezeConfig(FreezeConfig):
    # The one timm coarse group that trains (with the head), as group_matcher numbers them.
    block: int | None = None


# The freeze schemas by their name under schema/freeze (a freeze option's defaults entry).
FREEZE_SCHEMAS: dict[str, type[FreezeConfig]] = {
    "freeze": FreezeConfig, "lora": LoraFreezeConfig, "lpft": LpftFreezeConfig,
    "surgical": SurgicalFreezeConfig}


@dataclass
class PathsConfig:
    # Relative to where you launch; the caches and checkpoints follow it unless set.
    output_root: str = "outputs"
    cache_dir: str = "${.output_root}/cache"
    pretrained_dir: str = "${.output_root}/pretrained"


@dataclass
class RunSettings:
    """What a train job and pretraining (a job per backbone) both read: each default once."""

    seed: int = 0
    # The study's learning-rate axis (lr=1e-2, 1e-3, 1e-4); feeds optimizer.lr.
    lr: float = 1e-3
    # Re-raise errors instead of writing a `failed` record (for debugging one run).
    strict: bool = False
    # None: channels_last memory format on GPU runs only.
    channels_last: bool | None = None
    compile: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: Any = MISSING
    # lightning.Trainer arguments: the trainer group sets a few, any other can be added
    # (an open node, see schema()); validate_trainer refuses names Trainer does not take.
    trainer: dict[str, Any] = field(default_factory=dict)
    paths: PathsConfig = field(default_factory=PathsConfig)


@dataclass
class TrainConfig(RunSettings):
    # Sweep name: multiruns write to outputs/multirun/<name>/..., so re-running a sweep finds
    # its finished jobs.
    name: str = "default"
    # Which weights are evaluated: the last epoch's, or the best by validation accuracy.
    eval_weights: EvalWeights = EvalWeights.last
    # Also save the fine-tuned model as <job dir>/model.safetensors (timm-compatible).
    save_weights: bool = False
    # The metric a job returns to Hydra's sweeper (what an optimising sweeper tunes on).
    optimized_metric: str = "val_acc"
    model: ModelConfig = MISSING
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    logger: Any = None


@dataclass
class PretrainConfig(RunSettings):
    """The :class:`RunSettings` its jobs read (paramcorr.pretraining), and what to pretrain
    where. Only keys it reads belong here: one accepted but ignored would be a silent no-op
    (struct mode refuses it)."""

    models: list[str] = MISSING
    out_dir: str = MISSING
    overwrite: bool = False


def _open_auto_bools(cfg: DictConfig) -> None:
    for key in list(cfg.keys()):
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            _open_auto_bools(node)
        elif (isinstance(node, EnumNode) and not isinstance(node, AutoBoolNode)
              and node._metadata.ref_type is AutoBool):
            cfg._set_item_impl(key, AutoBoolNode(node._value(), is_optional=node._is_optional()))


def schema(node: type) -> DictConfig:
    """The structured config of a schema dataclass, as it is stored for Hydra.

    Two adjustments OmegaConf's dataclass mapping cannot express: :class:`AutoBool` fields
    accept the bools Hydra parses ``true`` / ``false`` into, and ``trainer`` is open to any
    key (any lightning.Trainer argument, e.g. ``trainer.limit_train_batches=2``).
    """
    cfg = OmegaConf.structured(node)
    _open_auto_bools(cfg)
    if "trainer" in cfg:
        OmegaConf.set_struct(cfg.trainer, False)
    return cfg


def register_schemas() -> None:
    """Make the schemas visible to Hydra's defaults lists (call before composing)."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=schema(TrainConfig))
    store.store(name="pretrain_schema", node=schema(PretrainConfig))
    # Under schema/, not in the groups themselves, so they are not listed as choices.
    store.store(group="schema/data", name="data", node=schema(DataConfig))
    store.store(group="schema/model", name="model", node=schema(ModelConfig))
    for name, node in FREEZE_SCHEMAS.items():
        store.store(group="schema/freeze", name=name, node=schema(node))
    store.store(group="schema/optimizer", name="adam", node=schema(AdamConfig))
    store.store(group="schema/optimizer", name="sgd", node=schema(SGDConfig))


# --- keys appended with '+' -----------------------------------------------------------------

# Schemas by Hydra config name: what a '+key=value' may add to.
SCHEMAS: dict[str, type] = {"train": TrainConfig, "pretrain": PretrainConfig}


def _schema_knows(root: DictConfig, key: str) -> bool:
    """Whether ``key`` (dotted) is a key of the schema, or lies under an open node (trainer:
    any lightning.Trainer argument; optimizer, logger: their targets' arguments, checked
    when they are built)."""
    node: Any = root
    for part in key.split("."):
        if not isinstance(node, DictConfig):
            return True  # below an Any node: its constructor judges the key
        if node._is_missing():  # model: ModelConfig = MISSING holds no keys yet
            ref = node._metadata.ref_type
            if not dataclasses.is_dataclass(ref):
                return True
            node = OmegaConf.structured(ref)
        # `in` would say no for a MISSING value (optimizer); a closed node would raise.
        child = node._get_node(part, validate_access=False)
        if child is None:
            # A dataclass node is closed; a plain dict node (trainer) is open.
            return not dataclasses.is_dataclass(OmegaConf.get_type(node))
        node = child
    return True


def _dotted_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    out = []
    for key in cfg:
        node = cfg._get_node(key)
        path = f"{prefix}{key}"
        if isinstance(node, DictConfig):
            out += _dotted_keys(node, f"{path}.")
        else:
            out.append(path)
    return out


def refuse_unknown_appended_keys(config_name: str, overrides: list[str], cfg: DictConfig,
                                 is_group: Any = lambda key: False) -> None:
    """Raise :class:`UserError` for a ``+key=value`` whose key the schema does not have.

    Hydra adds such a key (its own hint for a misspelt key is to prepend '+'), and nothing
    reads it: ``+optimiser.lr=0.5`` would run with the default lr and be recorded as done.
    The message names the closest real key. ``+group=option`` (``is_group``) adds a config
    group choice and is left to Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    schema_cls = SCHEMAS.get(config_name)
    if schema_cls is None or not any(str(o).startswith("+") for o in overrides):
        return
    root = schema(schema_cls)
    parsed = OverridesParser.create().parse_overrides(overrides)
    added = [o for o in parsed if o.type in (OverrideType.ADD, OverrideType.FORCE_ADD)
             and not o.key_or_group.startswith("hydra") and "/" not in o.key_or_group
             and o.package is None and not is_group(o.key_or_group)]
    unknown = [o for o in added if not _schema_knows(root, o.key_or_group)]
    if not unknown:
        return
    bad = unknown[0]
    added_keys = {o.key_or_group for o in added}
    real = [k for k in _dotted_keys(OmegaConf.masked_copy(cfg, [k for k in cfg
                                                              if k != "hydra"]))
            if k not in added_keys and not any(k.startswith(a + ".") for a in added_keys)]
    close = difflib.get_close_matches(bad.key_or_group, real, n=1, cutoff=0.5)
    value = bad.input_line.split("=", 1)[1] if "=" in bad.input_line else ""
    hint = f"; did you mean {close[0]}={value}?" if close else \
        "; see the keys with --cfg job"
    raise UserError(f"{bad.input_line} adds a key no part of the run reads "
                    f"({bad.key_or_group}){hint}")


# --- checks types cannot express ----------------------------------------------------------


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Seeds go to numpy (sklearn's random_state, lightning's seed_everything): 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1


def _check_seed(key: str, value: Any) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= SEED_MAX,
             f"{key}={value} is out of range; use an integer in 0..{SEED_MAX}")


def trainer_arg_names() -> set[str]:
    from lightning import Trainer

    return set(inspect.signature(Trainer.__init__).parameters) - {"self"}


def _flat_literals(annotation: Any) -> list[Any]:
    out: list[Any] = []
    for arg in get_args(annotation):
        out += _flat_literals(arg) if get_args(arg) else [arg]
    return out


def precisions() -> tuple[Any, ...]:
    """What lightning.Trainer(precision=...) accepts, read from Lightning's own type."""
    from lightning.fabric.plugins.precision.precision import _PRECISION_INPUT

    return tuple(_flat_literals(_PRECISION_INPUT))


def non_finite_keys(cfg: DictConfig) -> list[str]:
    """Keys whose (resolved) value is a NaN or infinite float, anywhere in ``cfg``."""
    found = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{prefix}{i}.")
        else:
            key = prefix.rstrip(".")
            if isinstance(node, str) and "${" in node:
                node = OmegaConf.select(cfg, key, throw_on_resolution_failure=False)
            if isinstance(node, float) and not math.isfinite(node):
                found.append(f"{key}={node}")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return found


def validate_optimizer(cfg: DictConfig, key: str = "optimizer") -> None:
    lr = OmegaConf.select(cfg, f"{key}.lr")
    _require(_is_number(lr), f"{key}.lr={lr!r} is not a number; set e.g. {key}.lr=1e-3")
    _require(lr > 0 and math.isfinite(lr),
             f"{key}.lr={lr} must be a positive finite number; set e.g. {key}.lr=1e-3")
    wd = OmegaConf.select(cfg, f"{key}.weight_decay", default=0.0)
    _require(wd is None or wd >= 0, f"{key}.weight_decay={wd} must be >= 0")
    momentum = OmegaConf.select(cfg, f"{key}.momentum", default=None)
    _require(momentum is None or 0 <= momentum < 1,
             f"{key}.momentum={momentum} must be in [0, 1)")
    betas = OmegaConf.select(cfg, f"{key}.betas", default=None)
    if betas is not None:
        betas = list(betas)
        _require(len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas),
                 f"{key}.betas={betas} must be two numbers in [0, 1), e.g. [0.9,0.999]")
    if OmegaConf.select(cfg, f"{key}.nesterov", default=False):
        dampening = OmegaConf.select(cfg, f"{key}.dampening", default=0)
        _require(bool(momentum) and momentum > 0 and not dampening,
                 f"{key}.nesterov=true needs {key}.momentum > 0 and no dampening; set e.g. "
                 f"{key}.momentum=0.9, or {key}.nesterov=false")
    import torch
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    # Whatever else the optimizer's own constructor refuses (eps < 0, an unknown argument),
    # it refuses here, on one dummy parameter, instead of after the model is built.
    try:
        make = instantiate(OmegaConf.select(cfg, key))
    except InstantiationException as err:
        raise UserError(f"{key}._target_: {str(err).strip().splitlines()[0]}; use "
                        f"optimizer=adam or optimizer=sgd") from err
    try:
        make([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise UserError(f"{key}: {str(err).splitlines()[0]}; fix the {key}.* value") from err


def validate_data(data: DictConfig) -> None:
    from paramcorr.data import check_classes

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
    _check_seed("data.split_seed", data.split_seed)
    _require(data.shift_noise_std >= 0,
             f"data.shift_noise_std={data.shift_noise_std} must be >= 0")
    _require(data.cache_max_gb >= 0, f"data.cache_max_gb={data.cache_max_gb} must be >= 0")
    check_classes(data)


def _accelerator_problem(accelerator: Any) -> str | None:
    from lightning.pytorch.accelerators import AcceleratorRegistry

    name = str(accelerator).lower()
    if name == "auto":
        return None
    known = sorted(set(AcceleratorRegistry.available_accelerators()) | {"gpu", "auto"})
    if name not in known:
        return f"trainer.accelerator={accelerator} is not one of {', '.join(known)}"
    candidates = ["cuda", "mps"] if name == "gpu" else [name]
    if not any(AcceleratorRegistry[c]["accelerator"].is_available() for c in candidates
               if c in AcceleratorRegistry):
        return (f"trainer.accelerator={accelerator} but this machine has no such device "
                "(lightning finds none); use trainer=cpu or trainer.accelerator=auto")
    return None


def validate_trainer(trainer: DictConfig) -> None:
    known = trainer_arg_names()
    for key in ("logger", "callbacks", "default_root_dir"):
        _require(key not in trainer, f"trainer.{key} is set by the job; use the logger group "
                 "or hydra.run.dir / hydra.sweep.dir instead")
    for key in trainer:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            hint = f"; did you mean {', '.join('trainer.' + c for c in close)}?" if close else ""
            raise UserError(f"trainer.{key} is not a lightning.Trainer argument{hint}")
    from paramcorr.device import check_single_device

    check_single_device(trainer)  # one job = one device: no DDP, devices>1, lists or -1
    max_epochs = trainer.get("max_epochs")
    _require(max_epochs is None or max_epochs >= 0,
             f"trainer.max_epochs={max_epochs} must be >= 0")
    precision = trainer.get("precision")
    # auto: chosen for the job's device at its start (paramcorr.device.resolve_precision).
    _require(precision is None or precision == "auto" or precision in precisions(),
             f"trainer.precision={precision} is not a Lightning precision; use auto or one of "
             f"{', '.join(str(p) for p in precisions())}")
    problem = _accelerator_problem(trainer.get("accelerator", "auto"))
    _require(problem is None, problem or "")


def _batch_norm_trains(cfg: DictConfig) -> bool:
    """Whether a BatchNorm layer of the backbone is in train mode in any phase of the freeze
    strategy (the strategy says what it holds in eval mode).

    Built on the meta device: no weights, no memory, only the module structure.
    """
    import timm
    import torch

    from paramcorr import strategies

    try:
        strategy = strategies.from_config(cfg.freeze)
        for phase in strategy.phases(cfg.trainer.get("max_epochs")):
            with torch.device("meta"):
                model = timm.create_model(str(cfg.model.name), pretrained=False)
            model = phase.strategy.prepare(model, str(cfg.model.name))
            model.train()
            phase.strategy.hold_in_eval(model)
            if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.training
                   for m in model.modules()):
                return True
    except Exception:  # noqa: BLE001 - a bad name or stage count is reported by the run
        return False
    return False


def validate(cfg: DictConfig) -> None:
    """Check what types cannot (ranges, combinations): a :class:`UserError` naming the key."""
    _check_seed("seed", cfg.seed)
    validate_optimizer(cfg)
    validate_data(cfg.data)
    validate_trainer(cfg.trainer)
    from paramcorr import strategies

    strategy = strategies.from_config(cfg.freeze)
    strategy.check_options(cfg.trainer.get("max_epochs"))
    if cfg.freeze.cache_features == AutoBool.true:
        _require(strategy.caches_features,
                 f"freeze.cache_features=true needs a head-only strategy such as freeze=base "
                 f"(or freeze=lpft, whose probe phase trains the head alone; got "
                 f"freeze={cfg.freeze.strategy}); use freeze.cache_features=auto")
        _require(not cfg.data.augment, "freeze.cache_features=true cannot hold with "
                 "data.augment=true (inputs change every epoch); use freeze.cache_features=auto")
    _require(cfg.model.weights not in ("", None),
             "model.weights is empty; use imagenet, random or a checkpoint path")
    _require(0 <= cfg.model.drop_rate < 1,
             f"model.drop_rate={cfg.model.drop_rate} must be in [0, 1)")
    # The checks above name their own keys; any other NaN or infinity (a shift, a clip value):
    bad = non_finite_keys(cfg)
    _require(not bad, f"{bad[0] if bad else ''} is not a finite number; set a finite value")
    if cfg.data.batch_size == 1:
        _require(not _batch_norm_trains(cfg),
                 f"data.batch_size=1 with freeze={cfg.freeze.strategy}: {cfg.model.name}'s "
                 "BatchNorm layers train and cannot normalize one sample; use "
                 "data.batch_size=2 or more")

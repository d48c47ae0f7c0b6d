"""Freeze strategies as objects, in a registry like timm's models.

Each strategy is one class registered under its ``freeze=`` name (its label and plot marker
come from :mod:`paramcorr.strategy_names`). It knows:

- which parameters it trains (:meth:`Strategy.trainable_names`), and any structural change
  it makes first (LoRA's adapters, :meth:`Strategy.prepare`);
- what stays in eval mode while it trains (:meth:`Strategy.hold_in_eval`);
- whether only the classifier trains (``head_only``, from its terms: the backbone's features
  can be cached), and whether some phase of its schedule does (``caches_features``: LP-FT's
  probe trains on the same cached features as ``base``);
- which freeze key indexes timm's coarse parameter groups (``group_key``);
- its schedule (:meth:`Strategy.phases`): one phase, or several (LP-FT: probe, then
  fine-tune), each trained by a strategy of its own.

What stays in eval mode: modules with state none of whose own parameters train (a frozen
BatchNorm keeps its running statistics; see :func:`paramcorr.freezing.fully_frozen_modules`).
So under ``bitfit`` and ``norm`` a BatchNorm whose bias (or affine pair) trains is in train
mode: it normalises with batch statistics and updates its running statistics, as in Frankle
et al. (2021), "Training BatchNorm and only BatchNorm". Under ``base`` the whole model is in
eval mode (dropout before the head off too, as for a frozen Keras base).

Adding a strategy: a :class:`Strategy` subclass here decorated with :func:`register`, its
terms in :data:`paramcorr.strategy_names.STRATEGY_TERMS`, and ``conf/freeze/<name>.yaml``
(with a schema dataclass in :mod:`paramcorr.config` if it has keys of its own).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import timm.layers
from torch import nn

from paramcorr.errors import UserError
from paramcorr.freezing import (
    classifier_parameter_names,
    fully_frozen_modules,
    parameter_groups,
)
from paramcorr.strategy_names import TERMS, StrategyTerms


@dataclass(frozen=True)
class Phase:
    """One stretch of training: ``epochs`` of it (None: all the trainer's) with ``strategy``."""

    name: str
    epochs: int | None
    strategy: Strategy

    @property
    def head_only(self) -> bool:
        """Only the classifier trains in this phase: it can train on cached backbone features
        (the job decides whether the cache applies, as for ``freeze=base``)."""
        return self.strategy.head_only


_REGISTRY: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` the strategy ``freeze=<cls.name>`` builds."""
    if cls.name not in TERMS:
        raise ValueError(f"strategy {cls.name!r} has no terms in paramcorr.strategy_names")
    _REGISTRY[cls.name] = cls
    return cls


def registered() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def create(name: str, options: Mapping[str, Any] | None = None) -> Strategy:
    """The strategy ``name`` with its freeze keys ``options`` (e.g. ``{"rank": 4}``)."""
    cls = _REGISTRY.get(str(name))
    if cls is None:
        raise UserError(f"unknown freeze strategy {name!r}; use one of "
                        f"{', '.join(_REGISTRY)}")
    return cls(options)


def from_config(freeze: Any) -> Strategy:
    """The strategy a ``freeze`` config node names, with that node's keys as its options."""
    options = {key: freeze[key] for key in freeze if key != "strategy"}
    return create(str(freeze["strategy"]), options)


def resolve(strategy: str | Strategy) -> Strategy:
    """A strategy object from itself or its name (default options)."""
    return strategy if isinstance(strategy, Strategy) else create(strategy)


class Strategy:
    """A freeze strategy: what trains, what stays in eval mode, on which schedule."""

    name: ClassVar[str]
    # The freeze key that is an index into timm's coarse parameter groups (depth.py).
    group_key: ClassVar[str | None] = None

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options = dict(options or {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options})"

    @property
    def terms(self) -> StrategyTerms:
        return TERMS[self.name]

    @property
    def head_only(self) -> bool:
        """Only the classifier trains: the backbone's features can be computed once, cached."""
        return self.terms.head_only

    @property
    def caches_features(self) -> bool:
        """Some phase of the schedule trains the classifier alone (``base``; LP-FT's probe):
        that phase can train on the frozen backbone's cached features."""
        return any(phase.head_only for phase in self.phases(None))

    @property
    def label(self) -> str:
        return self.terms.label

    @property
    def marker(self) -> str:
        return self.terms.marker

    def run_axes(self) -> dict[str, Any]:
        """The record's run axes for this strategy's keys (see ``StrategyTerms.axes``)."""
        return {axis: self.options.get(key) for axis, key in self.terms.axes}

    def check_options(self, max_epochs: int | None = None) -> None:
        """Refuse keys no model could satisfy (one line naming the key); model checks come later."""

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        raise NotImplementedError

    def prepare(self, model: nn.Module, model_name: str = "model") -> nn.Module:
        """Set ``requires_grad`` for this strategy (after any structural change); the model."""
        trainable = self.trainable_names(model, model_name)
        for name, param in model.named_parameters():
            param.requires_grad_(name in trainable)
        return model

    def hold_in_eval(self, model: nn.Module) -> None:
        """After ``model.train()``: the frozen parts back to eval (BatchNorm statistics fixed)."""
        for module in fully_frozen_modules(model):
            module.eval()

    def phases(self, epochs: int | None) -> list[Phase]:
        """The schedule: by default one phase of every epoch with this strategy."""
        return [Phase("train", epochs, self)]

    def for_export(self, model: nn.Module) -> nn.Module:
        """The trained model as a plain timm model (what ``save_weights`` writes)."""
        return model


def _head(model: nn.Module, model_name: str, strategy: str) -> set[str]:
    names = classifier_parameter_names(model)
    if not names:
        raise UserError(f"{model_name} has no classifier parameters to train with "
                        f"freeze={strategy}")
    return names


def _group_index(strategy: Strategy, model: nn.Module, model_name: str) -> tuple[int, list]:
    """The strategy's group index, checked against the model's timm coarse groups."""
    key = strategy.group_key
    value = strategy.options.get(key)
    groups = parameter_groups(model)
    if value is None or not 0 <= value < len(groups):
        raise UserError(
            f"{model_name} has {len(groups)} stages (timm parameter groups); "
            f"freeze.{key} must be in 0..{len(groups) - 1}, got {value}")
    return value, groups


@register
class Base(Strategy):
    """The paper's strategy 1: only the classifier trains; the whole model held in eval."""

    name = "base"

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        return _head(model, model_name, self.name)

    def hold_in_eval(self, model: nn.Module) -> None:
        model.eval()


@register
class Full(Strategy):
    """The paper's strategy 2: the whole model trains."""

    name = "none"

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        return {name for name, _ in model.named_parameters()}

    def hold_in_eval(self, model: nn.Module) -> None:
        return None  # nothing is frozen


@register
class Partial(Strategy):
    """The first ``stages`` of timm's coarse groups frozen (0 = everything trains)."""

    name = "partial"
    group_key = "stages"

    def check_options(self, max_epochs: int | None = None) -> None:
        stages = self.options.get("stages")
        if stages is None or stages < 0:
            raise UserError("freeze=partial needs freeze.stages=<int >= 0> (0 trains everything)")

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        if self.options.get("stages") == 0:
            return {name for name, _ in model.named_parameters()}
        stages, groups = _group_index(self, model, model_name)
        frozen = {name for group in groups[:stages] for name in group}
        return {name for name, _ in model.named_parameters() if name not in frozen}


@register
class BitFit(Strategy):
    """Every parameter named ``bias`` (normalisation layers' included) + the classifier."""

    name = "bitfit"

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        biases = {name for name, _ in model.named_parameters()
                  if name.rsplit(".", 1)[-1] == "bias"}
        return biases | _head(model, model_name, self.name)


# Normalisation layers with affine parameters: torch's (BatchNorm and InstanceNorm share
# _NormBase; timm's BatchNormAct2d, LayerNorm2d, GroupNormAct subclass these) and timm's own.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm,
    timm.layers.RmsNorm, timm.layers.RmsNorm2d, timm.layers.SimpleNorm, timm.layers.SimpleNorm2d,
    timm.layers.EvoNorm2dB0, timm.layers.EvoNorm2dS0, timm.layers.FilterResponseNormAct2d,
    timm.layers.FilterResponseNormTlu2d,
)


@register
class NormOnly(Strategy):
    """Normalisation layers' affine parameters + the classifier (Frankle et al. 2021).

    Their BatchNorm layers train, so they normalise with batch statistics and update their
    running statistics (see the module doc); a backbone without normalisation layers
    (vgg16) trains its head alone.
    """

    name = "norm"

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        norm = {f"{prefix}.{name}" if prefix else name
                for prefix, module in model.named_modules() if isinstance(module, NORM_TYPES)
                for name, _ in module.named_parameters(recurse=False)}
        return norm | _head(model, model_name, self.name)


@register
class Surgical(Strategy):
    """Only timm coarse group ``block`` (as ``group_matcher`` numbers them) + the classifier
    (Lee et al. 2023, surgical fine-tuning)."""

    name = "surgical"
    group_key = "block"

    def check_options(self, max_epochs: int | None = None) -> None:
        block = self.options.get("block")
        if block is None or block < 0:
            raise UserError("freeze=surgical needs freeze.block=<int >= 0> (a timm group "
                            "index; 0 is usually the stem)")

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        block, groups = _group_index(self, model, model_name)
        return set(groups[block]) | _head(model, model_name, self.name)


def lora_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """Modules LoRA can adapt and merge: ungrouped convolutions and linear layers outside
    the classifier, by their ``named_modules()`` name (the default ``freeze.target``)."""
    head = {id(m) for m in model.get_classifier().modules()}
    return {name: module for name, module in model.named_modules()
            if id(module) not in head and (
                isinstance(module, nn.Linear)
                or (isinstance(module, nn.Conv2d) and module.groups == 1))}


def lora_parameter_names(model: nn.Module) -> set[str]:
    return {name for name, _ in model.named_parameters() if ".lora_" in name}


@register
class LoRA(Strategy):
    """Hugging Face ``peft`` LoRA adapters on the backbone's conv and linear layers, and the
    classifier trained in full (Hu et al. 2022).

    ``freeze.target``: a regular expression matched against whole module names (as
    ``named_modules()`` gives them, e.g. ``layer4\\.0\\.conv1``), passed to peft as
    ``target_modules``; null = every ungrouped Conv2d and every Linear outside the head
    (peft cannot merge adapters into grouped convolutions). ``freeze.alpha`` null = the rank
    (scale 1, so a rank sweep changes capacity, not the update's scale). Frozen layers,
    BatchNorm included, stay in eval mode.
    """

    name = "lora"

    @property
    def alpha(self) -> float:
        alpha = self.options.get("alpha")
        return float(alpha if alpha is not None else self.options.get("rank", 8))

    def run_axes(self) -> dict[str, Any]:
        return {**super().run_axes(), "lora_alpha": self.alpha}

    def check_options(self, max_epochs: int | None = None) -> None:
        rank = self.options.get("rank")
        if rank is None or rank < 1:
            raise UserError(f"freeze.rank={rank} must be an integer >= 1")
        if self.alpha <= 0:
            raise UserError(f"freeze.alpha={self.alpha:g} must be > 0 (or null: the rank)")
        target = self.options.get("target")
        if target is not None:
            try:
                re.compile(target)
            except re.error as err:
                raise UserError(f"freeze.target={target!r} is not a regular expression "
                                f"({err}); e.g. 'layer4\\..*conv\\d'") from None

    def targets(self, model: nn.Module, model_name: str) -> str:
        """What peft's ``target_modules`` gets: the user's pattern (checked to match only
        adaptable modules), or one matching exactly the default's module names."""
        candidates = lora_candidates(model)
        target = self.options.get("target")
        if target is None:
            if not candidates:
                raise UserError(f"{model_name} has no conv or linear layer outside its head "
                                "for freeze=lora")
            # A pattern of the exact names: peft matches a list of names by suffix, so
            # "conv1" would also adapt a grouped "block1.rep.0.conv1".
            return "|".join(re.escape(name) for name in sorted(candidates))
        matched = [name for name, _ in model.named_modules() if name and re.fullmatch(target,
                                                                                       name)]
        if not matched:
            raise UserError(f"freeze.target={target!r} matches no module name of "
                            f"{model_name} (whole names, e.g. {next(iter(candidates), '?')})")
        bad = [name for name in matched if name not in candidates]
        if bad:
            raise UserError(f"freeze.target={target!r} matches {bad[0]}, which is not an "
                            "ungrouped conv or linear layer outside the head; narrow the "
                            "pattern")
        return target

    def prepare(self, model: nn.Module, model_name: str = "model") -> nn.Module:
        try:  # the optional extra
            from peft import LoraConfig, inject_adapter_in_model
        except ImportError:
            raise UserError("freeze=lora needs Hugging Face peft; install it with "
                            "pip install 'paramcorr[lora]'") from None
        config = LoraConfig(r=int(self.options.get("rank", 8)), lora_alpha=self.alpha,
                            lora_dropout=0.0, target_modules=self.targets(model, model_name))
        if not lora_parameter_names(model):
            # In place: the model stays a timm model (get_classifier, group_matcher work).
            model = inject_adapter_in_model(config, model)
        return super().prepare(model, model_name)

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        return lora_parameter_names(model) | _head(model, model_name, self.name)

    def for_export(self, model: nn.Module) -> nn.Module:
        """Adapters merged into their layers, and each wrapper replaced by its base layer:
        a timm state dict again."""
        names = [name for name, module in model.named_modules()
                 if module in set(lora_layers(model))]
        merge_lora(model)
        for name in names:
            parent, _, child = name.rpartition(".")
            holder = model.get_submodule(parent) if parent else model
            setattr(holder, child, getattr(holder, child).get_base_layer())
        return model


def lora_layers(model: nn.Module) -> list[nn.Module]:
    from peft.tuners.lora import LoraLayer

    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def merge_lora(model: nn.Module) -> None:
    """Fold the adapters into their base layers' weights (peft ``merge``)."""
    for layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    for layer in lora_layers(model):
        layer.unmerge()


@register
class LinearProbeFineTune(Strategy):
    """LP-FT (Kumar et al. 2022): ``freeze.probe_epochs`` of the head alone (as ``base``),
    then every parameter (as ``none``) for the remaining epochs, with a fresh optimizer.

    ``params.trainable`` is the fine-tuning phase's count (what the model ends up trained
    with); the probe phase's is recorded beside it as ``params.trainable_probe``.
    """

    name = "lpft"

    def check_options(self, max_epochs: int | None = None) -> None:
        probe = self.options.get("probe_epochs")
        if probe is None or probe < 1:
            raise UserError(f"freeze.probe_epochs={probe} must be an integer >= 1")
        if max_epochs is not None and probe >= max_epochs:
            raise UserError(f"freeze.probe_epochs={probe} leaves no fine-tuning epoch of "
                            f"trainer.max_epochs={max_epochs}; use fewer probe epochs")

    def trainable_names(self, model: nn.Module, model_name: str) -> set[str]:
        return Full().trainable_names(model, model_name)

    def hold_in_eval(self, model: nn.Module) -> None:
        return None

    def phases(self, epochs: int | None) -> list[Phase]:
        probe = int(self.options["probe_epochs"])
        rest = None if epochs is None else epochs - probe
        return [Phase("probe", probe, Base()), Phase("finetune", rest, Full())]


# --- the functions code outside asks ---------------------------------------------------------

def apply_freeze(model: nn.Module, strategy: str | Strategy, stages: int | None = None,
                 model_name: str = "model") -> nn.Module:
    """Apply ``strategy`` (a name takes ``stages`` as its one option); the model."""
    if not isinstance(strategy, Strategy):
        strategy = create(strategy, {"stages": stages})
    return strategy.prepare(model, model_name)


def hold_frozen_in_eval(model: nn.Module, strategy: str | Strategy) -> None:
    resolve(strategy).hold_in_eval(model)


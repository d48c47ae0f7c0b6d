"""Freeze strategies and the trainable-parameter count the study is about.

- ``base``: everything but the classifier (``model.get_classifier()``) frozen and held in eval
  mode, as Keras does for ``base.trainable = False``.
- ``none``: the whole model trains.
- ``partial``: the first ``stages`` of timm's coarse parameter groups (in the order
  ``timm.models.group_parameters`` numbers them) frozen and held in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn

from paramcorr.errors import UserError


@dataclass(frozen=True)
class ParamCounts:
    total: int
    trainable: int
    frozen: int

    def as_dict(self) -> dict[str, int]:
        return {"total": self.total, "trainable": self.trainable, "frozen": self.frozen}


def count_parameters(model: nn.Module) -> ParamCounts:
    """Parameter elements, split by ``requires_grad`` (each part counted on its own)."""
    params = list(model.parameters())
    return ParamCounts(total=sum(p.numel() for p in params),
                       trainable=sum(p.numel() for p in params if p.requires_grad),
                       frozen=sum(p.numel() for p in params if not p.requires_grad))


def parameter_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names per coarse group, in timm's order (group 0 is usually the stem)."""
    grouped = group_parameters(model, model.group_matcher(coarse=True))
    return [grouped[k] for k in sorted(grouped)]


def classifier_parameter_names(model: nn.Module) -> set[str]:
    head = model.get_classifier()
    ids = {id(p) for p in head.parameters()}
    return {name for name, p in model.named_parameters() if id(p) in ids}


def apply_freeze(model: nn.Module, strategy: str, stages: int | None = None,
                 model_name: str = "model") -> None:
    """Set ``requires_grad`` for ``strategy``; :func:`hold_frozen_in_eval` keeps modes right."""
    if strategy == "none" or (strategy == "partial" and stages == 0):
        model.requires_grad_(True)
        return
    if strategy == "base":
        trainable = classifier_parameter_names(model)
        if not trainable:
            raise UserError(f"{model_name} has no classifier parameters to train with freeze=base")
    elif strategy == "partial":
        groups = parameter_groups(model)
        if stages is None or not 0 <= stages < len(groups):
            raise UserError(
                f"{model_name} has {len(groups)} stages (timm parameter groups); "
                f"freeze.stages must be in 0..{len(groups) - 1}, got {stages}")
        frozen = {name for group in groups[:stages] for name in group}
        trainable = {name for name, _ in model.named_parameters() if name not in frozen}
    else:
        raise UserError(f"unknown freeze strategy {strategy!r}; use base, none or partial")
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)


def fully_frozen_modules(model: nn.Module) -> list[nn.Module]:
    """Modules with state (params or buffers) none of whose own parameters train."""
    frozen = []
    for module in model.modules():
        own_params = list(module.parameters(recurse=False))
        own_buffers = list(module.buffers(recurse=False))
        if not own_params and not own_buffers:
            continue
        if all(not p.requires_grad for p in own_params):
            frozen.append(module)
    return frozen


def hold_frozen_in_eval(model: nn.Module, strategy: str) -> None:
    """After ``model.train()``: frozen parts back to eval (BatchNorm statistics fixed).

    For ``base`` the whole model goes to eval, so dropout before the head is off too, as for a
    frozen Keras base; the classifier itself has no train/eval behaviour.
    """
    if strategy == "base":
        model.eval()
        return
    if strategy == "partial":
        for module in fully_frozen_modules(model):
            module.eval()


def number_of_groups(model: nn.Module) -> int:
    return len(parameter_groups(model))

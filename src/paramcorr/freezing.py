"""The mechanics freeze strategies are built from, and the trainable-parameter count the
study is about: counts, timm's coarse parameter groups (in the order
``timm.models.group_parameters`` numbers them), the classifier's parameters, the modules a
strategy leaves wholly frozen. The strategies themselves are :mod:`paramcorr.strategies`.
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models import group_parameters
from torch import nn


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


def number_of_groups(model: nn.Module) -> int:
    return len(parameter_groups(model))

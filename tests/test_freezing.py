"""Trainable counts per strategy against an independent count on a fresh timm model."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.models import group_parameters

from paramcorr.classifier import ClassifierModule
from paramcorr.errors import UserError
from paramcorr.freezing import ParamCounts, count_parameters
from paramcorr.strategies import apply_freeze, hold_frozen_in_eval

ARCHS = ["test_resnet", "test_efficientnet", "test_convnext", "mobilenetv3_small_050"]


def fresh(name: str) -> torch.nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=5)


def optimizer_count(model: torch.nn.Module) -> int:
    module = ClassifierModule(model, lambda params: torch.optim.SGD(params, lr=0.1), 5)
    optimizer = module.configure_optimizers()
    return sum(p.numel() for group in optimizer.param_groups for p in group["params"])


@pytest.mark.parametrize("name", ARCHS)
def test_base_trains_exactly_the_classifier(name: str) -> None:
    model = fresh(name)
    apply_freeze(model, "base")
    reference = fresh(name)
    head = {id(p) for p in reference.get_classifier().parameters()}
    expected = sum(p.numel() for p in reference.parameters() if id(p) in head)
    backbone = sum(p.numel() for p in reference.parameters() if id(p) not in head)
    total = sum(p.numel() for p in reference.parameters())
    counts = count_parameters(model)
    assert (counts.trainable, counts.total, counts.frozen) == (expected, total, backbone)
    assert optimizer_count(model) == expected


@pytest.mark.parametrize("name", ARCHS)
def test_none_trains_everything(name: str) -> None:
    model = fresh(name)
    apply_freeze(model, "none")
    total = sum(p.numel() for p in fresh(name).parameters())
    assert count_parameters(model) == ParamCounts(total=total, trainable=total, frozen=0)
    assert optimizer_count(model) == total


@pytest.mark.parametrize("name", ARCHS)
def test_partial_freezes_the_first_k_timm_groups(name: str) -> None:
    reference = fresh(name)
    groups = group_parameters(reference, reference.group_matcher(coarse=True))
    ordered = [groups[k] for k in sorted(groups)]
    sizes = dict((n, p.numel()) for n, p in reference.named_parameters())
    total = sum(sizes.values())
    previous = None
    for k in range(len(ordered)):
        model = fresh(name)
        apply_freeze(model, "partial", k, name)
        frozen = sum(sizes[n] for group in ordered[:k] for n in group)
        trained = sum(sizes[n] for group in ordered[k:] for n in group)
        counts = count_parameters(model)
        assert (counts.total, counts.trainable, counts.frozen) == (total, trained, frozen)
        assert optimizer_count(model) == total - frozen
        if previous is not None:
            assert counts.trainable <= previous  # a dose-response: deeper freeze, fewer params
        previous = counts.trainable


def test_partial_zero_equals_none() -> None:
    a, b = fresh("test_resnet"), fresh("test_resnet")
    apply_freeze(a, "partial", 0)
    apply_freeze(b, "none")
    assert count_parameters(a) == count_parameters(b)


def test_partial_out_of_range_names_the_allowed_range() -> None:
    model = fresh("test_resnet")
    with pytest.raises(UserError, match=r"test_resnet has 6 stages.*0\.\.5, got 99"):
        apply_freeze(model, "partial", 99, "test_resnet")


def test_frozen_parts_stay_in_eval_mode() -> None:
    model = fresh("test_resnet")
    apply_freeze(model, "partial", 2)
    module = ClassifierModule(model, lambda p: torch.optim.SGD(p, lr=0.1), 5, strategy="partial")
    module.train()
    frozen_bn = [m for n, m in model.named_modules()
                 if isinstance(m, torch.nn.BatchNorm2d) and not any(
                     p.requires_grad for p in m.parameters())]
    trained_bn = [m for m in model.modules()
                  if isinstance(m, torch.nn.BatchNorm2d) and all(
                      p.requires_grad for p in m.parameters())]
    assert frozen_bn and trained_bn
    assert not any(m.training for m in frozen_bn)
    assert all(m.training for m in trained_bn)
    hold_frozen_in_eval(model, "base")
    assert not any(m.training for m in model.modules())


STUDY_MODELS = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "model").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("config_name", STUDY_MODELS)
def test_every_preset_backbone_counts_match_an_independent_count(config_name: str) -> None:
    """The demo and paper backbones, as the pipeline builds them, against fresh timm models."""
    import yaml

    from paramcorr.backbones import create_backbone

    timm_name = yaml.safe_load((Path(__file__).parents[1] / "conf" / "model"
                                / f"{config_name}.yaml").read_text())["name"]
    reference = fresh(timm_name)
    total = sum(p.numel() for p in reference.parameters())
    head = sum(p.numel() for p in reference.get_classifier().parameters())
    for strategy, expected in (("base", head), ("none", total)):
        model = create_backbone(timm_name, "random", 5)
        apply_freeze(model, strategy)
        assert count_parameters(model).trainable == expected
        assert count_parameters(model).total == total

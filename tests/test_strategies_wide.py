"""experiment=strategies_wide: every strategy of the strategies sweep on one backbone whose
trainable parameters span at least four decades, checked against counts taken from a fresh
timm model by other means (its classifier's shape and its total size)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
import yaml

from paramcorr import strategies
from paramcorr.strategy_names import STRATEGY_ORDER

PRESETS = Path(__file__).parents[1] / "conf" / "experiment"


def sweep_params(preset: str) -> dict:
    return yaml.safe_load((PRESETS / f"{preset}.yaml").read_text())["hydra"]["sweeper"]["params"]


def meta_model(name: str, classes: int) -> torch.nn.Module:
    with torch.device("meta"):  # shapes only: convnext_large costs no memory here
        return timm.create_model(name, pretrained=False, num_classes=classes)


def test_the_wide_preset_sweeps_every_strategy_of_the_strategies_preset_on_its_backbone(
        train_config) -> None:
    wide, narrow = sweep_params("strategies_wide"), sweep_params("strategies")
    assert wide["model"] == "convnext_large" and narrow["model"] == "resnet50"
    cfg = train_config("experiment=strategies_wide")
    assert cfg.name == "strategies_wide" and cfg.data.name == "imagefolder"
    # The grid it inherits is the strategies preset's (one list, not a copy).
    options = narrow["freeze"].split(",")
    seen = {strategies.from_config(train_config("experiment=strategies_wide",
                                                f"freeze={o}").freeze).name for o in options}
    assert seen == set(STRATEGY_ORDER)


@pytest.mark.slow
@pytest.mark.parametrize("classes", [5, 10, 12])
def test_trainable_counts_of_the_wide_preset_span_four_decades(train_config, classes) -> None:
    pytest.importorskip("peft")  # the grid holds LoRA ranks
    name = sweep_params("strategies_wide")["model"]
    reference = meta_model(name, classes)
    # Independent counts: the classifier is num_features x classes + a bias per class, the
    # whole model every parameter tensor's size.
    head = reference.num_features * classes + classes
    whole = sum(p.numel() for p in reference.parameters())
    counts = {}
    for option in sweep_params("strategies")["freeze"].split(","):
        cfg = train_config("experiment=strategies_wide", f"freeze={option}")
        strategy = strategies.from_config(cfg.freeze)
        model = strategy.prepare(meta_model(name, classes), name)
        counts[option] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts["base"] == head and counts["none"] == whole
    assert min(counts.values()) == head and max(counts.values()) == whole
    decades = math.log10(whole / head)
    assert decades >= 4.0, f"{classes} classes: {decades:.2f} decades"
    # Strictly between the two ends: each strategy is a dose of its own.
    inner = {o: c for o, c in counts.items() if o not in ("base", "none", "lpft")}
    assert all(head < c < whole for c in inner.values()), inner


def test_the_paper_backbone_preset_spans_less_than_four_decades_as_its_comment_says() -> None:
    # Why the wide preset exists: resnet50's head (2048 x 5 + 5) is 3.4 decades below it.
    reference = meta_model("resnet50", 5)
    whole = sum(p.numel() for p in reference.parameters())
    assert 3.3 < math.log10(whole / (2048 * 5 + 5)) < 4.0

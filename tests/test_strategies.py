"""Freeze strategies as objects: trainable sets against independent counts on fresh timm
models, bit-identity of what does not train, BatchNorm statistics, LoRA merge equivalence,
and LP-FT's two phases in the record."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import timm
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from paramcorr import strategies
from paramcorr.classifier import ClassifierModule
from paramcorr.errors import UserError
from paramcorr.evaluation import evaluate
from paramcorr.freezing import count_parameters
from paramcorr.strategy_names import STRATEGY_ORDER, TERMS

FAST_ARCHS = ["test_resnet", "test_efficientnet", "test_convnext", "mobilenetv3_small_050"]
PAPER_ARCHS = ["vgg16", "resnet50", "inception_v3", "legacy_xception", "mobilenetv2_100",
               "densenet121"]
DEMO_ARCHS = ["resnet18", "convnext_atto", "regnetx_002", "mobilenetv2_050", "lcnet_050",
              "mobilenetv3_small_050"]
# One option set per strategy (surgical: the first block after the stem).
OPTIONS = {"base": {}, "none": {}, "partial": {"stages": 2}, "bitfit": {}, "norm": {},
           "lora": {"rank": 4}, "surgical": {"block": 1}, "lpft": {"probe_epochs": 1}}


def needs_peft(strategy: str) -> None:
    """LoRA is the optional extra `lora` (peft): its tests skip where it is not installed."""
    if strategy == "lora":
        pytest.importorskip("peft")


def fresh(name: str, meta: bool = False) -> torch.nn.Module:
    if meta:  # no memory, no init: vgg16 costs nothing
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=5)
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5)


def optimizer_count(model: torch.nn.Module) -> int:
    module = ClassifierModule(model, lambda params: torch.optim.SGD(params, lr=0.1), 5)
    optimizer = module.configure_optimizers()
    return sum(p.numel() for group in optimizer.param_groups for p in group["params"])


def independent_count(name: str, strategy: str, options: dict, meta: bool) -> int:
    """What the strategy should train, counted on a fresh model by other means than its code:
    parameter names, module type names, timm's grouping and the LoRA shapes."""
    ref = fresh(name, meta)
    sizes = {n: p.numel() for n, p in ref.named_parameters()}
    head_ids = {id(p) for p in ref.get_classifier().parameters()}
    head = {n for n, p in ref.named_parameters() if id(p) in head_ids}
    groups = timm.models.group_parameters(ref, ref.group_matcher(coarse=True))
    ordered = [groups[k] for k in sorted(groups)]
    if strategy == "base":
        names = head
    elif strategy in ("none", "lpft"):
        names = set(sizes)
    elif strategy == "partial":
        names = set(sizes) - {n for g in ordered[:options["stages"]] for n in g}
    elif strategy == "bitfit":
        names = {n for n in sizes if n.endswith(".bias") or n == "bias"} | head
    elif strategy == "norm":
        names = {f"{m}.{p}" for m, mod in ref.named_modules() if "Norm" in type(mod).__name__
                 for p, _ in mod.named_parameters(recurse=False)} | head
    elif strategy == "surgical":
        names = set(ordered[options["block"]]) | head
    elif strategy == "lora":
        r = options["rank"]
        head_modules = {id(m) for m in ref.get_classifier().modules()}
        adapters = 0
        for mod in ref.modules():
            if id(mod) in head_modules:
                continue
            if type(mod).__name__ == "Linear":
                adapters += r * (mod.in_features + mod.out_features)
            elif isinstance(mod, torch.nn.Conv2d) and mod.groups == 1:
                kh, kw = mod.kernel_size
                adapters += r * mod.in_channels * kh * kw + mod.out_channels * r
        return adapters + sum(sizes[n] for n in head)
    else:
        raise AssertionError(strategy)
    return sum(sizes[n] for n in names)


def test_every_registered_strategy_has_terms_and_a_config_option() -> None:
    assert set(strategies.registered()) == set(STRATEGY_ORDER)
    conf = Path(__file__).parents[1] / "conf" / "freeze"
    assert {p.stem for p in conf.glob("*.yaml")} == set(STRATEGY_ORDER)
    markers = [TERMS[n].marker for n in STRATEGY_ORDER]
    assert len(set(markers)) == len(markers)


def check_counts(name: str, strategy: str, meta: bool) -> int:
    needs_peft(strategy)
    options = OPTIONS[strategy]
    model = strategies.create(strategy, options).prepare(fresh(name, meta), name)
    counts = count_parameters(model)
    expected = independent_count(name, strategy, options, meta)
    assert counts.trainable == expected, (name, strategy)
    assert optimizer_count(model) == expected
    assert counts.total == counts.trainable + counts.frozen
    return counts.trainable


@pytest.mark.parametrize("name", FAST_ARCHS)
@pytest.mark.parametrize("strategy", STRATEGY_ORDER)
def test_trainable_count_matches_an_independent_count(name: str, strategy: str) -> None:
    check_counts(name, strategy, meta=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", PAPER_ARCHS + DEMO_ARCHS)
def test_paper_and_demo_backbones_match_independent_counts(name: str) -> None:
    """On the meta device: the structure and counts, no weights and no download."""
    counts = {s: check_counts(name, s, meta=True) for s in STRATEGY_ORDER}
    assert counts["base"] <= counts["bitfit"] <= counts["none"]
    assert counts["lora"] < counts["none"]


@pytest.mark.parametrize("strategy", STRATEGY_ORDER)
def test_parameters_outside_the_trainable_set_stay_bit_identical(strategy: str) -> None:
    needs_peft(strategy)
    model = strategies.create(strategy, OPTIONS[strategy]).prepare(fresh("test_resnet"),
                                                                    "test_resnet")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    module = ClassifierModule(model, lambda p: torch.optim.Adam(p, lr=1e-2), 5,
                              strategy=strategies.create(strategy, OPTIONS[strategy]))
    optimizer = module.configure_optimizers()
    torch.manual_seed(1)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    module.train()
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(module(x), y).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed <= trainable and changed  # the frozen ones untouched, something trained


def _bn_step(strategy: str) -> bool:
    """Whether one training step under ``strategy`` moved any BatchNorm running mean."""
    model = strategies.create(strategy, OPTIONS[strategy]).prepare(fresh("test_resnet"),
                                                                    "test_resnet")
    module = ClassifierModule(model, lambda p: torch.optim.SGD(p, lr=0.1), 5,
                              strategy=strategies.create(strategy, OPTIONS[strategy]))
    means = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
    module.train()
    module(torch.randn(4, 3, 32, 32) * 3 + 1)
    return any(not torch.equal(b, means[n]) for n, b in model.named_buffers() if n in means)


def test_batchnorm_statistics_update_where_bn_trains_and_stay_where_frozen() -> None:
    # norm / bitfit: BatchNorm's affine parameters (biases) train, so it is in train mode and
    # its running statistics follow the new data (Frankle et al.); base / lora: held.
    assert _bn_step("norm") and _bn_step("bitfit") and _bn_step("none")
    assert not _bn_step("base")
    needs_peft("lora")
    assert not _bn_step("lora")


def test_lora_evaluates_the_same_merged_or_not() -> None:
    needs_peft("lora")
    strategy = strategies.create("lora", {"rank": 4})
    model = strategy.prepare(fresh("test_resnet"), "test_resnet")
    torch.manual_seed(2)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 5, (32,))
    module = ClassifierModule(model, lambda p: torch.optim.Adam(p, lr=1e-2), 5, strategy=strategy)
    optimizer = module.configure_optimizers()
    module.train()
    for _ in range(5):  # so the adapters (lora_B starts at zero) change the output
        optimizer.zero_grad()
        F.cross_entropy(module(x), y).backward()
        optimizer.step()
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    model.eval()  # as the job evaluates
    unmerged = evaluate(model, loader, 5, torch.device("cpu"), None)
    untouched = copy.deepcopy(model)
    strategies.merge_lora(model)
    merged = evaluate(model, loader, 5, torch.device("cpu"), None)
    assert merged["acc"] == unmerged["acc"] and merged["f1"] == unmerged["f1"]
    assert merged["loss"] == pytest.approx(unmerged["loss"], rel=1e-5)
    base_out = evaluate(fresh("test_resnet").eval(), loader, 5, torch.device("cpu"), None)
    assert base_out["loss"] != pytest.approx(merged["loss"], rel=1e-5)  # adapters mattered
    strategies.unmerge_lora(model)
    assert evaluate(model, loader, 5, torch.device("cpu"), None)["acc"] == unmerged["acc"]
    # Exported: a plain timm state dict with the merged weights, same outputs.
    exported = strategy.for_export(copy.deepcopy(untouched))
    assert not any("lora" in k or "base_layer" in k for k in exported.state_dict())
    plain = fresh("test_resnet").eval()
    plain.load_state_dict(exported.state_dict())
    assert evaluate(plain, loader, 5, torch.device("cpu"), None)["acc"] == unmerged["acc"]


def test_lora_target_is_a_whole_name_regex_and_refusals_are_one_line() -> None:
    needs_peft("lora")
    strategy = strategies.create("lora", {"rank": 2, "target": r"layer\d\.0\.conv1"})
    model = strategy.prepare(fresh("test_resnet"), "test_resnet")
    adapted = {n.split(".lora_")[0] for n in strategies.lora_parameter_names(model)}
    assert adapted and all(re.fullmatch(r"layer\d\.0\.conv1", n) for n in adapted)
    default = strategies.create("lora", {"rank": 2}).prepare(fresh("mobilenetv3_small_050"), "m")
    adapted = {n.split(".lora_")[0] for n in strategies.lora_parameter_names(default)}
    assert "classifier" not in adapted and all(
        default.get_submodule(n).get_base_layer().groups == 1 for n in adapted
        if isinstance(default.get_submodule(n).get_base_layer(), torch.nn.Conv2d))
    for target, message in ((r"layer9\..*", "matches no module name"),
                            (r"layer1\.0\.bn1", "not an ungrouped conv or linear"),
                            (r"fc", "not an ungrouped conv or linear")):
        with pytest.raises(UserError, match=message) as err:
            strategies.create("lora", {"rank": 2, "target": target}).prepare(
                fresh("test_resnet"), "test_resnet")
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="not a regular expression"):
        strategies.create("lora", {"rank": 2, "target": "layer4[("}).check_options()
    with pytest.raises(UserError, match="freeze.rank=0"):
        strategies.create("lora", {"rank": 0}).check_options()


def test_surgical_block_out_of_range_names_the_allowed_range() -> None:
    with pytest.raises(UserError, match=r"test_resnet has 6 stages.*freeze\.block must be in "
                                        r"0\.\.5, got 7"):
        strategies.create("surgical", {"block": 7}).prepare(fresh("test_resnet"), "test_resnet")


def test_lpft_schedule_is_a_probe_then_everything() -> None:
    strategy = strategies.create("lpft", {"probe_epochs": 2})
    phases = strategy.phases(5)
    assert [(p.name, p.epochs, p.strategy.name) for p in phases] == [
        ("probe", 2, "base"), ("finetune", 3, "none")]
    assert [p.head_only for p in phases] == [True, False]  # the probe can use the cache
    assert {s: strategies.create(s, OPTIONS[s]).caches_features for s in STRATEGY_ORDER} == {
        s: s in ("base", "lpft") for s in STRATEGY_ORDER}
    with pytest.raises(UserError, match="leaves no fine-tuning epoch"):
        strategy.check_options(max_epochs=2)


def test_lpft_job_records_both_phases(train_config) -> None:
    from paramcorr.job import run_job

    cfg = train_config("freeze=lpft", "trainer.max_epochs=3", "freeze.probe_epochs=1",
                       "trainer.limit_train_batches=2")
    record = run_job(cfg, Path(cfg.logger.save_dir))
    assert record["status"] == "completed", record["error"]
    ref = fresh("test_resnet")
    total = sum(p.numel() for p in ref.parameters())
    head = sum(p.numel() for p in ref.get_classifier().parameters())
    params = record["params"]
    assert (params["trainable"], params["trainable_probe"], params["in_optimizer"]) == (
        total, head, total)
    phases = record["phases"]
    assert [(p["name"], p["epochs"], p["steps"], p["trainable"]) for p in phases] == [
        ("probe", 1, 2, head), ("finetune", 2, 4, total)]
    # digits without augmentation: the probe trains the head on cached features, as base.
    assert record["cached_features"] is True
    assert [p["cached_features"] for p in phases] == [True, False]
    assert record["run"]["epochs"] == 3 and record["run"]["steps"] == 6
    assert record["run"]["probe_epochs"] == 1 and record["run"]["freeze"] == "lpft"


@pytest.mark.parametrize("override, axes", [
    (["freeze=lora", "freeze.rank=2"], {"lora_rank": 2, "lora_alpha": 2.0, "lora_target": None}),
    (["freeze=surgical", "freeze.block=2"], {"surgical_block": 2}),
    (["freeze=bitfit"], {}),
])
def test_strategy_keys_are_run_axes_of_the_record(train_config, override, axes) -> None:
    from paramcorr.job import run_job

    needs_peft(override[0].split("=")[1])
    cfg = train_config(*override)
    record = run_job(cfg, Path(cfg.logger.save_dir))
    assert record["status"] == "completed", record["error"]
    assert {k: record["run"][k] for k in axes} == axes
    assert record["run"]["frozen_stages"] is None
    assert record["params"]["trainable"] == record["params"]["in_optimizer"]


@pytest.mark.parametrize("preset", ["strategies", "strategies_demo"])
def test_presets_compose_every_strategy_of_their_sweep(train_config, preset) -> None:
    import yaml

    path = Path(__file__).parents[1] / "conf" / "experiment" / f"{preset}.yaml"
    sweep = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    options = sweep["freeze"].split(",")
    seen = []
    for option in options:
        cfg = train_config(f"experiment={preset}", f"freeze={option}",
                           f"model={sweep['model']}")
        strategy = strategies.from_config(cfg.freeze)
        strategy.check_options(cfg.trainer.get("max_epochs"))
        seen.append((strategy.name, tuple(sorted(strategy.run_axes().items()))))
    assert len(set(seen)) == len(options)  # every option a different configuration
    assert {name for name, _ in seen} == set(STRATEGY_ORDER)
    ranks = sorted(dict(axes)["lora_rank"] for name, axes in seen if name == "lora")
    assert ranks == [1, 4, 16, 64]


def test_surgical_block_beyond_the_backbone_is_not_applicable_in_a_sweep(train_config) -> None:
    from paramcorr.depth import out_of_range_reason

    cfg = train_config("freeze=surgical", "freeze.block=6", "freeze.out_of_range=skip")
    assert "freeze.block=6 is beyond it (valid: 0..5)" in out_of_range_reason(cfg)
    assert out_of_range_reason(train_config("freeze=surgical", "freeze.block=5",
                                            "freeze.out_of_range=skip")) is None
    assert out_of_range_reason(train_config("freeze=lora", "freeze.out_of_range=skip")) is None


def test_config_refuses_bad_strategy_keys_in_one_line(train_config) -> None:
    from paramcorr.config import validate

    for overrides, message in ((["freeze=lora", "freeze.rank=0"], "freeze.rank=0"),
                               (["freeze=lpft", "freeze.probe_epochs=1"], "no fine-tuning"),
                               (["freeze=bitfit", "freeze.cache_features=true"],
                                "needs a head-only strategy")):
        with pytest.raises(UserError, match=message) as err:
            validate(train_config(*overrides))
        assert "\n" not in str(err.value)

"""One job end to end: frozen parts untouched, cache equivalence, checkpoints, the record."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import open_dict
from safetensors.torch import load_file

from helpers import TWO_CLASSES, assert_schema_valid
from paramcorr import strategies
from paramcorr.backbones import create_backbone, save_checkpoint
from paramcorr.job import run_axes, run_job
from paramcorr.record import METRIC_KEYS, RUN_AXES, NotRun, RunRecord, find_record


@pytest.fixture
def start_weights(tmp_path: Path) -> Path:
    """A checkpoint of test_resnet (another class count) to start from."""
    torch.manual_seed(123)
    model = timm.create_model("test_resnet", num_classes=7)
    # Non-default BatchNorm statistics, so "unchanged" is a real check.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    path = tmp_path / "start.safetensors"
    save_checkpoint(model, path, metadata={})
    return path


def test_base_keeps_backbone_and_bn_statistics_bit_identical(train_config, start_weights):
    cfg = train_config(f"model.weights={start_weights}", "freeze=base",
                       "freeze.cache_features=false", "save_weights=true",
                       "trainer.max_epochs=2", "trainer.limit_train_batches=3", "lr=1e-2")
    out = Path(cfg.logger.save_dir)
    record = run_job(cfg, out)
    assert record["status"] == "completed", record["error"]
    assert record["cached_features"] is False
    before, after = load_file(str(start_weights)), load_file(str(out / "model.safetensors"))
    head = {"fc.weight", "fc.bias"}
    backbone = [k for k in after if k not in head]
    assert any("running_mean" in k for k in backbone)
    for key in backbone:
        assert torch.equal(before[key], after[key]), key
    assert after["fc.weight"].shape == (5, before["fc.weight"].shape[1])
    # The head was trained: it differs from the head the job started with, which a run of
    # zero epochs with the same seed saves unchanged.
    untrained_cfg = train_config(f"model.weights={start_weights}", "freeze=base",
                                 "save_weights=true", "trainer.max_epochs=0")
    untrained_dir = out.parent / "untrained"
    assert run_job(untrained_cfg, untrained_dir)["status"] == "completed"
    start_head = load_file(str(untrained_dir / "model.safetensors"))["fc.weight"]
    assert torch.equal(start_head, _fresh_head(cfg.seed, start_weights))
    assert not torch.equal(after["fc.weight"], start_head)
    assert_schema_valid(record)
    assert record["params"]["trainable"] == 5 * after["fc.weight"].shape[1] + 5


def _fresh_head(seed: int, weights: Path) -> torch.Tensor:
    import lightning as L

    L.seed_everything(seed, verbose=False)
    return create_backbone("test_resnet", str(weights), 5).get_classifier().weight.detach()


@pytest.mark.slow
def test_cached_and_plain_training_agree(train_config, start_weights, tmp_path):
    common = (f"model.weights={start_weights}", "freeze=base", "save_weights=true",
              "trainer.max_epochs=3", "trainer.limit_train_batches=1.0",
              "trainer.limit_val_batches=1.0", "optimizer=sgd", "lr=1e-1",
              f"paths.cache_dir={tmp_path / 'cache'}")
    plain_cfg = train_config(*common, "freeze.cache_features=false")
    plain = run_job(plain_cfg, tmp_path / "plain")
    cached_cfg = train_config(*common, "freeze.cache_features=auto")
    cached = run_job(cached_cfg, tmp_path / "cached")
    assert plain["cached_features"] is False and cached["cached_features"] is True
    assert cached["feature_cache"]["hit"] is False
    a = load_file(str(tmp_path / "plain" / "model.safetensors"))
    b = load_file(str(tmp_path / "cached" / "model.safetensors"))
    for key in ("fc.weight", "fc.bias"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    for key in METRIC_KEYS:
        assert math.isclose(plain["metrics"][key], cached["metrics"][key], abs_tol=1e-4), key
    # Another lr, same backbone/weights/data: the second job hits the cache.
    again = run_job(train_config(*common, "lr=1e-2"), tmp_path / "again")
    assert again["feature_cache"] == {"key": cached["feature_cache"]["key"], "hit": True}


def test_checkpoint_loads_with_another_class_count(tmp_path):
    source = timm.create_model("test_efficientnet", num_classes=3)
    path = tmp_path / "src.safetensors"
    save_checkpoint(source, path, metadata={})
    target = create_backbone("test_efficientnet", str(path), num_classes=8)
    saved = load_file(str(path))
    state = target.state_dict()
    head = {"classifier.weight", "classifier.bias"}
    for key, value in saved.items():
        if key not in head:
            assert torch.equal(state[key], value), key
    assert state["classifier.weight"].shape == (8, saved["classifier.weight"].shape[1])


@pytest.mark.slow
def test_resnet50_base_trains_exactly_its_classifier(train_config):
    # The acceptance run: model=resnet50 model.weights=random freeze=base data=digits,
    # on two of the digit classes (resnet50 extracts features from 2/5 of the images).
    cfg = train_config("model=resnet50", "model.weights=random", "freeze=base", "data=digits",
                       "trainer.max_epochs=1", TWO_CLASSES)
    record = run_job(cfg, Path(cfg.logger.save_dir))
    assert record["status"] == "completed", record["error"]
    fresh = timm.create_model("resnet50", num_classes=2)
    assert record["params"]["trainable"] == 2048 * 2 + 2
    assert record["params"]["trainable"] == sum(
        p.numel() for p in fresh.get_classifier().parameters())
    assert record["params"]["total"] == sum(p.numel() for p in fresh.parameters())


def test_finished_job_is_skipped_and_changed_config_reruns(train_config, tmp_path):
    cfg = train_config()
    out = tmp_path / "run"
    first = run_job(cfg, out)
    assert first.status == "completed"
    second = run_job(cfg, out)
    assert isinstance(second, NotRun) and second.kind == "finished"
    assert second.record == first
    assert find_record(out / "result.json").config_hash == first.config_hash
    with open_dict(cfg):
        cfg.trainer.max_epochs = 2
    third = run_job(cfg, out)
    assert isinstance(third, RunRecord) and third.config_hash != first.config_hash
    assert list(out.glob("result.completed-*.json.old"))  # the earlier record is kept


@pytest.mark.parametrize("strategy", strategies.registered())
def test_run_axes_are_the_record_table_s_axes(train_config, strategy):
    """run_axes fills exactly the table's axes a config knows: every always-present one,
    the strategy's own, nothing the table does not declare (num_groups comes with the build)."""
    axes = run_axes(train_config(f"freeze={strategy}"))
    declared = {a.name: a for a in RUN_AXES}
    assert set(axes) <= set(declared)
    expected = [a.name for a in RUN_AXES
                if a.always_present or a.strategy == strategy]
    assert list(axes) == expected  # the table's order is the record's
    assert all(axes[a] is None for a in axes if declared[a].filled_by == "training")
    assert "num_groups" not in axes and declared["num_groups"].filled_by == "build"

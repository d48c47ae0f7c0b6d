"""LP-FT's probe phase on the frozen-feature cache: the same entry and eligibility rule as
freeze=base, the same head as the probe through the backbone, the same numbers warm or cold,
and the phases' bookkeeping in the record."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from paramcorr import backbones, fitting
from paramcorr.job import run_job
from paramcorr.record import METRIC_KEYS

# Two probe epochs and one of fine-tuning, several batches each: the batch order matters.
LPFT = ("freeze=lpft", "freeze.probe_epochs=2", "trainer.max_epochs=3",
        "trainer.limit_train_batches=6", "data.batch_size=16", "model.drop_rate=0.2",
        "save_weights=true", "lr=1e-2")


def _run(train_config, tmp_path: Path, name: str, *overrides: str):
    cfg = train_config(*overrides, f"paths.cache_dir={tmp_path / 'cache'}")
    record = run_job(cfg, tmp_path / name)
    assert record.status == "completed", record.error
    return record


@pytest.fixture
def probe_heads(monkeypatch):
    """The classifier's weights and the backbone's state after each head-only phase."""
    seen: list[dict] = []
    real = fitting.fit_phase

    def fit_phase(prepared, *args, **kwargs):
        inputs = prepared.inputs
        head = inputs.net if inputs.features else inputs.net.get_classifier()
        before = {k: v.detach().clone() for k, v in head.state_dict().items()}
        fitted = real(prepared, *args, **kwargs)
        if prepared.strategy.head_only:
            net = prepared.module.net
            seen.append({"features": inputs.features, "before": before,
                         "head": {k: v.detach().clone() for k, v in head.state_dict().items()},
                         "model": None if inputs.features else
                         {k: v.detach().clone() for k, v in net.state_dict().items()}})
        return fitted

    monkeypatch.setattr(fitting, "fit_phase", fit_phase)
    return seen


@pytest.mark.slow
def test_the_probe_on_cached_features_matches_the_probe_on_images(train_config, tmp_path,
                                                                   probe_heads):
    from safetensors.torch import load_file

    images = _run(train_config, tmp_path, "images", *LPFT, "freeze.cache_features=false")
    cached = _run(train_config, tmp_path, "cached", *LPFT)
    assert images.extra["cached_features"] is False and cached.extra["cached_features"] is True
    assert cached.config_hash == images.config_hash  # result-neutral, as for base
    assert [p["cached_features"] for p in cached.extra["phases"]] == [True, False]
    assert [p["cached_features"] for p in images.extra["phases"]] == [False, False]

    through, on_features = probe_heads
    assert (through["features"], on_features["features"]) == (False, True)
    assert through["head"].keys() == on_features["head"].keys()
    assert through["before"].keys() == through["head"].keys()
    for probe in probe_heads:  # the same init, and the probe trained it
        assert all(torch.equal(v, through["before"][k]) for k, v in probe["before"].items())
        assert not all(torch.equal(v, probe["before"][k]) for k, v in probe["head"].items())
    for key, value in through["head"].items():
        # Features computed in other batch compositions (extraction vs training batches):
        # the last bits may differ, as for freeze=base.
        torch.testing.assert_close(on_features["head"][key], value, rtol=1e-5, atol=1e-6)

    # The same phases, steps and trainable counts either way.
    strip = [{k: v for k, v in p.items() if k not in ("fit_s", "cached_features")}
             for p in images.extra["phases"]]
    assert strip == [{k: v for k, v in p.items() if k not in ("fit_s", "cached_features")}
                     for p in cached.extra["phases"]]
    assert images.params == cached.params and images.run == cached.run
    for key in METRIC_KEYS:
        assert math.isclose(cached.metrics[key], images.metrics[key], abs_tol=1e-4), (
            key, cached.metrics, images.metrics)
    a = load_file(str(tmp_path / "images" / "model.safetensors"))
    b = load_file(str(tmp_path / "cached" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_the_backbone_is_untouched_by_the_probe_through_images(train_config, tmp_path,
                                                               probe_heads):
    """What makes the cache equivalent: the probe through the backbone changes only the head
    (BatchNorm running statistics included)."""
    import lightning as L

    from paramcorr.freezing import classifier_parameter_names

    cfg = train_config(*LPFT)
    L.seed_everything(cfg.seed, workers=True, verbose=False)  # as the job builds it
    model = backbones.create_backbone(cfg.model.name, cfg.model.weights, 5,
                                      drop_rate=cfg.model.drop_rate)
    _run(train_config, tmp_path, "images", *LPFT, "freeze.cache_features=false")
    (probe,) = probe_heads
    head = classifier_parameter_names(model)
    before = dict(model.state_dict())
    assert probe["model"].keys() == before.keys()
    changed = {k for k, v in probe["model"].items()
               if k in before and not torch.equal(v, before[k])}
    assert changed == head


@pytest.mark.slow
def test_lpft_shares_base_s_cache_entry_and_is_the_same_warm_or_cold(train_config, tmp_path):
    cold = _run(train_config, tmp_path, "cold", *LPFT)
    warm = _run(train_config, tmp_path, "warm", *LPFT)
    assert cold.extra["feature_cache"]["hit"] is False and warm.extra["feature_cache"]["hit"]
    assert warm.extra["feature_cache"]["key"] == cold.extra["feature_cache"]["key"]
    assert warm.metrics == cold.metrics
    # The one entry freeze=base uses for this backbone, weights and data.
    base = _run(train_config, tmp_path, "base", "freeze=base")
    assert base.extra["feature_cache"] == {"key": cold.extra["feature_cache"]["key"],
                                           "hit": True}

    # Bookkeeping: epochs, steps and trainable count per phase; the probe one Lightning step
    # per epoch (head_epoch_steps), counting its optimizer steps all the same.
    head = base.params["trainable"]
    total = cold.params["total"]
    phases = [(p["name"], p["epochs"], p["steps"], p["trainable"]) for p in cold.extra["phases"]]
    assert phases == [("probe", 2, 12, head), ("finetune", 1, 6, total)]
    assert cold.extra["head_epoch_steps"] is True
    assert (cold.params["trainable"], cold.params["trainable_probe"]) == (total, head)
    assert cold.run["epochs"] == 3 and cold.run["steps"] == 18
    assert cold.timing["features_s"] > 0


@pytest.mark.slow
def test_cache_features_true_holds_for_lpft_and_refuses_with_augmentation(train_config,
                                                                          tmp_path):
    ok = _run(train_config, tmp_path, "ok", "freeze=lpft", "trainer.max_epochs=2",
              "freeze.cache_features=true")
    assert ok.extra["cached_features"] is True
    refused = run_job(train_config("freeze=lpft", "trainer.max_epochs=2",
                                   "freeze.cache_features=true", "data.augment=true"),
                      tmp_path / "aug")
    assert refused.status == "failed"
    assert refused.error.startswith("freeze.cache_features=true cannot hold with "
                                    "data.augment=true")
    # auto with augmentation: the probe runs through the backbone.
    aug = _run(train_config, tmp_path, "auto", "freeze=lpft", "trainer.max_epochs=2",
               "data.augment=true")
    assert aug.extra["cached_features"] is False
    assert [p["cached_features"] for p in aug.extra["phases"]] == [False, False]

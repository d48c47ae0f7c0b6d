"""The decoded-input cache: the same uint8 inputs and metrics as decoding, verified, capped."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import folder_config
from paramcorr import cache_store
from paramcorr.backbones import create_backbone, data_config
from paramcorr.config import AutoBool, TriState
from paramcorr.data import build_data
from paramcorr.input_cache import InputNorm, cached_splits, dataset_labels, split_transform
from paramcorr.job import run_job
from paramcorr.record import METRIC_KEYS

AUTO = TriState("data.cache_inputs", AutoBool.auto, "input cache", "decode every epoch",
                "decoding every epoch")


@pytest.fixture
def jpegs(tmp_path: Path) -> Path:
    """JPEGs of uneven sizes (so Resize and CenterCrop do real work); val/test split off."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    for c, name in enumerate(("cat", "dog", "owl")):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(10):
            h, w = 30 + 3 * i, 45 + 2 * i
            pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8) // (c + 1)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def _splits(root: Path):
    from omegaconf import OmegaConf

    model = create_backbone("test_resnet", "random", 3)
    dcfg = data_config(model, 32)
    cfg = OmegaConf.create(dict(name="imagefolder", root=str(root), classes=None, augment=False,
                                on_bad_image="error", split_seed=0, val_fraction=0.2,
                                test_fraction=0.2, generalization_root=None))
    return build_data(cfg, dcfg), tuple(dcfg["input_size"])


def test_cached_inputs_are_the_decoded_uint8_with_the_same_labels_and_order(jpegs, tmp_path):
    splits, size = _splits(jpegs)
    cached, norm, info = cached_splits(splits, AUTO, 1.0, tmp_path / "cache", size, 0)
    assert info["hit"] == {"train": False, "val": False, "test": False}
    pil_part, _, _ = split_transform(splits.train_eval.dataset.transform)
    for split in ("train", "val", "test"):
        decoded, served = splits.get(split) if split != "train" else splits.train_eval, \
            cached.get(split)
        assert len(served) == len(decoded) > 0
        images, labels = served.tensors
        assert images.dtype == torch.uint8 and tuple(images.shape[1:]) == size
        assert np.array_equal(labels.numpy(), dataset_labels(decoded))
        for i in range(len(decoded)):
            x, y = decoded[i]  # today's path: decode, transform, ToTensor, Normalize
            path = decoded.dataset.samples[decoded.indices[i]][0]
            with Image.open(path) as image:
                raw = pil_part(image.convert("RGB"))
            assert torch.equal(images[i], raw), (split, i)  # bit-identical uint8
            assert labels[i] == y
            assert torch.equal(norm(images[i].unsqueeze(0))[0], x)  # bit-identical floats
    assert cached.train is cached.train_eval
    again = cached_splits(splits, AUTO, 1.0, tmp_path / "cache", size, 0)
    assert again[2]["hit"] == {"train": True, "val": True, "test": True}


def test_input_norm_is_torchvision_to_tensor_and_normalize():
    from torchvision.transforms import functional as tvf

    x = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    expected = torch.stack([tvf.normalize(tvf.to_tensor(tvf.to_pil_image(i)), mean, std)
                            for i in x])
    assert torch.equal(InputNorm(mean, std)(x), expected)
    floats = torch.randn(2, 3, 4, 4)
    assert InputNorm(mean, std)(floats) is floats


def assert_same_metrics(a: dict, b: dict, tol: float) -> None:
    for key in METRIC_KEYS:
        x, y = a["metrics"][key], b["metrics"][key]
        assert (x is None) == (y is None), key  # gen_* are None: no generalization set
        assert x is None or math.isclose(x, y, abs_tol=tol), key
    assert a["metrics"]["test_acc"] is not None


def _job(train_config, root: Path, out: Path, *extra: str) -> dict:
    cfg = folder_config(train_config, root, "freeze=none", "trainer.max_epochs=2",
                        "trainer.limit_train_batches=1.0", "data.batch_size=8", *extra)
    record = run_job(cfg, out)
    return record


@pytest.mark.slow
def test_cached_job_metrics_equal_decoding_and_later_jobs_hit(train_config, jpegs, tmp_path):
    plain = _job(train_config, jpegs, tmp_path / "plain", "data.cache_inputs=false")
    cached = _job(train_config, jpegs, tmp_path / "cached", "data.cache_inputs=true")
    assert plain["status"] == cached["status"] == "completed", cached["error"]
    assert "input_cache" not in plain
    assert cached["input_cache"]["hit"] == {"train": False, "val": False, "test": False}
    assert_same_metrics(plain, cached, 1e-5)
    again = _job(train_config, jpegs, tmp_path / "again", "lr=1e-2")  # auto: uses it
    assert again["input_cache"]["hit"] == {"train": True, "val": True, "test": True}


@pytest.mark.slow
def test_a_damaged_input_entry_is_recomputed(train_config, jpegs, tmp_path, monkeypatch):
    first = _job(train_config, jpegs, tmp_path / "first")
    assert first["input_cache"]["hit"]["train"] is False
    entries = [p for p in (tmp_path / "job" / "cache" / "inputs").iterdir() if p.is_dir()]
    assert len(entries) == 3
    for entry in entries:
        manifest = json.loads((entry / "manifest.json").read_text())
        n = manifest["arrays"]["images"]["shape"][0]
        images = np.load(entry / "images.npy", mmap_mode="r+")
        images[n // 2, 1, 5, 5] ^= 0xFF  # in the middle of the data, header intact
        images.flush()
        del images
    monkeypatch.setattr(cache_store, "_VERIFIED", set())  # as a new process would
    again = _job(train_config, jpegs, tmp_path / "again")
    assert again["input_cache"]["hit"] == {"train": False, "val": False, "test": False}
    assert again["metrics"] == first["metrics"]


@pytest.mark.slow
def test_over_the_cap_streams_and_true_refuses(train_config, jpegs, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="paramcorr.input_cache"):
        streamed = _job(train_config, jpegs, tmp_path / "cap", "data.cache_max_gb=1e-6")
    assert streamed["status"] == "completed" and "input_cache" not in streamed
    said = [r.getMessage() for r in caplog.records if "input cache off" in r.getMessage()]
    assert len(said) == 1 and "over data.cache_max_gb=1e-06" in said[0]
    assert not (tmp_path / "job" / "cache" / "inputs").exists()
    refused = _job(train_config, jpegs, tmp_path / "refused", "data.cache_max_gb=1e-6",
                   "data.cache_inputs=true")
    assert refused["status"] == "failed"
    assert refused["error"].startswith("data.cache_inputs=true but the splits need")
    augmented = _job(train_config, jpegs, tmp_path / "aug", "data.augment=true",
                     "data.cache_inputs=true")
    assert augmented["status"] == "failed" and "data.augment=true" in augmented["error"]
    assert "input_cache" not in _job(train_config, jpegs, tmp_path / "aug2", "data.augment=true")


def test_frozen_heads_use_features_not_inputs_unless_told(train_config, jpegs, tmp_path):
    base = _job(train_config, jpegs, tmp_path / "base", "freeze=base")
    assert base["cached_features"] is True and "input_cache" not in base
    both = _job(train_config, jpegs, tmp_path / "both", "freeze=base", "data.cache_inputs=true",
                f"paths.cache_dir={tmp_path / 'c2'}")
    assert both["cached_features"] is True and both["input_cache"]["hit"]["train"] is False
    assert_same_metrics(both, base, 1e-6)  # features from cached inputs: the same

"""The frozen-feature cache: keys, sharing, atomic concurrent fills, when `auto` turns it on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from paramcorr.job import run_job


def job(train_config, tmp_path: Path, name: str, *overrides: str) -> dict:
    cfg = train_config("freeze=base", f"paths.cache_dir={tmp_path / 'cache'}", *overrides)
    record = run_job(cfg, tmp_path / name)
    assert record["status"] == "completed", record["error"]
    return record


def key_of(record: dict) -> str:
    return record["feature_cache"]["key"]


def test_key_changes_with_what_determines_features_and_only_that(train_config, tmp_path):
    base = job(train_config, tmp_path, "base")
    assert base["cached_features"] is True and base["feature_cache"]["hit"] is False
    # Same backbone, weights, data and preprocessing: another lr or optimizer hits the cache.
    same = [job(train_config, tmp_path, "lr", "lr=1e-2"),
            job(train_config, tmp_path, "sgd", "optimizer=sgd"),
            job(train_config, tmp_path, "epochs", "trainer.max_epochs=2")]
    assert all(key_of(r) == key_of(base) and r["feature_cache"]["hit"] for r in same)
    # Anything that changes the tensors the head sees changes the key.
    changed = {
        "seed (random weights)": job(train_config, tmp_path, "seed", "seed=1"),
        "backbone": job(train_config, tmp_path, "model", "model=test_efficientnet"),
        "preprocessing": job(train_config, tmp_path, "size", "data.image_size=40"),
        "split": job(train_config, tmp_path, "split", "data.split_seed=3"),
        "classes": job(train_config, tmp_path, "classes", "data.classes=[0,1,2]"),
    }
    keys = {name: key_of(r) for name, r in changed.items()}
    assert key_of(base) not in keys.values()
    assert len(set(keys.values())) == len(keys)
    assert not any(r["feature_cache"]["hit"] for r in changed.values())


def test_weights_file_content_is_part_of_the_key(train_config, tmp_path):
    import timm

    from paramcorr.backbones import save_checkpoint

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        path = tmp_path / f"w{seed}.safetensors"
        save_checkpoint(timm.create_model("test_resnet", num_classes=3), path, metadata={})
        paths.append(path)
    a = job(train_config, tmp_path, "a", f"model.weights={paths[0]}")
    b = job(train_config, tmp_path, "b", f"model.weights={paths[1]}")
    c = job(train_config, tmp_path, "c", f"model.weights={paths[0]}", "seed=5")
    assert key_of(a) != key_of(b)
    assert key_of(a) == key_of(c)  # the seed does not change a file's weights


def test_auto_is_off_with_augmentation_and_on_without(train_config, tmp_path):
    assert job(train_config, tmp_path, "plain")["cached_features"] is True
    assert job(train_config, tmp_path, "aug", "data.augment=true")["cached_features"] is False
    assert job(train_config, tmp_path, "off",
               "freeze.cache_features=false")["cached_features"] is False
    assert job(train_config, tmp_path, "none", "freeze=none")["cached_features"] is False


FILL = textwrap.dedent("""
    import sys, torch, timm
    from pathlib import Path
    from omegaconf import OmegaConf
    from paramcorr import feature_cache
    from paramcorr.backbones import data_config
    from paramcorr.data import build_data
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5).eval()
    cfg = OmegaConf.create(dict(name="digits", classes=[5, 6, 7, 8, 9], split_seed=0,
                                val_fraction=0.2, test_fraction=0.2, shift_rotation_deg=25.0,
                                shift_noise_std=0.2, augment=False))
    splits = build_data(cfg, data_config(model, 32))
    for _ in range(int(sys.argv[2])):
        feature_cache.load_or_compute(model, splits, "samekey", Path(sys.argv[1]), 64,
                                      torch.device("cpu"))
        (Path(sys.argv[1]) / "samekey.safetensors").unlink(missing_ok=True)
    feature_cache.load_or_compute(model, splits, "samekey", Path(sys.argv[1]), 64,
                                  torch.device("cpu"))
""")


@pytest.mark.slow
def test_two_processes_filling_one_entry_leave_one_readable_entry(tmp_path):
    script = tmp_path / "fill.py"
    script.write_text(FILL)
    cache = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, str(script), str(cache), "3"])
             for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    entries = list(cache.iterdir())
    assert [e.name for e in entries] == ["samekey.safetensors"]  # no temp files left behind
    tensors = load_file(str(entries[0]))
    assert tensors["train.features"].shape[0] == tensors["train.labels"].shape[0]
    assert {k.split(".")[0] for k in tensors} == {"train", "val", "test", "gen"}

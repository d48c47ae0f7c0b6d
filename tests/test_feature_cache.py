"""The frozen-feature cache: keys, sharing, atomic concurrent fills, when `auto` turns it on."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TINY, TWO_CLASSES, compose_config
from paramcorr import cache_store
from paramcorr.job import run_job
from paramcorr.record import METRIC_KEYS


def job(train_config, tmp_path: Path, name: str, *overrides: str) -> dict:
    cfg = train_config("freeze=base", f"paths.cache_dir={tmp_path / 'cache'}", *overrides)
    record = run_job(cfg, tmp_path / name)
    assert record["status"] == "completed", record["error"]
    return record


def key_of(record: dict) -> str:
    return record["feature_cache"]["key"]


@pytest.mark.slow
def test_key_changes_with_what_determines_features_and_only_that(train_config, tmp_path):
    # Two digit classes: the key, not the amount of data, is under test (9 jobs, 6 fills).
    def small(name: str, *overrides: str) -> dict:
        return job(train_config, tmp_path, name, TWO_CLASSES, *overrides)

    base = small("base")
    assert base["cached_features"] is True and base["feature_cache"]["hit"] is False
    # Same backbone, weights, data and preprocessing: another lr or optimizer hits the cache.
    same = [small("lr", "lr=1e-2"),
            small("sgd", "optimizer=sgd"),
            small("epochs", "trainer.max_epochs=2")]
    assert all(key_of(r) == key_of(base) and r["feature_cache"]["hit"] for r in same)
    # Anything that changes the tensors the head sees changes the key.
    changed = {
        "seed (random weights)": small("seed", "seed=1"),
        "backbone": small("model", "model=test_efficientnet"),
        "preprocessing": small("size", "data.image_size=40"),
        "split": small("split", "data.split_seed=3"),
        "classes": small("classes", "data.classes=[5,6,7]"),
    }
    keys = {name: key_of(r) for name, r in changed.items()}
    assert key_of(base) not in keys.values()
    assert len(set(keys.values())) == len(keys)
    assert not any(r["feature_cache"]["hit"] for r in changed.values())


@pytest.mark.slow
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


@pytest.mark.slow
def test_auto_is_off_with_augmentation_and_on_without(train_config, tmp_path):
    def cached(name: str, *overrides: str) -> bool:  # two classes: only the decision counts
        return job(train_config, tmp_path, name, TWO_CLASSES, *overrides)["cached_features"]

    assert cached("plain") is True
    assert cached("aug", "data.augment=true") is False
    assert cached("off", "freeze.cache_features=false") is False
    assert cached("none", "freeze=none") is False


FILL = textwrap.dedent("""
    import shutil, sys, torch, timm
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
        shutil.rmtree(Path(sys.argv[1]) / "samekey", ignore_errors=True)
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
    entries = sorted(e.name for e in cache.iterdir())
    assert entries == ["samekey", "samekey.lock"]  # no temp dirs left behind
    manifest = json.loads((cache / "samekey" / "manifest.json").read_text())
    arrays = manifest["arrays"]
    assert arrays["train.features"]["shape"][0] == arrays["train.labels"]["shape"][0]
    assert {k.split(".")[0] for k in arrays} == {"train", "val", "test", "gen"}


# --- damaged, foreign and stale entries -----------------------------------------------------


def _rewrite(entry: Path, name: str, array: np.ndarray) -> None:
    """Replace one array of an entry *consistently* (manifest checksum and shape updated):
    only the check against the split can tell."""
    np.save(entry / f"{name}.npy", array)
    manifest = json.loads((entry / "manifest.json").read_text())
    manifest["arrays"][name] = {"dtype": str(array.dtype), "shape": list(array.shape),
                                "sha256": cache_store._digest(array)}
    (entry / "manifest.json").write_text(json.dumps(manifest))


def _flip_middle(path: Path) -> None:
    with open(path, "rb") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        start = handle.tell()
    raw = bytearray(path.read_bytes())
    raw[start + (len(raw) - start) // 2] ^= 0x55  # header intact, data damaged
    path.write_bytes(bytes(raw))


DAMAGES = {
    "bytes flipped mid-data": lambda e: _flip_middle(e / "test.features.npy"),
    "labels swapped": lambda e: _rewrite(e, "test.labels",
                                         np.roll(np.load(e / "test.labels.npy"), 1)),
    "wrong shape": lambda e: _rewrite(e, "val.features", np.load(e / "val.features.npy")[:, :-1]),
}


COMMON = ("trainer.max_epochs=2", "trainer.limit_train_batches=1.0")


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> tuple[Path, dict, dict]:
    """The plain-path job and a cache-filling job, shared by the damage cases (each damages
    its own copy of the cache)."""
    from hydra.core.global_hydra import GlobalHydra

    base = tmp_path_factory.mktemp("filled")
    records = {}
    for name, extra in (("plain", ["freeze.cache_features=false"]), ("first", [])):
        cfg = compose_config("train", [*TINY, "freeze=base", f"paths.cache_dir={base / 'cache'}",
                                       *COMMON, *extra], base / "cfg")
        GlobalHydra.instance().clear()
        records[name] = run_job(cfg, base / name)
        assert records[name]["status"] == "completed", records[name]["error"]
    return base / "cache", records["plain"], records["first"]


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_or_foreign_entries_are_recomputed_and_metrics_equal_the_plain_path(
        train_config, tmp_path, damage, monkeypatch, filled):
    import shutil

    cache, plain, first = filled
    shutil.copytree(cache, tmp_path / "cache")
    entry = tmp_path / "cache" / "features" / key_of(first)
    DAMAGES[damage](entry)
    monkeypatch.setattr(cache_store, "_VERIFIED", set())  # as a new process would
    again = job(train_config, tmp_path, "again", *COMMON)
    assert again["feature_cache"] == {"key": key_of(first), "hit": False}  # recomputed
    for key in METRIC_KEYS:
        assert math.isclose(again["metrics"][key], plain["metrics"][key], abs_tol=1e-4), key
        assert again["metrics"][key] == first["metrics"][key], key


@pytest.mark.slow
def test_an_unwritable_cache_dir_runs_without_the_cache(train_config, tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache dir should be")
    plain = job(train_config, tmp_path, "plain", "freeze.cache_features=false")
    records = [run_job(train_config("freeze=base", f"paths.cache_dir={blocker}"),
                       tmp_path / f"j{i}") for i in range(2)]
    for record in records:
        assert record["status"] == "completed", record["error"]
        assert record["cached_features"] is True and record["feature_cache"]["hit"] is None
        for key in METRIC_KEYS:
            assert math.isclose(record["metrics"][key], plain["metrics"][key], abs_tol=1e-4)


def test_true_refuses_where_the_cache_cannot_be_used(train_config, tmp_path):
    record = run_job(train_config("freeze=base", "freeze.cache_features=true",
                                  "data.augment=true"), tmp_path / "aug")
    assert record["status"] == "failed"
    assert record["error"].startswith("freeze.cache_features=true cannot hold with "
                                      "data.augment=true")
    assert "\n" not in record["error"]
    assert job(train_config, tmp_path, "ok", "freeze.cache_features=true")["cached_features"]


# --- the head fast path -----------------------------------------------------------------


# sgd with 3 batches runs in the fast suite; the whole-epoch and half-epoch cases with Adam in
# the full one (they take several jobs each).
@pytest.mark.parametrize(("optimizer", "limit"), [
    pytest.param("adam", "1.0", marks=pytest.mark.slow), ("sgd", "3"),
    pytest.param("adam", "0.5", marks=pytest.mark.slow)])
def test_head_fast_path_reproduces_the_per_batch_path_exactly(train_config, tmp_path,
                                                             optimizer, limit):
    from safetensors.torch import load_file

    common = ("trainer.max_epochs=3", f"trainer.limit_train_batches={limit}",
              f"optimizer={optimizer}", "data.batch_size=16", "save_weights=true",
              "eval_weights=best")
    fast = job(train_config, tmp_path, "fast", *common)
    # max_steps acts within an epoch: the job then takes Lightning's per-batch loop.
    slow = job(train_config, tmp_path, "slow", *common, "trainer.max_steps=100000")
    assert fast["head_epoch_steps"] is True and slow["head_epoch_steps"] is False
    a = load_file(str(tmp_path / "fast" / "model.safetensors"))
    b = load_file(str(tmp_path / "slow" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert fast["metrics"] == slow["metrics"]
    assert fast["evaluated_epoch"] == slow["evaluated_epoch"]

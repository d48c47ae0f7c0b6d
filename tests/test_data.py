"""Datasets as a user's run sees them: digits splits and shift, an ImageFolder end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.datasets import load_digits

from helpers import folder_config, make_tree
from paramcorr.data import build_data, class_names, count_classes
from paramcorr.errors import UserError
from paramcorr.job import run_job

IMAGENET = dict(input_size=(3, 32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def digits(input_size=(3, 32, 32), **overrides):
    cfg = dict(name="digits", classes=[5, 6, 7, 8, 9], split_seed=0, val_fraction=0.2,
               test_fraction=0.2, shift_rotation_deg=25.0, shift_noise_std=0.2, augment=False)
    return build_data(OmegaConf.create({**cfg, **overrides}),
                      {**IMAGENET, "input_size": input_size})


def test_digits_splits_cover_the_subset_stratified_and_relabelled():
    splits = digits()
    _, labels = load_digits(return_X_y=True)
    expected = int(np.isin(labels, [5, 6, 7, 8, 9]).sum())
    sizes = [len(splits.train), len(splits.val), len(splits.test)]
    assert sum(sizes) == expected and len(splits.gen) == len(splits.test)
    assert splits.class_names == ["5", "6", "7", "8", "9"]
    for split in (splits.train, splits.val, splits.test):
        counts = torch.bincount(split.tensors[1], minlength=5).numpy()
        share = counts / counts.sum()
        assert np.allclose(share, 0.2, atol=0.03)  # stratified over the five classes
    assert splits.train[0][0].shape == (3, 32, 32)


def test_generalization_set_is_a_fixed_shift_of_the_test_split():
    a, b = digits(), digits()
    assert torch.equal(a.gen.tensors[0], b.gen.tensors[0])  # deterministic
    assert torch.equal(a.gen.tensors[1], a.test.tensors[1])  # same labels as test
    diff = (a.gen.tensors[0] - a.test.tensors[0]).abs().mean().item()
    assert diff > 0.1  # really shifted
    other = digits(split_seed=1)
    assert not torch.equal(other.test.tensors[1], a.test.tensors[1])


@pytest.mark.slow
def test_imagefolder_job_with_splits_generalization_and_augmentation(train_config, tmp_path):
    root = make_tree(tmp_path / "images", splits=("train", "val", "test"))
    shifted = make_tree(tmp_path / "other", splits=("gen",), n=4) / "gen"
    for augment, freeze in (("false", "base"), ("true", "base"), ("false", "none")):
        cfg = folder_config(train_config, root, f"data.generalization_root={shifted}",
                            f"data.augment={augment}", f"freeze={freeze}")
        record = run_job(cfg, tmp_path / f"job-{augment}-{freeze}")
        assert record["status"] == "completed", record["error"]
        assert record["data"] == {"train": 12, "val": 12, "test": 12, "gen": 8,
                                  "bad_images_skipped": 0, "notes": []}
        assert record["run"]["num_classes"] == 2
        assert 0.0 <= record["metrics"]["gen_acc"] <= 1.0
        assert record["cached_features"] is (augment == "false" and freeze == "base")


def _folder_data(root, **overrides):
    cfg = dict(name="imagefolder", root=str(root), classes=None, augment=False,
               on_bad_image="error", split_seed=0, val_fraction=0.2, test_fraction=0.2,
               generalization_root=None)
    return OmegaConf.create({**cfg, **overrides})


def test_count_classes_agrees_with_the_loaded_data(tmp_path):
    for classes in (None, [1, 2, 3]):
        cfg = OmegaConf.create(dict(name="digits", classes=classes, split_seed=0,
                                    val_fraction=0.2, test_fraction=0.2, augment=False,
                                    shift_rotation_deg=25.0, shift_noise_std=0.2))
        loaded = build_data(cfg, IMAGENET)
        assert count_classes(cfg) == loaded.num_classes
        assert class_names(cfg) == loaded.class_names  # a pretrained checkpoint's "source"
    assert count_classes(OmegaConf.create(dict(name="digits", classes=None))) == len(
        set(load_digits().target))
    root = make_tree(tmp_path / "images", classes=("a", "b", "c"))
    assert count_classes(_folder_data(root)) == 3 == build_data(_folder_data(root),
                                                                 IMAGENET).num_classes
    for classes in (None, ["c", "a"]):
        folder = _folder_data(root, classes=classes)
        assert class_names(folder) == build_data(folder, IMAGENET).class_names


def test_count_classes_fails_as_loading_does(tmp_path):
    (tmp_path / "no_train").mkdir()
    for cfg in (_folder_data(None), _folder_data(tmp_path / "missing"),
                _folder_data(tmp_path / "no_train"), _folder_data(tmp_path, classes=["a", "a"])):
        with pytest.raises(UserError) as counting:
            count_classes(cfg)
        with pytest.raises(UserError) as loading:
            build_data(cfg, IMAGENET)
        assert str(counting.value) == str(loading.value)


def test_digits_too_large_for_memory_are_refused_before_resizing():
    size = 20000  # 2 x 901 images x 3 x 20000^2 x 4 bytes: terabytes
    with pytest.raises(UserError, match=rf"data.image_size={size} makes the in-memory digits "
                                        r"set \d+ GiB, more than this machine's \d+ GiB"):
        digits(input_size=(3, size, size))

"""What a run reads from an image folder, and what says it changed: ImageFolder's own files
(links followed as it follows them), listed once per job, checked once per version."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from torchvision.datasets import ImageFolder

from helpers import folder_config, make_tree
from paramcorr import data as data_module
from paramcorr.data import CHECKS_DIR, build_data
from paramcorr.errors import UserError
from paramcorr.inputs import data_fingerprint
from paramcorr.job import run_job

IMAGENET = dict(input_size=(3, 32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def _data(root: Path, **overrides):
    cfg = dict(name="imagefolder", root=str(root), classes=None, augment=False,
               on_bad_image="error", split_seed=0, val_fraction=0.2, test_fraction=0.2,
               generalization_root=None)
    return OmegaConf.create({**cfg, **overrides})


def _paths(tmp_path: Path, cache: Path | None = None):
    return OmegaConf.create({"output_root": str(tmp_path / "outputs"),
                             "cache_dir": str(cache or tmp_path / "cache")})


def _touch(path: Path) -> None:
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))


def _size(splits) -> int:
    return len(splits.train) + len(splits.val) + len(splits.test)


# --- links: followed as ImageFolder follows them (item 4) ------------------------------------


@pytest.mark.parametrize("linked", ["class", "train"])
def test_a_linked_class_folder_or_train_dir_is_part_of_the_identity(tmp_path, linked):
    elsewhere = make_tree(tmp_path / "elsewhere", classes=("cat", "dog"))
    root = tmp_path / "images"
    if linked == "class":
        make_tree(root, classes=("cat",))
        (root / "train" / "dog").symlink_to(elsewhere / "train" / "dog")
    else:
        root.mkdir()
        (root / "train").symlink_to(elsewhere / "train")
    fingerprint = data_fingerprint(_data(root))
    cache_key = build_data(_data(root), IMAGENET).fingerprint
    _touch(elsewhere / "train" / "dog" / "0.png")  # changed behind the link
    assert data_fingerprint(_data(root)) != fingerprint
    assert build_data(_data(root), IMAGENET).fingerprint != cache_key  # input/feature caches


def test_images_in_a_linked_sub_folder_are_read_and_counted_as_imagefolder_sees_them(tmp_path):
    root = make_tree(tmp_path / "images")
    more = make_tree(tmp_path / "more", classes=("extra",), n=5) / "train" / "extra"
    (root / "train" / "cat" / "more").symlink_to(more)
    seen = ImageFolder(str(root / "train"))  # torchvision's own walk: 6 + 5 cats, 6 dogs
    assert len(seen) == 17
    splits = build_data(_data(root), IMAGENET)
    assert _size(splits) == len(seen)
    assert sorted(p for p, _ in splits.train_eval.dataset.samples) == sorted(
        p for p, _ in seen.samples)
    assert splits.bad_images_skipped == 0
    before = data_fingerprint(_data(root))
    _touch(more / "0.png")
    assert data_fingerprint(_data(root)) != before


def test_a_link_cycle_is_one_line_naming_the_link(tmp_path, train_config):
    root = make_tree(tmp_path / "images")
    loop = root / "train" / "cat" / "again"
    loop.symlink_to(root / "train")
    with pytest.raises(UserError, match=r"again leads back to .*train, a folder it is inside "
                                        r"of \(a link cycle\); remove or replace that link"):
        build_data(_data(root), IMAGENET)
    assert data_fingerprint(_data(root)) is None
    record = run_job(folder_config(train_config, root), tmp_path / "job")
    assert record.status == "failed" and "a link cycle" in record.error


# --- what changes the fingerprint (item 15) -------------------------------------------------


def test_only_what_imagefolder_loads_is_fingerprinted(tmp_path):
    root = make_tree(tmp_path / "images", splits=("train", "val"))
    before = data_fingerprint(_data(root))
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0")
    (root / "train" / "notes.txt").write_text("x")
    (root / "README.md").write_text("my data")
    plots = root / "analysis" / "plots"  # e.g. analysis output written inside the root
    plots.mkdir(parents=True)
    (plots / "scatter.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes())
    assert data_fingerprint(_data(root)) == before
    # The run's own outputs and caches are skipped even inside a split folder.
    paths = _paths(tmp_path, cache=root / "val" / "dog" / "cache")
    with_paths = data_fingerprint(_data(root), paths)
    (root / "val" / "dog" / "cache").mkdir()
    (root / "val" / "dog" / "cache" / "x.png").write_bytes(b"png")
    assert data_fingerprint(_data(root), paths) == with_paths
    # What ImageFolder does load changes it.
    (root / "val" / "dog" / "new.JPG").write_bytes(b"jpeg")
    assert data_fingerprint(_data(root)) != before


def test_outputs_and_cache_inside_the_data_root_do_not_rerun_finished_jobs(train_config,
                                                                           tmp_path):
    root = make_tree(tmp_path / "images")
    inside = [f"paths.output_root={root / 'outputs'}"]  # cache_dir follows: outputs/cache
    out = root / "outputs" / "job"
    first = run_job(folder_config(train_config, root, *inside), out)
    assert first.status == "completed", first.error
    assert list((root / "outputs" / "cache").rglob("*.json"))  # the cache grew inside
    (root / ".DS_Store").write_bytes(b"\0")
    again = run_job(folder_config(train_config, root, *inside), out)
    assert again.kind == "finished"


# --- validate first, list once, check once (item 14) ----------------------------------------


def _count_scandir(monkeypatch) -> Counter:
    calls: Counter = Counter()
    real = os.scandir

    def counting(path="."):
        calls[os.path.realpath(path)] += 1
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    return calls


def test_a_root_without_train_is_refused_before_anything_is_walked(train_config, tmp_path,
                                                                    monkeypatch):
    big = tmp_path / "big"
    for i in range(30):
        (big / f"d{i}").mkdir(parents=True)
        (big / f"d{i}" / "f.png").write_bytes(b"x")
    calls = _count_scandir(monkeypatch)
    record = run_job(folder_config(train_config, big), tmp_path / "job")
    assert record.status == "failed" and record.error.startswith("no train/ dir")
    assert not [p for p in calls if p.startswith(str(big.resolve()) + os.sep)]


def test_a_job_lists_each_image_folder_once(train_config, tmp_path, monkeypatch):
    root = make_tree(tmp_path / "images", splits=("train", "val", "test"))
    gen = make_tree(tmp_path / "shifted", splits=("gen",)) / "gen"
    calls = _count_scandir(monkeypatch)
    record = run_job(folder_config(train_config, root, f"data.generalization_root={gen}",
                                   f"paths.cache_dir={tmp_path / 'cache'}"), tmp_path / "job")
    assert record.status == "completed", record.error
    class_dirs = [d for split in ("train", "val", "test") for d in (root / split).iterdir()]
    class_dirs += list(gen.iterdir())
    assert {str(d.resolve()): calls[str(d.resolve())] for d in class_dirs} == {
        str(d.resolve()): 1 for d in class_dirs}


def test_images_are_decoded_once_per_version_across_processes(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "images", splits=("train", "test"))
    decoded: list[str] = []
    real = data_module._image_is_readable

    def counting(path: str) -> bool:
        decoded.append(path)
        return real(path)

    monkeypatch.setattr(data_module, "_image_is_readable", counting)
    monkeypatch.setattr(data_module, "_CHECKS", {})
    paths = _paths(tmp_path)
    build_data(_data(root), IMAGENET, paths)
    assert len(decoded) == 24  # every image once
    assert len(list((tmp_path / "cache" / CHECKS_DIR).glob("*.json"))) == 2  # train, test
    # Another process (a Slurm job) on the same files: the remembered check, no decode.
    monkeypatch.setattr(data_module, "_CHECKS", {})
    decoded.clear()
    assert _size(build_data(_data(root), IMAGENET, paths)) == 24
    assert decoded == []
    # A changed image: its split is checked again (and found bad).
    (root / "test" / "dog" / "0.png").write_bytes(b"not a png any more")
    with pytest.raises(UserError, match="unreadable image .*test/dog/0.png"):
        build_data(_data(root), IMAGENET, paths)
    assert len(decoded) == 12
    # A damaged remembered check is not trusted: checked again.
    for stored in (tmp_path / "cache" / CHECKS_DIR).glob("*.json"):
        stored.write_text('{"bad": ["../../etc/passwd"], "images": 12}')
    monkeypatch.setattr(data_module, "_CHECKS", {})
    decoded.clear()
    skipped = build_data(_data(root, on_bad_image="skip"), IMAGENET, paths)
    assert len(decoded) == 24 and skipped.bad_images_skipped == 1

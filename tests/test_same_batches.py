"""Result-neutral loader settings are result-neutral: the same config (and config_hash) trains
on the same batches, whatever the worker count, the input cache or the feature cache."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from helpers import folder_config, make_tree
from paramcorr.data import make_loader
from paramcorr.job import run_job
from paramcorr.record import METRIC_KEYS

# Three epochs of several small batches: the order matters from the first epoch on, and the
# bug (a base seed drawn once with persistent workers, every epoch without) from the second.
EPOCHS = ["trainer.max_epochs=3", "trainer.limit_train_batches=1.0", "data.batch_size=2",
          "eval_weights=last"]


def _metrics(train_config, root, out, *overrides):
    cfg = folder_config(train_config, root, *EPOCHS, *overrides)
    record = run_job(cfg, out)
    assert record.status == "completed", record.error
    return record


def _same(a, b, tolerance: float = 0.0) -> None:
    for key in METRIC_KEYS:
        x, y = a.metrics[key], b.metrics[key]
        if x is None or y is None:  # no generalization set: gen_* are null in both
            assert x is y is None, key
        else:
            assert abs(x - y) <= tolerance, (key, a.metrics, b.metrics)


def test_loader_order_depends_on_seed_and_epoch_alone():
    data = TensorDataset(torch.arange(40.0).unsqueeze(1), torch.zeros(40, dtype=torch.long))

    def epochs(workers: int, n: int = 3) -> list[list[float]]:
        loader = make_loader(data, 8, shuffle=True, seed=5, num_workers=workers)
        return [torch.cat([x for x, _ in loader]).flatten().tolist() for _ in range(n)]

    plain = epochs(0)
    assert epochs(2) == plain  # persistent workers: the same batches every epoch
    assert plain[0] != plain[1] != plain[2]  # and a new order each epoch
    assert sorted(plain[1]) == sorted(plain[0])
    before = torch.get_rng_state()
    epochs(0)
    assert torch.equal(torch.get_rng_state(), before)  # dropout's random state is untouched


@pytest.mark.slow  # a worker process per loader: minutes on a busy machine
def test_the_input_cache_trains_on_the_same_batches(train_config, tmp_path):
    root = make_tree(tmp_path / "images", n=10)
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    # The user's default: decoding uses worker processes (data.num_workers=null), cached
    # uint8 tensors none.
    plain = _metrics(train_config, root, tmp_path / "plain", cache, "freeze=none",
                     "data.cache_inputs=false", "data.num_workers=null")
    cached = _metrics(train_config, root, tmp_path / "cached", cache, "freeze=none",
                      "data.cache_inputs=true", "data.num_workers=null")
    assert cached.extra["input_cache"] and "input_cache" not in plain.extra
    assert cached.config_hash == plain.config_hash
    _same(plain, cached)  # the uint8 cache gives bit-identical inputs (input_cache.py)


@pytest.mark.slow
def test_worker_processes_train_on_the_same_batches(train_config, tmp_path):
    root = make_tree(tmp_path / "images", n=10)
    runs = [_metrics(train_config, root, tmp_path / f"w{w}", "freeze=none",
                     "data.cache_inputs=false", f"data.num_workers={w}") for w in (0, 2)]
    assert runs[0].config_hash == runs[1].config_hash
    _same(*runs)


# lpft: its probe phase on the cache, then fine-tuning on images from the head it trained.
@pytest.mark.parametrize("freeze", ["base", pytest.param("lpft", marks=pytest.mark.slow)])
def test_the_feature_cache_trains_on_the_same_batches(train_config, tmp_path, freeze):
    root = make_tree(tmp_path / "images", n=10)
    cache = f"paths.cache_dir={tmp_path / 'cache'}"
    through = _metrics(train_config, root, tmp_path / "through", cache, f"freeze={freeze}",
                       "freeze.cache_features=false", "data.cache_inputs=false")
    features = _metrics(train_config, root, tmp_path / "features", cache, f"freeze={freeze}",
                        "freeze.cache_features=true", "data.cache_inputs=false")
    assert features.extra["cached_features"] and not through.extra["cached_features"]
    assert features.config_hash == through.config_hash
    # The head sees the backbone's features computed in other batch compositions (the
    # extraction pass vs training batches): the float sums may differ in the last bits.
    _same(through, features, tolerance=1e-5)


@pytest.mark.slow
def test_augmented_batches_do_not_depend_on_the_worker_count(train_config, tmp_path):
    root = make_tree(tmp_path / "images", n=10)
    runs = [_metrics(train_config, root, tmp_path / f"w{w}", "freeze=none", "data.augment=true",
                     f"data.num_workers={w}") for w in (0, 2)]
    _same(*runs)

"""scripts/pretrain.py's checkpoints load into another task with a fresh head."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

from helpers import compose_config
from paramcorr.backbones import create_backbone, save_checkpoint
from paramcorr.config import validate
from paramcorr.pretraining import job_config, pretrain_all


def test_pretrained_checkpoint_loads_with_fresh_head_for_other_classes(tmp_path):
    cfg = compose_config("pretrain", ["models=[test_resnet]", "trainer.max_epochs=1",
                                      "trainer.limit_train_batches=3",
                                      "trainer.accelerator=cpu"], tmp_path)
    GlobalHydra.instance().clear()
    [path] = pretrain_all(cfg)
    assert path == tmp_path / "pretrained" / "digits-0-4" / "test_resnet.safetensors"
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta["architecture"] == "test_resnet"
    assert meta["source"] == "digits classes ['0', '1', '2', '3', '4']"
    saved = load_file(str(path))
    assert saved["fc.weight"].shape[0] == 5
    head = {"fc.weight", "fc.bias"}
    for classes in (3, 5):  # another class count, and the same count with other classes
        torch.manual_seed(99)
        model = create_backbone("test_resnet", str(path), num_classes=classes)
        state = model.state_dict()
        for key in saved.keys() - head:
            assert torch.equal(state[key], saved[key]), key
        assert state["fc.weight"].shape[0] == classes
        if classes == 5:
            assert not torch.equal(state["fc.weight"], saved["fc.weight"])
    # A second call reuses the file instead of training again.
    mtime = path.stat().st_mtime_ns
    pretrain_all(cfg)
    assert path.stat().st_mtime_ns == mtime


def test_pretraining_refuses_keys_it_would_ignore(tmp_path):
    """The pretraining config holds only what pretraining reads: keys that pretraining sets
    for its job itself are refused by name (struct mode) instead of silently ignored."""
    from hydra.errors import ConfigCompositionException

    for override in ("eval_weights=last", "save_weights=false", "model.weights=imagenet",
                     "optimized_metric=test_acc", "freeze.strategy=base"):
        with pytest.raises(ConfigCompositionException) as err:
            compose_config("pretrain", [override], tmp_path)
        GlobalHydra.instance().clear()
        assert override.split("=")[0].split(".")[0] in str(err.value.__cause__ or err.value)


def test_every_key_pretraining_accepts_reaches_the_job_that_reads_it(tmp_path):
    """A key accepted must be read. Pretraining runs each backbone as a job: every key of its
    config is pretraining's own (which models, where to, overwrite) or goes to that job
    unchanged. data.num_workers and data.cache_inputs were accepted and ignored before;
    channels_last and compile are accepted now that the job reads them."""
    overrides = ["data.num_workers=2", "data.cache_inputs=false", "data.cache_max_gb=3",
                 "data.eval_batch_size=17", "channels_last=true", "compile=true", "seed=7",
                 "lr=0.02", "strict=true", "optimizer=sgd", "optimizer.momentum=0.5",
                 "trainer.max_epochs=3", "+trainer.gradient_clip_val=1.5",
                 "paths.cache_dir=/elsewhere/cache"]
    cfg = compose_config("pretrain", overrides, tmp_path)
    GlobalHydra.instance().clear()
    job = job_config(cfg, "test_resnet")
    validate(job)

    def plain(node):
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) \
            else node

    own = {"models", "out_dir", "overwrite"}
    assert own < set(cfg)
    for key in set(cfg) - own:
        assert plain(job[key]) == plain(cfg[key]), key
    assert job.optimizer.lr == 0.02 and job.data.num_workers == 2 and job.channels_last
    assert (job.model.name, job.model.weights, job.freeze.strategy) == (
        "test_resnet", "random", "none")
    assert job.save_weights and job.logger is None and job.eval_weights == "best"
    # No validation epoch, no best epoch: the last one, as pretraining always did.
    quiet = compose_config("pretrain", ["trainer.limit_val_batches=0"], tmp_path)
    GlobalHydra.instance().clear()
    assert job_config(quiet, "test_resnet").eval_weights == "last"


def test_pretraining_says_which_backbone_it_starts_before_training_it(tmp_path, caplog):
    """pretrain.py was silent for minutes on its first backbone: a line now precedes each."""
    import logging

    cfg = compose_config("pretrain", ["models=[test_resnet]", "trainer.max_epochs=1",
                                      "trainer.limit_train_batches=1",
                                      "trainer.accelerator=cpu"], tmp_path)
    GlobalHydra.instance().clear()
    with caplog.at_level(logging.INFO):
        pretrain_all(cfg)
    lines = [r.getMessage() for r in caplog.records if r.name == "paramcorr.pretraining"]
    assert lines[0].startswith("[1/1] test_resnet: pretraining on digits classes")
    assert "pretrained on" in lines[1]  # then the result line, after training
    # The job it runs says nothing of its own (its summary would name a scratch directory).
    assert not [r for r in caplog.records if r.name == "paramcorr.job"]
    assert logging.getLogger("paramcorr.job").level == logging.NOTSET  # and is heard again


def test_checkpoint_bytes_do_not_depend_on_the_call(tmp_path):
    """safetensors writes the metadata in a Rust HashMap's order, which changes from call to
    call: the same weights and metadata gave files of different sha256 (a re-pretrained,
    identical backbone was a new weights_digest, so every job loading it ran again)."""
    model = torch.nn.Linear(2, 3)
    meta = {"architecture": "x", "source": "digits classes ['0', '1']", "image_size": "32",
            "val_acc": "0.5000", "epochs": "2"}
    digests = set()
    for i in range(8):
        path = tmp_path / f"{i}.safetensors"
        save_checkpoint(model, path, meta)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
        with safe_open(str(path), "pt") as handle:
            assert handle.metadata() == meta
        assert torch.equal(load_file(str(path))["weight"], model.weight.detach())
    assert len(digests) == 1
    raw = path.read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert list(header["__metadata__"]) == list(meta)  # the order the caller gave


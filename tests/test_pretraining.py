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
from paramcorr.errors import UserError
from paramcorr.job import run_job
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


TINY_PRETRAIN = ["models=[test_resnet]", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
                 "trainer.accelerator=cpu"]


def _pretrain_config(tmp_path, *overrides):
    cfg = compose_config("pretrain", [*TINY_PRETRAIN, *overrides], tmp_path)
    GlobalHydra.instance().clear()
    return cfg


def test_a_failed_job_is_one_line_naming_the_model_and_saves_nothing(tmp_path, monkeypatch,
                                                                    caplog):
    import logging

    from paramcorr import fitting

    def broken_fit(*args, **kwargs):
        raise RuntimeError("the fit broke\nand said more")

    monkeypatch.setattr(fitting, "fit_phase", broken_fit)
    cfg = _pretrain_config(tmp_path)
    with caplog.at_level(logging.INFO), pytest.raises(UserError) as err:
        pretrain_all(cfg)
    message = str(err.value)
    out_dir = tmp_path / "pretrained" / "digits-0-4"
    kept = out_dir / "test_resnet.error.log"
    assert message == (f"pretraining test_resnet failed: RuntimeError: the fit broke "
                       f"(traceback in {kept})")
    assert "the fit broke" in kept.read_text()  # the job's traceback outlives its scratch dir
    assert not (out_dir / "test_resnet.safetensors").exists()
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["digits-0-4"]  # no scratch
    assert sorted(p.name for p in out_dir.iterdir()) == ["test_resnet.error.log"]
    assert not [r for r in caplog.records if r.name == "paramcorr.job"]


def test_a_diverged_job_is_one_line_naming_the_model_and_saves_nothing(tmp_path):
    cfg = _pretrain_config(tmp_path, "optimizer=sgd", "lr=1e6")
    with pytest.raises(UserError) as err:
        pretrain_all(cfg)
    assert str(err.value).startswith("pretraining test_resnet diverged")
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "pretrained").rglob("*.safetensors"))


def test_a_job_refusing_its_config_is_refused_before_any_backbone_trains(tmp_path):
    """The jobs' configs are checked first: the second model's problem stops the first one
    from training for minutes before the error."""
    cfg = _pretrain_config(tmp_path, "models=[test_resnet,test_efficientnet]",
                           "data.batch_size=1")
    with pytest.raises(UserError) as err:
        pretrain_all(cfg)
    assert "data.batch_size=1" in str(err.value)
    assert not (tmp_path / "pretrained").exists()


def test_a_pretrained_checkpoint_holds_the_tensors_of_the_same_train_job(tmp_path):
    """Pretraining is the job's pipeline plus a save: its checkpoint holds the tensors that
    train.py's job saves with save_weights=true on the same settings (composed here from
    train.yaml, not by pretraining's job_config), with pretraining's own metadata."""
    common = ["trainer.max_epochs=2", "trainer.limit_train_batches=3", "trainer.accelerator=cpu",
              "seed=3", "lr=3e-3"]
    cfg = compose_config("pretrain", ["models=[test_resnet]", *common], tmp_path / "pre")
    GlobalHydra.instance().clear()
    [path] = pretrain_all(cfg)
    job = compose_config("train", ["model=test_resnet", "model.weights=random", "freeze=none",
                                   "eval_weights=best", "save_weights=true", "~logger",
                                   "data.classes=[0,1,2,3,4]", "trainer.enable_progress_bar=false",
                                   *common], tmp_path / "job")
    GlobalHydra.instance().clear()
    record = run_job(job, tmp_path / "job")
    assert record.status == "completed" and record["evaluated_epoch"] == "best"
    saved = load_file(str(path))
    reference = load_file(str(tmp_path / "job" / "model.safetensors"))
    assert saved.keys() == reference.keys()
    for key, tensor in reference.items():
        assert torch.equal(saved[key], tensor), key
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert meta == {"architecture": "test_resnet",
                    "source": "digits classes ['0', '1', '2', '3', '4']",
                    "image_size": str(record.run["image_size"]),
                    "val_acc": f"{record.metrics['val_acc']:.4f}", "epochs": "2"}


@pytest.mark.slow
def test_pretraining_with_loader_workers_saves_the_same_bytes(tmp_path, monkeypatch):
    """data.num_workers is result-neutral, and now reaches pretraining's loaders."""
    from paramcorr import data

    asked = []
    real = data.make_loader

    def spy(*args, **kwargs):
        asked.append(kwargs.get("num_workers"))
        return real(*args, **kwargs)

    for module in ("paramcorr.fitting", "paramcorr.job", "paramcorr.evaluation"):
        monkeypatch.setattr(f"{module}.make_loader", spy)
    digests = {}
    for workers in (0, 2):
        cfg = _pretrain_config(tmp_path / str(workers), "trainer.max_epochs=2",
                               f"data.num_workers={workers}")
        asked.clear()
        [path] = pretrain_all(cfg)
        assert asked and set(asked) == {workers}  # training and validation loaders
        digests[workers] = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digests[0] == digests[2]


def test_an_unwritable_out_dir_is_one_line_naming_it(tmp_path, capsys):
    """out_dir under a file (or read-only): one line naming it, exit 1, no traceback."""
    from paramcorr.entry import pretrain_task

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = compose_config("pretrain", ["models=[test_resnet]", f"out_dir={blocker / 'sub'}",
                                      "trainer.max_epochs=1"], tmp_path)
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_:
        pretrain_task(cfg)
    assert exit_.value.code == 1
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: cannot write to output directory {blocker / 'sub'}: Not a "
                    "directory; free space or choose another with paths.output_root=<dir> "
                    f"(pretraining writes to out_dir={blocker / 'sub'})")

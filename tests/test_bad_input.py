"""Bad input: one clear line naming the problem and the fix, never a crash deep inside.

In-process rows check the ``failed`` record's ``error`` (what a sweep keeps); subprocess rows
check what a user sees from ``scripts/train.py``: exit code != 0, one line on stderr, no
traceback. Hydra composition errors (an unknown config-group option, a value of the wrong
type) happen before any job exists, so they can never become a record: Hydra prints its own
few-line message, naming the key or listing the options, and exits 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch

from helpers import TINY, assert_schema_valid, folder_config, make_tree, run_script
from paramcorr.backbones import save_checkpoint
from paramcorr.errors import UserError
from paramcorr.job import run_job
from paramcorr.record import find_record

# Hydra's own composition error text ends with this hint; it is not a Python traceback.
HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR=1"


def failed(cfg, out: Path) -> str:
    """Run ``cfg`` and return the ``error`` of its ``failed`` record (also read back)."""
    record = run_job(cfg, out)
    assert record["status"] == "failed", record
    on_disk = find_record(out / "result.json")
    assert on_disk is not None and on_disk["error"] == record["error"]
    error = record["error"]
    assert isinstance(error, str) and error and "\n" not in error, error
    assert "Traceback" not in error and "error.log" not in error, error  # a UserError
    return error


# --- backbone and weights ----------------------------------------------------------------


def test_misspelt_backbone_names_the_closest_timm_models(train_config, tmp_path):
    error = failed(train_config("model.name=resnet5O"), tmp_path / "job")
    assert error.startswith("unknown backbone 'resnet5O'")
    assert "resnet50" in error


def test_missing_weights_file_lists_the_accepted_values(train_config, tmp_path):
    error = failed(train_config("model.weights=/no/such/file"), tmp_path / "job")
    assert "weights file not found: /no/such/file" in error
    assert "model.weights=imagenet" in error and "model.weights=random" in error


@pytest.mark.parametrize("name", ["notes.txt", "broken.safetensors"])
def test_a_file_that_is_not_a_checkpoint(train_config, tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"hello\n" if name.endswith(".txt") else b"\xff" * 100)
    error = failed(train_config(f"model.weights={path}"), tmp_path / "job")
    assert error.startswith(f"cannot read weights file {path}: not a safetensors or torch "
                            "checkpoint")
    assert "model.weights=random" in error


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_weights_of_another_architecture_do_not_fit(train_config, tmp_path, suffix):
    other = timm.create_model("test_efficientnet", num_classes=3)
    path = tmp_path / f"effnet{suffix}"
    if suffix == ".safetensors":
        save_checkpoint(other, path, metadata={})
    else:
        torch.save(other.state_dict(), path)
    error = failed(train_config(f"model.weights={path}"), tmp_path / "job")
    assert f"weights file {path} does not fit test_resnet" in error
    assert " missing, " in error and " unexpected, " in error
    counts = [int(word) for word in error.split(": ", 1)[1].split() if word.isdigit()]
    assert counts[0] > 0 and counts[1] > 0  # missing and unexpected key counts


def _offline(monkeypatch, cache: Path) -> None:
    """No route to the hub, whatever this machine has, and an empty hub cache."""
    import socket

    from huggingface_hub import constants

    def refuse(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def test_imagenet_weights_without_network_fail_fast(train_config, tmp_path, monkeypatch):
    _offline(monkeypatch, tmp_path / "hub")
    error = failed(train_config("model.weights=imagenet"), tmp_path / "job")
    # "unreachable" is the probe's answer: huggingface_hub's ~25 s of retries per file never
    # start (no wall-clock bound: speed lives in benchmarks, not in tests).
    assert error.startswith("could not download ImageNet weights for test_resnet")
    assert "unreachable" in error
    assert "model.weights=<path>" in error and "model.weights=random" in error
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE is False  # offline mode only while creating the model


def test_imagenet_weights_in_the_hub_cache_load_without_network(tmp_path, monkeypatch):
    from paramcorr.backbones import create_backbone

    cache = tmp_path / "hub"
    _offline(monkeypatch, cache)
    repo = cache / "models--timm--test_resnet.r160_in1k"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    torch.manual_seed(7)
    source = timm.create_model("test_resnet")
    save_checkpoint(source, repo / "snapshots" / commit / "model.safetensors", metadata={})
    model = create_backbone("test_resnet", "imagenet", num_classes=5)
    assert torch.equal(model.state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    assert model.get_classifier().out_features == 5


# --- optimizer, freezing, input size -------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "inf"])
def test_non_positive_learning_rate_is_rejected_before_training(train_config, tmp_path, value):
    record = run_job(train_config(f"optimizer.lr={value}"), tmp_path / "job")
    assert record["status"] == "failed"
    assert record["error"].startswith("optimizer.lr=")
    assert "must be a positive finite number" in record["error"]
    assert record["params"] is None  # rejected before a model was even built
    assert record["timing"]["fit_s"] == 0.0
    json.loads((tmp_path / "job" / "result.json").read_text())  # valid JSON (no NaN)


def test_partial_freeze_beyond_the_backbones_stages(train_config, tmp_path):
    error = failed(train_config("freeze=partial", "freeze.stages=99"), tmp_path / "job")
    assert error.startswith("test_resnet has 6 stages")
    assert "freeze.stages must be in 0..5, got 99" in error


def test_input_too_small_for_the_backbone_names_its_minimum(train_config, tmp_path):
    cfg = train_config("model=inception_v3", "model.weights=random", "data.image_size=32")
    error = failed(cfg, tmp_path / "job")
    assert error.startswith("inception_v3 cannot take 32px input")
    assert "the minimum size for inception_v3 is 75px" in error
    assert "data.image_size=75" in error


# --- data --------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", ["data.classes=null", "data.classes=[a,b]"])
def test_missing_imagefolder_root(train_config, tmp_path, classes):
    error = failed(folder_config(train_config, tmp_path / "missing", classes), tmp_path / "job")
    assert error == f"data.root not found: {tmp_path / 'missing'}"


def test_imagefolder_without_root_or_train_dir(train_config, tmp_path):
    error = failed(train_config("data=imagefolder", "data.classes=null"), tmp_path / "a")
    assert error == "data=imagefolder needs data.root=<dir with train/ (and val/, test/)>"
    (tmp_path / "images" / "val").mkdir(parents=True)
    error = failed(folder_config(train_config, tmp_path / "images"), tmp_path / "b")
    assert error.startswith(f"no train/ dir in data.root={tmp_path / 'images'}")


def test_empty_class_dir_is_named(train_config, tmp_path):
    root = make_tree(tmp_path / "images")
    (root / "train" / "empty").mkdir()
    error = failed(folder_config(train_config, root), tmp_path / "job")
    assert f"class dir(s) ['empty'] under {root / 'train'} hold no readable image" in error


def test_a_single_class_is_not_a_classifier(train_config, tmp_path):
    root = make_tree(tmp_path / "images", classes=("only",))
    error = failed(folder_config(train_config, root), tmp_path / "job")
    assert f"{root / 'train'} has 1 class dir(s) ['only']" in error
    assert "at least two" in error


@pytest.mark.parametrize("split", ["val", "test", "gen"])
def test_split_class_names_that_differ_from_train(train_config, tmp_path, split):
    root = make_tree(tmp_path / "images", splits=("train",))
    other = root / split if split != "gen" else tmp_path / "shifted"
    make_tree(other.parent, splits=(other.name,), classes=("cat", "fox"))
    extra = [f"data.generalization_root={other}"] if split == "gen" else []
    error = failed(folder_config(train_config, root, *extra), tmp_path / "job")
    assert f"({other}) differ from train/: missing ['dog'], extra ['fox']" in error


@pytest.mark.parametrize("bad", ["zero.png", "text.jpg"])
def test_unreadable_image_is_named_and_can_be_skipped(train_config, tmp_path, bad):
    root = make_tree(tmp_path / "images")
    path = root / "train" / "dog" / bad
    path.write_bytes(b"" if bad == "zero.png" else b"this is not an image\n")
    error = failed(folder_config(train_config, root), tmp_path / "job")
    assert error.startswith(f"unreadable image {path}")
    assert "data.on_bad_image=skip" in error

    record = run_job(folder_config(train_config, root, "data.on_bad_image=skip"),
                     tmp_path / "skip")
    assert record["status"] == "completed", record["error"]
    assert record["data"]["bad_images_skipped"] == 1
    assert record["data"]["train"] + record["data"]["val"] + record["data"]["test"] == 12


@pytest.mark.slow
def test_batch_larger_than_the_training_split_works(train_config, tmp_path):
    cfg = train_config("freeze=none", "data.classes=[5,6]", "data.batch_size=100000",
                       "data.eval_batch_size=100000")
    record = run_job(cfg, tmp_path / "job")
    assert record["status"] == "completed", record["error"]
    assert_schema_valid(record)


def test_zero_epochs_evaluates_the_untrained_model(train_config, tmp_path):
    record = run_job(train_config("trainer.max_epochs=0"), tmp_path / "job")
    assert record["status"] == "completed", record["error"]
    assert record["run"]["epochs"] == 0
    assert record["timing"]["train_samples_per_s"] == 0.0
    assert_schema_valid(record)


# --- analysis ----------------------------------------------------------------------------


def analyze(capsys, *argv: str) -> tuple[int, str, str]:
    """scripts/analyze.py's main in this process (its subprocess runs are in
    test_analysis_cli.py): exit code, stdout, stderr."""
    import logging

    from paramcorr.analysis.cli import main

    logger = logging.getLogger("paramcorr.analysis")
    handlers, level = list(logger.handlers), logger.level
    try:
        code = main(list(argv))
    finally:  # main adds a stderr handler: do not leave it to the tests after this one
        logger.handlers[:] = handlers
        logger.setLevel(level)
    out, err = capsys.readouterr()
    return code, out, err


def test_analysis_of_a_dir_without_records_says_so(tmp_path, capsys):
    (tmp_path / "sweep" / "job").mkdir(parents=True)
    code, out, err = analyze(capsys, str(tmp_path / "sweep"), "--out", str(tmp_path / "out"))
    assert code != 0
    assert err.strip().splitlines() == [
        f"error: no readable result.json found under {tmp_path / 'sweep'}; "
        "check the path points at a sweep directory"]
    assert "Traceback" not in out + err


def test_analysis_reads_what_it_can_and_counts_future_records(tmp_path, capsys):
    from analysis_fixtures import make_record
    from analysis_fixtures import write_record as put

    sweep = tmp_path / "sweep"
    for i, model in enumerate(["resnet50", "vgg16", "densenet121", "mobilenetv2_100"]):
        record = make_record(model=model, freeze="none", seed=i,
                             metrics=dict.fromkeys(("test_acc", "test_f1"), 0.5 + i / 10))
        put(sweep / f"job{i}", record)
    put(sweep / "future", {**make_record(), "schema": 2})
    put(sweep / "half", '{"schema": 1, "status": "comp')
    code, out, err = analyze(capsys, str(sweep), "--out", str(tmp_path / "out"), "--n-boot", "0",
                             "-q")
    assert code == 0, err[-2000:]
    assert "6 result.json read: 4 records" in out
    assert "2 skipped (1 future schema, 1 invalid JSON)" in out
    rows = (tmp_path / "out" / "runs.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 4


# --- what a user sees from the command line ----------------------------------------------


def assert_one_line_error(done, *expected: str) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def test_cli_bad_learning_rate_is_one_line_without_traceback(tmp_path):
    done = run_script("train.py", *TINY, "optimizer.lr=0", cwd=tmp_path, timeout=300)
    assert_one_line_error(done, "error: optimizer.lr=0.0 must be a positive finite number")
    record = json.loads(next((tmp_path / "outputs").rglob("result.json")).read_text())
    assert record["status"] == "failed" and record["run"]["lr"] == 0.0


COMPOSITION_ERRORS = [
    ("model=nosuchnet", ["Could not find 'model/nosuchnet'", "Available options in 'model'",
                         "\ttest_resnet"]),
    ("optimizer.lr=abc", ["Error merging override optimizer.lr=abc",
                          "could not be converted to Float", "full_key: optimizer.lr"]),
    ("lr=abc", ["Error merging override lr=abc", "full_key: lr"]),
]


@pytest.mark.parametrize(("override", "expected"), COMPOSITION_ERRORS)
def test_hydra_composition_errors_name_the_override(tmp_path, override, expected):
    # What the command line prints below is Hydra's text of this exception (and its cause).
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException

    from helpers import compose_config

    with pytest.raises(ConfigCompositionException) as err:
        compose_config("train", ["experiment=smoke", override], tmp_path)
    GlobalHydra.instance().clear()
    text = f"{err.value}\n{err.value.__cause__ or ''}"
    for line in expected:
        assert line in text, text


# One subprocess per kind of composition error runs in the fast suite (a missing option,
# a value of the wrong type); the third is the same path, run with the slow tests.
@pytest.mark.parametrize(("override", "expected"), [
    COMPOSITION_ERRORS[0], COMPOSITION_ERRORS[1],
    pytest.param(*COMPOSITION_ERRORS[2], marks=pytest.mark.slow)])
def test_cli_hydra_composition_errors_are_short_and_without_traceback(tmp_path, override,
                                                                      expected):
    done = run_script("train.py", "experiment=smoke", override, cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    for text in expected:
        assert text in done.stderr, done.stderr
    assert HYDRA_HINT in done.stderr
    # A few lines of message; the rest is Hydra's tab-indented list of options/search path.
    assert len([x for x in done.stderr.strip().splitlines() if x and x[0] != "\t"]) <= 6
    assert not (tmp_path / "outputs").exists() or not list(
        (tmp_path / "outputs").rglob("result.json"))  # no job, so no record


def test_multirun_with_an_unknown_option_stops_before_any_job(tmp_path):
    # Hydra composes every job of the batch before launching one: nothing runs, nothing is
    # half done, and the same message as for a single run names the option.
    done = run_script("train.py", "-m", "experiment=smoke", "model=test_resnet,nosuchnet",
                      cwd=tmp_path, timeout=120)
    assert done.returncode == 1
    assert "Could not find 'model/nosuchnet'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not list(tmp_path.rglob("result.json"))


@pytest.mark.slow
@pytest.mark.parametrize(("override", "expected"), [
    ("model.name=resnet5O", ["error: unknown backbone 'resnet5O'", "resnet50"]),
    ("data=imagefolder data.root=/missing", ["error: data.root not found: /missing"]),
    ("freeze=partial freeze.stages=99", ["error: test_resnet has 6 stages",
                                         "freeze.stages must be in 0..5"]),
])
def test_cli_job_errors_are_one_line_without_traceback(tmp_path, override, expected):
    done = run_script("train.py", *TINY, *override.split(), cwd=tmp_path, timeout=300)
    assert_one_line_error(done, *expected)


@pytest.mark.slow
def test_cli_imagenet_offline_fails_fast_without_hf_hub_offline(tmp_path):
    # A hub endpoint nothing listens on, and an empty cache: offline on any machine.
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_OFFLINE": "0", "HTTPS_PROXY": "", "https_proxy": "", "ALL_PROXY": "",
           "all_proxy": ""}
    done = run_script("train.py", *TINY, "model.weights=imagenet", cwd=tmp_path, timeout=300,
                      env=env)
    # "<host> unreachable" is the connection probe's answer (backbones._hub_unreachable), given
    # before huggingface_hub's own ~47 s of retries; no wall-clock bound here (a loaded CI
    # machine makes any such bound flaky; speed lives in benchmarks).
    assert_one_line_error(done, "error: could not download ImageNet weights for test_resnet",
                          "127.0.0.1 unreachable", "model.weights=random")


@pytest.mark.slow
def test_strict_shows_the_traceback(tmp_path):
    done = run_script("train.py", *TINY, "optimizer.lr=0", "strict=true", cwd=tmp_path,
                      timeout=300, env={"HYDRA_FULL_ERROR": "1"})
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "UserError" in done.stderr


@pytest.mark.slow
def test_multirun_with_one_bad_job_goes_on(tmp_path):
    done = run_script("train.py", "-m", *TINY, "name=bad", "freeze=base", "optimizer=adam",
                      "optimizer.lr=1e-3,0,1e-2", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = tmp_path / "outputs" / "multirun" / "bad"
    found = {p.parent.name: json.loads(p.read_text()) for p in sweep.rglob("result.json")}
    assert len(found) == 3
    by_lr = {r["run"]["lr"]: r for r in found.values()}
    assert by_lr[0.0]["status"] == "failed"
    assert by_lr[0.0]["error"].startswith("optimizer.lr=0.0 must be a positive finite number")
    assert by_lr[1e-3]["status"] == by_lr[1e-2]["status"] == "completed"
    assert "[3/3]" in done.stdout + done.stderr


# --- values refused before training (issue 10, item 7) -------------------------------------


@pytest.mark.parametrize(("overrides", "expected"), [
    (["data.batch_size=1", "freeze=none"], "data.batch_size=1 with freeze=none: test_resnet's "
                                           "BatchNorm layers train"),
    (["data.batch_size=1", "freeze=partial", "freeze.stages=1"], "data.batch_size=1 with "
                                                                 "freeze=partial"),
    (["seed=-1"], "seed=-1 is out of range; use an integer in 0..4294967295"),
    (["seed=4294967296"], "seed=4294967296 is out of range"),
    (["data.split_seed=-3"], "data.split_seed=-3 is out of range"),
    (["optimizer.betas=[0.9,1.0]"], "optimizer.betas=[0.9, 1.0] must be two numbers in [0, 1)"),
    (["optimizer.betas=[-0.1,0.999]"], "optimizer.betas=[-0.1, 0.999] must be two numbers"),
    (["optimizer.eps=-1"], "optimizer: Invalid epsilon value: -1.0; fix the optimizer.* value"),
    (["optimizer=sgd", "optimizer.nesterov=true"], "optimizer.nesterov=true needs "
                                                   "optimizer.momentum > 0 and no dampening"),
    (["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0.9",
      "+optimizer.dampening=0.1"], "optimizer.nesterov=true needs"),
    (["trainer.precision=17"],
     "trainer.precision=17 is not a Lightning precision; use auto or one of"),
    (["trainer.precision=fp32"], "trainer.precision=fp32 is not a Lightning precision"),
    (["trainer.accelerator=tpuu"], "trainer.accelerator=tpuu is not one of"),
    (["model.drop_rate=1.0"], "model.drop_rate=1.0 must be in [0, 1)"),
    (["model.drop_rate=-0.1"], "model.drop_rate=-0.1 must be in [0, 1)"),
    (["data.shift_noise_std=nan"], "data.shift_noise_std=nan must be >= 0"),
    (["data.shift_rotation_deg=inf"], "data.shift_rotation_deg=inf is not a finite number"),
    (["trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val=nan is not a finite number"),
    (["data.classes=[5,5,6]"], "data.classes=[5, 5, 6] names 5 more than once; list each "
                               "class once"),
    (["data.classes=[5,6.5]"], "data.classes=[5, 6.5]: 6.5 is not a digit label (an int)"),
    (["data.classes=[5,true]"], "data.classes=[5, True]: True is not a digit label"),
    (["data.classes=[5,[6]]"], "data.classes=[5, [6]]: [6] is not a digit label"),
    (["data.classes=[5,12]"], "data.classes=[5, 12] must name at least two digits among 0..9"),
    (["freeze=none", "freeze.cache_features=true"], "freeze.cache_features=true needs a "
                                                    "head-only strategy such as freeze=base "
                                                    "(or freeze=lpft, whose probe phase trains "
                                                    "the head alone; got freeze=none)"),
    (["data.augment=true", "freeze.cache_features=true"], "freeze.cache_features=true cannot "
                                                          "hold with data.augment=true"),
    (["optimizer._target_=torch.optim.Adamm"], "optimizer._target_: Error locating target "
                                               "'torch.optim.Adamm'"),
])
def test_bad_values_are_refused_before_a_model_is_built(train_config, tmp_path, overrides,
                                                         expected):
    error = failed(train_config(*overrides), tmp_path / "job")
    assert expected in error, error
    # Refused by validation, before any model or data was built.
    assert find_record(tmp_path / "job" / "result.json").params is None


def test_batch_size_one_is_fine_when_batch_norm_is_frozen(train_config, tmp_path):
    record = run_job(train_config("data.batch_size=1", "freeze=base"), tmp_path / "job")
    assert record["status"] == "completed", record["error"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_a_gpu(train_config, tmp_path):
    error = failed(train_config("trainer.accelerator=gpu"), tmp_path / "job")
    assert error.startswith("trainer.accelerator=gpu but this machine has no such device")
    assert "trainer=cpu" in error


def test_duplicate_or_mistyped_folder_classes(train_config, tmp_path):
    root = make_tree(tmp_path / "images")
    error = failed(folder_config(train_config, root, "data.classes=[cat,dog,cat]"),
                   tmp_path / "a")
    assert error.startswith("data.classes=['cat', 'dog', 'cat'] names cat more than once")
    error = failed(folder_config(train_config, root, "data.classes=[cat,1.5]"), tmp_path / "b")
    assert error.startswith("data.classes=['cat', 1.5]: 1.5 is not a class folder name")


def test_a_class_too_small_to_split_is_named(train_config, tmp_path):
    root = make_tree(tmp_path / "images")
    for extra in sorted((root / "train" / "dog").glob("*.png"))[2:]:
        extra.unlink()
    error = failed(folder_config(train_config, root), tmp_path / "job")
    assert error.startswith(f"class 'dog' has 2 image(s) in {root / 'train'}; a stratified "
                            "train/val/test split needs at least 3 per class")
    # With val/ and test/ folders nothing is split off train/: two images are enough.
    make_tree(root, splits=("val", "test"), n=2)
    record = run_job(folder_config(train_config, root), tmp_path / "folders")
    assert record["status"] == "completed", record["error"]


@pytest.mark.parametrize(("key", "value"), [("data.val_fraction", "0.001"),
                                            ("data.test_fraction", "0.001")])
def test_a_split_too_small_to_hold_every_class(train_config, tmp_path, key, value):
    error = failed(train_config(f"{key}={value}"), tmp_path / "job")
    assert error.startswith(f"{key}={value} cannot split the digits set into parts holding "
                            "each of its 5 classes"), error
    assert f"raise {key}" in error


def test_a_huge_image_size_is_reported_as_out_of_memory(train_config, tmp_path):
    error = failed(train_config("data.image_size=1000000"), tmp_path / "job")
    assert error.startswith("data.image_size=1000000: one 1000000px image does not fit in "
                            "memory for test_resnet")
    assert "use a smaller data.image_size" in error


def test_out_of_memory_is_recognised_on_the_cpu():
    from paramcorr.errors import is_out_of_memory

    with pytest.raises(RuntimeError) as info:
        torch.empty(10**14, dtype=torch.uint8)  # 100 TB: the CPU allocator refuses
    assert is_out_of_memory(info.value)
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of range"))


# --- images that do not fully decode (issue 10, item 8) ------------------------------------


def _truncated_jpeg(path: Path) -> Path:
    """A real JPEG cut short: Image.verify() accepts it, decoding it fails."""
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    with Image.open(path) as image:
        image.verify()  # the premise: a structural check does not see it
    with pytest.raises(OSError), Image.open(path) as image:
        image.load()
    return path


@pytest.mark.slow
def test_a_truncated_jpeg_is_named_and_skipped_on_every_path(train_config, tmp_path):
    root = make_tree(tmp_path / "images")
    path = _truncated_jpeg(root / "train" / "dog" / "cut.jpg")
    error = failed(folder_config(train_config, root), tmp_path / "job")
    assert error.startswith(f"unreadable image {path} (it does not fully decode)")
    assert "data.on_bad_image=skip" in error
    for name, extra in (("features", ["freeze=base"]),
                        ("images", ["freeze=none"]),
                        ("workers", ["freeze=none", "data.num_workers=2"])):
        cfg = folder_config(train_config, root, "data.on_bad_image=skip",
                            f"paths.cache_dir={tmp_path / 'cache'}", *extra)
        record = run_job(cfg, tmp_path / name)
        assert record["status"] == "completed", (name, record["error"])
        assert record["data"]["bad_images_skipped"] == 1
        assert record["data"]["train"] + record["data"]["val"] + record["data"]["test"] == 12
        assert record["cached_features"] is (name == "features")


# --- checkpoints: what is validated is what is loaded (issue 10, item 4) -------------------


def _weights(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return dict(timm.create_model("test_resnet", num_classes=3).state_dict())


def _assert_backbone_is(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    loaded = model.state_dict()
    keys = [k for k in expected if not k.startswith("fc.")]
    assert keys and all(torch.equal(loaded[k], expected[k]) for k in keys)


def test_a_training_checkpoint_loads_its_non_ema_weights(tmp_path):
    from paramcorr.backbones import create_backbone

    plain, ema = _weights(1), _weights(2)
    partial_ema = {k: v for i, (k, v) in enumerate(ema.items()) if i % 2}
    path = tmp_path / "train.pth"
    torch.save({"epoch": 3, "state_dict": plain, "state_dict_ema": partial_ema,
                "optimizer": {"lr": 0.1}}, path)
    on_disk = torch.load(path, weights_only=True)["state_dict"]  # independent read
    _assert_backbone_is(create_backbone("test_resnet", str(path), 5), on_disk)
    # Asking for the partial EMA dict is refused by a strict load, not loaded half-random.
    with pytest.raises(UserError, match=rf"weights file {path} does not fit test_resnet: "
                                        r"[1-9]\d* missing"):
        create_backbone("test_resnet", str(path), 5, weights_key="state_dict_ema")
    with pytest.raises(UserError, match=r"model.weights_key=ema is not a state dict in .* "
                                        r"\(it holds state_dict, state_dict_ema\)"):
        create_backbone("test_resnet", str(path), 5, weights_key="ema")
    full = tmp_path / "full.pth"
    torch.save({"state_dict": plain, "state_dict_ema": ema}, full)
    _assert_backbone_is(create_backbone("test_resnet", str(full), 5,
                                        weights_key="state_dict_ema"), ema)


def test_a_state_dict_without_num_batches_tracked_loads(tmp_path):
    from safetensors.torch import load_file, save_file

    from paramcorr.backbones import create_backbone

    state = {k: v for k, v in _weights(3).items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.safetensors"
    save_file(state, str(path))
    model = create_backbone("test_resnet", str(path), 5)
    _assert_backbone_is(model, load_file(str(path)))
    assert any(k.endswith("num_batches_tracked") for k in model.state_dict())
    # A real parameter missing is still refused.
    del state["layer1.0.conv1.weight"]
    save_file(state, str(path))
    with pytest.raises(UserError, match=r"1 missing, 0 unexpected, 0 shape-mismatched keys "
                                        r"\(e.g. layer1.0.conv1.weight\)"):
        create_backbone("test_resnet", str(path), 5)


def test_weights_key_on_a_plain_state_dict_is_refused(tmp_path):
    from paramcorr.backbones import create_backbone

    path = tmp_path / "plain.pth"
    torch.save(_weights(4), path)
    with pytest.raises(UserError, match=r"model.weights_key=state_dict_ema, but .* is one plain "
                                        r"state dict; set model.weights_key=null"):
        create_backbone("test_resnet", str(path), 5, weights_key="state_dict_ema")

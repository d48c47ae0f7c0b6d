"""A record's identity: one list of result-neutral keys, the inputs' content, sweep dirs per
data, set-asides that never overwrite, and one runner per job."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from helpers import CONF, TINY, folder_config, make_tree
from paramcorr.atomic import job_lock, remove_stale_temps
from paramcorr.backbones import save_checkpoint
from paramcorr.entry import register_resolvers
from paramcorr.job import run_job
from paramcorr.record import (
    RESULT_NEUTRAL_KEYS,
    NotRun,
    RunRecord,
    config_hash,
    find_record,
    set_aside,
    write_record,
)


def hydra_config(*overrides: str):
    """The full config (hydra node included) a multirun job of these overrides gets."""
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("train", [*TINY, *overrides], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


# --- one list of result-neutral keys -------------------------------------------------------


def test_the_job_dir_name_excludes_exactly_the_hashs_neutral_keys():
    cfg = hydra_config()
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == list(RESULT_NEUTRAL_KEYS)
    # Each neutral key a user can set: out of the dir name, and the hash does not move.
    neutral = ["name=other", "strict=true", "optimized_metric=test_acc",
               "paths.output_root=/elsewhere", "paths.cache_dir=/c", "logger=tensorboard",
               "data.num_workers=3", "freeze.cache_features=false",
               "freeze.out_of_range=skip", "trainer.enable_progress_bar=true",
               "++trainer.enable_model_summary=false", "++trainer.log_every_n_steps=7"]
    base = _job_identity(hydra_config())
    for override in neutral:
        dirname, chash = _job_identity(hydra_config(override, "seed=3"))
        assert dirname == "model=test_resnet,seed=3", override  # TINY's model, no more
        assert chash == _job_identity(hydra_config("seed=3"))[1], override
    # A key that changes the result changes both.
    dirname, chash = _job_identity(hydra_config("data.split_seed=1"))
    assert dirname == "data.split_seed=1,model=test_resnet" and chash != base[1]
    # The lr axis names the dir; lr and optimizer.lr are one value in the hash.
    lr_dir, lr_hash = _job_identity(hydra_config("lr=1e-2"))
    opt_dir, opt_hash = _job_identity(hydra_config("optimizer.lr=1e-2"))
    assert lr_dir == "lr=1e-2,model=test_resnet" and lr_hash == opt_hash != base[1]


def _job_identity(cfg) -> tuple[str, str]:
    from omegaconf import open_dict

    dirname = cfg.hydra.job.override_dirname
    with open_dict(cfg):
        del cfg["hydra"]
    return dirname, config_hash(cfg)


# --- the inputs' content is part of the identity -------------------------------------------


@pytest.mark.slow
def test_a_changed_weights_file_or_dataset_runs_the_job_again(train_config, tmp_path):
    weights = tmp_path / "w.safetensors"
    save_checkpoint(timm.create_model("test_resnet", num_classes=3), weights, metadata={})
    root = make_tree(tmp_path / "images")
    cfg = folder_config(train_config, root, f"model.weights={weights}")
    out = tmp_path / "job"
    first = run_job(cfg, out)
    assert first.status == "completed", first.error
    inputs = first.extra["inputs"]
    assert inputs["data_root"] == str(root.resolve())
    assert inputs["weights_digest"] == "sha256:" + _sha256(weights)
    assert run_job(cfg, out).kind == "finished"  # nothing changed: skipped

    # The weights file is overwritten (e.g. pretrained again): another job. (Seeded apart:
    # jobs leave the global random state where their seed puts it, loaders do not move it.)
    torch.manual_seed(1)
    save_checkpoint(timm.create_model("test_resnet", num_classes=3), weights, metadata={})
    second = run_job(cfg, out)
    assert isinstance(second, RunRecord) and second.status == "completed"
    assert second.extra["inputs"]["weights_digest"] == "sha256:" + _sha256(weights)
    assert second.extra["inputs"]["weights_digest"] != inputs["weights_digest"]
    assert second.config_hash != first.config_hash
    assert run_job(cfg, out).kind == "finished"

    # An image is added to data.root: another job, and the record says what it read.
    (root / "train" / "cat" / "extra.png").write_bytes((root / "train/cat/0.png").read_bytes())
    third = run_job(cfg, out)
    assert isinstance(third, RunRecord) and third.status == "completed"
    assert third.extra["inputs"]["data_fingerprint"] != second.extra["inputs"]["data_fingerprint"]
    assert third.extra["data"]["train"] == second.extra["data"]["train"] + 1
    # Every earlier record is kept, each with the inputs it ran on.
    old = sorted(out.glob("result.completed-*.json.old"))
    assert len(old) == 2
    kept = {find_record(p).extra["inputs"]["weights_digest"] for p in old}
    assert kept == {inputs["weights_digest"], second.extra["inputs"]["weights_digest"]}


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_touched_file_in_the_generalization_root_changes_the_identity(train_config, tmp_path):
    from paramcorr.inputs import data_fingerprint

    root = make_tree(tmp_path / "images")
    gen = make_tree(tmp_path / "shifted", splits=("gen",)) / "gen"
    cfg = folder_config(train_config, root, f"data.generalization_root={gen}")
    before = data_fingerprint(cfg.data)
    path = gen / "dog" / "0.png"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert data_fingerprint(cfg.data) != before
    # Moving the whole tree keeps its identity: what is in it, not where it is.
    alone = data_fingerprint(folder_config(train_config, root).data)
    moved = tmp_path / "elsewhere"
    os.rename(root, moved)
    assert data_fingerprint(folder_config(train_config, moved).data) == alone


# --- sweeps on different data ----------------------------------------------------------------


def test_sweeps_on_different_data_roots_get_different_dirs(tmp_path):
    a, b = tmp_path / "a" / "images", tmp_path / "b" / "images"
    dirs = {}
    for name, root in (("a", a), ("a2", a), ("b", b)):
        cfg = hydra_config("data=imagefolder", f"data.root={root}", "name=paper")
        dirs[name] = cfg.hydra.sweep.dir
    assert dirs["a"] == dirs["a2"]  # the same command resumes the same sweep
    assert dirs["a"] != dirs["b"]
    assert dirs["a"].startswith("outputs/multirun/paper/images-")
    gen = hydra_config("data=imagefolder", f"data.root={a}", "name=paper",
                       f"data.generalization_root={tmp_path / 'g'}").hydra.sweep.dir
    assert gen != dirs["a"]
    assert hydra_config("name=demo").hydra.sweep.dir == "outputs/multirun/demo"  # digits


# --- set aside, never over an earlier set-aside ----------------------------------------------


def test_set_aside_never_overwrites_an_earlier_one(tmp_path):
    path = tmp_path / "result.json"
    kept = []
    for i in range(3):  # the same status and hash three times
        record = RunRecord(status="failed", run={"model": f"m{i}"}, params=None, metrics={},
                           timing={}, config_hash="h", error=f"error {i}")
        write_record(path, record)
        kept.append(set_aside(path, find_record(path)))
    assert len(set(kept)) == 3 and not path.exists()
    assert sorted(find_record(p).error for p in kept) == ["error 0", "error 1", "error 2"]
    path.write_text("{not json")
    unreadable = set_aside(path, None)
    assert unreadable.name == "result.unreadable-unknown.json.old"
    assert unreadable.read_text() == "{not json"


# --- one job, one runner ---------------------------------------------------------------------


def test_a_job_another_process_is_running_is_skipped_not_run(train_config, tmp_path):
    cfg = train_config()
    out = tmp_path / "job"
    out.mkdir()
    with job_lock(out):  # stands for another launch running this job
        busy = run_job(cfg, out)
    assert isinstance(busy, NotRun) and busy.kind == "busy"
    assert f"pid {os.getpid()}" in busy.reason
    assert not (out / "result.json").exists()
    assert run_job(cfg, out).status == "completed"  # the lock is free again


def test_stale_temps_of_dead_writers_go_and_a_live_writers_stay(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        live_tmp = tmp_path / f".result.json.{sleeper.pid}-abc123.tmp"
        dead_tmp = tmp_path / f".result.json.{dead.pid}-def456.tmp"
        legacy = tmp_path / ".result.json.k1ll3d.tmp"
        other = tmp_path / ".hidden"
        for path in (live_tmp, dead_tmp, legacy, other):
            path.write_text("x")
        assert remove_stale_temps(tmp_path) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live_tmp.name, other.name])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_atomic_temp_names_carry_the_writers_pid(tmp_path, monkeypatch):
    from paramcorr import atomic

    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    write_record(tmp_path / "result.json", {"schema": 1})
    assert seen and seen[0].startswith(f".result.json.{os.getpid()}-")
    assert seen[0].endswith(".tmp")


@pytest.mark.slow
def test_two_launches_racing_on_one_sweep_run_each_job_once(tmp_path):
    from helpers import ROOT

    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "experiment=smoke"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = []
    for log in logs:
        with open(log, "w") as handle:
            procs.append(subprocess.Popen(command, cwd=tmp_path, stdout=handle,
                                          stderr=subprocess.STDOUT, env=env))
        time.sleep(0.5)
    for proc in procs:
        assert proc.wait(timeout=600) == 0
    output = "".join(log.read_text() for log in logs)
    assert "Traceback" not in output
    sweep = tmp_path / "outputs" / "multirun" / "smoke"
    records = [find_record(p) for p in sweep.rglob("result.json")]
    # Recount per configuration: exactly one record each, all completed, none set aside.
    per_config: dict[tuple, int] = {}
    for record in records:
        assert record is not None and record.status == "completed", record
        key = (record.run["model"], record.run["freeze"], record.run["optimizer"])
        per_config[key] = per_config.get(key, 0) + 1
    assert len(per_config) == 8 and set(per_config.values()) == {1}
    assert not list(sweep.rglob("*.json.old")) and not list(sweep.rglob("*.tmp"))
    # Each job ran in one launch only: the other skipped it, finished or running.
    ran = output.count("| completed")
    skipped = output.count("skip (already completed)") + output.count(
        "skip (running in another process)")
    assert ran == 8 and skipped == 8, output[-3000:]


# --- re-running a finished sweep with a result-neutral key changed skips every job ----------

# A value other than the default for each result-neutral key a user can set. ``experiment``
# is a preset's name (its values land in other keys); ``logger.tracking_uri`` exists only
# under logger=mlflow, whose choice is covered by ``logger``.
NEUTRAL_OVERRIDES = {
    "name": "name=other", "strict": "strict=true", "optimized_metric": "optimized_metric=test_acc",
    "paths.output_root": "paths.output_root=/elsewhere",
    "paths.cache_dir": "paths.cache_dir=/elsewhere/cache",
    "paths.pretrained_dir": "paths.pretrained_dir=/elsewhere/pretrained",
    "logger": "logger=csv", "data.root": "data.root=/elsewhere/images",
    "data.generalization_root": "data.generalization_root=/elsewhere/shifted",
    "data.num_workers": "data.num_workers=0", "data.cache_inputs": "data.cache_inputs=false",
    "data.cache_max_gb": "data.cache_max_gb=1",
    "freeze.cache_features": "freeze.cache_features=false",
    "freeze.out_of_range": "freeze.out_of_range=skip",
    "trainer.enable_progress_bar": "trainer.enable_progress_bar=true",
    "trainer.enable_model_summary": "++trainer.enable_model_summary=false",
    "trainer.log_every_n_steps": "++trainer.log_every_n_steps=7",
}


def test_a_finished_digits_job_rerun_with_the_loader_keys_changed_is_skipped(train_config,
                                                                            tmp_path):
    """Issue 18: the digits fingerprint hashed the whole data node, num_workers included."""
    out = tmp_path / "job"
    assert run_job(train_config(), out).status == "completed"
    again = run_job(train_config("data.num_workers=0", "data.cache_inputs=false",
                                 "data.cache_max_gb=1"), out)
    assert isinstance(again, NotRun) and again.kind == "finished", again


@pytest.mark.slow  # 17 keys x 2 jobs, each composed as Hydra composes it
def test_a_finished_digits_sweep_rerun_with_any_neutral_key_changed_skips_every_job(
        train_config, tmp_path):
    assert set(NEUTRAL_OVERRIDES) == set(RESULT_NEUTRAL_KEYS) - {"experiment",
                                                                 "logger.tracking_uri"}
    jobs = {f"freeze={f}": tmp_path / "sweep" / f"freeze={f}" for f in ("base", "none")}
    for override, out in jobs.items():  # the demo's data: digits
        assert run_job(train_config(override), out).status == "completed"
    for key, neutral in NEUTRAL_OVERRIDES.items():
        for override, out in jobs.items():
            # The job's own path: run_job fingerprints the inputs and hashes, then skips.
            again = run_job(train_config(override, neutral), out)
            assert isinstance(again, NotRun) and again.kind == "finished", (key, again)
    assert not list((tmp_path / "sweep").rglob("*.json.old"))


@pytest.mark.slow
def test_relaunching_the_demo_sweep_with_data_num_workers_0_skips_it(tmp_path):
    from helpers import run_script

    sweep = ["-m", "experiment=smoke", "model=test_resnet", "optimizer=adam"]  # 2 jobs
    first = run_script("train.py", *sweep, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_script("train.py", *sweep, "data.num_workers=0", "data.cache_inputs=false",
                       "data.cache_max_gb=1", "freeze.cache_features=false", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    output = again.stdout + again.stderr
    assert output.count("skip (already completed)") == 2, output[-3000:]
    assert "| completed" not in output

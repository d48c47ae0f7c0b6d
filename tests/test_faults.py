"""Faults: divergence, kill -9, out of memory, many jobs in one process, crashes mid-write,
and files that would run code. Each test shows that nothing is lost."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import open_dict

from helpers import ROOT, TWO_CLASSES, assert_schema_valid, run_script
from paramcorr import record as record_module
from paramcorr.backbones import save_checkpoint
from paramcorr.job import run_job
from paramcorr.record import NotRun, RunRecord, find_record, write_record

DIVERGE = ("freeze=none", "optimizer=sgd", "optimizer.lr=1e6")


def records(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.rglob("result.json")}


# --- divergence ---------------------------------------------------------------------------


@pytest.mark.slow
def test_non_finite_loss_gives_a_diverged_record_that_is_kept(train_config, tmp_path):
    cfg = train_config(*DIVERGE)
    out = tmp_path / "job"
    record = run_job(cfg, out)
    assert record["status"] == "diverged" and record["error"] is None
    assert_schema_valid(record)
    assert record["metrics"]["train_loss"] is None  # NaN is stored as null
    assert 0.0 <= record["metrics"]["test_acc"] <= 1.0  # metrics so far are kept
    assert json.loads((out / "result.json").read_text())["status"] == "diverged"
    # A diverged run is an outcome, not an error: re-running the sweep does not repeat it.
    again = run_job(cfg, out)
    assert isinstance(again, NotRun) and again.kind == "finished"


def test_divergence_is_read_on_the_host_only_every_n_steps_and_stops_training(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from paramcorr import classifier
    from paramcorr.classifier import DIVERGENCE_CHECK_EVERY, ClassifierModule

    torch.manual_seed(0)
    x, y = torch.randn(400, 6), torch.randint(0, 3, (400,))
    first_bad_step = 5
    x[4 * (first_bad_step - 1)] = float("nan")  # batch 5 (of 4 samples, in order) is NaN
    head = torch.nn.Linear(6, 3)
    module = ClassifierModule(head, lambda p: torch.optim.SGD(p, lr=0.1), 3, hold_frozen=False)
    reads, snapshots = [], {}
    real_read = ClassifierModule._diverged_now

    def counted(self):
        reads.append(self.trainer.global_step)
        return real_read(self)

    class Snapshot(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            snapshots[trainer.global_step] = [p.detach().clone() for p in head.parameters()]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ClassifierModule, "_diverged_now", counted)
        trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False,
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path,
                            callbacks=[Snapshot()])
        trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=4))
    assert module.diverged
    # Stopped within N steps of the first non-finite loss, not at once (no sync per step).
    assert first_bad_step < trainer.global_step <= first_bad_step + DIVERGENCE_CHECK_EVERY
    assert len(reads) <= trainer.global_step // DIVERGENCE_CHECK_EVERY + 1
    # The non-finite step and every later one were skipped on the device: the weights are
    # those after the last finite step, finite, untouched since.
    for before, after in zip(snapshots[first_bad_step - 1], head.parameters(), strict=True):
        assert torch.isfinite(after).all() and torch.equal(before, after.detach())
    assert classifier.DIVERGENCE_CHECK_EVERY == DIVERGENCE_CHECK_EVERY


def test_a_diverging_head_trained_an_epoch_per_step_stops_within_n_steps(tmp_path):
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from paramcorr.classifier import DIVERGENCE_CHECK_EVERY, ClassifierModule, epoch_loader

    torch.manual_seed(0)
    x, y = torch.randn(400, 6), torch.randint(0, 3, (400,))
    x[16] = float("inf")  # batch 5 of 4 samples, in order
    head = torch.nn.Linear(6, 3)
    start = [p.detach().clone() for p in head.parameters()]
    trainer = L.Trainer(accelerator="cpu", max_epochs=3, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    epochs = epoch_loader(DataLoader(TensorDataset(x, y), batch_size=4), trainer)
    assert epochs is not None
    module = ClassifierModule(head, lambda p: torch.optim.SGD(p, lr=0.1), 3, hold_frozen=False,
                              epoch_steps=True)
    trainer.fit(module, epochs)
    assert module.diverged
    assert 5 <= trainer.global_step <= 5 + DIVERGENCE_CHECK_EVERY  # of 100 steps per epoch
    for before, after in zip(start, head.parameters(), strict=True):
        assert torch.isfinite(after).all() and not torch.equal(before, after.detach())


@pytest.mark.slow
def test_diverged_jobs_do_not_stop_the_sweep_and_are_analysed(tmp_path):
    from paramcorr.analysis import run_analysis

    done = run_script("train.py", "-m", "experiment=smoke", "name=div",
                      "model=test_resnet,test_efficientnet", "freeze=none", "optimizer=sgd",
                      "optimizer.lr=1e-2,1e6", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = tmp_path / "outputs" / "multirun" / "div"
    found = records(sweep)
    assert len(found) == 4
    by_status = sorted((r["run"]["lr"], r["status"]) for r in found.values())
    assert by_status == [(1e-2, "completed")] * 2 + [(1e6, "diverged")] * 2

    result = run_analysis([sweep], tmp_path / "analysis", n_boot=0)
    assert (result.n_completed, result.n_diverged, result.n_used) == (2, 2, 4)
    import pandas as pd

    runs = pd.read_csv(tmp_path / "analysis" / "runs.csv")
    assert sorted(runs["status"]) == ["completed"] * 2 + ["diverged"] * 2
    corr = pd.read_csv(tmp_path / "analysis" / "correlations.csv")
    all_scope = corr[(corr["scope"] == "all") & (corr["method"] == "pearson")
                     & (corr["unit"] == "run")].set_index("y")
    assert all_scope.loc["test_acc", "n"] == 4  # diverged runs are outcomes
    assert all_scope.loc["train_loss", "n"] == 2  # ...where their metric is a number


# --- kill -9 and resume -------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_sweep_then_rerun_finishes_exactly_once(tmp_path):
    sweep = tmp_path / "outputs" / "multirun" / "smoke"
    command = [sys.executable, str(ROOT / "scripts" / "train.py"), "-m", "experiment=smoke"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            # At least two jobs done and the next one started (its dir has .hydra/, no record).
            while len(list(sweep.rglob("result.json"))) < 2 or not _running_job(sweep):
                assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "sweep too slow to reach 2 records"
                time.sleep(0.05)
            time.sleep(0.1)  # into the job (a smoke job takes about a second)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    before = {name: r["config_hash"] for name, r in records(sweep).items()}
    assert 2 <= len(before) < 8
    interrupted = _running_job(sweep)
    assert len(interrupted) == 1  # the job that was running when the kill came
    # What a kill during an atomic write would leave behind: the job's own temp file.
    (interrupted[0] / ".result.json.k1ll3d.tmp").write_text('{"schema": 1, "sta')

    again = run_script("train.py", "-m", "experiment=smoke", cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    output = again.stdout + again.stderr
    assert output.count("skip (already completed)") == len(before)
    after = records(sweep)
    assert len(after) == 8
    for name, record in after.items():
        assert record["status"] == "completed", (name, record["error"])
        assert_schema_valid(record)
        if name in before:  # completed jobs were skipped, not run again
            assert record["config_hash"] == before[name] and "skipped" not in record
    assert len({r["config_hash"] for r in after.values()}) == 8  # one record per config
    assert sorted(p.name for p in sweep.rglob("result*")) == ["result.json"] * 8
    assert not list(sweep.rglob("*.tmp"))
    assert after[interrupted[0].name]["status"] == "completed"


def _running_job(sweep: Path) -> list[Path]:
    """Job dirs Hydra has set up (``.hydra/``) that hold no record yet."""
    return [p.parent for p in sweep.glob("*/.hydra") if not (p.parent / "result.json").exists()]


def test_a_job_removes_temp_files_a_killed_attempt_left(train_config, tmp_path):
    out = tmp_path / "job"
    out.mkdir()
    (out / ".result.json.abc123.tmp").write_text('{"schema": 1, "st')
    (out / ".model.xyz.tmp").write_bytes(b"\0" * 10)
    record = run_job(train_config(), out)
    assert record["status"] == "completed"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


# --- out of memory -------------------------------------------------------------------------


@pytest.mark.slow
def test_out_of_memory_fails_with_a_batch_size_hint_and_the_next_job_runs(
        train_config, tmp_path, monkeypatch):
    from paramcorr.classifier import ClassifierModule

    def oom(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(ClassifierModule, "training_step", oom)
        record = run_job(train_config("freeze=none", "data.batch_size=32"), tmp_path / "a")
    assert record["status"] == "failed"
    assert record["error"] == ("out of memory at data.batch_size=32; lower data.batch_size "
                               "(or data.image_size)")
    assert record["params"]["trainable"] > 0  # what was established before is kept
    assert find_record(tmp_path / "a" / "result.json").status == "failed"
    # The next job of the sweep, same process: it runs normally.
    after = run_job(train_config("freeze=none"), tmp_path / "b")
    assert after["status"] == "completed", after["error"]


@pytest.mark.slow
def test_many_jobs_in_one_process_do_not_grow_memory(tmp_path):
    """72 jobs in one process: RSS after the last within 20% of RSS after the sixth."""
    script = tmp_path / "many.py"
    script.write_text(textwrap.dedent(f"""
        import gc, itertools, json, sys
        import psutil, torch
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from helpers import compose_config
        from paramcorr.config import register_schemas
        from paramcorr.job import run_job
        torch.set_num_threads(1)
        register_schemas()
        grid = list(itertools.product(["test_resnet", "test_efficientnet"], ["base", "none"],
                                      ["adam", "sgd"], ["1e-2", "1e-3", "1e-4"]))
        out, rss, statuses = {str(tmp_path)!r}, {{}}, []
        for i in range(72):
            model, freeze, opt, lr = grid[i % len(grid)]
            cfg = compose_config("train", ["experiment=smoke", f"model={{model}}",
                                 f"freeze={{freeze}}", f"optimizer={{opt}}", f"lr={{lr}}",
                                 f"seed={{i // len(grid)}}", "trainer.limit_train_batches=1",
                                 "trainer.limit_val_batches=1",
                                 f"paths.cache_dir={{out}}/cache"], f"{{out}}/jobs/{{i}}")
            statuses.append(run_job(cfg, f"{{out}}/jobs/{{i}}")["status"])
            if i + 1 in (6, 72):
                gc.collect()
                rss[i + 1] = psutil.Process().memory_info().rss
        print(json.dumps({{"rss": rss, "statuses": statuses}}))
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["statuses"] == ["completed"] * 72
    rss6, rss72 = result["rss"]["6"], result["rss"]["72"]
    print(f"RSS after job 6: {rss6 / 2**20:.0f} MiB, after job 72: {rss72 / 2**20:.0f} MiB")
    assert rss72 <= 1.2 * rss6, f"RSS grew from {rss6 / 2**20:.0f} MiB to {rss72 / 2**20:.0f} MiB"


# --- crash while writing a record ------------------------------------------------------------


OLD = RunRecord(status="completed", run={"model": "m"}, params={"total": 2, "trainable": 1,
                                                                "frozen": 1},
                metrics={}, timing={}, config_hash="old")
NEW = RunRecord(status="completed", run={"model": "m"}, params={"total": 2, "trainable": 1,
                                                                "frozen": 1},
                metrics={"x": 1.0}, timing={}, config_hash="new")


def _crash_in_dump(obj, handle, **kwargs):
    handle.write('{"schema": 1, "status": "compl')  # half a record, then the crash
    handle.flush()
    raise OSError(28, "No space left on device")


def _crash_in_replace(src, dst):
    raise OSError(5, "Input/output error")


@pytest.mark.parametrize("crash", [("json", "dump", _crash_in_dump),
                                   ("os", "replace", _crash_in_replace)],
                         ids=["mid-dump", "at-rename"])
@pytest.mark.parametrize("had_old", [True, False], ids=["old-record", "no-record"])
def test_crash_while_writing_leaves_old_record_or_none(tmp_path, monkeypatch, crash, had_old):
    path = tmp_path / "result.json"
    if had_old:
        write_record(path, OLD)
    module, name, fault = crash
    monkeypatch.setattr(getattr(record_module, module), name, fault)
    with pytest.raises(OSError):
        write_record(path, NEW)
    monkeypatch.undo()
    assert find_record(path) == (OLD if had_old else None)
    if not had_old:
        assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["result.json"] if had_old else [])
    write_record(path, NEW)  # and the next write works
    assert find_record(path) == NEW


# --- files that could run code ----------------------------------------------------------------


class _RunsCode:
    """Unpickling this would create ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    state = dict(timm.create_model("test_resnet", num_classes=5).state_dict())
    state["payload"] = _RunsCode(marker)
    torch.save(state, path)
    return path


def test_a_checkpoint_that_would_run_code_is_refused(train_config, tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious_checkpoint(tmp_path / "weights.pth", marker)
    record = run_job(train_config(f"model.weights={path}"), tmp_path / "job")
    assert record["status"] == "failed"
    assert record["error"].startswith(f"refusing to load {path}: it is a pickle that needs "
                                      "code to run")
    assert "(it would call io.open)" in record["error"] and "safetensors" in record["error"]
    assert not marker.exists()


@pytest.mark.slow
def test_plain_state_dict_and_safetensors_checkpoints_load(train_config, tmp_path):
    model = timm.create_model("test_resnet", num_classes=3)
    torch.save(model.state_dict(), tmp_path / "plain.pth")
    save_checkpoint(model, tmp_path / "safe.safetensors", metadata={})
    for name in ("plain.pth", "safe.safetensors"):
        record = run_job(train_config(f"model.weights={tmp_path / name}", TWO_CLASSES),
                         tmp_path / name[:4])
        assert record["status"] == "completed", record["error"]


@pytest.fixture(scope="module")
def filled_feature_cache(tmp_path_factory) -> tuple[Path, dict, dict]:
    """One filled cache entry (read back once as a hit) and the same job run without the
    cache, shared by the damage cases below; each case damages its own copy of the cache."""
    from hydra.core.global_hydra import GlobalHydra

    from helpers import TINY, compose_config

    base = tmp_path_factory.mktemp("filled")
    cache = base / "cache"

    def config(*extra: str):
        cfg = compose_config("train", [*TINY, "freeze=base", f"paths.cache_dir={cache}", *extra],
                             base / "cfg")
        GlobalHydra.instance().clear()
        return cfg

    first = run_job(config(), base / "first")
    assert first["feature_cache"]["hit"] is False
    assert run_job(config("lr=1e-2"), base / "hit")["feature_cache"]["hit"]
    # The same job as the recomputing one below, without the cache: the metrics to match.
    plain = run_job(config("lr=1e-4", "freeze.cache_features=false"), base / "plain")
    assert plain["cached_features"] is False
    return cache, first, plain


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickle"])
def test_a_damaged_feature_cache_entry_is_recomputed(train_config, tmp_path, damage,
                                                      filled_feature_cache):
    import shutil

    filled, first, plain = filled_feature_cache
    cache = tmp_path / "cache"
    shutil.copytree(filled, cache)  # a fresh path: not among this process's verified files
    common = ("freeze=base", f"paths.cache_dir={cache}")
    # An entry is a directory of .npy arrays and a manifest (paramcorr.cache_store).
    entry = cache / "features" / first["feature_cache"]["key"] / "train.features.npy"
    good = entry.read_bytes()

    marker = tmp_path / "pwned"
    if damage == "truncated":
        entry.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x00" * 64 + good[64:])
    else:  # a pickle under the array's name: numpy is told never to unpickle
        torch.save({"train.features": _RunsCode(marker)}, entry)
    again = run_job(train_config(*common, "lr=1e-4"), tmp_path / "again")
    assert again["status"] == "completed", again["error"]
    assert again["feature_cache"] == {"key": first["feature_cache"]["key"], "hit": False}
    assert not marker.exists()
    assert entry.read_bytes() == good  # the entry is whole again, the same features
    manifest = json.loads((entry.parent / "manifest.json").read_text())
    assert {"train.features", "val.features", "test.features"} <= set(manifest["arrays"])
    # The recomputed features train and evaluate as the images themselves do: the same job
    # without the cache gives the same metrics.
    for key in METRICS_SAME_FEATURES:
        assert again["metrics"][key] is not None
        assert math.isclose(again["metrics"][key], plain["metrics"][key], abs_tol=1e-4), key
    assert not list((cache / "features").glob("*.tmp")) and not list(
        (cache / "features").glob(".*.tmp"))


METRICS_SAME_FEATURES = ("train_acc", "test_acc", "gen_acc")


@pytest.mark.slow
def test_best_epoch_checkpoint_reads_back_without_unpickling_code(train_config, tmp_path):
    record = run_job(train_config("eval_weights=best", "freeze=none", "trainer.max_epochs=2"),
                     tmp_path / "job")
    assert record["status"] == "completed", record["error"]
    assert record["evaluated_epoch"] == "best"


def test_records_are_json_only(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("{'schema': 1}")  # a Python literal, not JSON: never eval'd
    assert find_record(path) is None


# --- the record says what happened ------------------------------------------------------------


@pytest.mark.slow
def test_an_early_stop_records_the_epochs_and_steps_actually_trained(train_config, tmp_path):
    # smoke: 2 training batches per epoch; 3 steps end in the middle of the second epoch.
    # Two digit classes: still 4 batches an epoch, less to evaluate.
    record = run_job(train_config("freeze=none", "trainer.max_epochs=5", "trainer.max_steps=3",
                                  TWO_CLASSES), tmp_path / "steps")
    assert record.status == "completed", record.error
    assert (record.run["epochs"], record.run["steps"]) == (1, 3)
    assert record.run["epochs_configured"] == 5
    full = run_job(train_config("freeze=none", "trainer.max_epochs=2", TWO_CLASSES),
                   tmp_path / "full")
    assert (full.run["epochs"], full.run["steps"], full.run["epochs_configured"]) == (2, 4, 2)


def test_best_weights_without_validation_are_refused_before_training(train_config, tmp_path):
    record = run_job(train_config("eval_weights=best", "trainer.limit_val_batches=0"),
                     tmp_path / "job")
    assert record.status == "failed"
    assert record.error == ("eval_weights=best needs validation, but "
                            "trainer.limit_val_batches=0 runs none; set eval_weights=last or "
                            "allow validation batches")
    assert record.params is None and record.run["epochs"] is None  # nothing trained
    # With validation, eval_weights=best runs and evaluates the best epoch:
    # test_best_epoch_checkpoint_reads_back_without_unpickling_code (a whole job: slow).


@pytest.mark.slow
def test_a_non_finite_generalization_metric_is_never_completed(train_config, tmp_path,
                                                               monkeypatch):
    from paramcorr import data

    real_shift = data._digits_shift

    def nan_shift(*args, **kwargs):  # what data.shift_noise_std=nan does to the gen split
        return real_shift(*args, **kwargs) * float("nan")

    monkeypatch.setattr(data, "_digits_shift", nan_shift)
    record = run_job(train_config("freeze=none", TWO_CLASSES), tmp_path / "job")
    assert record.status == "failed"
    assert record.error.startswith("non-finite gen_loss while the training split evaluates "
                                   "finite: the gen inputs or outputs are not numbers")
    assert record.metrics["gen_loss"] is None  # stored as null
    assert record.metrics["test_acc"] is not None  # what was measured is kept
    # The failed record is not a finished one: with the data fixed, the job runs again.
    monkeypatch.undo()
    again = run_job(train_config("freeze=none", TWO_CLASSES), tmp_path / "job")
    assert isinstance(again, RunRecord) and again.status == "completed", again.error


# --- output trouble is one line ------------------------------------------------------------


def test_an_unwritable_output_dir_is_one_line_naming_it(train_config, tmp_path):
    from paramcorr.atomic import OutputError

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = blocker / "job"
    with pytest.raises(OutputError) as err:
        run_job(train_config(), out)
    message = str(err.value)
    assert message.startswith(f"cannot write to output directory {out}: ")
    assert "\n" not in message and "paths.output_root" in message


@pytest.mark.slow
def test_a_full_disk_at_the_record_is_one_line_and_the_next_job_runs(train_config, tmp_path,
                                                                     monkeypatch):
    from paramcorr.atomic import OutputError

    with monkeypatch.context() as patch:
        patch.setattr(record_module.json, "dump", _crash_in_dump)  # ENOSPC mid-write
        with pytest.raises(OutputError) as err:
            run_job(train_config(), tmp_path / "full")
    assert str(err.value).startswith(
        f"cannot write to output directory {tmp_path / 'full'}: No space left on device")
    assert not (tmp_path / "full" / "result.json").exists()  # no half record
    assert not list((tmp_path / "full").glob(".*.tmp"))
    assert run_job(train_config(), tmp_path / "next").status == "completed"


def test_an_unwritable_error_log_keeps_the_first_error(train_config, tmp_path, monkeypatch):
    from paramcorr import job

    def crash(*args, **kwargs):
        raise RuntimeError("the first error")

    real_write_text = Path.write_text

    def no_log(self, *args, **kwargs):
        if self.name.startswith(".error.log."):  # error.log is written atomically, via a temp
            raise OSError(30, "Read-only file system")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(job, "_fit_and_evaluate", crash)
    monkeypatch.setattr(Path, "write_text", no_log)
    record = run_job(train_config(), tmp_path / "job")
    assert record.status == "failed"
    assert record.error == (f"RuntimeError: the first error (no traceback: could not write "
                            f"{tmp_path / 'job' / 'error.log'}: Read-only file system)")


@pytest.mark.slow
def test_cli_unwritable_output_root_is_one_line_without_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for args in (["experiment=smoke", "model=test_resnet"], ["-m", "experiment=smoke"]):
        done = run_script("train.py", *args, f"paths.output_root={blocker}/out", cwd=tmp_path,
                          timeout=300)
        assert done.returncode == 1
        assert "Traceback" not in done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            f"error: cannot write to output directory {blocker}/out/"), done.stderr


def test_the_sweeper_gets_the_optimized_metric_not_test_accuracy(train_config):
    from paramcorr.entry import train_task

    cfg = train_config()
    assert cfg.optimized_metric == "val_acc"
    value = train_task(cfg)
    record = find_record(Path(cfg.paths.output_root) / "result.json")
    assert value == record.metrics["val_acc"]
    with open_dict(cfg):
        cfg.optimized_metric = "gen_f1"
    assert train_task(cfg) == record.metrics["gen_f1"]  # the finished job, skipped


def test_output_trouble_in_a_sweep_is_logged_and_the_next_job_runs(train_config, tmp_path,
                                                                   monkeypatch, caplog):
    import logging

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    from paramcorr import job
    from paramcorr.atomic import OutputError
    from paramcorr.entry import train_task

    cfg = train_config()
    with read_write(HydraConfig.instance().cfg.hydra):  # this job is one of a multirun
        HydraConfig.instance().cfg.hydra.mode = RunMode.MULTIRUN

    def full(cfg, output_dir):
        raise OutputError(output_dir, OSError(28, "No space left on device"))

    caplog.set_level(logging.ERROR, logger="paramcorr")
    with monkeypatch.context() as patch:
        patch.setattr(job, "run_job", full)
        assert train_task(cfg) is None  # no SystemExit: the sweep goes on
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line == (f"error: cannot write to output directory {cfg.paths.output_root}: No "
                    "space left on device; free space or choose another with "
                    "paths.output_root=<dir>")
    assert train_task(cfg) == find_record(
        Path(cfg.paths.output_root) / "result.json").metrics["val_acc"]

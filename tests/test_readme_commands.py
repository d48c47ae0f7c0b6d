"""Acceptance: the commands README.md shows a user, run as shown, on small data.

The commands are read from README.md itself (its ``bash`` blocks), so the README and these
tests cannot drift apart: every command there is either run here or listed in ``NOT_RUN``
with the reason (a fast test checks both directions). A command is changed only where it
must be to run small and offline, by ``rewrite``: a tiny model (``model=test_resnet``), random
weights where the hub is unreachable, one short epoch, ``trainer=cpu`` for ``trainer=gpu``,
a generated image tree for ``data.root``, a smaller grid for the launchers that start a
process per job. Every sweep goes on to the analysis, as the README says. Three launchers:
Hydra's basic one, ``local_gpus`` (the GPU query answered by a fake ``nvidia-smi``) and
``submitit_local`` (what the Slurm preset does, run locally). One sweep is the combination
the issue found broken: image folders, loader worker processes, a parallel launcher and no
generalization folder.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from helpers import ROOT, make_tree, run_script
from paramcorr.analysis.claims import NO_GENERALIZATION

README = ROOT / "README.md"
SCRIPTS = ("train.py", "analyze.py", "pretrain.py")
# README commands these tests do not run, and why (each must still be in the README).
NOT_RUN = {
    "make demo": "set-up: creates .venv, then pretrain + the demo sweep (run below, small)",
    "make test": "set-up: creates .venv, then this test suite",
    "scripts/bench_frozen.py": "a benchmark (minutes of timing), not a user path",
    "scripts/bench_inputs.py": "a benchmark",
    "scripts/bench_step.py": "a benchmark",
    "scripts/bench_strategies.py": "a benchmark",
    "scripts/bench_analysis.py": "a benchmark",
    "scripts/bench_gpu.py": "a benchmark, on a GPU",
    "logger.tracking_uri=http://": "needs an MLflow server on the network",
    "experiment=demo seed=0,1,2": "the demo sweep (run below) with a seed axis; seeds through "
                                  "a launcher: test_launchers.py (seed=0,1)",
    "experiment=depth": "the depth preset: its sweep runs in test_depth.py",
    "logger=tensorboard": "a logger choice on the demo sweep (run below): test_loggers.py",
    "logger=mlflow": "a logger choice on the demo sweep (run below): test_loggers.py",
}
# Fast enough on two CPU cores: a tiny timm model, one short epoch, 32 px.
SMALL = {"model": "test_resnet", "trainer.max_epochs": "1", "trainer.limit_train_batches": "2",
         "trainer.limit_val_batches": "1"}
# Hydra's launcher overrides that only the Slurm launcher knows.
SLURM_ONLY = ("hydra.launcher.partition", "hydra.launcher.array_parallelism")


def readme_commands() -> list[str]:
    """Every command line of README.md's ``bash`` blocks (continuations joined, comments and
    comment-only lines dropped, ``a && b`` split)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                commands += [part.strip() for part in line.split("&&")]
    # One entry per command, however the interpreter is spelt (.venv/bin/python or python).
    unique = {re.sub(r"^\S*python\s+", "", c): None for c in commands}
    return list(unique)


def readme_command(*needles: str, without: tuple[str, ...] = ()) -> str:
    """The one README command holding every needle (and none of ``without``)."""
    hits = [c for c in readme_commands()
            if all(n in c for n in needles) and not any(w in c for w in without)]
    assert len(hits) == 1, f"README commands with {needles}: {hits}"
    return hits[0]


def rewrite(command: str, set_: dict[str, str] | None = None,
            drop: tuple[str, ...] = ()) -> tuple[str, list[str]]:
    """(script, args) of a README command, with ``set_`` keys replaced or added and ``drop``
    keys removed; everything else as the README has it."""
    tokens = shlex.split(command)
    at = next(i for i, t in enumerate(tokens) if t.startswith("scripts/")
              or "/scripts/" in t)
    script = Path(tokens[at]).name
    args = tokens[at + 1:]
    changes = dict(set_ or {})
    out = []
    for arg in args:
        key = arg.split("=", 1)[0] if "=" in arg else None
        if key in drop:
            continue
        if key in changes:
            out.append(f"{key}={changes.pop(key)}")
        else:
            out.append(arg)
    out += [f"{k}={v}" for k, v in changes.items()]
    return script, out


def run_ok(script: str, args: list[str], cwd: Path, **kwargs) -> str:
    done = run_script(script, *args, cwd=cwd, **kwargs)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{script} {' '.join(args)}\n{output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    return output


def records(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.rglob("result.json"))]


def sweep_dir(outputs: Path, name: str) -> Path:
    """The one sweep dir of preset ``name`` (image folders add a <root>-<hash> segment)."""
    found = {p.parent for p in (outputs / "multirun" / name).rglob(".sweep.json")}
    assert len(found) == 1, found
    return found.pop()


def image_root(tmp_path: Path) -> Path:
    """The user's images: train/ only (val and test are split off), three classes."""
    return make_tree(tmp_path / "flowers", classes=("daisy", "rose", "tulip"), n=10)


def fake_gpus(tmp_path: Path, count: int) -> dict[str, str]:
    """An environment whose ``nvidia-smi -L`` lists ``count`` GPUs (none exist here)."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + "".join(
        f"echo 'GPU {i}: Fake GPU (UUID: GPU-{i:08d})'\n" for i in range(count)))
    smi.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def check_analysis(out: Path, n_runs: int, generalization: bool) -> None:
    """The analysis of a finished sweep: its files, every run in runs.csv, the claims."""
    for name in ("report.md", "runs.csv", "correlations.csv", "claims.csv", "paper_table.csv"):
        assert (out / name).exists(), name
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == n_runs and (runs["status"] == "completed").all()
    claims = pd.read_csv(out / "claims.csv")
    assert set(claims["claim"]) == {"a", "b", "c"}
    gen_reasons = claims[claims["claim"].isin(["b", "c"])]["reason"]
    assert (gen_reasons == NO_GENERALIZATION).all() != generalization


def test_every_readme_command_is_run_here_or_listed_with_a_reason():
    commands = readme_commands()
    assert commands, "no bash blocks found in README.md"
    # The commands run below are found (exactly one each): the README still shows them.
    run = {readme_command(*needles, without=without) for needles, without in RUN}
    for command in commands:
        skipped = [k for k in NOT_RUN if k in command]
        assert command in run or skipped, f"README command neither run nor listed: {command}"
        assert any(f"scripts/{s}" in command for s in SCRIPTS) or skipped, command
    for key in NOT_RUN:
        assert any(key in c for c in commands), f"NOT_RUN entry no longer in README: {key}"


# The README commands run below, by what identifies each (needles, without).
RUN = [
    (("train.py", "model=resnet50", "model.weights=random"), ()),
    (("train.py", "freeze=partial", "freeze.stages=2"), ()),
    (("pretrain.py",), ("models=",)),
    (("pretrain.py", "models=[resnet50]"), ()),
    (("train.py", "-m experiment=demo"), ("seed=", "logger=", "hydra/launcher")),
    (("analyze.py", "outputs/multirun/demo"), ()),
    (("train.py", "experiment=paper", "data.root="), ("hydra/launcher",)),
    (("train.py", "hydra/launcher=local_gpus"), ()),
    (("train.py", "hydra/launcher=slurm"), ()),
]


@pytest.mark.slow
def test_readme_single_runs_and_pretraining(tmp_path):
    for needles in (RUN[0][0], RUN[1][0]):
        script, args = rewrite(readme_command(*needles),
                               {**SMALL, "model.weights": "random"})
        output = run_ok(script, args, tmp_path)
        assert "| completed" in output
    found = records(tmp_path / "outputs" / "runs")
    assert [r["status"] for r in found] == ["completed", "completed"]
    partial = next(r for r in found if r["run"]["freeze"] == "partial")
    assert partial["run"]["frozen_stages"] == 2 and partial["run"]["optimizer"] == "sgd"
    # The second pretraining command: its own out_dir, one model, all digits.
    script, args = rewrite(readme_command(*RUN[3][0]),
                           {"models": "[test_resnet]", "trainer.max_epochs": "1"})
    run_ok(script, args, tmp_path)
    assert (tmp_path / "outputs" / "pretrained" / "digits-all" /
            "test_resnet.safetensors").exists()


@pytest.mark.slow
def test_readme_demo_path_pretrain_sweep_analysis_basic_launcher(tmp_path):
    # make demo's two steps, then the README's analyze command, as a user runs them.
    script, args = rewrite(readme_command(*RUN[2][0], without=RUN[2][1]),
                           {"models": "[test_resnet]", "trainer.max_epochs": "1"})
    run_ok(script, args, tmp_path)
    weights = tmp_path / "outputs" / "pretrained" / "digits-0-4" / "test_resnet.safetensors"
    assert weights.exists()
    script, args = rewrite(readme_command(*RUN[4][0], without=RUN[4][1]),
                           {**SMALL, "optimizer": "adam"})
    output = run_ok(script, args, tmp_path)
    sweep = tmp_path / "outputs" / "multirun" / "demo"
    found = records(sweep)
    assert len(found) == 6 and all(r["status"] == "completed" for r in found)
    # The demo's own weights were used: the record names the file's digest.
    assert {r["inputs"]["weights_digest"] for r in found} == {
        found[0]["inputs"]["weights_digest"]} and found[0]["inputs"]["weights_digest"]
    assert "[6/6]" in output
    check_analysis(sweep / "analysis", 6, generalization=True)  # the sweep's own analysis
    script, args = rewrite(readme_command(*RUN[5][0]))
    run_ok(script, [*args, "--n-boot", "100"], tmp_path)
    check_analysis(tmp_path / "outputs" / "analysis" / "demo", 6, generalization=True)


def _paper_args(root: Path, **extra: str) -> dict[str, str]:
    """The paper command's rewrites: the user's images (no generalization folder), CPU."""
    return {**SMALL, "data.root": str(root), "trainer": "cpu", "model.weights": "random",
            "data.image_size": "32", "optimizer": "adam", **extra}


@pytest.mark.slow
def test_readme_paper_example_on_image_folder_basic_launcher_then_analysis(tmp_path):
    # The README's own paper example: an image folder without data.generalization_root.
    root = image_root(tmp_path)
    script, args = rewrite(readme_command(*RUN[6][0], without=RUN[6][1]),
                           _paper_args(root, lr="1e-3"))
    output = run_ok(script, args, tmp_path)
    sweep = sweep_dir(tmp_path / "outputs", "paper")
    found = records(sweep)
    assert len(found) == 2 and all(r["status"] == "completed" for r in found)
    assert all(r["metrics"]["gen_acc"] is None for r in found)
    assert "analysis failed" not in output
    check_analysis(sweep / "analysis", 2, generalization=False)
    run_ok("analyze.py", [str(sweep), "--out", str(tmp_path / "analysis"), "--n-boot", "50"],
           tmp_path)
    check_analysis(tmp_path / "analysis", 2, generalization=False)


@pytest.mark.slow
def test_readme_paper_on_image_folder_through_local_gpus_with_loader_workers(tmp_path):
    # The combination the issue found broken: image folders + loader worker processes + a
    # parallel launcher + no generalization folder. The README's paper command, launched as
    # its local_gpus command shows, on two (faked) GPUs.
    root = image_root(tmp_path)
    _, launcher_args = rewrite(readme_command(*RUN[7][0]), {"hydra.launcher.n_jobs": "2"})
    launcher_args = [a for a in launcher_args if a.startswith("hydra")]
    script, args = rewrite(readme_command(*RUN[6][0], without=RUN[6][1]),
                           _paper_args(root, lr="1e-2,1e-3", **{"data.num_workers": "2"}))
    output = run_ok(script, [*args, *launcher_args], tmp_path, env=fake_gpus(tmp_path, 2))
    assert "2 jobs at once on 2 of 2 GPU(s)" in output
    sweep = sweep_dir(tmp_path / "outputs", "paper")
    found = records(sweep)
    assert len(found) == 4, [r.get("error") for r in found]
    assert all(r["status"] == "completed" for r in found), [r["error"] for r in found]
    assert "[4/4]" in output
    logs = "".join(p.read_text() for p in sweep.rglob("train.log"))
    assert re.search(r"placement: slot [12]/2: GPU [01],", logs), logs[-2000:]
    check_analysis(sweep / "analysis", 4, generalization=False)


@pytest.mark.slow
def test_readme_slurm_command_through_submitit_local_then_analysis(tmp_path):
    # The Slurm command on this machine: submitit's local executor (one process per job,
    # as an array task), the Slurm-only keys dropped.
    root = image_root(tmp_path)
    script, args = rewrite(readme_command(*RUN[8][0]),
                           {**_paper_args(root, lr="1e-3"),
                            "hydra/launcher": "submitit_local"}, drop=SLURM_ONLY)
    output = run_ok(script, args, tmp_path, env=fake_gpus(tmp_path, 0))
    sweep = sweep_dir(tmp_path / "outputs", "paper")
    found = records(sweep)
    assert len(found) == 2 and all(r["status"] == "completed" for r in found)
    assert "[2/2]" in output
    check_analysis(sweep / "analysis", 2, generalization=False)

"""scripts/analyze.py on bad input: one line on stderr, exit code 2, and no wasted statistics."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import paramcorr.analysis as analysis
from analysis_fixtures import make_record, synthetic_records, write_record, write_sweep
from paramcorr.analysis import cli

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "analyze.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture
def sweep(tmp_path):
    write_sweep(tmp_path / "sweep", synthetic_records(12, p_failed=0, p_diverged=0))
    return tmp_path / "sweep"


@pytest.fixture
def no_statistics(monkeypatch):
    """Fails the test if the analysis reaches its statistics."""
    def refuse(*args, **kwargs):
        raise AssertionError("statistics ran although --out is unusable")
    monkeypatch.setattr(analysis, "correlation_table", refuse)


def _unusable_outs(tmp_path: Path) -> dict[str, Path]:
    somefile = tmp_path / "somefile"
    somefile.write_text("not a directory")
    outs = {"existing file": somefile, "below a file": somefile / "out" / "deeper"}
    if Path("/proc/self").is_dir():  # a place even root cannot create a directory
        outs["in /proc"] = Path("/proc/paramcorr-analysis-test")
    return outs


@pytest.mark.parametrize("kind", ["existing file", "below a file", "in /proc"])
def test_unusable_out_is_refused_before_statistics(tmp_path, sweep, no_statistics, capsys,
                                                   kind):
    outs = _unusable_outs(tmp_path)
    if kind not in outs:
        pytest.skip("no /proc here")
    out = outs[kind]

    code = cli.main([str(sweep), "--out", str(out), "--n-boot", "0", "-q"])

    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    line = captured.err.strip()
    assert "\n" not in line and line.startswith("error: --out ") and str(out) in line
    assert "give another --out" in line or "give a new or existing directory" in line
    assert (tmp_path / "somefile").read_text() == "not a directory"  # left as it was


def test_out_on_a_file_is_refused_before_reading_any_record(tmp_path, sweep, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("records were read although --out is a file")
    monkeypatch.setattr(analysis, "collect_runs", refuse)
    (tmp_path / "report.md").write_text("mine")
    assert cli.main([str(sweep), "--out", str(tmp_path / "report.md"), "-q"]) == 2


def test_cli_unusable_out_one_line_exit_2(tmp_path, sweep):
    (tmp_path / "report.csv").write_text("")
    line = _one_line_error(_cli(str(sweep), "--out", str(tmp_path / "report.csv" / "out")))
    assert line.startswith("error: --out ") and "is not a directory" in line
    assert not (sweep / "analysis").exists()


@pytest.mark.parametrize("name,words", [
    ("missing", "does not exist or is not a directory"),
    ("afile", "does not exist or is not a directory"),
    ("empty", "no readable result.json found"),
    ("junk", "all skipped: 1 invalid JSON; e.g. "),
])
def test_missing_sweep_or_no_records_one_line_exit_2(tmp_path, capsys, name, words):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    write_record(tmp_path / "junk" / "0", "{not json")

    assert cli.main([str(tmp_path / name), "-q"]) == 2

    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err, err
    assert not (tmp_path / name / "analysis").exists()  # nothing written on refusal


def test_cli_missing_sweep_one_line_exit_2(tmp_path):
    # named even when --out is unusable too; no traceback from the real entry point
    (tmp_path / "afile").write_text("x")
    line = _one_line_error(_cli(str(tmp_path / "missing"), "--out", str(tmp_path / "afile")))
    assert "sweep dir" in line and "missing" in line


def test_write_failure_after_statistics_is_one_line(sweep, monkeypatch, capsys):
    def full_disk(inputs, out_dir):
        raise OSError(28, "No space left on device", str(out_dir / "report.md"))
    monkeypatch.setattr(analysis, "write_report", full_disk)

    assert cli.main([str(sweep), "--n-boot", "0", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "No space left on device" in err and "report.md" in err


def test_foreign_records_do_not_stop_the_report(tmp_path, sweep, capsys):
    foreign = {"no model": make_record("vgg16", seed=50), "text count": make_record(seed=51),
               "huge count": make_record(seed=52), "metrics list": make_record(seed=53),
               "run text": make_record(seed=54), "odd status": make_record(seed=55)}
    del foreign["no model"]["run"]["model"]
    foreign["text count"]["params"]["trainable"] = "10245"
    foreign["huge count"]["params"]["total"] = 10**400
    foreign["metrics list"]["metrics"] = [0.1, 0.2]
    foreign["run text"]["run"] = "resnet50"
    foreign["odd status"]["status"] = "running"
    for i, record in enumerate(foreign.values()):
        write_record(sweep / f"foreign{i}", json.dumps(record))
    out = tmp_path / "out"

    assert cli.main([str(sweep), "--out", str(out), "--n-boot", "0", "-q"]) == 0

    assert "6 skipped" in capsys.readouterr().out
    assert len(pd.read_csv(out / "runs.csv")) == 12
    report = (out / "report.md").read_text()
    for reason in ("run.model missing", "params.trainable is not a count",
                   "params.total is not a count", "metrics is not an object",
                   "run is not an object", "unknown status"):
        assert f"1 {reason}" in report, reason


@pytest.mark.slow
def test_out_as_the_sweep_itself_reads_every_run_twice(sweep):
    first = analysis.run_analysis([sweep], sweep, n_boot=0)
    again = analysis.run_analysis([sweep], sweep, n_boot=0)  # its own outputs now lie there

    assert (first.n_records, first.n_files, first.n_skipped) == (12, 12, 0)
    assert (again.n_records, again.n_files, again.n_skipped) == (12, 12, 0)
    assert len(pd.read_csv(sweep / "runs.csv")) == 12

"""Hostile files where records are read, absurd values, and text from records (issue 16.12).

A record is anyone's file: a FIFO or a device under its name must not hang or flood the
reader, an overflowing metric must not crash the plots, a log file on a full disk must not
print a traceback per line, and a record's strings must stay text in report.md and the .tex.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from analysis_fixtures import make_record, synthetic_records, write_record, write_sweep
from paramcorr.analysis import cli
from paramcorr.entry import quiet_log_files
from paramcorr.record import MAX_RECORD_BYTES, UNREADABLE, RecordError, load_record


def read_in_child(code: str, timeout: int = 120) -> str:
    """Run ``code`` in a child with 4 GiB of address space, killed after ``timeout`` s: a
    read that blocks or never ends fails the test instead of hanging or eating the machine."""
    bounded = ("import resource\n"
               "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n" + code)
    try:
        done = subprocess.run([sys.executable, "-c", bounded], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still reading after {timeout} s")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_a_fifo_named_result_json_is_unreadable_at_once(tmp_path):
    write_sweep(tmp_path, synthetic_records(4, p_failed=0))
    fifo = tmp_path / "job_fifo" / "result.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)

    out = read_in_child(
        "from paramcorr.record import find_record\n"
        "from paramcorr.analysis.collect import collect_runs\n"
        f"print(find_record({str(fifo)!r}))\n"  # the job's own check before it runs
        f"col = collect_runs([{str(tmp_path)!r}])\n"
        "print(col.n_records, dict(col.skipped))\n")
    assert out.splitlines() == ["None", f"4 {{'{UNREADABLE}': 1}}"]


def test_a_link_to_an_endless_device_or_a_huge_file_is_not_read(tmp_path):
    zero = tmp_path / "zero" / "result.json"
    zero.parent.mkdir()
    zero.symlink_to("/dev/zero")
    out = read_in_child(
        "from paramcorr.record import RecordError, load_record\n"
        "try:\n"
        f"    load_record({str(zero)!r})\n"
        "except RecordError as err:\n"
        "    print(err.reason, '|', err)\n")
    assert out.startswith(f"{UNREADABLE} | ") and "not a regular file" in out

    huge = tmp_path / "huge" / "result.json"
    huge.parent.mkdir()
    with open(huge, "wb") as handle:  # sparse: no disk used, but larger than any record
        handle.truncate(MAX_RECORD_BYTES + 1)
    with pytest.raises(RecordError) as err:
        load_record(huge)
    assert err.value.reason == UNREADABLE and str(MAX_RECORD_BYTES + 1) in str(err.value)

    # A link to a regular record is still a record.
    real = write_record(tmp_path / "real", make_record())
    link = tmp_path / "link" / "result.json"
    link.parent.mkdir()
    link.symlink_to(real)
    assert load_record(link).run["model"] == "resnet50"


EVIL_MODEL = "ev|l_<img src=x onerror=alert(1)>`model`"
EVIL_OPTIMIZER = "ad|am_&{x}$#%"


@pytest.fixture(scope="module")
def hostile_analysis(tmp_path_factory) -> Path:
    """An analysis of records with overflowing metrics and hostile strings."""
    root = tmp_path_factory.mktemp("hostile")
    records = synthetic_records(24, p_failed=0, p_diverged=0)  # 2 models, every cell
    for i, record in enumerate(records):
        if i % 5 == 0:  # spread over every cell; numpy's nan_to_num(inf) is 1.8e308
            record["metrics"].update(test_loss=1.7976931348623157e308, gap_loss=1e308,
                                     test_acc=1e308 if i % 10 == 0 else -1e308)
        if record["run"]["model"] == "vgg16":
            record["run"]["model"] = EVIL_MODEL
        if record["run"]["optimizer"] == "sgd":
            record["run"]["optimizer"] = EVIL_OPTIMIZER
    write_sweep(root / "sweep", records)
    out = root / "out"
    assert cli.main([str(root / "sweep"), "--out", str(out), "--n-boot", "0", "-q"]) == 0
    return out


def test_overflowing_metrics_are_infinite_scores_not_a_crash(hostile_analysis):
    runs = pd.read_csv(hostile_analysis / "runs.csv")
    assert (runs["test_loss"] == math.inf).sum() == 5
    assert (runs["test_acc"] == math.inf).sum() == 3
    assert (runs["test_acc"] == -math.inf).sum() == 2
    assert (hostile_analysis / "plots" / "scatter_test_acc.png").stat().st_size > 0


def test_record_strings_stay_text_in_report_md(hostile_analysis):
    text = (hostile_analysis / "report.md").read_text()
    html = MarkdownIt("commonmark").enable("table").render(text)
    assert "<img src=x" not in html  # shown as text, never an element
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # The architectures table: every row keeps its five cells, the model name whole.
    body = html.split("<th>model</th>", 1)[1].split("</table>", 1)[0]
    rows = body.split("<tr>")[1:]
    assert len(rows) == 2 and all(row.count("<td>") == 5 for row in rows)
    assert "<td>ev|l_&lt;img src=x onerror=alert(1)&gt;`model`</td>" in body
    assert "ad|am_&amp;{x}$#%, lr=0.01" in html  # the optimizer, in a cell label


def test_record_strings_are_escaped_in_the_tex_tables(hostile_analysis):
    tex = (hostile_analysis / "paper_table.tex").read_text()
    assert r"ad|am\_\&\{x\}\$\#\%" in tex and EVIL_OPTIMIZER not in tex


def test_a_log_file_on_a_full_disk_drops_lines_without_a_traceback(capfd):
    handler = logging.FileHandler("/dev/full")  # every write: ENOSPC, as on a full disk
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        quiet_log_files()
        logging.getLogger("paramcorr.job").warning("a line for the job's log file")
    finally:
        root.removeHandler(handler)
        handler.close = lambda: None  # closing flushes again: ENOSPC outside the test
    assert "Logging error" not in capfd.readouterr().err

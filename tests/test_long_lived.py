"""paramcorr.long_lived: what exists is kept out of later collections, and handed back."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest

import paramcorr.analysis as analysis
from analysis_fixtures import synthetic_records, write_sweep
from paramcorr.long_lived import frozen_during


@pytest.fixture(autouse=True)
def unfrozen_process():
    """Start unfrozen: an earlier test in this worker process may have run a sweep's job in
    process (entry freezes after it, for the rest of the process)."""
    gc.unfreeze()


class _Node:
    """A reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def test_frozen_during_keeps_what_exists_out_and_hands_it_back():
    before = len(gc.get_objects())
    old_cycle = weakref.ref(_Node())  # garbage already, not yet collected
    with frozen_during():
        assert gc.get_freeze_count() >= before - 100  # all that existed, bar temporaries
        new_cycle = weakref.ref(_Node())
        gc.collect()
        assert new_cycle() is None  # what the block makes is still collected
        assert old_cycle() is not None  # what existed is left alone
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert old_cycle() is None  # handed back: collectable again


def test_a_process_freeze_is_handed_back_at_exit_and_left_to_its_owner_by_a_block():
    """gc.freeze() keeps objects out of the shutdown collection; extension modules that check
    for leaks at exit (triton's nanobind bindings, loaded by torch._dynamo) then print ~30
    lines after the user's one-line error. Whatever the torch build, nothing stays frozen at
    exit; and a block inside a sweep's frozen process does not hand its objects back early."""
    # atexit runs last-registered first: this reads the count after the module's handler ran.
    code = ("import atexit, gc\n"
            "atexit.register(lambda: print('at exit:', gc.get_freeze_count()))\n"
            "from paramcorr.long_lived import freeze_until_exit, frozen_during\n"
            "freeze_until_exit()\n"
            "frozen = gc.get_freeze_count()\n"
            "print('after a job:', frozen > 1000)\n"  # the long-lived objects left
            "with frozen_during():\n"
            "    pass\n"
            "print('after the block:', gc.get_freeze_count() >= frozen)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["after a job: True", "after the block: True",
                                        "at exit: 0"]


def test_analysis_collects_without_scanning_what_existed_before(tmp_path):
    """Every collection during run_analysis runs with the earlier objects frozen; afterwards
    nothing is left frozen (no leak report at exit)."""
    write_sweep(tmp_path / "sweep", synthetic_records(12, p_failed=0, p_diverged=0))
    frozen_at_collections: list[int] = []

    def watch(phase: str, info: dict) -> None:
        # The older generations' collections are the costly scans; counting the frozen
        # objects walks all of them, too slow to do on every young collection.
        if phase == "start" and info["generation"] > 0:
            frozen_at_collections.append(gc.get_freeze_count())

    existing = len(gc.get_objects())
    gc.callbacks.append(watch)
    try:
        analysis.run_analysis([tmp_path / "sweep"], tmp_path / "out", n_boot=50)
    finally:
        gc.callbacks.remove(watch)
    assert len(frozen_at_collections) > 3  # the analysis does trigger them
    # Frozen objects that the analysis frees (by reference count) leave the frozen set.
    assert min(frozen_at_collections) > 0.9 * existing
    assert gc.get_freeze_count() == 0

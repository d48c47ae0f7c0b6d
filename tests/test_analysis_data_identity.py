"""What the analysis pools: never runs on different data; old records join new ones."""

from __future__ import annotations

import pytest

from analysis_fixtures import make_record, synthetic_records, write_sweep
from paramcorr.analysis import cli
from paramcorr.analysis.collect import MixedDataError, collect_runs
from paramcorr.analysis.configurations import configuration_means

# Axes a record gained after its first version (collect.normalise_legacy_runs).
NEWER_AXES = ("eval_weights", "num_groups", "epochs_configured")


def on_folder(record: dict, root: str, fingerprint: str = "f" * 32) -> dict:
    """``record`` as a run on the image folder ``root`` writes it (inputs block included)."""
    record["run"]["dataset"] = "imagefolder"
    record["inputs"] = {"data_root": root, "data_fingerprint": fingerprint,
                        "weights_digest": None}
    return record


def folder_sweep(root: str, n: int = 24, fingerprint: str = "f" * 32) -> list[dict]:
    return [on_folder(r, root, fingerprint) for r in synthetic_records(n, p_failed=0)]


def test_two_sweeps_of_different_data_roots_are_refused_naming_both(tmp_path, capsys):
    write_sweep(tmp_path / "flowers", folder_sweep("/data/flowers"))
    write_sweep(tmp_path / "birds", folder_sweep("/data/birds"))

    with pytest.raises(MixedDataError) as err:
        collect_runs([tmp_path / "flowers", tmp_path / "birds"])
    assert "/data/flowers (24 runs" in str(err.value) and "/data/birds (24 runs" in str(err.value)

    code = cli.main([str(tmp_path / "flowers"), str(tmp_path / "birds"),
                     "--out", str(tmp_path / "out"), "-q"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "2 different data sources" in lines[0] and "analyse each" in lines[0]
    assert not (tmp_path / "out" / "runs.csv").exists()
    # Each on its own is fine.
    assert collect_runs([tmp_path / "flowers"]).n_records == 24


def test_an_image_folder_and_embedded_digits_are_not_pooled(tmp_path):
    write_sweep(tmp_path / "folder", folder_sweep("/data/flowers", 12))
    write_sweep(tmp_path / "digits", synthetic_records(12, p_failed=0))
    with pytest.raises(MixedDataError, match=r"digits \(embedded\) \(12 runs"):
        collect_runs([tmp_path / "folder", tmp_path / "digits"])


def test_one_root_read_as_two_versions_of_its_files_is_refused(tmp_path):
    records = folder_sweep("/data/flowers", 24)
    for record in records[:5]:  # images were added after these ran
        record["inputs"]["data_fingerprint"] = "0" * 32
    write_sweep(tmp_path / "sweep", records)
    with pytest.raises(MixedDataError, match="2 different versions of the files in "
                                             "/data/flowers .19 runs on files fffff"):
        collect_runs([tmp_path / "sweep"])


def test_two_sweeps_of_one_root_and_records_without_inputs_pool(tmp_path):
    write_sweep(tmp_path / "a", folder_sweep("/data/flowers", 12))
    write_sweep(tmp_path / "b", folder_sweep("/data/flowers", 24)[12:])
    old = synthetic_records(36, p_failed=0)[24:]
    for record in old:  # image-folder records from before records named their inputs
        record["run"]["dataset"] = "imagefolder"
    write_sweep(tmp_path / "old", old)
    assert collect_runs([tmp_path / "a", tmp_path / "b", tmp_path / "old"]).n_records == 36


def _as_old(record: dict) -> dict:
    """``record`` as the code wrote it before eval_weights, num_groups and epochs_configured:
    its ``epochs`` was the configured count."""
    for key in NEWER_AXES:
        del record["run"][key]
    record["config_hash"] = "old-" + record["config_hash"]  # another code version's hash
    return record


def test_old_records_join_the_configurations_of_new_ones(tmp_path):
    records = synthetic_records(144, p_failed=0, p_diverged=0)  # 72 configurations x 2 seeds
    old = [_as_old(r) for r in records if r["run"]["seed"] == 0]
    new = [r for r in records if r["run"]["seed"] == 1]
    for r in new:
        r["run"]["epochs"] = 9  # trained: one of the new runs' own outcome
    write_sweep(tmp_path / "old", old)
    write_sweep(tmp_path / "new", new)

    col = collect_runs([tmp_path / "old", tmp_path / "new"])
    configs = configuration_means(col.runs, col.metrics, col.run_axes)

    # An independent count: the grid's own configurations (all axes but the seed).
    grid = {(r["run"]["model"], r["run"]["freeze"], r["run"]["optimizer"], r["run"]["lr"])
            for r in records}
    assert len(grid) == 72 and len(configs) == 72
    assert configs["n_runs"].tolist() == [2] * 72
    runs = col.runs.set_index("seed")
    assert set(runs.loc[0, "eval_weights"]) == {"last"}
    assert set(runs.loc[0, "num_groups"]) == {6}  # from the new records of the same model
    assert set(runs.loc[0, "epochs_configured"]) == {10}
    assert runs.loc[0, "epochs"].isna().all()  # what old training did was not recorded
    assert set(runs.loc[1, "epochs"]) == {9}


def test_num_groups_of_a_model_no_new_record_names_splits_nothing(tmp_path):
    records = [_as_old(make_record("vgg16", seed=s)) for s in range(3)]
    write_sweep(tmp_path, records)
    col = collect_runs([tmp_path])
    assert "num_groups" not in col.run_axes
    assert len(configuration_means(col.runs, col.metrics, col.run_axes)) == 1

"""train.py --help says what the tool does, its real groups and the common overrides."""

from __future__ import annotations

from helpers import ROOT, run_script


def test_help_lists_the_real_groups_and_their_options(tmp_path):
    done = run_script("train.py", "--help", cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "powered by Hydra" not in text and "schema/" not in text
    assert text.startswith("train.py: fine-tune a pretrained timm backbone")
    groups: dict[str, str] = {}  # a group's line and its indented continuation lines
    current = None
    for line in text.split("== Common overrides ==")[0].splitlines():
        if line and not line.startswith(" "):
            current = line.split()[0]
            groups[current] = line
        elif current is not None:
            groups[current] += line
    for group_dir in sorted(p for p in (ROOT / "conf").iterdir() if p.is_dir()):
        if group_dir.name == "hydra":
            continue
        assert group_dir.name in groups, group_dir.name
        options = [p.stem for p in group_dir.glob("*.yaml") if not p.stem.startswith("test_")]
        missing = [o for o in options if o not in groups[group_dir.name]]
        assert not missing, (group_dir.name, missing)  # a new option is listed in --help
    for override in ("lr=1e-2", "seed=0,1,2", "freeze.stages", "model.weights", "-m"):
        assert override in text

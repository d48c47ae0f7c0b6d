"""A sweep job's directory name below its sweep dir (Hydra's ``sweep.subdir``).

Two rules, applied by the resolvers conf/hydra/default.yaml names: Hydra's
``override_dirname`` with path-valued overrides shortened (:func:`job_dirname`), and no
``.``/``..`` component that could lead out of the sweep dir (:func:`job_subdir`).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any


def _short_path(value: str) -> str:
    """A path-valued override as a directory-name part: the file's stem without
    interpolations, and a hash of the value as typed (unique, stable across runs)."""
    digest = hashlib.sha256(value.encode()).hexdigest()[:10]
    name = re.sub(r"\$\{[^}]*\}", "", value.replace("\\", "")).rstrip("/").rsplit("/", 1)[-1]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "", name.split(".")[0])
    return f"{stem}-{digest}" if stem else digest


def job_dirname(overrides: Any, exclude_keys: Any) -> str:
    """A sweep job's directory name: Hydra's ``override_dirname`` (same order, separators
    and exclusions, so existing sweeps resume), except that a path-valued override
    (``model.weights=${paths.pretrained_dir}/.../${model.name}.safetensors``) becomes
    ``model.weights=<stem>-<hash>``: one directory level, no ``$`` or ``{`` in its name."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    lines = []
    for line in overrides or []:
        key, sep, value = str(line).partition("=")
        if sep and ("/" in value or "${" in value or "$\\{" in value):
            line = f"{key}={_short_path(value)}"
        lines.append(str(line))
    return get_overrides_dirname(parser.parse_overrides(lines), list(exclude_keys or []),
                                 item_sep=",", kv_sep="=")


def job_subdir(override_dirname: str) -> str:
    """A job's directory below its sweep dir: Hydra's ``override_dirname``, kept inside.

    A path-valued override (``model.weights=../../x``) puts ``/`` and ``..`` into the name;
    Hydra joins it onto the sweep dir as it is, so the job (and its record) would land
    outside the sweep. Every ``.`` or ``..`` path component is written ``%2E`` / ``%2E%2E``
    instead, so the name can only go down; other names, nested ones included
    (``model.weights=/abs/w.safetensors``), stay as they were, and so does every finished
    job's directory.
    """
    parts = override_dirname.split("/")
    return "/".join(part.replace(".", "%2E") if part in (".", "..") else part
                    for part in parts)

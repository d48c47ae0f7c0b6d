"""timm backbones: name check, weights (imagenet / random / checkpoint file), input size.

One factory, :func:`create_backbone`. A checkpoint file is loaded through timm's own
``pretrained_cfg_overlay=dict(file=...)`` path, which drops a classifier whose class count
differs and so gives a fresh head for the target classes.
"""

from __future__ import annotations

import difflib
import functools
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import save_file
from torch import nn

from paramcorr.atomic import atomic_path
from paramcorr.errors import UserError

WEIGHT_CHOICES = "model.weights=imagenet, model.weights=random or model.weights=<checkpoint path>"


@functools.cache
def _all_model_names() -> tuple[str, ...]:
    return tuple(timm.list_models())


def check_model_name(name: str) -> None:
    """Raise a :class:`UserError` with the closest timm names if ``name`` is not a timm model."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, _all_model_names(), n=5, cutoff=0.6)
    hint = f"; closest timm names: {', '.join(close)}" if close else ""
    raise UserError(f"unknown backbone {name!r}{hint} (see timm.list_models())")


def is_checkpoint_path(weights: str) -> bool:
    return weights not in ("imagenet", "random")


def _checkpoint_state(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint without running code: safetensors, or torch.load(weights_only=True)."""
    from timm.models import load_state_dict

    try:
        return load_state_dict(str(path), use_ema=False, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure here means "not a safe weights file"
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "weights_only" in str(err) or "Unpickl" in type(err).__name__ or "GLOBAL" in str(err):
            import re

            calls = re.search(r"Unsupported globals?: (?:GLOBAL )?([\w.]+?)\.?(?:\s|$)", str(err))
            what = f"it would call {calls.group(1)}" if calls else text[:120]
            raise UserError(
                f"refusing to load {path}: it is a pickle that needs code to run, not plain "
                f"weights ({what}); save it as safetensors or a plain state_dict"
            ) from err
        raise UserError(f"cannot read weights file {path}: not a safetensors or torch "
                        f"checkpoint ({type(err).__name__}: {text[:160]}); accepted values: "
                        f"{WEIGHT_CHOICES}") from err


def _classifier_keys(model: nn.Module) -> set[str]:
    names = model.pretrained_cfg.get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return {f"{n}.{suffix}" for n in names for suffix in ("weight", "bias")}


def check_checkpoint_fits(model: nn.Module, state: dict[str, torch.Tensor], path: Path,
                          model_name: str) -> None:
    """A checkpoint of another architecture is an error, not a silent partial load."""
    expected = model.state_dict()
    head = _classifier_keys(model)
    missing = sorted(k for k in expected if k not in state and k not in head)
    unexpected = sorted(k for k in state if k not in expected and k not in head)
    mismatched = sorted(k for k in state if k in expected and k not in head
                        and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or mismatched:
        example = (missing or unexpected or mismatched)[0]
        raise UserError(
            f"weights file {path} does not fit {model_name}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} shape-mismatched keys "
            f"(e.g. {example}); was it saved from another architecture?"
        )


def create_backbone(name: str, weights: str, num_classes: int, drop_rate: float = 0.0) -> nn.Module:
    """A timm model with ``num_classes`` outputs and the requested weights.

    ``weights``: ``imagenet`` (timm's pretrained tag, downloaded and cached by timm),
    ``random``, or a path to a timm-compatible checkpoint (``.safetensors`` or a plain
    ``state_dict`` file); the checkpoint's classifier is replaced by a fresh one.
    """
    check_model_name(name)
    kwargs: dict[str, Any] = dict(num_classes=num_classes, drop_rate=drop_rate)
    if weights == "random":
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights == "imagenet":
        try:
            with _hub_offline_if_unreachable() as unreachable:
                try:
                    return timm.create_model(name, pretrained=True, **kwargs)
                except Exception as err:
                    if unreachable and _looks_like_network_error(err):
                        raise _download_error(name, unreachable) from err
                    raise
        except UserError:
            raise
        except RuntimeError as err:
            if "No pretrained weights" in str(err):
                raise UserError(f"timm has no ImageNet weights for {name}; use "
                                "model.weights=random or a local checkpoint file") from err
            raise _download_error(name, err) from err
        except (OSError, ConnectionError, TimeoutError) as err:
            raise _download_error(name, err) from err
        except Exception as err:
            if _looks_like_network_error(err):
                raise _download_error(name, err) from err
            raise
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"weights file not found: {path}; accepted values: {WEIGHT_CHOICES}")
    state = _checkpoint_state(path)
    # timm drops the checkpoint's classifier when the class counts differ; force that by
    # declaring a class count no target uses, so the head is always fresh for the new task.
    overlay = dict(file=str(path.resolve()), num_classes=-1)
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                                  **kwargs)
    except RuntimeError:
        # A shape mismatch: say which keys do not fit, on a model built without the file.
        model = timm.create_model(name, pretrained=False, **kwargs)
        check_checkpoint_fits(model, state, path, name)
        raise
    # timm loads non-strictly once the head is dropped: missing or unexpected keys are ours
    # to refuse.
    check_checkpoint_fits(model, state, path, name)
    return model


def _looks_like_network_error(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    words = ("connection", "network", "resolve", "offline", "timed out", "timeout",
             "hf_hub", "huggingface", "localentrynotfound", "max retries", "urlopen")
    return any(w in text for w in words)


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached, or None if it can (or we cannot tell).

    A direct connection probe, so an offline machine fails in milliseconds instead of after
    huggingface_hub's retries (about 25 s per file, two files per model). Behind a proxy, or
    with HF_HUB_OFFLINE=1 already set, there is nothing to probe.
    """
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or any(
            os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return None
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as err:
        return f"{host} unreachable: {err}"
    return None


@contextmanager
def _hub_offline_if_unreachable() -> Iterator[str | None]:
    """Hub offline mode while the hub is unreachable: cached weights load, others fail fast."""
    reason = _hub_unreachable()
    if reason is None:
        yield None
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield reason
    finally:
        constants.HF_HUB_OFFLINE = before


def _download_error(name: str, err: BaseException | str) -> UserError:
    text = str(err).strip() or type(err).__name__
    first = text.splitlines()[0].split(". ")[0].rstrip(".")
    first = first if len(first) <= 160 else first[:157] + "..."
    return UserError(
        f"could not download ImageNet weights for {name} ({first}); no network? use a local "
        f"checkpoint file (model.weights=<path>, e.g. from scripts/pretrain.py) or "
        f"model.weights=random"
    )


def data_config(model: nn.Module, image_size: int | None) -> dict[str, Any]:
    """timm's preprocessing for ``model`` (mean, std, interpolation, crop), size overridable."""
    cfg = timm.data.resolve_model_data_config(model)
    if image_size is not None:
        cfg["input_size"] = (cfg["input_size"][0], image_size, image_size)
    return cfg


def _forward_ok(model: nn.Module, size: int) -> bool:
    try:
        model(torch.zeros(1, 3, size, size))
        return True
    except RuntimeError:
        return False


def check_input_size(model: nn.Module, name: str, size: int) -> None:
    """A size the backbone cannot take is a clear error naming the smallest one it can."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if _forward_ok(model, size):
                return
            low, high = size, max(size * 2, 64)
            while not _forward_ok(model, high):
                low, high = high, high * 2
                if high > 1024:
                    raise UserError(f"{name} fails on {size}px input and on every size up to "
                                    "1024px; check the model")
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (low, mid) if _forward_ok(model, mid) else (mid, high)
    finally:
        model.train(was_training)
    raise UserError(f"{name} cannot take {size}px input: the minimum size for {name} is "
                    f"{high}px; set data.image_size={high} or larger (or null for its default)")


def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Atomically write ``model``'s state_dict as safetensors (timm-compatible)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)

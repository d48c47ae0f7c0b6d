"""timm backbones: name check, weights (imagenet / random / checkpoint file), input size.

One factory, :func:`create_backbone`. A checkpoint file is loaded through timm's own
pretrained path (``pretrained_cfg_overlay``), which drops a classifier whose class count
differs and so gives a fresh head for the target classes.

Which weights a checkpoint file gives (:func:`read_weights`): a safetensors file or a plain
``state_dict`` is itself; a checkpoint holding several state dicts (timm's training
checkpoints hold ``state_dict`` and ``state_dict_ema``) gives ``state_dict`` (else ``model``),
the non-EMA weights, unless ``model.weights_key`` names another. That one dict is what is
checked and what is loaded: every backbone tensor present with its shape (a strict load, with
PyTorch's own tolerance for buffers older state dicts lack, e.g. BatchNorm's
``num_batches_tracked``), and the loaded model holds exactly its values.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import timm
import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from safetensors.torch import load_file, save_file
from timm.models import clean_state_dict, get_pretrained_cfg
from torch import nn
from torch.serialization import get_unsafe_globals_in_checkpoint

from paramcorr.atomic import atomic_path
from paramcorr.errors import UserError, is_out_of_memory

log = logging.getLogger(__name__)

WEIGHT_CHOICES = "model.weights=imagenet, model.weights=random or model.weights=<checkpoint path>"
# Where training scripts keep the non-EMA weights in a checkpoint, in the order timm reads them.
PLAIN_WEIGHTS_KEYS = ("state_dict", "model")


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


def _unreadable(path: Path, err: BaseException) -> UserError:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return UserError(f"cannot read weights file {path}: not a safetensors or torch "
                     f"checkpoint ({type(err).__name__}: {text[:160]}); accepted values: "
                     f"{WEIGHT_CHOICES}")


def _load_file(path: Path) -> Any:
    """The file's content, without running code: safetensors, or torch.load(weights_only)."""
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # noqa: BLE001 - any failure here means "not a weights file"
            raise _unreadable(path, err) from err
    try:
        # torch's own list of what unpickling would import beyond plain tensors and containers
        # (zip checkpoints, torch.save's format since 1.6; others fail in torch.load below).
        unsafe = get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - not a zip checkpoint
        unsafe = []
    if unsafe:
        raise UserError(
            f"refusing to load {path}: it is a pickle that needs code to run, not plain "
            f"weights (it would call {unsafe[0]}); save it as safetensors or a plain state_dict")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - as above
        raise _unreadable(path, err) from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(v, torch.Tensor) for v in obj.values())


def read_weights(path: Path, weights_key: str | None = None) -> dict[str, torch.Tensor]:
    """The one state dict a checkpoint file gives (rule in the module doc)."""
    content = _load_file(path)
    if _is_state_dict(content):
        if weights_key is not None:
            raise UserError(f"model.weights_key={weights_key}, but {path} is one plain state "
                            "dict; set model.weights_key=null")
        return clean_state_dict(content)
    if not isinstance(content, dict):
        raise _unreadable(path, TypeError(f"it holds a {type(content).__name__}"))
    held = [str(k) for k, v in content.items() if _is_state_dict(v)]
    if weights_key is not None:
        if weights_key not in held:
            raise UserError(f"model.weights_key={weights_key} is not a state dict in {path} "
                            f"(it holds {', '.join(held) or 'none'}); pick one of those")
        chosen = weights_key
    else:
        plain = [k for k in PLAIN_WEIGHTS_KEYS if k in held]
        if not plain and len(held) != 1:
            if not held:
                raise _unreadable(path, TypeError("it holds no state dict"))
            raise UserError(f"{path} holds {len(held)} state dicts ({', '.join(held)}) and none "
                            "is state_dict or model; choose one with model.weights_key=<name>")
        chosen = (plain or held)[0]
    log.debug("weights from %s[%r]", path, chosen)
    return clean_state_dict(content[chosen])


def _classifier_keys(model: nn.Module) -> set[str]:
    names = model.pretrained_cfg.get("classifier") or ()
    if isinstance(names, str):
        names = (names,)
    return {f"{n}.{suffix}" for n in names for suffix in ("weight", "bias")}


def check_checkpoint_fits(model_name: str, state: dict[str, torch.Tensor], path: Path,
                          **create_kwargs: Any) -> dict[str, torch.Tensor]:
    """The backbone part of ``state`` (all but the classifier), if it fits ``model_name``.

    A strict load as PyTorch does it, on the meta device (no memory): every backbone key
    present with its shape, none left over; a key PyTorch itself tolerates missing (an old
    state dict's ``num_batches_tracked``) is tolerated. Anything else is an error, not a
    silent partial load.
    """
    with torch.device("meta"):
        probe = timm.create_model(model_name, pretrained=False, **create_kwargs)
    head = _classifier_keys(probe)
    expected = probe.state_dict()
    mismatched = sorted(k for k in state if k in expected and k not in head
                        and tuple(state[k].shape) != tuple(expected[k].shape))
    backbone = {k: v for k, v in state.items() if k not in head and k not in mismatched}
    report = probe.load_state_dict(backbone, strict=False, assign=True)
    missing = sorted(k for k in report.missing_keys if k not in head)
    unexpected = sorted(report.unexpected_keys)
    if missing or unexpected or mismatched:
        example = (missing or unexpected or mismatched)[0]
        raise UserError(
            f"weights file {path} does not fit {model_name}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(mismatched)} shape-mismatched keys "
            f"(e.g. {example}); was it saved from another architecture?"
        )
    return backbone


def _check_loaded(model: nn.Module, backbone: dict[str, torch.Tensor], path: Path,
                  model_name: str) -> None:
    """The model holds exactly the checked tensors (timm loaded what was validated)."""
    loaded = model.state_dict()
    differ = [k for k, v in backbone.items() if not torch.equal(loaded[k], v.to(loaded[k].dtype))]
    if differ:
        raise UserError(f"weights file {path}: {model_name} loaded {len(differ)} tensors that "
                        f"differ from the file's (e.g. {differ[0]}); timm converted them, so "
                        "the file is not in timm's format for this model")


def create_backbone(name: str, weights: str, num_classes: int, drop_rate: float = 0.0,
                    weights_key: str | None = None) -> nn.Module:
    """A timm model with ``num_classes`` outputs and the requested weights.

    ``weights``: ``imagenet`` (timm's pretrained tag, downloaded and cached by timm),
    ``random``, or a path to a timm-compatible checkpoint (``.safetensors`` or a torch
    checkpoint; ``weights_key`` picks among several state dicts, see :func:`read_weights`);
    the checkpoint's classifier is replaced by a fresh one.
    """
    check_model_name(name)
    kwargs: dict[str, Any] = dict(num_classes=num_classes, drop_rate=drop_rate)
    if weights == "random":
        return timm.create_model(name, pretrained=False, **kwargs)
    if weights == "imagenet":
        return _imagenet_backbone(name, kwargs)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UserError(f"weights file not found: {path}; accepted values: {WEIGHT_CHOICES}")
    state = read_weights(path, weights_key)
    # timm drops the checkpoint's classifier when the class counts differ; force that by
    # declaring a class count no target uses, so the head is always fresh for the new task.
    # The state dict is handed over in memory (a copy: timm removes the head's keys from it),
    # so timm loads this dict and no other.
    overlay = dict(state_dict=dict(state), num_classes=-1)
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                                  **kwargs)
    except RuntimeError:
        # A shape mismatch: say which keys do not fit.
        check_checkpoint_fits(name, state, path, **kwargs)
        raise
    # timm keeps a deep copy of the overlay in pretrained_cfg: not for the model's lifetime.
    model.pretrained_cfg["state_dict"] = None
    # timm loads non-strictly once the head is dropped: missing or unexpected keys are ours
    # to refuse.
    backbone = check_checkpoint_fits(name, state, path, **kwargs)
    _check_loaded(model, backbone, path, name)
    return model


def _imagenet_backbone(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """timm's pretrained weights; without a route to the hub, from the hub cache or fail fast.

    No process-wide offline switch: when the hub cannot be reached, the cached file (if any)
    is handed to timm by path, so nothing waits on huggingface_hub's retries.
    """
    unreachable = _hub_unreachable()
    overlay = None
    if unreachable:
        cached = _cached_hub_file(name)
        if cached is None and _hub_id(name):
            raise _download_error(name, unreachable)
        overlay = dict(file=cached) if cached else None
    try:
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                                 **kwargs)
    except RuntimeError as err:
        if "No pretrained weights" in str(err):
            raise UserError(f"timm has no ImageNet weights for {name}; use "
                            "model.weights=random or a local checkpoint file") from err
        raise _download_error(name, unreachable or err) from err
    except (OSError, ConnectionError, TimeoutError) as err:
        raise _download_error(name, unreachable or err) from err
    except Exception as err:
        if _looks_like_network_error(err):
            raise _download_error(name, unreachable or err) from err
        raise


def _hub_id(name: str) -> str | None:
    cfg = get_pretrained_cfg(name)
    return cfg.hf_hub_id if cfg is not None else None


def _cached_hub_file(name: str) -> str | None:
    """The weights file timm would download for ``name``, if the hub cache holds it."""
    cfg = get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        return None
    names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else [
        "model.safetensors", "pytorch_model.bin"]
    for filename in names:
        found = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(found, str):
            return found
    return None


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
    if hub_constants.HF_HUB_OFFLINE or any(
            os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(hub_constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    if not host:
        return None
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as err:
        return f"{host} unreachable: {err}"
    return None


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


def _forward_error(model: nn.Module, size: int) -> BaseException | None:
    try:
        model(torch.zeros(1, 3, size, size))
        return None
    except (RuntimeError, MemoryError) as err:
        return err


# Up to this size a failing input is searched for the backbone's minimum; above it, a
# failure is reported as it is.
SEARCH_LIMIT = 1024


def check_input_size(model: nn.Module, name: str, size: int) -> None:
    """A size the backbone cannot take is a clear error naming the smallest one it can."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            err = _forward_error(model, size)
            if err is None:
                return
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
            if is_out_of_memory(err):
                raise UserError(f"data.image_size={size}: one {size}px image does not fit in "
                                f"memory for {name} ({reason}); use a smaller data.image_size "
                                "(or null for its default)")
            if size >= SEARCH_LIMIT:
                raise UserError(f"{name} fails on {size}px input ({reason}); use a smaller "
                                "data.image_size (or null for its default)")
            low, high = size, max(size * 2, 64)
            while _forward_error(model, high) is not None:
                low, high = high, high * 2
                if high > SEARCH_LIMIT:
                    raise UserError(f"{name} fails on {size}px input and on every size up to "
                                    f"{SEARCH_LIMIT}px ({reason}); check the model")
            while high - low > 1:
                mid = (low + high) // 2
                low, high = (mid, high) if _forward_error(model, mid) else (low, mid)
    finally:
        model.train(was_training)
    raise UserError(f"{name} cannot take {size}px input: the minimum size for {name} is "
                    f"{high}px; set data.image_size={high} or larger (or null for its default)")


def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Atomically write ``model``'s state_dict as safetensors (timm-compatible)."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_state(state, path, metadata)


def save_state(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Atomically write ``state`` as safetensors, its metadata in the order of ``metadata``.

    The same tensors and metadata give the same bytes, so the same sha256 (the
    ``inputs.weights_digest`` of every record that loads the file): safetensors writes the
    metadata in the order of a Rust ``HashMap``, which changes from one call to the next, so
    the header is put back in the given order (:func:`_order_metadata`).
    """
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
        _order_metadata(tmp, metadata)


def _order_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Rewrite, in place, the ``__metadata__`` object that begins a safetensors header with
    its keys in the order of ``metadata``: the same keys and values, so the same length; the
    tensors' entries and data are not touched. A header not laid out as expected (compact
    JSON, the metadata first) is left as written: a valid file, in safetensors' order."""
    if len(metadata) < 2:
        return

    def dump(meta: dict[str, str]) -> bytes:
        return json.dumps(meta, separators=(",", ":"), ensure_ascii=False).encode()

    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = handle.read(size)
        written = json.loads(header).get("__metadata__") or {}
        old = b'{"__metadata__":' + dump(written)
        new = b'{"__metadata__":' + dump({key: str(metadata[key]) for key in metadata})
        if written != metadata or not header.startswith(old) or len(new) != len(old):
            return
        handle.seek(8)
        handle.write(new)

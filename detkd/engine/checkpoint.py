"""Checkpoint files: safe loading, atomic saving, and rebuilding a detector from a checkpoint alone.

Safety: every load uses ``torch.load(weights_only=True)``. detkd's training stores only tensors
and plain types (see :class:`detkd.engine.hooks.CheckpointMetaHook`: mmengine's message hub would
otherwise pickle ``HistoryBuffer`` objects that reference methods through ``getattr``); NumPy
arrays and scalars from other mmengine-based tools are allowed as data (:data:`SAFE_GLOBALS`).
Anything else is refused unless the caller passes ``trust=True`` for a file it trusts.

Atomicity: mmengine writes checkpoints through its local file backend; :func:`install_checkpoint_io`
replaces that backend with one that writes a temporary file and renames it, so an interrupted
save never leaves a truncated ``epoch_N.pth`` or ``best_*.pth``.

Self-description: training stores the model's builder name and arguments (see
:mod:`detkd.models.factory`) under ``meta["detkd"]``, so :func:`load_detector` needs no config. A
pruned model also stores ``meta["detkd"]["pruned"]`` (its plans' record); its layers then take the
shapes of the stored weights (:func:`detkd.models.reshape.reshape_like`).
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from mmengine.fileio import LocalBackend, register_backend

from detkd.errors import CheckpointError
from detkd.fileio import atomic_write_bytes, file_sha256
from detkd.models.factory import build_model, model_label, model_spec
from detkd.models.torch_file import check_torch_file, load_error_reason as _reason, one_line as _one_line

__all__ = [
    "CheckpointError",
    "check_torch_file",
    "checkpoint_model_label",
    "detector_from_checkpoint",
    "detector_meta",
    "SAFE_GLOBALS",
    "detector_state_dict",
    "install_checkpoint_io",
    "load_weights",
    "load_checkpoint_file",
    "load_detector",
    "load_packed",
    "save_detector",
    "save_packed",
    "write_checkpoint",
]


def _numpy_globals() -> list[Any]:
    dtypes = (np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8, np.uint8, np.bool_)
    return [
        np._core.multiarray._reconstruct,  # type: ignore[attr-defined]
        np._core.multiarray.scalar,  # type: ignore[attr-defined]
        np.ndarray,
        np.dtype,
        *[type(np.dtype(t)) for t in dtypes],
    ]


SAFE_GLOBALS: list[Any] = _numpy_globals()


def _refused(exc: Exception) -> str | None:
    """What the safe loader refused (a pickled class or function), or None for another failure."""
    text = str(exc)
    match = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if match:
        return f"it holds a pickled Python object ({match.group(1)})"
    match = re.search(r"(Can only build [^\n]*)", text)
    return f"it holds a pickled Python object ({_one_line(match.group(1))})" if match else None


def load_checkpoint_file(path: str | os.PathLike[str], trust: bool = False, map_location: str = "cpu",
                         trust_flag: str = "--trust") -> dict[str, Any]:
    """Load a checkpoint dict safely.

    Args:
        trust: allow arbitrary pickled objects (only for files you made or trust).
        trust_flag: how the caller's user says ``trust`` (a tool's flag, e.g. ``--trust-teacher``),
            named by the refusal message.

    Raises:
        CheckpointError: missing file, not a checkpoint (empty, truncated, another kind of file,
            not a dict), or unsafe content without ``trust``; its message is one line naming the file.
    """
    path = check_torch_file(path)
    try:
        if trust:
            obj = torch.load(path, map_location=map_location, weights_only=False)
        else:
            with torch.serialization.safe_globals(SAFE_GLOBALS):
                obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError, ...
        refused = None if trust else _refused(exc)
        if refused:
            raise CheckpointError(
                f"{path}: refused by the safe loader: {refused}, and unpickling can run arbitrary code; "
                f"if you trust this file, pass {trust_flag}"
            ) from exc
        if trust and isinstance(exc, (AttributeError, ImportError)):  # a pickled class this process lacks
            raise CheckpointError(f"{path}: cannot unpickle checkpoint ({_reason(exc)})") from exc
        raise CheckpointError(f"{path}: not a PyTorch checkpoint, or a damaged one ({_reason(exc)})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a detkd checkpoint (it holds a {type(obj).__name__}, not a checkpoint dict)")
    return obj


def detector_state_dict(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The detector's weights from an mmengine checkpoint (``state_dict`` keys under ``detector.``)
    or from a bare state dict. With EMA, mmengine stores the averaged weights as ``state_dict``."""
    state = checkpoint.get("state_dict", checkpoint)
    prefix = "detector."
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def load_detector(path: str | os.PathLike[str], trust: bool = False, trust_flag: str = "--trust") -> nn.Module:
    """Rebuild a detector from a detkd checkpoint (its stored spec) and load its weights
    (``trust``, ``trust_flag``: see :func:`load_checkpoint_file`).

    Raises:
        CheckpointError: no detkd spec in the file, or weights that do not fit the model.
    """
    return detector_from_checkpoint(load_checkpoint_file(path, trust=trust, trust_flag=trust_flag), str(path))


def detector_from_checkpoint(checkpoint: dict[str, Any], source: str) -> nn.Module:
    """:func:`load_detector` for a checkpoint dict already in memory (``source`` names it in errors)."""
    meta = checkpoint.get("meta") or {}
    detkd_meta = meta.get("detkd") if isinstance(meta, dict) else None
    spec = detkd_meta.get("model") if isinstance(detkd_meta, dict) else None
    if not spec:
        raise CheckpointError(f"{source}: no detkd model spec in meta; load it with the config it was trained with")
    if not (isinstance(spec, dict) and isinstance(spec.get("name"), str) and isinstance(spec.get("kwargs"), dict)):
        raise CheckpointError(f"{source}: damaged detkd model spec in meta (expected a name and kwargs, got {spec!r:.80})")
    try:
        model = build_model(spec["name"], **spec["kwargs"])
    except KeyError as exc:  # an unknown model name
        raise CheckpointError(f"{source}: cannot rebuild the stored model: {exc.args[0] if exc.args else exc}") from exc
    state = detector_state_dict(checkpoint)
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{source}: no weights in the checkpoint (its state_dict is not a dict of tensors)")
    pruned = detkd_meta.get("pruned")
    if pruned:  # channels removed by detkd.prune: the layer shapes come from the stored weights
        from detkd.models.reshape import reshape_like

        try:
            reshape_like(model, state, pruned)
        except ValueError as exc:
            raise CheckpointError(f"{source}: pruned weights do not fit {spec['name']}: {exc}") from exc
    load_weights(model, state, source)
    return model


def checkpoint_model_label(path: str | os.PathLike[str], file_hash: bool = False) -> str:
    """:func:`~detkd.models.factory.model_label` of a detkd checkpoint's stored spec (``ssd_cpu_w0.5``);
    with ``file_hash``, also which file: ``@`` and the first 8 hex digits of its SHA-256
    (``ssd_cpu_w0.5@1a2b3c4d``), so a model trained again is told apart from the first one.

    Raises:
        CheckpointError: the file holds no detkd model spec.
    """
    meta = load_checkpoint_file(path).get("meta") or {}
    spec = meta.get("detkd", {}).get("model") if isinstance(meta, dict) else None
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{path}: no detkd model spec in meta")
    return model_label(spec) + (f"@{file_sha256(path)[:8]}" if file_hash else "")


def detector_meta(detector: nn.Module) -> dict[str, Any]:
    """What ``meta["detkd"]`` records so :func:`load_detector` needs no config: the builder spec,
    class names, input size, and the pruning record of a pruned model."""
    meta: dict[str, Any] = {"model": model_spec(detector), "class_names": list(detector.class_names),
                            "imgsz": int(detector.imgsz)}
    if getattr(detector, "detkd_pruned", None):  # channels removed: loading reshapes the layers
        meta["pruned"] = detector.detkd_pruned
    return meta


def write_checkpoint(path: str | os.PathLike[str], detkd_meta: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """``torch.save({"meta": {"detkd": detkd_meta}, "state_dict": state})`` to ``path``, atomically."""
    buffer = io.BytesIO()
    torch.save({"meta": {"detkd": detkd_meta}, "state_dict": state}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def save_detector(detector: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``detector`` as a detkd checkpoint (the layout training writes: ``state_dict`` under
    ``detector.``, ``meta["detkd"]`` from :func:`detector_meta`), atomically, loadable by
    :func:`load_detector` with ``weights_only=True``."""
    state = {f"detector.{k}": v.detach().cpu() for k, v in detector.state_dict().items()}
    return write_checkpoint(path, detector_meta(detector), state)


def save_packed(model: nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` with 1-bit binary conv weights (:func:`detkd.binary.packing.pack_state`), atomically;
    ``meta.detkd.packed_binary`` lists the packed layers and their weight shapes."""
    from detkd.binary.packing import pack_state

    state, layers = pack_state(model)
    return write_checkpoint(path, {**detector_meta(model), "packed_binary": layers}, state)


def load_packed(path: str | os.PathLike[str]) -> nn.Module:
    """Rebuild a model written by :func:`save_packed` (the float simulation, latent weights ``±alpha``;
    :func:`detkd.binary.packing.pack_model` puts it on the XNOR kernel).

    Raises:
        CheckpointError: not a packed checkpoint, or tensors that do not fit the model.
    """
    from detkd.binary.packing import unpack_state

    checkpoint = load_checkpoint_file(path)
    meta = checkpoint.get("meta", {}).get("detkd", {})
    if "packed_binary" not in meta:
        raise CheckpointError(f"{path}: not a packed binary checkpoint (no meta.detkd.packed_binary)")
    try:
        state = unpack_state(dict(checkpoint["state_dict"]), meta["packed_binary"], str(path))
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None
    return detector_from_checkpoint({"meta": checkpoint["meta"], "state_dict": state}, str(path))


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the first mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if keys]
        raise CheckpointError(f"{source}: weights do not fit {type(model).__name__} ({'; '.join(parts)})")
    model.load_state_dict(state)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local backend, but ``put`` writes a temporary file and renames it."""

    def put(self, obj: bytes, filepath: str | Path) -> None:  # type: ignore[override]
        atomic_write_bytes(filepath, obj)


def install_checkpoint_io() -> None:
    """Make mmengine's checkpoint I/O in this process atomic and safe (idempotent).

    Saves go through :class:`AtomicLocalBackend`. Loads (``--resume``, ``load_from``) stay
    ``weights_only=True``, with NumPy data (:data:`SAFE_GLOBALS`) allowed, nothing more.
    """
    register_backend("local", AtomicLocalBackend, force=True, prefixes="")
    torch.serialization.add_safe_globals(SAFE_GLOBALS)

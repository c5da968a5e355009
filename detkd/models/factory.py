"""Model registry: builders by name, so a checkpoint can record how to rebuild its model.

A builder is registered with ``@register_model("name")`` and called with keyword arguments only.
:func:`build_model` calls it and remembers ``(name, kwargs)`` on the model as ``detkd_spec``;
checkpoints store that spec, so loading needs no config (see :mod:`detkd.engine.checkpoint`).
Keyword values must be JSON-friendly (numbers, strings, lists, dicts) for the same reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import torch.nn as nn

from detkd.errors import ConfigError
from detkd.options import check_kwargs, closest

__all__ = ["MODELS", "build_model", "model_label", "model_spec", "register_model"]

MODELS: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])
# Where the built-in builders live; a module is imported when one of its names is first asked
# for, so `import detkd.models.factory` stays light and SSD code never loads for a YOLO run.
BUILTIN: dict[str, str] = {
    "yolov2": "detkd.models.yolo",
    "tiny_yolov2": "detkd.models.yolo",
    "fyolo": "detkd.models.yolo",
    "ssd300_vgg16": "detkd.models.ssd",
    "ssdlite320_mobilenet_v3_large": "detkd.models.ssd",
    "ssd_cpu": "detkd.models.ssd",
    "ultralytics": "detkd.models.ultralytics_adapter",
}


def register_model(name: str) -> Callable[[F], F]:
    """Decorator registering a model builder under ``name`` (names are unique)."""

    def wrap(builder: F) -> F:
        if name in MODELS and MODELS[name] is not builder:
            raise ValueError(f"model name {name!r} is already registered")
        MODELS[name] = builder
        return builder

    return wrap


def _plain(value: Any) -> Any:
    """Config mappings and sequences as plain dicts and lists (a checkpoint's spec must load with
    ``weights_only=True``, which refuses mmengine's ``ConfigDict``)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model and record ``{"name", "kwargs"}`` as its ``detkd_spec``.

    Raises:
        ConfigError: an unknown model name, or an argument its builder does not take.
    """
    kwargs = _plain(kwargs)
    if name not in MODELS and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in MODELS:
        known = sorted(set(MODELS) | set(BUILTIN))
        raise ConfigError(f"config key model.name = {name!r}: unknown model{closest(str(name), known)}; known: {', '.join(known)}")
    check_kwargs(MODELS[name], kwargs, "model")
    model = MODELS[name](**kwargs)
    model.detkd_spec = {"name": name, "kwargs": kwargs}  # type: ignore[assignment]
    return model


def model_spec(model: nn.Module) -> dict[str, Any]:
    """The ``{"name", "kwargs"}`` a model was built with (raises if built by hand)."""
    spec = getattr(model, "detkd_spec", None)
    if spec is None:
        raise ValueError(f"{type(model).__name__} was not built with build_model(); its spec is unknown")
    return spec


def model_label(spec: dict[str, Any]) -> str:
    """A short name for a ``{"name", "kwargs"}`` spec: ``<name>_w<width>`` (``ssd_cpu_w0.5``) when the
    builder took a width, else the name."""
    width = (spec.get("kwargs") or {}).get("width")
    return f"{spec['name']}_w{width:g}" if isinstance(width, (int, float)) else str(spec["name"])

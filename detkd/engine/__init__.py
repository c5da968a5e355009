"""Training, evaluation and metric code shared by the tools (see :mod:`detkd.engine.metrics`)."""

from __future__ import annotations

__all__: list[str] = []

"""Parameters declared with their constraints, beside what they configure.

``spec(default, doc=..., ge=..., lt=...)`` is a dataclass field that carries its documentation
and its bounds (``ge``, ``gt``, ``le``, ``lt``, ``min_len``). :mod:`model.config` builds and
validates every section of a run's configuration from these declarations, the trading rules'
parameter sections (:mod:`agents.strategies`) included: one validator, one error format, one
``describe()``. This module imports nothing from the project, so the rules can declare their
parameters without importing the model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["spec"]


def spec(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = None,
    doc: str = "",
    unit: str = "",
    **checks,
):
    """A dataclass field with its constraints (ge, gt, le, lt, min_len), a docstring and the
    unit it is measured in (``"fraction"``, ``"quote currency"``; empty for names)."""
    meta = {"doc": doc, "unit": unit, "checks": checks}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)

"""Parameters declared with their constraints, beside what they configure.

``spec(default, doc=..., unit=..., ge=..., lt=...)`` is a dataclass field that carries its
documentation, its unit and its bounds (``ge``, ``gt``, ``le``, ``lt``, ``min_len``).
:mod:`model.config` builds and validates every section of a run's configuration from these
declarations, the trading rules' parameter sections (:mod:`agents.strategies`) included: one
validator, one error format, one ``describe()``, and one reference (``contagion config``,
docs/configuration.md) printed from the same fields. This module imports nothing from the
project, so the rules can declare their parameters without importing the model.

The field's metadata holds:

* ``doc``: what the value means, one line;
* ``unit``: what it is measured in (``"fraction"``, ``"quote currency"``, ``"steps"``,
  ``"annualised, fraction per sqrt(year)"``; empty for names, switches and tables);
* ``checks``: the bounds, which the validator enforces;
* ``choices`` (optional): for a value that names one of a set (a mode, a preset), the names
  with a one-line description each, as a mapping or as a function returning one (looked up
  when needed, so names registered later are listed too); the validator refuses other names
  and the reference lists them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["spec"]


def spec(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = None,
    doc: str = "",
    unit: str = "",
    choices: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    **checks,
):
    """A dataclass field with its constraints (ge, gt, le, lt, min_len), meaning and unit.

    Args:
        default: the default value (or ``factory`` for a mutable one).
        doc: what the value means, one line.
        unit: what it is measured in, e.g. ``"fraction of notional"`` or ``"steps"``.
        choices: name -> one-line description of each allowed value (or a function returning
            that mapping), for values that name a mode or a preset.
        **checks: bounds: ``ge``, ``gt``, ``le``, ``lt`` (numbers), ``min_len`` (lists, text).
    """
    meta = {"doc": doc, "unit": unit, "checks": checks}
    if choices is not None:
        meta["choices"] = choices
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)

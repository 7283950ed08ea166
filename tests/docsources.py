"""The sources of the docs' numbers (tests/docnumbers.py): each builds, once, the namespace that
marker expressions are evaluated in.

A source is named ``kind:argument``, optionally with dotted-key overrides in brackets
(``demo[shocks.0.return=-0.12]``, ``run:baseline[contagion.max_edges=100000000]``):

* ``config:NAME``: a shipped config or sweep file (``experiments/configs/NAME.toml`` or
  ``experiments/NAME.toml``): ``cfg`` (the validated Config), ``raw`` (the TOML as read);
* ``code``: the packages themselves: ``model``, ``agents``, ``experiments``, ``benchmarks``
  (submodules import on first use: ``model.model.AGENT_LIMIT``), ``defaults`` (every config
  key's default by dotted key);
* ``run:NAME``: a fresh run of a shipped config: ``summary`` (summary.json), ``share`` (the
  scenario's liquidated share of open interest), ``tables``, ``model``, ``text`` (the scenario
  comparison that ``contagion run`` prints);
* ``demo``: ``contagion demo``: ``text`` (what it prints), ``cross`` and ``iso`` (the
  comparison's numbers, :class:`experiments.demo.CascadeStats`), ``rounds`` and ``iso_rounds``
  (the narrator's round stories of the shock step, by round: ``rounds[1].accounts``),
  ``market`` and ``iso_market`` (price, fundamental by ``[step, symbol]``), ``cfg``.

More kinds (studies, validation checks) are registered further down.
"""

from __future__ import annotations

import functools
import importlib
import re
import tomllib
from pathlib import Path
from types import ModuleType

from tests.docnumbers import ROOT, Source, View, wrap

__all__ = ["SOURCES"]


def _split(arg: str) -> tuple[str, dict]:
    """``baseline[a.b=1,c=x]`` -> ("baseline", {"a.b": "1", "c": "x"})."""
    m = re.fullmatch(r"([^\[]*)(?:\[(.*)\])?", arg)
    name, inside = m.group(1), m.group(2) or ""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(inside + ","):
        depth += ch in "[{" and 1 or ch in "]}" and -1 or 0
        if ch == "," and depth == 0:
            items.append(inside[start:i])
            start = i + 1
    overrides = {}
    for item in filter(None, items):
        key, value = item.split("=", 1)
        overrides[key] = value
    return name, overrides


def _config_path(name: str) -> Path:
    for folder in (ROOT / "experiments" / "configs", ROOT / "experiments"):
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no config or sweep file named {name}")


# --------------------------------------------------------------------------------------------
# Cheap sources
# --------------------------------------------------------------------------------------------


def _config(arg: str) -> dict:
    from model.config import load_config

    path = _config_path(arg)
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    ns = {"raw": raw}
    if "sweep" not in raw:
        ns["cfg"] = load_config(path)
    return ns


class _Package(View):
    """A package whose submodules import on first use (``model.model.AGENT_LIMIT``)."""

    def __getattr__(self, name):
        mod: ModuleType = self._obj
        try:
            value = getattr(mod, name)
        except AttributeError:
            value = importlib.import_module(f"{mod.__name__}.{name}")
        return _Package(value) if isinstance(value, ModuleType) else wrap(value)


def _code(arg: str) -> dict:
    from model.config import describe

    packages = {name: _Package(importlib.import_module(name)) for name in _PACKAGES}
    defaults = {row["key"]: row["default"] for row in describe()}
    return {**packages, "defaults": defaults}


_PACKAGES = ("model", "agents", "experiments", "benchmarks")


# --------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------


def _run(arg: str) -> dict:
    import warnings

    from experiments.scenarios import liquidated_share, scenario_report
    from model import ContagionModel, load_config

    name, overrides = _split(arg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ContagionModel(load_config(_config_path(name), overrides=overrides)).run()
    summary = model.summary()
    text = scenario_report(model, summary) if model.config.scenario is not None else ""
    return {
        "summary": summary,
        "share": liquidated_share(model),
        "model": model,
        "tables": _Lazy(model.tables),
        "cfg": model.config,
        "text": text,
    }


class _Lazy:
    """A value computed when first used (a run's tables are not always needed)."""

    def __init__(self, fn):
        self._fn = fn

    @functools.cached_property
    def value(self):
        return self._fn()

    def __getattr__(self, name):
        return getattr(self.value, name)

    def __getitem__(self, key):
        return self.value[key]


def _demo(arg: str) -> dict:
    """``contagion demo`` with ``--set`` overrides (``demo[assets.BTC.depth=4e6]``)."""
    from experiments.demo import narrate_demo

    _, overrides = _split(arg)
    said = []
    demo = narrate_demo(overrides, said.append)
    step = demo.cfg.shocks[0].step
    narrator = demo.cross.narrator
    before = narrator.previous_price(step)
    opened = narrator.step_open[step]
    symbols = demo.cross.model.symbols
    return {
        "open_move": {s: float(opened[j] / before[j] - 1) for j, s in enumerate(symbols)},
        "maintenance": {a.symbol: 1 / (2 * a.max_leverage) for a in demo.cfg.assets},
        "text": "\n".join(said) + "\n",
        "cfg": demo.cfg,
        "cross": demo.cross_stats,
        "iso": demo.iso_stats,
        "rounds": {s.round: s for s in demo.cross.stories if s.step == step},
        "iso_rounds": {s.round: s for s in demo.iso.stories if s.step == step},
        "market": _prices(demo.cross.tables["market"]),
        "iso_market": _prices(demo.iso.tables["market"]),
        "cross_summary": demo.cross.model.summary(),
        "iso_summary": demo.iso.model.summary(),
        "liquidations": demo.cross.tables["liquidations"],
        "population": demo.cross.model.population,
    }


def _prices(market):
    """market.parquet indexed by (step, symbol): ``market.price[5, "BTC"]``."""
    table = market.copy()
    table["asset"] = table["asset"].astype(str)
    return table.set_index(["step", "asset"])


def _dashboard(arg: str) -> dict:
    """The dashboard's model with its sliders set (``dashboard[leverage=30]``), stepped to
    the end of its shock step, as the screenshot in docs/tutorial.md shows it."""
    import numpy as np

    from experiments.app import DashboardModel

    _, sliders = _split(arg)
    model = DashboardModel(**{k: float(v) for k, v in sliders.items()})
    for _ in range(model.config.shocks[0].step):
        model.step()
    lev = model.recorder.initial_leverage
    return {
        "leverage": model.config.traders.leverage,
        "mean_leverage": float(np.mean(lev[np.isfinite(lev)])),
        "traders": model.book.n_traders,
        "accounts": int((model.liquidation_count > 0).sum()),
        "rounds": model.last.rounds,
        "move": {
            s: float(model.mark[j] / model.market.initial_price[j] - 1)
            for j, s in enumerate(model.symbols)
        },
        "fund": float(model.engine.insurance_fund),
    }


SOURCES = {
    "config": Source(_config, slow=False),
    "code": Source(_code, slow=False),
    "run": Source(_run),
    "demo": Source(_demo),
    "dashboard": Source(_dashboard),
}

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
  comparison that ``contagion run`` prints), ``folder_megabytes()`` and ``file_megabytes(name)``
  (the size of the run folder it writes, and of one of its files);
* ``demo``: ``contagion demo``: ``text`` (what it prints), ``cross`` and ``iso`` (the
  comparison's numbers, :class:`experiments.demo.CascadeStats`), ``rounds`` and ``iso_rounds``
  (the narrator's round stories of the shock step, by round: ``rounds[1].accounts``),
  ``market`` and ``iso_market`` (price, fundamental by ``[step, symbol]``), ``cfg``,
  ``steps`` (steps.parquet by step), ``bought(who, j)`` (the share of the shock step's net
  forced sales of asset ``j`` that ``"makers"`` or ``"resting"`` orders bought).

* ``helpers:NAME``: the text a builder of tests/helpers.py makes;
* ``dashboard[SLIDER=VALUE,...]``: the dashboard's model with those slider values, stepped
  through its shock step;
* ``benchmark:contagion_step[traders=N,shock=R]``: benchmarks/contagion_step.py's one-step
  market: ``liquidations`` (account-rounds), ``rounds``, ``graph`` (the recorder's info);
* ``study:NAME``: the sweep ``experiments/NAME.toml``, run in full (several minutes; with
  ``CONTAGION_DOCS_CACHE=DIR`` the sweep folder is kept in ``DIR/NAME`` and a later session only
  finishes what is missing, as ``--resume`` does): ``s`` (a :class:`Study`: cell means,
  crossings, paired differences, Sobol indices), ``runs``, ``cascades``;
* ``validate:NAME``: the full variant of the validation check ``run_NAME`` of
  ``experiments/validation/NAME.py`` (with ``CONTAGION_DOCS_CACHE=DIR`` kept in ``DIR`` and
  reused while the engine, the rules, the checks and the configs are unchanged): the result's ``measured``, ``table``, ``data``,
  ``passed``, ``notes``; ``runs``, the check's table of runs (``data["runs"]``) indexed by its
  first two columns (``runs.loc[("F", 43), "sd"]``, ``runs.loc[(20.0, 1), "skew"]``);
  ``text``, the rows of its per-seed table when the check's module has ``seed_table``;
* ``exploration``: the configurations of docs/validation.md's "Where the stylized facts come
  from" (:data:`CONFIGURATIONS`) at the seeds 42-46: ``stat``, ``median``, ``passing``,
  ``facts`` (each run's statistics), ``text`` (the section's tables);
* ``venue:NAME``: a venue preset of model/venues.py: ``preset``, ``haircut(*symbols)``;
* ``collateral[F,...]``: ``oct-2025-collateral`` with its collateral books' depths scaled by
  each factor ``F``: ``text`` (the rows of docs/market-realism.md's table), ``run(F)`` (that
  run's ``run:`` namespace); ``market``, ``headline``, ``recovered(symbol, level)`` of the
  shipped run;
* ``liquidity``: the demo's market on the static book and on the market makers' book, the two
  runs of docs/figures/liquidity_static_vs_makers.png: ``static`` and ``makers``, each with
  ``accounts``, ``rounds``, ``market``, ``steps``, ``low(sym)``, ``walked(round, sym)``,
  ``bought(who, sym)`` of the shock step;
* ``impact``: the impact-law measurement of tests/test_impact_law.py (its builders in
  tests/helpers.py): ``S``, ``slope``, ``spread``, ``decay_slope``, ``gap``, ``decay(tau)``,
  ``static_S``, ``static_decay(tau)``, ``bands``, ``G(tau)`` (see :func:`_impact`);
* ``sp500``: the reference series of the stylized-facts check: ``stats``, ``windows(days)``,
  ``fit(dist)`` (GARCH(1,1) parameters; needs ``arch``).
* ``calibration:NAME``, ``calibrations``, ``stress:NAME/stress-S``, ``calfile:NAME``,
  ``coverage``, ``budgets``: the shipped calibrations of ``experiments/calibrations/`` (the
  published posteriors, predictive runs, stress tables and coverage study, read and summarised
  with the report's own functions), the calibration files, and the methods' minimum budgets
  (each builder says what its namespace holds);
* ``recovery:METHOD[budget=N]``: the parameter-recovery check of tests/test_calibrate.py run
  afresh (about a minute).
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import re
import tempfile
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
    rows = describe()
    defaults = {row["key"]: row["default"] for row in rows}
    bounds = {row["key"]: row["checks"] for row in rows}
    return {**packages, "defaults": defaults, "bounds": bounds}


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
        "folder_megabytes": lambda: sum(_file_sizes(model).values()) / 1e6,
        "file_megabytes": lambda name: _file_sizes(model)[name] / 1e6,
    }


@functools.cache
def _file_sizes(model) -> dict[str, int]:
    """Bytes of every file of the run folder ``ContagionModel.write_results`` writes."""
    with tempfile.TemporaryDirectory() as tmp:
        out = model.write_results(Path(tmp) / "run")
        return {str(p.relative_to(out)): p.stat().st_size for p in out.rglob("*") if p.is_file()}


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
        "steps": demo.cross.tables["steps"].set_index("step"),
        "bought": functools.partial(_bought, demo.cross.stories, step),
    }


def _bought(stories, step: int, who: str, j: int) -> float:
    """The share of step ``step``'s net forced sales of asset ``j`` (summed over its rounds)
    that ``who`` (``"makers"`` or ``"resting"``, as :class:`RoundStory` records them) bought."""
    rounds = [s for s in stories if s.step == step and getattr(s, who) is not None]
    sold = sum(float(s.sold[j] - s.bought[j]) for s in rounds)
    return sum(float(getattr(s, who)[j]) for s in rounds) / sold if sold > 0 else float("nan")


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


def _benchmark(arg: str) -> dict:
    from benchmarks.contagion_step import benchmark_config
    from model import ContagionModel

    name, options = _split(arg)
    if name != "contagion_step":
        raise KeyError(f"no benchmark named {name}")
    cfg = benchmark_config(int(options["traders"]), float(options["shock"]))
    model = ContagionModel(cfg, create_agents=False)
    model.step()
    return {
        "liquidations": int(sum(model.last.per_round_accounts)),
        "rounds": model.last.rounds,
        "graph": model.recorder.info(),
    }


# --------------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------------

# Short names of the swept keys, for the helpers' keyword arguments.
SHORT = {
    "lev": "traders.leverage",
    "vol": "market.volatility",
    "mode": "margin.mode",
    "shock": "shocks.0.return",
}


class Study:
    """The runs of a sweep, with the statistics the docs quote.

    Keyword arguments select runs by swept key, by short name (``lev=8, vol=0.6,
    mode="cross", shock=-0.3``); ``x`` names the key along a curve.
    """

    def __init__(self, runs, cascades, folder: Path):
        self.runs = runs[runs["status"] == "ok"]
        self.cascades = cascades
        self.folder = folder

    def select(self, **where):
        rows = self.runs
        for k, v in where.items():
            col = SHORT.get(k, k)
            rows = rows[rows[col] == v] if not isinstance(v, tuple) else rows[rows[col].isin(v)]
        return rows

    def cell(self, metric: str, stat: str = "mean", **where) -> float:
        """A statistic of ``metric`` over the selected runs."""
        return float(getattr(self.select(**where)[metric], stat)())

    def curve(self, metric: str, x: str = "lev", stat: str = "mean", **where):
        """``metric``'s statistic at each value of ``x`` (a pandas Series)."""
        return getattr(self.select(**where).groupby(SHORT.get(x, x))[metric], stat)()

    def crossing(self, metric: str, level: float, x: str = "lev", **where) -> float:
        """Where the mean curve of ``metric`` first reaches ``level`` (interpolated in log x)."""
        import numpy as np

        c = self.curve(metric, x, **where)
        xs, ys = np.log(c.index.to_numpy(dtype=float)), c.to_numpy(dtype=float)
        above = np.flatnonzero(ys >= level)
        if above.size == 0 or above[0] == 0:
            return float("nan")
        i = above[0]
        t = (level - ys[i - 1]) / (ys[i] - ys[i - 1])
        return float(np.exp(xs[i - 1] + t * (xs[i] - xs[i - 1])))

    def paired(self, metric: str, **where):
        """Cross minus isolated, run by run (same point otherwise, same replicate)."""
        from experiments.plots import paired_difference

        keys = [k for k in SHORT.values() if k in self.runs.columns]
        runs = self.select(**where)
        return paired_difference(runs, metric, keys)["difference"]

    def paired_cells(self, metric: str, **where):
        """The mean paired difference (cross - isolated) of every grid cell (a Series indexed
        by the swept keys other than the margin mode)."""
        from experiments.plots import paired_difference

        keys = [k for k in SHORT.values() if k in self.runs.columns]
        diff = paired_difference(self.select(**where), metric, keys)
        other = [k for k in keys if k != SHORT["mode"]]
        return diff.groupby(other)["difference"].mean()

    @staticmethod
    def span(values) -> tuple[float, float]:
        """(smallest, largest) of some values: a range as a page quotes it."""
        return float(min(values)), float(max(values))

    def largest_cascade(self, **where) -> int:
        """The most accounts liquidated in one step, over the selected runs."""
        rows = self.select(**where)[["point", "replicate"]]
        sizes = self.cascades.merge(rows, on=["point", "replicate"])["size"]
        return int(sizes.max()) if len(sizes) else 0

    def rerun(self, replicate: int = 0, **where):
        """The finished model of one run of the sweep (the selected point, this replicate),
        run again from the sweep's base config with the run's own seed."""
        from model import ContagionModel
        from model.config import apply_overrides, build_config

        meta = json.loads((self.folder / "sweep.json").read_text())
        row = self.select(**where)
        row = row[row["replicate"] == replicate].iloc[0]
        params = meta["points"][int(row["point"])]
        data = apply_overrides(meta["base"], {**params, "seed": int(row["seed"])})
        return ContagionModel(build_config(data, base_dir=meta["base_dir"])).run()

    def survivors(self, replicate: int = 0, **where) -> dict:
        """Of a rerun's accounts never liquidated: how many (``accounts``), how many end flat
        (``flat``), how many of those were auto-deleveraged (``adl``), and how many started long
        one asset and short the other (``mixed``)."""
        import numpy as np

        from model.fills import Kind

        model = self.rerun(replicate, **where)
        never = model.engine.liquidation_count == 0
        q0 = model.population.qty[never]
        flat = (model.book.qty[never] == 0).all(axis=1)
        fills = model.engine.fills.columns()
        adl_ids = np.unique(fills["trader_id"][fills["kind"] == Kind.ADL])
        deleveraged = np.isin(model.book.ids[never], adl_ids)
        return {
            "accounts": int(never.sum()),
            "flat": int(flat.sum()),
            "adl": int((flat & deleveraged).sum()),
            "mixed": int(((q0 > 0).any(axis=1) & (q0 < 0).any(axis=1)).sum()),
        }

    def sobol(self, metric: str, key: str) -> dict:
        """First-order and total Sobol indices of ``key`` (a dotted or short name)."""
        table = self._sobol()
        row = table[(table["metric"] == metric) & (table["parameter"] == SHORT.get(key, key))]
        return row.iloc[0].to_dict()

    @functools.cached_property
    def _table(self):
        from experiments.sensitivity import sobol_table

        metrics = ["fraction_liquidated", "largest_cascade", "max_drawdown", "amplification"]
        return sobol_table(self.folder, metrics)

    def _sobol(self):
        return self._table


def _study(arg: str) -> dict:
    import pandas as pd

    from experiments.sweep import ProcessExecutor, SerialExecutor, load_sweep, run_sweep

    cache = os.environ.get("CONTAGION_DOCS_CACHE")
    root = Path(cache) if cache else Path(tempfile.mkdtemp(prefix="docs-study-"))
    out = root / arg
    workers = int(os.environ.get("CONTAGION_DOCS_WORKERS", "2"))
    executor = ProcessExecutor(workers) if workers > 1 else SerialExecutor()
    spec = load_sweep(ROOT / "experiments" / f"{arg}.toml")
    runs = run_sweep(spec, out, executor, resume=(out / "sweep.json").exists(), progress=False)
    cascades = pd.read_parquet(out / "cascades.parquet")
    return {
        "s": Study(runs, cascades, out),
        "runs": runs,
        "cascades": cascades,
        "meta": json.loads((out / "sweep.json").read_text()),
    }


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _code_digest() -> str:
    """A digest of the code a validation check's result depends on (the engine, the rules,
    the checks and the shipped configs): a cached result made by other code is not reused."""
    import hashlib

    h = hashlib.sha256()
    folders = ("model", "agents", "experiments/validation", "experiments/configs")
    for path in sorted(p for f in folders for p in (ROOT / f).rglob("*") if p.is_file()):
        if path.suffix in (".py", ".toml", ".csv"):
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _validate(arg: str) -> dict:
    """A validation check's full variant (kept in ``CONTAGION_DOCS_CACHE``, when set, as a
    pickle named by the check and :func:`_code_digest`: a later session with the same code
    reads it instead of running the check again)."""
    import pickle

    import pandas as pd

    from experiments.validation import single_threaded_blas

    cache = os.environ.get("CONTAGION_DOCS_CACHE")
    path = Path(cache) / f"validate-{arg}-{_code_digest()}.pickle" if cache else None
    if path is not None and path.exists():
        result = pickle.loads(path.read_bytes())
    else:
        module = importlib.import_module(f"experiments.validation.{arg}")
        with single_threaded_blas():
            result = getattr(module, f"run_{arg}")(quick=False)
        if path is not None:
            path.write_bytes(pickle.dumps(result))
    runs = result["data"].get("runs")
    module = importlib.import_module(f"experiments.validation.{arg}")
    # the printed text: a check's per-seed table when it has one (check 6b's seed_table)
    text = module.seed_table(runs) if hasattr(module, "seed_table") else ""
    if isinstance(runs, pd.DataFrame):  # one row per run, by its first two columns
        runs = runs.set_index(list(runs.columns[:2]))  # (variant, seed), (leverage cap, seed)
    return {**result, "r": result, "runs": runs, "text": text}


# --------------------------------------------------------------------------------------------
# Where the stylized facts come from (docs/validation.md): the configurations tried
# --------------------------------------------------------------------------------------------

# Settings added to the baseline to get each configuration of docs/validation.md's table: the
# old baseline (OLD) had no GARCH fundamental and none of the venue effects.
_OLD = {
    "market.garch_alpha": 0.0,
    "market.garch_beta": 0.0,
    "market.innovation_dof": "none",
    "market.depth_stress": 0.0,
    "market.mark_lag": 0.0,
    "market.funding_interval": 0,
    "traders.reentry_steps": 0,
}
_RULES_B = {"hold": 0.7, "target_leverage": 0.05, "momentum": 0.05, "value": 0.15, "noise": 0.05}
_RULES_D = {"hold": 0.4, "target_leverage": 0.2, "momentum": 0.1, "value": 0.2, "noise": 0.1}
_VENUE = {
    "market.depth_stress": 0.02,
    "market.depth_recovery": 0.1,
    "market.mark_lag": 0.2,
    "market.funding_interval": 8,
    "traders.reentry_steps": 24,
}
_GARCH = {"market.garch_alpha": 0.10, "market.garch_beta": 0.885}
_GARCH_T = {"market.garch_alpha": 0.0995, "market.garch_beta": 0.9002, "market.innovation_dof": 6.5}
_B = {**_OLD, "traders.strategies": _RULES_B}
_C = {**_B, **_VENUE}
CONFIGURATIONS = {
    "A": _OLD,
    "B": _B,
    "C": _C,
    "D": {**_C, "traders.strategies": _RULES_D},
    "E": {**_C, "market.jump_intensity": 25.0, "market.jump_volatility": 0.03},
    "F": {**_OLD, **_GARCH},
    "G": {**_C, **_GARCH},
    "H": {**_OLD, **_GARCH_T},
    "I": {**_C, **_GARCH_T},
    "J": {},  # the baseline itself: H with the venue effects of C
    # I with the noise rule's share moved to hold
    "I-hold": {**_C, **_GARCH_T, "traders.strategies": {**_RULES_B, "noise": 0.0, "hold": 0.75}},
}
SEEDS = range(42, 47)
_STATS = ("excess kurtosis", "Hill index (top 5%)", "ACF(r, 1)", "ACF(|r|, 1)", "ACF(|r|, 50)")


@functools.cache
def facts(letter: str, seed: int) -> dict:
    """One run of a configuration: per asset, the statistics of the market price's and the
    fundamental's log returns, whether the asset passes every band, and the steps with forced
    sales; and the accounts liquidated. Kept in ``CONTAGION_DOCS_CACHE`` when set."""
    import pickle

    cache = os.environ.get("CONTAGION_DOCS_CACHE")
    path = Path(cache) / f"facts-{letter}-{seed}.pickle" if cache else None
    if path is not None and path.exists():
        return pickle.loads(path.read_bytes())
    out = _facts(letter, seed)
    if path is not None:
        path.write_bytes(pickle.dumps(out))
    return out


def _facts(letter: str, seed: int) -> dict:
    from experiments.validation.stylized_facts import BANDS, return_stats
    from model import ContagionModel, load_config

    overrides = {**CONFIGURATIONS[letter], "seed": seed}
    cfg = load_config(_config_path("baseline"), overrides=overrides)
    model = ContagionModel(cfg, create_agents=False).run()
    market = model.tables()["market"]
    out = {"accounts": model.summary()["accounts_liquidated"]}
    for j, sym in enumerate(cfg.symbols):
        g = market[market["asset"] == sym].sort_values("step")
        p0 = cfg.assets[j].price
        price = return_stats(_log_returns(p0, g["price"].to_numpy(dtype=float)))
        fundamental = return_stats(_log_returns(p0, g["fundamental"].to_numpy(dtype=float)))
        out[sym] = {
            "price": price,
            "fundamental": fundamental,
            "passes": all(test(price[k]) for k, (test, _) in BANDS.items()),
            "forced_steps": int((g["forced_flow"].to_numpy() != 0).sum()),
        }
    out["passes"] = all(out[s]["passes"] for s in cfg.symbols)
    return out


def _row(letter: str, sym: str) -> str:
    """One row of the configurations table, as docs/validation.md writes it."""
    f = facts(letter, 42)[sym]["price"]
    cells = [
        f"**{letter}**" if letter == "J" else letter,
        sym,
        f"{f['excess kurtosis']:.1f}",
        f"{f['Hill index (top 5%)']:.2f}",
        f"{f['ACF(r, 1)']:+.3f}",
        f"{f['ACF(|r|, 1)']:.3f}",
        f"{f['ACF(|r|, 50)']:+.3f}",
        "PASS" if facts(letter, 42)[sym]["passes"] else "fail",
        f"{sum(facts(letter, k)[sym]['passes'] for k in SEEDS)} "
        f"({sum(facts(letter, k)['passes'] for k in SEEDS)})",
    ]
    return "| " + " | ".join(cells) + " |"


def _series_row(sym: str, series: str) -> str:
    f = facts("J", 42)[sym][series]
    name = "fundamental" if series == "fundamental" else "market price"
    cells = [
        sym,
        name,
        f"{f['excess kurtosis']:.1f}",
        f"{f['Hill index (top 5%)']:.2f}",
        f"{f['ACF(r, 1)']:+.3f}",
        f"{f['ACF(|r|, 1)']:.3f}",
        f"{f['ACF(|r|, 50)']:+.3f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _exploration(arg: str) -> dict:
    """Every configuration of docs/validation.md's table at the seeds 42-46 (55 runs of the
    baseline: several minutes), the two tables as text, and helpers for the prose."""
    import numpy as np

    letters = [k for k in CONFIGURATIONS if k != "I-hold"]
    rows = [_row(k, s) for k in letters for s in ("BTC", "ETH")]
    rows += [_series_row(s, series) for s in ("BTC", "ETH") for series in ("fundamental", "price")]

    def stat(letter, asset, key, seed=42, series="price"):
        return facts(letter, seed)[asset][series][key]

    def over_seeds(letter, asset, key, series="price"):
        return np.array([stat(letter, asset, key, k, series) for k in SEEDS])

    return {
        "text": "\n".join(rows) + "\n",
        "facts": facts,
        "stat": stat,
        "over_seeds": over_seeds,
        "median": lambda letter, asset, key: float(np.median(over_seeds(letter, asset, key))),
        "passing": lambda letter: sum(facts(letter, k)["passes"] for k in SEEDS),
        "span": lambda values: (float(min(values)), float(max(values))),
        "seeds": list(SEEDS),
        "np": np,
    }


def _sp500(arg: str) -> dict:
    """The reference series of the stylized-facts check, and its windows (needs ``arch``)."""
    import numpy as np

    from experiments.validation.stylized_facts import BANDS, reference_returns, return_stats

    r = reference_returns()

    def windows(days: int, every: int = 50) -> dict:
        """Share of windows of ``days`` returns (one every ``every`` days) in each band and in
        every band."""
        starts = range(0, r.size - days + 1, every)
        verdicts = []
        for a in starts:
            st = return_stats(r[a : a + days])
            verdicts.append({k: bool(test(st[k])) for k, (test, _) in BANDS.items()})
        share = {k: float(np.mean([v[k] for v in verdicts])) for k in BANDS}
        share["all"] = float(np.mean([all(v.values()) for v in verdicts]))
        return share

    @functools.cache
    def fit(dist: str) -> dict:
        """GARCH(1,1) parameters of the series (percent returns, constant mean)."""
        from arch import arch_model

        result = arch_model(100 * r, vol="GARCH", p=1, q=1, dist=dist).fit(disp="off")
        return dict(result.params)

    return {"stats": return_stats(r), "windows": functools.cache(windows), "fit": fit}


def _log_returns(p0, prices):
    import numpy as np

    return np.diff(np.log(np.concatenate([[p0], prices])))


def _helpers(arg: str) -> dict:
    """The text a builder of tests/helpers.py makes (``helpers:adl_worked_table``)."""
    from tests import helpers

    return {"text": getattr(helpers, arg)()}


# --------------------------------------------------------------------------------------------
# Shipped calibrations (docs/calibration.md): the published artefacts, read and summarised
# afresh with the report's own functions
# --------------------------------------------------------------------------------------------

_CALIBRATIONS = ROOT / "experiments" / "calibrations"


def _shipped_spec(meta: dict):
    """The priors and targets of a shipped calibration.json, as the report's functions take
    them (no base run needed: the folder is read, not rerun)."""
    from types import SimpleNamespace

    from experiments.calibrate import Prior, Target

    priors = [
        Prior(key, float(lo), float(hi), scale == "log")
        for key, (lo, hi, scale) in meta["parameters"].items()
    ]
    targets = [
        Target(m, *(map(float, v) if isinstance(v, list) else (float(v), float(v))))
        for m, v in meta["targets"].items()
    ]
    return SimpleNamespace(priors=priors, targets=targets, keys=[p.key for p in priors])


def _calibration(arg: str) -> dict:
    """A shipped calibration folder ``experiments/calibrations/NAME/``: ``cal``
    (calibration.json: priors, targets, the base as run), ``info`` (method.json: runs,
    generations, population, ess, CPU seconds), ``posterior``, ``predictive``, ``parameters``
    and ``targets`` (how many); per parameter ``median(key)``, ``q05(key)``, ``q95(key)``,
    ``width(key)`` (the report's width_ratio), ``r(a, b)`` (posterior correlation); per target
    ``predicted(metric)`` (posterior-predictive median), ``predicted_range(metric)`` (its 90%
    interval) and ``band(metric)`` (the observed value or band)."""
    import pandas as pd

    from experiments.calibration_report import (
        correlations,
        identifiability,
        predictive_summary,
    )

    folder = _CALIBRATIONS / arg
    meta = json.loads((folder / "calibration.json").read_text())
    info = json.loads((folder / "method.json").read_text())
    spec = _shipped_spec(meta)
    posterior = pd.read_parquet(folder / "posterior.parquet")
    predictive = pd.read_parquet(folder / "predictive.parquet")
    ident = identifiability(spec, posterior).set_index("parameter")
    corr = correlations(spec, posterior)
    pred = predictive_summary(spec, predictive).set_index("target")
    bands = {t.metric: (t.low, t.high) for t in spec.targets}
    return {
        "cal": meta,
        "info": info,
        "posterior": posterior,
        "predictive": predictive,
        "parameters": len(spec.priors),
        "targets": len(spec.targets),
        "median": lambda key: float(ident.loc[key, "median"]),
        "q05": lambda key: float(ident.loc[key, "q05"]),
        "q95": lambda key: float(ident.loc[key, "q95"]),
        "width": lambda key: float(ident.loc[key, "width_ratio"]),
        "r": lambda a, b: float(corr.loc[a, b]),
        "predicted": lambda metric: float(pred.loc[metric, "median"]),
        "predicted_range": lambda m: (float(pred.loc[m, "q05"]), float(pred.loc[m, "q95"])),
        "band": lambda metric: bands[metric],
    }


def _calibrations(arg: str) -> dict:
    """Every shipped event calibration at once (``calibration:NAME`` for each folder with a
    posterior and a scenario base): ``each`` (name -> that namespace), ``info(key)`` and
    ``base(dotted.key)`` (the list over the events), ``same(values)`` (their common value,
    NaN when they differ)."""
    names = sorted(
        p.name
        for p in _CALIBRATIONS.iterdir()
        if (p / "posterior.parquet").is_file() and "scenario" in _shipped_base(p)
    )
    each = {name: _calibration(name) for name in names}

    def base(key: str) -> list:
        out = []
        for ns in each.values():
            value = ns["cal"]["base"]
            for part in key.split("."):
                value = value[int(part)] if isinstance(value, list) else value[part]
            out.append(value)
        return out

    def same(values) -> float:
        values = list(values)
        return float(values[0]) if all(v == values[0] for v in values) else float("nan")

    return {
        "each": each,
        "names": names,
        "info": lambda key: [ns["info"][key] for ns in each.values()],
        "base": base,
        "same": same,
    }


def _shipped_base(folder: Path) -> dict:
    return json.loads((folder / "calibration.json").read_text())["base"]


def _stress(arg: str) -> dict:
    """A shipped stress folder (``stress:oct-2025/stress-btc-20``): ``table``
    (stress.parquet), ``runs``, and per metric ``q05(m)``, ``median(m)``, ``q95(m)``,
    ``positive(m)`` (the share of runs above zero), from the report's own summary."""
    import pandas as pd

    from experiments.calibration_report import stress_summary

    table = pd.read_parquet(_CALIBRATIONS / arg / "stress.parquet")
    summary = stress_summary(table).set_index("metric")
    return {
        "table": table,
        "runs": len(table),
        "q05": lambda m: float(summary.loc[m, "q05"]),
        "median": lambda m: float(summary.loc[m, "median"]),
        "q95": lambda m: float(summary.loc[m, "q95"]),
        "positive": lambda m: float(summary.loc[m, "P(> 0)"]),
    }


def _calfile(arg: str) -> dict:
    """A calibration or stress file as written (``experiments/calibrations/NAME.toml``):
    ``raw``."""
    with (_CALIBRATIONS / f"{arg}.toml").open("rb") as fh:
        return {"raw": tomllib.load(fh)}


def _coverage(arg: str) -> dict:
    """The coverage study's shipped results (``experiments/calibrations/coverage/``, written
    by ``experiments.calibration_study.coverage_study``): ``summary`` (the json), ``table``
    (one row per truth and parameter), ``covered(key)`` and ``count(key)`` (truths covered,
    truths), ``misses(key)`` (the truths missed, sorted), ``miss_u`` (where the misses lie on
    their prior's unit scale), ``ess`` (the truths' effective sample sizes). The table's
    truths are checked against the study's own draws first."""
    import numpy as np
    import pandas as pd

    from experiments.calibration_study import PARAMETERS, draw_truths

    method = arg or "abc-smc"
    folder = _CALIBRATIONS / "coverage"
    summary = json.loads((folder / f"coverage-{method}.json").read_text())
    table = pd.read_parquet(folder / f"coverage-{method}.parquet")
    drawn = draw_truths(summary["truths"], summary["seed"])
    for row in table.itertuples():
        # to a few units in the last place: the draw's exp and log are numpy's, whose results
        # move by an ulp between processors (numpy picks its loops by the processor's
        # instructions) and releases; another draw would differ in the first digits
        if not np.isclose(row.truth, drawn[row.truth_index][0][row.parameter], rtol=1e-13, atol=0):
            raise ValueError(f"truth {row.truth_index} is not the study's draw")

    def unit(key: str, x: float) -> float:
        lo, hi, _ = PARAMETERS[key]
        return float(np.log(x / lo) / np.log(hi / lo))

    missed = table[~table["covered"]]
    return {
        "summary": summary,
        "table": table,
        "covered": lambda key: int(table.loc[table["parameter"] == key, "covered"].sum()),
        "count": lambda key: int((table["parameter"] == key).sum()),
        "misses": lambda key: sorted(missed.loc[missed["parameter"] == key, "truth"]),
        "miss_u": [unit(r.parameter, r.truth) for r in missed.itertuples()],
        "ess": table.groupby("truth_index")["ess"].first().to_list(),
    }


def _budgets(arg: str) -> dict:
    """``minimum_budget(method, parameters=1, population=20)``: the fewest runs
    ``experiments.calibrate.minimum_budget`` lets a method start with."""
    from types import SimpleNamespace

    from experiments.calibrate import minimum_budget

    def least(method: str, parameters: int = 1, population: int = 20) -> int:
        spec = SimpleNamespace(method=method, priors=[None] * parameters, population=population)
        return minimum_budget(spec)

    return {"minimum_budget": least}


def _recovery(arg: str) -> dict:
    """The parameter-recovery check (tests/helpers.py ``RECOVERY``) run afresh with its
    method (``recovery:abc-smc``), optionally on another budget (``recovery:abc-smc[budget=300]``):
    ``setup`` (RECOVERY), ``q05``, ``q95``, ``width`` (the interval over the prior's), ``info``
    (method.json: generations, runs)."""
    import pandas as pd

    from experiments.calibrate import load_calibration, run_calibration
    from experiments.calibration_report import identifiability
    from tests.helpers import RECOVERY, recovery_calibration

    method, options = _split(arg)
    budget = int(options["budget"]) if "budget" in options else None
    with tempfile.TemporaryDirectory() as tmp:
        path = recovery_calibration(Path(tmp), method, budget)
        out = Path(tmp) / "out"
        if run_calibration(path, out=out, workers=1, progress=False) != 0:
            raise RuntimeError(f"the recovery calibration {arg} did not finish")
        row = identifiability(load_calibration(path), pd.read_parquet(out / "posterior.parquet"))
        info = json.loads((out / "method.json").read_text())
    row = row.iloc[0]
    return {
        "setup": RECOVERY,
        "q05": float(row["q05"]),
        "q95": float(row["q95"]),
        "width": float(row["width_ratio"]),
        "info": info,
    }


_CALIBRATION_SOURCES = {
    "calibration": Source(_calibration, slow=False),
    "calibrations": Source(_calibrations, slow=False),
    "stress": Source(_stress, slow=False),
    "calfile": Source(_calfile, slow=False),
    "coverage": Source(_coverage, slow=False),
    "budgets": Source(_budgets, slow=False),
    "recovery": Source(_recovery),
}


# --------------------------------------------------------------------------------------------
# docs/market-realism.md: venue presets, the collateral scenario's depths, the liquidity chapter
# --------------------------------------------------------------------------------------------


def _venue(arg: str) -> dict:
    """A venue preset of model/venues.py (``venue:binance``): ``preset``, and
    ``haircut(*symbols)``, the haircut the preset gives those collateral symbols (NaN when they
    differ, so that one number quoted for several symbols fails unless it holds for each)."""
    from model.venues import PRESETS

    preset = PRESETS[arg]

    def haircut(*symbols: str) -> float:
        values = {preset.haircuts[s.upper()].value for s in symbols}
        return values.pop() if len(values) == 1 else float("nan")

    return {"preset": preset, "haircut": haircut}


def _collateral(arg: str) -> dict:
    """``oct-2025-collateral``, and the same with the depths of its collateral books scaled
    together by each factor of ``arg`` (``collateral[0.3,1,10]``; 1 is the shipped run):
    ``text`` (one row of docs/market-realism.md's table per factor), ``run(factor)`` (that
    run's namespace, a ``run:`` source shared with markers that name the same run), ``market``
    (the shipped run's prices by ``[step, symbol]``), ``headline`` (the step of its shocks) and
    ``recovered(symbol, level)`` (steps from the headline to the first close at ``level`` or
    above)."""
    from tests.docnumbers import namespace

    factors = [float(x) for x in arg.strip("[]").split(",") if x]
    cfg = _config("oct-2025-collateral")["cfg"]
    held = [a for a in cfg.assets if a.kind == "collateral"]

    def run(factor: float) -> dict:
        if factor == 1:
            return namespace("run:oct-2025-collateral")
        scaled = ",".join(f"assets.{a.symbol}.depth={factor * a.depth:g}" for a in held)
        return namespace(f"run:oct-2025-collateral[{scaled}]")

    rows = []
    for factor in factors:
        ns = run(factor)
        low = ns["summary"]["collateral_low"]
        label = "1 (shipped)" if factor == 1 else f"{factor:,g}"
        cells = [label, f"{100 * ns['share']:.1f}%", f"{low['USDe']:.3f}"]
        cells += [f"{low['wBETH']:,.0f}", f"{low['BNSOL']:.1f}"]
        cells.append(f"${ns['summary']['collateral_sold_notional'] / 1e6:.2f}M")
        rows.append("| " + " | ".join(cells) + " |")
    shipped = run(1)
    market = _prices(shipped["tables"]["market"])
    headline = cfg.shocks[0].step

    def recovered(symbol: str, level: float) -> int:
        close = market.price.xs(symbol, level="asset")
        return int(close[(close.index > headline) & (close >= level)].index[0] - headline)

    return {
        "text": "\n".join(rows) + "\n",
        "run": lambda factor: wrap(run(factor)),
        "market": market,
        "headline": headline,
        "recovered": recovered,
    }


class _Cascade:
    """A run's shock step as docs/market-realism.md's liquidity chapter reads it, from the
    narrator's round stories and the run's tables."""

    def __init__(self, model, narrator):
        self.model = model
        self.step = model.config.shocks[0].step
        self.stories = [s for s in narrator.stories if s.step == self.step]
        self.rounds = {s.round: s for s in self.stories}
        tables = model.tables()
        self.market = _prices(tables["market"])
        self.steps = tables["steps"].set_index("step")

    @property
    def accounts(self) -> int:
        """Accounts liquidated in the shock step."""
        import numpy as np

        return int(np.unique(np.concatenate([s.rows for s in self.stories])).size)

    def low(self, symbol: str) -> float:
        """The lowest price after a liquidation round of the shock step."""
        j = self.model.symbols.index(symbol)
        return min(float(s.price_after[j]) for s in self.stories)

    def walked(self, round_: int, symbol: str) -> float:
        """The 1% depth round ``round_`` walked, as a share of the calm depth."""
        j = self.model.symbols.index(symbol)
        return float(self.rounds[round_].depth[j] / self.model.config.assets[j].depth)

    def bought(self, who: str, symbol: str) -> float:
        return _bought(self.stories, self.step, who, self.model.symbols.index(symbol))


def _liquidity(arg: str) -> dict:
    """The two runs of docs/figures/liquidity_static_vs_makers.png
    (:func:`experiments.depth_drawing.liquidity_comparison`): the demo's market on the static
    book and on the market makers' book, same accounts and seed: ``static`` and ``makers``
    (:class:`_Cascade`)."""
    from experiments import depth_drawing

    return {
        name: _Cascade(*depth_drawing._run({"liquidity.model": model}))
        for name, model in (("static", "static"), ("makers", "market_makers"))
    }


def _impact(arg: str) -> dict:
    """The impact-law measurement of tests/test_impact_law.py, with the same builders
    (tests/helpers.py): metaorders of every size over every duration on the calm market makers'
    book, and over 20 and 80 steps on the static book. ``S[T]``: peak impact over
    ``0.01 sqrt(Q / d)``; ``slope[T]``: of log peak on log ``Q``; ``spread``: the most a size's
    peak varies with ``T`` (max / min - 1); ``decay_slope[T]`` and ``gap[T]``: the decay's
    log-slope and its largest gap to ``sqrt(1 + x) - sqrt(x)``; ``decay(tau)``: the impact
    ``tau`` steps after a 20-step metaorder over its peak; ``static_S``, ``static_decay``: the
    same on the static book (``S``, ``decay_slope``, ``decay`` and the static ones are means
    over the sizes, which the law makes equal: the test bounds each size); ``bands``, ``window``, ``x_range``, ``sizes``; ``G(tau)``: the
    fitted refill kernel at the default ``liquidity.refill_time``; ``same(values, digits)``:
    the values' common rounding (NaN when they differ)."""
    import numpy as np

    from agents.book import fit_power_kernel
    from model.config import describe
    from tests import helpers

    defaults = {row["key"]: row["default"] for row in describe()}
    sweep = 0.01 * np.sqrt(helpers.IMPACT_SIZES)
    makers = {
        t: helpers.metaorder_impacts(helpers.CALM_MAKERS, t) for t in helpers.IMPACT_DURATIONS
    }
    static = {t: helpers.metaorder_impacts(helpers.STATIC_BOOK, t, tail=10) for t in (20, 80)}
    peaks = np.array([makers[t][0] for t in helpers.IMPACT_DURATIONS])
    checks = {t: helpers.decay_checks(*makers[t], t) for t in helpers.IMPACT_DURATIONS}
    w, a = fit_power_kernel(
        defaults["liquidity.refill_time"],
        defaults["liquidity.kernel_terms"],
        defaults["liquidity.kernel_horizon"],
    )

    def same(values, digits: int) -> float:
        rounded = {round(float(v), digits) for v in values}
        return rounded.pop() if len(rounded) == 1 else float("nan")

    def slope(row):
        return float(np.polyfit(np.log(helpers.IMPACT_SIZES), np.log(row), 1)[0])

    return {
        "S": {t: float(np.mean(makers[t][0] / sweep)) for t in makers},
        "slope": {t: slope(makers[t][0]) for t in makers},
        "spread": float(np.max(peaks.max(axis=0) / peaks.min(axis=0)) - 1),
        "decay_slope": {t: float(np.mean(checks[t][0])) for t in makers},
        "gap": {t: float(checks[t][1]) for t in makers},
        "decay": lambda tau: float(np.mean(makers[20][1][tau] / makers[20][0])),
        "static_S": {t: float(np.mean(static[t][0] / sweep)) for t in static},
        "static_decay": lambda tau: float(np.mean(static[20][1][tau] / static[20][0])),
        "bands": helpers.IMPACT_BANDS,
        "window": helpers.DECAY_WINDOW,
        "x_range": helpers.DECAY_RANGE,
        "sizes": helpers.IMPACT_SIZES.tolist(),
        "G": lambda tau: float(np.sum(w * a**tau)),
        "same": same,
    }


SOURCES = {
    "config": Source(_config, slow=False),
    "code": Source(_code, slow=False),
    "helpers": Source(_helpers, slow=False),
    "venue": Source(_venue, slow=False),
    "run": Source(_run),
    "demo": Source(_demo),
    "liquidity": Source(_liquidity),
    "impact": Source(_impact),
    "collateral": Source(_collateral),
    "dashboard": Source(_dashboard),
    "benchmark": Source(_benchmark),
    "study": Source(_study, heavy=True),
    "validate": Source(_validate, heavy=True),
    "exploration": Source(_exploration, heavy=True),
    "sp500": Source(_sp500),
    **_CALIBRATION_SOURCES,
}

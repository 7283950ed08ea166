"""``contagion demo``: one shock, its cascade told round by round, and the same shock under
isolated margin.

The demo runs ``experiments/configs/demo.toml`` (a small two-asset venue, one scheduled shock)
and narrates it in the terminal *as it happens* (:mod:`experiments.narration`): it listens to the
liquidation engine's rounds (the same ``on_round`` hook that feeds the contagion graph) and
prints, for each round, how many accounts were liquidated, what they sold, how far each price
moved and where the insurance fund stands. It then reruns the same accounts and the same shock under isolated margin (a second real
run, not a scaled copy of the first), compares the two, and states the lesson.

It writes a run folder (the cross-margin run; the isolated run in ``isolated/`` inside it), the
narration (``narration.txt``) and three figures:

* ``prices.png``: each asset's price and fundamental over the run, with liquidation markers, and
  the shock step round by round;
* ``cascade_tree.png``: the contagion tree of the shock step, layered by round;
* ``cross_vs_isolated.png``: price moves and liquidations per round, the two runs side by side;
* ``depth.png``: the book's 1% depth each round of the shock step walked, and at each step's
  close (flat on the static book; with ``--set liquidity.model=market_makers`` the makers pull
  their quotes as the cascade fills their inventory, and the narration says so round by round).

The cascade's tree and its rounds are drawn by :mod:`experiments.cascade_drawing`, which the
run folder's ``cascade.png`` and the dashboard (:mod:`experiments.app`) share.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments import DEMO_CONFIG
from experiments.cascade_drawing import (
    draw_cascade,
    draw_rounds,
    holding_labels,
    holding_order,
    round_prices,
)
from experiments.depth_drawing import plot_depth
from experiments.folders import DEMO_FOLDER, OutputFolder
from experiments.narration import CascadeNarrator, RoundStory, _money, _pct, _price, _print_now
from experiments.run import write_run_folder
from model import storage
from model.config import Config, ConfigError, load_config

__all__ = [
    "DEMO_CONFIG",
    "DemoRun",
    "DemoSession",
    "lesson",
    "narrate_demo",
    "plot_cascade_tree",
    "plot_cross_vs_isolated",
    "plot_prices",
    "run_demo",
    "run_demo_command",
]


# --------------------------------------------------------------------------------------------
# A narrated run
# --------------------------------------------------------------------------------------------


@dataclass
class DemoRun:
    """One real run of the demo config and what the narrator saw."""

    label: str
    model: object
    narrator: CascadeNarrator
    seconds: float
    tables: dict = field(default_factory=dict)

    @property
    def stories(self) -> list[RoundStory]:
        return self.narrator.stories


def run_demo(cfg: Config, label: str, write=None) -> DemoRun:
    """Run ``cfg`` step by step, narrating liquidation rounds and summarising quiet stretches.

    Args:
        cfg: the run's config.
        label: "cross" or "isolated" (used in headers and the comparison).
        write: where the text goes (default: the terminal, as it happens).
    """
    from model import ContagionModel

    write = write or _print_now
    t0 = time.perf_counter()
    model = ContagionModel(cfg)
    narrator = CascadeNarrator(model, write, label)
    for _ in range(cfg.steps):
        before = len(narrator.stories)
        model.step()
        if len(narrator.stories) == before:
            if narrator.quiet_from is None:
                narrator.quiet_from = model.steps
        else:
            write(narrator.describe_step(model.steps))
    narrator.flush_quiet(model.steps)
    run = DemoRun(label, model, narrator, time.perf_counter() - t0)
    run.tables = model.tables()
    return run


def _intro(cfg: Config, model_text: str) -> str:
    assets = ", ".join(
        f"{a.symbol} {_price(a.price)} (1% depth {_money(a.depth)})" for a in cfg.assets
    )
    shocks = "; ".join(
        f"step {s.step}: {s.asset}'s fundamental {_pct(s.return_)}" for s in cfg.shocks
    )
    return (
        f"{cfg.name}: {cfg.traders.count:,} traders, mean leverage {cfg.traders.leverage:g}x, "
        f"{model_text}; {cfg.steps} steps of {cfg.market.step_minutes:g} minutes\n"
        f"assets: {assets}\n"
        f"insurance fund {_money(cfg.margin.insurance_fund)}; "
        f"liquidation fee {100 * cfg.margin.fee:g}%; shock: {shocks or 'none'}"
    )


# --------------------------------------------------------------------------------------------
# Comparing the two runs
# --------------------------------------------------------------------------------------------


@dataclass
class CascadeStats:
    """Headline numbers of one run, read from its tables.

    Accounts, positions and liquidations are counted as the narration counts them
    (:mod:`experiments.narration`): auto-deleveraged positions are not liquidations and are
    counted apart.
    """

    accounts: int  # distinct accounts liquidated
    liquidations: int  # (account, round) pairs: an account liquidated in two rounds counts twice
    rounds: int
    step_move: dict  # symbol -> market price move over the shock step
    fundamental_move: dict  # symbol -> fundamental move over the shock step
    closed: dict  # symbol -> notional closed by liquidations over the run
    positions: dict  # symbol -> positions in that asset liquidated (closed out or cut back)
    untouched: int  # liquidated accounts that held none of the shocked asset
    bad_debt: float
    fund_end: float
    adl_notional: float
    unfunded: float


def cascade_stats(run: DemoRun, shock_step: int, shock_asset: str) -> CascadeStats:
    """The numbers the comparison and the lesson quote (from the run's output tables)."""
    model = run.model
    mk = run.tables["market"]
    every = run.tables["liquidations"]
    liq = every[every["kind"] != "adl"]
    steps = run.tables["steps"]
    symbols = model.symbols
    step_move, fund_move = {}, {}
    for j, s in enumerate(symbols):
        a = mk[mk["asset"] == s].set_index("step")
        p_prev = a["price"].get(shock_step - 1, model.market.initial_price[j])
        f_prev = a["fundamental"].get(shock_step - 1, model.market.initial_price[j])
        step_move[s] = float(a.loc[shock_step, "price"] / p_prev - 1)
        fund_move[s] = float(a.loc[shock_step, "fundamental"] / f_prev - 1)
    closed = {s: float(liq.loc[liq["asset"] == s, "notional"].sum()) for s in symbols}
    positions = {s: int(liq.loc[liq["asset"] == s, "trader_id"].nunique()) for s in symbols}
    ids = liq["trader_id"].unique()
    pop = model.population
    held_shocked = pop.qty[:, symbols.index(shock_asset)] != 0
    rows = pd.Index(pop.ids).get_indexer(ids)
    untouched = int((~held_shocked[rows]).sum())
    return CascadeStats(
        accounts=int(liq["trader_id"].nunique()),
        liquidations=int(len(liq.drop_duplicates(["step", "round", "trader_id"]))),
        rounds=int(steps["rounds"].max()) if len(steps) else 0,
        step_move=step_move,
        fundamental_move=fund_move,
        closed=closed,
        positions=positions,
        untouched=untouched,
        bad_debt=float(liq["bad_debt"].sum()),
        fund_end=float(steps["insurance_fund"].iloc[-1]) if len(steps) else 0.0,
        adl_notional=float(every.loc[every["kind"] == "adl", "notional"].sum()),
        unfunded=float(steps["unfunded_bad_debt"].iloc[-1]) if len(steps) else 0.0,
    )


def comparison_table(cross: CascadeStats, iso: CascadeStats, symbols, shock_step, shock_asset):
    """The side-by-side numbers as aligned text lines."""
    rows = [("", "cross", "isolated")]
    rows.append(("accounts liquidated", f"{cross.accounts:,}", f"{iso.accounts:,}"))
    rows.append(
        (
            "liquidations (an account in one round)",
            f"{cross.liquidations:,}",
            f"{iso.liquidations:,}",
        )
    )
    rows.append(("liquidation rounds", f"{cross.rounds}", f"{iso.rounds}"))
    for s in symbols:
        rows.append(
            (
                f"{s} over step {shock_step} (fundamental {_pct(cross.fundamental_move[s])})",
                _pct(cross.step_move[s]),
                _pct(iso.step_move[s]),
            )
        )
    for s in symbols:
        rows.append(
            (f"{s} positions liquidated", f"{cross.positions[s]:,}", f"{iso.positions[s]:,}")
        )
    rows.append(
        (
            f"accounts liquidated holding no {shock_asset}",
            f"{cross.untouched:,}",
            f"{iso.untouched:,}",
        )
    )
    for s in symbols:
        rows.append((f"{s} closed by force", _money(cross.closed[s]), _money(iso.closed[s])))
    rows.append(("bad debt", _money(cross.bad_debt), _money(iso.bad_debt)))
    if cross.adl_notional or iso.adl_notional:
        rows.append(("auto-deleveraged", _money(cross.adl_notional), _money(iso.adl_notional)))
    if cross.unfunded >= 0.5 or iso.unfunded >= 0.5:
        rows.append(("bad debt nobody paid", _money(cross.unfunded), _money(iso.unfunded)))
    rows.append(("insurance fund at the end", _money(cross.fund_end), _money(iso.fund_end)))
    w0 = max(len(r[0]) for r in rows)
    w = max(len(x) for r in rows for x in r[1:])
    return "\n".join(f"  {a:<{w0}}  {b:>{w}}  {c:>{w}}" for a, b, c in rows)


def lesson(cross: CascadeStats, iso: CascadeStats, shock_asset: str, symbols) -> str:
    """Two or three sentences on what the two runs show, phrased from their numbers, causes
    before their effects."""
    others = [s for s in symbols if s != shock_asset]
    out = []
    if others:
        o = others[0]
        if abs(cross.step_move[o]) > abs(iso.step_move[o]) + 0.001 and cross.positions[o]:
            out += _spread_lesson(cross, iso, shock_asset, o)
        else:
            out.append(
                f"Here the shock did not spread to {o} more under cross margin than under "
                f"isolated margin ({o} {_pct(cross.step_move[o])} vs {_pct(iso.step_move[o])}): "
                f"too few accounts holding both assets were pushed under."
            )
    if cross.accounts < iso.accounts:
        out.append(
            f"Cross margin cushions a losing position with the rest of the balance (fewer "
            f"accounts liquidated: {cross.accounts:,} vs {iso.accounts:,}), but when it gives "
            f"way it carries the cascade from one asset to the others."
        )
    else:
        out.append(
            f"Cross margin did not even save accounts here ({cross.accounts:,} liquidated vs "
            f"{iso.accounts:,} under isolated margin), and it carried the cascade across assets."
        )
    return " ".join(out)


def _spread_lesson(cross: CascadeStats, iso: CascadeStats, shock: str, o: str) -> list[str]:
    """Cross margin carried the shock into ``o``: the forced sales of ``o`` came first, the
    move of ``o`` after them, and the accounts holding only ``o`` last."""
    then = (
        f"; then {cross.untouched:,} accounts that held no {shock} at all were liquidated"
        if cross.untouched
        else ""
    )
    first = (
        f"Under cross margin one balance backs every position, so the accounts the {shock} "
        f"shock pushed under had their {o} liquidated too: {cross.positions[o]:,} {o} positions "
        f"were closed out or cut back, and those forced sales moved {o} "
        f"{_pct(cross.step_move[o])} although its fundamental moved "
        f"{_pct(cross.fundamental_move[o])}{then}."
    )
    others = (
        f"{iso.positions[o]:,} {o} positions were liquidated"
        if iso.positions[o]
        else f"no {o} position was liquidated"
    )
    second = (
        f"Under isolated margin each position has its own collateral: the same shock "
        f"liquidated {iso.positions[shock]:,} {shock} positions, but {others} and {o} moved "
        f"only {_pct(iso.step_move[o])}."
    )
    return [first, second]


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_prices(
    market: pd.DataFrame,
    liquidations: pd.DataFrame,
    stories,
    initial_price,
    step,
    title="",
    step_minutes=None,
):
    """Prices over the run with liquidation markers (left) and the cascade step by round (right).

    Args:
        market, liquidations: the run's tables.
        stories: the narrator's round stories (prices before and after every round).
        initial_price: (A,) prices before step 1.
        step: the step to show round by round (the shock).
        title: the figure's title (the run's name).
        step_minutes: the length of a step, for the time axis's label.

    Returns:
        a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    symbols = list(market["asset"].cat.categories)
    fig = Figure(figsize=(11, 3.2 * len(symbols)), layout="constrained")
    axes = fig.subplots(len(symbols), 2, squeeze=False, width_ratios=[3, 2])
    if title:
        fig.suptitle(title)
    rounds = round_prices(stories, step)
    liquidations = liquidations[liquidations["kind"] != "adl"]
    liq_step = liquidations[liquidations["step"] == step]
    for j, s in enumerate(symbols):
        a = market[market["asset"] == s]
        t = np.concatenate([[0], a["step"].to_numpy()])
        ax = axes[j, 0]
        ax.plot(
            t, np.concatenate([[initial_price[j]], a["price"]]), color="k", lw=1.6, label="price"
        )
        ax.plot(
            t,
            np.concatenate([[initial_price[j]], a["fundamental"]]),
            color="0.5",
            lw=1.2,
            ls="--",
            label="fundamental",
        )
        per_step = liquidations[liquidations["asset"] == s].groupby("step")["notional"].sum()
        if len(per_step):
            at = a.set_index("step").loc[per_step.index, "price"]
            size = 40 + 400 * per_step.to_numpy() / max(per_step.max(), 1.0)
            ax.scatter(
                per_step.index, at, s=size, color="#d62728", zorder=3, alpha=0.8,
                label="liquidations (area ~ notional closed)",
            )  # fmt: skip
        ax.set_title(f"{s}: price over the run")
        ax.set_xlabel(f"step ({step_minutes:g} minutes each)" if step_minutes else "step")
        ax.set_ylabel("price ($)")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)

        ax = axes[j, 1]
        if rounds.size:
            r = np.arange(rounds.shape[0])
            ax.plot(r, rounds[:, j], color="k", marker="o", lw=1.6)
            ax.set_xticks(r)
            ax.set_xticklabels(["shock"] + [str(i) for i in r[1:]])
            bars = liq_step[liq_step["asset"] == s].groupby("round")["notional"].sum()
            twin = ax.twinx()
            twin.bar(bars.index, bars.to_numpy() / 1e3, color="#d62728", alpha=0.35, width=0.6)
            twin.set_ylabel("closed by force ($k)", color="#d62728")
            twin.set_ylim(0, max(1.0, float(bars.max()) / 1e3 if len(bars) else 1.0) * 3.0)
            ax.set_zorder(twin.get_zorder() + 1)
            ax.patch.set_visible(False)
        ax.set_title(f"{s}: inside step {step}, round by round")
        ax.set_xlabel("liquidation round")
        ax.set_ylabel("price ($)")
        ax.grid(alpha=0.3)
    return fig


def plot_cascade_tree(run: DemoRun, step: int):
    """The contagion tree of ``step`` as a Figure, coloured by what the accounts held."""
    from matplotlib.figure import Figure

    model = run.model
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.subplots()
    labels = pd.Series(
        holding_labels(model.population.qty, model.symbols),
        index=model.population.ids,
        name="liquidations of accounts holding",
    )
    draw_cascade(
        model.recorder.edges_table(),
        step,
        run.tables["liquidations"],
        ax=ax,
        labels=labels,
        categories=holding_order(model.symbols),
        max_edges=3000,
    )
    stories = [s for s in run.stories if s.step == step]
    times = sum(s.accounts for s in stories)
    n = np.unique(np.concatenate([s.rows for s in stories])).size if stories else 0
    ax.set_title(
        f"Who liquidated whom in step {step} ({run.label} margin): {times:,} liquidations of "
        f"{n:,} accounts\neach dot is one account liquidated in one round, joined to the "
        "liquidation of the round before that hurt it most",
        fontsize=10,
    )
    return fig


def plot_cross_vs_isolated(cross: DemoRun, iso: DemoRun, step: int):
    """Price moves (top) and liquidations (bottom) per round of ``step``, the two runs side by
    side, on shared axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2, sharey="row")
    symbols = cross.model.symbols
    rmax = max(
        [s.round for s in cross.stories if s.step == step]
        + [s.round for s in iso.stories if s.step == step]
        + [1]
    )
    for col, run in enumerate((cross, iso)):
        draw_rounds(
            axes[0, col],
            axes[1, col],
            run.stories,
            step,
            run.narrator.previous_price(step),
            holding_labels(run.model.population.qty, symbols),
            symbols,
            rmax=rmax,
            title=f"{run.label} margin",
        )
    return fig


def _save(fig, path: Path) -> Path:
    storage.atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    return path


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


class _Tee:
    """Writes to the terminal as it goes (unless quiet) and keeps a copy for narration.txt."""

    def __init__(self, quiet: bool = False):
        self.parts: list[str] = []
        self.quiet = quiet

    def __call__(self, text: str = "") -> None:
        self.parts.append(text)
        if not self.quiet:
            _print_now(text)

    @property
    def text(self) -> str:
        return "\n".join(self.parts) + "\n"


@dataclass
class DemoSession:
    """The demo's two runs and what it concluded from them.

    Attributes:
        cfg: the cross-margin run's config (the isolated run's differs in margin.mode only).
        cross, iso: the two narrated runs.
        cross_stats, iso_stats: their headline numbers (:func:`cascade_stats`).
        lesson: the lesson as printed.
    """

    cfg: Config
    cross: DemoRun
    iso: DemoRun
    cross_stats: CascadeStats
    iso_stats: CascadeStats
    lesson: str


def _demo_config(overrides: dict[str, Any] | None) -> Config:
    """The demo's cross-margin config with ``overrides``, checked (the demo runs both margin
    modes itself and needs a scheduled shock)."""
    overrides = dict(overrides or {})
    if "margin.mode" in overrides:
        raise ConfigError("--set margin.mode: the demo runs both modes, cross and then isolated")
    cfg = load_config(DEMO_CONFIG, overrides={**overrides, "margin.mode": "cross"})
    if not cfg.shocks:
        raise ConfigError("shocks: the demo needs a scheduled shock")
    return cfg


def narrate_demo(overrides: dict[str, Any] | None = None, write=None) -> DemoSession:
    """Run the demo config under cross and then isolated margin, telling both as they happen,
    then the comparison and the lesson, through ``write`` (default: the terminal).

    Args:
        overrides: dotted-key changes to the demo's market, for both runs (not margin.mode).
        write: where the text goes, one call per paragraph.

    Raises:
        ConfigError: a bad override, or a config without a scheduled shock.
    """
    say = write or _print_now
    overrides = dict(overrides or {})
    cfg = _demo_config(overrides)
    iso_cfg = load_config(DEMO_CONFIG, overrides={**overrides, "margin.mode": "isolated"})
    shock = cfg.shocks[0]
    say(_intro(cfg, "cross margin (one balance backs every position)"))
    say("")
    cross = run_demo(cfg, "cross", say)
    say("")
    say(
        "Now the same accounts and the same shock under isolated margin "
        "(each position has its own collateral):"
    )
    iso = run_demo(iso_cfg, "isolated", say)
    symbols = cross.model.symbols
    c_stats = cascade_stats(cross, shock.step, shock.asset)
    i_stats = cascade_stats(iso, shock.step, shock.asset)
    say("")
    say(f"Cross vs isolated, same accounts, same shock ({shock.asset} {_pct(shock.return_)}):")
    say(comparison_table(c_stats, i_stats, symbols, shock.step, shock.asset))
    say("")
    the_lesson = "The lesson: " + lesson(c_stats, i_stats, shock.asset, symbols)
    say(the_lesson)
    return DemoSession(cfg, cross, iso, c_stats, i_stats, the_lesson)


def run_demo_command(
    *,
    out: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    quiet: bool = False,
) -> int:
    """The narrated cascade, under cross and then isolated margin, printed as it happens, with
    its run folders, narration.txt and figures.

    Args:
        out: the demo folder (default ``results/demo``): the cross-margin run folder, with the
            isolated run in ``out/isolated``, the narration and the figures. A folder that
            exists and is not empty must be a demo folder, replaced only with ``overwrite``
            (:class:`experiments.folders.OutputFolder`).
        overrides: dotted-key changes to the demo's market (``--set``), for both runs;
            ``margin.mode`` is not one of them (the demo runs both modes).
        overwrite: replace an existing demo folder.
        quiet: print only the lesson and where the files are (narration.txt keeps the story).

    Returns:
        the exit status (0).
    """
    _demo_config(overrides)  # a bad --set fails before the folder is touched
    target = OutputFolder(out, DEMO_FOLDER, overwrite=overwrite, default=Path("results") / "demo")
    with target as folder:
        _demo(overrides, target.path, folder, _Tee(quiet))
    sys.stdout.flush()
    return 0


def _demo(overrides, shown: Path, folder: Path, say: _Tee) -> None:
    """Run, narrate and write the demo into ``folder`` (named ``shown`` in the text)."""
    t0 = time.perf_counter()
    demo = narrate_demo(overrides, say)
    # the isolated run first: a demo folder is recognised by its isolated/ folder from the
    # first file written (experiments.folders)
    write_run_folder(demo.iso.model, folder / "isolated")
    write_run_folder(demo.cross.model, folder)
    figures = _demo_figures(demo, folder)
    result = [
        f"run folder: {shown} (the isolated run in {shown / 'isolated'})",
        "figures: " + ", ".join(str(shown / f.name) for f in figures),
    ]
    say()
    for line in result:
        say(line)
    say(f"done in {time.perf_counter() - t0:.1f}s")
    storage.write_text(folder / "narration.txt", say.text)
    if say.quiet:  # the result lines only
        for line in (demo.lesson, *result):
            _print_now(line)


def _demo_figures(demo: DemoSession, out: Path) -> list[Path]:
    """prices.png, cascade_tree.png, cross_vs_isolated.png and depth.png of the demo's shock
    step."""
    cross, iso, cfg = demo.cross, demo.iso, demo.cfg
    shock = cfg.shocks[0]
    prices = plot_prices(
        cross.tables["market"],
        cross.tables["liquidations"],
        cross.stories,
        cross.model.market.initial_price,
        shock.step,
        title=f"{cfg.name}, cross margin: prices, and the {shock.asset} shock of step "
        f"{shock.step} round by round",
        step_minutes=cfg.market.step_minutes,
    )
    return [
        _save(prices, out / "prices.png"),
        _save(plot_cascade_tree(cross, shock.step), out / "cascade_tree.png"),
        _save(plot_cross_vs_isolated(cross, iso, shock.step), out / "cross_vs_isolated.png"),
        _save(
            plot_depth(
                cross.stories,
                cross.model.market_history.depth,
                shock.step,
                cross.model.market.depth,
                cross.model.symbols,
            ),
            out / "depth.png",
        ),
    ]

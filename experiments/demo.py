"""``contagion demo``: one shock, its cascade told round by round, and the same shock under
isolated margin.

The demo runs ``experiments/configs/demo.toml`` (a small two-asset venue, one scheduled shock)
and narrates it in the terminal *as it happens*: it listens to the liquidation engine's rounds
(the same ``on_round`` hook that feeds the contagion graph) and prints, for each round, how many
accounts were liquidated, what they sold, how far each price moved and where the insurance fund
stands. It then reruns the same accounts and the same shock under isolated margin (a second real
run, not a scaled copy of the first), compares the two, and states the lesson.

It writes a run folder (the cross-margin run; the isolated run in ``isolated/`` inside it), the
narration (``narration.txt``) and three figures:

* ``prices.png``: each asset's price and fundamental over the run, with liquidation markers, and
  the shock step round by round;
* ``cascade_tree.png``: the contagion tree of the shock step, layered by round;
* ``cross_vs_isolated.png``: price moves and liquidations per round, the two runs side by side.

The figure and layout functions take plain tables and arrays, so the dashboard
(:mod:`experiments.app`) reuses them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model.config import Config, ConfigError, load_config

__all__ = [
    "DEMO_CONFIG",
    "CascadeNarrator",
    "DemoRun",
    "RoundStory",
    "cascade_layout",
    "demo_command",
    "draw_cascade_tree",
    "draw_rounds",
    "holding_labels",
    "holding_order",
    "lesson",
    "plot_cross_vs_isolated",
    "plot_prices",
    "run_demo",
]

DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.toml"

# Colours of the holding groups (first: the shocked asset alone, then the others, then both).
_PALETTE = ["#d62728", "#1f77b4", "#9467bd", "#2ca02c", "#ff7f0e", "#8c564b", "#e377c2"]


# --------------------------------------------------------------------------------------------
# Listening to the engine
# --------------------------------------------------------------------------------------------


@dataclass
class RoundStory:
    """What one liquidation round did, in the terms the narration uses.

    Attributes:
        step, round: when (round numbers are the cascade's generations).
        rows: (k,) book rows of the accounts liquidated in the round.
        full: how many of them were closed out completely (the rest partially).
        sold, bought: (A,) quantity sold (closing longs) and bought back (closing shorts).
        notional: (A,) notional closed per asset, at the round's price.
        price_before, price_after: (A,) prices around the round's execution.
        fees, bad_debt: paid into / drawn from the insurance fund by this round.
        fund: the insurance fund after the round.
    """

    step: int
    round: int
    rows: np.ndarray
    full: int
    sold: np.ndarray
    bought: np.ndarray
    notional: np.ndarray
    price_before: np.ndarray
    price_after: np.ndarray
    fees: float
    bad_debt: float
    fund: float

    @property
    def accounts(self) -> int:
        return int(self.rows.size)

    @property
    def move(self) -> np.ndarray:
        """(A,) relative price move of the round."""
        return self.price_after / self.price_before - 1.0


class CascadeNarrator:
    """Tells a model's liquidation rounds as they happen.

    It chains itself onto the engine's ``on_round`` hook (the contagion recorder keeps getting
    every round first), keeps a :class:`RoundStory` per round, and writes one paragraph per
    round through ``write``.

    Args:
        model: a :class:`model.ContagionModel` before its first step.
        write: where the text goes (default: print and flush, so it appears as it happens).
        label: a short name for the run, used in headers.
    """

    def __init__(self, model, write=None, label: str = ""):
        self.model = model
        self.write = write or _print_now
        self.label = label
        self.stories: list[RoundStory] = []
        self.step_open: dict[int, np.ndarray] = {}  # step -> prices before its first round
        self.quiet_from: int | None = None  # first step of the current stretch without liquidations
        self._chained = model.engine.on_round
        model.engine.on_round = self._on_round

    @property
    def symbols(self) -> list[str]:
        return self.model.symbols

    def _on_round(self, rec) -> None:
        if self._chained is not None:
            self._chained(rec)
        closed = np.asarray(rec.closed, dtype=float)
        story = RoundStory(
            step=int(rec.step),
            round=int(rec.round),
            rows=np.asarray(rec.rows),
            full=int(np.count_nonzero(rec.full)),
            sold=np.clip(closed, 0.0, None).sum(axis=0),
            bought=np.clip(-closed, 0.0, None).sum(axis=0),
            notional=(np.abs(closed) * rec.price_after[None, :]).sum(axis=0),
            price_before=np.asarray(rec.price_before, dtype=float).copy(),
            price_after=np.asarray(rec.price_after, dtype=float).copy(),
            fees=rec.fees,
            bad_debt=rec.bad_debt,
            fund=rec.fund,
        )
        if story.round == 1:
            self.flush_quiet(story.step - 1)
            self.step_open[story.step] = story.price_before
            self.write(self._step_header(story))
        self.stories.append(story)
        self.write(self.describe_round(story))

    def flush_quiet(self, last: int) -> None:
        """Report the stretch of steps without liquidations that ends at step ``last``."""
        first, self.quiet_from = self.quiet_from, None
        if first is None or last < first:
            return
        past = self.model.market_history
        price, fundamental = past.price[last - 1], past.fundamental[last - 1]
        prices = ", ".join(
            f"{s} {_price(price[j])} (fundamental {_price(fundamental[j])})"
            for j, s in enumerate(self.symbols)
        )
        span = f"step {first}" if first == last else f"steps {first}-{last}"
        self.write(f"{span}: no liquidations; at the end {prices}.")

    def _step_header(self, story: RoundStory) -> str:
        t = story.step
        before = self.model.market.step_open
        fundamental = self.model.market.fundamental
        lines = [f"step {t}:"]
        shocks = {s.asset: s.return_ for s in self.model.config.shocks if s.step == t}
        for j, s in enumerate(self.symbols):
            prev = self.previous_price(t)[j]
            if s in shocks:
                verb = "falls" if shocks[s] < 0 else "jumps"
                what = f"SHOCK: {s}'s fundamental {verb} {abs(100 * shocks[s]):.1f}% (news, not trading)"
            else:
                what = f"{s}'s fundamental drifts {_pct(fundamental[j] / self.previous_fundamental(t)[j] - 1)}"
            lines.append(
                f"  {what}; {s} opens the liquidation rounds at {_price(before[j])} "
                f"({_pct(before[j] / prev - 1)} since step {t - 1})"
            )
        return "\n".join(lines)

    def previous_price(self, t: int) -> np.ndarray:
        """(A,) market prices at the end of step ``t - 1`` (initial prices for step 1)."""
        past = self.model.market_history
        return self.model.market.initial_price if t <= 1 else past.price[t - 2]

    def previous_fundamental(self, t: int) -> np.ndarray:
        past = self.model.market_history
        return self.model.market.initial_price if t <= 1 else past.fundamental[t - 2]

    def describe_round(self, s: RoundStory) -> str:
        """One round as three lines: who, what they traded, what it did to prices and the fund."""
        part = s.accounts - s.full
        who = f"{s.accounts:,} account{'s' if s.accounts != 1 else ''} liquidated"
        if part and s.full:
            who += f" ({s.full:,} closed out, {part:,} cut back)"
        elif s.full:
            who += " (all closed out)"
        else:
            who += " (all cut back)"
        trades = []
        for j, sym in enumerate(self.symbols):
            if s.sold[j] > 0:
                trades.append(f"sold {_qty(s.sold[j])} {sym}")
            if s.bought[j] > 0:
                trades.append(f"bought back {_qty(s.bought[j])} {sym}")
        closed = ", ".join(
            f"{sym} {_money(s.notional[j])}" for j, sym in enumerate(self.symbols) if s.notional[j]
        )
        moves = " | ".join(
            f"{sym} {_pct(s.move[j])} to {_price(s.price_after[j])}"
            for j, sym in enumerate(self.symbols)
        )
        fund = f"insurance fund {_money(s.fund)} (+{_money(s.fees)} fees"
        fund += f", -{_money(s.bad_debt)} bad debt)" if s.bad_debt >= 0.5 else ")"
        return (
            f"  round {s.round}: {who}\n"
            f"           {'; '.join(trades) or 'traded nothing'} (closed {closed or 'nothing'})\n"
            f"           {moves} | {fund}"
        )


def _print_now(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    """A signed percentage: one decimal, two for moves under 0.05%, never "-0.0%"."""
    v = 100 * x
    if abs(v) < 0.05:
        v = round(v, 2)
        return "+0.0%" if v == 0 else f"{v:+.2f}%"
    return f"{v:+.1f}%"


def _price(x: float) -> str:
    return f"${x:,.0f}" if x >= 100 else f"${x:,.2f}"


def _money(x: float) -> str:
    ax = abs(x)
    if ax >= 1e9:
        return f"${x / 1e9:.2f}B"
    if ax >= 1e6:
        return f"${x / 1e6:.2f}M"
    if ax >= 1e3:
        return f"${x / 1e3:.1f}k"
    return f"${x:,.0f}"


def _qty(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.2f}"


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
            write(_step_footer(model, narrator, model.steps))
    narrator.flush_quiet(model.steps)
    run = DemoRun(label, model, narrator, time.perf_counter() - t0)
    run.tables = model.tables()
    return run


def _step_footer(model, narrator, t: int) -> str:
    stories = [s for s in narrator.stories if s.step == t]
    accounts = np.unique(np.concatenate([s.rows for s in stories])).size
    closed = sum(float(s.notional.sum()) for s in stories)
    last = stories[-1]
    moves = ", ".join(
        f"{sym} {_pct(last.price_after[j] / narrator.previous_price(t)[j] - 1)} "
        f"(fundamental {_pct(model.market.fundamental[j] / narrator.previous_fundamental(t)[j] - 1)})"
        for j, sym in enumerate(model.symbols)
    )
    stop = (
        "the round limit stopped it"
        if model.last.round_limit_hit
        else "nobody else is below maintenance"
    )
    return (
        f"  the cascade stops after round {last.round}: {stop}.\n"
        f"  step {t} in all: {accounts:,} accounts liquidated, {_money(closed)} closed; "
        f"over the step {moves}."
    )


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


def holding_labels(qty: np.ndarray, symbols: list[str]) -> np.ndarray:
    """(n,) label of the assets each account holds, e.g. ``"BTC only"`` or ``"BTC+ETH"``."""
    held = np.asarray(qty) != 0
    names = np.array(symbols, dtype=object)
    labels = []
    # one label per distinct holding pattern, not per trader
    patterns, inverse = np.unique(held, axis=0, return_inverse=True)
    for p in patterns:
        hs = list(names[p])
        labels.append("none" if not hs else hs[0] + " only" if len(hs) == 1 else "+".join(hs))
    return np.array(labels, dtype=object)[inverse.ravel()]


def holding_order(symbols: list[str]) -> list[str]:
    """Every holding label in a fixed order (each asset alone, then all together): the colour
    order of every figure."""
    return [f"{s} only" for s in symbols] + (["+".join(symbols)] if len(symbols) > 1 else [])


@dataclass
class CascadeStats:
    """Headline numbers of one run's shock step, read from its tables."""

    accounts: int
    rounds: int
    step_move: dict  # symbol -> market price move over the shock step
    fundamental_move: dict  # symbol -> fundamental move over the shock step
    closed: dict  # symbol -> notional closed by liquidations over the run
    accounts_by_asset: dict  # symbol -> accounts with a liquidation fill in that asset
    untouched: int  # liquidated accounts that held none of the shocked asset
    bad_debt: float
    fund_end: float


def cascade_stats(run: DemoRun, shock_step: int, shock_asset: str) -> CascadeStats:
    """The numbers the comparison and the lesson quote (from the run's output tables)."""
    model = run.model
    mk = run.tables["market"]
    liq = run.tables["liquidations"]
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
    by_asset = {s: int(liq.loc[liq["asset"] == s, "trader_id"].nunique()) for s in symbols}
    ids = liq["trader_id"].unique()
    pop = model.population
    held_shocked = pop.qty[:, symbols.index(shock_asset)] != 0
    row_of = {int(i): r for r, i in enumerate(pop.ids)}
    untouched = int(sum(1 for i in ids if not held_shocked[row_of[int(i)]]))
    return CascadeStats(
        accounts=int(liq["trader_id"].nunique()),
        rounds=int(steps["rounds"].max()) if len(steps) else 0,
        step_move=step_move,
        fundamental_move=fund_move,
        closed=closed,
        accounts_by_asset=by_asset,
        untouched=untouched,
        bad_debt=float(liq["bad_debt"].sum()),
        fund_end=float(steps["insurance_fund"].iloc[-1]) if len(steps) else 0.0,
    )


def comparison_table(cross: CascadeStats, iso: CascadeStats, symbols, shock_step, shock_asset):
    """The side-by-side numbers as aligned text lines."""
    rows = [("", "cross", "isolated")]
    rows.append(("accounts liquidated", f"{cross.accounts:,}", f"{iso.accounts:,}"))
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
            (
                f"accounts liquidated in {s}",
                f"{cross.accounts_by_asset[s]:,}",
                f"{iso.accounts_by_asset[s]:,}",
            )
        )
    rows.append(
        (f"liquidated, holding no {shock_asset}", f"{cross.untouched:,}", f"{iso.untouched:,}")
    )
    for s in symbols:
        rows.append((f"{s} closed by force", _money(cross.closed[s]), _money(iso.closed[s])))
    rows.append(("bad debt", _money(cross.bad_debt), _money(iso.bad_debt)))
    rows.append(("insurance fund at the end", _money(cross.fund_end), _money(iso.fund_end)))
    w0 = max(len(r[0]) for r in rows)
    w = max(len(x) for r in rows for x in r[1:])
    return "\n".join(f"  {a:<{w0}}  {b:>{w}}  {c:>{w}}" for a, b, c in rows)


def lesson(cross: CascadeStats, iso: CascadeStats, shock_asset: str, symbols) -> str:
    """Two or three sentences on what the two runs show, phrased from their numbers."""
    others = [s for s in symbols if s != shock_asset]
    out = []
    if others:
        o = others[0]
        spread = abs(cross.step_move[o]) > abs(iso.step_move[o]) + 0.001
        if spread:
            untouched = (
                f"and {cross.untouched:,} accounts that held no {shock_asset} at all were "
                f"liquidated"
                if cross.untouched
                else f"which pushed {cross.accounts_by_asset[o]:,} accounts to sell {o} by force"
            )
            out.append(
                f"Under cross margin one balance backs every position, so the accounts the "
                f"{shock_asset} shock pushed under also sold their {o}: {o} moved "
                f"{_pct(cross.step_move[o])} although its fundamental moved "
                f"{_pct(cross.fundamental_move[o])}, {untouched}."
            )
            out.append(
                f"Under isolated margin each position has its own collateral: the same shock "
                f"liquidated {iso.accounts_by_asset[shock_asset]:,} {shock_asset} positions, but "
                f"{o} moved only {_pct(iso.step_move[o])}"
                + (
                    f" and {iso.accounts_by_asset[o]:,} {o} positions were liquidated."
                    if iso.accounts_by_asset[o]
                    else f" and no {o} position was liquidated."
                )
            )
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


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _round_prices(stories: list[RoundStory], step: int) -> np.ndarray:
    """(R + 1, A) prices before round 1 and after each round of ``step``."""
    ss = [s for s in stories if s.step == step]
    if not ss:
        return np.zeros((0, 0))
    return np.vstack([ss[0].price_before] + [s.price_after for s in ss])


def plot_prices(market: pd.DataFrame, liquidations: pd.DataFrame, stories, initial_price, step):
    """Prices over the run with liquidation markers (left) and the cascade step by round (right).

    Args:
        market, liquidations: the run's tables.
        stories: the narrator's round stories (prices before and after every round).
        initial_price: (A,) prices before step 1.
        step: the step to show round by round (the shock).

    Returns:
        a matplotlib Figure.
    """
    from matplotlib.figure import Figure

    symbols = list(market["asset"].cat.categories)
    fig = Figure(figsize=(11, 3.2 * len(symbols)), layout="constrained")
    axes = fig.subplots(len(symbols), 2, squeeze=False, width_ratios=[3, 2])
    rounds = _round_prices(stories, step)
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
                label="liquidations (size: notional closed)",
            )  # fmt: skip
        ax.set_title(f"{s}: price over the run")
        ax.set_xlabel("step")
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


def cascade_layout(src, dst, weight, rnd, key=None):
    """Positions of one step's liquidation events, layered by round (a tidy tree, no physics).

    Every liquidation of the step is one event ``(row, round)``, drawn at ``x = round``. Its
    parent is the round-``r - 1`` liquidation with the largest weight into it (round 1 hangs
    from the step's root at ``x = 0``). Within a round, events are ordered by
    ``key`` (the holding group, say), then by their parent's position, and spread evenly over
    ``[0, 1]``: groups form bands and siblings stay together.

    Args:
        src: (m,) source of each edge: a book row, or negative for the root (or an aggregate).
        dst: (m,) book row of each edge's target.
        weight: (m,) edge weights.
        rnd: (m,) round of each edge's target.
        key: optional (n_rows,) value per book row to order siblings by.

    Returns:
        dict of arrays: ``row``, ``round``, ``x``, ``y`` (one entry per event) and ``parent``
        (index of the parent event, -1 for the root), plus ``edge_src`` / ``edge_dst``
        (event indices; -1: the root) for every edge.
    """
    src = np.asarray(src, dtype=np.int64)
    dst = np.asarray(dst, dtype=np.int64)
    weight = np.asarray(weight, dtype=float)
    rnd = np.asarray(rnd, dtype=np.int64)
    if dst.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return {"row": z, "round": z, "x": np.zeros(0), "y": np.zeros(0), "parent": z,
                "edge_src": z, "edge_dst": z}  # fmt: skip
    big = int(rnd.max()) + 2
    ev_key = dst * big + rnd
    ev, edge_dst = np.unique(ev_key, return_inverse=True)
    ev_row, ev_round = ev // big, ev % big
    # the source event of an edge: (src, round - 1); negative sources are the root (-1)
    src_key = np.where(src >= 0, src * big + (rnd - 1), -1)
    pos = np.searchsorted(ev, src_key)
    pos = np.clip(pos, 0, ev.size - 1)
    edge_src = np.where((src >= 0) & (ev[pos] == src_key), pos, -1)
    # parent: the heaviest incoming edge from a liquidation (aggregate sources never are)
    usable = (edge_src >= 0) | (rnd == 1)
    order = np.lexsort((-np.where(usable, weight, -np.inf), edge_dst))
    first = np.unique(edge_dst[order], return_index=True)[1]
    parent = np.full(ev.size, -1, dtype=np.int64)
    parent[edge_dst[order][first]] = edge_src[order][first]
    k = np.zeros(ev.size) if key is None else np.asarray(key, dtype=float)[ev_row]
    y = np.full(ev.size, 0.5)
    for r in np.unique(ev_round):
        idx = np.flatnonzero(ev_round == r)
        py = np.where(parent[idx] >= 0, y[np.maximum(parent[idx], 0)], 0.5)
        rank = idx[np.lexsort((py, k[idx]))]
        y[rank] = (np.arange(idx.size) + 0.5) / idx.size
    return {
        "row": ev_row,
        "round": ev_round,
        "x": ev_round.astype(float),
        "y": y,
        "parent": parent,
        "edge_src": edge_src,
        "edge_dst": edge_dst,
    }


def draw_cascade_tree(
    ax, edges: dict, step: int, labels, notional=None, max_edges=3000, categories=None
):
    """Draw one step's contagion tree on ``ax``, layered by round.

    Faint lines are every attribution edge (the heaviest ``max_edges`` when there are more);
    dark lines join each liquidation to its main cause. Dots are liquidations, coloured by the
    assets the account held, sized by the notional it lost.

    Args:
        ax: a matplotlib Axes.
        edges: the recorder's edge columns (``src``, ``dst``, ``weight``, ``step``, ``round``).
        step: which step's cascade to draw.
        labels: (n_rows,) holding label per book row (see :func:`holding_labels`).
        notional: optional (n_rows,) liquidated notional per book row (dot size).
        max_edges: most faint edges drawn (the heaviest are kept).
        categories: all holding labels in colour order (default: those present, sorted), so
            that colours agree between figures.

    Returns:
        the layout (see :func:`cascade_layout`).
    """
    sel = np.asarray(edges["step"]) == step
    src, dst = np.asarray(edges["src"])[sel], np.asarray(edges["dst"])[sel]
    w, rnd = np.asarray(edges["weight"])[sel], np.asarray(edges["round"])[sel]
    labels = np.asarray(labels, dtype=object)
    present = sorted(set(labels[dst].tolist()), key=_label_sort_key)
    cats = list(categories) + [c for c in present if c not in categories] if categories else present
    code = {c: i for i, c in enumerate(cats)}
    key = None
    if dst.size:
        key = np.zeros(labels.size)
        rows_used = np.unique(dst)
        key[rows_used] = [code[c] for c in labels[rows_used]]
    lay = cascade_layout(src, dst, w, rnd, key)
    ax.set_xlabel("liquidation round (generation)")
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    if lay["row"].size == 0:
        ax.text(0.5, 0.5, "no liquidations yet", ha="center", va="center", transform=ax.transAxes)
        return lay
    x, y = lay["x"], lay["y"]

    def xy(ev):
        return np.where(ev >= 0, x[np.maximum(ev, 0)], 0.0), np.where(
            ev >= 0, y[np.maximum(ev, 0)], 0.5
        )

    keep = np.arange(src.size)
    if keep.size > max_edges:
        keep = np.argsort(-w, kind="stable")[:max_edges]
    x0, y0 = xy(lay["edge_src"][keep])
    x1, y1 = x[lay["edge_dst"][keep]], y[lay["edge_dst"][keep]]
    # Each set of lines is one path with breaks (NaN): far cheaper to build and draw than a
    # collection of thousands of segments, which keeps the dashboard quick.
    ax.plot(*_polyline(x0, y0, x1, y1), color="0.75", lw=0.3, alpha=0.35)
    px, py = xy(lay["parent"])
    ax.plot(*_polyline(px, py, x, y), color="0.3", lw=0.6, alpha=0.6)
    if notional is not None:
        nv = np.asarray(notional, dtype=float)[lay["row"]]
        size = 6 + 60 * np.sqrt(nv / max(float(nv.max()), 1.0))
    else:
        size = np.full(x.size, 12.0)
    ev_labels = labels[lay["row"]]
    for c in cats:
        m = ev_labels == c
        if not m.any():
            continue
        ax.scatter(x[m], y[m], s=size[m], color=_colour(c, cats), label=f"{c} ({int(m.sum()):,})",
                   zorder=3, edgecolors="none")  # fmt: skip
    ax.scatter([0], [0.5], s=120, color="k", marker="*", zorder=4, label="the shock")
    ax.set_xlim(-0.4, float(x.max()) + 0.6)
    ax.set_ylim(-0.03, 1.03)
    ax.set_xticks(np.arange(0, int(x.max()) + 1))
    ax.set_xticklabels([f"step {step}"] + [str(i) for i in range(1, int(x.max()) + 1)])
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
        title="liquidations of accounts holding",
    )
    return lay


def _polyline(x0, y0, x1, y1):
    """Segments (x0, y0) -> (x1, y1) as one broken line: x and y with NaN between segments."""
    n = len(x0)
    xs, ys = np.full(3 * n, np.nan), np.full(3 * n, np.nan)
    xs[0::3], xs[1::3] = x0, x1
    ys[0::3], ys[1::3] = y0, y1
    return xs, ys


def _label_sort_key(label: str):
    return (label.count("+"), not label.endswith("only"), label)


def _colour(label: str, cats: list[str]) -> str:
    return _PALETTE[cats.index(label) % len(_PALETTE)]


def plot_cascade_tree(run: DemoRun, step: int):
    """The contagion tree of ``step`` as a Figure."""
    from matplotlib.figure import Figure

    model = run.model
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax = fig.subplots()
    labels = holding_labels(model.population.qty, model.symbols)
    draw_cascade_tree(
        ax,
        model.recorder.edges(),
        step,
        labels,
        model.recorder.notional,
        categories=holding_order(model.symbols),
    )
    n = len({int(r) for s in run.stories if s.step == step for r in s.rows})
    ax.set_title(
        f"Who liquidated whom in step {step} ({run.label} margin): {n:,} accounts\n"
        "each dot is a liquidation, joined to the one in the round before that hurt it most",
        fontsize=10,
    )
    return fig


def draw_rounds(ax_price, ax_bars, stories, step, prev_price, labels, symbols, rmax=None, title=""):
    """One cascade round by round: price moves per asset (top axes) and liquidations per round,
    stacked by what the accounts held (bottom axes).

    Args:
        ax_price, ax_bars: matplotlib Axes.
        stories: the narrator's round stories.
        step: which step's cascade.
        prev_price: (A,) prices at the end of the step before (the moves are relative to it).
        labels: (n_rows,) holding label per book row.
        symbols: asset names.
        rmax: rounds to make room for (default: this cascade's).
        title: a prefix for the titles (e.g. "cross margin").
    """
    cats = holding_order(symbols)
    ss = [s for s in stories if s.step == step]
    rmax = max([s.round for s in ss] + [1]) if rmax is None else rmax
    rp = _round_prices(stories, step)
    ax = ax_price
    if rp.size:
        r = np.arange(rp.shape[0])
        for j, sym in enumerate(symbols):
            ax.plot(r, 100 * (rp[:, j] / prev_price[j] - 1), marker="o", label=sym,
                    color=_PALETTE[j % len(_PALETTE)])  # fmt: skip
        ax.legend(loc="lower left", fontsize=8)
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xlim(-0.3, rmax + 0.3)
    ax.set_xticks(range(rmax + 1))
    ax.set_xticklabels([f"step {step}" if step else "start"] + [str(i) for i in range(1, rmax + 1)])
    ax.set_title(
        f"{title}: price vs before step {step}" if title else f"price vs before step {step}"
    )
    ax.set_ylabel("price move (%)")
    ax.grid(alpha=0.3)

    ax = ax_bars
    labels = np.asarray(labels, dtype=object)
    bottom = np.zeros(rmax)
    for c in cats:
        counts = np.zeros(rmax)
        for s in ss:
            counts[s.round - 1] = int((labels[s.rows] == c).sum())
        ax.bar(np.arange(1, rmax + 1), counts, bottom=bottom, label=c, color=_colour(c, cats))
        bottom += counts
    ax.set_xlim(-0.3, rmax + 0.3)
    ax.set_xticks(range(1, rmax + 1))
    ax.set_xlabel("liquidation round")
    ax.set_ylabel("accounts liquidated")
    n_acc = len({int(r) for s in ss for r in s.rows})
    what = f"{int(bottom.sum()):,} liquidations of {n_acc:,} accounts"
    ax.set_title(f"{title}: {what}" if title else what)
    ax.legend(loc="upper right", fontsize=8, title="holding")
    ax.grid(alpha=0.3, axis="y")


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
    from model.results import atomic_write

    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    return path


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


class _Tee:
    """Writes to the terminal as it goes and keeps a copy for narration.txt."""

    def __init__(self):
        self.parts: list[str] = []

    def __call__(self, text: str = "") -> None:
        self.parts.append(text)
        _print_now(text)

    @property
    def text(self) -> str:
        return "\n".join(self.parts) + "\n"


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is not a folder")
            break


def demo_command(args) -> int:
    """``contagion demo [--out DIR] [--set KEY=VALUE ...]``: the narrated cascade, under cross
    and then isolated margin; ``--set`` changes the demo's market for both runs. Returns the
    exit code."""
    from experiments.cli import _parse_sets

    overrides = _parse_sets(getattr(args, "set", None))
    if "margin.mode" in overrides:
        raise ConfigError("--set margin.mode: the demo runs both modes, cross and then isolated")
    cfg = load_config(DEMO_CONFIG, overrides={**overrides, "margin.mode": "cross"})
    if not cfg.shocks:
        raise ConfigError("shocks: the demo needs a scheduled shock")
    out = Path(args.out) if getattr(args, "out", None) else Path("results") / "demo"
    _check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    shock = cfg.shocks[0]
    say = _Tee()
    t0 = time.perf_counter()

    say(_intro(cfg, "cross margin (one balance backs every position)"))
    say()
    cross = run_demo(cfg, "cross", say)
    say()
    say(
        "Now the same accounts and the same shock under isolated margin "
        "(each position has its own collateral):"
    )
    iso_cfg = load_config(DEMO_CONFIG, overrides={**overrides, "margin.mode": "isolated"})
    iso = run_demo(iso_cfg, "isolated", say)

    symbols = cross.model.symbols
    c_stats = cascade_stats(cross, shock.step, shock.asset)
    i_stats = cascade_stats(iso, shock.step, shock.asset)
    say()
    say(f"Cross vs isolated, same accounts, same shock ({shock.asset} {_pct(shock.return_)}):")
    say(comparison_table(c_stats, i_stats, symbols, shock.step, shock.asset))
    say()
    say("The lesson: " + lesson(c_stats, i_stats, shock.asset, symbols))

    cross.model.write_results(out)
    iso.model.write_results(out / "isolated")
    figures = [
        _save(
            plot_prices(
                cross.tables["market"],
                cross.tables["liquidations"],
                cross.stories,
                cross.model.market.initial_price,
                shock.step,
            ),
            out / "prices.png",
        ),
        _save(plot_cascade_tree(cross, shock.step), out / "cascade_tree.png"),
        _save(plot_cross_vs_isolated(cross, iso, shock.step), out / "cross_vs_isolated.png"),
    ]
    say()
    say(f"run folder: {out} (the isolated run in {out / 'isolated'})")
    say("figures: " + ", ".join(str(f) for f in figures))
    say(f"done in {time.perf_counter() - t0:.1f}s")
    from model.results import atomic_write

    atomic_write(out / "narration.txt", lambda p: p.write_text(say.text, encoding="utf-8"))
    sys.stdout.flush()
    return 0

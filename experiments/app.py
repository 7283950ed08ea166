"""``contagion viz``: the interactive dashboard, on Mesa's SolaraViz.

Sliders set leverage, volatility, margin mode, order-book depth, where the book's liquidity
comes from (static, or market makers who withdraw), the shock's size and step, the number of
traders and the seed (they take effect on *Reset*, as everywhere in SolaraViz); play, step and
reset drive the model. The page shows the price of each asset, liquidations per step, the
insurance fund, the distribution of equity, the book's depth through the latest cascade and
over the run, and the contagion network of the latest cascade drawn by round (the same layered
layout as the demo's figure, never a force-directed one).

The model is the demo's market (``experiments/configs/demo.toml``) with the sliders' values as
overrides. Every chart reads numpy arrays the model already keeps, and the network draws at
most a few thousand edges, so a step stays well under a second at 5,000 traders.

Run it with ``contagion viz [--port N] [--host H]``, or ``solara run experiments/app.py``.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import solara
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mesa.visualization import Slider, SolaraViz, make_plot_component

from experiments import DEMO_CONFIG
from experiments.cascade_drawing import draw_cascade, draw_rounds, holding_labels, holding_order
from experiments.depth_drawing import draw_depth_by_round, draw_depth_by_step
from experiments.narration import CascadeNarrator
from model import ContagionModel, load_config
from model.errors import ConfigError
from model.results import liquidations_table

__all__ = ["TITLE", "DashboardModel", "Page", "serve_dashboard"]

# Colours per asset, the same in every chart.
_ASSET_COLOURS = ["#d62728", "#1f77b4", "#9467bd", "#2ca02c", "#ff7f0e"]


class DashboardModel(ContagionModel):
    """The demo's market with the dashboard's knobs as keyword arguments.

    SolaraViz rebuilds the model from keyword arguments on *Reset*; this class turns them into
    config overrides of ``demo.toml`` (validated like any other config) and keeps the small
    per-step history the charts draw.

    Args:
        leverage: mean initial leverage of the traders.
        volatility: annualised volatility of both assets.
        margin_mode: ``"cross"`` or ``"isolated"``.
        depth: 1% depth of the first asset in $ millions (the second gets half, as in the demo).
        shock: the shock's return in percent (negative: a fall) to the first asset's fundamental.
        shock_step: the step at which it hits.
        traders: number of traders.
        seed: seed of the run's random stream.
        liquidity: ``"static"`` or ``"market_makers"`` (``liquidity.model``).
    """

    def __init__(
        self,
        leverage: float = 12.0,
        volatility: float = 0.2,
        margin_mode: str = "cross",
        depth: float = 1.0,
        shock: float = -6.0,
        shock_step: int = 4,
        traders: int = 2000,
        seed: int = 3,
        liquidity: str = "static",
    ):
        base = load_config(DEMO_CONFIG)
        ratio = [a.depth / base.assets[0].depth for a in base.assets]
        overrides = {
            "traders.leverage": float(leverage),
            "market.volatility": float(volatility),
            "margin.mode": str(margin_mode),
            "traders.count": int(traders),
            "seed": int(seed),
            "steps": 1_000_000,  # the dashboard runs until stopped
            "shocks.0.return": float(shock) / 100.0,
            "shocks.0.step": int(shock_step),
            "liquidity.model": str(liquidity),
        }
        for a, r in zip(base.assets, ratio, strict=True):
            overrides[f"assets.{a.symbol}.depth"] = float(depth) * 1e6 * r
        super().__init__(load_config(DEMO_CONFIG, overrides=overrides))
        self.labels = holding_labels(self.population.qty, self.symbols)
        # keeps each liquidation round (rows, prices) as the engine runs it; tells nobody
        self.narrator = CascadeNarrator(self, write=lambda text: None)
        # per-step history for the charts: prices and fundamentals, (steps + 1, A) each
        self.price_history = [self.mark.copy()]
        self.fundamental_history = [self.market.fundamental.copy()]
        self.last_cascade_step = 0

    def step(self) -> None:
        super().step()
        self.price_history.append(self.mark.copy())
        self.fundamental_history.append(self.market.fundamental.copy())
        if self.last.liquidations:
            self.last_cascade_step = self.steps


# --------------------------------------------------------------------------------------------
# Charts: each a function of the model, redrawn by SolaraViz after every step
# --------------------------------------------------------------------------------------------


def _figure(width=6.0, height=3.2, bottom=0.15):
    """A figure with one axes and fixed margins: an automatic layout engine would cost more
    than drawing the chart, on every step."""
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=bottom)
    return fig, fig.subplots()


def StatusPanel(model: DashboardModel):
    """The numbers behind the charts, as text (plain text: no math rendering needed)."""
    cfg = model.config
    lev = model.recorder.initial_leverage
    mean_lev = float(np.mean(lev[np.isfinite(lev)])) if lev.size else 0.0
    prices = ", ".join(f"{s} ${p:,.0f}" for s, p in zip(model.symbols, model.mark, strict=True))
    last = model.last
    cascade = f"{last.rounds} rounds, {last.accounts:,} accounts" if last else "none yet"
    shock = cfg.shocks[0]
    line1 = (
        f"step {model.steps} | {cfg.traders.count:,} traders, {cfg.margin.mode} margin, "
        f"mean leverage {mean_lev:.1f}x | shock {shock.asset} {100 * shock.return_:+.1f}% "
        f"at step {shock.step}"
    )
    line2 = (
        f"prices: {prices} | insurance fund ${model.engine.insurance_fund:,.0f} | "
        f"accounts liquidated so far {int((model.liquidation_count > 0).sum()):,} | "
        f"this step's cascade: {cascade}"
    )
    return solara.Column(gap="2px", children=[solara.Text(line1), solara.Text(line2)])


def PricePanel(model: DashboardModel):
    """Each asset's price (solid) and fundamental (dashed), as % of its starting price, with a
    dot at every step that liquidated someone; the status line above it."""
    fig, ax = _figure()
    p = np.asarray(model.price_history)
    f = np.asarray(model.fundamental_history)
    t = np.arange(p.shape[0])
    liq = np.asarray(model.datacollector.model_vars.get("liquidations", []), dtype=float)
    hit = np.flatnonzero(liq > 0) + 1
    for j, s in enumerate(model.symbols):
        c = _ASSET_COLOURS[j % len(_ASSET_COLOURS)]
        ax.plot(t, 100 * p[:, j] / p[0, j], color=c, lw=1.6, label=f"{s} ${p[-1, j]:,.0f}")
        ax.plot(t, 100 * f[:, j] / p[0, j], color=c, lw=1.0, ls="--", alpha=0.6)
        if hit.size:
            ax.scatter(hit, 100 * p[hit, j] / p[0, j], color=c, edgecolors="k", s=28, zorder=3)
    ax.set_title("price (solid), fundamental (dashed); dots: liquidations")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("% of starting price")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    return solara.Column(children=[StatusPanel(model), solara.FigureMatplotlib(fig, format="png")])


def EquityPanel(model: DashboardModel):
    """Distribution of equity as a share of each trader's starting collateral."""
    fig, ax = _figure()
    eq = model.book.equity(model.mark)
    start = model.population.collateral
    ratio = 100 * eq / np.where(start > 0, start, 1.0)
    bins = np.linspace(-50, 300, 71)
    counts, _ = np.histogram(np.clip(ratio, bins[0], bins[-1]), bins)
    ax.stairs(counts, bins, fill=True, color="#1f77b4", alpha=0.7)
    ax.axvline(100, color="k", lw=0.8, ls="--")
    liquidated = int((model.liquidation_count > 0).sum())
    ax.set_title(f"equity, % of starting collateral ({liquidated:,} of {ratio.size:,} liquidated)")
    ax.set_xlabel("equity / starting collateral (%)")
    ax.set_ylabel("accounts")
    ax.grid(alpha=0.3)
    return solara.FigureMatplotlib(fig, format="png")


def RoundsPanel(model: DashboardModel):
    """The latest cascade round by round: price moves and liquidations by holding."""
    fig = Figure(figsize=(6.0, 4.2))
    fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.11, hspace=0.55)
    ax_price, ax_bars = fig.subplots(2, 1)
    t = model.last_cascade_step
    prev = model.price_history[t - 1] if t else model.price_history[0]
    draw_rounds(ax_price, ax_bars, model.narrator.stories, t, prev, model.labels, model.symbols)
    return solara.FigureMatplotlib(fig, format="png")


def DepthPanel(model: DashboardModel):
    """The book's 1% depth: each round of the latest cascade, and at each step's close."""
    fig = Figure(figsize=(6.0, 4.2))
    fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=0.11, hspace=0.6)
    ax_round, ax_step = fig.subplots(2, 1)
    t = model.last_cascade_step
    calm, symbols = model.market.depth, model.symbols
    draw_depth_by_round(ax_round, model.narrator.stories, t, calm, symbols)
    draw_depth_by_step(ax_step, model.market_history.depth, calm, symbols)
    ax_round.set_title(
        f"book depth walked by each round of step {t}" if t else "book depth (no cascade yet)",
        fontsize=10,
    )
    ax_step.set_title(
        f"book depth at each step's close ({model.config.liquidity.model})", fontsize=10
    )
    for ax in (ax_round, ax_step):
        ax.set_ylabel("% of calm")
        if ax.lines:
            ax.legend(fontsize=7, loc="lower left")
    return solara.FigureMatplotlib(fig, format="png")


def CascadePanel(model: DashboardModel):
    """The contagion network of the latest step with liquidations, layered by round."""
    fig, ax = _figure(6.0, 4.2, bottom=0.34)
    t = model.last_cascade_step
    draw_cascade(
        model.recorder.edges_table(),
        t or None,
        liquidations_table(model),
        ax=ax,
        labels=pd.Series(
            model.labels, index=model.population.ids, name="liquidations of accounts holding"
        ),
        categories=holding_order(model.symbols),
        max_edges=1500,
        label_limit=0,
    )
    ax.set_title(
        f"contagion network of step {t}, by round" if t else "contagion network (no cascade yet)",
        fontsize=10,
    )
    if t:  # the legend below the drawing, where the small panel has room for it
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, -0.3),
            ncol=2,
            fontsize=7,
            title="liquidations of accounts holding",
            title_fontsize=7,
        )
    return solara.FigureMatplotlib(fig, format="png")


def _titled(title, label, ylabel):
    """Mesa's plot component names its line by the raw column (``accounts_liquidated``): give
    it a title, a readable legend label and a y-axis label with the unit."""

    def post_process(ax):
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("step")
        lines = ax.get_lines()
        if lines:
            lines[0].set_label(label)
            ax.legend(handles=lines[:1], loc="upper left", fontsize=8)

    return post_process


model_params = {
    "leverage": Slider("mean leverage (x)", value=12.0, min=1.0, max=50.0, step=0.5),
    "volatility": Slider("volatility (annualised)", value=0.2, min=0.0, max=2.0, step=0.05),
    "margin_mode": {
        "type": "Select",
        "value": "cross",
        "values": ["cross", "isolated"],
        "label": "margin mode",
    },
    "depth": Slider("BTC 1% depth ($M; ETH half)", value=1.0, min=0.25, max=10.0, step=0.25),
    "liquidity": {
        "type": "Select",
        "value": "static",
        "values": ["static", "market_makers"],
        "label": "liquidity (the book)",
    },
    "shock": Slider("shock to BTC (%)", value=-6.0, min=-30.0, max=10.0, step=0.5),
    "shock_step": Slider("shock at step", value=4, min=1, max=50, step=1),
    "traders": Slider("traders", value=2000, min=100, max=5000, step=100),
    "seed": Slider("seed", value=3, min=0, max=100, step=1),
}

components = [
    PricePanel,
    make_plot_component(
        {"accounts_liquidated": "#d62728"},
        post_process=_titled(
            "accounts liquidated per step", "accounts liquidated in the step", "accounts"
        ),
    ),
    RoundsPanel,
    DepthPanel,
    CascadePanel,
    make_plot_component(
        {"insurance_fund": "#2ca02c"},
        post_process=_titled("insurance fund", "insurance fund at the end of the step", "$"),
    ),
    EquityPanel,
]

TITLE = "margin-contagion: a cascade of forced liquidations"
_START = DashboardModel()  # the model the page opens with (Reset builds a new one)


@solara.component
def Page():
    """The dashboard: Mesa's SolaraViz, with the browser tab titled too (SolaraViz titles only
    its app bar)."""
    solara.Title(TITLE)
    SolaraViz(
        _START,
        components=components,
        model_params=model_params,
        name=TITLE,
        play_interval=150,
    )


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def _check_port(host: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be between 1 and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ConfigError(f"--host {host}: unknown host") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            s.bind(address)
        except OSError as exc:
            raise ConfigError(f"--port {port}: cannot listen on {host} ({exc.strerror})") from None


def serve_dashboard(host: str = "127.0.0.1", port: int = 8765, open_browser: bool = True) -> int:
    """Serve the dashboard on ``host:port`` until stopped (the server replaces this process).

    Args:
        host: the address to listen on.
        port: the port to listen on (checked before the server starts).
        open_browser: open a browser tab on the page.
    """
    _check_port(host, int(port))
    cmd = [sys.executable, "-m", "solara", "run", str(Path(__file__).resolve())]
    cmd += ["--host", host, "--port", str(port), "--production"]
    if not open_browser:
        cmd.append("--no-open")
    print(f"dashboard: http://{host}:{port} (Ctrl-C stops it)", flush=True)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    # A classroom tool works offline and sends nothing home (override by setting it).
    env.setdefault("SOLARA_TELEMETRY_MIXPANEL_ENABLE", "false")
    # The server replaces this process: signals reach it directly and nothing is orphaned.
    os.execve(sys.executable, cmd, env)
    return 0  # pragma: no cover (execve does not return)

"""The book's depth through a cascade: the drawing the demo, the dashboard and the docs share.

Each liquidation round records the 1% depth its forced flow walked
(:attr:`model.liquidation.RoundRecord.depth`, kept by the narrator as
:attr:`experiments.narration.RoundStory.depth`), and ``market.parquet`` has the depth at each
step's close. Under ``liquidity.model = "static"`` both stay at ``assets.depth`` (unless
``market.depth_stress`` thins it); under ``market_makers`` they show the makers pulling their
quotes as the cascade fills their inventory, and refilling afterwards.

:func:`liquidity_comparison` runs the demo's market twice, static and with market makers, and
draws them side by side: ``docs/figures/liquidity_static_vs_makers.png`` is its output
(``python -m experiments.depth_drawing docs/figures/liquidity_static_vs_makers.png``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

__all__ = [
    "coinciding_assets",
    "draw_depth_by_round",
    "draw_depth_by_step",
    "liquidity_comparison",
    "plot_depth",
    "round_depths",
]

_COLOURS = ["#d62728", "#1f77b4", "#9467bd", "#2ca02c", "#ff7f0e"]


def coinciding_assets(series) -> list[list[int]]:
    """Groups of the columns of ``series`` (points, A) whose values coincide at every point,
    each in column order: assets drawn as one line (on the static book every asset's depth is
    100% of calm, and one asset's line would hide the others')."""
    series = np.asarray(series, dtype=float)
    groups: list[list[int]] = []
    for j in range(series.shape[1]):
        for g in groups:
            if np.allclose(series[:, g[0]], series[:, j], rtol=1e-9, atol=1e-9):
                g.append(j)
                break
        else:
            groups.append([j])
    return groups


def _plot_assets(ax, x, pct, symbols, label, style, **kwargs) -> None:
    """One line per asset in its colour; assets whose lines coincide share one dark line
    labelled with all their symbols."""
    for group in coinciding_assets(pct):
        j = group[0]
        colour = _COLOURS[j % len(_COLOURS)] if len(group) == 1 else "0.25"
        name = f"{', '.join(symbols[k] for k in group)} {label}".strip()
        ax.plot(x, pct[:, j], style, color=colour, label=name, **kwargs)


def round_depths(stories, step: int) -> np.ndarray:
    """(rounds, A) the depth each round of ``step`` walked (empty when none recorded it)."""
    rows = [s.depth for s in stories if s.step == step and s.depth is not None]
    return np.asarray(rows, dtype=float) if rows else np.zeros((0, 0))


def draw_depth_by_round(ax, stories, step, calm, symbols, *, label="", style="-") -> None:
    """Depth walked per round of ``step``, in % of each asset's calm depth."""
    depth = round_depths(stories, step)
    if depth.size == 0:
        ax.text(0.5, 0.5, "no cascade yet", ha="center", va="center", transform=ax.transAxes)
        return
    r = np.arange(1, depth.shape[0] + 1)
    _plot_assets(ax, r, 100 * depth / np.asarray(calm), symbols, label, style, marker="o", ms=4)
    ax.set_xticks(r)
    ax.set_xlabel(f"liquidation round of step {step}")
    ax.set_ylabel("1% depth walked (% of calm)")
    ax.set_ylim(0, 110)
    ax.grid(alpha=0.3)


def draw_depth_by_step(ax, depth_history, calm, symbols, *, label="", style="-") -> None:
    """Depth at each step's close (market.parquet's ``depth``), in % of calm."""
    depth = np.asarray(depth_history, dtype=float)
    if depth.size == 0:
        return
    t = np.arange(1, depth.shape[0] + 1)
    _plot_assets(ax, t, 100 * depth / np.asarray(calm), symbols, label, style, lw=1.4)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("1% depth at the close (% of calm)")
    ax.set_ylim(0, 110)
    ax.grid(alpha=0.3)


def _run(overrides):
    """The demo's market with ``overrides``, narrated silently: (model, narrator)."""
    from experiments import DEMO_CONFIG
    from experiments.narration import CascadeNarrator
    from model import ContagionModel, load_config

    model = ContagionModel(load_config(DEMO_CONFIG, overrides=overrides))
    narrator = CascadeNarrator(model, write=lambda text: None)
    model.run()
    return model, narrator


def liquidity_comparison(overrides=None):
    """The demo's shock on the static book and on the market makers' book, same accounts and
    seed: prices and depth round by round in the shock step, depth over the run, and who
    bought the forced sales. Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    overrides = dict(overrides or {})
    runs = {
        "static": _run({**overrides, "liquidity.model": "static"}),
        "market makers": _run({**overrides, "liquidity.model": "market_makers"}),
    }
    model = runs["static"][0]
    step = model.config.shocks[0].step
    symbols, calm = model.symbols, model.market.depth
    fig = Figure(figsize=(12, 7.5), layout="constrained")
    (ax_p, ax_d), (ax_s, ax_w) = fig.subplots(2, 2)
    for (name, (m, narr)), style in zip(runs.items(), ("--", "-"), strict=True):
        stories = [s for s in narr.stories if s.step == step]
        p0 = narr.previous_price(step)
        prices = np.vstack([stories[0].price_before, *[s.price_after for s in stories]])
        for j, sym in enumerate(symbols):
            ax_p.plot(np.arange(prices.shape[0]), 100 * (prices[:, j] / p0[j] - 1), style,
                      color=_COLOURS[j], marker="o", ms=4, label=f"{sym} {name}")  # fmt: skip
        draw_depth_by_round(ax_d, narr.stories, step, calm, symbols, label=name, style=style)
        draw_depth_by_step(ax_s, m.market_history.depth, calm, symbols, label=name, style=style)
    ax_p.set_title(f"price in step {step} (shock: BTC's fundamental -6%), round by round")
    ax_p.set_xlabel("liquidation round (0: after the shock, before any)")
    ax_p.set_ylabel("% since the step before")
    ax_p.grid(alpha=0.3)
    ax_d.set_title("the book each round's forced sales walked")
    ax_s.set_title("the book at each step's close: makers refill after the cascade")
    _draw_absorption(ax_w, runs["market makers"][1].stories, step, symbols)
    for ax in (ax_p, ax_d, ax_s):  # handles long enough to show the static runs' dashes
        ax.legend(fontsize=7, ncol=2, handlelength=3.5)
    fig.suptitle(
        "The demo's shock on the static book (dashed) and on the market makers' book (solid): "
        "same accounts, same seed"
    )
    return fig


def plot_depth(stories, depth_history, step, calm, symbols):
    """The demo's ``depth.png``: the book each round of ``step`` walked, and the book at each
    step's close. Returns a matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    ax_r, ax_s = fig.subplots(1, 2)
    draw_depth_by_round(ax_r, stories, step, calm, symbols)
    draw_depth_by_step(ax_s, depth_history, calm, symbols)
    ax_r.set_title(f"the book each liquidation round of step {step} walked")
    ax_s.set_title("the book at each step's close")
    for ax in (ax_r, ax_s):
        ax.legend(fontsize=8)
    return fig


def _draw_absorption(ax, stories, step, symbols) -> None:
    """Who bought each round's net forced sales with market makers: makers, backstop."""
    stories = [s for s in stories if s.step == step and s.makers is not None]
    if not stories:
        return
    r = np.arange(1, len(stories) + 1)
    width = 0.8 / len(symbols)
    for j, sym in enumerate(symbols):
        sold = np.array([s.sold[j] - s.bought[j] for s in stories])
        makers = np.array([s.makers[j] for s in stories])
        notional = np.array([s.price_after[j] for s in stories])
        x = r + (j - (len(symbols) - 1) / 2) * width
        ax.bar(x, makers * notional / 1e6, width, color=_COLOURS[j], label=f"{sym}: market makers")
        ax.bar(x, (sold - makers) * notional / 1e6, width, bottom=makers * notional / 1e6,
               color=_COLOURS[j], alpha=0.35, label=f"{sym}: backstop")  # fmt: skip
    ax.set_xticks(r)
    ax.set_xlabel(f"liquidation round of step {step}")
    ax.set_ylabel("forced sales bought ($M)")
    ax.set_title("who bought the forced sales (market makers' book)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")


if __name__ == "__main__":  # regenerate the docs figure
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "liquidity_static_vs_makers.png")
    liquidity_comparison().savefig(out, dpi=110)
    print(out)

"""The narration of a cascade: each liquidation round told as it happens.

:class:`CascadeNarrator` chains itself onto the liquidation engine's ``on_round`` hook (the
contagion recorder keeps getting every round first), keeps a :class:`RoundStory` per round (who
was liquidated, what they sold or bought back, how far each price moved, where the insurance
fund stands) and writes one paragraph per round. ``contagion demo`` prints it in the terminal;
the dashboard keeps the stories without printing and draws them
(:func:`experiments.cascade_drawing.draw_rounds`).

The formatting helpers (``_pct``, ``_price``, ``_money``, ``_qty``) are the narration's number
style; the demo's summary lines use them too, so every number reads the same. docs/tutorial.md
quotes the narration word for word.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CascadeNarrator", "RoundStory"]


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
        depth: (A,) the book's 1% depth the round's forced flow walked (quote notional at the
            initial price), or None.
        makers: (A,) what market makers bought of the round's forced flow (sold: negative),
            or None without market makers.
        resting: (A,) what resting orders (value traders' ladders) bought, or None.
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
    depth: np.ndarray | None = None
    makers: np.ndarray | None = None
    resting: np.ndarray | None = None

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
            depth=None if rec.depth is None else np.asarray(rec.depth, dtype=float).copy(),
            makers=None if rec.absorbed is None else np.asarray(rec.absorbed.makers).copy(),
            resting=None if rec.absorbed is None else np.asarray(rec.absorbed.resting).copy(),
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
            f"           {moves} | {fund}" + self._book_line(s)
        )

    def _book_line(self, s: RoundStory) -> str:
        """The book the round walked, when it is not the calm book: each thinned asset's 1%
        depth, and who bought the forced sales (market makers, resting orders). Nothing on a
        static book that never thins."""
        calm = self.model.market.depth
        if s.depth is None or not (s.depth < 0.99 * calm).any():
            if s.resting is None or not np.any(s.resting > 0):
                return ""
        parts = []
        for j, sym in enumerate(self.symbols):
            text = (
                f"{sym} 1% depth {_money(s.depth[j])} ({100 * s.depth[j] / calm[j]:.0f}% of calm)"
            )
            sold = s.sold[j] - s.bought[j]
            if sold > 0 and s.makers is not None and np.any(s.makers):
                text += f", makers bought {100 * s.makers[j] / sold:.0f}% of the sales"
            if sold > 0 and s.resting is not None and s.resting[j] > 0:
                text += f", resting orders {100 * s.resting[j] / sold:.0f}%"
            parts.append(text)
        return "\n           book: " + " | ".join(parts)


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
